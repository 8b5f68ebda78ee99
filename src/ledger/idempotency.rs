//! Idempotency, decided here and nowhere else: is a request a replay of the one recorded under
//! its key, a reuse of that key for something else, or new?
//!
//! Every mutation passes through [`decide`]: each command of a batch (`apply::Batch::apply`,
//! on both backends) with the entry recorded under its request_id, and a CreateOffering whose
//! offering_id is taken (`command::create::check_create`) with the offering's creation entry.
//! The stores only find the recorded entry and hand it in; they judge nothing.
//!
//! A replay answers with what was recorded and appends nothing, so a retried call never counts
//! twice. A key reused for something else is refused, and so is the same request from another
//! principal: nobody reads another caller's result by guessing its request_id.

use super::outcome::Rejection;
use super::types::{Command, Entry, EntryKind, NewOffering, Offering, Request, Terms};

/// What the ledger knows of a request before it acts on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Idempotency<'e> {
    /// Nothing is recorded under its key: apply it.
    New,
    /// It was applied before, and this is what it appended: answer with it again.
    Replay(&'e Entry),
}

/// A mutation as idempotency sees it.
pub trait Idempotent {
    /// True when `entry`, recorded under this request's key, is what this very request
    /// appended: the same request made again, by the same principal.
    fn is_recorded_by(&self, entry: &Entry) -> bool;
    /// The refusal of a key already recorded for another request.
    fn key_reused(&self) -> Rejection;
}

/// Decides whether `request` is new, a replay of `recorded` (what is recorded under its key, if
/// anything), or a reuse of its key for something else (the error).
pub fn decide<'e>(
    request: &impl Idempotent,
    recorded: Option<&'e Entry>,
) -> Result<Idempotency<'e>, Rejection> {
    match recorded {
        None => Ok(Idempotency::New),
        Some(entry) if request.is_recorded_by(entry) => Ok(Idempotency::Replay(entry)),
        Some(_) => Err(request.key_reused()),
    }
}

/// Keyed by request_id within the offering: the entry tells the command, its investor, the
/// units as asked, the expected version and the actor; an amendment, the terms it changed.
impl Idempotent for Request {
    fn is_recorded_by(&self, entry: &Entry) -> bool {
        let command = &self.command;
        let (requested_units, expected_version) = command.request_fields();
        entry.kind == command.kind()
            && entry.investor_id == command.investor_id().unwrap_or("")
            && entry.requested_units == requested_units
            && entry.expected_version == expected_version
            && entry.actor == *self.actor
            && match (command, &entry.terms_before, &entry.terms_after) {
                (Command::Amend { changes, .. }, Some(before), Some(after)) => {
                    changes.apply_to(before) == *after
                }
                (Command::Amend { .. }, _, _) => false,
                _ => true,
            }
    }

    fn key_reused(&self) -> Rejection {
        Rejection::RequestIdReused {
            request_id: self.request_id.clone(),
        }
    }
}

/// A CreateOffering that found its offering_id taken. The offering_id is its key, and the
/// offering's creation entry what is recorded under it; what the entry does not record (the
/// allocation mode, window, lot, minimum, demand bound, all fixed at creation) is read from the
/// head. A key reused is OFFERING_EXISTS.
pub struct Creation<'a> {
    pub new: &'a NewOffering,
    pub existing: &'a Offering,
}

impl Idempotent for Creation<'_> {
    fn is_recorded_by(&self, created_by: &Entry) -> bool {
        let (new, existing) = (self.new, self.existing);
        let terms_asked = Terms {
            name: new.name.clone(),
            max_units: new.max_units,
            max_units_per_investor: new.max_units_per_investor,
            close_time: new.close_time,
        };
        // An offering created before its entries recorded terms is judged by its head's.
        let terms_created = created_by
            .terms_after
            .clone()
            .unwrap_or_else(|| existing.terms());
        terms_asked == terms_created
            && new.allocation == existing.allocation
            && new.open_time == existing.open_time
            && new.lot_units == existing.lot_units
            && new.min_units_per_investor == existing.min_units_per_investor
            && new.max_total_demand == existing.max_total_demand
            && created_by.kind == EntryKind::OfferingCreated
            && created_by.request_id == new.request_id
            && created_by.actor == *new.actor
    }

    fn key_reused(&self) -> Rejection {
        Rejection::OfferingExists {
            offering_id: self.new.offering_id.clone(),
        }
    }
}

/// PostgreSQL first applies a batch with its request_ids presumed new, without looking them up
/// (a round trip less under the head lock, and right for every call but retries). The results
/// of such an attempt stand only if no rule refused a request: a refusal may be a replay in
/// disguise (a retried Subscribe after the offering sold out), which only the recorded entry
/// tells apart. Otherwise the batch is applied again with the lookup, and [`decide`] judges.
/// (An unknown offering is refused before any request_id could matter.)
pub fn presumed_new_stands<'r, T: 'r>(
    results: impl IntoIterator<Item = &'r Result<T, Rejection>>,
) -> bool {
    !results.into_iter().any(|result| {
        matches!(result, Err(refusal) if !matches!(refusal, Rejection::OfferingNotFound { .. }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::apply::Batch;
    use crate::ledger::testing::{cancel, head, now, request, subscribe};
    use crate::ledger::types::TermChanges;

    #[test]
    fn a_request_id_repeated_in_one_batch_is_a_replay() {
        let mut batch = Batch::new(head(10, 0), vec![], false, vec![], now());
        let first = batch.apply(&request("a", subscribe("alice", 2))).unwrap();
        let again = batch.apply(&request("a", subscribe("alice", 2))).unwrap();
        assert!(again.replayed && !first.replayed);
        assert_eq!(again.entry, first.entry);
        let reused = batch.apply(&request("a", subscribe("alice", 3)));
        assert!(matches!(reused, Err(Rejection::RequestIdReused { .. })));
        assert_eq!(batch.into_writes().entries.len(), 1);
    }

    #[test]
    fn a_request_recorded_earlier_is_a_replay_and_anything_else_under_its_id_a_reuse() {
        let mut batch = Batch::new(head(10, 0), vec![], false, vec![], now());
        let recorded = batch.apply(&request("a", subscribe("alice", 2))).unwrap();
        let entry = recorded.entry;
        let same = request("a", subscribe("alice", 2));
        assert_eq!(decide(&same, None), Ok(Idempotency::New));
        assert_eq!(decide(&same, Some(&entry)), Ok(Idempotency::Replay(&entry)));
        let mut another_principal = same.clone();
        another_principal.actor = "someone-else".into();
        let others = [
            request("a", subscribe("bob", 2)),
            request("a", subscribe("alice", 3)),
            request("a", cancel("alice", 2)),
            another_principal,
        ];
        for other in others {
            assert_eq!(
                decide(&other, Some(&entry)),
                Err(Rejection::RequestIdReused {
                    request_id: "a".into()
                }),
                "{other:?}"
            );
        }
    }

    #[test]
    fn an_amendment_is_a_replay_only_with_the_same_changes() {
        let raise = |max_units| Command::Amend {
            expected_version: 0,
            changes: TermChanges {
                max_units: Some(max_units),
                ..TermChanges::default()
            },
        };
        let mut batch = Batch::new(head(10, 0), vec![], true, vec![], now());
        let entry = batch.apply(&request("a", raise(20))).unwrap().entry;
        assert!(request("a", raise(20)).is_recorded_by(&entry));
        assert!(!request("a", raise(30)).is_recorded_by(&entry));
        let mut without_terms = entry.clone();
        without_terms.terms_after = None;
        assert!(
            !request("a", raise(20)).is_recorded_by(&without_terms),
            "an amendment without its terms recorded cannot be told apart"
        );
    }

    #[test]
    fn results_presumed_new_stand_unless_a_rule_refused_a_request() {
        let applied: Result<(), Rejection> = Ok(());
        let missing = Err(Rejection::OfferingNotFound {
            offering_id: "gone".into(),
        });
        let sold_out = Err(Rejection::OfferingCapExceeded {
            requested: 1,
            remaining: 0,
            max_units: 10,
        });
        assert!(presumed_new_stands([&applied, &missing]));
        assert!(
            !presumed_new_stands([&applied, &sold_out]),
            "a sold-out refusal may be a retried Subscribe that was applied"
        );
    }
}
