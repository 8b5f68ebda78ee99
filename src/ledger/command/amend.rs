//! AmendOffering: while OPEN, the name, max_units, max_units_per_investor or close_time change,
//! unless the offering as it stands would then break its own terms (more sold than the new cap,
//! an investor holding more than the new per-investor cap, a close_time already past). The entry
//! records the terms before and after, so VerifyOffering checks each entry against the terms in
//! force at the time.

use crate::ledger::apply::Batch;
use crate::ledger::outcome::Rejection;
use crate::ledger::types::{Entry, EntryKind, Request, TermChanges, Terms};

impl Batch {
    /// The terms changed as `changes` says.
    pub(in crate::ledger) fn amend(
        &mut self,
        request: &Request,
        expected_version: i64,
        changes: &TermChanges,
    ) -> Result<Entry, Rejection> {
        self.require_open()?;
        self.check_version(expected_version)?;
        let after = self.check_amendment(changes)?;
        Ok(self.append_amendment(request, after))
    }

    /// The terms after `changes`, or why the offering as it stands forbids them.
    fn check_amendment(&self, changes: &TermChanges) -> Result<Terms, Rejection> {
        let head = &self.head;
        let after = changes.apply_to(&head.terms());
        let conflict = |field, reason: String| Err(Rejection::AmendmentConflict { field, reason });
        if changes.max_units.is_some() {
            let floor = [
                (head.subscribed_units, "the units subscribed"),
                (after.max_units_per_investor, "max_units_per_investor"),
                (head.min_units_per_investor, "min_units_per_investor"),
                (head.lot_units, "lot_units"),
            ];
            for (value, what) in floor {
                if after.max_units < value {
                    return conflict(
                        "max_units",
                        format!("{} is below {what} ({value})", after.max_units),
                    );
                }
            }
        }
        if let Some(cap) = changes.max_units_per_investor.filter(|cap| *cap > 0) {
            if cap < head.min_units_per_investor {
                return conflict(
                    "max_units_per_investor",
                    format!(
                        "{cap} is below min_units_per_investor ({})",
                        head.min_units_per_investor
                    ),
                );
            }
            if cap % head.lot() != 0 {
                return conflict(
                    "max_units_per_investor",
                    format!("{cap} is not a multiple of lot_units ({})", head.lot()),
                );
            }
            if cap > after.max_units {
                return conflict(
                    "max_units_per_investor",
                    format!("{cap} is over max_units ({})", after.max_units),
                );
            }
            debug_assert!(
                self.all_positions,
                "a per-investor cap is checked against every position"
            );
            let largest = self
                .holdings
                .values()
                .map(|h| h.units.max(h.demand))
                .max()
                .unwrap_or(0);
            if cap < largest {
                return conflict(
                    "max_units_per_investor",
                    format!("{cap} is below what an investor already holds or demands ({largest})"),
                );
            }
        }
        if let Some(close) = changes.close_time {
            if close <= self.now {
                return conflict("close_time", "is not in the future".to_owned());
            }
            if head.open_time.is_some_and(|open| close <= open) {
                return conflict("close_time", "is not after open_time".to_owned());
            }
        }
        Ok(after)
    }

    fn append_amendment(&mut self, request: &Request, after: Terms) -> Entry {
        let before = self.head.terms();
        self.head.name = after.name.clone();
        self.head.max_units = after.max_units;
        self.head.max_units_per_investor = after.max_units_per_investor;
        self.head.close_time = after.close_time;
        let mut entry = self.next_entry(
            request.request_id.clone(),
            &request.actor,
            EntryKind::OfferingAmended,
        );
        entry.expected_version = request.command.request_fields().1;
        entry.terms_before = Some(before);
        entry.terms_after = Some(after);
        self.push(entry)
    }
}

#[cfg(test)]
mod tests {
    use crate::ledger::apply::Batch;
    use crate::ledger::outcome::Rejection;
    use crate::ledger::testing::{head, minutes, now, position, request};
    use crate::ledger::types::{Command, EntryKind, TermChanges};

    fn amend(changes: TermChanges) -> Command {
        Command::Amend {
            expected_version: 0,
            changes,
        }
    }

    #[test]
    fn an_amendment_records_the_terms_before_and_after() {
        let mut batch = Batch::new(head(100, 0), vec![], true, vec![], now());
        let changes = TermChanges {
            max_units: Some(150),
            name: Some("Deal II".into()),
            ..TermChanges::default()
        };
        let amended = batch.apply(&request("a", amend(changes))).unwrap();
        let entry = &amended.entry;
        assert_eq!(entry.kind, EntryKind::OfferingAmended);
        let (before, after) = (
            entry.terms_before.as_ref().unwrap(),
            entry.terms_after.as_ref().unwrap(),
        );
        assert_eq!((before.max_units, after.max_units), (100, 150));
        assert_eq!(
            (before.name.as_str(), after.name.as_str()),
            ("Deal", "Deal II")
        );
        assert_eq!(
            (amended.offering.max_units, amended.offering.name.as_str()),
            (150, "Deal II")
        );
    }

    #[test]
    fn a_cap_below_what_is_sold_or_held_is_refused() {
        let mut start = head(100, 0);
        start.subscribed_units = 40;
        start.investor_count = 1;
        let held = position("alice", 40, 0, 2);
        let mut batch = Batch::new(start, vec![held], true, vec![], now());
        let lower_cap = TermChanges {
            max_units: Some(30),
            ..TermChanges::default()
        };
        assert_eq!(
            batch.apply(&request("a", amend(lower_cap))).unwrap_err(),
            Rejection::AmendmentConflict {
                field: "max_units",
                reason: "30 is below the units subscribed (40)".into()
            }
        );
        let lower_investor_cap = TermChanges {
            max_units_per_investor: Some(20),
            ..TermChanges::default()
        };
        assert!(matches!(
            batch.apply(&request("b", amend(lower_investor_cap))),
            Err(Rejection::AmendmentConflict {
                field: "max_units_per_investor",
                ..
            })
        ));
    }

    #[test]
    fn a_close_time_must_lie_ahead() {
        let mut batch = Batch::new(head(100, 0), vec![], true, vec![], now());
        let past = TermChanges {
            close_time: Some(now() - minutes(1)),
            ..TermChanges::default()
        };
        assert_eq!(
            batch.apply(&request("a", amend(past))).unwrap_err(),
            Rejection::AmendmentConflict {
                field: "close_time",
                reason: "is not in the future".into()
            }
        );
        let ahead = TermChanges {
            close_time: Some(now() + minutes(1)),
            ..TermChanges::default()
        };
        assert!(batch.apply(&request("b", amend(ahead))).is_ok());
    }
}
