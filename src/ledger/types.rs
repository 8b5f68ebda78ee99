//! The ledger's records and commands, free of protobuf and SQL types.

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub type Timestamp = DateTime<Utc>;

/// Lifecycle of an offering: OPEN -> CLOSED -> FINALIZED, never backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferingStatus {
    Open = 1,
    Closed = 2,
    Finalized = 3,
}

impl OfferingStatus {
    /// The stored code (the proto enum's number); None for a value no migration writes.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Open),
            2 => Some(Self::Closed),
            3 => Some(Self::Finalized),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Closed => "CLOSED",
            Self::Finalized => "FINALIZED",
        }
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
}

impl EntryKind {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::OfferingCreated),
            2 => Some(Self::Subscribed),
            3 => Some(Self::Cancelled),
            4 => Some(Self::OfferingClosed),
            5 => Some(Self::OfferingFinalized),
            _ => None,
        }
    }
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
    pub status: OfferingStatus,
    /// Sequence of the latest history entry.
    pub version: i64,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

impl Offering {
    pub fn remaining_units(&self) -> i64 {
        self.max_units - self.subscribed_units
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
    /// "unknown" for entries recorded before subledger recorded actors).
    pub actor: String,
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
}

impl Command {
    pub fn investor_id(&self) -> Option<&str> {
        match self {
            Self::Subscribe { investor_id, .. } | Self::Cancel { investor_id, .. } => {
                Some(investor_id)
            }
            Self::Close { .. } | Self::Finalize { .. } => None,
        }
    }

    pub fn kind(&self) -> EntryKind {
        match self {
            Self::Subscribe { .. } => EntryKind::Subscribed,
            Self::Cancel { .. } => EntryKind::Cancelled,
            Self::Close { .. } => EntryKind::OfferingClosed,
            Self::Finalize { .. } => EntryKind::OfferingFinalized,
        }
    }

    fn requested_units(&self) -> i64 {
        match self {
            Self::Subscribe { units, .. } | Self::Cancel { units, .. } => *units,
            Self::Close { .. } | Self::Finalize { .. } => 0,
        }
    }

    fn expected_version(&self) -> i64 {
        match self {
            Self::Close { expected_version } | Self::Finalize { expected_version } => {
                *expected_version
            }
            Self::Subscribe { .. } | Self::Cancel { .. } => 0,
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

impl Request {
    /// True when `entry` is what this request appended: the same request made again, by the
    /// same principal. Another principal reusing the request_id must not read the result.
    pub fn is_recorded_by(&self, entry: &Entry) -> bool {
        let command = &self.command;
        entry.kind == command.kind()
            && entry.investor_id == command.investor_id().unwrap_or("")
            && entry.requested_units == command.requested_units()
            && entry.expected_version == command.expected_version()
            && entry.actor == *self.actor
    }
}
