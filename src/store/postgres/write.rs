//! The one statement that writes a batch: it appends the entries, upserts the positions, inserts
//! the Merkle tree's completed stored nodes and updates the heads of every offering the batch changed, each head with a NOTIFY. Its text is
//! made once from the column lists (rows.rs), and its parameters are one array per column, as
//! UNNEST takes them: a batch of any size is one round trip.
//!
//! An allocation's entries (up to a million) go before it, [`ALLOCATION_CHUNK_ROWS`] at a time
//! in a statement of their own, so that neither the process nor one statement ever holds them
//! all.

use std::sync::LazyLock;

use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::PgStore;
use super::changes::CHANGE_CHANNEL;
use crate::ledger::{AllocationRun, BatchWrites};
use crate::store::StoreError;
use crate::store::columns::{
    Params, Selection, assign_updated, match_keys, names, on_conflict_update,
};
use crate::store::rows::{EntryRow, HeadRow, NodeRow, PositionRow};

/// Parameters: one array per column of the entries, of the positions, of the Merkle tree's
/// stored nodes, and of the heads' keys and updated columns (rows.rs), then the NOTIFY channel. An entry whose request_id is
/// recorded already is skipped, and counted out of what the statement returns.
static WRITE_BATCH: LazyLock<String> = LazyLock::new(|| {
    let mut params = Params::postgres();
    let appended = append_ctes(&mut params);
    let node_arrays = params.arrays(NodeRow::COLUMNS, Selection::All);
    let head_arrays = params.arrays(HeadRow::COLUMNS, Selection::Rewritten);
    let channel = params.next();
    format!(
        "{appended}, nodes AS ( \
            INSERT INTO merkle_node ({nodes}) SELECT * FROM UNNEST({node_arrays}) \
            ON CONFLICT DO NOTHING \
         ) \
         UPDATE offering_head AS h SET {head_assignments} \
         FROM UNNEST({head_arrays}) AS v ({head_names}) \
         WHERE {head_keys} \
         RETURNING (SELECT count(*) FROM appended), pg_notify({channel}, v.version::text || ':' || v.offering_id)",
        head_assignments = assign_updated(HeadRow::COLUMNS, "v"),
        nodes = names(NodeRow::COLUMNS, Selection::All),
        head_names = names(HeadRow::COLUMNS, Selection::Rewritten),
        head_keys = match_keys(HeadRow::COLUMNS, "h", "v"),
    )
});

/// The two CTEs both writes start with, taking the next parameters: `appended` inserts the
/// entries (one array per column; a request_id recorded already is skipped, and `appended`
/// returns a row per entry inserted), `positions` upserts the positions.
fn append_ctes(params: &mut Params) -> String {
    let entry_arrays = params.arrays(EntryRow::COLUMNS, Selection::All);
    let position_arrays = params.arrays(PositionRow::COLUMNS, Selection::All);
    format!(
        "WITH appended AS ( \
            INSERT INTO history_entry ({entries}) SELECT * FROM UNNEST({entry_arrays}) \
            ON CONFLICT (offering_id, request_id) DO NOTHING RETURNING 1 \
         ), positions AS ( \
            INSERT INTO investor_position ({positions}) SELECT * FROM UNNEST({position_arrays}) \
            {position_upsert} \
         )",
        entries = names(EntryRow::COLUMNS, Selection::All),
        positions = names(PositionRow::COLUMNS, Selection::All),
        position_upsert = on_conflict_update(PositionRow::COLUMNS),
    )
}

/// Rows of an allocation appended per statement: 10,000 entries and positions are a few MB of
/// arrays and about a tenth of a second of PostgreSQL's work, so a million investors take a
/// hundred round trips, and no statement comes near --db-io-timeout.
pub(super) const ALLOCATION_CHUNK_ROWS: usize = 10_000;

/// Parameters: one array per column of the entries and of the positions. Returns how many
/// entries were appended (an entry whose request_id is recorded already is skipped).
static APPEND_ALLOCATION: LazyLock<String> = LazyLock::new(|| {
    let appended = append_ctes(&mut Params::postgres());
    format!("{appended} SELECT count(*) FROM appended")
});

impl PgStore {
    /// Appends an allocation's entries and upserts its positions, a chunk per statement, built
    /// only as it is sent. Returns how many entries were appended.
    pub(super) async fn write_allocation(
        &self,
        connection: &mut PgConnection,
        run: &AllocationRun,
    ) -> Result<usize, StoreError> {
        let mut appended = 0;
        for chunk in run.chunks(ALLOCATION_CHUNK_ROWS) {
            let entries = chunk.entries.iter().map(EntryRow::from).collect();
            let positions = chunk.positions.iter().map(PositionRow::from).collect();
            drop(chunk);
            let query = sqlx::query(APPEND_ALLOCATION.as_str());
            let query = EntryRow::bind_arrays(entries, query, Selection::All);
            let query = PositionRow::bind_arrays(positions, query, Selection::All);
            let count = query
                .try_map(|row: sqlx::postgres::PgRow| row.try_get::<i64, _>(0))
                .fetch_one(&mut *connection);
            appended += self.bounded(count).await? as usize;
        }
        Ok(appended)
    }

    /// Appends the entries, upserts the positions and updates the heads of every offering that
    /// changed, in one statement; each head update NOTIFYs watchers at commit. Entries whose
    /// request_id is already recorded are skipped; returns how many were appended.
    pub(super) async fn write(
        &self,
        connection: &mut PgConnection,
        writes: &[BatchWrites],
    ) -> Result<usize, StoreError> {
        let entries = writes.iter().flat_map(|w| &w.entries).map(EntryRow::from);
        let positions = writes
            .iter()
            .flat_map(|w| &w.positions)
            .map(PositionRow::from);
        let heads = writes.iter().map(|w| HeadRow::from(&w.head));
        let query = sqlx::query(WRITE_BATCH.as_str());
        let query = EntryRow::bind_arrays(entries.collect(), query, Selection::All);
        let query = PositionRow::bind_arrays(positions.collect(), query, Selection::All);
        let query = NodeRow::bind_arrays(NodeRow::of_writes(writes), query, Selection::All);
        let query = HeadRow::bind_arrays(heads.collect(), query, Selection::Rewritten);
        let appended = query
            .bind(CHANGE_CHANNEL)
            .try_map(|row: sqlx::postgres::PgRow| row.try_get::<i64, _>(0))
            .fetch_all(connection);
        let appended = self.bounded(appended).await?;
        Ok(appended.first().copied().unwrap_or(0) as usize)
    }
}
