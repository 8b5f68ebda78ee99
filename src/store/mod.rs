//! Storage: one trait, two backends (PostgreSQL for several replicas, SQLite embedded).
//!
//! A backend owns its SQL and its transactions. Every mutation is ONE transaction, opened and
//! committed in exactly one function per backend (`create_offering` and `apply`): lock, load,
//! let `ledger` decide, write, commit. A result is returned only after the commit returned.

mod columns;
#[cfg(test)]
pub(crate) mod fake;
mod migrations;
mod postgres;
pub mod publication;
mod rows;
mod sqlite;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, watch};

use crate::ledger::chain::{Digest, Hash};
use crate::ledger::merkle::{Built, NodeRange, Proof};
use crate::ledger::verify::{Report, Verifier};
use crate::ledger::{
    CreateOutcome, Entry, NewOffering, Offering, OfferingRequests, Position, Rejection, Results,
};
pub use crate::telemetry::metrics::PoolStats;
pub use publication::{Backlog, Lease, StartAt};

pub use postgres::{DEFAULT_IO_TIMEOUT, Grant, PgSettings, PgStore, PgTargets, RUNTIME_GRANTS};
pub use sqlite::{LIST_OFFERINGS_SQL as SQLITE_LIST_OFFERINGS_SQL, SqliteStore};

#[cfg(test)]
pub(crate) use rows::STORED_COLUMNS;

/// Errors of the storage itself, as opposed to a ledger rule refusing a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or gave up (connection refused, pool timed out, busy).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The connection failed while COMMIT was on its way, and the outcome could not be looked
    /// up before the caller's deadline: the transaction may or may not have committed. A retry
    /// with the same request_id is safe and tells.
    #[error("database unavailable while committing; the outcome is unknown: {0}")]
    CommitOutcomeUnknown(#[source] sqlx::Error),
    /// Anything else the database said: a bug or a broken schema, never the caller's doing.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored value no migration writes.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL cannot be used (only ever before a server serves).
    #[error("{0}")]
    Config(String),
    /// No host of the database URL takes writes (only ever before a server serves).
    #[error("{0}")]
    NoWriter(String),
    /// A migration failed (only ever from `migrate()`, before a server serves).
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database is not migrated exactly as this binary migrates (only ever from
    /// `check_migrated()`, before a server serves).
    #[error(
        "the database is not migrated as this binary expects: {0}; run `subledger migrate` as the owner role first"
    )]
    NotMigrated(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
                Self::Unavailable(error)
            }
            // Bytes the protocol does not allow came over the connection (a network cut halfway
            // through, say: "unexpected response from SSLRequest: 0x00" when connecting through
            // one). The connection is unusable, not the request wrong: retrying is safe.
            E::Protocol(_) => Self::Unavailable(error),
            E::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                Self::Unavailable(error)
            }
            _ => Self::Database(error),
        }
    }
}

impl StoreError {
    /// True when the failure may be one offering's alone (a head locked elsewhere past
    /// lock_timeout, a deadlock, a constraint), so that the other offerings of the transaction
    /// can succeed on their own. False when the database itself is out of reach or busy: then
    /// every transaction would wait for the same timeout again.
    pub fn may_concern_one_offering(&self) -> bool {
        use sqlx::Error as E;
        match self {
            Self::Unavailable(E::Database(db)) => db
                .code()
                .is_some_and(|code| is_refusal_of_one_transaction(&code)),
            Self::Unavailable(_) | Self::CommitOutcomeUnknown(_) => false,
            Self::Database(_)
            | Self::Corrupt(_)
            | Self::Migrate(_)
            | Self::NotMigrated(_)
            | Self::Config(_)
            | Self::NoWriter(_) => true,
        }
    }
}

/// PostgreSQL SQLSTATEs that refuse one transaction, not the database: 40001/40P01
/// (serialization, deadlock), 55P03 (lock_timeout), 57014 (statement_timeout).
fn is_refusal_of_one_transaction(code: &str) -> bool {
    matches!(code, "40001" | "40P01" | "55P03" | "57014")
}

/// PostgreSQL: SQLSTATE class 08 (connection), 57P (shutdown, restart), 53300 (too many
/// connections), 25006 (a read-only session: the host is, or has become, a standby), and the
/// refusals of one transaction above: a retry with the same request_id is safe. SQLite
/// (numeric, extended codes): BUSY and LOCKED once the busy timeout ran out.
fn is_unavailable_code(code: Option<&str>) -> bool {
    match code {
        Some(pg) if pg.len() == 5 => {
            pg.starts_with("08")
                || pg.starts_with("57P")
                || pg == "53300"
                || pg == READ_ONLY_SQL_TRANSACTION
                || is_refusal_of_one_transaction(pg)
        }
        Some(sqlite) => sqlite
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
        None => false,
    }
}

/// SQLSTATE read_only_sql_transaction: a write reached a standby.
pub(crate) const READ_ONLY_SQL_TRANSACTION: &str = "25006";

/// Entries the backfill of the hash chain reads, hashes and writes back at a time: bounds its
/// memory whatever an offering's length, while a page still costs few round trips.
pub(crate) const BACKFILL_PAGE_ENTRIES: i64 = 10_000;

/// The time recorded for a write: microsecond precision, which both databases store exactly,
/// so what a reply says and what a later read returns are equal.
/// The ledger id as both backends store it (text), or Corrupt.
pub(crate) fn parse_ledger_id(text: Option<String>) -> Result<uuid::Uuid, StoreError> {
    let text = text.ok_or_else(|| {
        StoreError::Corrupt("the ledger table has no row: the database is not migrated".into())
    })?;
    uuid::Uuid::parse_str(&text)
        .map_err(|_| StoreError::Corrupt(format!("the ledger id {text:?} is not a UUID")))
}

pub(crate) fn now() -> crate::ledger::Timestamp {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// What a store announces so that WatchHistory's readers know when to read: they read the
/// history itself, so an announcement carries no entry, only where to look.
#[derive(Clone, Debug)]
pub enum Change {
    /// Sent after every commit: the offering's new version.
    Committed { offering_id: Arc<str>, version: i64 },
    /// Commits may have gone unannounced (PostgreSQL: the LISTEN connection was lost and is
    /// back): every watched offering must be read again once.
    Missed,
}

/// A subscription to a store's [`Change`]s. While any is held, a PostgreSQL store listens for
/// the commits of other replicas; with none held it keeps no listening connection, and the
/// database sends no notification to this process.
pub struct Changes {
    receiver: broadcast::Receiver<Change>,
    _interest: Option<InterestGuard>,
}

impl Changes {
    pub(crate) fn new(
        receiver: broadcast::Receiver<Change>,
        interest: Option<InterestGuard>,
    ) -> Self {
        Self {
            receiver,
            _interest: interest,
        }
    }

    pub async fn recv(&mut self) -> Result<Change, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

/// How many [`Changes`] are held, for a store that listens only while someone follows.
#[derive(Clone)]
pub(crate) struct Interest(Arc<watch::Sender<usize>>);

impl Interest {
    pub(crate) fn new() -> (Self, watch::Receiver<usize>) {
        let (holders, watched) = watch::channel(0);
        (Self(Arc::new(holders)), watched)
    }

    pub(crate) fn hold(&self) -> InterestGuard {
        self.0.send_modify(|holders| *holders += 1);
        InterestGuard(self.0.clone())
    }
}

/// One holder of an [`Interest`], counted until dropped.
pub(crate) struct InterestGuard(Arc<watch::Sender<usize>>);

impl Drop for InterestGuard {
    fn drop(&mut self) {
        self.0.send_modify(|holders| *holders -= 1);
    }
}

/// How many changes a slow reader may fall behind before it must re-read everything it
/// watches (it then does, as on [`Change::Missed`]).
pub(crate) const CHANGE_CHANNEL_CAPACITY: usize = 4096;

/// A page of one offering's history.
#[derive(Clone, Debug)]
pub struct HistoryQuery<'a> {
    pub offering_id: &'a str,
    /// Only this investor's entries.
    pub investor_id: Option<&'a str>,
    /// Only the entries this principal made.
    pub actor: Option<&'a str>,
    /// Entries with after_sequence < sequence <= sequence_max.
    pub after_sequence: i64,
    pub sequence_max: i64,
    pub limit: u32,
}

impl<'a> HistoryQuery<'a> {
    /// Every entry after `after_sequence`, up to `limit` of them.
    pub fn after(offering_id: &'a str, after_sequence: i64, limit: u32) -> Self {
        Self {
            offering_id,
            investor_id: None,
            actor: None,
            after_sequence,
            sequence_max: i64::MAX,
            limit,
        }
    }
}

/// The offerings whose history was recorded before the hash chain and is not hashed yet.
pub(crate) const UNCHAINED_OFFERINGS: &str =
    "SELECT offering_id FROM offering_head WHERE last_hash IS NULL ORDER BY offering_id";

/// The offerings whose Merkle tree is not built yet: recorded before it (migration 0007).
pub(crate) const UNBUILT_TREES: &str =
    "SELECT offering_id FROM offering_head WHERE merkle_size IS NULL ORDER BY offering_id";

/// Builds an offering's Merkle tree from its entry hashes, read a page at a time in sequence
/// order: `add` takes a page and returns the stored nodes it completed.
pub(crate) struct TreeBuild {
    pub frontier: crate::ledger::merkle::Frontier,
    pub after_sequence: i64,
}

impl TreeBuild {
    pub fn new() -> Self {
        Self {
            frontier: Default::default(),
            after_sequence: 0,
        }
    }

    /// Appends a page of (sequence, entry_hash) rows; the nodes to store. A gap in the
    /// sequences or a missing hash is a broken history, which the tree must not paper over.
    pub fn add(
        &mut self,
        offering_id: &str,
        rows: Vec<(i64, Option<Vec<u8>>)>,
    ) -> Result<Vec<crate::ledger::merkle::Node>, StoreError> {
        let mut nodes = Vec::new();
        for (sequence, hash) in rows {
            let hash: Option<crate::ledger::chain::Hash> =
                hash.and_then(|h| h.as_slice().try_into().ok());
            let (Some(hash), true) = (hash, sequence == self.after_sequence + 1) else {
                return Err(StoreError::Corrupt(format!(
                    "offering {offering_id:?}: entry {sequence} after {} has no 32-byte hash or leaves a gap; its Merkle tree cannot be built",
                    self.after_sequence
                )));
            };
            self.frontier.append(&hash, &mut nodes);
            self.after_sequence = sequence;
        }
        Ok(nodes)
    }
}

/// Rows read for [`Store::tree_rows`] as (the range's position in the request, hash), in order
/// within each range, grouped back into one list per range.
pub(crate) fn rows_by_range(
    ranges: usize,
    rows: Vec<(i64, Vec<u8>)>,
) -> Result<Vec<Vec<Hash>>, StoreError> {
    let mut grouped = vec![Vec::new(); ranges];
    for (range, bytes) in rows {
        let hash = Hash::try_from(bytes.as_slice())
            .map_err(|_| StoreError::Corrupt(format!("a tree hash is {} bytes", bytes.len())))?;
        let slot = usize::try_from(range)
            .ok()
            .and_then(|range| grouped.get_mut(range))
            .ok_or_else(|| StoreError::Corrupt(format!("a tree row of range {range}")))?;
        slot.push(hash);
    }
    Ok(grouped)
}

/// Hashes the history of each of `unchained` in turn (`backfill`: one offering, in one
/// transaction under its head lock), then says how many there were.
pub(crate) async fn backfill_each<'a, F, Fut>(
    unchained: &'a [String],
    mut backfill: F,
) -> Result<(), StoreError>
where
    F: FnMut(&'a str) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    for offering_id in unchained {
        backfill(offering_id).await?;
    }
    if !unchained.is_empty() {
        tracing::info!(
            offerings = unchained.len(),
            "hashed the history recorded before the hash chain"
        );
    }
    Ok(())
}

/// Builds the Merkle tree of each of `unbuilt` in turn (`build`: one offering, in one
/// transaction under its head lock), then says how many there were.
pub(crate) async fn build_trees_each<'a, F, Fut>(
    unbuilt: &'a [String],
    mut build: F,
) -> Result<(), StoreError>
where
    F: FnMut(&'a str) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    for offering_id in unbuilt {
        build(offering_id).await?;
    }
    if !unbuilt.is_empty() {
        tracing::info!(
            offerings = unbuilt.len(),
            "built the Merkle tree of the history recorded before it"
        );
    }
    Ok(())
}

/// Receives one snapshot of an offering (`Store::read_snapshot`), in this order.
pub trait SnapshotReader: Send {
    fn head(&mut self, head: &Offering);
    /// Called for every entry, in sequence order.
    fn entry(&mut self, entry: &Entry);
    /// Every position row of the offering, by investor_id.
    fn positions(&mut self, positions: Vec<Position>);
}

/// VerifyOffering as a snapshot reader: the verifier starts at the head and finishes with the
/// positions.
pub enum Verification<'a> {
    Waiting { digests: &'a [Digest] },
    Checking(Box<(Offering, Verifier)>),
    Done { offering_id: String, report: Report },
}

impl<'a> Verification<'a> {
    /// A verification that will hold the chain against `digests`.
    pub fn new(digests: &'a [Digest]) -> Self {
        Self::Waiting { digests }
    }

    /// The offering verified and the report, once the whole snapshot was read.
    pub fn into_report(self) -> Option<(String, Report)> {
        match self {
            Self::Done {
                offering_id,
                report,
            } => Some((offering_id, report)),
            _ => None,
        }
    }
}

impl SnapshotReader for Verification<'_> {
    fn head(&mut self, head: &Offering) {
        if let Self::Waiting { digests } = self {
            *self = Self::Checking(Box::new((head.clone(), Verifier::new(head, digests))));
        }
    }

    fn entry(&mut self, entry: &Entry) {
        if let Self::Checking(checking) = self {
            checking.1.check_entry(entry);
        }
    }

    fn positions(&mut self, positions: Vec<Position>) {
        if let Self::Checking(checking) = std::mem::replace(self, Self::Waiting { digests: &[] }) {
            let (head, verifier) = *checking;
            *self = Self::Done {
                report: verifier.finish(&head, &positions),
                offering_id: head.offering_id,
            };
        }
    }
}

/// The storage a subledger server runs on.
pub trait Store: Clone + Send + Sync + 'static {
    /// Answers when the database does and would take a write (health checks).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The ledger's id (migration 0008), which every signed digest covers; it never changes.
    fn ledger_id(&self) -> impl Future<Output = Result<uuid::Uuid, StoreError>> + Send;

    /// Creates the offering, or recognises a retry of the request that created it. Through a
    /// failover (PostgreSQL) it tries again on the new primary until `deadline`.
    fn create_offering(
        &self,
        new: &NewOffering,
        deadline: Instant,
    ) -> impl Future<Output = Result<Result<CreateOutcome, Rejection>, StoreError>> + Send;

    /// Applies the requests of one or more offerings (each offering once) in ONE transaction:
    /// the heads are locked in offering_id order, then each offering's requests are validated in
    /// order against the state the previous ones left. One result per request; a rejected request
    /// changes nothing; the requests of an offering that does not exist get OfferingNotFound.
    /// Through a failover (PostgreSQL) it tries again on the new primary until `deadline`,
    /// looking the request_ids up first in case the lost attempt committed.
    fn apply(
        &self,
        work: &[OfferingRequests],
        deadline: Instant,
    ) -> impl Future<Output = Result<Results, StoreError>> + Send;

    fn get_offering(
        &self,
        offering_id: &str,
    ) -> impl Future<Output = Result<Option<Offering>, StoreError>> + Send;

    /// Offerings ordered by offering_id, those after `after` only.
    fn list_offerings(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Offering>, StoreError>> + Send;

    /// None when the investor never held units in the offering.
    fn get_position(
        &self,
        offering_id: &str,
        investor_id: &str,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Hands `reader` the offering's head, then every history entry in sequence order, then its
    /// position rows, all from ONE snapshot while writers go on, so that no concurrent write
    /// can make them disagree; the history streams through, so any length reads in bounded
    /// memory. False (and nothing read) when the offering does not exist.
    fn read_snapshot<R: SnapshotReader>(
        &self,
        offering_id: &str,
        reader: &mut R,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Recomputes the offering from one snapshot of its history and compares it with its head
    /// and positions, and holds the chain against `digests` (earlier digests of this
    /// offering). None when the offering does not exist.
    ///
    /// Decoding and hashing a long history is seconds of CPU: it runs on a blocking thread,
    /// which drives the reads itself, so that the runtime's threads stay free for the calls
    /// that take microseconds.
    fn verify_offering(
        &self,
        offering_id: &str,
        digests: &[Digest],
    ) -> impl Future<Output = Result<Option<Report>, StoreError>> + Send {
        let store = self.clone();
        let offering_id = offering_id.to_owned();
        let digests = digests.to_vec();
        let runtime = tokio::runtime::Handle::current();
        async move {
            tokio::task::spawn_blocking(move || {
                runtime.block_on(async {
                    let mut verification = Verification::new(&digests);
                    store.read_snapshot(&offering_id, &mut verification).await?;
                    Ok(verification.into_report().map(|(_, report)| report))
                })
            })
            .await
            .map_err(|error| StoreError::Corrupt(format!("the verification stopped: {error}")))?
        }
    }

    fn list_history(
        &self,
        query: HistoryQuery<'_>,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// The rows of each of `ranges` of the offering's Merkle tree ([`Proof::ranges`]), range
    /// for range, in order: the entry_hash of sequences first + 1 ..= first + count for level
    /// 0, the stored nodes of that level otherwise. A range the tree does not hold comes back
    /// short. Entries and stored nodes are never changed once written, so the ranges need not
    /// be read in one snapshot.
    fn tree_rows(
        &self,
        offering_id: &str,
        ranges: &[NodeRange],
    ) -> impl Future<Output = Result<Vec<Vec<Hash>>, StoreError>> + Send;

    /// A proof over the offering's Merkle tree, whose sizes the caller checked against the
    /// head: a few thousand rows read at most, and a few thousand hashes.
    fn prove(
        &self,
        offering_id: &str,
        proof: Proof,
    ) -> impl Future<Output = Result<Built, StoreError>> + Send {
        async move {
            let ranges = proof.ranges();
            let rows = self.tree_rows(offering_id, &ranges).await?;
            proof
                .build(&rows)
                .map_err(|error| StoreError::Corrupt(format!("offering {offering_id:?}: {error}")))
        }
    }

    /// Changes committed from now on, through this process or (PostgreSQL) any replica.
    /// PostgreSQL: commits of other replicas are announced once its listener is in place, which
    /// it then says with [`Change::Missed`] (whatever committed before may be unannounced).
    fn changes(&self) -> Changes;

    /// How often a watched offering must be looked at for commits that [`Store::changes`]
    /// cannot announce: None when it announces every commit.
    fn unannounced_commits_poll(&self) -> Option<std::time::Duration>;

    /// The connection pool as it is now, for the metrics.
    fn pool_stats(&self) -> PoolStats;

    /// Takes `lease` if no one holds it or its holder let it expire, and returns the new
    /// epoch; None while another holds it. The first take on a database (no lease row yet)
    /// also starts the cursors of existing offerings where `start` says.
    fn take_publication_lease(
        &self,
        lease: &Lease<'_>,
        start: StartAt,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Extends the lease by its ttl from now; false when `epoch` is no longer in force.
    fn renew_publication_lease(
        &self,
        lease: &Lease<'_>,
        epoch: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Lets the lease expire now (a graceful stop), so that another replica takes it at once.
    fn release_publication_lease(
        &self,
        name: &str,
        epoch: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The offerings whose history goes past their published cursor, by offering_id, those
    /// after `after` only.
    fn publication_backlog(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Backlog>, StoreError>> + Send;

    /// Moves the offering's cursor forward to `sequence` if the lease `name` is still at
    /// `epoch`; false when it is not (or the cursor was already there).
    fn advance_publication_cursor(
        &self,
        name: &str,
        epoch: i64,
        offering_id: &str,
        sequence: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
