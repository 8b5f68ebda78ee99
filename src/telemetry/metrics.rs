//! Prometheus metrics: their names in one place, the recorder, and the `/metrics` endpoint.
//!
//! The code records through the `metrics` facade at the few places where something happens (a
//! call ends, a transaction commits, a queue or a watch stream changes size). Without
//! `--metrics-listen` no recorder is installed and each of those is a no-op. Values that are
//! states rather than events (database connections, process resources) are read when
//! /metrics is scraped.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const RPC_REQUESTS: &str = "subledger_rpc_requests_total";
pub const RPC_DURATION: &str = "subledger_rpc_duration_seconds";
pub const COMMIT_REQUESTS: &str = "subledger_commit_requests";
pub const COMMIT_OFFERINGS: &str = "subledger_commit_offerings";
pub const COMMIT_DURATION: &str = "subledger_commit_duration_seconds";
pub const QUEUED_REQUESTS: &str = "subledger_queued_requests";
pub const TRANSACTIONS_IN_FLIGHT: &str = "subledger_transactions_in_flight";
pub const DB_CONNECTIONS: &str = "subledger_db_connections";
pub const DB_WRITABLE: &str = "subledger_db_writable";
pub const DB_PRIMARY_CHANGES: &str = "subledger_db_primary_changes_total";
pub const DB_HOSTS: &str = "subledger_db_hosts";
pub const WATCH_STREAMS: &str = "subledger_watch_streams";
pub const WATCH_READS: &str = "subledger_watch_reads_total";
pub const WATCH_POLLS: &str = "subledger_watch_polls_total";
pub const BUILD_INFO: &str = "subledger_build_info";
pub const PUBLISH_LAG: &str = "subledger_publish_lag_seconds";
pub const PUBLISHED_ENTRIES: &str = "subledger_published_entries_total";
pub const PUBLISH_ERRORS: &str = "subledger_publish_errors_total";
pub const PUBLISH_BACKLOG: &str = "subledger_publish_backlog_entries";

/// Latency buckets in seconds: a commit takes about a millisecond, a call under load tens of
/// milliseconds, and a lock_timeout 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Requests per transaction: up to group commit's BATCH_REQUESTS_MAX (256).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Histograms are drained into their buckets at least this often, so that recorded samples
/// never pile up between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder (once: a second call returns the first's handle) and
/// describes every metric.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMMIT_REQUESTS.into()), BATCH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMMIT_OFFERINGS.into()), BATCH_BUCKETS)
                })
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RPC_REQUESTS,
        "Calls answered, by RPC and gRPC status code (refusals by the auth and edge layers included)."
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "Time from a call's arrival at its handler to its answer."
    );
    describe_histogram!(
        COMMIT_REQUESTS,
        "Requests carried by one transaction of the group committer."
    );
    describe_histogram!(
        COMMIT_OFFERINGS,
        "Offerings carried by one transaction of the group committer."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time of one group-commit transaction, lock waits and the commit included."
    );
    describe_gauge!(
        QUEUED_REQUESTS,
        "Mutations waiting for a transaction on this process."
    );
    describe_gauge!(
        TRANSACTIONS_IN_FLIGHT,
        "Group-commit transactions running on this process."
    );
    describe_gauge!(
        DB_CONNECTIONS,
        "Database pool connections, by state (idle, in_use) and the pool's maximum (max)."
    );
    describe_gauge!(
        DB_WRITABLE,
        "PostgreSQL: 1 while a host takes this process's writes, 0 while writes wait for one (a failover, a partition)."
    );
    describe_counter!(
        DB_PRIMARY_CHANGES,
        "PostgreSQL: times this process moved its writes to another host of a multi-host URL."
    );
    describe_gauge!(
        DB_HOSTS,
        "PostgreSQL: each host of the URL, 1 for the role it had when last probed (primary, standby, unreachable, unknown) and 0 for the others."
    );
    describe_gauge!(WATCH_STREAMS, "WatchHistory streams open on this process.");
    describe_counter!(
        WATCH_READS,
        "History pages read for WatchHistory, by reader: shared (one per watched offering, after a commit) or stream (one stream's backlog, or its catch-up after falling behind)."
    );
    describe_counter!(
        WATCH_POLLS,
        "Head reads of watched offerings looking for commits by another process on the same SQLite file (one per watched offering per second)."
    );
    describe_gauge!(
        PUBLISH_LAG,
        Unit::Seconds,
        "NATS publication: age of the oldest entry not yet acknowledged by JetStream, as of the publisher's last look (0 on replicas that do not hold the publication lease)."
    );
    describe_counter!(
        PUBLISHED_ENTRIES,
        "NATS publication: entries JetStream acknowledged, published by this process."
    );
    describe_counter!(
        PUBLISH_ERRORS,
        "NATS publication: failed attempts (NATS or the database unreachable, an ack missing); each is retried."
    );
    describe_gauge!(
        PUBLISH_BACKLOG,
        "NATS publication: entries committed and not yet acknowledged by JetStream, as of the publisher's last look (0 on replicas that do not hold the publication lease)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which subledger runs."
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Every gauge exists from the start, at 0: a dashboard shows 0 rather than "no data", and
    // an absent() alert fires only when the process is gone. (The database gauges are set at
    // each scrape.)
    for gauge in [WATCH_STREAMS, QUEUED_REQUESTS, TRANSACTIONS_IN_FLIGHT] {
        metrics::gauge!(gauge).set(0.0);
    }
}

/// One RPC's metric handles, registered once (when the service is built, after the recorder
/// is installed): a call's end is then an atomic add and a histogram sample, with no lookup of
/// the metric by name and labels.
#[derive(Clone)]
pub struct RpcMetrics(std::sync::Arc<RpcHandles>);

struct RpcHandles {
    method: &'static str,
    /// By gRPC code (0..=16), registered at the code's first use so that /metrics lists only
    /// the codes an RPC has answered.
    requests: [std::sync::OnceLock<metrics::Counter>; 17],
    duration: metrics::Histogram,
}

impl RpcMetrics {
    pub fn new(method: &'static str) -> Self {
        Self(std::sync::Arc::new(RpcHandles {
            method,
            requests: Default::default(),
            duration: metrics::histogram!(RPC_DURATION, "method" => method),
        }))
    }

    /// Records the end of one call that reached its handler.
    pub fn record(&self, code: tonic::Code, elapsed: Duration) {
        let handles = &self.0;
        let counter = handles.requests[(code as usize).min(16)].get_or_init(|| {
            metrics::counter!(RPC_REQUESTS, "method" => handles.method, "code" => code_name(code))
        });
        counter.increment(1);
        handles.duration.record(elapsed.as_secs_f64());
    }
}

/// The group committer's metric handles, registered once.
pub struct CommitMetrics {
    pub requests: metrics::Histogram,
    pub offerings: metrics::Histogram,
    pub duration: metrics::Histogram,
    pub in_flight: metrics::Gauge,
    pub queued: metrics::Gauge,
}

impl CommitMetrics {
    pub fn new() -> Self {
        Self {
            requests: metrics::histogram!(COMMIT_REQUESTS),
            offerings: metrics::histogram!(COMMIT_OFFERINGS),
            duration: metrics::histogram!(COMMIT_DURATION),
            in_flight: metrics::gauge!(TRANSACTIONS_IN_FLIGHT),
            queued: metrics::gauge!(QUEUED_REQUESTS),
        }
    }
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The NATS publisher's metric handles, registered once. The lag is the age of the oldest
/// unpublished entry the publisher last saw, and grows with the clock until it looks again
/// ([`PublishMetrics::tick`]): while NATS is down a round of publishing takes seconds.
pub struct PublishMetrics {
    pub published: metrics::Counter,
    pub errors: metrics::Counter,
    lag: metrics::Gauge,
    backlog: metrics::Gauge,
    oldest_unpublished: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl PublishMetrics {
    pub fn new() -> Self {
        Self {
            published: metrics::counter!(PUBLISHED_ENTRIES),
            errors: metrics::counter!(PUBLISH_ERRORS),
            lag: metrics::gauge!(PUBLISH_LAG),
            backlog: metrics::gauge!(PUBLISH_BACKLOG),
            oldest_unpublished: std::sync::Mutex::new(None),
        }
    }

    /// Sets the lag and the backlog from a read of every offering behind its cursor: the
    /// entries not yet published, and the record time of the oldest of them.
    pub fn backlog(&self, entries: u64, oldest: Option<chrono::DateTime<chrono::Utc>>) {
        *self
            .oldest_unpublished
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = oldest;
        self.backlog.set(entries as f64);
        self.tick();
    }

    /// Sets the lag to the age, now, of the oldest unpublished entry last seen.
    pub fn tick(&self) {
        let oldest = *self
            .oldest_unpublished
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let lag = oldest.map_or(0.0, |oldest| {
            (chrono::Utc::now() - oldest)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        });
        self.lag.set(lag);
    }

    /// This process does not publish (another holds the lease, or it stopped).
    pub fn not_publishing(&self) {
        *self
            .oldest_unpublished
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.lag.set(0.0);
        self.backlog.set(0.0);
    }
}

impl Default for PublishMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Records a call refused before any handler ran (auth, size limits, a body that does not
/// decode). `method` is one of a fixed set of names (api::auth::method_name), so that the
/// series stay as few as the server's methods whatever paths callers send.
pub fn record_refusal(method: &'static str, code: tonic::Code) {
    metrics::counter!(RPC_REQUESTS, "method" => method, "code" => code_name(code)).increment(1);
}

/// The code's name as gRPC spells it (OK, INVALID_ARGUMENT, ...): what dashboards filter on.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Connections of a database pool at one moment.
#[derive(Clone, Debug)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
    /// PostgreSQL: the host that takes writes, as this process follows it.
    pub primary: Option<PrimaryStats>,
}

/// The primary as a PostgreSQL store follows it (see store::postgres::primary).
#[derive(Clone, Debug)]
pub struct PrimaryStats {
    pub writable: bool,
    pub changes: u64,
    /// Each host (`host:port`) and its role as last seen: primary, standby, unreachable or
    /// unknown.
    pub hosts: Vec<(String, &'static str)>,
}

/// Every role a host can be shown in, so that a host's old role reads 0 once it changed.
const HOST_ROLES: [&str; 4] = ["primary", "standby", "unreachable", "unknown"];

/// Serves `GET /metrics` on `listener` until `shutdown`; `sample` sets the gauges that are read
/// at scrape time (the pool's connections) just before each render.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    sample: impl Fn() -> PoolStats + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    let process = metrics_process::Collector::default();
    process.describe();
    let render = std::sync::Arc::new(move || {
        let pool = sample();
        metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(pool.idle);
        metrics::gauge!(DB_CONNECTIONS, "state" => "in_use")
            .set(pool.size.saturating_sub(pool.idle));
        metrics::gauge!(DB_CONNECTIONS, "state" => "max").set(pool.max);
        if let Some(primary) = &pool.primary {
            metrics::gauge!(DB_WRITABLE).set(if primary.writable { 1.0 } else { 0.0 });
            metrics::counter!(DB_PRIMARY_CHANGES).absolute(primary.changes);
            for (host, role) in &primary.hosts {
                for shown in HOST_ROLES {
                    let value = if shown == *role { 1.0 } else { 0.0 };
                    metrics::gauge!(DB_HOSTS, "host" => host.clone(), "role" => shown).set(value);
                }
            }
        }
        process.collect();
        handle.render()
    });
    let upkeep_handle = install().ok();
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = upkeep.tick() => {
                if let Some(handle) = &upkeep_handle {
                    handle.run_upkeep();
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener cannot accept; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let render = render.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&request, &*render)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "metrics connection failed");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}

fn respond<B>(request: &Request<B>, render: &dyn Fn() -> String) -> Response<Full<Bytes>> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (StatusCode::OK, render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
    }
    response
}
