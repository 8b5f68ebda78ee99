//! Domain <-> protobuf, at the edge and nowhere else.

use crate::ledger::chain::Digest;
use crate::ledger::{
    Allocation, Applied, Entry, EntryKind, Offering, OfferingStatus, Position, Terms, Timestamp,
};
use crate::proto;

pub fn timestamp(time: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

fn status(status: OfferingStatus) -> proto::OfferingStatus {
    match status {
        OfferingStatus::Open => proto::OfferingStatus::Open,
        OfferingStatus::Closed => proto::OfferingStatus::Closed,
        OfferingStatus::Finalized => proto::OfferingStatus::Finalized,
        OfferingStatus::Allocated => proto::OfferingStatus::Allocated,
    }
}

fn kind(kind: EntryKind) -> proto::EntryKind {
    match kind {
        EntryKind::OfferingCreated => proto::EntryKind::OfferingCreated,
        EntryKind::Subscribed => proto::EntryKind::Subscribed,
        EntryKind::Cancelled => proto::EntryKind::Cancelled,
        EntryKind::OfferingClosed => proto::EntryKind::OfferingClosed,
        EntryKind::OfferingFinalized => proto::EntryKind::OfferingFinalized,
        EntryKind::Allocated => proto::EntryKind::Allocated,
        EntryKind::OfferingAmended => proto::EntryKind::OfferingAmended,
    }
}

fn allocation(allocation: Allocation) -> proto::Allocation {
    match allocation {
        Allocation::FirstCome => proto::Allocation::FirstCome,
        Allocation::ProRata => proto::Allocation::ProRata,
    }
}

/// A request's allocation; UNSPECIFIED means first come (what every offering did before).
pub fn allocation_of(value: i32) -> Option<Allocation> {
    match proto::Allocation::try_from(value).ok()? {
        proto::Allocation::Unspecified | proto::Allocation::FirstCome => {
            Some(Allocation::FirstCome)
        }
        proto::Allocation::ProRata => Some(Allocation::ProRata),
    }
}

fn terms(terms: Terms) -> proto::OfferingTerms {
    proto::OfferingTerms {
        name: terms.name,
        max_units: terms.max_units,
        max_units_per_investor: terms.max_units_per_investor,
        close_time: terms.close_time.map(timestamp),
    }
}

pub fn offering(offering: Offering) -> proto::Offering {
    proto::Offering {
        remaining_units: offering.remaining_units(),
        offering_id: offering.offering_id,
        name: offering.name,
        max_units: offering.max_units,
        max_units_per_investor: offering.max_units_per_investor,
        subscribed_units: offering.subscribed_units,
        investor_count: offering.investor_count,
        status: status(offering.status).into(),
        version: offering.version,
        create_time: Some(timestamp(offering.create_time)),
        update_time: Some(timestamp(offering.update_time)),
        allocation: allocation(offering.allocation).into(),
        open_time: offering.open_time.map(timestamp),
        close_time: offering.close_time.map(timestamp),
        lot_units: offering.lot_units,
        min_units_per_investor: offering.min_units_per_investor,
        max_total_demand: offering.max_total_demand,
        demanded_units: offering.demanded_units,
    }
}

pub fn position(position: Position) -> proto::Position {
    proto::Position {
        offering_id: position.offering_id,
        investor_id: position.investor_id,
        units: position.units,
        update_time: position.update_time.map(timestamp),
        demanded_units: position.demanded_units,
    }
}

/// A digest of the ledger `ledger_id`, with its signature if it has one.
pub fn digest(digest: Digest, ledger_id: uuid::Uuid) -> proto::Digest {
    let (signature, key_id) = match digest.signed {
        Some(signed) => (
            signed.signature.to_vec(),
            crate::ledger::chain::hex(&signed.key_id),
        ),
        None => (Vec::new(), String::new()),
    };
    proto::Digest {
        ledger_id: ledger_id.to_string(),
        signature,
        key_id,
        offering_id: digest.offering_id,
        sequence: digest.sequence,
        entry_hash: digest.entry_hash.to_vec(),
        record_time: digest.record_time.map(timestamp),
        tree_size: if digest.root_hash.is_some() {
            digest.sequence
        } else {
            0
        },
        root_hash: digest.root_hash.map_or_else(Vec::new, |root| root.to_vec()),
    }
}

pub fn entry(entry: Entry) -> proto::HistoryEntry {
    proto::HistoryEntry {
        offering_id: entry.offering_id,
        sequence: entry.sequence,
        kind: kind(entry.kind).into(),
        investor_id: entry.investor_id,
        units_delta: entry.units_delta,
        investor_units_after: entry.investor_units_after,
        offering_units_after: entry.offering_units_after,
        request_id: entry.request_id,
        record_time: Some(timestamp(entry.record_time)),
        actor: entry.actor,
        demand_delta: entry.demand_delta,
        investor_demand_after: entry.investor_demand_after,
        offering_demand_after: entry.offering_demand_after,
        terms_before: entry.terms_before.map(terms),
        terms_after: entry.terms_after.map(terms),
        entry_hash: entry.entry_hash.to_vec(),
        requested_units: entry.requested_units,
        expected_version: entry.expected_version,
    }
}

/// The parts of a SubscribeResponse or CancelResponse (same fields, two message types).
pub fn applied(
    applied: Applied,
) -> (
    Option<proto::HistoryEntry>,
    Option<proto::Offering>,
    Option<proto::Position>,
    bool,
) {
    (
        Some(entry(applied.entry)),
        Some(offering(applied.offering)),
        applied.position.map(position),
        applied.replayed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::testing::every_field;

    #[test]
    fn a_timestamp_keeps_its_seconds_and_nanoseconds() {
        let converted = timestamp(every_field::time(0));
        assert_eq!(converted.seconds, 1_700_000_000);
        assert_eq!(converted.nanos, 123_456_000);
        // Before 1970 the seconds round down and the nanoseconds stay positive, as in the proto.
        let early = chrono::DateTime::from_timestamp(-2, 250_000_000).unwrap();
        assert_eq!(
            (timestamp(early).seconds, timestamp(early).nanos),
            (-2, 250_000_000)
        );
    }

    /// The stored codes are the proto's numbers, and the names the export writes are the
    /// proto's names without their prefix.
    #[test]
    fn every_enum_value_keeps_its_number_and_name() {
        for code in 1..=4 {
            let domain = OfferingStatus::from_code(code).unwrap();
            let proto = status(domain);
            assert_eq!(proto as i64, code);
            assert_eq!(
                proto.as_str_name(),
                format!("OFFERING_STATUS_{}", domain.name())
            );
        }
        for code in 1..=7 {
            let domain = EntryKind::from_code(code).unwrap();
            let proto = kind(domain);
            assert_eq!(proto as i64, code);
            assert_eq!(proto.as_str_name(), format!("ENTRY_KIND_{}", domain.name()));
        }
        for code in 1..=2 {
            let domain = Allocation::from_code(code).unwrap();
            let proto = allocation(domain);
            assert_eq!(proto as i64, code);
            assert_eq!(proto.as_str_name(), format!("ALLOCATION_{}", domain.name()));
            assert_eq!(allocation_of(proto.into()), Some(domain));
        }
    }

    #[test]
    fn a_request_without_an_allocation_is_first_come_and_an_unknown_one_is_refused() {
        assert_eq!(allocation_of(0), Some(Allocation::FirstCome));
        assert_eq!(allocation_of(3), None);
        assert_eq!(allocation_of(-1), None);
    }

    #[test]
    fn an_offering_carries_every_field_and_its_remaining_units() {
        let time = |seconds| Some(timestamp(every_field::time(seconds)));
        assert_eq!(
            offering(every_field::offering()),
            proto::Offering {
                offering_id: "tower-7".into(),
                name: "Tower 7".into(),
                max_units: 1_000,
                max_units_per_investor: 100,
                subscribed_units: 40,
                remaining_units: 960,
                investor_count: 2,
                status: proto::OfferingStatus::Closed.into(),
                version: 9,
                create_time: time(1),
                update_time: time(2),
                allocation: proto::Allocation::ProRata.into(),
                open_time: time(3),
                close_time: time(4),
                lot_units: 5,
                min_units_per_investor: 10,
                max_total_demand: 5_000,
                demanded_units: 700,
            }
        );
    }

    #[test]
    fn an_entry_carries_every_field_and_both_terms() {
        let time = |seconds| Some(timestamp(every_field::time(seconds)));
        assert_eq!(
            entry(every_field::entry()),
            proto::HistoryEntry {
                offering_id: "tower-7".into(),
                sequence: 9,
                kind: proto::EntryKind::OfferingAmended.into(),
                investor_id: "alice".into(),
                units_delta: -3,
                investor_units_after: 17,
                offering_units_after: 40,
                request_id: "amend-1".into(),
                record_time: time(5),
                actor: "ops".into(),
                demand_delta: 11,
                investor_demand_after: 13,
                offering_demand_after: 700,
                terms_before: Some(proto::OfferingTerms {
                    name: "Tower 7".into(),
                    max_units: 900,
                    max_units_per_investor: 90,
                    close_time: None,
                }),
                terms_after: Some(proto::OfferingTerms {
                    name: "Tower Seven".into(),
                    max_units: 1_000,
                    max_units_per_investor: 100,
                    close_time: time(4),
                }),
                entry_hash: vec![9; 32],
                requested_units: 3,
                expected_version: 8,
            }
        );
        let plain = Entry {
            terms_before: None,
            terms_after: None,
            ..every_field::entry()
        };
        let converted = entry(plain);
        assert_eq!(
            (converted.terms_before, converted.terms_after),
            (None, None)
        );
    }

    #[test]
    fn a_position_carries_every_field_but_its_first_sequence() {
        assert_eq!(
            position(every_field::position()),
            proto::Position {
                offering_id: "tower-7".into(),
                investor_id: "alice".into(),
                units: 17,
                update_time: Some(timestamp(every_field::time(6))),
                demanded_units: 13,
            }
        );
        let never_held = Position {
            update_time: None,
            ..every_field::position()
        };
        assert_eq!(position(never_held).update_time, None);
    }

    #[test]
    fn a_digest_carries_its_hash_bytes_and_its_time_if_kept() {
        let kept = Digest {
            offering_id: "tower-7".into(),
            sequence: 9,
            entry_hash: [9; 32],
            record_time: Some(every_field::time(5)),
            root_hash: Some([8; 32]),
            signed: None,
        };
        let ledger_id = uuid::Uuid::nil();
        assert_eq!(
            digest(kept.clone(), ledger_id),
            proto::Digest {
                ledger_id: ledger_id.to_string(),
                signature: vec![],
                key_id: String::new(),
                offering_id: "tower-7".into(),
                sequence: 9,
                entry_hash: vec![9; 32],
                record_time: Some(timestamp(every_field::time(5))),
                tree_size: 9,
                root_hash: vec![8; 32],
            }
        );
        let hash_only = Digest {
            record_time: None,
            root_hash: None,
            ..kept
        };
        let hash_only = digest(hash_only, ledger_id);
        assert_eq!(hash_only.record_time, None);
        assert_eq!((hash_only.tree_size, hash_only.root_hash), (0, vec![]));
    }

    #[test]
    fn an_applied_request_answers_with_its_entry_offering_position_and_replay() {
        let applied_request = Applied {
            entry: every_field::entry(),
            offering: every_field::offering(),
            position: Some(every_field::position()),
            replayed: true,
        };
        assert_eq!(
            applied(applied_request),
            (
                Some(entry(every_field::entry())),
                Some(offering(every_field::offering())),
                Some(position(every_field::position())),
                true,
            )
        );
    }
}
