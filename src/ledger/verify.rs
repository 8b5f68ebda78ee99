//! VerifyOffering: recompute an offering from its history alone and compare the result with the
//! stored head and positions. The history is fed in sequence order, a page at a time, so an
//! offering of any length is checked in bounded memory (one running state per investor).
//!
//! Every rule is checked against the terms in force at each entry: the creation entry records
//! the first terms, each OFFERING_AMENDED entry the terms before and after it. A pro-rata
//! allocation is recomputed from the demands it was made from and compared, entry by entry.
//!
//! The hash chain is recomputed too (see `chain`): the first entry whose stored hash differs
//! from the recomputed one is where the stored history was changed, removed or renumbered, even
//! when every total was made to agree again. A digest taken earlier (GetDigest) catches the
//! one edit the chain alone cannot: a history changed and then hashed again from there on.

use std::collections::HashMap;

use super::allocation::{self, Demand};
use super::chain::{self, Digest, Hash};
use super::limits::DEMAND_TOTAL_MAX;
use super::types::{Allocation, Entry, EntryKind, Offering, OfferingStatus, Position, Terms};

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
    allocation: Allocation,
    lot: i64,
    min_units_per_investor: i64,
    demand_bound: i64,
    /// The amendable terms in force; from the head until the creation entry says otherwise
    /// (offerings created before terms were recorded in it).
    terms: Terms,
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

impl Verifier {
    /// What the history does not record (the allocation mode, window, lot, minimum, demand bound
    /// are fixed at creation) comes from the head. `digests` are earlier digests of this
    /// offering the recomputed chain must still pass through.
    pub fn new(head: &Offering, digests: &[Digest]) -> Self {
        let mut digests_ahead = digests.to_vec();
        digests_ahead.sort_by_key(|d| std::cmp::Reverse(d.sequence));
        Self {
            allocation: head.allocation,
            lot: head.lot(),
            min_units_per_investor: head.min_units_per_investor,
            demand_bound: match head.max_total_demand {
                0 => DEMAND_TOTAL_MAX,
                bound => bound,
            },
            terms: head.terms(),
            entries_checked: 0,
            last_sequence: 0,
            status: None,
            offering_units: 0,
            offering_demand: 0,
            by_investor: HashMap::new(),
            expected_allocations: None,
            chain_hash: chain::GENESIS,
            first_bad_sequence: 0,
            digests_ahead,
            digests_checked: 0,
            digests_failed: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(text);
        }
    }

    /// Feeds the next entry, in sequence order.
    pub fn check_entry(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        self.entries_checked += 1;
        if seq != self.last_sequence + 1 {
            self.problem(format!(
                "sequence {seq} follows {}: not gapless",
                self.last_sequence
            ));
        }
        self.last_sequence = seq;
        self.check_chain(entry);
        self.check_status(entry);
        self.check_terms(entry);
        self.check_deltas(entry);

        self.offering_units += entry.units_delta;
        self.offering_demand += entry.demand_delta;
        if entry.offering_units_after != self.offering_units {
            self.problem(format!(
                "sequence {seq}: offering_units_after is {} but the history sums to {}",
                entry.offering_units_after, self.offering_units
            ));
        }
        if entry.offering_demand_after != self.offering_demand {
            self.problem(format!(
                "sequence {seq}: offering_demand_after is {} but the history sums to {}",
                entry.offering_demand_after, self.offering_demand
            ));
        }
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

    /// The creation entry's terms, and each amendment's before (which must be what was in
    /// force) and after.
    fn check_terms(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        match entry.kind {
            EntryKind::OfferingCreated => {
                if let Some(after) = &entry.terms_after {
                    self.terms = after.clone();
                }
            }
            EntryKind::OfferingAmended => match (&entry.terms_before, &entry.terms_after) {
                (Some(before), Some(after)) => {
                    if *before != self.terms {
                        self.problem(format!(
                            "sequence {seq}: the amendment's terms before are {before:?} but {:?} were in force",
                            self.terms
                        ));
                    }
                    self.terms = after.clone();
                }
                _ => self.problem(format!("sequence {seq}: an amendment without its terms")),
            },
            _ => {
                if entry.terms_before.is_some() || entry.terms_after.is_some() {
                    self.problem(format!("sequence {seq}: {:?} records terms", entry.kind));
                }
            }
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
        if matches!(entry.kind, EntryKind::Subscribed | EntryKind::Cancelled)
            && (units % self.lot != 0 || demand % self.lot != 0)
        {
            self.problem(format!(
                "sequence {}: {} units is not a multiple of the lot of {}",
                entry.sequence,
                units + demand,
                self.lot
            ));
        }
    }

    fn check_investor(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        if entry.kind == EntryKind::Allocated && self.expected_allocations.is_none() {
            self.expected_allocations = Some(self.recompute_allocation());
        }
        let held = self
            .by_investor
            .entry(entry.investor_id.clone())
            .or_default();
        if held.first_sequence == 0 {
            held.first_sequence = seq;
        }
        held.units += entry.units_delta;
        held.demand += entry.demand_delta;
        let held = *held;
        let mut problems = Vec::new();
        if entry.investor_units_after != held.units {
            problems.push(format!(
                "sequence {seq}: investor_units_after is {} but the history sums to {}",
                entry.investor_units_after, held.units
            ));
        }
        if entry.investor_demand_after != held.demand {
            problems.push(format!(
                "sequence {seq}: investor_demand_after is {} but the history sums to {}",
                entry.investor_demand_after, held.demand
            ));
        }
        let cap = self.terms.max_units_per_investor;
        for (what, value) in [("units", held.units), ("demand", held.demand)] {
            if value < 0 || (cap > 0 && value > cap) {
                problems.push(format!(
                    "sequence {seq}: investor {:?} {what} {value}, outside 0..={cap}",
                    entry.investor_id
                ));
            }
        }
        if matches!(entry.kind, EntryKind::Subscribed | EntryKind::Cancelled) {
            let position = held.units.max(held.demand);
            if position != 0 && position < self.min_units_per_investor {
                problems.push(format!(
                    "sequence {seq}: investor {:?} holds {position}, below the minimum of {}",
                    entry.investor_id, self.min_units_per_investor
                ));
            }
        }
        if entry.kind == EntryKind::Allocated {
            let expected = self
                .expected_allocations
                .as_ref()
                .and_then(|a| a.get(&entry.investor_id).copied());
            if expected != Some(entry.units_delta) {
                problems.push(format!(
                    "sequence {seq}: investor {:?} was allocated {} but the rule gives {expected:?}",
                    entry.investor_id, entry.units_delta
                ));
            }
        }
        for text in problems {
            self.problem(text);
        }
    }

    /// The allocation the rule gives for the demands as they stand (at the first ALLOCATED
    /// entry, when every demand is final).
    fn recompute_allocation(&self) -> HashMap<String, i64> {
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
        let allocations = allocation::allocate(self.terms.max_units, self.lot, &demands);
        demands
            .into_iter()
            .map(|d| d.investor_id)
            .zip(allocations)
            .collect()
    }

    /// Compares the recomputed state with the stored head and all stored position rows.
    pub fn finish(mut self, head: &Offering, positions: &[Position]) -> Report {
        if self.entries_checked == 0 {
            self.problem("the offering has no history".to_owned());
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
        if Some(head.status) != self.status {
            self.problem(format!(
                "head status {:?} but the history says {:?}",
                head.status, self.status
            ));
        }
        if head.terms() != self.terms {
            self.problem(format!(
                "head terms {:?} but the history says {:?}",
                head.terms(),
                self.terms
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
                    "investor {investor:?}: position holds {units} units and {demand} demand but the history sums to {} and {}",
                    held.units, held.demand
                ));
            }
        }
        for (investor, position) in stored {
            if position.units != 0 || position.demanded_units != 0 {
                mismatches.push(format!(
                    "investor {investor:?}: position holds {} with no history",
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
mod tests {
    use super::*;
    use crate::ledger::apply::Batch;
    use crate::ledger::testing::{cancel, new_offering, now, request, subscribe};

    /// What a store holds after the rules wrote: the head, the history in sequence order and
    /// every position.
    struct Stored {
        head: Offering,
        entries: Vec<Entry>,
        positions: Vec<Position>,
    }

    /// Created, alice subscribes 4, bob 3, alice cancels 1.
    fn stored() -> Stored {
        let (head, created) = new_offering(10, 5).first_rows(now());
        let mut batch = Batch::new(head, vec![], false, vec![], now());
        for (id, command) in [
            ("a", subscribe("alice", 4)),
            ("b", subscribe("bob", 3)),
            ("c", cancel("alice", 1)),
        ] {
            batch.apply(&request(id, command)).unwrap();
        }
        let writes = batch.into_writes();
        Stored {
            head: writes.head,
            entries: [vec![created], writes.entries].concat(),
            positions: writes.positions,
        }
    }

    fn verify(stored: &Stored, digests: &[Digest]) -> Report {
        let mut verifier = Verifier::new(&stored.head, digests);
        for entry in &stored.entries {
            verifier.check_entry(entry);
        }
        verifier.finish(&stored.head, &stored.positions)
    }

    /// Hashes the history again from `from` on, as someone covering an edit would, and points
    /// the head at the new end of the chain.
    fn rehash_from(stored: &mut Stored, from: usize) {
        let previous = stored.entries[from - 1].entry_hash;
        stored.head.last_hash = chain::link_all(previous, &mut stored.entries[from..]);
    }

    #[test]
    fn a_history_written_by_the_rules_verifies_clean() {
        let stored = stored();
        let report = verify(&stored, &[Digest::of(&stored.head)]);
        assert_eq!(report.problems, Vec::<String>::new());
        assert_eq!(report.entries_checked, 4);
        assert_eq!(report.first_bad_sequence, 0);
        assert_eq!((report.digests_checked, report.digests_failed), (1, 0));
    }

    #[test]
    fn a_wrong_running_total_is_found_even_when_the_chain_was_hashed_again() {
        let mut stored = stored();
        stored.entries[2].offering_units_after += 1;
        rehash_from(&mut stored, 2);
        let report = verify(&stored, &[]);
        assert_eq!(report.first_bad_sequence, 0, "the chain itself holds");
        assert_eq!(
            report.problems,
            ["sequence 3: offering_units_after is 8 but the history sums to 7"]
        );
    }

    #[test]
    fn an_entry_changed_in_place_breaks_the_chain_at_its_sequence() {
        let mut stored = stored();
        stored.entries[1].actor = "someone-else".into();
        let report = verify(&stored, &[]);
        assert_eq!(report.first_bad_sequence, 2);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report.problems[0].starts_with("sequence 2: entry_hash"));
        assert!(report.problems[1].starts_with("head last_hash"));
    }

    #[test]
    fn an_earlier_digest_catches_a_history_hashed_again_after_an_edit() {
        let mut stored = stored();
        let mut taken = Digest::of(&stored.head);
        taken.sequence = 2;
        taken.entry_hash = stored.entries[1].entry_hash;
        taken.record_time = Some(stored.entries[1].record_time);
        stored.entries[1].actor = "someone-else".into();
        rehash_from(&mut stored, 1);
        let report = verify(&stored, &[taken]);
        assert_eq!(report.first_bad_sequence, 0);
        assert_eq!((report.digests_checked, report.digests_failed), (1, 1));
    }

    #[test]
    fn a_missing_entry_is_a_gap_and_the_head_disagrees() {
        let mut stored = stored();
        stored.entries.remove(2);
        let report = verify(&stored, &[]);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p == "sequence 4 follows 2: not gapless"),
            "{:?}",
            report.problems
        );
        assert_eq!(report.first_bad_sequence, 4, "the chain skips an entry too");
    }

    #[test]
    fn a_stored_position_that_disagrees_with_the_history_is_reported() {
        let mut stored = stored();
        let alice = stored
            .positions
            .iter_mut()
            .find(|p| p.investor_id == "alice")
            .unwrap();
        alice.units = 4;
        let report = verify(&stored, &[]);
        assert_eq!(
            report.problems,
            [
                "investor \"alice\": position holds 4 units and 0 demand but the history sums to 3 and 0"
            ]
        );
    }

    #[test]
    fn a_position_over_the_per_investor_cap_in_force_is_reported() {
        let mut stored = stored();
        // Bob's 3 made 6: within the offering's 10, over the cap of 5 per investor.
        let bob = &mut stored.entries[2];
        bob.units_delta = 6;
        bob.investor_units_after = 6;
        for (entry, total) in stored.entries[2..].iter_mut().zip([10, 9]) {
            entry.offering_units_after = total;
        }
        stored.head.subscribed_units = 9;
        stored.positions.iter_mut().for_each(|p| {
            if p.investor_id == "bob" {
                p.units = 6;
            }
        });
        rehash_from(&mut stored, 2);
        let report = verify(&stored, &[]);
        assert_eq!(
            report.problems,
            ["sequence 3: investor \"bob\" units 6, outside 0..=5"]
        );
    }

    #[test]
    fn a_lifecycle_out_of_order_is_reported() {
        let mut stored = stored();
        stored.entries[3].kind = EntryKind::OfferingFinalized;
        stored.entries[3].investor_id.clear();
        let report = verify(&stored, &[]);
        assert!(
            report.problems.iter().any(|p| p.starts_with(
                "sequence 4: OfferingFinalized is not allowed after status Some(Open)"
            )),
            "{:?}",
            report.problems
        );
    }
}
