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

    /// The form of the entry's own fields, as the API checked them on the request that wrote
    /// it: ids, the investor only where the kind has one, request ids, unit counts.
    fn check_form(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        if entry.offering_id != self.offering_id {
            self.problem(format!(
                "sequence {seq}: offering_id {} is not the head's",
                shown(&entry.offering_id)
            ));
        }
        let investor_kind = matches!(entry.kind, EntryKind::Subscribed | EntryKind::Cancelled);
        if investor_kind || (entry.kind == EntryKind::Allocated && !entry.investor_id.is_empty()) {
            self.broken(seq, fields::id("investor_id", &entry.investor_id));
        } else if !entry.investor_id.is_empty() {
            self.problem(format!(
                "sequence {seq}: investor_id: {} records no investor",
                entry.kind.name()
            ));
        }
        self.check_request_id(entry);
        let units_min = match entry.kind {
            EntryKind::Subscribed => Some(1),
            // 0 cancels everything held.
            EntryKind::Cancelled => Some(0),
            _ => None,
        };
        if let Some(min) = units_min {
            self.broken(
                seq,
                fields::units("requested_units", entry.requested_units, min),
            );
        }
        self.broken(
            seq,
            fields::not_negative("expected_version", entry.expected_version),
        );
    }

    /// A caller's request_id has the id form. Two kinds of entry carry one the ledger made: the
    /// CLOSED entry of the clock, and an investor's ALLOCATED entry ("<request_id>/<investor>").
    fn check_request_id(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        let request_id = entry.request_id.as_str();
        if request_id == CLOSED_BY_CLOCK_REQUEST_ID {
            if entry.kind != EntryKind::OfferingClosed || entry.actor != SYSTEM_ACTOR {
                self.problem(format!(
                    "sequence {seq}: request_id {request_id:?} is the clock's, on a {} by {}",
                    entry.kind.name(),
                    shown(&entry.actor)
                ));
            }
            return;
        }
        if entry.kind == EntryKind::Allocated && !entry.investor_id.is_empty() {
            let derived = request_id
                .strip_suffix(entry.investor_id.as_str())
                .and_then(|rest| rest.strip_suffix('/'));
            match derived {
                Some(caller_id) => self.broken(seq, fields::id("request_id", caller_id)),
                None => self.problem(format!(
                    "sequence {seq}: request_id {} of an allocation is not <request_id>/<investor_id>",
                    shown(request_id)
                )),
            }
            return;
        }
        self.broken(seq, fields::id("request_id", request_id));
    }

    /// The actor has a principal name's form. Two names are reserved for the ledger, and are
    /// held to what could write them (docs/hash-chain.md, "Entries older than a rule"):
    /// "unknown" only on what the first release wrote, which recorded no actor; "system" on the
    /// clock's closing, or on what the second release wrote, which let a principal take that
    /// name before the clock's closing existed.
    fn check_actor(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        self.broken(seq, fields::actor("actor", &entry.actor));
        let by_clock = entry.request_id == CLOSED_BY_CLOCK_REQUEST_ID;
        let reserved_by = match entry.actor.as_str() {
            UNKNOWN_ACTOR => Some("the first release, before actors were recorded,"),
            SYSTEM_ACTOR if !by_clock => Some("a principal of the second release"),
            _ => None,
        };
        if let Some(writer) = reserved_by
            && !self.written_before_terms(entry)
        {
            self.problem(format!(
                "sequence {seq}: actor {:?} on a {} ({}, {}): only {writer} writes it, and that release wrote no such entry",
                entry.actor,
                entry.kind.name(),
                self.allocation.name(),
                if entry.terms_after.is_some() { "with terms" } else { "no terms" },
            ));
        }
        if entry.actor == UNKNOWN_ACTOR && entry.kind == EntryKind::OfferingCreated {
            self.created_before_actors = true;
        }
    }

    /// True for an entry of the shape the releases before terms and pro-rata offerings wrote
    /// (the first two): one of the five kinds they knew, in a first-come offering, recording
    /// no terms and no demand.
    fn written_before_terms(&self, entry: &Entry) -> bool {
        let kind = matches!(
            entry.kind,
            EntryKind::OfferingCreated
                | EntryKind::Subscribed
                | EntryKind::Cancelled
                | EntryKind::OfferingClosed
                | EntryKind::OfferingFinalized
        );
        kind && self.allocation == Allocation::FirstCome
            && entry.terms_before.is_none()
            && entry.terms_after.is_none()
            && (
                entry.demand_delta,
                entry.investor_demand_after,
                entry.offering_demand_after,
            ) == (0, 0, 0)
    }

    /// The creation entry's terms, and each amendment's before (which must be what was in
    /// force) and after; each name where it was set, each set of terms as the rules keep them.
    fn check_terms(&mut self, entry: &Entry) {
        let seq = entry.sequence;
        match entry.kind {
            EntryKind::OfferingCreated => {
                if let Some(after) = &entry.terms_after {
                    self.terms = after.clone();
                    self.terms_known = true;
                    self.check_creation_terms(seq, after.clone());
                }
            }
            EntryKind::OfferingAmended => match (&entry.terms_before, &entry.terms_after) {
                (Some(before), Some(after)) => {
                    if !self.terms_known {
                        // The creation entry recorded no terms: the first amendment's before
                        // are what the offering was created with.
                        self.check_creation_terms(seq, before.clone());
                    } else if *before != self.terms {
                        self.problem(format!(
                            "sequence {seq}: the amendment's terms before are {} but {} were in force",
                            shown_terms(before),
                            shown_terms(&self.terms)
                        ));
                    }
                    if after.name != before.name {
                        self.broken(seq, fields::name("terms_after.name", &after.name));
                    }
                    self.check_terms_in_force(seq, after);
                    self.check_holdings_within_cap(seq, before, after);
                    self.terms = after.clone();
                    self.terms_known = true;
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

    /// The terms an offering was created with, by CreateOffering's rules: its name under the
    /// rule of the release that created it, its caps with the head's lot, minimum and bound.
    /// `seq` is the entry they were read from (for an offering whose history never says, the
    /// head's terms are checked at the end, as sequence 1's).
    fn check_creation_terms(&mut self, seq: i64, terms: Terms) {
        let name = if self.created_before_actors {
            fields::name_before_format_rule("name", &terms.name)
        } else {
            fields::name("name", &terms.name)
        };
        self.broken(seq, name);
        let caps = Caps {
            allocation: self.allocation,
            max_units: terms.max_units,
            max_units_per_investor: terms.max_units_per_investor,
            lot_units: self.lot_units,
            min_units_per_investor: self.min_units_per_investor,
            max_total_demand: self.max_total_demand,
        };
        self.broken(seq, caps.check());
    }

    fn check_terms_in_force(&mut self, seq: i64, terms: &Terms) {
        let result = fields::terms_in_force(terms, self.lot_units, self.min_units_per_investor);
        self.broken(
            seq,
            result.map_err(|error| FieldError {
                reason: format!("{} (terms_after)", error.reason),
                ..error
            }),
        );
    }

    /// AmendOffering refuses a per-investor cap below what an investor already holds or
    /// demands.
    fn check_holdings_within_cap(&mut self, seq: i64, before: &Terms, after: &Terms) {
        let cap = after.max_units_per_investor;
        if cap == 0 || cap == before.max_units_per_investor {
            return;
        }
        let largest = self
            .by_investor
            .values()
            .map(|held| held.units.max(held.demand))
            .max()
            .unwrap_or(0);
        if largest > cap {
            self.problem(format!(
                "sequence {seq}: max_units_per_investor amended to {cap}, below what an investor already held ({largest})"
            ));
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

    /// The problems of the stored history after `change`, with every hash recomputed (as an
    /// editor covering their tracks would) so that only the rules can tell.
    fn problems_after(change: impl FnOnce(&mut Stored)) -> Vec<String> {
        let mut stored = stored();
        change(&mut stored);
        stored.head.last_hash = chain::link_all(chain::GENESIS, &mut stored.entries);
        let report = verify(&stored, &[]);
        assert_eq!(report.first_bad_sequence, 0, "the chain itself holds");
        report.problems
    }

    /// Asserts that one of `problems` starts with `prefix`.
    fn assert_reported(problems: &[String], prefix: &str) {
        assert!(
            problems.iter().any(|p| p.starts_with(prefix)),
            "no problem starts with {prefix:?}: {problems:?}"
        );
    }

    /// The creation terms and the head changed alike, so that only the rule can object.
    fn set_terms(stored: &mut Stored, change: impl Fn(&mut Terms)) {
        change(stored.entries[0].terms_after.as_mut().unwrap());
        let mut terms = stored.head.terms();
        change(&mut terms);
        stored.head.name = terms.name;
        stored.head.max_units = terms.max_units;
        stored.head.max_units_per_investor = terms.max_units_per_investor;
    }

    #[test]
    fn a_cap_no_release_accepts_fails_naming_the_entry() {
        let problems = problems_after(|s| set_terms(s, |t| t.max_units = i64::MAX));
        assert_reported(&problems, "sequence 1: max_units is 9223372036854775807");
        let problems = problems_after(|s| set_terms(s, |t| t.max_units_per_investor = -1));
        assert_reported(&problems, "sequence 1: max_units_per_investor is -1");
    }

    #[test]
    fn a_negative_lot_fails_at_the_creation_entry() {
        let problems = problems_after(|s| s.head.lot_units = -3);
        assert_reported(&problems, "sequence 1: lot_units is -3");
    }

    #[test]
    fn a_minimum_off_the_lot_fails() {
        let problems = problems_after(|s| {
            s.head.lot_units = 5;
            s.head.min_units_per_investor = 3;
        });
        assert_reported(&problems, "sequence 1: min_units_per_investor is 3");
    }

    #[test]
    fn a_huge_name_fails_and_the_report_stays_short() {
        let problems = problems_after(|s| set_terms(s, |t| t.name = "x".repeat(10 << 20)));
        assert_reported(&problems, "sequence 1: name must be 1-256 characters");
        assert!(problems.iter().all(|p| p.len() < 1000), "{problems:?}");
    }

    #[test]
    fn a_name_with_a_bidi_override_fails_when_written_by_a_release_that_refused_it() {
        let problems = problems_after(|s| set_terms(s, |t| t.name = "evil\u{202E}gnp".into()));
        assert_reported(
            &problems,
            "sequence 1: name must not contain control or format",
        );
        let problems = problems_after(|s| set_terms(s, |t| t.name = "nul\0".into()));
        assert_reported(&problems, "sequence 1: name must not contain");
    }

    #[test]
    fn an_investor_id_or_request_id_outside_the_id_alphabet_fails() {
        let problems = problems_after(|s| {
            for entry in &mut s.entries[1..] {
                entry.investor_id = entry.investor_id.replace("bob", "bob\u{202E}");
            }
            s.positions
                .iter_mut()
                .for_each(|p| p.investor_id = p.investor_id.replace("bob", "bob\u{202E}"));
        });
        assert_reported(&problems, "sequence 3: investor_id contains '\\u{202e}'");
        let problems = problems_after(|s| s.entries[1].request_id = "a\nb".into());
        assert_reported(&problems, "sequence 2: request_id contains '\\n'");
        let problems = problems_after(|s| s.entries[0].offering_id.push('x'));
        assert_reported(
            &problems,
            "sequence 1: offering_id \"dealx\" is not the head's",
        );
    }

    #[test]
    fn an_actor_of_any_other_form_fails_and_the_report_stays_short() {
        let problems = problems_after(|s| s.entries[1].actor = "a".repeat(1 << 20));
        assert_reported(&problems, "sequence 2: actor must be 1-128 characters");
        assert!(problems.iter().all(|p| p.len() < 1000), "{problems:?}");
        let problems = problems_after(|s| s.entries[1].actor = "ops\n".into());
        assert_reported(&problems, "sequence 2: actor must be");
    }

    #[test]
    fn system_is_the_clocks_actor_or_a_second_release_principals() {
        // The second release let a principal be named "system", and wrote no terms.
        let problems = problems_after(|s| s.entries[1].actor = SYSTEM_ACTOR.into());
        assert_eq!(problems, Vec::<String>::new());
        let problems = problems_after(|s| s.entries[0].actor = SYSTEM_ACTOR.into());
        assert_reported(
            &problems,
            "sequence 1: actor \"system\" on a OFFERING_CREATED",
        );
        let problems = problems_after(|s| s.entries[1].request_id = "@close_time".into());
        assert_reported(
            &problems,
            "sequence 2: request_id \"@close_time\" is the clock's",
        );
    }

    #[test]
    fn unknown_is_only_on_what_the_first_release_wrote() {
        // Terms on the creation entry were recorded from the third release on.
        let problems = problems_after(|s| s.entries[0].actor = UNKNOWN_ACTOR.into());
        assert_reported(
            &problems,
            "sequence 1: actor \"unknown\" on a OFFERING_CREATED",
        );
        let problems = problems_after(|s| {
            s.entries[0].terms_after = None;
            s.entries[2].actor = UNKNOWN_ACTOR.into();
        });
        assert_eq!(
            problems,
            Vec::<String>::new(),
            "a subscription it could write"
        );
    }

    /// The first release wrote no terms and no actor, and its name rule let format characters
    /// through: such a history verifies, and so does one amended since.
    #[test]
    fn a_history_the_first_release_wrote_verifies() {
        let old = |s: &mut Stored| {
            s.entries[0].terms_after = None;
            s.head.name = "Deal\u{200B}".into();
            for entry in &mut s.entries {
                entry.actor = UNKNOWN_ACTOR.into();
            }
        };
        assert_eq!(problems_after(old), Vec::<String>::new());
        let problems = problems_after(|s| {
            old(s);
            s.entries[0].actor = "ops".into();
        });
        assert_reported(
            &problems,
            "sequence 1: name must not contain control or format",
        );
    }

    #[test]
    fn an_offering_created_without_terms_and_amended_later_verifies() {
        let problems = problems_after(|s| {
            s.entries[0].terms_after = None;
            let before = s.head.terms();
            let after = Terms {
                max_units: 20,
                ..before.clone()
            };
            let mut amended = s.entries[3].clone();
            amended.sequence = 5;
            amended.kind = EntryKind::OfferingAmended;
            amended.investor_id.clear();
            amended.units_delta = 0;
            amended.investor_units_after = 0;
            amended.requested_units = 0;
            amended.request_id = "amend".into();
            amended.terms_before = Some(before);
            amended.terms_after = Some(after);
            s.entries.push(amended);
            s.head.max_units = 20;
            s.head.version = 5;
        });
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn a_sum_past_i64_is_a_problem_of_the_entry_not_a_wrap() {
        let problems = problems_after(|s| {
            s.entries[1].units_delta = i64::MAX;
            s.entries[2].units_delta = i64::MAX;
        });
        assert_reported(&problems, "sequence 3: offering_units_after overflows");
    }
}
