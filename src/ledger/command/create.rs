//! CreateOffering: a new offering, OPEN, with its head and its first history entry, which
//! records the terms it starts with. Creation runs outside any batch (there is no head to lock
//! yet): each store inserts both rows at once, and when the offering_id is taken asks
//! `check_create` whether this is the same request again.

use crate::ledger::chain;
use crate::ledger::idempotency::{self, Creation, Idempotency};
use crate::ledger::outcome::Rejection;
use crate::ledger::types::{Entry, EntryKind, NewOffering, Offering, OfferingStatus, Timestamp};

/// What CreateOffering does when the offering_id may already be taken.
pub enum CreateOutcome {
    Created(Offering),
    /// The same request again: the existing offering, nothing written.
    Replayed(Offering),
}

/// Decides a CreateOffering whose offering_id is taken: a replay when the existing offering was
/// created by this very request, OFFERING_EXISTS otherwise (see `idempotency::Creation`).
pub fn check_create(
    new: &NewOffering,
    existing: Offering,
    created_by: &Entry,
) -> Result<CreateOutcome, Rejection> {
    let creation = Creation {
        new,
        existing: &existing,
    };
    let seen = idempotency::decide(&creation, Some(created_by))?;
    debug_assert!(
        matches!(seen, Idempotency::Replay(_)),
        "a taken offering_id has its creation entry"
    );
    Ok(CreateOutcome::Replayed(existing))
}

impl NewOffering {
    /// The head and first history entry of a new offering; the entry records its terms.
    pub fn first_rows(&self, now: Timestamp) -> (Offering, Entry) {
        let mut head = Offering {
            offering_id: self.offering_id.clone(),
            name: self.name.clone(),
            max_units: self.max_units,
            max_units_per_investor: self.max_units_per_investor,
            subscribed_units: 0,
            investor_count: 0,
            position_count: 0,
            status: OfferingStatus::Open,
            version: 1,
            create_time: now,
            update_time: now,
            allocation: self.allocation,
            open_time: self.open_time,
            close_time: self.close_time,
            lot_units: self.lot_units,
            min_units_per_investor: self.min_units_per_investor,
            max_total_demand: self.max_total_demand,
            demanded_units: 0,
            last_hash: chain::GENESIS,
            tree: Default::default(),
        };
        let mut entry = Entry {
            offering_id: self.offering_id.clone(),
            sequence: 1,
            kind: EntryKind::OfferingCreated,
            investor_id: String::new(),
            units_delta: 0,
            investor_units_after: 0,
            offering_units_after: 0,
            request_id: self.request_id.clone(),
            requested_units: self.max_units,
            expected_version: 0,
            record_time: now,
            actor: self.actor.to_string(),
            demand_delta: 0,
            investor_demand_after: 0,
            offering_demand_after: 0,
            terms_before: None,
            terms_after: Some(head.terms()),
            entry_hash: chain::GENESIS,
        };
        head.last_hash = chain::link(&chain::GENESIS, &mut entry);
        // A tree of one leaf completes no stored subtree.
        head.tree.append(&entry.entry_hash, &mut Vec::new());
        (head, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::{minutes, new_offering, now};

    #[test]
    fn the_first_rows_open_the_offering_and_start_its_chain() {
        let (head, entry) = new_offering(100, 10).first_rows(now());
        assert_eq!(
            (head.status, head.version, head.subscribed_units),
            (OfferingStatus::Open, 1, 0)
        );
        assert_eq!(
            (entry.sequence, entry.kind, entry.requested_units),
            (1, EntryKind::OfferingCreated, 100)
        );
        assert_eq!(entry.terms_after, Some(head.terms()));
        assert_eq!(entry.entry_hash, chain::entry_hash(&chain::GENESIS, &entry));
        assert_eq!(head.last_hash, entry.entry_hash);
        assert_eq!(head.tree.size(), 1);
        assert_eq!(
            head.tree.root(),
            crate::ledger::merkle::leaf_hash(&entry.entry_hash)
        );
    }

    #[test]
    fn the_same_creation_again_is_a_replay_of_the_existing_offering() {
        let new = new_offering(100, 10);
        // Created a while ago: the time is not part of the request.
        let (existing, created_by) = new.first_rows(now() - minutes(10));
        let outcome = check_create(&new, existing.clone(), &created_by).unwrap();
        assert!(matches!(outcome, CreateOutcome::Replayed(o) if o == existing));
    }

    #[test]
    fn a_taken_offering_id_with_other_terms_a_request_id_or_an_actor_is_offering_exists() {
        let new = new_offering(100, 10);
        let (existing, created_by) = new.first_rows(now());
        let exists = Rejection::OfferingExists {
            offering_id: "deal".into(),
        };
        let mut other_cap = new.clone();
        other_cap.max_units = 99;
        let mut other_request = new.clone();
        other_request.request_id = "create-again".into();
        let mut other_actor = new.clone();
        other_actor.actor = "intruder".into();
        let mut other_lot = new.clone();
        other_lot.lot_units = 5;
        for other in [other_cap, other_request, other_actor, other_lot] {
            assert_eq!(
                check_create(&other, existing.clone(), &created_by).err(),
                Some(exists.clone())
            );
        }
    }
}
