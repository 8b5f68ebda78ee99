//! Pins the SQL statements the PostgreSQL store sends, so that docs/scaling.md, which says what
//! each one becomes on Citus sharded by offering_id, cannot fall behind the code.
//!
//! A proxy between the server and PostgreSQL reads the frontend half of the wire protocol and
//! records the SQL of every simple query ('Q') and every statement prepared ('P'), split at its
//! top-level semicolons, comments dropped, whitespace collapsed. A workload takes every RPC down
//! every path of the store that sends a statement of its own. What was recorded must equal
//! tests/statements.txt, in two sections:
//! - `[serve]`: everything a server sends from its start on a migrated database (sqlx's migrator
//!   finding nothing to do, the backfill of the hash chain) through every RPC, the health probe
//!   and LISTEN, to its stop, and the NATS publisher's statements (against a nats-server of the
//!   test's own);
//! - `[migrate]`: what migrating a fresh database sends besides (the migration files' DDL and
//!   sqlx's bookkeeping in _sqlx_migrations).
//!
//! Every statement pinned must have a row in a table of docs/scaling.md with a column headed
//! `statement`, its exact text in that column as one code span (`|` written `\|`), and no such
//! row may name a statement that is no longer pinned.
//!
//! After a deliberate change: `SUBLEDGER_BLESS_STATEMENTS=1 cargo test --test statements`
//! rewrites the list; then give each new statement its row in docs/scaling.md.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, TestDb, TestServer, Watching, assert_status, cancel, offering, subscribe};
use subledger::proto::{self, Allocation};
use subledger::server::ServerConfig;
use subledger::store::PgSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;

/// The pinned list and the document, from the crate's root.
const LIST: &str = "tests/statements.txt";
const DOC: &str = "docs/scaling.md";
/// Set to 1 to rewrite LIST with what was recorded.
const BLESS: &str = "SUBLEDGER_BLESS_STATEMENTS";
/// The longest wait for anything the server does by itself (LISTEN, UNLISTEN, a stream's entry).
const WAIT: Duration = Duration::from_secs(30);

/// The startup packet's codes that the server answers with one byte, after which the real
/// startup message follows, untyped too (PostgreSQL protocol, "Message Formats").
const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_sends_the_pinned_statements() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let recorded = record(&db).await;
    if std::env::var(BLESS).as_deref() == Ok("1") {
        // Written whole, then renamed: the doc's test never reads half a list.
        let path = from_root(LIST);
        let partial = path.with_extension("txt.partial");
        std::fs::write(&partial, recorded.render()).expect("write the list");
        std::fs::rename(&partial, &path).expect("replace the list");
    } else {
        let pinned = Pinned::parse(&read(LIST));
        let differences = pinned.differences(&recorded);
        assert!(
            differences.is_empty(),
            "{LIST} is not what the PostgreSQL store sends.\n{differences}\n\
             If the change is deliberate: {BLESS}=1 cargo test --test statements, \
             then give each new statement its row in {DOC} and remove the rows of those gone."
        );
    }
    assert_doc_covers(&recorded);
}

/// Needs no database: the document against the list as pinned.
#[test]
fn the_scaling_doc_covers_every_pinned_statement() {
    assert_doc_covers(&Pinned::parse(&read(LIST)));
}

// ---------------------------------------------------------------------------------------------
// The workload

/// Migrates a fresh database through one proxy, then serves the workload through another; the
/// second's statements are `[serve]`, the first's that the second never sent are `[migrate]`.
async fn record(db: &TestDb) -> Pinned {
    let upstream = upstream(&db.url);
    let migrating = Proxy::start(upstream.clone()).await;
    let settings = PgSettings {
        max_connections: 1,
        ..Default::default()
    };
    drop(
        subledger::cli::open_postgres(&migrating.url(&db.url), settings)
            .await
            .expect("migrate a fresh database through the proxy"),
    );
    // History recorded before the hash chain, loaded around subledger: the server's start
    // hashes it (the backfill's statements).
    db.insert_unhashed_history(&[LOADED_HEAD, LOADED_ENTRY])
        .await;

    let serving = Proxy::start(upstream).await;
    let server = db
        .start_server_via(&serving.url(&db.url), ServerConfig::default())
        .await;
    workload(&server, &serving.recorder).await;
    publication(&server, &serving.url(&db.url)).await;
    server.stop().await;

    let serve = serving.recorder.statements();
    let migrate = migrating
        .recorder
        .statements()
        .difference(&serve)
        .cloned()
        .collect();
    Pinned { serve, migrate }
}

/// The NATS publisher's statements, from a publisher on a store of its own through the same
/// proxy: its first take of the lease (with --nats-publish-from now: the cursors start at the
/// heads), the backlog, a commit published and its cursor moved, a renewal, the release.
async fn publication(server: &TestServer, store_url: &str) {
    use subledger::publish::{Nats, NatsConfig, publisher};
    use subledger::store::StartAt;
    let nats = common::nats::NatsServer::start()
        .await
        .expect("nats-server, to record the publisher's statements");
    let store = subledger::cli::open_postgres(store_url, PgSettings::default())
        .await
        .expect("a store for the publisher");
    let config = NatsConfig {
        url: nats.url(),
        creds: None,
        token: None,
        stream: "SUBLEDGER".into(),
        duplicate_window: Duration::from_secs(600),
        start: StartAt::Heads,
    };
    let handle = Nats::connect(&config).await.expect("NATS");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let publishing = tokio::spawn(publisher::run(
        store,
        handle,
        StartAt::Heads,
        shutdown.clone(),
    ));
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // The stream is created once the lease is taken (and the cursors put at the heads).
    let stream = common::eventually("the lease taken", WAIT, || {
        let jetstream = jetstream.clone();
        async move {
            jetstream
                .get_stream("SUBLEDGER")
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let mut client = server.client().await;
    // The offerings of the workload start at their heads: only this one is published.
    client
        .create_offering(offering("published", 100, 0))
        .await
        .unwrap();
    common::eventually("the entry published", WAIT, || {
        let mut stream = stream.clone();
        async move {
            match stream.info().await {
                Ok(info) if info.state.messages == 1 => Ok(()),
                Ok(info) => Err(format!("{} messages", info.state.messages)),
                Err(error) => Err(error.to_string()),
            }
        }
    })
    .await;
    // One renewal of the lease (every 2 s).
    tokio::time::sleep(subledger::publish::lease::LEASE_RETRY + Duration::from_millis(500)).await;
    shutdown.cancel();
    publishing.await.unwrap();
}

/// An offering and its creation entry as loaded before the hash chain existed (no hashes).
const LOADED_HEAD: &str = "INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, \
     subscribed_units, investor_count, status, version, create_time, update_time) \
     VALUES ('loaded', 'loaded', 100, 0, 0, 0, 1, 1, now(), now())";
const LOADED_ENTRY: &str = "INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, \
     investor_units_after, offering_units_after, request_id, requested_units, expected_version, record_time, actor) \
     VALUES ('loaded', 1, 1, '', 0, 0, 0, 'create', 100, 0, now(), 'loader')";

/// Every RPC, and every path of the store that sends a statement of its own.
async fn workload(server: &TestServer, recorder: &Recorder) {
    let mut client = server.client().await;

    // CreateOffering: new; then a replay and a conflict, which read the existing offering
    // under its lock.
    client
        .create_offering(offering("fc", 100, 50))
        .await
        .unwrap();
    let replayed = client
        .create_offering(offering("fc", 100, 50))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.version, 1);
    assert_status(
        client.create_offering(offering("fc", 200, 50)).await,
        Code::AlreadyExists,
        "OFFERING_EXISTS",
    );

    // WatchHistory: the store LISTENs once a stream follows an offering.
    let mut watching = Watching::start(&mut client, "fc").await;
    watching.reach(1, WAIT).await;
    recorder
        .wait_for("LISTEN", |sql| sql.starts_with("LISTEN "))
        .await;

    // Subscribe and Cancel, then their replays: a batch holding a replay is redone with the
    // lookup of recorded request_ids. So is one a rule refused; it writes nothing.
    client
        .subscribe(subscribe("fc", "alice", 10, "s1"))
        .await
        .unwrap();
    client.cancel(cancel("fc", "alice", 3, "c1")).await.unwrap();
    let again = client
        .subscribe(subscribe("fc", "alice", 10, "s1"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    let again = client
        .cancel(cancel("fc", "alice", 3, "c1"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_status(
        client.subscribe(subscribe("fc", "alice", 60, "s2")).await,
        Code::FailedPrecondition,
        "INVESTOR_CAP_EXCEEDED",
    );
    client
        .amend_offering(proto::AmendOfferingRequest {
            offering_id: "fc".into(),
            request_id: "a1".into(),
            max_units: Some(120),
            ..Default::default()
        })
        .await
        .unwrap();
    watching.reach(4, WAIT).await;

    reads(&mut client).await;
    health_check(server.address).await;
    pro_rata_to_finalized(&mut client).await;

    // Closing and finalizing ends the stream; the store stops listening once nobody follows.
    client
        .close_offering(proto::CloseOfferingRequest {
            offering_id: "fc".into(),
            request_id: "fc-close".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .finalize_offering(proto::FinalizeOfferingRequest {
            offering_id: "fc".into(),
            request_id: "fc-finalize".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    watching.assert_received_all(6, WAIT).await;
    recorder
        .wait_for("UNLISTEN", |sql| sql.starts_with("UNLISTEN "))
        .await;
}

/// GetOffering, both pages of ListOfferings, GetPosition (held and never held), ListHistory
/// with and without its filters, GetDigest, VerifyOffering (with the digest; and the offering
/// the backfill hashed).
async fn reads(client: &mut common::Client) {
    let head = client
        .get_offering(proto::GetOfferingRequest {
            offering_id: "fc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.version, 4);
    let first = client
        .list_offerings(proto::ListOfferingsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    client
        .list_offerings(proto::ListOfferingsRequest {
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap();
    for investor in ["alice", "nobody"] {
        client
            .get_position(proto::GetPositionRequest {
                offering_id: "fc".into(),
                investor_id: investor.into(),
            })
            .await
            .unwrap();
    }
    for (investor, actor) in [("", ""), ("alice", ""), ("", "anonymous")] {
        let page = client
            .list_history(proto::ListHistoryRequest {
                offering_id: "fc".into(),
                investor_id: investor.into(),
                actor: actor.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!page.entries.is_empty());
    }
    let digest = client
        .get_digest(proto::GetDigestRequest {
            offering_id: "fc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // The proofs' one read each: GetInclusionProof's entry (ListHistory's statement) and tree.
    let size = digest.tree_size;
    client
        .get_inclusion_proof(proto::GetInclusionProofRequest {
            offering_id: "fc".into(),
            sequence: 1,
            tree_size: size,
        })
        .await
        .unwrap();
    client
        .get_consistency_proof(proto::GetConsistencyProofRequest {
            offering_id: "fc".into(),
            from_size: 1,
            to_size: size,
        })
        .await
        .unwrap();
    for (offering_id, digest) in [("fc", Some(digest)), ("loaded", None)] {
        let verdict = client
            .verify_offering(proto::VerifyOfferingRequest {
                offering_id: offering_id.into(),
                digest,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(verdict.ok, "{offering_id}: {:?}", verdict.problems);
    }
}

/// grpc.health.v1 answers from the store's periodic probe.
async fn health_check(address: SocketAddr) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");
}

/// A PRO_RATA offering from create to finalize: AllocateOffering reads every position.
async fn pro_rata_to_finalized(client: &mut common::Client) {
    client
        .create_offering(proto::CreateOfferingRequest {
            allocation: Allocation::ProRata.into(),
            ..offering("pr", 10, 0)
        })
        .await
        .unwrap();
    for (investor, request_id) in [("a", "p1"), ("b", "p2")] {
        client
            .subscribe(subscribe("pr", investor, 6, request_id))
            .await
            .unwrap();
    }
    client
        .close_offering(proto::CloseOfferingRequest {
            offering_id: "pr".into(),
            request_id: "pr-close".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .allocate_offering(proto::AllocateOfferingRequest {
            offering_id: "pr".into(),
            request_id: "pr-allocate".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let finalized = client
        .finalize_offering(proto::FinalizeOfferingRequest {
            offering_id: "pr".into(),
            request_id: "pr-finalize".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finalized.subscribed_units, 10);
}

// ---------------------------------------------------------------------------------------------
// Recording

/// The statements seen so far, in a watch channel so that a test can wait for one.
#[derive(Clone)]
struct Recorder(Arc<watch::Sender<BTreeSet<String>>>);

impl Recorder {
    fn new() -> Self {
        Self(Arc::new(watch::Sender::new(BTreeSet::new())))
    }

    fn record(&self, sql: &str) {
        let statements = statements(sql);
        self.0.send_if_modified(|seen| {
            let mut added = false;
            for statement in statements {
                added |= seen.insert(statement);
            }
            added
        });
    }

    fn statements(&self) -> BTreeSet<String> {
        self.0.borrow().clone()
    }

    /// Waits until a statement `matches`; panics after WAIT naming `what`.
    async fn wait_for(&self, what: &str, matches: impl Fn(&str) -> bool) {
        let mut seen = self.0.subscribe();
        let found = seen.wait_for(|seen| seen.iter().any(|sql| matches(sql)));
        if tokio::time::timeout(WAIT, found).await.is_err() {
            panic!("the server sent no {what} statement within {WAIT:?}");
        }
    }
}

/// A TCP proxy to PostgreSQL that forwards every byte unchanged both ways and records the SQL
/// the clients send.
struct Proxy {
    address: SocketAddr,
    recorder: Recorder,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral port of 127.0.0.1; `upstream` is PostgreSQL's `host:port`.
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let recorder = Recorder::new();
        let accepting = tokio::spawn({
            let recorder = recorder.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    // A relay ends with either side's connection; how is of no interest.
                    tokio::spawn(relay(client, upstream.clone(), recorder.clone()));
                }
            }
        });
        Self {
            address,
            recorder,
            accepting,
        }
    }

    /// `url` (a single-host postgres:// URL) through the proxy, without TLS, which would hide
    /// the statements.
    fn url(&self, url: &str) -> String {
        let (before, _, after) = split_host(url);
        let separator = if after.contains('?') { '&' } else { '?' };
        format!("{before}{}{after}{separator}sslmode=disable", self.address)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// PostgreSQL's `host:port` in a single-host postgres:// URL (port 5432 if it names none).
fn upstream(url: &str) -> String {
    let (_, host, _) = split_host(url);
    let bracketed = host.starts_with('[');
    let has_port = if bracketed {
        host.contains("]:")
    } else {
        host.contains(':')
    };
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// The URL before its host, the host (with its port), and what follows.
fn split_host(url: &str) -> (&str, &str, &str) {
    let scheme_end = url.find("://").expect("a postgres:// URL") + 3;
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |end| scheme_end + end);
    let host_start = url[scheme_end..authority_end]
        .rfind('@')
        .map_or(scheme_end, |at| scheme_end + at + 1);
    let host = &url[host_start..authority_end];
    assert!(
        !host.is_empty() && !host.contains(','),
        "the proxy needs one TCP host in SUBLEDGER_TEST_POSTGRES_URL, not {host:?}"
    );
    (&url[..host_start], host, &url[authority_end..])
}

/// Copies the server's bytes to the client, and the client's to the server, recording the SQL
/// of each message before forwarding it.
async fn relay(client: TcpStream, upstream: String, recorder: Recorder) -> std::io::Result<()> {
    let server = TcpStream::connect(&upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answers = tokio::spawn(async move {
        tokio::io::copy(&mut from_server, &mut to_client).await?;
        to_client.shutdown().await
    });
    let mut frontend = Frontend::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = from_client.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        for sql in frontend.feed(&buffer[..read]) {
            recorder.record(&sql);
        }
        to_server.write_all(&buffer[..read]).await?;
    }
    to_server.shutdown().await?;
    answers.await?
}

/// The client-to-server half of the PostgreSQL protocol, as far as SQL goes: first one or two
/// untyped messages (an SSLRequest or GSSENCRequest, answered by one byte, then the startup
/// message), each an Int32 length counting itself and a body; then typed messages, a Byte1
/// type before the length.
#[derive(Default)]
struct Frontend {
    pending: Vec<u8>,
    typed: bool,
}

impl Frontend {
    /// Takes in bytes on their way to the server; returns the SQL of the messages they
    /// complete: a simple query's ('Q': the text) and a Parse's ('P': name, then the text).
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut texts = Vec::new();
        loop {
            let length_at = usize::from(self.typed);
            let Some(length) = self.pending.get(length_at..length_at + 4) else {
                break;
            };
            let length = u32::from_be_bytes(length.try_into().unwrap()) as usize;
            assert!(length >= 4, "malformed frontend message length {length}");
            let end = length_at + length;
            if self.pending.len() < end {
                break;
            }
            let message: Vec<u8> = self.pending.drain(..end).collect();
            if !self.typed {
                let code = message
                    .get(4..8)
                    .map(|code| u32::from_be_bytes(code.try_into().unwrap()));
                self.typed = !matches!(code, Some(SSL_REQUEST | GSSENC_REQUEST));
                continue;
            }
            let body = &message[5..];
            match message[0] {
                b'Q' => texts.push(c_string(body).0),
                b'P' => {
                    let (_name, rest) = c_string(body);
                    texts.push(c_string(rest).0);
                }
                _ => {}
            }
        }
        texts
    }
}

/// A NUL-terminated string, and what follows it.
fn c_string(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    (text, bytes.get(end + 1..).unwrap_or_default())
}

/// The statements of one message's SQL: split at the semicolons outside quotes, dollar quotes
/// and comments; comments dropped; whitespace collapsed (everywhere, literals included); the
/// empty ones dropped.
fn statements(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut at = 0;
    while at < chars.len() {
        let rest = &chars[at..];
        // How far the next token reaches, and whether it is kept (a comment is not).
        let (length, kept) = match rest {
            ['-', '-', ..] => (find(rest, &['\n']).map_or(rest.len(), |end| end + 1), false),
            ['/', '*', ..] => (block_comment_length(rest), false),
            ['\'', ..] | ['"', ..] => (quoted_length(rest, &rest[..1]), true),
            ['$', ..] if !current.ends_with(|c: char| c.is_alphanumeric() || c == '_') => {
                let tag = dollar_tag_length(rest);
                (tag.map_or(1, |tag| quoted_length(rest, &rest[..tag])), true)
            }
            [';', ..] => {
                statements.push(std::mem::take(&mut current));
                at += 1;
                continue;
            }
            _ => (1, true),
        };
        if kept {
            current.extend(&rest[..length]);
        } else {
            current.push(' ');
        }
        at += length;
    }
    statements.push(current);
    statements
        .iter()
        .map(|statement| statement.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|statement| !statement.is_empty())
        .collect()
}

/// Where `pattern` starts in `chars`.
fn find(chars: &[char], pattern: &[char]) -> Option<usize> {
    chars.windows(pattern.len()).position(|w| w == pattern)
}

/// A quoted run opened by `quote` at the start of `chars`, through its closing quote (to the
/// end if unclosed). A doubled quote inside is read as a close and a new open: the same text.
fn quoted_length(chars: &[char], quote: &[char]) -> usize {
    let open = quote.len();
    find(&chars[open..], quote).map_or(chars.len(), |end| open + end + quote.len())
}

/// `/* ... */`, nested as PostgreSQL nests them.
fn block_comment_length(chars: &[char]) -> usize {
    let (mut depth, mut at) = (0, 0);
    while at < chars.len() {
        match &chars[at..] {
            ['/', '*', ..] => (depth, at) = (depth + 1, at + 2),
            ['*', '/', ..] => {
                (depth, at) = (depth - 1, at + 2);
                if depth == 0 {
                    return at;
                }
            }
            _ => at += 1,
        }
    }
    at
}

/// The length of a dollar quote's tag (`$$`, `$body$`) at the start of `chars`; None for a
/// parameter (`$1`) or a lone `$`.
fn dollar_tag_length(chars: &[char]) -> Option<usize> {
    let name = chars[1..]
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_')
        .count();
    let starts_well = name == 0 || !chars[1].is_ascii_digit();
    (starts_well && chars.get(1 + name) == Some(&'$')).then_some(name + 2)
}

// ---------------------------------------------------------------------------------------------
// The list and the document

#[derive(Debug, Default)]
struct Pinned {
    serve: BTreeSet<String>,
    migrate: BTreeSet<String>,
}

const LIST_HEADER: &str = "\
# Every SQL statement subledger's PostgreSQL store sends, one a line, sorted, as tests/statements.rs
# records them between a server and PostgreSQL (comments dropped, whitespace collapsed).
# docs/scaling.md has a row for each: what it becomes on Citus.
# Written by SUBLEDGER_BLESS_STATEMENTS=1 cargo test --test statements; not edited by hand.
#
# [serve]: what a server sends from its start on a migrated database to its stop.
# [migrate]: what migrating a fresh database sends besides.
";

impl Pinned {
    fn parse(text: &str) -> Self {
        let mut pinned = Self::default();
        let mut section = None;
        for (number, line) in text.lines().enumerate() {
            match line {
                "" => {}
                _ if line.starts_with('#') => {}
                "[serve]" => section = Some(&mut pinned.serve),
                "[migrate]" => section = Some(&mut pinned.migrate),
                statement => {
                    let Some(section) = section.as_mut() else {
                        panic!("{LIST}:{}: a statement before [serve]", number + 1);
                    };
                    section.insert(statement.to_owned());
                }
            }
        }
        pinned
    }

    fn render(&self) -> String {
        let mut text = LIST_HEADER.to_owned();
        for (name, statements) in self.sections() {
            text += &format!("\n[{name}]\n");
            for statement in statements {
                text += statement;
                text.push('\n');
            }
        }
        text
    }

    fn sections(&self) -> [(&'static str, &BTreeSet<String>); 2] {
        [("serve", &self.serve), ("migrate", &self.migrate)]
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.serve.iter().chain(&self.migrate)
    }

    /// What `recorded` adds (+) and lacks (-), by section; empty when they are equal.
    fn differences(&self, recorded: &Pinned) -> String {
        let mut text = String::new();
        for ((name, pinned), (_, sent)) in self.sections().into_iter().zip(recorded.sections()) {
            for statement in sent.difference(pinned) {
                text += &format!("[{name}] + sent, not pinned: {statement}\n");
            }
            for statement in pinned.difference(sent) {
                text += &format!("[{name}] - pinned, no longer sent: {statement}\n");
            }
        }
        text
    }
}

/// Panics unless docs/scaling.md's statement tables name exactly the statements of `pinned`,
/// each once.
fn assert_doc_covers(pinned: &Pinned) {
    let named = doc_statements(&read(DOC));
    let mut problems = String::new();
    let mut seen = BTreeSet::new();
    for statement in &named {
        if !seen.insert(statement.as_str()) {
            problems += &format!("  has two rows: {statement}\n");
        }
    }
    for statement in pinned.all() {
        if !seen.contains(statement.as_str()) {
            problems += &format!("  has no row: {statement}\n");
        }
    }
    let all: BTreeSet<&str> = pinned.all().map(String::as_str).collect();
    for statement in seen.difference(&all) {
        problems += &format!("  names what is not in {LIST}: {statement}\n");
    }
    assert!(
        problems.is_empty(),
        "{DOC} does not match {LIST}. Each pinned statement needs one row in a table with a \
         column headed `statement`, its exact text there in one code span, `|` written `\\|`:\n\
         {problems}"
    );
}

/// The cells of the column headed `statement` of every table that has one, each read as one
/// code span.
fn doc_statements(doc: &str) -> Vec<String> {
    let mut named = Vec::new();
    // Inside a table: the index of its `statement` column, if it has one.
    let mut table: Option<Option<usize>> = None;
    for (number, line) in doc.lines().enumerate() {
        let Some(row) = line.trim().strip_prefix('|') else {
            table = None;
            continue;
        };
        let cells = cells(row);
        let Some(column) = table else {
            table = Some(
                cells
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case("statement")),
            );
            continue;
        };
        let Some(column) = column else { continue };
        let cell = cells.get(column).copied().unwrap_or_default();
        if !cell.is_empty() && cell.chars().all(|c| matches!(c, '-' | ':')) {
            continue;
        }
        let statement = cell
            .strip_prefix('`')
            .and_then(|cell| cell.strip_suffix('`'))
            .filter(|statement| !statement.contains('`'))
            .unwrap_or_else(|| {
                panic!(
                    "{DOC}:{}: the statement cell is not one code span",
                    number + 1
                )
            });
        named.push(statement.replace("\\|", "|"));
    }
    named
}

/// A table row's cells (after its leading `|`), trimmed: split at every `|` not written `\|`.
fn cells(row: &str) -> Vec<&str> {
    let (mut cells, mut start, mut escaped) = (Vec::new(), 0, false);
    for (at, c) in row.char_indices() {
        match c {
            '|' if !escaped => {
                cells.push(row[start..at].trim());
                start = at + 1;
            }
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    cells.push(row[start..].trim());
    cells
}

fn from_root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(from_root(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn statements_split_outside_quotes_and_comments() {
    let sql = "BEGIN; SET LOCAL x = 'a;b' -- c;d\n;\n CREATE FUNCTION f() AS $$ BEGIN; END; $$;\
               /* e; /* f; */ g; */ SELECT $1, \"h;i\"";
    assert_eq!(
        statements(sql),
        [
            "BEGIN",
            "SET LOCAL x = 'a;b'",
            "CREATE FUNCTION f() AS $$ BEGIN; END; $$",
            "SELECT $1, \"h;i\"",
        ]
    );
}

#[test]
fn the_frontend_parser_reads_startup_then_typed_messages() {
    let mut bytes = Vec::new();
    bytes.extend(8u32.to_be_bytes());
    bytes.extend(SSL_REQUEST.to_be_bytes());
    bytes.extend(9u32.to_be_bytes());
    bytes.extend(196608u32.to_be_bytes());
    bytes.push(0);
    let query = b"SELECT 1\0";
    bytes.push(b'Q');
    bytes.extend((4 + query.len() as u32).to_be_bytes());
    bytes.extend(query);
    let parse = b"s1\0SELECT $1\0\0\0";
    bytes.push(b'P');
    bytes.extend((4 + parse.len() as u32).to_be_bytes());
    bytes.extend(parse);
    // Fed a byte at a time, as TCP may deliver it.
    let mut frontend = Frontend::default();
    let texts: Vec<String> = bytes.iter().flat_map(|b| frontend.feed(&[*b])).collect();
    assert_eq!(texts, ["SELECT 1", "SELECT $1"]);
}
