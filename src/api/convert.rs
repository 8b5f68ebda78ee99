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

pub fn digest(digest: Digest) -> proto::Digest {
    proto::Digest {
        offering_id: digest.offering_id,
        sequence: digest.sequence,
        entry_hash: digest.entry_hash.to_vec(),
        record_time: digest.record_time.map(timestamp),
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
