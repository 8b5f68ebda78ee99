//! VerifyOffering: recompute an offering from its history alone and compare the result with the
//! stored head and positions. The history is fed in sequence order, a page at a time, so an
//! offering of any length is checked in bounded memory (one running state per investor).
//!
//! Every rule is checked against the terms in force at each entry: the creation entry records
//! the first terms, each OFFERING_AMENDED entry the terms before and after it. A pro-rata
//! allocation is recomputed from the demands it was made from and compared, entry by entry.
//!
//! Every field is held to the form the API required when the entry was written (`fields`: id,
//! name and actor alphabets and lengths, unit ranges, how caps, lots and minimums fit), with
//! the exceptions documented in docs/hash-chain.md ("Entries older than a rule") for entries
//! the first release wrote, told apart by their actor "unknown". Nothing here trusts a stored
//! number: every sum is checked, and an overflow is a problem of the entry, never a wrap.
//!
//! The hash chain is recomputed too (see `chain`): the first entry whose stored hash differs
//! from the recomputed one is where the stored history was changed, removed or renumbered, even
//! when every total was made to agree again. A digest taken earlier (GetDigest) catches the
//! one edit the chain alone cannot: a history changed and then hashed again from there on.

use std::collections::HashMap;

use super::allocation::{self, Demand};
use super::apply::{CLOSED_BY_CLOCK_REQUEST_ID, SYSTEM_ACTOR, UNKNOWN_ACTOR};
use super::chain::{self, Digest, Hash};
use super::fields::{self, Caps, FieldError};
use super::limits::{DEMAND_TOTAL_MAX, ID_CHARS_MAX};
use super::types::{Allocation, Entry, EntryKind, Offering, OfferingStatus, Position, Terms};

use super::merkle::Frontier;
mod rules;

/// Stop listing problems past this many: one broken invariant tends to cascade.
const PROBLEMS_MAX: usize = 100;

/// What the history says about one investor.
#[derive(Clone, Copy, Default)]
struct Held {
    units: i64,
    demand: i64,
    first_sequence: i64,
}

pub struct Verifier {
    offering_id: String,
    allocation: Allocation,
    lot_units: i64,
    lot: i64,
    min_units_per_investor: i64,
    max_total_demand: i64,
    demand_bound: i64,
    /// The amendable terms in force; from the head until the history says otherwise
    /// (offerings created before terms were recorded in the creation entry).
    terms: Terms,
    /// False while the terms in force are the head's stand-in: the creation entry recorded
    /// none, and no amendment has said what they were.
    terms_known: bool,
    /// The creation entry's actor is "unknown": the first release created the offering, under
    /// the name rule of its day.
    created_before_actors: bool,
    entries_checked: i64,
    last_sequence: i64,
    status: Option<OfferingStatus>,
    offering_units: i64,
    offering_demand: i64,
    by_investor: HashMap<String, Held>,
    /// The allocations the rule gives, computed at the first ALLOCATED entry.
    expected_allocations: Option<HashMap<String, i64>>,
    /// The recomputed hash of the last entry fed (GENESIS before the first).
    chain_hash: Hash,
    /// The Merkle tree of the recomputed chain.
    tree: Frontier,
    /// The first sequence whose stored hash is not the recomputed one; 0 while none is.
    first_bad_sequence: i64,
    /// Digests still to reach, the lowest sequence last.
    digests_ahead: Vec<Digest>,
    digests_checked: usize,
    digests_failed: usize,
    problems: Vec<String>,
}

pub struct Report {
    pub entries_checked: i64,
    pub problems: Vec<String>,
    /// The first sequence whose stored entry_hash differs from the recomputed chain; 0 = none.
    pub first_bad_sequence: i64,
    /// Digests held against the chain, and how many of them it no longer passes through.
    pub digests_checked: usize,
    pub digests_failed: usize,
}

/// A stored string as a problem shows it: quoted, and cut so that a hostile value cannot make
/// the report as long as itself.
fn shown(text: &str) -> String {
    match text.char_indices().nth(ID_CHARS_MAX) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
    }
}

/// Terms as a problem shows them, the name cut as by [`shown`].
fn shown_terms(terms: &Terms) -> String {
    format!(
        "{{name {}, max_units {}, max_units_per_investor {}, close_time {:?}}}",
        shown(&terms.name),
        terms.max_units,
        terms.max_units_per_investor,
        terms.close_time
    )
}

impl Verifier {
    /// What the history does not record (the allocation mode, window, lot, minimum, demand bound
    /// are fixed at creation) comes from the head. `digests` are earlier digests of this
    /// offering the recomputed chain must still pass through.
    pub fn new(head: &Offering, digests: &[Digest]) -> Self {
        let mut digests_ahead = digests.to_vec();
        digests_ahead.sort_by_key(|d| std::cmp::Reverse(d.sequence));
        let mut verifier = Self {
            offering_id: head.offering_id.clone(),
            allocation: head.allocation,
            lot_units: head.lot_units,
            lot: head.lot(),
            min_units_per_investor: head.min_units_per_investor,
            max_total_demand: head.max_total_demand,
            demand_bound: match head.max_total_demand {
                0 => DEMAND_TOTAL_MAX,
                bound => bound,
            },
            terms: head.terms(),
            terms_known: false,
            created_before_actors: false,
            entries_checked: 0,
            last_sequence: 0,
            status: None,
            offering_units: 0,
            offering_demand: 0,
            by_investor: HashMap::new(),
            expected_allocations: None,
            chain_hash: chain::GENESIS,
            tree: Frontier::default(),
            first_bad_sequence: 0,
            digests_ahead,
            digests_checked: 0,
            digests_failed: 0,
            problems: Vec::new(),
        };
        if let Err(error) = fields::id("offering_id", &head.offering_id) {
            verifier.problem(format!("head: {error}"));
        }
        verifier
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(text);
        }
    }

    /// A field of the entry at `seq` that breaks a rule.
    fn broken(&mut self, seq: i64, result: Result<(), FieldError>) {
        if let Err(error) = result {
            self.problem(format!("sequence {seq}: {error}"));
        }
    }

    /// Adds an entry's delta to a running total and holds its stored `field` (the total after
    /// it) to the sum. Returns the new total: the sum, or, when the sum overflows i64 (a
    /// problem of this entry), the stored value, so that one bad entry does not cascade.
    fn running_total(
        &mut self,
        seq: i64,
        field: &str,
        total: i64,
        delta: i64,
        stored_after: i64,
    ) -> i64 {
        match total.checked_add(delta) {
            None => {
                self.problem(format!(
                    "sequence {seq}: {field} overflows: {total} + {delta} is outside i64"
                ));
                stored_after
            }
            Some(sum) => {
                if sum != stored_after {
                    self.problem(format!(
                        "sequence {seq}: {field} is {stored_after} but the history sums to {sum}"
                    ));
                }
                sum
            }
        }
    }

    /// Feeds the next entry, in sequence order.
    pub fn check_entry(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        self.entries_checked = self.entries_checked.saturating_add(1);
        if self.last_sequence.checked_add(1) != Some(seq) {
            self.problem(format!(
                "sequence {seq} follows {}: not gapless",
                self.last_sequence
            ));
        }
        self.last_sequence = seq;
        self.check_chain(entry);
        self.check_form(entry);
        self.check_actor(entry);
        self.check_status(entry);
        self.check_terms(entry);
        self.check_deltas(entry);

        self.offering_units = self.running_total(
            seq,
            "offering_units_after",
            self.offering_units,
            entry.units_delta,
            entry.offering_units_after,
        );
        self.offering_demand = self.running_total(
            seq,
            "offering_demand_after",
            self.offering_demand,
            entry.demand_delta,
            entry.offering_demand_after,
        );
        if !(0..=self.terms.max_units).contains(&self.offering_units) {
            self.problem(format!(
                "sequence {seq}: offering holds {} units, outside 0..={}",
                self.offering_units, self.terms.max_units
            ));
        }
        if !(0..=self.demand_bound).contains(&self.offering_demand) {
            self.problem(format!(
                "sequence {seq}: total demand {} outside 0..={}",
                self.offering_demand, self.demand_bound
            ));
        }
        if !entry.investor_id.is_empty() {
            self.check_investor(entry);
        }
    }

    /// Recomputes the entry's hash from the recomputed chain so far, not from the stored hash of
    /// the entry before: past the first break every stored hash differs, and only the first is
    /// reported (where the history was touched).
    fn check_chain(&mut self, entry: &Entry) {
        self.chain_hash = chain::entry_hash(&self.chain_hash, entry);
        // The tree of the recomputed chain: what a digest's root and the head's frontier must be.
        self.tree.append(&self.chain_hash, &mut Vec::new());
        if entry.entry_hash != self.chain_hash && self.first_bad_sequence == 0 {
            self.first_bad_sequence = entry.sequence;
            self.problem(format!(
                "sequence {}: entry_hash {} but the chain gives {}: the history was changed here",
                entry.sequence,
                chain::hex(&entry.entry_hash),
                chain::hex(&self.chain_hash)
            ));
        }
        self.check_digests_up_to(entry);
    }

    /// Holds every digest at or before this entry's sequence against the recomputed chain, not
    /// against the stored hashes: a history edited and then hashed again from the edit on has
    /// stored hashes that agree with each other, and only an earlier digest tells.
    fn check_digests_up_to(&mut self, entry: &Entry) {
        while let Some(digest) = self
            .digests_ahead
            .pop_if(|digest| digest.sequence <= entry.sequence)
        {
            let failure = if digest.sequence < entry.sequence {
                Some(format!(
                    "the history has no entry at sequence {}",
                    digest.sequence
                ))
            } else if digest.entry_hash != self.chain_hash {
                Some(format!(
                    "the chain gives {} there: the history up to it changed after the digest was taken",
                    chain::hex(&self.chain_hash)
                ))
            } else if digest
                .root_hash
                .is_some_and(|root| root != self.tree.root())
            {
                Some(format!(
                    "the Merkle tree of the history gives root {} there, not the digest's",
                    chain::hex(&self.tree.root())
                ))
            } else {
                digest
                    .record_time
                    .filter(|time| *time != entry.record_time)
                    .map(|time| {
                        format!(
                            "the digest's record_time {} is not the entry's {}",
                            time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                            entry
                                .record_time
                                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                        )
                    })
            };
            self.digest_checked(&digest, failure);
        }
    }

    fn digest_checked(&mut self, digest: &Digest, failure: Option<String>) {
        self.digests_checked += 1;
        if let Some(failure) = failure {
            self.digests_failed += 1;
            self.problem(format!(
                "digest at sequence {} ({}): {failure}",
                digest.sequence,
                chain::hex(&digest.entry_hash)
            ));
        }
    }

    fn check_status(&mut self, entry: &Entry) {
        use OfferingStatus as S;
        let pro_rata = self.allocation == Allocation::ProRata;
        let investor = !entry.investor_id.is_empty();
        let expected = match (entry.kind, self.status) {
            (EntryKind::OfferingCreated, None) => Some(S::Open),
            (
                EntryKind::Subscribed | EntryKind::Cancelled | EntryKind::OfferingAmended,
                Some(S::Open),
            ) => Some(S::Open),
            (EntryKind::OfferingClosed, Some(S::Open)) => Some(S::Closed),
            (EntryKind::Allocated, Some(S::Closed)) if pro_rata && investor => Some(S::Closed),
            (EntryKind::Allocated, Some(S::Closed)) if pro_rata => Some(S::Allocated),
            (EntryKind::OfferingFinalized, Some(S::Closed)) if !pro_rata => Some(S::Finalized),
            (EntryKind::OfferingFinalized, Some(S::Allocated)) if pro_rata => Some(S::Finalized),
            _ => None,
        };
        match expected {
            Some(status) => self.status = Some(status),
            None => self.problem(format!(
                "sequence {}: {:?} is not allowed after status {:?} ({:?})",
                entry.sequence, entry.kind, self.status, self.allocation
            )),
        }
    }

    fn check_deltas(&mut self, entry: &Entry) {
        let pro_rata = self.allocation == Allocation::ProRata;
        let (units, demand) = (entry.units_delta, entry.demand_delta);
        let ok = match entry.kind {
            EntryKind::Subscribed if pro_rata => units == 0 && demand > 0,
            EntryKind::Subscribed => units > 0 && demand == 0,
            EntryKind::Cancelled if pro_rata => units == 0 && demand < 0,
            EntryKind::Cancelled => units < 0 && demand == 0,
            EntryKind::Allocated if !entry.investor_id.is_empty() => units >= 0 && demand == 0,
            _ => units == 0 && demand == 0,
        };
        if !ok {
            self.problem(format!(
                "sequence {}: units_delta {units} and demand_delta {demand} are wrong for {:?} ({:?})",
                entry.sequence, entry.kind, self.allocation
            ));
        }
        // self.lot is at least 1, so neither remainder can overflow.
        if matches!(entry.kind, EntryKind::Subscribed | EntryKind::Cancelled)
            && (units % self.lot != 0 || demand % self.lot != 0)
        {
            self.problem(format!(
                "sequence {}: units_delta {units} and demand_delta {demand} are not multiples of the lot of {}",
                entry.sequence, self.lot
            ));
        }
    }

    fn check_investor(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        if entry.kind == EntryKind::Allocated && self.expected_allocations.is_none() {
            let expected = self.recompute_allocation(seq);
            self.expected_allocations = Some(expected);
        }
        let mut held = self
            .by_investor
            .get(&entry.investor_id)
            .copied()
            .unwrap_or_default();
        if held.first_sequence == 0 {
            held.first_sequence = seq;
        }
        held.units = self.running_total(
            seq,
            "investor_units_after",
            held.units,
            entry.units_delta,
            entry.investor_units_after,
        );
        held.demand = self.running_total(
            seq,
            "investor_demand_after",
            held.demand,
            entry.demand_delta,
            entry.investor_demand_after,
        );
        self.by_investor.insert(entry.investor_id.clone(), held);
        let investor = shown(&entry.investor_id);
        let cap = self.terms.max_units_per_investor;
        for (what, value) in [("units", held.units), ("demand", held.demand)] {
            if value < 0 || (cap > 0 && value > cap) {
                self.problem(format!(
                    "sequence {seq}: investor {investor} {what} {value}, outside 0..={cap}"
                ));
            }
        }
        if matches!(entry.kind, EntryKind::Subscribed | EntryKind::Cancelled) {
            let position = held.units.max(held.demand);
            if position != 0 && position < self.min_units_per_investor {
                self.problem(format!(
                    "sequence {seq}: investor {investor} holds {position}, below the minimum of {}",
                    self.min_units_per_investor
                ));
            }
        }
        if entry.kind == EntryKind::Allocated {
            let expected = self
                .expected_allocations
                .as_ref()
                .and_then(|a| a.get(&entry.investor_id).copied());
            if expected != Some(entry.units_delta) {
                self.problem(format!(
                    "sequence {seq}: investor {investor} was allocated {} but the rule gives {expected:?}",
                    entry.units_delta
                ));
            }
        }
    }

    /// The allocation the rule gives for the demands as they stand (at the first ALLOCATED
    /// entry, when every demand is final); empty, and a problem of that entry, when the demands
    /// or terms are ones the rule is not defined for.
    fn recompute_allocation(&mut self, seq: i64) -> HashMap<String, i64> {
        let demands: Vec<Demand> = self
            .by_investor
            .iter()
            .filter(|(_, held)| held.demand > 0)
            .map(|(investor_id, held)| Demand {
                investor_id: investor_id.clone(),
                demand: held.demand,
                first_sequence: held.first_sequence,
            })
            .collect();
        match allocation::allocate(self.terms.max_units, self.lot, &demands) {
            Ok(allocations) => demands
                .into_iter()
                .map(|d| d.investor_id)
                .zip(allocations)
                .collect(),
            Err(error) => {
                self.problem(format!("sequence {seq}: {error}"));
                HashMap::new()
            }
        }
    }

    /// Compares the recomputed state with the stored head and all stored position rows.
    pub fn finish(mut self, head: &Offering, positions: &[Position]) -> Report {
        if self.entries_checked == 0 {
            self.problem("the offering has no history".to_owned());
        } else if !self.terms_known {
            // Neither the creation entry nor an amendment recorded terms: the head's are the
            // ones the offering was created with.
            self.check_creation_terms(1, head.terms());
        }
        while let Some(digest) = self.digests_ahead.pop() {
            let failure = format!("the history ends at sequence {}", self.last_sequence);
            self.digest_checked(&digest, Some(failure));
        }
        let checks = [
            ("version", head.version, self.last_sequence),
            (
                "subscribed_units",
                head.subscribed_units,
                self.offering_units,
            ),
            ("demanded_units", head.demanded_units, self.offering_demand),
        ];
        for (what, stored, recomputed) in checks {
            if stored != recomputed {
                self.problem(format!(
                    "head {what} {stored} but the history says {recomputed}"
                ));
            }
        }
        if head.last_hash != self.chain_hash {
            self.problem(format!(
                "head last_hash {} but the chain of the history ends in {}",
                chain::hex(&head.last_hash),
                chain::hex(&self.chain_hash)
            ));
        }
        // A head whose tree is not built yet (size 0: before migrate) has no frontier to hold.
        if head.tree.size() != 0 && head.tree != self.tree {
            self.problem(format!(
                "head Merkle tree of size {} and root {} but the tree of the history's chain is of size {} and root {}",
                head.tree.size(),
                chain::hex(&head.tree.root()),
                self.tree.size(),
                chain::hex(&self.tree.root())
            ));
        }
        if Some(head.status) != self.status {
            self.problem(format!(
                "head status {:?} but the history says {:?}",
                head.status, self.status
            ));
        }
        if head.terms() != self.terms {
            self.problem(format!(
                "head terms {} but the history says {}",
                shown_terms(&head.terms()),
                shown_terms(&self.terms)
            ));
        }
        let investors_holding = self.by_investor.values().filter(|h| h.units > 0).count() as i64;
        if head.investor_count != investors_holding {
            self.problem(format!(
                "head investor_count {} but {investors_holding} investors hold units",
                head.investor_count
            ));
        }
        let mut stored: HashMap<&str, &Position> = HashMap::with_capacity(positions.len());
        for position in positions {
            stored.insert(&position.investor_id, position);
        }
        let mut mismatches = Vec::new();
        for (investor, held) in &self.by_investor {
            let (units, demand) = stored
                .remove(investor.as_str())
                .map_or((0, 0), |p| (p.units, p.demanded_units));
            if (units, demand) != (held.units, held.demand) {
                mismatches.push(format!(
                    "investor {}: position holds {units} units and {demand} demand but the history sums to {} and {}",
                    shown(investor),
                    held.units,
                    held.demand
                ));
            }
        }
        for (investor, position) in stored {
            if position.units != 0 || position.demanded_units != 0 {
                mismatches.push(format!(
                    "investor {}: position holds {} with no history",
                    shown(investor),
                    position.units.max(position.demanded_units)
                ));
            }
        }
        mismatches.sort();
        for text in mismatches {
            self.problem(text);
        }
        Report {
            entries_checked: self.entries_checked,
            problems: self.problems,
            first_bad_sequence: self.first_bad_sequence,
            digests_checked: self.digests_checked,
            digests_failed: self.digests_failed,
        }
    }
}

#[cfg(test)]
mod tests;
