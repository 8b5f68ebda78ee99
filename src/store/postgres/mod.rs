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
//!
//! This file holds the store, its connections and the statement deadline, the reads, and the
//! [`Store`] calls; the transactions that write are `apply` (a batch, written by `write`) and
//! `create`; `backfill` migrates (and checks a migration for `serve --no-migrate`); `grants`
//! gives the runtime role its least privileges; `changes` hears the NOTIFYs.

mod apply;
mod backfill;
mod changes;
mod create;
mod grants;
mod primary;
mod publication;
mod url;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::rows::{
    EntryRow, HeadRow, PositionRow, entry_columns, head_columns, into_entries, into_offerings,
    position_columns,
};
use super::{
    Backlog, CHANGE_CHANNEL_CAPACITY, Change, Changes, HistoryQuery, Interest, Lease, PoolStats,
    SnapshotReader, StartAt, Store, StoreError,
};
use crate::ledger::chain::Hash;
use crate::ledger::merkle::NodeRange;
use crate::ledger::{
    CreateOutcome, Entry, NewOffering, Offering, OfferingRequests, Position, Rejection, Results,
};
pub use grants::{Grant, RUNTIME_GRANTS};
use primary::Primary;
pub use url::{PgTargets, UrlError};

/// How long a call may wait for a pooled connection before it answers UNAVAILABLE.
/// The rows of a proof's ranges (`Store::tree_rows`): parameters are the offering, then one
/// array per range attribute (its position, level, first and last index). Level 0 ranges read
/// entry hashes by sequence (the primary key), the others stored nodes (merkle_node's key).
const TREE_ROWS: &str = "SELECT r.pos, e.entry_hash, e.sequence \
    FROM UNNEST($2::bigint[], $3::smallint[], $4::bigint[], $5::bigint[]) AS r (pos, lvl, lo, hi) \
    JOIN history_entry AS e ON e.offering_id = $1 AND e.sequence > r.lo AND e.sequence <= r.hi + 1 \
    WHERE r.lvl = 0 AND e.entry_hash IS NOT NULL \
    UNION ALL \
    SELECT r.pos, n.hash, n.idx \
    FROM UNNEST($2::bigint[], $3::smallint[], $4::bigint[], $5::bigint[]) AS r (pos, lvl, lo, hi) \
    JOIN merkle_node AS n ON n.offering_id = $1 AND n.level = r.lvl AND n.idx >= r.lo AND n.idx <= r.hi \
    WHERE r.lvl > 0 \
    ORDER BY 1, 3";

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The least pause between two attempts of one mutation through a failover: a host that keeps
/// failing the same way is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a read waits for a writer to be found before its one retry.
const READ_RETRY_WAIT: Duration = Duration::from_secs(15);
/// --db-io-timeout's default: above the head lock's lock_timeout (10 s), so that a statement
/// waiting for a lock is refused by PostgreSQL first, and above a synchronous commit's usual
/// wait.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(15);

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
        tokio::spawn(changes::forward_notifications(
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
            // A connection refused or reset on the way is retried like a failed statement.
            let result = match self.acquire().await {
                Ok(mut connection) => {
                    let result = self
                        .bounded(read(&mut connection, std::marker::PhantomData))
                        .await;
                    self.settle(connection, &result);
                    result
                }
                Err(error) => Err(error),
            };
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
        let (head, entry) = new.first_rows(crate::store::now());
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

    async fn ledger_id(&self) -> Result<uuid::Uuid, StoreError> {
        let text: Option<String> = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query_scalar("SELECT ledger_id::text FROM ledger")
                        .fetch_optional(connection),
                )
            })
            .await?;
        crate::store::parse_ledger_id(text)
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

    /// Every range in one statement: each range is an index range scan of its own.
    async fn tree_rows(
        &self,
        offering_id: &str,
        ranges: &[NodeRange],
    ) -> Result<Vec<Vec<Hash>>, StoreError> {
        let positions: Vec<i64> = (0..ranges.len() as i64).collect();
        let levels: Vec<i16> = ranges.iter().map(|r| i16::from(r.level)).collect();
        let firsts: Vec<i64> = ranges.iter().map(|r| r.first as i64).collect();
        let lasts: Vec<i64> = ranges
            .iter()
            .map(|r| (r.first + r.count) as i64 - 1)
            .collect();
        let rows: Vec<(i64, Vec<u8>, i64)> = self
            .read(|connection, _| {
                Box::pin(
                    sqlx::query_as(TREE_ROWS)
                        .bind(offering_id)
                        .bind(&positions)
                        .bind(&levels)
                        .bind(&firsts)
                        .bind(&lasts)
                        .fetch_all(connection),
                )
            })
            .await?;
        let rows = rows.into_iter().map(|(range, hash, _)| (range, hash));
        crate::store::rows_by_range(ranges.len(), rows.collect())
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

/// The current primary's options, with the session settings every pooled connection has.
fn session_options(primary: &Primary) -> sqlx::postgres::PgConnectOptions {
    primary.current_options().options([
        // Custom plans by default: a generic plan is made once per connection from the statistics
        // of that moment, and one made while history_entry was small scans it in full forever
        // after (seen as throughput falling with history size). The ledger's own transactions
        // trade this for generic plans without sequential scans (`apply::BEGIN_APPLY`).
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
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            crate::store::is_refusal_of_one_transaction(&code) || code == "53300"
        }),
        _ => false,
    }
}
