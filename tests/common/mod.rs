//! Shared set-up for the integration tests: a fresh database per test on a real PostgreSQL or a
//! real SQLite file, servers started in-process on ephemeral ports (each with its own pool, like
//! separate replicas), clients, and checks on gRPC error details.
//!
//! Every test body is written once and run on both backends by [`backend_tests!`].
//! PostgreSQL comes from SUBLEDGER_TEST_POSTGRES_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres), where one database per test is created and
//! dropped. A PostgreSQL test that cannot connect fails, unless SUBLEDGER_TEST_SKIP_POSTGRES=1
//! (which scripts/test sets on a machine without PostgreSQL, never under CI=true).

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod eventually;
pub mod metrics;
pub mod nats;
pub mod process;
pub mod raw;
pub mod roles;
pub mod skip;
pub mod tamper;
pub mod tls;

pub use eventually::eventually;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::Connection;
use subledger::proto::subscription_ledger_client::SubscriptionLedgerClient;
use subledger::proto::{self};
use subledger::server::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub type Client = SubscriptionLedgerClient<Channel>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn postgres_admin_url() -> String {
    std::env::var("SUBLEDGER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// With SUBLEDGER_TEST_LOG set (a RUST_LOG-style filter), in-process servers log to the test's
/// stderr: what a failing test's servers did, without changing what runs.
fn log_to_stderr_if_asked() {
    if let Ok(filter) = std::env::var("SUBLEDGER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A database of its own for one test; dropped (PostgreSQL) or deleted (SQLite) with it.
pub struct TestDb {
    pub backend: Backend,
    /// What `subledger serve --database-url` takes.
    pub url: String,
    postgres_database: Option<String>,
    sqlite_dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// None only when the PostgreSQL half is explicitly skipped.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}", dir.path().join("subledger.db").display());
                Some(Self {
                    backend,
                    url,
                    postgres_database: None,
                    sqlite_dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
                    Ok(connection) => connection,
                    Err(error)
                        if std::env::var("SUBLEDGER_TEST_SKIP_POSTGRES").as_deref() == Ok("1") =>
                    {
                        skip::skip(&format!(
                            "no PostgreSQL (SUBLEDGER_TEST_SKIP_POSTGRES=1): {error}"
                        ));
                        return None;
                    }
                    Err(error) => panic!(
                        "cannot reach PostgreSQL at {admin_url}: {error}. Start it or set SUBLEDGER_TEST_POSTGRES_URL; \
                         scripts/test skips this half explicitly when no PostgreSQL is running"
                    ),
                };
                let name = format!("subledger_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                let (base, _) = admin_url
                    .rsplit_once('/')
                    .expect("PostgreSQL URL with a database");
                let url = format!("{base}/{name}");
                Some(Self {
                    backend,
                    url,
                    postgres_database: Some(name),
                    sqlite_dir: None,
                })
            }
        }
    }

    /// Starts a server (its own pool: a separate replica) on an ephemeral port: plaintext,
    /// anonymous, the default limits.
    pub async fn start_server(&self) -> TestServer {
        self.start_server_via(&self.url, ServerConfig::default())
            .await
    }

    /// Starts a server with TLS, principals or limits of its own.
    pub async fn start_server_with(&self, config: ServerConfig) -> TestServer {
        self.start_server_via(&self.url, config).await
    }

    /// Starts a server that reaches the database through `url` (PostgreSQL: e.g. a proxy).
    pub async fn start_server_via(&self, url: &str, config: ServerConfig) -> TestServer {
        log_to_stderr_if_asked();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let address = listener.local_addr().expect("local address");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = match self.backend {
            Backend::Postgres => {
                let store = if roles::serve_as_runtime_role() && url == self.url {
                    self.migrate_and_grant_runtime_role().await;
                    subledger::cli::open_postgres_migrated(&self.runtime_url(), Default::default())
                        .await
                        .expect("open PostgreSQL store as the runtime role")
                } else {
                    subledger::cli::open_postgres(url, Default::default())
                        .await
                        .expect("open PostgreSQL store")
                };
                tokio::spawn(async move {
                    subledger::server::serve(store, vec![listener], config, token)
                        .await
                        .expect("serve")
                })
            }
            Backend::Sqlite => {
                let store = subledger::cli::open_sqlite(&self.sqlite_path())
                    .await
                    .expect("open SQLite store");
                tokio::spawn(async move {
                    subledger::server::serve(store, vec![listener], config, token)
                        .await
                        .expect("serve")
                })
            }
        };
        TestServer {
            address,
            shutdown,
            task: Some(task),
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.sqlite_dir
            .as_ref()
            .expect("a SQLite test database")
            .path()
            .join("subledger.db")
    }

    /// Runs one SQL statement directly on the database, bypassing subledger.
    pub async fn execute_sql(&self, sql: &str) -> Result<u64, String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sql)
                    .execute(&mut connection)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| e.to_string())
            }
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sql)
                    .execute(&mut connection)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

impl TestDb {
    /// Runs several SQL statements in order on ONE connection, bypassing subledger: what a
    /// session setting (SET session_replication_role) or a trigger disabled for the session must
    /// be followed by. Stops at the first that fails.
    pub async fn execute_sql_on_one_connection(&self, statements: &[&str]) -> Result<(), String> {
        // The same loop for each backend's connection type.
        macro_rules! run {
            ($connection:ty) => {{
                let mut connection = <$connection>::connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())?;
                for sql in statements {
                    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                        .execute(&mut connection)
                        .await
                        .map_err(|e| format!("{sql}: {e}"))?;
                }
                Ok(())
            }};
        }
        match self.backend {
            Backend::Postgres => run!(sqlx::PgConnection),
            Backend::Sqlite => run!(sqlx::SqliteConnection),
        }
    }
}

impl TestDb {
    /// Writes history directly with SQL, as an operator loading data would (bench/grow_*.sql):
    /// rows without entry_hash, like history recorded before the hash chain (its refusal of a
    /// NULL entry_hash lifted on this connection's transaction only), then hashes them as an
    /// upgrade does, by running subledger's migrate() on the database.
    pub async fn insert_history_before_the_chain(&self, statements: &[&str]) {
        self.insert_unhashed_history(statements).await;
        self.migrate().await;
    }

    /// The rows of [`TestDb::insert_history_before_the_chain`], left unhashed.
    pub async fn insert_unhashed_history(&self, statements: &[&str]) {
        let (lift, restore) = match self.backend {
            Backend::Postgres => (
                "ALTER TABLE history_entry DROP CONSTRAINT history_entry_hashed",
                "ALTER TABLE history_entry ADD CONSTRAINT history_entry_hashed CHECK (entry_hash IS NOT NULL) NOT VALID",
            ),
            Backend::Sqlite => (
                "DROP TRIGGER history_entry_hashed",
                "CREATE TRIGGER history_entry_hashed BEFORE INSERT ON history_entry WHEN NEW.entry_hash IS NULL \
                 BEGIN SELECT RAISE(ABORT, 'history_entry.entry_hash is required'); END",
            ),
        };
        let begin = match self.backend {
            Backend::Postgres => "BEGIN",
            Backend::Sqlite => "BEGIN IMMEDIATE",
        };
        let all: Vec<&str> = [begin, lift]
            .into_iter()
            .chain(statements.iter().copied())
            .chain([restore, "COMMIT"])
            .collect();
        self.execute_sql_on_one_connection(&all).await.unwrap();
    }

    /// What `subledger migrate` does, on this database: pending migrations, then hashing any
    /// history that lacks its hash.
    pub async fn migrate(&self) {
        match self.backend {
            Backend::Postgres => drop(
                subledger::cli::open_postgres(
                    &self.url,
                    subledger::store::PgSettings {
                        max_connections: 1,
                        ..Default::default()
                    },
                )
                .await
                .unwrap(),
            ),
            Backend::Sqlite => drop(
                subledger::cli::open_sqlite(&self.sqlite_path())
                    .await
                    .unwrap(),
            ),
        }
    }
}

impl TestDb {
    /// This PostgreSQL database's URL as [`roles::RUNTIME_ROLE`].
    pub fn runtime_url(&self) -> String {
        roles::as_role(&self.url, roles::RUNTIME_ROLE)
    }

    /// What `subledger migrate --grant-to` does as the owner: migrate, then grant the runtime
    /// role (created if missing) what serving needs.
    pub async fn migrate_and_grant_runtime_role(&self) {
        assert_eq!(self.backend, Backend::Postgres, "roles are PostgreSQL's");
        roles::migrate_and_grant(&self.url).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.postgres_database.take() else {
            return;
        };
        // Drop runs outside async context (and during a panic): use a thread with its own runtime.
        let admin_url = postgres_admin_url();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}

pub struct TestServer {
    pub address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn client(&self) -> Client {
        connect(self.address).await
    }

    /// Graceful shutdown: waits for calls in flight to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn connect(address: SocketAddr) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect to the test server");
    SubscriptionLedgerClient::new(channel)
}

/// Asserts a status's code and its ErrorInfo reason and domain; returns the status for more checks.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: &str,
) -> tonic::Status {
    let status = result.expect_err(&format!("expected {code:?} {reason}"));
    assert_eq!(status.code(), code, "status {status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "status {status:?}");
    assert_eq!(info.domain, "subledger.v1");
    status
}

/// Asserts INVALID_ARGUMENT naming `field`, in the message and in a BadRequest violation.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = assert_status(result, tonic::Code::InvalidArgument, "INVALID_FIELD");
    assert!(
        status.message().starts_with(field),
        "message {:?} should name {field}",
        status.message()
    );
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(violations[0].field, field);
}

pub fn offering(
    id: &str,
    max_units: i64,
    max_units_per_investor: i64,
) -> proto::CreateOfferingRequest {
    proto::CreateOfferingRequest {
        offering_id: id.to_owned(),
        name: format!("Offering {id}"),
        max_units,
        max_units_per_investor,
        request_id: format!("create-{id}"),
        ..Default::default()
    }
}

pub fn subscribe(
    offering_id: &str,
    investor_id: &str,
    units: i64,
    request_id: &str,
) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        offering_id: offering_id.to_owned(),
        investor_id: investor_id.to_owned(),
        units,
        request_id: request_id.to_owned(),
    }
}

pub fn cancel(
    offering_id: &str,
    investor_id: &str,
    units: i64,
    request_id: &str,
) -> proto::CancelRequest {
    proto::CancelRequest {
        offering_id: offering_id.to_owned(),
        investor_id: investor_id.to_owned(),
        units,
        request_id: request_id.to_owned(),
    }
}

/// Every history entry of an offering, through the public API.
pub async fn full_history(client: &mut Client, offering_id: &str) -> Vec<proto::HistoryEntry> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_history(proto::ListHistoryRequest {
                offering_id: offering_id.to_owned(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("ListHistory")
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// Asserts the invariants of an offering from its history alone, then VerifyOffering's verdict.
pub async fn assert_ledger_consistent(
    client: &mut Client,
    offering_id: &str,
) -> Vec<proto::HistoryEntry> {
    let entries = full_history(client, offering_id).await;
    let head = client
        .get_offering(proto::GetOfferingRequest {
            offering_id: offering_id.to_owned(),
        })
        .await
        .expect("GetOffering")
        .into_inner();
    for (index, entry) in entries.iter().enumerate() {
        assert_eq!(entry.sequence, index as i64 + 1, "sequences are gapless");
        assert!(
            entry.offering_units_after <= head.max_units,
            "never over the offering cap"
        );
        if head.max_units_per_investor > 0 {
            assert!(
                entry.investor_units_after <= head.max_units_per_investor,
                "never over the investor cap"
            );
        }
    }
    assert_eq!(head.version, entries.len() as i64);
    assert_eq!(
        head.subscribed_units,
        entries.iter().map(|e| e.units_delta).sum::<i64>()
    );
    let verdict = client
        .verify_offering(proto::VerifyOfferingRequest {
            offering_id: offering_id.to_owned(),
            digest: None,
        })
        .await
        .expect("VerifyOffering")
        .into_inner();
    assert!(
        verdict.ok,
        "VerifyOffering problems: {:?}",
        verdict.problems
    );
    assert_eq!(verdict.entries_checked, entries.len() as i64);
    entries
}

/// An entry's hash as a client computes it from ListHistory: docs/hash-chain.md, written again
/// from the document alone, against the protobuf message (not with the server's code).
pub fn recompute_entry_hash(previous: &[u8; 32], e: &proto::HistoryEntry) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    fn str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn micros(t: &prost_types::Timestamp) -> i64 {
        t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
    }
    fn terms(out: &mut Vec<u8>, t: Option<&proto::OfferingTerms>) {
        let Some(t) = t else { return out.push(0) };
        out.push(1);
        str(out, &t.name);
        out.extend_from_slice(&t.max_units.to_be_bytes());
        out.extend_from_slice(&t.max_units_per_investor.to_be_bytes());
        match &t.close_time {
            None => out.push(0),
            Some(close) => {
                out.push(1);
                out.extend_from_slice(&micros(close).to_be_bytes());
            }
        }
    }
    let mut out = vec![1u8];
    str(&mut out, &e.offering_id);
    for n in [e.sequence, i64::from(e.kind)] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    str(&mut out, &e.investor_id);
    for n in [
        e.units_delta,
        e.investor_units_after,
        e.offering_units_after,
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    str(&mut out, &e.request_id);
    let record_time = micros(e.record_time.as_ref().unwrap());
    for n in [e.requested_units, e.expected_version, record_time] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    str(&mut out, &e.actor);
    for n in [
        e.demand_delta,
        e.investor_demand_after,
        e.offering_demand_after,
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    terms(&mut out, e.terms_before.as_ref());
    terms(&mut out, e.terms_after.as_ref());
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(&out);
    hasher.finalize().into()
}

/// An offering with `entries` history entries, written straight into the database (consistent
/// with its head and positions), so that verifying it takes a while.
pub async fn grow_offering(db: &TestDb, offering_id: &str, entries: i64) {
    let series = match db.backend {
        Backend::Postgres => {
            format!("SELECT g AS n FROM generate_series(2, {entries}) AS g")
        }
        Backend::Sqlite => format!(
            "WITH RECURSIVE g(n) AS (SELECT 2 UNION ALL SELECT n + 1 FROM g WHERE n < {entries}) SELECT n FROM g"
        ),
    };
    let now = match db.backend {
        Backend::Postgres => "now()",
        Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
    };
    let head = format!(
        "INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units, \
            investor_count, status, version, create_time, update_time) \
         VALUES ('{offering_id}', 'grown', {entries}, 0, {entries} - 1, 1, 1, {entries}, {now}, {now})"
    );
    let history = format!(
        "INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after, \
            offering_units_after, request_id, requested_units, expected_version, record_time, actor) \
         SELECT '{offering_id}', 1, 1, '', 0, 0, 0, 'grow-create', {entries}, 0, {now}, 'grower' \
         UNION ALL \
         SELECT '{offering_id}', n, 2, 'whale', 1, n - 1, n - 1, 'grow-' || n, 1, 0, {now}, 'grower' FROM ({series}) AS s"
    );
    let position = format!(
        "INSERT INTO investor_position (offering_id, investor_id, units, update_time) \
         VALUES ('{offering_id}', 'whale', {entries} - 1, {now})"
    );
    // Hashed afterwards by migrate(), as history recorded before the chain is.
    db.insert_history_before_the_chain(&[&head, &history, &position])
        .await;
}

/// Generates, for each named test body `async fn name(db: TestDb)`, one #[tokio::test] per backend:
/// `postgres::name` and `sqlite::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(db) = $crate::common::TestDb::new($crate::common::Backend::Postgres).await {
                        super::$name(db).await;
                    }
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = $crate::common::TestDb::new($crate::common::Backend::Sqlite).await.expect("SQLite database");
                    super::$name(db).await;
                }
            )*
        }
    };
}

/// A WatchHistory stream read to its end by a task of its own: what it received, and how far it
/// has got.
pub struct Watching {
    /// The last sequence received so far (0: none yet).
    pub last_sequence: tokio::sync::watch::Receiver<i64>,
    /// Every sequence received, in the order received, once the stream has ended; the error
    /// that ended it, if one did.
    pub received: JoinHandle<(Vec<i64>, Option<tonic::Status>)>,
}

impl Watching {
    /// Watches `offering_id` from its first entry.
    pub async fn start(client: &mut Client, offering_id: &str) -> Self {
        let mut stream = client
            .watch_history(proto::WatchHistoryRequest {
                offering_id: offering_id.to_owned(),
                after_sequence: 0,
            })
            .await
            .expect("WatchHistory")
            .into_inner();
        let (progress, last_sequence) = tokio::sync::watch::channel(0);
        let received = tokio::spawn(async move {
            let mut received = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(entry)) => {
                        received.push(entry.sequence);
                        progress.send_replace(entry.sequence);
                    }
                    Ok(None) => return (received, None),
                    Err(status) => return (received, Some(status)),
                }
            }
        });
        Self {
            last_sequence,
            received,
        }
    }

    /// Waits until the stream has received `sequence`; panics after `wait`.
    pub async fn reach(&mut self, sequence: i64, wait: Duration) {
        let reached =
            tokio::time::timeout(wait, self.last_sequence.wait_for(|last| *last >= sequence))
                .await
                .map(|alive| alive.map(|_| ()));
        let last = *self.last_sequence.borrow();
        match reached {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let (_, error) = (&mut self.received).await.expect("watcher task");
                panic!("stream ended at {last}, expected {sequence}: {error:?}")
            }
            Err(_) => panic!("watcher at {last} after {wait:?}, expected {sequence}"),
        }
    }

    /// Waits for the stream's end; panics unless it received exactly 1..=last, in order, and
    /// ended cleanly (after OFFERING_FINALIZED).
    pub async fn assert_received_all(self, last: i64, wait: Duration) {
        let (received, error) = tokio::time::timeout(wait, self.received)
            .await
            .expect("the stream ends after OFFERING_FINALIZED")
            .expect("watcher task");
        assert!(error.is_none(), "stream failed: {error:?}");
        let expected: Vec<i64> = (1..=last).collect();
        assert_eq!(received, expected, "every entry once, in order");
    }
}

/// Closes and finalizes an offering (from any version), which ends its WatchHistory streams;
/// returns its last sequence.
pub async fn close_and_finalize(client: &mut Client, offering_id: &str) -> i64 {
    client
        .close_offering(proto::CloseOfferingRequest {
            offering_id: offering_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("CloseOffering");
    client
        .finalize_offering(proto::FinalizeOfferingRequest {
            offering_id: offering_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("FinalizeOffering")
        .into_inner()
        .version
}
