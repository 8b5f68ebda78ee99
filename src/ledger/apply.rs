//! The batch: requests applied in order to one locked offering inside one transaction, and
//! what every command shares: the running totals, the window, lots, minimums and expected
//! versions, the append of an entry with its chain link, and `apply_all`, the one entry point
//! both stores call. Each command's own rules live in `command/<name>.rs`; whether a request is
//! a replay is decided in `idempotency`.
//!
//! A store locks an offering's head, loads what a batch of requests needs (the head, the
//! positions of the investors named, or every position when a request needs them all, the
//! entries already recorded under the request_ids named, and the time by the database's clock),
//! and hands them to a [`Batch`]. The batch validates each request in order against the running
//! state, so request 2 sees request 1's effect, and collects the rows to write. A rejected
//! request changes nothing and does not affect the others.

use std::collections::HashMap;
use std::sync::Arc;

use super::allocation::Demand;
use super::allocation_run::AllocationRun;
use super::chain;
use super::idempotency::{self, Idempotency};
use super::merkle::Node;
use super::outcome::{Applied, Rejection, Results};
use super::types::{
    Allocation, Command, Entry, EntryKind, Offering, OfferingStatus, Position, Request, Timestamp,
};

/// The actor of what the clock does (the CLOSED entry appended once close_time has passed).
pub const SYSTEM_ACTOR: &str = "system";
/// The actor of entries recorded before subledger recorded actors (migration 0002's default).
pub const UNKNOWN_ACTOR: &str = "unknown";
/// The request_id of that CLOSED entry: '@' is outside the id alphabet, so no caller's request
/// can collide with it.
pub const CLOSED_BY_CLOCK_REQUEST_ID: &str = "@close_time";

/// An investor's running state within a batch.
#[derive(Clone, Debug, Default)]
pub(super) struct Holding {
    pub(super) units: i64,
    pub(super) demand: i64,
    pub(super) first_sequence: i64,
    pub(super) update_time: Option<Timestamp>,
}

/// What a command does to an investor's position.
pub(super) struct Change {
    pub(super) units_delta: i64,
    pub(super) demand_delta: i64,
}

/// Requests being applied to one locked offering inside one transaction.
pub struct Batch {
    pub(super) head: Offering,
    /// Every investor named in the batch (or every investor, when the batch reads them all).
    pub(super) holdings: HashMap<String, Holding>,
    /// True when `holdings` has every position of the offering.
    pub(super) all_positions: bool,
    /// A new investor past this many positions is refused.
    pub(super) investors_max: i64,
    /// Entries recorded under the batch's request_ids, earlier or within this batch.
    recorded: HashMap<String, Entry>,
    pub(super) now: Timestamp,
    /// The version before the clock closed the offering in this batch: a caller who read the
    /// offering as closed (GetOffering shows it so) saw that version.
    version_before_clock: Option<i64>,
    appended: Vec<Entry>,
    /// Every stored demand of the offering, when the batch may allocate (`with_demands`).
    pub(super) demands: Option<Vec<Demand>>,
    /// The ALLOCATED entries, when the batch allocated: kept apart from `appended`, compact.
    pub(super) allocation: Option<AllocationRun>,
    /// The Merkle tree's nodes that the appends completed and that are stored (`merkle`).
    pub(super) nodes: Vec<Node>,
}

/// What a batch leaves to write: the new head, the entries to append (in sequence order) and
/// the positions whose units or demand changed, and an allocation's entries and positions,
/// which the store writes a chunk at a time ([`AllocationRun::chunks`]). Every entry is hashed
/// already, so the order of the writes does not matter; `positions` holds the latest state of
/// an investor found in both. `nodes` are the Merkle tree's stored nodes that the entries (the
/// allocation's included) completed.
pub struct BatchWrites {
    pub head: Offering,
    pub entries: Vec<Entry>,
    pub positions: Vec<Position>,
    pub allocation: Option<AllocationRun>,
    pub nodes: Vec<Node>,
}

impl BatchWrites {
    /// Entries to append, the allocation's included.
    pub fn entry_count(&self) -> usize {
        self.entries.len() + self.allocation.as_ref().map_or(0, AllocationRun::len)
    }
}

impl Batch {
    /// `positions` must hold a row for every investor that has one among those the requests
    /// name (every investor of the offering when `all_positions`); `recorded` every existing
    /// entry whose request_id the requests use. `now` is the database's clock, read after the
    /// head was locked.
    pub fn new(
        head: Offering,
        positions: Vec<Position>,
        all_positions: bool,
        recorded: Vec<Entry>,
        now: Timestamp,
    ) -> Self {
        let holdings = positions
            .into_iter()
            .map(|p| {
                let holding = Holding {
                    units: p.units,
                    demand: p.demanded_units,
                    first_sequence: p.first_sequence,
                    update_time: p.update_time,
                };
                (p.investor_id, holding)
            })
            .collect();
        let recorded = recorded
            .into_iter()
            .map(|e| (e.request_id.clone(), e))
            .collect();
        Self {
            head,
            holdings,
            all_positions,
            investors_max: super::limits::INVESTORS_PER_OFFERING_DEFAULT,
            recorded,
            now,
            version_before_clock: None,
            appended: Vec::new(),
            demands: None,
            allocation: None,
            nodes: Vec::new(),
        }
    }

    /// Gives the batch every stored demand of its offering: investor_id, demanded_units and
    /// first_sequence of each position with demanded_units > 0, in any order. A batch that may
    /// allocate needs them ([`OfferingRequests::reads_demands`]).
    pub fn with_demands(mut self, demands: Vec<Demand>) -> Self {
        self.demands = Some(demands);
        self
    }

    /// Validates `request` against the running state and, if accepted, records its effect.
    pub fn apply(&mut self, request: &Request) -> Result<Applied, Rejection> {
        let recorded = self.recorded.get(&request.request_id);
        if let Idempotency::Replay(entry) = idempotency::decide(request, recorded)? {
            let entry = entry.clone();
            return Ok(self.applied(entry, true));
        }
        // Past close_time the offering is closed: the first mutation to see it so records it,
        // unless it is the CloseOffering that records it itself.
        if !matches!(request.command, Command::Close { .. }) && self.head.closes_by_clock(self.now)
        {
            self.close_by_clock();
        }
        // Each arm's rules are in the command's own file under `command/`.
        let entry = match &request.command {
            Command::Subscribe { investor_id, units } => {
                self.subscribe(request, investor_id, *units)?
            }
            Command::Cancel { investor_id, units } => self.cancel(request, investor_id, *units)?,
            Command::Close { expected_version } => self.close(request, *expected_version)?,
            Command::Finalize { expected_version } => self.finalize(request, *expected_version)?,
            Command::Allocate { expected_version } => self.allocate(request, *expected_version)?,
            Command::Amend {
                expected_version,
                changes,
            } => self.amend(request, *expected_version, changes)?,
        };
        Ok(self.applied(entry, false))
    }

    pub(super) fn require_open(&self) -> Result<(), Rejection> {
        if self.head.status != OfferingStatus::Open {
            let bound = self
                .head
                .close_time
                .is_some_and(|close| self.now >= close)
                .then_some("close_time");
            return Err(Rejection::OfferingNotOpen {
                status: self.head.status.name(),
                bound,
            });
        }
        Ok(())
    }

    /// Open, and within the subscription window (close_time is settled before any rule runs).
    pub(super) fn require_open_window(&self) -> Result<(), Rejection> {
        self.require_open()?;
        if self.head.open_time.is_some_and(|open| self.now < open) {
            return Err(Rejection::OfferingNotOpen {
                status: self.head.status.name(),
                bound: Some("open_time"),
            });
        }
        Ok(())
    }

    pub(super) fn check_lot(&self, units: i64) -> Result<(), Rejection> {
        let lot_units = self.head.lot();
        if units % lot_units != 0 {
            return Err(Rejection::NotAMultipleOfLot { units, lot_units });
        }
        Ok(())
    }

    /// A position is 0 or at least the minimum.
    pub(super) fn check_minimum(&self, would_hold: i64) -> Result<(), Rejection> {
        let minimum = self.head.min_units_per_investor;
        if would_hold != 0 && would_hold < minimum {
            return Err(Rejection::BelowInvestorMinimum {
                would_hold,
                minimum,
            });
        }
        Ok(())
    }

    pub(super) fn check_version(&self, expected: i64) -> Result<(), Rejection> {
        let seen = expected == 0
            || expected == self.head.version
            || Some(expected) == self.version_before_clock;
        if !seen {
            return Err(Rejection::VersionMismatch {
                expected,
                actual: self.head.version,
            });
        }
        Ok(())
    }

    pub(super) fn holding(&self, investor_id: &str) -> Holding {
        self.holdings.get(investor_id).cloned().unwrap_or_default()
    }

    /// A new entry at the next sequence, with the head's totals after it.
    pub(super) fn next_entry(&mut self, request_id: String, actor: &str, kind: EntryKind) -> Entry {
        self.head.version += 1;
        self.head.update_time = self.now;
        Entry {
            offering_id: self.head.offering_id.clone(),
            sequence: self.head.version,
            kind,
            investor_id: String::new(),
            units_delta: 0,
            investor_units_after: 0,
            offering_units_after: self.head.subscribed_units,
            request_id,
            requested_units: 0,
            expected_version: 0,
            record_time: self.now,
            actor: actor.to_owned(),
            demand_delta: 0,
            investor_demand_after: 0,
            offering_demand_after: self.head.demanded_units,
            terms_before: None,
            terms_after: None,
            entry_hash: chain::GENESIS,
        }
    }

    /// Every appended entry passes here, complete: it is linked to the chain, and the head
    /// keeps its hash for the next one.
    pub(super) fn push(&mut self, mut entry: Entry) -> Entry {
        debug_assert!((0..=self.head.max_units).contains(&self.head.subscribed_units));
        self.link(&mut entry);
        self.recorded
            .insert(entry.request_id.clone(), entry.clone());
        self.appended.push(entry.clone());
        entry
    }

    /// Links `entry` (the next sequence) to the chain and adds it to the Merkle tree: the one
    /// place where the head's hashes follow an append (an allocation's entries too).
    pub(super) fn link(&mut self, entry: &mut Entry) {
        debug_assert_eq!(entry.sequence, self.head.version, "entries append in order");
        self.head.last_hash = chain::link(&self.head.last_hash, entry);
        self.head.tree.append(&entry.entry_hash, &mut self.nodes);
    }

    /// The CLOSED entry that close_time implies, by the "system" actor.
    fn close_by_clock(&mut self) {
        self.version_before_clock = Some(self.head.version);
        self.head.status = OfferingStatus::Closed;
        let entry = self.next_entry(
            CLOSED_BY_CLOCK_REQUEST_ID.to_owned(),
            SYSTEM_ACTOR,
            EntryKind::OfferingClosed,
        );
        self.push(entry);
    }

    pub(super) fn append_lifecycle(
        &mut self,
        request: &Request,
        status_after: OfferingStatus,
    ) -> Entry {
        self.head.status = status_after;
        let mut entry = self.next_entry(
            request.request_id.clone(),
            &request.actor,
            request.command.kind(),
        );
        let (requested_units, expected_version) = request.command.request_fields();
        entry.requested_units = requested_units;
        entry.expected_version = expected_version;
        self.push(entry)
    }

    pub(super) fn append_investor(
        &mut self,
        request: &Request,
        investor_id: &str,
        change: Change,
    ) -> Entry {
        let sequence = self.head.version + 1;
        let holding = self.holdings.entry(investor_id.to_owned()).or_default();
        let (units_before, units_after) = (holding.units, holding.units + change.units_delta);
        holding.units = units_after;
        holding.demand += change.demand_delta;
        holding.update_time = Some(self.now);
        if holding.first_sequence == 0 {
            holding.first_sequence = sequence;
            self.head.position_count += 1;
        }
        let demand_after = holding.demand;
        if units_before == 0 && units_after > 0 {
            self.head.investor_count += 1;
        } else if units_before > 0 && units_after == 0 {
            self.head.investor_count -= 1;
        }
        self.head.subscribed_units += change.units_delta;
        self.head.demanded_units += change.demand_delta;
        debug_assert!(units_after >= 0 && demand_after >= 0);
        let mut entry = self.next_entry(
            request.request_id.clone(),
            &request.actor,
            request.command.kind(),
        );
        let (requested_units, expected_version) = request.command.request_fields();
        entry.investor_id = investor_id.to_owned();
        entry.units_delta = change.units_delta;
        entry.investor_units_after = units_after;
        entry.demand_delta = change.demand_delta;
        entry.investor_demand_after = demand_after;
        entry.requested_units = requested_units;
        entry.expected_version = expected_version;
        self.push(entry)
    }

    fn applied(&self, entry: Entry, replayed: bool) -> Applied {
        let position = (!entry.investor_id.is_empty()).then(|| {
            let holding = self.holding(&entry.investor_id);
            Position {
                offering_id: self.head.offering_id.clone(),
                investor_id: entry.investor_id.clone(),
                units: holding.units,
                update_time: holding.update_time,
                demanded_units: holding.demand,
                first_sequence: holding.first_sequence,
            }
        });
        Applied {
            entry,
            offering: self.head.clone(),
            position,
            replayed,
        }
    }

    /// True when the batch appended anything (otherwise there is nothing to write).
    pub fn has_writes(&self) -> bool {
        !self.appended.is_empty()
    }

    pub fn into_writes(self) -> BatchWrites {
        let mut touched: Vec<&str> = self
            .appended
            .iter()
            .filter(|e| !e.investor_id.is_empty())
            .map(|e| e.investor_id.as_str())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let positions = touched
            .into_iter()
            .map(|investor_id| {
                let holding = self.holding(investor_id);
                Position {
                    offering_id: self.head.offering_id.clone(),
                    investor_id: investor_id.to_owned(),
                    units: holding.units,
                    update_time: Some(self.now),
                    demanded_units: holding.demand,
                    first_sequence: holding.first_sequence,
                }
            })
            .collect();
        BatchWrites {
            head: self.head,
            entries: self.appended,
            positions,
            allocation: self.allocation,
            nodes: self.nodes,
        }
    }
}

/// The requests for one offering that go into one transaction, in the order they are applied.
#[derive(Clone, Debug)]
pub struct OfferingRequests {
    pub offering_id: Arc<str>,
    pub requests: Vec<Request>,
    /// Investors the offering may have positions for (--max-investors-per-offering).
    pub investors_max: i64,
}

impl OfferingRequests {
    /// True when the batch may handle every investor of the offering (an allocation, or an
    /// amendment checked against every holding): seconds of CPU at a million investors.
    pub fn handles_every_investor(&self) -> bool {
        self.reads_all_positions()
            || self
                .requests
                .iter()
                .any(|r| matches!(r.command, Command::Allocate { .. }))
    }

    /// True when a store must load every position of the offering, not only those named.
    pub fn reads_all_positions(&self) -> bool {
        self.requests
            .iter()
            .any(|r| r.command.reads_all_positions())
    }

    /// True when a store must load every stored demand of the offering whose head is `head`
    /// ([`Batch::with_demands`]): a request allocates, and the offering is pro rata and not
    /// allocated yet (a retried AllocateOffering of an allocated offering replays without them).
    pub fn reads_demands(&self, head: &Offering) -> bool {
        head.allocation == Allocation::ProRata
            && matches!(head.status, OfferingStatus::Open | OfferingStatus::Closed)
            && self
                .requests
                .iter()
                .any(|r| matches!(r.command, Command::Allocate { .. }))
    }
}

/// Applies the requests of several offerings, each against its own locked head, from the rows a
/// store loaded for all of them at once: the heads that exist, the positions of the investors
/// named (all of them for offerings whose requests [read all positions]), the recorded
/// entries of the request_ids named, and the stored demands of each offering whose requests
/// [read them], by offering_id. Returns the results and the rows to write (only for offerings
/// that changed).
///
/// [read all positions]: OfferingRequests::reads_all_positions
/// [read them]: OfferingRequests::reads_demands
pub fn apply_all(
    work: &[OfferingRequests],
    heads: Vec<Offering>,
    positions: Vec<Position>,
    recorded: Vec<Entry>,
    mut demands: HashMap<String, Vec<Demand>>,
    now: Timestamp,
) -> (Results, Vec<BatchWrites>) {
    let mut heads: HashMap<String, Offering> = heads
        .into_iter()
        .map(|h| (h.offering_id.clone(), h))
        .collect();
    let mut positions_by_offering: HashMap<String, Vec<Position>> = HashMap::new();
    for position in positions {
        positions_by_offering
            .entry(position.offering_id.clone())
            .or_default()
            .push(position);
    }
    let mut recorded_by_offering: HashMap<String, Vec<Entry>> = HashMap::new();
    for entry in recorded {
        recorded_by_offering
            .entry(entry.offering_id.clone())
            .or_default()
            .push(entry);
    }
    let mut results = Vec::with_capacity(work.len());
    let mut writes = Vec::new();
    for item in work {
        let Some(head) = heads.remove(&*item.offering_id) else {
            let missing = Rejection::OfferingNotFound {
                offering_id: item.offering_id.to_string(),
            };
            results.push(item.requests.iter().map(|_| Err(missing.clone())).collect());
            continue;
        };
        let positions = positions_by_offering
            .remove(&*item.offering_id)
            .unwrap_or_default();
        let recorded = recorded_by_offering
            .remove(&*item.offering_id)
            .unwrap_or_default();
        let all_positions = item.reads_all_positions();
        let mut batch = Batch::new(head, positions, all_positions, recorded, now);
        batch.investors_max = item.investors_max;
        if let Some(demands) = demands.remove(&*item.offering_id) {
            batch = batch.with_demands(demands);
        }
        results.push(
            item.requests
                .iter()
                .map(|request| batch.apply(request))
                .collect(),
        );
        if batch.has_writes() {
            writes.push(batch.into_writes());
        }
    }
    (results, writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::{head, now, request, subscribe};

    #[test]
    fn later_requests_see_earlier_ones_in_the_same_batch() {
        let mut batch = Batch::new(head(10, 0), vec![], false, vec![], now());
        assert!(batch.apply(&request("a", subscribe("alice", 6))).is_ok());
        let refused = batch.apply(&request("b", subscribe("bob", 5)));
        assert_eq!(
            refused.unwrap_err(),
            Rejection::OfferingCapExceeded {
                requested: 5,
                remaining: 4,
                max_units: 10
            }
        );
        let fits = batch.apply(&request("c", subscribe("bob", 4))).unwrap();
        assert_eq!(
            (fits.entry.sequence, fits.entry.offering_units_after),
            (3, 10)
        );
        let writes = batch.into_writes();
        assert_eq!(
            writes.entries.len(),
            2,
            "the refused request appends nothing"
        );
        assert_eq!(
            (
                writes.head.subscribed_units,
                writes.head.version,
                writes.head.investor_count
            ),
            (10, 3, 2)
        );
    }

    #[test]
    fn appended_entries_chain_on_from_the_head_and_the_head_keeps_the_last_hash() {
        let start = head(10, 0);
        let created = start.last_hash;
        assert_ne!(created, chain::GENESIS, "the creation entry is hashed too");
        let mut batch = Batch::new(start, vec![], false, vec![], now());
        let a = batch.apply(&request("a", subscribe("alice", 1))).unwrap();
        let b = batch.apply(&request("b", subscribe("bob", 1))).unwrap();
        let replay = batch.apply(&request("a", subscribe("alice", 1))).unwrap();
        assert_eq!(a.entry.entry_hash, chain::entry_hash(&created, &a.entry));
        assert_eq!(
            b.entry.entry_hash,
            chain::entry_hash(&a.entry.entry_hash, &b.entry)
        );
        assert_eq!(replay.entry.entry_hash, a.entry.entry_hash);
        let writes = batch.into_writes();
        assert_eq!(writes.head.last_hash, b.entry.entry_hash);
    }

    #[test]
    fn apply_all_answers_each_offering_apart_and_writes_only_those_that_changed() {
        let mut other = head(10, 0);
        other.offering_id = "other".into();
        let work = [
            OfferingRequests {
                offering_id: "deal".into(),
                requests: vec![request("a", subscribe("alice", 2))],
                investors_max: 10,
            },
            OfferingRequests {
                offering_id: "missing".into(),
                requests: vec![request("b", subscribe("alice", 1)); 2],
                investors_max: 10,
            },
            OfferingRequests {
                offering_id: "other".into(),
                requests: vec![request("c", subscribe("bob", 11))],
                investors_max: 10,
            },
        ];
        let (results, writes) = apply_all(
            &work,
            vec![head(10, 0), other],
            vec![],
            vec![],
            HashMap::new(),
            now(),
        );
        assert_eq!(
            results.len(),
            3,
            "one list of results per offering, in order"
        );
        assert!(results[0][0].is_ok());
        assert_eq!(
            results[1].len(),
            2,
            "every request of an unknown offering is answered"
        );
        for refused in &results[1] {
            assert_eq!(
                refused.as_ref().unwrap_err(),
                &Rejection::OfferingNotFound {
                    offering_id: "missing".into()
                }
            );
        }
        assert!(matches!(
            results[2][0],
            Err(Rejection::OfferingCapExceeded { .. })
        ));
        assert_eq!(writes.len(), 1, "only the offering that changed is written");
        assert_eq!(writes[0].head.offering_id, "deal");
        assert_eq!(writes[0].positions[0].units, 2);
    }

    #[test]
    fn past_close_time_the_first_mutation_appends_the_closed_entry_by_the_system() {
        let mut start = head(10, 0);
        start.close_time = Some(now());
        let mut batch = Batch::new(start, vec![], false, vec![], now());
        let refused = batch.apply(&request("a", subscribe("alice", 1)));
        assert_eq!(
            refused.unwrap_err(),
            Rejection::OfferingNotOpen {
                status: "CLOSED",
                bound: Some("close_time")
            }
        );
        let writes = batch.into_writes();
        let closed = &writes.entries[0];
        assert_eq!(
            (closed.kind, closed.actor.as_str(), closed.sequence),
            (EntryKind::OfferingClosed, SYSTEM_ACTOR, 2)
        );
        assert_eq!(writes.head.status, OfferingStatus::Closed);
    }
}
