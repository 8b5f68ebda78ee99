//! Row types shared by both backends (the column names and types are the same in both schemas),
//! and their checked conversion into ledger types.

use crate::ledger::{Entry, EntryKind, Offering, OfferingStatus, Position, Timestamp};

use super::StoreError;

/// Column list matching [`HeadRow`], as a literal so that queries stay `&'static str`.
macro_rules! head_columns {
    () => {
        "offering_id, name, max_units, max_units_per_investor, subscribed_units, investor_count, status, version, create_time, update_time"
    };
}
pub(crate) use head_columns;

#[derive(sqlx::FromRow)]
pub struct HeadRow {
    offering_id: String,
    name: String,
    max_units: i64,
    max_units_per_investor: i64,
    subscribed_units: i64,
    investor_count: i64,
    status: i16,
    version: i64,
    create_time: Timestamp,
    update_time: Timestamp,
}

impl TryFrom<HeadRow> for Offering {
    type Error = StoreError;

    fn try_from(row: HeadRow) -> Result<Self, StoreError> {
        let status = OfferingStatus::from_code(row.status.into()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "offering {:?} has status {}",
                row.offering_id, row.status
            ))
        })?;
        Ok(Offering {
            offering_id: row.offering_id,
            name: row.name,
            max_units: row.max_units,
            max_units_per_investor: row.max_units_per_investor,
            subscribed_units: row.subscribed_units,
            investor_count: row.investor_count,
            status,
            version: row.version,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct PositionRow {
    offering_id: String,
    investor_id: String,
    units: i64,
    update_time: Timestamp,
}

impl From<PositionRow> for Position {
    fn from(row: PositionRow) -> Self {
        Position {
            offering_id: row.offering_id,
            investor_id: row.investor_id,
            units: row.units,
            update_time: Some(row.update_time),
        }
    }
}

/// Column list matching [`EntryRow`].
macro_rules! entry_columns {
    () => {
        "offering_id, sequence, kind, investor_id, units_delta, investor_units_after, offering_units_after, request_id, requested_units, expected_version, record_time, actor"
    };
}
pub(crate) use entry_columns;

#[derive(sqlx::FromRow)]
pub struct EntryRow {
    offering_id: String,
    sequence: i64,
    kind: i16,
    investor_id: String,
    units_delta: i64,
    investor_units_after: i64,
    offering_units_after: i64,
    request_id: String,
    requested_units: i64,
    expected_version: i64,
    record_time: Timestamp,
    actor: String,
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;

    fn try_from(row: EntryRow) -> Result<Self, StoreError> {
        let kind = EntryKind::from_code(row.kind.into()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "entry {:?}#{} has kind {}",
                row.offering_id, row.sequence, row.kind
            ))
        })?;
        Ok(Entry {
            offering_id: row.offering_id,
            sequence: row.sequence,
            kind,
            investor_id: row.investor_id,
            units_delta: row.units_delta,
            investor_units_after: row.investor_units_after,
            offering_units_after: row.offering_units_after,
            request_id: row.request_id,
            requested_units: row.requested_units,
            expected_version: row.expected_version,
            record_time: row.record_time,
            actor: row.actor,
        })
    }
}

pub fn into_entries(rows: Vec<EntryRow>) -> Result<Vec<Entry>, StoreError> {
    rows.into_iter().map(Entry::try_from).collect()
}

pub fn into_offerings(rows: Vec<HeadRow>) -> Result<Vec<Offering>, StoreError> {
    rows.into_iter().map(Offering::try_from).collect()
}
