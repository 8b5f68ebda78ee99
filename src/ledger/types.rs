//! The ledger's records and commands, free of protobuf and SQL types.

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub type Timestamp = DateTime<Utc>;

/// Lifecycle of an offering: OPEN -> CLOSED -> FINALIZED for FIRST_COME, OPEN -> CLOSED ->
/// ALLOCATED -> FINALIZED for PRO_RATA; never backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferingStatus {
    Open = 1,
    Closed = 2,
    Finalized = 3,
    Allocated = 4,
}

impl OfferingStatus {
    /// The stored code (the proto enum's number); None for a value no migration writes.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Open),
            2 => Some(Self::Closed),
            3 => Some(Self::Finalized),
            4 => Some(Self::Allocated),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Closed => "CLOSED",
            Self::Finalized => "FINALIZED",
            Self::Allocated => "ALLOCATED",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        (1..=4)
            .filter_map(Self::from_code)
            .find(|s| s.name() == name)
    }
}

/// How an offering turns subscriptions into units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Each Subscribe takes units at once, within the caps.
    FirstCome = 1,
    /// Subscribe and Cancel record demand; AllocateOffering shares the cap after the close.
    ProRata = 2,
}

impl Allocation {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::FirstCome),
            2 => Some(Self::ProRata),
            _ => None,
        }
    }

    /// The proto enum value's name without its ALLOCATION_ prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::FirstCome => "FIRST_COME",
            Self::ProRata => "PRO_RATA",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        (1..=2)
            .filter_map(Self::from_code)
            .find(|a| a.name() == name)
    }
}

/// What a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    OfferingCreated = 1,
    Subscribed = 2,
    Cancelled = 3,
    OfferingClosed = 4,
    OfferingFinalized = 5,
    /// With an investor: their allocation. Without: the status change to ALLOCATED.
    Allocated = 6,
    OfferingAmended = 7,
}

impl EntryKind {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::OfferingCreated),
            2 => Some(Self::Subscribed),
            3 => Some(Self::Cancelled),
            4 => Some(Self::OfferingClosed),
            5 => Some(Self::OfferingFinalized),
            6 => Some(Self::Allocated),
            7 => Some(Self::OfferingAmended),
            _ => None,
        }
    }

    /// The proto enum value's name without its ENTRY_KIND_ prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::OfferingCreated => "OFFERING_CREATED",
            Self::Subscribed => "SUBSCRIBED",
            Self::Cancelled => "CANCELLED",
            Self::OfferingClosed => "OFFERING_CLOSED",
            Self::OfferingFinalized => "OFFERING_FINALIZED",
            Self::Allocated => "ALLOCATED",
            Self::OfferingAmended => "OFFERING_AMENDED",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        (1..=7)
            .filter_map(Self::from_code)
            .find(|k| k.name() == name)
    }
}

/// The terms AmendOffering can change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub name: String,
    pub max_units: i64,
    /// 0 = no per-investor cap.
    pub max_units_per_investor: i64,
    pub close_time: Option<Timestamp>,
}

/// The aggregate head of an offering: its caps, running totals, status and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offering {
    pub offering_id: String,
    pub name: String,
    pub max_units: i64,
    /// 0 = no per-investor cap.
    pub max_units_per_investor: i64,
    pub subscribed_units: i64,
    /// Investors holding more than zero units.
    pub investor_count: i64,
    /// Investors with a position: everyone who ever subscribed (a position emptied by Cancel
    /// stays). Bounded by --max-investors-per-offering.
    pub position_count: i64,
    pub status: OfferingStatus,
    /// Sequence of the latest history entry.
    pub version: i64,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
    pub allocation: Allocation,
    /// Subscribe and Cancel are refused before it.
    pub open_time: Option<Timestamp>,
    /// From this time on the offering is closed, entry or not.
    pub close_time: Option<Timestamp>,
    /// 0 or 1 = any number of units.
    pub lot_units: i64,
    /// A position is 0 or at least this; 0 = no minimum.
    pub min_units_per_investor: i64,
    /// PRO_RATA: the bound on total demand; 0 = none but DEMAND_TOTAL_MAX.
    pub max_total_demand: i64,
    /// PRO_RATA: total demand; FIRST_COME: 0.
    pub demanded_units: i64,
    /// The entry_hash of the latest history entry (see `chain`): the next append links to it
    /// without reading that entry.
    pub last_hash: [u8; 32],
    /// The Merkle tree of the history (see `merkle`): its frontier, whose size is `version`
    /// once built (0 for an offering whose tree migrate() has not built yet).
    pub tree: super::merkle::Frontier,
}

impl Offering {
    pub fn remaining_units(&self) -> i64 {
        self.max_units - self.subscribed_units
    }

    /// The lot size, 1 when any number of units goes.
    pub fn lot(&self) -> i64 {
        self.lot_units.max(1)
    }

    pub fn terms(&self) -> Terms {
        Terms {
            name: self.name.clone(),
            max_units: self.max_units,
            max_units_per_investor: self.max_units_per_investor,
            close_time: self.close_time,
        }
    }

    /// True when the offering is past its close_time but has no CLOSED entry yet.
    pub fn closes_by_clock(&self, now: Timestamp) -> bool {
        self.status == OfferingStatus::Open && self.close_time.is_some_and(|close| now >= close)
    }

    /// The offering as callers see it at `now`: past close_time it shows CLOSED, whether or not
    /// a mutation has appended the CLOSED entry yet.
    pub fn as_of(mut self, now: Timestamp) -> Self {
        if self.closes_by_clock(now) {
            self.status = OfferingStatus::Closed;
        }
        self
    }
}

/// What one investor holds in one offering. An investor who never subscribed holds 0 units and
/// has no update_time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub offering_id: String,
    pub investor_id: String,
    pub units: i64,
    pub update_time: Option<Timestamp>,
    /// PRO_RATA: the investor's demand; FIRST_COME: 0.
    pub demanded_units: i64,
    /// The sequence of the investor's first subscription (ties in a pro-rata allocation go to
    /// the earlier); 0 for one who never subscribed, or one recorded before it was kept.
    pub first_sequence: i64,
}

/// One immutable history row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub offering_id: String,
    pub sequence: i64,
    pub kind: EntryKind,
    /// Empty for lifecycle entries.
    pub investor_id: String,
    pub units_delta: i64,
    pub investor_units_after: i64,
    pub offering_units_after: i64,
    pub request_id: String,
    /// Units as the caller asked (a Cancel of 0 means "all"); with expected_version, what tells a
    /// retry apart from a reuse of its request_id.
    pub requested_units: i64,
    pub expected_version: i64,
    pub record_time: Timestamp,
    /// The principal whose call appended the entry ("anonymous" with authentication off,
    /// "unknown" for entries recorded before subledger recorded actors, "system" for what the
    /// clock did).
    pub actor: String,
    /// PRO_RATA demand: the change, the investor's after, the offering's after.
    pub demand_delta: i64,
    pub investor_demand_after: i64,
    pub offering_demand_after: i64,
    /// The amendable terms before an OFFERING_AMENDED entry.
    pub terms_before: Option<Terms>,
    /// The terms an OFFERING_CREATED or OFFERING_AMENDED entry put in force.
    pub terms_after: Option<Terms>,
    /// SHA-256 of the previous entry's hash and this entry's canonical encoding (see `chain`),
    /// set when the entry is appended.
    pub entry_hash: [u8; 32],
}

/// CreateOffering, validated.
#[derive(Clone, Debug)]
pub struct NewOffering {
    pub offering_id: String,
    pub name: String,
    pub max_units: i64,
    pub max_units_per_investor: i64,
    pub request_id: String,
    pub actor: Arc<str>,
    pub allocation: Allocation,
    pub open_time: Option<Timestamp>,
    pub close_time: Option<Timestamp>,
    pub lot_units: i64,
    pub min_units_per_investor: i64,
    pub max_total_demand: i64,
}

/// AmendOffering's changes: None leaves a term as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TermChanges {
    pub name: Option<String>,
    pub max_units: Option<i64>,
    pub max_units_per_investor: Option<i64>,
    pub close_time: Option<Timestamp>,
}

impl TermChanges {
    pub fn apply_to(&self, terms: &Terms) -> Terms {
        Terms {
            name: self.name.clone().unwrap_or_else(|| terms.name.clone()),
            max_units: self.max_units.unwrap_or(terms.max_units),
            max_units_per_investor: self
                .max_units_per_investor
                .unwrap_or(terms.max_units_per_investor),
            close_time: self.close_time.or(terms.close_time),
        }
    }
}

/// A change to an existing offering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Subscribe {
        investor_id: String,
        units: i64,
    },
    /// units = 0: everything the investor holds.
    Cancel {
        investor_id: String,
        units: i64,
    },
    /// expected_version = 0: unchecked.
    Close {
        expected_version: i64,
    },
    Finalize {
        expected_version: i64,
    },
    /// PRO_RATA: CLOSED -> ALLOCATED.
    Allocate {
        expected_version: i64,
    },
    Amend {
        expected_version: i64,
        changes: TermChanges,
    },
}

impl Command {
    pub fn investor_id(&self) -> Option<&str> {
        match self {
            Self::Subscribe { investor_id, .. } | Self::Cancel { investor_id, .. } => {
                Some(investor_id)
            }
            _ => None,
        }
    }

    /// The kind of the entry that records this command (for Allocate: the last one, which
    /// carries the request_id).
    pub fn kind(&self) -> EntryKind {
        match self {
            Self::Subscribe { .. } => EntryKind::Subscribed,
            Self::Cancel { .. } => EntryKind::Cancelled,
            Self::Close { .. } => EntryKind::OfferingClosed,
            Self::Finalize { .. } => EntryKind::OfferingFinalized,
            Self::Allocate { .. } => EntryKind::Allocated,
            Self::Amend { .. } => EntryKind::OfferingAmended,
        }
    }

    fn requested_units(&self) -> i64 {
        match self {
            Self::Subscribe { units, .. } | Self::Cancel { units, .. } => *units,
            _ => 0,
        }
    }

    fn expected_version(&self) -> i64 {
        match self {
            Self::Close { expected_version }
            | Self::Finalize { expected_version }
            | Self::Allocate { expected_version }
            | Self::Amend {
                expected_version, ..
            } => *expected_version,
            Self::Subscribe { .. } | Self::Cancel { .. } => 0,
        }
    }

    /// True when this command needs every position of its offering, not only those it names:
    /// an amendment that sets a per-investor cap (checked against every holding). A name,
    /// close_time or max_units change reads none: the head has all it needs. (AllocateOffering
    /// needs every investor's demand only, which a store loads apart:
    /// `OfferingRequests::reads_demands`.)
    pub fn reads_all_positions(&self) -> bool {
        match self {
            Self::Amend { changes, .. } => {
                changes.max_units_per_investor.is_some_and(|cap| cap > 0)
            }
            _ => false,
        }
    }

    /// Fields of the entry this command appends that come from the request itself.
    pub(crate) fn request_fields(&self) -> (i64, i64) {
        (self.requested_units(), self.expected_version())
    }
}

/// A command with the id that makes it idempotent, and the principal that sent it.
#[derive(Clone, Debug)]
pub struct Request {
    pub request_id: String,
    pub actor: Arc<str>,
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::{cancel, head, minutes, now, subscribe};

    #[test]
    fn every_stored_code_and_name_round_trips_and_nothing_else_reads() {
        for code in 1..=4 {
            let status = OfferingStatus::from_code(code).unwrap();
            assert_eq!(status as i64, code);
            assert_eq!(OfferingStatus::from_name(status.name()), Some(status));
        }
        for code in 1..=2 {
            let allocation = Allocation::from_code(code).unwrap();
            assert_eq!(allocation as i64, code);
            assert_eq!(Allocation::from_name(allocation.name()), Some(allocation));
        }
        for code in 1..=7 {
            let kind = EntryKind::from_code(code).unwrap();
            assert_eq!(kind as i64, code);
            assert_eq!(EntryKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(OfferingStatus::from_code(0), None);
        assert_eq!(OfferingStatus::from_code(5), None);
        assert_eq!(Allocation::from_code(3), None);
        assert_eq!(EntryKind::from_code(8), None);
        assert_eq!(
            EntryKind::from_name("ENTRY_KIND_SUBSCRIBED"),
            None,
            "names come without their proto prefix"
        );
        assert_eq!(OfferingStatus::from_name("open"), None);
    }

    #[test]
    fn an_offering_counts_what_remains_and_a_lot_of_zero_is_one() {
        let mut offering = head(10, 0);
        offering.subscribed_units = 7;
        assert_eq!(offering.remaining_units(), 3);
        assert_eq!(offering.lot(), 1);
        offering.lot_units = 5;
        assert_eq!(offering.lot(), 5);
    }

    #[test]
    fn from_close_time_on_an_open_offering_shows_closed() {
        let mut offering = head(10, 0);
        offering.close_time = Some(now());
        assert!(!offering.closes_by_clock(now() - minutes(1)));
        assert!(
            offering.closes_by_clock(now()),
            "close_time itself is closed"
        );
        assert_eq!(
            offering.clone().as_of(now() - minutes(1)).status,
            OfferingStatus::Open
        );
        assert_eq!(offering.clone().as_of(now()).status, OfferingStatus::Closed);
        offering.status = OfferingStatus::Finalized;
        assert!(
            !offering.closes_by_clock(now()),
            "only an OPEN offering closes"
        );
        assert_eq!(offering.as_of(now()).status, OfferingStatus::Finalized);
    }

    #[test]
    fn term_changes_replace_only_what_they_name() {
        let terms = head(10, 2).terms();
        assert_eq!(TermChanges::default().apply_to(&terms), terms);
        let changes = TermChanges {
            max_units: Some(20),
            close_time: Some(now()),
            ..TermChanges::default()
        };
        let after = changes.apply_to(&terms);
        assert_eq!((after.max_units, after.close_time), (20, Some(now())));
        assert_eq!(
            (after.name.as_str(), after.max_units_per_investor),
            ("Deal", 2)
        );
    }

    #[test]
    fn a_command_names_its_entry_investor_and_request_fields() {
        let close = Command::Close {
            expected_version: 3,
        };
        let allocate = Command::Allocate {
            expected_version: 0,
        };
        assert_eq!(subscribe("alice", 5).investor_id(), Some("alice"));
        assert_eq!(close.investor_id(), None);
        assert_eq!(cancel("alice", 0).kind(), EntryKind::Cancelled);
        assert_eq!(close.kind(), EntryKind::OfferingClosed);
        assert_eq!(subscribe("alice", 5).request_fields(), (5, 0));
        assert_eq!(close.request_fields(), (0, 3));
        assert!(!allocate.reads_all_positions());
        assert!(!subscribe("alice", 5).reads_all_positions());
    }

    #[test]
    fn only_a_per_investor_cap_makes_an_amendment_read_every_position() {
        let amend = |changes: TermChanges| Command::Amend {
            expected_version: 0,
            changes,
        };
        let none = TermChanges::default();
        let renamed = TermChanges {
            name: Some("Tower 8".into()),
            ..none.clone()
        };
        let closing = TermChanges {
            close_time: Some(now()),
            max_units: Some(500),
            ..none.clone()
        };
        let uncapped = TermChanges {
            max_units_per_investor: Some(0),
            ..none.clone()
        };
        let capped = TermChanges {
            max_units_per_investor: Some(10),
            ..none
        };
        assert!(!amend(renamed).reads_all_positions());
        assert!(!amend(closing).reads_all_positions());
        assert!(!amend(uncapped).reads_all_positions());
        assert!(amend(capped).reads_all_positions());
    }
}
