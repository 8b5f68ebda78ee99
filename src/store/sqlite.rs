//! SQLite backend: the embedded default, for one process (or a few on one machine).
//!
//! A mutation begins with BEGIN IMMEDIATE, which takes the database's write lock up front: it
//! plays the part of PostgreSQL's head row lock, for every offering at once, and across
//! processes sharing the file. WAL mode lets reads go on meanwhile; synchronous=FULL makes a
//! commit durable before the caller is answered, even across a power loss.

mod publication;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::broadcast;

use super::columns::{Params, Selection, insert_row, on_conflict_update};
use super::rows::{
    EntryRow, HeadRow, NodeRow, PositionRow, entry_columns, head_columns, into_entries,
    into_offerings, position_columns,
};
use super::{
    Backlog, CHANGE_CHANNEL_CAPACITY, Change, Changes, HistoryQuery, Lease, PoolStats,
    SnapshotReader, StartAt, Store, StoreError,
};
use crate::ledger::allocation::Demand;
use crate::ledger::chain::Hash;
use crate::ledger::merkle::NodeRange;
use crate::ledger::{
    self, AllocationRun, BatchWrites, CreateOutcome, Entry, NewOffering, Offering,
    OfferingRequests, Position, Rejection, Results, check_create,
};

/// How long a writer waits for another connection or process to release the write lock before
/// the call answers UNAVAILABLE.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between tries to open a database another process holds busy (see `SqliteStore::open`).
const OPEN_RETRY: Duration = Duration::from_millis(50);
/// Readers run concurrently under WAL; writers queue on the file lock anyway.
const POOL_CONNECTIONS_MAX: u32 = 8;
/// How late a WatchHistory stream may see an entry written by another process on the same file:
/// a primary-key read per watched offering this often is nothing next to a write.
const OTHER_PROCESS_POLL: Duration = Duration::from_secs(1);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A page of offerings: one plain range on the primary key, so that every page is a seek. (An
/// "?1 IS NULL OR offering_id > ?1" would make SQLite plan a scan from the start for every page.)
/// Public so that a test can check SQLite's plan for it.
pub const LIST_OFFERINGS_SQL: &str = concat!(
    "SELECT ",
    head_columns!(),
    " FROM offering_head WHERE offering_id > ?1 ORDER BY offering_id LIMIT ?2"
);

/// Rows of an allocation built at a time while they are inserted: bounds the memory a million
/// investors take, as PostgreSQL's chunks do.
const ALLOCATION_CHUNK_ROWS: usize = 10_000;

/// The writes of whole rows, made once from the column lists (rows.rs).
static INSERT_HEAD: LazyLock<String> =
    LazyLock::new(|| insert_row("offering_head", HeadRow::COLUMNS, &mut Params::sqlite()));
static INSERT_ENTRY: LazyLock<String> =
    LazyLock::new(|| insert_row("history_entry", EntryRow::COLUMNS, &mut Params::sqlite()));
static INSERT_NODE: LazyLock<String> =
    LazyLock::new(|| insert_row("merkle_node", NodeRow::COLUMNS, &mut Params::sqlite()));
static UPSERT_POSITION: LazyLock<String> = LazyLock::new(|| {
    let columns = PositionRow::COLUMNS;
    let insert = insert_row("investor_position", columns, &mut Params::sqlite());
    format!("{insert} {}", on_conflict_update(columns))
});
/// A head's running totals, status, terms and last hash, after a batch.
static UPDATE_HEAD: LazyLock<String> = LazyLock::new(|| {
    let assignments = Params::sqlite().update(HeadRow::COLUMNS);
    format!("UPDATE offering_head {assignments}")
});

/// history_entry's refusal of UPDATE, exactly as migrations 0001 and 0003 create it: the
/// backfill of the hash chain drops it and creates it again in one transaction.
const APPEND_ONLY_UPDATE_TRIGGER: &str = "CREATE TRIGGER history_entry_no_update \
    BEFORE UPDATE ON history_entry \
    BEGIN SELECT RAISE(ABORT, 'history_entry is append-only: UPDATE refused'); END";

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Writers of this process take turns here before BEGIN IMMEDIATE. Without it they would
    /// queue on SQLite's busy handler, which polls with sleeps of up to 100 ms: seconds of tail
    /// latency under load. Other processes on the same file still wait in the busy handler.
    writer: Arc<tokio::sync::Mutex<()>>,
    path: PathBuf,
    changes: broadcast::Sender<Change>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file; its folder must exist.
    ///
    /// Two processes opening a fresh file together both switch it to WAL, and SQLite answers
    /// the loser SQLITE_BUSY at once, without waiting in the busy handler (a lock upgrade that
    /// could deadlock). So a busy database is tried again, for up to BUSY_TIMEOUT in all.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::open_once(path).await {
                Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(OPEN_RETRY).await;
                }
                opened => return opened,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        // Fails here, not on the first call, when the file is not a database.
        sqlx::query("SELECT count(*) FROM sqlite_schema")
            .execute(&pool)
            .await?;
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        Ok(Self {
            pool,
            writer: Arc::default(),
            path: path.to_owned(),
            changes,
        })
    }

    /// Applies pending migrations, then hashes the history of every offering recorded before
    /// the hash chain, so that no entry is left unhashed once a server serves. SQLite has no
    /// advisory lock, so processes starting together on one file take turns on an exclusive
    /// lock of a file beside it.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let lock_path = self.path.with_extension("migrate.lock");
        let io_error = |error: std::io::Error| StoreError::Database(sqlx::Error::Io(error));
        let lock_file = std::fs::File::create(&lock_path).map_err(io_error)?;
        let lock_file = tokio::task::spawn_blocking(move || lock_file.lock().map(|()| lock_file))
            .await
            .map_err(|error| io_error(std::io::Error::other(error)))?
            .map_err(io_error)?;
        let result = self.migrate_locked().await;
        drop(lock_file);
        result
    }

    /// Changes nothing: Ok only if the file is migrated exactly as [`SqliteStore::migrate`]
    /// would leave it (see `store::migrations`), for `serve --no-migrate`.
    pub async fn check_migrated(&self) -> Result<(), StoreError> {
        use crate::store::migrations;
        let applied: Vec<migrations::Applied> = sqlx::query_as(migrations::APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(migrations::unreadable)?;
        let unchained: Vec<String> = sqlx::query_scalar(crate::store::UNCHAINED_OFFERINGS)
            .fetch_all(&self.pool)
            .await?;
        let unbuilt: Vec<String> = sqlx::query_scalar(crate::store::UNBUILT_TREES)
            .fetch_all(&self.pool)
            .await?;
        migrations::check(&MIGRATOR, &applied, unchained.len() + unbuilt.len())
    }

    async fn migrate_locked(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        let unchained: Vec<String> = sqlx::query_scalar(crate::store::UNCHAINED_OFFERINGS)
            .fetch_all(&self.pool)
            .await?;
        crate::store::backfill_each(&unchained, |offering_id| self.backfill_chain(offering_id))
            .await?;
        let unbuilt: Vec<String> = sqlx::query_scalar(crate::store::UNBUILT_TREES)
            .fetch_all(&self.pool)
            .await?;
        crate::store::build_trees_each(&unbuilt, |offering_id| self.build_tree(offering_id)).await
    }

    /// Builds one offering's Merkle tree (migration 0007) in ONE BEGIN IMMEDIATE transaction:
    /// read the entry hashes in sequence order a page at a time, insert the stored nodes, then
    /// set the head's merkle_size and merkle_frontier. In Rust: SQLite has no SHA-256.
    async fn build_tree(&self, offering_id: &str) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let unbuilt: Option<bool> = sqlx::query_scalar(
            "SELECT merkle_size IS NULL FROM offering_head WHERE offering_id = ?1",
        )
        .bind(offering_id)
        .fetch_optional(&mut *tx)
        .await?;
        if unbuilt != Some(true) {
            tx.rollback().await?;
            return Ok(());
        }
        let mut build = super::TreeBuild::new();
        loop {
            let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT sequence, entry_hash FROM history_entry \
                 WHERE offering_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3",
            )
            .bind(offering_id)
            .bind(build.after_sequence)
            .bind(super::BACKFILL_PAGE_ENTRIES)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for node in build.add(offering_id, rows)? {
                let row = NodeRow::from(&super::rows::OfferingNode {
                    offering_id: offering_id.to_owned(),
                    node,
                });
                let insert = sqlx::query(INSERT_NODE.as_str());
                row.bind(insert, Selection::All).execute(&mut *tx).await?;
            }
        }
        // The CHECK on the head refuses a size other than the version.
        sqlx::query(
            "UPDATE offering_head SET merkle_size = ?2, merkle_frontier = ?3 WHERE offering_id = ?1",
        )
        .bind(offering_id)
        .bind(build.frontier.size() as i64)
        .bind(build.frontier.to_bytes())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Hashes one offering's history (docs/hash-chain.md) in ONE BEGIN IMMEDIATE transaction:
    /// read the entries in sequence order a page at a time, write each entry_hash, then the
    /// head's last_hash.
    ///
    /// history_entry's append-only trigger refuses the UPDATE, so it is dropped and created
    /// again inside this transaction. The transaction holds the database's write lock from its
    /// BEGIN, and readers see the schema as last committed: no other connection or process ever
    /// sees the table without its trigger, and a failure rolls the drop back with the rest.
    async fn backfill_chain(&self, offering_id: &str) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let unchained: Option<bool> = sqlx::query_scalar(
            "SELECT last_hash IS NULL FROM offering_head WHERE offering_id = ?1",
        )
        .bind(offering_id)
        .fetch_optional(&mut *tx)
        .await?;
        if unchained != Some(true) {
            tx.rollback().await?;
            return Ok(());
        }
        sqlx::query("DROP TRIGGER history_entry_no_update")
            .execute(&mut *tx)
            .await?;
        let (mut previous, mut after_sequence) = (ledger::chain::GENESIS, 0);
        loop {
            let rows: Vec<EntryRow> = sqlx::query_as(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry WHERE offering_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3"
            ))
            .bind(offering_id)
            .bind(after_sequence)
            .bind(super::BACKFILL_PAGE_ENTRIES)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = rows.last() else { break };
            after_sequence = last.sequence();
            let mut entries = rows
                .into_iter()
                .map(|row| row.into_entry().map(|(entry, _)| entry))
                .collect::<Result<Vec<_>, _>>()?;
            previous = ledger::chain::link_all(previous, &mut entries);
            for entry in &entries {
                sqlx::query(
                    "UPDATE history_entry SET entry_hash = ?3 WHERE offering_id = ?1 AND sequence = ?2",
                )
                .bind(offering_id)
                .bind(entry.sequence)
                .bind(entry.entry_hash.as_slice())
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(APPEND_ONLY_UPDATE_TRIGGER)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE offering_head SET last_hash = ?2 WHERE offering_id = ?1")
            .bind(offering_id)
            .bind(previous.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_batch_inputs(
        tx: &mut Transaction<'static, Sqlite>,
        item: &OfferingRequests,
    ) -> Result<(Vec<Position>, Vec<Entry>), StoreError> {
        // Lists travel as JSON arrays: SQLite has no array parameters.
        let offering_id = &*item.offering_id;
        let positions: Vec<PositionRow> = if item.reads_all_positions() {
            sqlx::query_as(concat!(
                "SELECT ",
                position_columns!(),
                " FROM investor_position WHERE offering_id = ?1"
            ))
            .bind(offering_id)
            .fetch_all(&mut **tx)
            .await?
        } else {
            let investor_ids: Vec<&str> = item
                .requests
                .iter()
                .filter_map(|r| r.command.investor_id())
                .collect();
            if investor_ids.is_empty() {
                Vec::new()
            } else {
                sqlx::query_as(concat!(
                    "SELECT ",
                    position_columns!(),
                    " FROM investor_position WHERE offering_id = ?1 AND investor_id IN (SELECT value FROM json_each(?2))"
                ))
                .bind(offering_id)
                .bind(json_array(&investor_ids))
                .fetch_all(&mut **tx)
                .await?
            }
        };
        let request_ids: Vec<&str> = item
            .requests
            .iter()
            .map(|r| r.request_id.as_str())
            .collect();
        let recorded: Vec<EntryRow> = sqlx::query_as(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM history_entry WHERE offering_id = ?1 AND request_id IN (SELECT value FROM json_each(?2))"
        ))
        .bind(offering_id)
        .bind(json_array(&request_ids))
        .fetch_all(&mut **tx)
        .await?;
        Ok((
            positions.into_iter().map(Position::from).collect(),
            into_entries(recorded)?,
        ))
    }

    /// Every stored demand of the offering: the three columns allocation needs, nothing else.
    async fn load_demands(
        tx: &mut Transaction<'static, Sqlite>,
        offering_id: &str,
    ) -> Result<Vec<Demand>, StoreError> {
        let demands = sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT investor_id, demanded_units, first_sequence FROM investor_position \
             WHERE offering_id = ?1 AND demanded_units > 0",
        )
        .bind(offering_id)
        .fetch(&mut **tx)
        .map_ok(|(investor_id, demand, first_sequence)| Demand {
            investor_id,
            demand,
            first_sequence,
        })
        .try_collect()
        .await?;
        Ok(demands)
    }

    /// An allocation's entries and positions, built a chunk at a time as they are inserted.
    async fn write_allocation(
        tx: &mut Transaction<'static, Sqlite>,
        run: &AllocationRun,
    ) -> Result<(), StoreError> {
        for chunk in run.chunks(ALLOCATION_CHUNK_ROWS) {
            write_rows(tx, &chunk.entries, &chunk.positions).await?;
        }
        Ok(())
    }

    async fn write(
        tx: &mut Transaction<'static, Sqlite>,
        writes: &BatchWrites,
    ) -> Result<(), StoreError> {
        if let Some(run) = &writes.allocation {
            Self::write_allocation(tx, run).await?;
        }
        write_rows(tx, &writes.entries, &writes.positions).await?;
        for node in NodeRow::of_writes(std::slice::from_ref(writes)) {
            let insert = sqlx::query(INSERT_NODE.as_str());
            node.bind(insert, Selection::All).execute(&mut **tx).await?;
        }
        let update = sqlx::query(UPDATE_HEAD.as_str());
        HeadRow::from(&writes.head)
            .bind(update, Selection::Rewritten)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn select_head(
        tx: &mut Transaction<'static, Sqlite>,
        offering_id: &str,
    ) -> Result<Option<Offering>, StoreError> {
        let row = Self::select_head_row(tx, offering_id).await?;
        row.map(Offering::try_from).transpose()
    }

    async fn select_head_row(
        tx: &mut Transaction<'static, Sqlite>,
        offering_id: &str,
    ) -> Result<Option<HeadRow>, StoreError> {
        let row = sqlx::query_as(concat!(
            "SELECT ",
            head_columns!(),
            " FROM offering_head WHERE offering_id = ?1"
        ))
        .bind(offering_id)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row)
    }

    fn announce(&self, offering_id: &str, version: i64) {
        let _ = self.changes.send(Change::Committed {
            offering_id: offering_id.into(),
            version,
        });
    }
}

fn json_array(values: &[&str]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

/// Appends `entries` and upserts `positions`, one prepared statement a row.
async fn write_rows(
    tx: &mut Transaction<'static, Sqlite>,
    entries: &[Entry],
    positions: &[Position],
) -> Result<(), StoreError> {
    for entry in entries {
        insert_entry(tx, entry).await?;
    }
    for position in positions {
        upsert_position(tx, position).await?;
    }
    Ok(())
}

async fn insert_entry(
    tx: &mut Transaction<'static, Sqlite>,
    entry: &Entry,
) -> Result<(), StoreError> {
    let insert = sqlx::query(INSERT_ENTRY.as_str());
    EntryRow::from(entry)
        .bind(insert, Selection::All)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_position(
    tx: &mut Transaction<'static, Sqlite>,
    position: &Position,
) -> Result<(), StoreError> {
    let upsert = sqlx::query(UPSERT_POSITION.as_str());
    PositionRow::from(position)
        .bind(upsert, Selection::All)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// One file, no failover: `deadline` is not needed.
    async fn create_offering(
        &self,
        new: &NewOffering,
        _deadline: Instant,
    ) -> Result<Result<CreateOutcome, Rejection>, StoreError> {
        let (head, entry) = new.first_rows(super::now());
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(existing) = Self::select_head(&mut tx, &new.offering_id).await? {
            let created_by: EntryRow = sqlx::query_as(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry WHERE offering_id = ?1 AND sequence = 1"
            ))
            .bind(&new.offering_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.rollback().await?;
            return Ok(check_create(new, existing, &created_by.try_into()?));
        }
        let insert = sqlx::query(INSERT_HEAD.as_str());
        HeadRow::from(&head)
            .bind(insert, Selection::All)
            .execute(&mut *tx)
            .await?;
        insert_entry(&mut tx, &entry).await?;
        tx.commit().await?;
        self.announce(&head.offering_id, 1);
        Ok(Ok(CreateOutcome::Created(head)))
    }

    async fn apply(
        &self,
        work: &[OfferingRequests],
        _deadline: Instant,
    ) -> Result<Results, StoreError> {
        // The write lock is the whole database's: every offering in `work` is covered by it.
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (mut heads, mut positions, mut recorded) = (Vec::new(), Vec::new(), Vec::new());
        let mut demands = HashMap::new();
        for item in work {
            let Some(head) = Self::select_head_row(&mut tx, &item.offering_id).await? else {
                continue;
            };
            head.require_chained()?;
            let head: Offering = head.try_into()?;
            if item.reads_demands(&head) {
                let stored = Self::load_demands(&mut tx, &item.offering_id).await?;
                demands.insert(head.offering_id.clone(), stored);
            }
            heads.push(head);
            let (item_positions, item_recorded) = Self::load_batch_inputs(&mut tx, item).await?;
            positions.extend(item_positions);
            recorded.extend(item_recorded);
        }
        let (results, writes) =
            ledger::apply_all(work, heads, positions, recorded, demands, super::now());
        if writes.is_empty() {
            tx.rollback().await?;
            return Ok(results);
        }
        for written in &writes {
            Self::write(&mut tx, written).await?;
        }
        tx.commit().await?;
        for written in &writes {
            self.announce(&written.head.offering_id, written.head.version);
        }
        Ok(results)
    }

    async fn ledger_id(&self) -> Result<uuid::Uuid, StoreError> {
        let text: Option<String> = sqlx::query_scalar("SELECT ledger_id FROM ledger")
            .fetch_optional(&self.pool)
            .await?;
        super::parse_ledger_id(text)
    }

    async fn get_offering(&self, offering_id: &str) -> Result<Option<Offering>, StoreError> {
        let row: Option<HeadRow> = sqlx::query_as(concat!(
            "SELECT ",
            head_columns!(),
            " FROM offering_head WHERE offering_id = ?1"
        ))
        .bind(offering_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Offering::try_from).transpose()
    }

    async fn list_offerings(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Offering>, StoreError> {
        // The first page starts after "", below every id.
        let rows: Vec<HeadRow> = sqlx::query_as(LIST_OFFERINGS_SQL)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        into_offerings(rows)
    }

    async fn get_position(
        &self,
        offering_id: &str,
        investor_id: &str,
    ) -> Result<Option<Position>, StoreError> {
        let row: Option<PositionRow> = sqlx::query_as(concat!(
            "SELECT ",
            position_columns!(),
            " FROM investor_position WHERE offering_id = ?1 AND investor_id = ?2"
        ))
        .bind(offering_id)
        .bind(investor_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Position::from))
    }

    async fn read_snapshot<R: SnapshotReader>(
        &self,
        offering_id: &str,
        reader: &mut R,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN").await?;
        let head: Option<HeadRow> = sqlx::query_as(concat!(
            "SELECT ",
            head_columns!(),
            " FROM offering_head WHERE offering_id = ?1"
        ))
        .bind(offering_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(head) = head.map(Offering::try_from).transpose()? else {
            return Ok(false);
        };
        reader.head(&head);
        {
            let mut rows = sqlx::query_as::<_, EntryRow>(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry WHERE offering_id = ?1 ORDER BY sequence"
            ))
            .bind(offering_id)
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                reader.entry(&row.try_into()?);
            }
        }
        let positions: Vec<PositionRow> = sqlx::query_as(concat!(
            "SELECT ",
            position_columns!(),
            " FROM investor_position WHERE offering_id = ?1 ORDER BY investor_id"
        ))
        .bind(offering_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        reader.positions(positions.into_iter().map(Position::from).collect());
        Ok(true)
    }

    async fn list_history(&self, query: HistoryQuery<'_>) -> Result<Vec<Entry>, StoreError> {
        // Two statements, not one with "?4 IS NULL OR ...": SQLite plans a statement once, and
        // would then walk the whole offering's history for one investor's page.
        let sql = match query.investor_id {
            None => concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry WHERE offering_id = ?1 AND sequence > ?2 AND sequence <= ?3 \
                  AND (?5 IS NULL OR actor = ?5) ORDER BY sequence LIMIT ?4"
            ),
            Some(_) => concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry INDEXED BY history_entry_by_investor \
                  WHERE offering_id = ?1 AND sequence > ?2 AND sequence <= ?3 AND (?5 IS NULL OR actor = ?5) \
                  AND investor_id = ?6 ORDER BY sequence LIMIT ?4"
            ),
        };
        let mut select = sqlx::query_as(sql)
            .bind(query.offering_id)
            .bind(query.after_sequence)
            .bind(query.sequence_max)
            .bind(i64::from(query.limit))
            .bind(query.actor);
        if let Some(investor_id) = query.investor_id {
            select = select.bind(investor_id);
        }
        let rows: Vec<EntryRow> = select.fetch_all(&self.pool).await?;
        into_entries(rows)
    }

    /// One indexed range read per range: a proof reads a few dozen.
    async fn tree_rows(
        &self,
        offering_id: &str,
        ranges: &[NodeRange],
    ) -> Result<Vec<Vec<Hash>>, StoreError> {
        let mut rows = Vec::new();
        let mut connection = self.pool.acquire().await?;
        for (position, range) in ranges.iter().enumerate() {
            let (first, last) = (range.first as i64, (range.first + range.count) as i64 - 1);
            let read = if range.level == 0 {
                sqlx::query_scalar(
                    "SELECT entry_hash FROM history_entry WHERE offering_id = ?1 \
                     AND sequence > ?2 AND sequence <= ?3 AND entry_hash IS NOT NULL ORDER BY sequence",
                )
                .bind(offering_id)
                .bind(first)
                .bind(last + 1)
            } else {
                sqlx::query_scalar(
                    "SELECT hash FROM merkle_node WHERE offering_id = ?1 AND level = ?4 \
                     AND idx >= ?2 AND idx <= ?3 ORDER BY idx",
                )
                .bind(offering_id)
                .bind(first)
                .bind(last)
                .bind(i16::from(range.level))
            };
            let hashes: Vec<Vec<u8>> = read.fetch_all(&mut *connection).await?;
            rows.extend(hashes.into_iter().map(|hash| (position as i64, hash)));
        }
        super::rows_by_range(ranges.len(), rows)
    }

    fn changes(&self) -> Changes {
        Changes::new(self.changes.subscribe(), None)
    }

    /// Another process writing the same file commits unseen by this one, and SQLite has no
    /// notification across processes: a watched offering's head is read this often (one cheap
    /// query per offering watched on this process, however many streams watch it).
    fn unannounced_commits_poll(&self) -> Option<Duration> {
        Some(OTHER_PROCESS_POLL)
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: POOL_CONNECTIONS_MAX,
            primary: None,
        }
    }

    async fn take_publication_lease(
        &self,
        lease: &Lease<'_>,
        start: StartAt,
    ) -> Result<Option<i64>, StoreError> {
        self.take_lease(lease, start).await
    }

    async fn renew_publication_lease(
        &self,
        lease: &Lease<'_>,
        epoch: i64,
    ) -> Result<bool, StoreError> {
        self.renew_lease(lease, epoch).await
    }

    async fn release_publication_lease(&self, name: &str, epoch: i64) -> Result<(), StoreError> {
        self.release_lease(name, epoch).await
    }

    async fn publication_backlog(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Backlog>, StoreError> {
        self.backlog(after, limit).await
    }

    async fn advance_publication_cursor(
        &self,
        name: &str,
        epoch: i64,
        offering_id: &str,
        sequence: i64,
    ) -> Result<bool, StoreError> {
        self.advance_cursor(name, epoch, offering_id, sequence)
            .await
    }
}
