//! Row types shared by both backends (the column names and types are the same in both schemas),
//! and their checked conversion into ledger types.

use crate::ledger::{
    Allocation, Entry, EntryKind, Offering, OfferingStatus, Position, Terms, Timestamp,
};

use super::StoreError;

/// Column list matching [`HeadRow`], as a literal so that queries stay `&'static str`.
macro_rules! head_columns {
    () => {
        "offering_id, name, max_units, max_units_per_investor, subscribed_units, investor_count, status, version, \
         create_time, update_time, allocation, open_time, close_time, lot_units, min_units_per_investor, \
         max_total_demand, demanded_units, last_hash"
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
    allocation: i16,
    open_time: Option<Timestamp>,
    close_time: Option<Timestamp>,
    lot_units: i64,
    min_units_per_investor: i64,
    max_total_demand: i64,
    demanded_units: i64,
    /// NULL only for an offering recorded before the chain and not yet backfilled.
    last_hash: Option<Vec<u8>>,
}

impl HeadRow {
    /// Appending to an offering whose history is not hashed would link to nothing: writers
    /// refuse it (migrate() hashes every offering before a server serves; only rows loaded
    /// straight into the database since then can lack it, until the next migrate).
    pub fn require_chained(&self) -> Result<(), StoreError> {
        match self.last_hash {
            Some(_) => Ok(()),
            None => Err(StoreError::Corrupt(format!(
                "offering {:?} has no last_hash: its history is not hashed yet (run subledger migrate)",
                self.offering_id
            ))),
        }
    }
}

impl TryFrom<HeadRow> for Offering {
    type Error = StoreError;

    fn try_from(row: HeadRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, value: i16| {
            StoreError::Corrupt(format!("offering {:?} has {what} {value}", row.offering_id))
        };
        let status = OfferingStatus::from_code(row.status.into())
            .ok_or_else(|| corrupt("status", row.status))?;
        let allocation = Allocation::from_code(row.allocation.into())
            .ok_or_else(|| corrupt("allocation", row.allocation))?;
        // NULL reads as zeros: the offering still shows in reads (e.g. rows loaded straight into
        // the database since migrate() ran); a writer refuses it first (`require_chained`).
        let last_hash = hash(row.last_hash, || {
            format!("offering {:?} last_hash", row.offering_id)
        })?
        .unwrap_or_default();
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
            allocation,
            open_time: row.open_time,
            close_time: row.close_time,
            lot_units: row.lot_units,
            min_units_per_investor: row.min_units_per_investor,
            max_total_demand: row.max_total_demand,
            demanded_units: row.demanded_units,
            last_hash,
        })
    }
}

/// Column list matching [`PositionRow`].
macro_rules! position_columns {
    () => {
        "offering_id, investor_id, units, update_time, demanded_units, first_sequence"
    };
}
pub(crate) use position_columns;

#[derive(sqlx::FromRow)]
pub struct PositionRow {
    offering_id: String,
    investor_id: String,
    units: i64,
    update_time: Timestamp,
    demanded_units: i64,
    first_sequence: i64,
}

impl From<PositionRow> for Position {
    fn from(row: PositionRow) -> Self {
        Position {
            offering_id: row.offering_id,
            investor_id: row.investor_id,
            units: row.units,
            update_time: Some(row.update_time),
            demanded_units: row.demanded_units,
            first_sequence: row.first_sequence,
        }
    }
}

/// Column list matching [`EntryRow`].
macro_rules! entry_columns {
    () => {
        "offering_id, sequence, kind, investor_id, units_delta, investor_units_after, offering_units_after, \
         request_id, requested_units, expected_version, record_time, actor, demand_delta, \
         investor_demand_after, offering_demand_after, before_name, before_max_units, \
         before_max_units_per_investor, before_close_time, after_name, after_max_units, \
         after_max_units_per_investor, after_close_time, entry_hash"
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
    demand_delta: i64,
    investor_demand_after: i64,
    offering_demand_after: i64,
    before_name: Option<String>,
    before_max_units: Option<i64>,
    before_max_units_per_investor: Option<i64>,
    before_close_time: Option<Timestamp>,
    after_name: Option<String>,
    after_max_units: Option<i64>,
    after_max_units_per_investor: Option<i64>,
    after_close_time: Option<Timestamp>,
    /// NULL only for an entry recorded before the chain and not yet backfilled.
    entry_hash: Option<Vec<u8>>,
}

/// A stored hash: NULL stays None, 32 bytes are a hash, any other length is corrupt.
/// `what` names the value in that error (a closure: no string is made for every row read).
fn hash(
    value: Option<Vec<u8>>,
    what: impl FnOnce() -> String,
) -> Result<Option<[u8; 32]>, StoreError> {
    value
        .map(|bytes| {
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                StoreError::Corrupt(format!("{} is {} bytes, not 32", what(), bytes.len()))
            })
        })
        .transpose()
}

/// The amendable terms of a row's columns; None when the row records none.
fn terms(
    name: Option<String>,
    max_units: Option<i64>,
    max_units_per_investor: Option<i64>,
    close_time: Option<Timestamp>,
) -> Option<Terms> {
    Some(Terms {
        name: name?,
        max_units: max_units?,
        max_units_per_investor: max_units_per_investor?,
        close_time,
    })
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;

    /// After migrate() every entry is hashed: a NULL hash is a broken store.
    fn try_from(row: EntryRow) -> Result<Self, StoreError> {
        let (entry, hashed) = row.into_entry()?;
        if !hashed {
            return Err(StoreError::Corrupt(format!(
                "entry {:?}#{} has no entry_hash: recorded before the hash chain and not backfilled",
                entry.offering_id, entry.sequence
            )));
        }
        Ok(entry)
    }
}

impl EntryRow {
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// The entry, and whether its hash was stored (when not, entry_hash holds zeros): the
    /// backfill reads entries recorded before the chain this way.
    pub fn into_entry(self) -> Result<(Entry, bool), StoreError> {
        let row = self;
        let kind = EntryKind::from_code(row.kind.into()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "entry {:?}#{} has kind {}",
                row.offering_id, row.sequence, row.kind
            ))
        })?;
        let after = terms(
            row.after_name,
            row.after_max_units,
            row.after_max_units_per_investor,
            row.after_close_time,
        );
        let before = terms(
            row.before_name,
            row.before_max_units,
            row.before_max_units_per_investor,
            row.before_close_time,
        );
        let entry_hash = hash(row.entry_hash, || {
            format!("entry {:?}#{} entry_hash", row.offering_id, row.sequence)
        })?;
        let entry = Entry {
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
            demand_delta: row.demand_delta,
            investor_demand_after: row.investor_demand_after,
            offering_demand_after: row.offering_demand_after,
            terms_before: before,
            terms_after: after,
            entry_hash: entry_hash.unwrap_or_default(),
        };
        Ok((entry, entry_hash.is_some()))
    }
}

pub fn into_entries(rows: Vec<EntryRow>) -> Result<Vec<Entry>, StoreError> {
    rows.into_iter().map(Entry::try_from).collect()
}

pub fn into_offerings(rows: Vec<HeadRow>) -> Result<Vec<Offering>, StoreError> {
    rows.into_iter().map(Offering::try_from).collect()
}

/// A query with its arguments, on either backend.
pub type Bound<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

/// Binds every column of [`head_columns`], in order: what the ledger built is what is written.
pub fn bind_head<'q, DB>(query: Bound<'q, DB>, head: &Offering) -> Bound<'q, DB>
where
    DB: sqlx::Database,
    String: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    i64: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    i16: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Timestamp: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Option<Timestamp>: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Vec<u8>: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
{
    query
        .bind(head.offering_id.clone())
        .bind(head.name.clone())
        .bind(head.max_units)
        .bind(head.max_units_per_investor)
        .bind(head.subscribed_units)
        .bind(head.investor_count)
        .bind(head.status as i16)
        .bind(head.version)
        .bind(head.create_time)
        .bind(head.update_time)
        .bind(head.allocation as i16)
        .bind(head.open_time)
        .bind(head.close_time)
        .bind(head.lot_units)
        .bind(head.min_units_per_investor)
        .bind(head.max_total_demand)
        .bind(head.demanded_units)
        .bind(head.last_hash.to_vec())
}

/// Binds every column of [`entry_columns`], in order.
pub fn bind_entry<'q, DB>(query: Bound<'q, DB>, entry: &Entry) -> Bound<'q, DB>
where
    DB: sqlx::Database,
    String: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Option<String>: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    i64: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Option<i64>: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    i16: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Timestamp: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Option<Timestamp>: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Vec<u8>: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
{
    let before = entry.terms_before.as_ref();
    let after = entry.terms_after.as_ref();
    query
        .bind(entry.offering_id.clone())
        .bind(entry.sequence)
        .bind(entry.kind as i16)
        .bind(entry.investor_id.clone())
        .bind(entry.units_delta)
        .bind(entry.investor_units_after)
        .bind(entry.offering_units_after)
        .bind(entry.request_id.clone())
        .bind(entry.requested_units)
        .bind(entry.expected_version)
        .bind(entry.record_time)
        .bind(entry.actor.clone())
        .bind(entry.demand_delta)
        .bind(entry.investor_demand_after)
        .bind(entry.offering_demand_after)
        .bind(before.map(|t| t.name.clone()))
        .bind(before.map(|t| t.max_units))
        .bind(before.map(|t| t.max_units_per_investor))
        .bind(before.and_then(|t| t.close_time))
        .bind(after.map(|t| t.name.clone()))
        .bind(after.map(|t| t.max_units))
        .bind(after.map(|t| t.max_units_per_investor))
        .bind(after.and_then(|t| t.close_time))
        .bind(entry.entry_hash.to_vec())
}

/// Binds every column of [`position_columns`], in order.
pub fn bind_position<'q, DB>(query: Bound<'q, DB>, position: &Position) -> Bound<'q, DB>
where
    DB: sqlx::Database,
    String: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    i64: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
    Option<Timestamp>: sqlx::Type<DB> + for<'t> sqlx::Encode<'t, DB>,
{
    query
        .bind(position.offering_id.clone())
        .bind(position.investor_id.clone())
        .bind(position.units)
        .bind(position.update_time)
        .bind(position.demanded_units)
        .bind(position.first_sequence)
}
