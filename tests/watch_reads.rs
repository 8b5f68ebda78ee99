//! WatchHistory's database reads do not grow with its streams: none while nothing commits, and
//! per commit as many with 200 streams as with 10 (one shared read per watched offering). Counted
//! by the server's own /metrics; one test function for both backends, because the recorder is one
//! per process.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::metrics::{scrape, start_server_with_metrics_and};
use common::{Backend, Client, TestDb, Watching, offering, subscribe};
use prometheus_parse::Value;
use subledger::server::ServerConfig;

const OFFERINGS: usize = 3;
/// OFFERINGS and the primer's (see `reads_stay_flat_as_watchers_grow`).
const WATCHED_OFFERINGS: usize = OFFERINGS + 1;
const STREAMS_PER_CONNECTION: usize = 50;
const ENTRY_WAIT: Duration = Duration::from_secs(10);
/// Long enough for several of SQLite's 1 s polls of another process's commits.
const IDLE: Duration = Duration::from_secs(2);
const COMMITS: usize = 30;

/// The sum of a counter's samples whatever their labels; 0 before its first increment.
async fn counter_total(metrics: SocketAddr, metric: &str) -> f64 {
    counter_sum(metrics, metric, None).await
}

/// The sum of a counter's samples, of those whose `label` has its value if one is given.
async fn counter_sum(metrics: SocketAddr, metric: &str, label: Option<(&str, &str)>) -> f64 {
    scrape(metrics)
        .await
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| label.is_none_or(|(name, value)| s.labels.get(name) == Some(value)))
        .map(|s| match s.value {
            Value::Counter(n) => n,
            ref other => panic!("{metric} is not a counter: {other:?}"),
        })
        .sum()
}

struct Watched {
    metrics: SocketAddr,
    offering_ids: Vec<String>,
    writer: Client,
    clients: Vec<Client>,
    watchers: Vec<Watching>,
    /// The last sequence of each offering.
    versions: Vec<i64>,
    commits: usize,
}

impl Watched {
    async fn add_watchers(&mut self, server: &common::TestServer, total: usize) {
        while self.watchers.len() < total {
            let n = self.watchers.len();
            if n / STREAMS_PER_CONNECTION >= self.clients.len() {
                self.clients.push(server.client().await);
            }
            let offering = n % OFFERINGS;
            let client = &mut self.clients[n / STREAMS_PER_CONNECTION];
            let mut watching = Watching::start(client, &self.offering_ids[offering]).await;
            watching.reach(self.versions[offering], ENTRY_WAIT).await;
            self.watchers.push(watching);
        }
    }

    /// Commits one entry at a time, then waits until every stream has all of them.
    async fn commit(&mut self, commits: usize) {
        for _ in 0..commits {
            let offering = self.commits % OFFERINGS;
            let request_id = format!("s{}", self.commits);
            self.writer
                .subscribe(subscribe(
                    &self.offering_ids[offering],
                    "alice",
                    1,
                    &request_id,
                ))
                .await
                .unwrap();
            self.versions[offering] += 1;
            self.commits += 1;
        }
        for (n, watching) in self.watchers.iter_mut().enumerate() {
            watching
                .reach(self.versions[n % OFFERINGS], ENTRY_WAIT)
                .await;
        }
    }

    async fn reads(&self) -> f64 {
        counter_total(self.metrics, "subledger_watch_reads_total").await
    }

    async fn polls(&self) -> f64 {
        counter_total(self.metrics, "subledger_watch_polls_total").await
    }

    /// Reads while nothing commits for IDLE: none of the history; SQLite's polls, one per
    /// offering per second, whatever the number of streams.
    async fn assert_idle_reads_nothing(&self, backend: Backend) {
        let (reads, polls) = (self.reads().await, self.polls().await);
        tokio::time::sleep(IDLE).await;
        let streams = self.watchers.len();
        assert_eq!(
            self.reads().await - reads,
            0.0,
            "{backend:?}: history reads while idle with {streams} streams"
        );
        let polled = self.polls().await - polls;
        match backend {
            Backend::Postgres => assert_eq!(polled, 0.0, "PostgreSQL announces every commit"),
            Backend::Sqlite => assert!(
                polled <= (WATCHED_OFFERINGS * (IDLE.as_secs() as usize + 1)) as f64,
                "{polled} polls with {streams} streams: one per watched offering per second"
            ),
        }
    }

    /// History reads per commit, over COMMITS commits.
    async fn reads_per_commit(&mut self) -> f64 {
        let reads = self.reads().await;
        self.commit(COMMITS).await;
        (self.reads().await - reads) / COMMITS as f64
    }
}

async fn reads_stay_flat_as_watchers_grow(backend: Backend) {
    let db = TestDb::new(backend)
        .await
        .unwrap_or_else(|| panic!("{backend:?} database"));
    // Every watcher calls from this one process: one anonymous peer, with room for them all.
    let mut config = ServerConfig::default();
    config.service.max_watch_streams_per_principal = config.service.max_watch_streams;
    let (server, metrics) = start_server_with_metrics_and(&db, config).await;
    let mut writer = server.client().await;
    let offering_ids: Vec<String> = (0..OFFERINGS).map(|n| format!("deal-{n}")).collect();
    for id in &offering_ids {
        writer
            .create_offering(offering(id, 1_000_000, 0))
            .await
            .unwrap();
    }
    // PostgreSQL's change listener starts with the first stream, and once LISTEN is in place
    // every watched offering's reader reads once (what committed before it listened was never
    // announced). One stream on an offering of its own, open throughout, starts it here, so that
    // this read is over before any idle window below.
    let shared_reads = || {
        counter_sum(
            metrics,
            "subledger_watch_reads_total",
            Some(("reader", "shared")),
        )
    };
    // The counter is the process's: the SQLite half's reads are in it already.
    let shared_before = shared_reads().await;
    let mut primer_client = server.client().await;
    writer
        .create_offering(offering("primer", 1_000_000, 0))
        .await
        .unwrap();
    let mut primer = Watching::start(&mut primer_client, "primer").await;
    primer.reach(1, ENTRY_WAIT).await;
    if backend == Backend::Postgres {
        common::eventually("the listener's first re-read", ENTRY_WAIT, || async {
            let shared = shared_reads().await - shared_before;
            if shared >= 1.0 { Ok(()) } else { Err(shared) }
        })
        .await;
    }
    let mut bench = Watched {
        metrics,
        offering_ids,
        writer,
        clients: Vec::new(),
        watchers: Vec::new(),
        versions: vec![1; OFFERINGS],
        commits: 0,
    };

    bench.add_watchers(&server, 10).await;
    bench.assert_idle_reads_nothing(backend).await;
    let with_10 = bench.reads_per_commit().await;
    bench.add_watchers(&server, 200).await;
    bench.assert_idle_reads_nothing(backend).await;
    let with_200 = bench.reads_per_commit().await;
    eprintln!(
        "{backend:?}: history reads per commit: {with_10} with 10 streams, {with_200} with 200"
    );
    // One shared read per commit (a read may cover several commits; a stream that fell behind
    // would add its own, which none should here).
    assert!(
        with_10 <= 1.0,
        "{backend:?}: {with_10} reads per commit with 10 streams"
    );
    assert!(
        with_200 <= 1.0,
        "{backend:?}: {with_200} reads per commit with 200 streams"
    );
    drop(primer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_reads_stay_flat_on_both_backends() {
    reads_stay_flat_as_watchers_grow(Backend::Sqlite).await;
    if std::env::var("SUBLEDGER_TEST_SKIP_POSTGRES").as_deref() != Ok("1") {
        reads_stay_flat_as_watchers_grow(Backend::Postgres).await;
    }
}
