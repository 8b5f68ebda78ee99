//! PostgreSQL backend: several replicas on one database, which may be a formation of a primary
//! and standbys reached through a multi-host URL (see `url` and `primary`).
//!
//! Writers of one offering serialize on its head row (SELECT ... FOR UPDATE), always taken
//! first, so there is no lock-order deadlock. While it is held a batch costs four round trips:
//! lock the head, read positions, read earlier entries of its request_ids, write everything in one
//! statement; then COMMIT. Commits send a NOTIFY so that watchers on every replica wake up.
//!
//! Every statement has a deadline (--db-io-timeout): a connection that passes it, or fails in a
//! way a changed primary explains, is closed, never pooled again, and the primary is looked for
//! again; mutations then try again on the writer found, within the caller's deadline.

mod primary;
mod url;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::SubsecRound;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgListener, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::rows::{
    EntryRow, HeadRow, PositionRow, bind_entry, bind_head, entry_columns, head_columns,
    into_entries, into_offerings, position_columns,
};
use super::{
    CHANGE_CHANNEL_CAPACITY, Change, Changes, HistoryQuery, Interest, PoolStats, SnapshotReader,
    Store, StoreError,
};
use crate::ledger::{
    self, BatchWrites, CreateOutcome, Entry, NewOffering, Offering, OfferingRequests, Position,
    Rejection, Results, Timestamp, check_create,
};
use primary::Primary;
pub use url::{PgTargets, UrlError};

/// NOTIFY channel carrying "version:offering_id" after each commit.
const CHANGE_CHANNEL: &str = "subledger_history";
/// How a ledger transaction begins, in the same round trip as its BEGIN: with each statement's
/// plan made once per connection and reused (planning them anew cost 0.3 ms of a lone call's
/// 0.85 ms in PostgreSQL), and with sequential scans ruled out, so that a plan made while the
/// tables were small cannot scan them in full once they are large. Every statement of `apply`
/// is an index lookup by design; other statements keep the connection's custom plans.
const BEGIN_APPLY: &str =
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";
/// How long a call may wait for a pooled connection before it answers UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the change listener stays after its last follower leaves, so that a watcher that
/// reconnects does not make it reconnect too.
const LISTEN_LINGER: Duration = Duration::from_secs(2);
/// Pause before the change listener reconnects after losing its connection.
const LISTENER_RETRY: Duration = Duration::from_secs(1);
/// The least pause between two attempts of one mutation through a failover: a host that keeps
/// failing the same way is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a read waits for a writer to be found before its one retry.
const READ_RETRY_WAIT: Duration = Duration::from_secs(15);
/// --db-io-timeout's default: above the head lock's lock_timeout (10 s), so that a statement
/// waiting for a lock is refused by PostgreSQL first, and above a synchronous commit's usual
/// wait.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(15);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A locked head and the database's clock when it was locked.
#[derive(sqlx::FromRow)]
struct LockedHeadRow {
    #[sqlx(flatten)]
    head: HeadRow,
    db_now: Timestamp,
}

/// Says that 'a outlives 'c, for a closure bound over every 'c (see `PgStore::read`).
type Scope<'c, 'a> = std::marker::PhantomData<&'c &'a ()>;

/// How a PostgreSQL store connects.
#[derive(Clone, Copy, Debug)]
pub struct PgSettings {
    /// Pooled connections per process.
    pub max_connections: u32,
    /// The deadline of every statement the ledger sends (--db-io-timeout).
    pub io_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            io_timeout: DEFAULT_IO_TIMEOUT,
        }
    }
}

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    primary: Arc<Primary>,
    io_timeout: Duration,
    changes: broadcast::Sender<Change>,
    /// Who follows the changes: the listener listens only while someone does.
    interest: Interest,
    /// Stops the change listener and the primary's follower when the last clone of the store
    /// is dropped.
    _tasks: Arc<DropGuard>,
}

impl PgStore {
    /// Connects without touching the schema (see [`PgStore::migrate`]): finds the host that
    /// takes writes, and starts the tasks that follow it and turn NOTIFYs into [`Change`]s
    /// while anyone follows them.
    pub async fn connect(url: &str, settings: PgSettings) -> Result<Self, StoreError> {
        let targets: PgTargets = url
            .parse()
            .map_err(|e: UrlError| StoreError::Config(e.to_string()))?;
        let primary = Primary::find(targets).await.map_err(StoreError::NoWriter)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect({
                let primary = primary.clone();
                move |connection, _| {
                    let primary = primary.clone();
                    Box::pin(async move { primary.check_session(connection).await })
                }
            })
            .before_acquire({
                let primary = primary.clone();
                move |_, meta| {
                    let keep = primary.keeps(meta.age);
                    Box::pin(async move { Ok(keep) })
                }
            })
            .connect_lazy_with(session_options(&primary));
        // The first connection now, as a single-host connect always did: a database that
        // refuses this process fails the start, not the first call.
        drop(pool.acquire().await?);
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        let (interest, followers) = Interest::new();
        let stop = CancellationToken::new();
        tokio::spawn(primary.clone().follow(pool.clone(), stop.clone()));
        tokio::spawn(forward_notifications(
            primary.clone(),
            changes.downgrade(),
            followers,
            stop.clone(),
        ));
        Ok(Self {
            pool,
            primary,
            io_timeout: settings.io_timeout,
            changes,
            interest,
            _tasks: Arc::new(stop.drop_guard()),
        })
    }

    /// `host:port,...` and the database, for logs.
    pub fn describe(&self) -> String {
        self.primary.targets().describe()
    }

    /// A pooled connection to the current primary.
    async fn acquire(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        self.pool.acquire().await.map_err(|error| {
            let error = StoreError::from(error);
            self.primary.suspect();
            error
        })
    }

    /// Returns `connection` to the pool, unless `result` says it may be broken or on a host
    /// that no longer takes writes: then it is closed, and the primary looked for again.
    fn settle<T>(&self, connection: PoolConnection<Postgres>, result: &Result<T, StoreError>) {
        if let Err(error) = result
            && lost_primary(error)
        {
            drop(connection.detach());
            self.primary.suspect();
        }
    }

    /// Runs `read` on a connection of its own under the statement deadline, and once more if
    /// it failed in a way a new primary may fix, once one is found.
    ///
    /// (`Scope` only ties the borrowed query arguments of `read` to outlive the connection's
    /// borrow.)
    async fn read<'a, T: Send>(
        &self,
        read: impl for<'c> Fn(
            &'c mut PgConnection,
            Scope<'c, 'a>,
        ) -> BoxFuture<'c, Result<T, sqlx::Error>>
        + Sync,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let mut connection = self.acquire().await?;
            let result = self
                .bounded(read(&mut connection, std::marker::PhantomData))
                .await;
            self.settle(connection, &result);
            match result {
                Err(error) if lost_primary(&error) && !retried => {
                    retried = true;
                    if !self
                        .primary
                        .wait_writable(Instant::now() + READ_RETRY_WAIT)
                        .await
                    {
                        return Err(error);
                    }
                }
                result => return result,
            }
        }
    }

    /// One statement under --db-io-timeout. Past it the statement's future is dropped, so its
    /// connection is mid-protocol: the caller must not pool it again (`settle` sees to that).
    async fn bounded<T>(
        &self,
        statement: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.io_timeout, statement).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::Io(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within --db-io-timeout ({:?})", self.io_timeout),
                ),
            ))),
        }
    }

    /// Runs `attempt` (true on every attempt after the first) once a host takes writes, until
    /// it succeeds, fails for a reason a new primary cannot fix, or `deadline` passes while no
    /// host takes writes. Once an attempt's COMMIT went unanswered, a later failure is reported
    /// as [`StoreError::CommitOutcomeUnknown`]: the caller must not take it for a plain failure.
    async fn through_failover<T, F>(
        &self,
        deadline: Instant,
        mut attempt: impl FnMut(bool) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let mut again = false;
        let mut unanswered_commit = None;
        let mut last_error = None;
        loop {
            if !self.primary.wait_writable(deadline).await {
                return Err(match (unanswered_commit, last_error) {
                    (Some(commit), _) => StoreError::CommitOutcomeUnknown(commit),
                    (None, Some(error)) => error,
                    (None, None) => self.no_writer(),
                });
            }
            match attempt(again).await {
                Ok(done) => return Ok(done),
                Err(error) if !lost_primary(&error) => return Err(error),
                Err(StoreError::CommitOutcomeUnknown(error)) => unanswered_commit = Some(error),
                Err(error) => last_error = Some(error),
            }
            again = true;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// What a call is told while no host of the URL takes writes.
    fn no_writer(&self) -> StoreError {
        StoreError::Unavailable(sqlx::Error::Protocol(format!(
            "no host of {} takes writes",
            self.describe()
        )))
    }

    /// Applies pending migrations, then hashes the history of every offering recorded before
    /// the hash chain, so that no entry is left unhashed once a server serves. Safe when several
    /// replicas start at once: sqlx takes an advisory lock around the migrations, and each
    /// offering is backfilled under its head lock by whichever replica gets it first.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        let unchained: Vec<String> = sqlx::query_scalar(
            "SELECT offering_id FROM offering_head WHERE last_hash IS NULL ORDER BY offering_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for offering_id in &unchained {
            self.backfill_chain(offering_id).await?;
        }
        if !unchained.is_empty() {
            tracing::info!(
                offerings = unchained.len(),
                "hashed the history recorded before the hash chain"
            );
        }
        Ok(())
    }

    /// Hashes one offering's history (docs/hash-chain.md) in ONE transaction: lock the head,
    /// read the entries in sequence order a page at a time, write each entry_hash, then the
    /// head's last_hash.
    ///
    /// history_entry's append-only trigger refuses the UPDATE, so it is disabled and enabled
    /// again inside this transaction. ALTER TABLE ... DISABLE TRIGGER is transactional DDL that
    /// takes an ACCESS EXCLUSIVE lock on history_entry until COMMIT: no other session can read or
    /// write the table meanwhile, so none ever sees the trigger disabled, and a failure anywhere
    /// rolls the disabling back with the rest.
    async fn backfill_chain(&self, offering_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // The head first, as every writer locks it (then history_entry): no lock-order deadlock.
        let unchained: Option<bool> = sqlx::query_scalar(
            "SELECT last_hash IS NULL FROM offering_head WHERE offering_id = $1 FOR UPDATE",
        )
        .bind(offering_id)
        .fetch_optional(&mut *tx)
        .await?;
        if unchained != Some(true) {
            // Another replica backfilled it meanwhile.
            tx.rollback().await?;
            return Ok(());
        }
        sqlx::query("ALTER TABLE history_entry DISABLE TRIGGER history_entry_no_update_delete")
            .execute(&mut *tx)
            .await?;
        let (mut previous, mut after_sequence) = (ledger::chain::GENESIS, 0);
        loop {
            let rows: Vec<EntryRow> = sqlx::query_as(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry WHERE offering_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
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
            sqlx::query(
                "UPDATE history_entry AS h SET entry_hash = v.entry_hash \
                 FROM UNNEST($2::bigint[], $3::bytea[]) AS v (sequence, entry_hash) \
                 WHERE h.offering_id = $1 AND h.sequence = v.sequence",
            )
            .bind(offering_id)
            .bind(entries.iter().map(|e| e.sequence).collect::<Vec<_>>())
            .bind(
                entries
                    .iter()
                    .map(|e| e.entry_hash.as_slice())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("ALTER TABLE history_entry ENABLE TRIGGER history_entry_no_update_delete")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE offering_head SET last_hash = $2 WHERE offering_id = $1")
            .bind(offering_id)
            .bind(previous.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lock order: the head row first, always (the only row lock any transaction takes
    /// explicitly; position rows are only written while it is held).
    async fn lock_head(
        &self,
        connection: &mut PgConnection,
        offering_id: &str,
    ) -> Result<Option<Offering>, StoreError> {
        let row: Option<HeadRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    head_columns!(),
                    " FROM offering_head WHERE offering_id = $1 FOR UPDATE"
                ))
                .bind(offering_id)
                .fetch_optional(connection),
            )
            .await?;
        row.map(Offering::try_from).transpose()
    }

    /// Locks the heads of every offering in `work`, in offering_id order (the one lock order
    /// every transaction follows, so two replicas batching overlapping offerings cannot deadlock).
    ///
    /// Also returns the database's clock, read after the last lock was granted (the outer
    /// SELECT evaluates clock_timestamp() only once the locked rows come up): windows are judged
    /// by one clock for every replica, and after any wait for the lock.
    async fn lock_heads(
        &self,
        connection: &mut PgConnection,
        work: &[OfferingRequests],
    ) -> Result<(Vec<Offering>, Option<Timestamp>), StoreError> {
        let offering_ids: Vec<&str> = work.iter().map(|w| &*w.offering_id).collect();
        let rows: Vec<LockedHeadRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "WITH locked AS (SELECT ",
                    head_columns!(),
                    " FROM offering_head WHERE offering_id = ANY($1) ORDER BY offering_id FOR UPDATE) \
                     SELECT locked.*, clock_timestamp() AS db_now FROM locked"
                ))
                .bind(&offering_ids)
                .fetch_all(connection),
            )
            .await?;
        for row in &rows {
            row.head.require_chained()?;
        }
        let now = rows.iter().map(|row| row.db_now).max();
        let heads = into_offerings(rows.into_iter().map(|row| row.head).collect())?;
        Ok((heads, now.map(|now| now.trunc_subsecs(6))))
    }

    /// The positions of the investors named (every position of the offerings whose requests
    /// read them all), read after the heads are locked so they are current.
    async fn load_positions(
        &self,
        connection: &mut PgConnection,
        work: &[OfferingRequests],
    ) -> Result<Vec<Position>, StoreError> {
        let (mut offering_ids, mut investor_ids, mut whole) = (Vec::new(), Vec::new(), Vec::new());
        for item in work {
            if item.reads_all_positions() {
                whole.push(&*item.offering_id);
                continue;
            }
            for investor_id in item.requests.iter().filter_map(|r| r.command.investor_id()) {
                offering_ids.push(&*item.offering_id);
                investor_ids.push(investor_id);
            }
        }
        if investor_ids.is_empty() && whole.is_empty() {
            return Ok(Vec::new());
        }
        // Two index lookups, not one query with OR: "IN (...) OR offering_id = ANY(...)" is
        // planned as a scan of the whole table (4 ms a batch at 44,000 positions).
        let rows: Vec<PositionRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    position_columns!(),
                    " FROM investor_position WHERE (offering_id, investor_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
                     UNION ALL SELECT ",
                    position_columns!(),
                    " FROM investor_position WHERE offering_id = ANY($3)"
                ))
                .bind(&offering_ids)
                .bind(&investor_ids)
                .bind(&whole)
                .fetch_all(connection),
            )
            .await?;
        Ok(rows.into_iter().map(Position::from).collect())
    }

    /// The entries already recorded under the request_ids of `work`.
    async fn load_recorded(
        &self,
        connection: &mut PgConnection,
        work: &[OfferingRequests],
    ) -> Result<Vec<Entry>, StoreError> {
        let (mut offering_ids, mut request_ids) = (Vec::new(), Vec::new());
        for item in work {
            for request in &item.requests {
                offering_ids.push(&*item.offering_id);
                request_ids.push(request.request_id.as_str());
            }
        }
        let rows: Vec<EntryRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    entry_columns!(),
                    " FROM history_entry WHERE (offering_id, request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
                ))
                .bind(&offering_ids)
                .bind(&request_ids)
                .fetch_all(connection),
            )
            .await?;
        into_entries(rows)
    }

    /// One attempt at `apply`, on a connection of its own. With `known_new` the request_ids are
    /// taken to be new (true but for retries) and not looked up; the attempt is then abandoned
    /// (None) if the history insert found one recorded after all, or if the ledger says the
    /// results cannot stand without the lookup (`idempotency::presumed_new_stands`).
    async fn apply_attempt(
        &self,
        work: &[OfferingRequests],
        known_new: bool,
    ) -> Result<Option<Results>, StoreError> {
        let mut connection = self.acquire().await?;
        let result = self.apply_on(&mut connection, work, known_new).await;
        self.settle(connection, &result);
        result
    }

    async fn apply_on(
        &self,
        connection: &mut PgConnection,
        work: &[OfferingRequests],
        known_new: bool,
    ) -> Result<Option<Results>, StoreError> {
        let mut tx = self.bounded(connection.begin_with(BEGIN_APPLY)).await?;
        let (heads, now) = self.lock_heads(&mut tx, work).await?;
        let positions = self.load_positions(&mut tx, work).await?;
        let recorded = if known_new {
            Vec::new()
        } else {
            self.load_recorded(&mut tx, work).await?
        };
        let now = now.unwrap_or_else(super::now);
        let (results, writes) = ledger::apply_all(work, heads, positions, recorded, now);
        if known_new && !ledger::idempotency::presumed_new_stands(results.iter().flatten()) {
            self.bounded(tx.rollback()).await?;
            return Ok(None);
        }
        if writes.is_empty() {
            self.bounded(tx.rollback()).await?;
            return Ok(Some(results));
        }
        let appended = self.write(&mut tx, &writes).await?;
        if appended != writes.iter().map(|w| w.entries.len()).sum::<usize>() {
            debug_assert!(known_new, "request_ids were checked under the lock");
            self.bounded(tx.rollback()).await?;
            return Ok(None);
        }
        self.commit(tx.commit()).await?;
        // Local watchers also hear the NOTIFY; this saves them the round trip through the database.
        for written in &writes {
            let change = Change::Committed {
                offering_id: written.head.offering_id.as_str().into(),
                version: written.head.version,
            };
            let _ = self.changes.send(change);
        }
        Ok(Some(results))
    }

    /// COMMIT under the statement deadline. A failure other than PostgreSQL refusing the
    /// transaction leaves its outcome unknown: the server may have committed (it may even have
    /// committed locally and then been shut down while waiting for its synchronous standby).
    async fn commit(
        &self,
        commit: impl Future<Output = Result<(), sqlx::Error>>,
    ) -> Result<(), StoreError> {
        match self.bounded(commit).await {
            Ok(()) => Ok(()),
            Err(StoreError::Database(error)) => Err(StoreError::Database(error)),
            Err(StoreError::Unavailable(error)) if refused_transaction(&error) => {
                Err(StoreError::Unavailable(error))
            }
            Err(StoreError::Unavailable(error)) => Err(StoreError::CommitOutcomeUnknown(error)),
            Err(other) => Err(other),
        }
    }

    /// Appends the entries, upserts the positions and updates the heads of every offering that
    /// changed, in one statement; each head update NOTIFYs watchers at commit. Entries whose
    /// request_id is already recorded are skipped; returns how many were appended.
    async fn write(
        &self,
        connection: &mut PgConnection,
        writes: &[BatchWrites],
    ) -> Result<usize, StoreError> {
        let entries: Vec<&Entry> = writes.iter().flat_map(|w| &w.entries).collect();
        let positions: Vec<&Position> = writes.iter().flat_map(|w| &w.positions).collect();
        let heads: Vec<&Offering> = writes.iter().map(|w| &w.head).collect();
        fn terms(e: &Entry, before: bool) -> Option<&ledger::Terms> {
            if before {
                e.terms_before.as_ref()
            } else {
                e.terms_after.as_ref()
            }
        }
        let names = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).map(|t| t.name.as_str()))
                .collect::<Vec<_>>()
        };
        let caps = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).map(|t| t.max_units))
                .collect::<Vec<_>>()
        };
        let investor_caps = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).map(|t| t.max_units_per_investor))
                .collect::<Vec<_>>()
        };
        let closes = |before| {
            entries
                .iter()
                .map(|e| terms(e, before).and_then(|t| t.close_time))
                .collect::<Vec<_>>()
        };
        let appended = sqlx::query_scalar::<_, i64>(concat!(
            "WITH appended AS ( \
                INSERT INTO history_entry (",
            entry_columns!(),
            ") SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::smallint[], $4::text[], $5::bigint[], $6::bigint[], \
                    $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::timestamptz[], $12::text[], \
                    $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], $17::bigint[], $18::bigint[], \
                    $19::timestamptz[], $20::text[], $21::bigint[], $22::bigint[], $23::timestamptz[], $24::bytea[]) \
                ON CONFLICT (offering_id, request_id) DO NOTHING RETURNING 1 \
             ), positions AS ( \
                INSERT INTO investor_position (",
            position_columns!(),
            ") SELECT * FROM UNNEST($25::text[], $26::text[], $27::bigint[], $28::timestamptz[], $29::bigint[], $30::bigint[]) \
                ON CONFLICT (offering_id, investor_id) DO UPDATE SET units = EXCLUDED.units, \
                    update_time = EXCLUDED.update_time, demanded_units = EXCLUDED.demanded_units \
             ) \
             UPDATE offering_head AS h SET subscribed_units = v.subscribed_units, investor_count = v.investor_count, \
                status = v.status, version = v.version, update_time = v.update_time, demanded_units = v.demanded_units, \
                name = v.name, max_units = v.max_units, max_units_per_investor = v.max_units_per_investor, \
                close_time = v.close_time, last_hash = v.last_hash \
             FROM UNNEST($31::text[], $32::bigint[], $33::bigint[], $34::smallint[], $35::bigint[], $36::timestamptz[], \
                $37::bigint[], $38::text[], $39::bigint[], $40::bigint[], $41::timestamptz[], $42::bytea[]) \
                AS v (offering_id, subscribed_units, investor_count, status, version, update_time, demanded_units, \
                    name, max_units, max_units_per_investor, close_time, last_hash) \
             WHERE h.offering_id = v.offering_id \
             RETURNING (SELECT count(*) FROM appended), pg_notify($43, v.version::text || ':' || v.offering_id)"
        ))
        .bind(entries.iter().map(|e| e.offering_id.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.sequence).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.kind as i16).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.investor_id.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.units_delta).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.investor_units_after).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.offering_units_after).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.requested_units).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.expected_version).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.record_time).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.demand_delta).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.investor_demand_after).collect::<Vec<_>>())
        .bind(entries.iter().map(|e| e.offering_demand_after).collect::<Vec<_>>())
        .bind(names(true))
        .bind(caps(true))
        .bind(investor_caps(true))
        .bind(closes(true))
        .bind(names(false))
        .bind(caps(false))
        .bind(investor_caps(false))
        .bind(closes(false))
        .bind(entries.iter().map(|e| e.entry_hash.as_slice()).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.offering_id.as_str()).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.investor_id.as_str()).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.units).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.update_time).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.demanded_units).collect::<Vec<_>>())
        .bind(positions.iter().map(|p| p.first_sequence).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.offering_id.as_str()).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.subscribed_units).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.investor_count).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.status as i16).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.version).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.update_time).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.demanded_units).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.name.as_str()).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.max_units).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.max_units_per_investor).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.close_time).collect::<Vec<_>>())
        .bind(heads.iter().map(|h| h.last_hash.as_slice()).collect::<Vec<_>>())
        .bind(CHANGE_CHANNEL)
        .fetch_all(connection);
        let appended = self.bounded(appended).await?;
        Ok(appended.first().copied().unwrap_or(0) as usize)
    }
}

impl PgStore {
    /// One attempt at `create_offering`, on `connection`.
    async fn create_on(
        &self,
        connection: &mut PgConnection,
        new: &NewOffering,
        (head, entry): (&Offering, &Entry),
    ) -> Result<Result<CreateOutcome, Rejection>, StoreError> {
        let mut tx = self.bounded(connection.begin()).await?;
        // ON CONFLICT DO NOTHING waits for a concurrent creator of the same id to finish, so the
        // loser then sees the winner's committed rows.
        let inserted = sqlx::query(concat!(
            "WITH head AS ( \
                INSERT INTO offering_head (",
            head_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                ON CONFLICT (offering_id) DO NOTHING RETURNING 1 \
             ) \
             INSERT INTO history_entry (",
            entry_columns!(),
            ") SELECT $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, \
                $37, $38, $39, $40, $41, $42 FROM head"
        ));
        let inserted = self
            .bounded(bind_entry(bind_head(inserted, head), entry).execute(&mut *tx))
            .await?
            .rows_affected();
        if inserted == 1 {
            self.commit(tx.commit()).await?;
            let _ = self.changes.send(Change::Committed {
                offering_id: head.offering_id.as_str().into(),
                version: 1,
            });
            return Ok(Ok(CreateOutcome::Created(head.clone())));
        }
        let existing = self.lock_head(&mut tx, &new.offering_id).await?;
        let created_by: Option<EntryRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    entry_columns!(),
                    " FROM history_entry WHERE offering_id = $1 AND sequence = 1"
                ))
                .bind(&new.offering_id)
                .fetch_optional(&mut *tx),
            )
            .await?;
        self.bounded(tx.rollback()).await?;
        match (existing, created_by) {
            (Some(existing), Some(created_by)) => {
                Ok(check_create(new, existing, &created_by.try_into()?))
            }
            _ => Err(StoreError::Corrupt(format!(
                "offering {:?} has a head but no creation entry",
                new.offering_id
            ))),
        }
    }

    async fn snapshot_on<R: SnapshotReader>(
        &self,
        connection: &mut PgConnection,
        offering_id: &str,
        reader: &mut R,
    ) -> Result<bool, StoreError> {
        let mut tx = self
            .bounded(connection.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            .await?;
        let head: Option<HeadRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    head_columns!(),
                    " FROM offering_head WHERE offering_id = $1"
                ))
                .bind(offering_id)
                .fetch_optional(&mut *tx),
            )
            .await?;
        let Some(head) = head.map(Offering::try_from).transpose()? else {
            return Ok(false);
        };
        reader.head(&head);
        {
            let mut rows = sqlx::query_as::<_, EntryRow>(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM history_entry WHERE offering_id = $1 ORDER BY sequence"
            ))
            .bind(offering_id)
            .fetch(&mut *tx);
            while let Some(row) = self.bounded(rows.try_next()).await? {
                reader.entry(&row.try_into()?);
            }
        }
        let positions: Vec<PositionRow> = self
            .bounded(
                sqlx::query_as(concat!(
                    "SELECT ",
                    position_columns!(),
                    " FROM investor_position WHERE offering_id = $1 ORDER BY investor_id"
                ))
                .bind(offering_id)
                .fetch_all(&mut *tx),
            )
            .await?;
        self.bounded(tx.rollback()).await?;
        reader.positions(positions.into_iter().map(Position::from).collect());
        Ok(true)
    }
}

impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        if !self.primary.is_writable() {
            return Err(self.no_writer());
        }
        let mut connection = self.acquire().await?;
        let result = self
            .bounded(
                sqlx::query_scalar::<_, bool>(
                    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
                )
                .fetch_one(&mut *connection),
            )
            .await;
        self.settle(connection, &result);
        let read_only = result?;
        if read_only && self.primary.targets().require_writable {
            self.primary.suspect();
            return Err(StoreError::Unavailable(sqlx::Error::Protocol(format!(
                "{} no longer takes writes",
                self.primary.current_label()
            ))));
        }
        Ok(())
    }

    async fn create_offering(
        &self,
        new: &NewOffering,
        deadline: Instant,
    ) -> Result<Result<CreateOutcome, Rejection>, StoreError> {
        let (head, entry) = new.first_rows(super::now());
        self.through_failover(deadline, |_| async {
            let mut connection = self.acquire().await?;
            let result = self.create_on(&mut connection, new, (&head, &entry)).await;
            self.settle(connection, &result);
            result
        })
        .await
    }

    async fn apply(
        &self,
        work: &[OfferingRequests],
        deadline: Instant,
    ) -> Result<Results, StoreError> {
        self.through_failover(deadline, |again| async move {
            // Request_ids are almost always new: skip looking them up, and look only when that
            // turns out wrong (a round trip less under the head lock for every batch but
            // retries), or after a failed attempt, which may have committed.
            if !again && let Some(results) = self.apply_attempt(work, true).await? {
                return Ok(results);
            }
            self.apply_attempt(work, false).await?.ok_or_else(|| {
                StoreError::Corrupt("a checked batch found a request_id recorded twice".into())
            })
        })
        .await
    }

    async fn get_offering(&self, offering_id: &str) -> Result<Option<Offering>, StoreError> {
        let row: Option<HeadRow> = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query_as(concat!(
                        "SELECT ",
                        head_columns!(),
                        " FROM offering_head WHERE offering_id = $1"
                    ))
                    .bind(offering_id)
                    .fetch_optional(connection),
                )
            })
            .await?;
        row.map(Offering::try_from).transpose()
    }

    async fn list_offerings(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Offering>, StoreError> {
        let rows: Vec<HeadRow> = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query_as(concat!(
                        "SELECT ",
                        head_columns!(),
                        " FROM offering_head WHERE $1::text IS NULL OR offering_id > $1 ORDER BY offering_id LIMIT $2"
                    ))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(connection),
                )
            })
            .await?;
        into_offerings(rows)
    }

    async fn get_position(
        &self,
        offering_id: &str,
        investor_id: &str,
    ) -> Result<Option<Position>, StoreError> {
        let row: Option<PositionRow> = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query_as(concat!(
                        "SELECT ",
                        position_columns!(),
                        " FROM investor_position WHERE offering_id = $1 AND investor_id = $2"
                    ))
                    .bind(offering_id)
                    .bind(investor_id)
                    .fetch_optional(connection),
                )
            })
            .await?;
        Ok(row.map(Position::from))
    }

    async fn read_snapshot<R: SnapshotReader>(
        &self,
        offering_id: &str,
        reader: &mut R,
    ) -> Result<bool, StoreError> {
        // Not retried: the reader has already been handed what was read. Each statement, and
        // each row of the history (which may be millions long), has the statement deadline.
        let mut connection = self.acquire().await?;
        let result = self.snapshot_on(&mut connection, offering_id, reader).await;
        self.settle(connection, &result);
        result
    }

    async fn list_history(&self, query: HistoryQuery<'_>) -> Result<Vec<Entry>, StoreError> {
        let rows: Vec<EntryRow> = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query_as(concat!(
                        "SELECT ",
                        entry_columns!(),
                        " FROM history_entry WHERE offering_id = $1 AND ($2::text IS NULL OR investor_id = $2) \
                          AND ($3::text IS NULL OR actor = $3) AND sequence > $4 AND sequence <= $5 ORDER BY sequence LIMIT $6"
                    ))
                    .bind(query.offering_id)
                    .bind(query.investor_id)
                    .bind(query.actor)
                    .bind(query.after_sequence)
                    .bind(query.sequence_max)
                    .bind(i64::from(query.limit))
                    .fetch_all(connection),
                )
            })
            .await?;
        into_entries(rows)
    }

    fn changes(&self) -> Changes {
        Changes::new(self.changes.subscribe(), Some(self.interest.hold()))
    }

    /// Every commit, on any replica, NOTIFYs the listener; while it reconnects, the changes it
    /// missed are made good by a [`Change::Missed`] once it is back.
    fn unannounced_commits_poll(&self) -> Option<Duration> {
        None
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max: self.pool.options().get_max_connections(),
            primary: Some(self.primary.stats()),
        }
    }
}

/// The current primary's options, with the session settings every pooled connection has.
fn session_options(primary: &Primary) -> sqlx::postgres::PgConnectOptions {
    primary.current_options().options([
        // Custom plans by default: a generic plan is made once per connection from the statistics
        // of that moment, and one made while history_entry was small scans it in full forever
        // after (seen as throughput falling with history size). The ledger's own transactions
        // trade this for generic plans without sequential scans (BEGIN_APPLY).
        ("plan_cache_mode", "force_custom_plan"),
        // A head lock held this long means a stuck session: answer UNAVAILABLE (retry with
        // the same request_id) rather than hold every caller batched with it.
        ("lock_timeout", "10s"),
    ])
}

/// The error says the connection may be broken, or its host no longer the primary: the
/// connection must not be reused, and the primary must be looked for. A refusal of one
/// transaction (a lock or statement timeout, a deadlock) says neither.
fn lost_primary(error: &StoreError) -> bool {
    match error {
        StoreError::CommitOutcomeUnknown(_) => true,
        StoreError::Unavailable(error) => !refused_transaction(error),
        _ => false,
    }
}

/// PostgreSQL refused this one transaction (serialization, deadlock, lock_timeout,
/// statement_timeout, too many connections): the connection and the host are fine.
fn refused_transaction(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| super::is_refusal_of_one_transaction(&code) || code == "53300"),
        _ => false,
    }
}

/// Turns NOTIFYs from every replica into [`Change`]s while anyone follows them, on a connection
/// of its own to the primary (not one of the pool's, which it would hold forever), reconnecting
/// until the store is dropped (`stop`), and whenever the primary changes or comes back (its
/// old connection may hang silently in a partition). With no follower it holds no connection:
/// every replica's commit would otherwise wake a backend to send this process a notification
/// nobody reads.
async fn forward_notifications(
    primary: Arc<Primary>,
    changes: broadcast::WeakSender<Change>,
    mut followers: watch::Receiver<usize>,
    stop: CancellationToken,
) {
    let mut fences = primary.fences();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            followed = async { followers.wait_for(|n| *n > 0).await.is_ok() } => {
                if !followed { return }
            }
        }
        // NOTIFYs are delivered by the primary only.
        tokio::select! {
            () = stop.cancelled() => return,
            _ = async { while !primary.wait_writable(Instant::now() + LISTENER_RETRY).await {} } => {}
        }
        fences.mark_unchanged();
        let error = tokio::select! {
            () = stop.cancelled() => return,
            error = listen(session_options(&primary), &changes) => error,
            // Dropping the listener closes its connection; the next follower listens anew.
            () = unfollowed(&mut followers) => continue,
            _ = fences.changed() => {
                tracing::info!(host = primary.current_label(), "change listener follows the primary; watchers re-read once it listens");
                continue;
            }
        };
        let Some(error) = error else { return };
        tracing::warn!(%error, "change listener lost its connection; watchers re-read once it is back");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LISTENER_RETRY) => {}
        }
    }
}

/// Returns once nobody has followed the changes for LISTEN_LINGER.
async fn unfollowed(followers: &mut watch::Receiver<usize>) {
    loop {
        if followers.wait_for(|n| *n == 0).await.is_err() {
            // The store is gone; `stop` ends the listener.
            return std::future::pending().await;
        }
        let followed_again = async { followers.wait_for(|n| *n > 0).await.is_ok() };
        if tokio::time::timeout(LISTEN_LINGER, followed_again)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Returns when the listener's connection fails, or None once the store is gone.
async fn listen(
    options: sqlx::postgres::PgConnectOptions,
    changes: &broadcast::WeakSender<Change>,
) -> Option<sqlx::Error> {
    // A pool of one for the listener alone.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(listener) => listener,
        Err(error) => return Some(error),
    };
    if let Err(error) = listener.listen(CHANGE_CHANNEL).await {
        return Some(error);
    }
    // Listening (again): whatever committed before, or while the connection was lost, was never
    // announced. Sent only now that LISTEN is in place, so a re-read from here misses nothing.
    changes.upgrade()?.send(Change::Missed).ok();
    loop {
        // try_recv, not recv: recv reconnects by itself and the notifications lost on the way
        // would go unnoticed. None means exactly that: the connection dropped and is back.
        let change = match listener.try_recv().await {
            Ok(Some(notification)) => match parse_notification(notification.payload()) {
                Some(change) => change,
                None => continue,
            },
            Ok(None) => Change::Missed,
            Err(error) => return Some(error),
        };
        changes.upgrade()?.send(change).ok();
    }
}

/// "version:offering_id", as the write sends it; None for anything else on the channel.
fn parse_notification(payload: &str) -> Option<Change> {
    let (version, offering_id) = payload.split_once(':')?;
    Some(Change::Committed {
        offering_id: Arc::from(offering_id),
        version: version.parse().ok()?,
    })
}
