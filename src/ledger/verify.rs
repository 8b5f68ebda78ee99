//! VerifyOffering: recompute an offering from its history alone and compare the result with the
//! stored head and positions. The history is fed in sequence order, a page at a time, so an
//! offering of any length is checked in bounded memory (one running total per investor).

use std::collections::HashMap;

use super::types::{Entry, EntryKind, Offering, OfferingStatus, Position};

/// Stop listing problems past this many: one broken invariant tends to cascade.
const PROBLEMS_MAX: usize = 100;

pub struct Verifier {
    max_units: i64,
    max_units_per_investor: i64,
    entries_checked: i64,
    last_sequence: i64,
    status: Option<OfferingStatus>,
    offering_units: i64,
    units_by_investor: HashMap<String, i64>,
    problems: Vec<String>,
}

pub struct Report {
    pub entries_checked: i64,
    pub problems: Vec<String>,
}

impl Verifier {
    /// Caps come from the head: they are set at creation and never change.
    pub fn new(head: &Offering) -> Self {
        Self {
            max_units: head.max_units,
            max_units_per_investor: head.max_units_per_investor,
            entries_checked: 0,
            last_sequence: 0,
            status: None,
            offering_units: 0,
            units_by_investor: HashMap::new(),
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

        let expected_status = match (entry.kind, self.status) {
            (EntryKind::OfferingCreated, None) => Some(OfferingStatus::Open),
            (EntryKind::Subscribed | EntryKind::Cancelled, Some(OfferingStatus::Open)) => {
                Some(OfferingStatus::Open)
            }
            (EntryKind::OfferingClosed, Some(OfferingStatus::Open)) => Some(OfferingStatus::Closed),
            (EntryKind::OfferingFinalized, Some(OfferingStatus::Closed)) => {
                Some(OfferingStatus::Finalized)
            }
            _ => None,
        };
        match expected_status {
            Some(status) => self.status = Some(status),
            None => self.problem(format!(
                "sequence {seq}: {:?} is not allowed after status {:?}",
                entry.kind, self.status
            )),
        }

        let delta_ok = match entry.kind {
            EntryKind::Subscribed => entry.units_delta > 0,
            EntryKind::Cancelled => entry.units_delta < 0,
            _ => entry.units_delta == 0,
        };
        if !delta_ok {
            self.problem(format!(
                "sequence {seq}: units_delta {} is wrong for {:?}",
                entry.units_delta, entry.kind
            ));
        }

        self.offering_units += entry.units_delta;
        if entry.offering_units_after != self.offering_units {
            self.problem(format!(
                "sequence {seq}: offering_units_after is {} but the history sums to {}",
                entry.offering_units_after, self.offering_units
            ));
        }
        if !(0..=self.max_units).contains(&self.offering_units) {
            self.problem(format!(
                "sequence {seq}: offering holds {} units, outside 0..={}",
                self.offering_units, self.max_units
            ));
        }

        if matches!(entry.kind, EntryKind::Subscribed | EntryKind::Cancelled) {
            let held = self
                .units_by_investor
                .entry(entry.investor_id.clone())
                .or_insert(0);
            *held += entry.units_delta;
            let held = *held;
            if entry.investor_units_after != held {
                self.problem(format!(
                    "sequence {seq}: investor_units_after is {} but the history sums to {held}",
                    entry.investor_units_after
                ));
            }
            let cap = self.max_units_per_investor;
            if held < 0 || (cap > 0 && held > cap) {
                self.problem(format!(
                    "sequence {seq}: investor {:?} holds {held} units, outside 0..={cap}",
                    entry.investor_id
                ));
            }
        }
    }

    /// Compares the recomputed state with the stored head and all stored position rows.
    pub fn finish(mut self, head: &Offering, positions: &[Position]) -> Report {
        if self.entries_checked == 0 {
            self.problem("the offering has no history".to_owned());
        }
        if head.version != self.last_sequence {
            self.problem(format!(
                "head version {} but the last sequence is {}",
                head.version, self.last_sequence
            ));
        }
        if head.subscribed_units != self.offering_units {
            self.problem(format!(
                "head subscribed_units {} but the history sums to {}",
                head.subscribed_units, self.offering_units
            ));
        }
        if Some(head.status) != self.status {
            self.problem(format!(
                "head status {:?} but the history says {:?}",
                head.status, self.status
            ));
        }
        let investors_holding = self.units_by_investor.values().filter(|u| **u > 0).count() as i64;
        if head.investor_count != investors_holding {
            self.problem(format!(
                "head investor_count {} but {investors_holding} investors hold units",
                head.investor_count
            ));
        }
        let mut stored: HashMap<&str, i64> = HashMap::with_capacity(positions.len());
        for position in positions {
            stored.insert(&position.investor_id, position.units);
        }
        let mut mismatches = Vec::new();
        for (investor, units) in &self.units_by_investor {
            let stored_units = stored.remove(investor.as_str()).unwrap_or(0);
            if stored_units != *units {
                mismatches.push(format!("investor {investor:?}: position holds {stored_units} but the history sums to {units}"));
            }
        }
        for (investor, units) in stored {
            if units != 0 {
                mismatches.push(format!(
                    "investor {investor:?}: position holds {units} with no history"
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
        }
    }
}
