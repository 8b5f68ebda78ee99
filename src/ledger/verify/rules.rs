//! The rules an entry's own fields are held to: the form the API required of the request
//! that wrote it (ids, actor, name, units), and the terms in force, with the exceptions for
//! entries written before a rule existed (docs/hash-chain.md, "Entries older than a rule").

use super::*;

impl Verifier {
    /// The form of the entry's own fields, as the API checked them on the request that wrote
    /// it: ids, the investor only where the kind has one, request ids, unit counts.
    pub(super) fn check_form(&mut self, entry: &Entry) {
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
    pub(super) fn check_request_id(&mut self, entry: &Entry) {
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
    pub(super) fn check_actor(&mut self, entry: &Entry) {
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
    pub(super) fn written_before_terms(&self, entry: &Entry) -> bool {
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
    pub(super) fn check_terms(&mut self, entry: &Entry) {
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
    pub(super) fn check_creation_terms(&mut self, seq: i64, terms: Terms) {
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

    pub(super) fn check_terms_in_force(&mut self, seq: i64, terms: &Terms) {
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
    pub(super) fn check_holdings_within_cap(&mut self, seq: i64, before: &Terms, after: &Terms) {
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
}
