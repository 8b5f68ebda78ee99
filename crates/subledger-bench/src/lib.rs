//! `subledger bench`: a gRPC load generator that calls the server through subledger-client, as
//! a user's service would (its retries and request_ids included).
//!
//! It creates its own offerings, drives calls from `--concurrency` tasks round-robin over the
//! `--target` replicas for a duration or a number of calls, and reports calls/s, latency
//! percentiles and counts per status code. Then it verifies every offering it used: a benchmark
//! that breaks the ledger is a bug, not a result, and makes the command fail.
//!
//! The `subledger bench` subcommand parses [`BenchArgs`] and calls [`run`].

mod report;
pub mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use report::{Tally, new_histogram};
use serde::Serialize;
use subledger_client::{Ledger, proto};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// HTTP/2 connections per target: one connection serializes its frames on one socket.
const CONNECTIONS_PER_TARGET: usize = 4;
/// Offerings created concurrently while setting up `spread`.
const SETUP_PARALLELISM: usize = 32;
/// Latencies are recorded in microseconds up to this (a call slower than a minute is an outage).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Per-investor positions are spread over this many investors per offering.
const INVESTORS: u64 = 100_000;
/// The server's largest unit count (10^15, `ledger::limits::UNITS_MAX`, which a test in the
/// server holds this to): the cap nobody reaches.
pub const SERVER_UNITS_MAX: i64 = 1_000_000_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Every call subscribes to one offering with a cap nobody reaches.
    Hot,
    /// Subscribes spread uniformly over --offerings offerings.
    Spread,
    /// 50% Subscribe, 10% Cancel, 30% GetOffering, 10% ListHistory, over --offerings offerings.
    Mixed,
    /// One offering whose cap (--sellout-units) is far below demand: 1-unit subscribes until
    /// it is sold out exactly, then the refusals.
    Sellout,
    /// Spread, while --watchers WatchHistory streams follow the offerings; then the offerings
    /// are finalized, which ends the streams, and each must have received every entry in order.
    Watch,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Server address; several (repeated, or separated by commas) spread calls round-robin over
    /// replicas.
    #[arg(
        long = "target",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    targets: Vec<String>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to send calls: 10s, 2m, 500ms; a bare number is seconds (ignored with
    /// --requests).
    #[arg(long, default_value = "10s", value_parser = subledger_client::duration::parse)]
    duration: Duration,
    /// Stop after this many calls instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, value_enum, default_value = "hot")]
    scenario: Scenario,
    /// Offerings for spread, mixed and watch [default: 1000; 100 for watch].
    #[arg(long)]
    offerings: Option<usize>,
    /// Use this existing offering instead of creating new ones (repeatable; hot, spread, mixed).
    #[arg(long = "offering")]
    existing_offerings: Vec<String>,
    /// The offering cap for sellout.
    #[arg(long, default_value_t = 5000)]
    sellout_units: i64,
    /// WatchHistory streams for watch, spread over the offerings; the server's
    /// --max-watch-streams must allow them.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// The server's /metrics (http://host:port/metrics), scraped around the load to report its
    /// WatchHistory reads per commit (watch).
    #[arg(long)]
    metrics_url: Option<String>,
    /// VerifyOffering calls kept in flight beside the load, on connections of their own, each
    /// verifying --verify-offering over and over: a verification storm, to see what it does to
    /// the other calls. Reported under VerifyOffering, apart from the load's own latency.
    #[arg(long, default_value_t = 0, requires = "verify_offering")]
    verifiers: usize,
    /// The existing offering (a long history, say) the --verifiers verify.
    #[arg(long)]
    verify_offering: Option<String>,
    /// One JSON object on stdout instead of the text report.
    #[arg(long)]
    json: bool,
    /// Bearer token sent with every call (`authorization: Bearer <token>`).
    #[arg(long, env = "SUBLEDGER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA (PEM) that signed the servers' certificates; https:// targets.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Shared by the workers: which calls remain, and a unique number per call.
struct Plan {
    scenario: Scenario,
    offering_ids: Vec<String>,
    deadline: Option<Instant>,
    requests_max: Option<u64>,
    calls_started: AtomicU64,
    calls_done: AtomicU64,
    calls_ok: AtomicU64,
    /// Latencies so far, for the live progress line (on a terminal only: a shared lock per call
    /// is not something to add to a measured run).
    live_latency_us: Option<std::sync::Mutex<Histogram<u64>>>,
}

impl Plan {
    /// The next call's number, or None when the run is over.
    fn next_call(&self) -> Option<u64> {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return None;
        }
        let n = self.calls_started.fetch_add(1, Ordering::Relaxed);
        self.requests_max.is_none_or(|max| n < max).then_some(n)
    }
}

impl BenchArgs {
    fn offerings(&self) -> usize {
        let default = match self.scenario {
            Scenario::Watch => 100,
            _ => 1000,
        };
        self.offerings.unwrap_or(default)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency == 0
        || args.targets.is_empty()
        || args.offerings() == 0
        || args.sellout_units <= 0
    {
        bail!("--concurrency, --offerings and --sellout-units must be positive and --target given");
    }
    if args.verifiers > 0 && args.requests.is_some() {
        bail!("--verifiers runs for --duration; drop --requests");
    }
    if args.watchers > 0 && args.scenario != Scenario::Watch {
        bail!("--watchers is for --scenario watch");
    }
    // The streams are ended by finalizing their offerings: never someone else's.
    if args.scenario == Scenario::Watch && !args.existing_offerings.is_empty() {
        bail!("--scenario watch creates its own offerings (it finalizes them); drop --offering");
    }
    let ledger = connect(&args, CONNECTIONS_PER_TARGET).await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let offering_ids = if args.existing_offerings.is_empty() || args.scenario == Scenario::Sellout {
        create_offerings(&ledger, &args, &run_id).await?
    } else {
        args.existing_offerings.clone()
    };

    let watchers = match args.scenario {
        Scenario::Watch => {
            let connections_per_target = args
                .watchers
                .div_ceil(watch::STREAMS_PER_CONNECTION)
                .div_ceil(args.targets.len());
            let watch_ledger = connect(&args, connections_per_target).await?;
            Some(watch::Watchers::open(&watch_ledger, &offering_ids, args.watchers).await?)
        }
        _ => None,
    };
    let scrape = async || match &args.metrics_url {
        Some(url) => watch::scrape_server_reads(url).await.map(Some),
        None => Ok(None),
    };
    // Open streams and nothing committed: what do they read?
    let idle_reads = match (&watchers, scrape().await?) {
        (Some(_), Some(before)) => {
            tokio::time::sleep(watch::IDLE).await;
            scrape()
                .await?
                .map(|after| (after - before).history_reads())
        }
        _ => None,
    };
    let metrics_before = scrape().await?;

    let show_progress = !args.json && std::io::stderr().is_terminal();
    let plan = Arc::new(Plan {
        scenario: args.scenario,
        offering_ids,
        deadline: args
            .requests
            .is_none()
            .then(|| Instant::now() + args.duration),
        requests_max: args.requests,
        calls_started: AtomicU64::new(0),
        calls_done: AtomicU64::new(0),
        calls_ok: AtomicU64::new(0),
        live_latency_us: show_progress.then(|| std::sync::Mutex::new(new_histogram())),
    });
    let started = Instant::now();
    let progress = show_progress.then(|| tokio::spawn(progress_line(plan.clone(), args.duration)));
    let storm = match &args.verify_offering {
        Some(offering_id) if args.verifiers > 0 => {
            let storm_ledger = connect(&args, CONNECTIONS_PER_TARGET).await?;
            (0..args.verifiers)
                .map(|_| {
                    tokio::spawn(verify_over_and_over(
                        storm_ledger.clone(),
                        plan.clone(),
                        offering_id.clone(),
                    ))
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| tokio::spawn(drive(ledger.clone(), plan.clone(), worker as u64)))
        .collect();
    let mut tally = Tally::new();
    for worker in workers {
        tally.merge(worker.await.context("bench worker")?);
    }
    // The storm's calls are reported by method only: the load's own latency stays its own.
    for verifier in storm {
        let storm_tally = verifier.await.context("bench verifier")?;
        tally.merge_by_method(storm_tally);
    }
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
    }
    let metrics_after = scrape().await?;
    let watch_report = match watchers {
        Some(watchers) => {
            let last_sequences = watch::finalize(&ledger, &plan.offering_ids).await?;
            let mut report = watchers.finish(&last_sequences).await;
            report.idle_reads = idle_reads;
            if let (Some(before), Some(after)) = (metrics_before, metrics_after) {
                report.server = Some(after - before);
            }
            Some(report)
        }
        None => None,
    };

    let (verified_entries, broken) = verify(&ledger, &plan.offering_ids).await?;
    let mut report = report::report(&args, &plan, &tally, elapsed, started, verified_entries);
    report.verify_failures = broken.clone();
    let watch_mismatches = watch_report.as_ref().map_or(0, |w| w.mismatches);
    report.watch = watch_report;
    if args.scenario == Scenario::Sellout {
        let offering = ledger.get_offering(&plan.offering_ids[0]).await?;
        report.sold_units = Some((offering.subscribed_units, offering.max_units));
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report::print_text(&report);
    }
    if !broken.is_empty() {
        bail!(
            "VerifyOffering FAILED after the run, the ledger is broken: {}",
            broken.join("; ")
        );
    }
    if watch_mismatches > 0 {
        bail!("{watch_mismatches} WatchHistory streams missed or reordered entries");
    }
    Ok(())
}

/// One handle over every target, `connections_per_target` connections each. Calls go
/// round-robin over the connections, target by target: every replica gets the same share of the
/// calls in flight, whatever --concurrency is. Connected at once, so that a wrong --target fails
/// before the run, naming it.
async fn connect(args: &BenchArgs, connections_per_target: usize) -> anyhow::Result<Ledger> {
    let mut builder = Ledger::builder(args.targets.clone())
        .connections_per_endpoint(connections_per_target)
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = client_tls(args)? {
        builder = builder.tls(tls);
    }
    if let Some(token) = &args.token {
        builder = builder.bearer_token(token);
    }
    builder
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.targets.join(", ")))
}

/// TLS from --tls-ca, --tls-cert and --tls-key; None when none is given.
fn client_tls(args: &BenchArgs) -> anyhow::Result<Option<ClientTlsConfig>> {
    if args.tls_ca.is_none() && args.tls_cert.is_none() {
        return Ok(None);
    }
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &args.tls_ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

async fn create_offerings(
    ledger: &Ledger,
    args: &BenchArgs,
    run_id: &str,
) -> anyhow::Result<Vec<String>> {
    let (count, max_units) = match args.scenario {
        // Caps nobody reaches: every call measures the write path, not a refusal.
        Scenario::Hot => (1, SERVER_UNITS_MAX),
        Scenario::Spread | Scenario::Mixed | Scenario::Watch => {
            (args.offerings(), SERVER_UNITS_MAX)
        }
        Scenario::Sellout => (1, args.sellout_units),
    };
    let ids: Vec<String> = (0..count).map(|i| format!("bench-{run_id}-{i}")).collect();
    for chunk in ids.chunks(SETUP_PARALLELISM) {
        let creates = chunk.iter().map(|id| {
            let request = proto::CreateOfferingRequest {
                offering_id: id.clone(),
                name: format!("bench {:?} {id}", args.scenario),
                max_units,
                max_units_per_investor: 0,
                request_id: format!("create-{id}"),
                ..Default::default()
            };
            ledger.create_offering(request)
        });
        for result in futures::future::join_all(creates).await {
            result.context("CreateOffering for the benchmark")?;
        }
    }
    Ok(ids)
}

/// The calls a worker makes.
enum Call {
    Subscribe {
        units: i64,
    },
    /// Everything the investor holds.
    Cancel,
    GetOffering,
    /// The first page of 20.
    ListHistory,
}

/// One worker: calls back to back until the plan says stop.
async fn drive(ledger: Ledger, plan: Arc<Plan>, worker: u64) -> Tally {
    let mut tally = Tally::new();
    // A cheap per-worker pseudo-random sequence (xorshift): picks offerings, investors, units.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (worker + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while plan.next_call().is_some() {
        let offering_id =
            plan.offering_ids[(random() % plan.offering_ids.len() as u64) as usize].clone();
        let investor_id = format!("investor-{}", random() % INVESTORS);
        let units = 1 + (random() % 10) as i64;
        let call = match plan.scenario {
            Scenario::Hot | Scenario::Spread | Scenario::Watch => Call::Subscribe { units },
            Scenario::Sellout => Call::Subscribe { units: 1 },
            Scenario::Mixed => match random() % 10 {
                0..=4 => Call::Subscribe { units },
                // Cancels of investors who hold nothing are refused; that is part of the mix.
                5 => Call::Cancel,
                6..=8 => Call::GetOffering,
                _ => Call::ListHistory,
            },
        };
        let started = Instant::now();
        let (method, code) = match call {
            Call::Subscribe { units } => {
                // request_id: made by the client, as for any caller that gives none.
                let request = proto::SubscribeRequest {
                    offering_id,
                    investor_id,
                    units,
                    ..Default::default()
                };
                ("Subscribe", code_of(ledger.subscribe(request).await))
            }
            Call::Cancel => {
                let request = proto::CancelRequest {
                    offering_id,
                    investor_id,
                    units: 0,
                    ..Default::default()
                };
                ("Cancel", code_of(ledger.cancel(request).await))
            }
            Call::GetOffering => (
                "GetOffering",
                code_of(ledger.get_offering(&offering_id).await),
            ),
            Call::ListHistory => {
                let request = proto::ListHistoryRequest {
                    offering_id,
                    page_size: 20,
                    ..Default::default()
                };
                ("ListHistory", code_of(ledger.list_history(request).await))
            }
        };
        if plan.scenario == Scenario::Sellout
            && code == tonic::Code::FailedPrecondition
            && tally.sold_out_at.is_none()
        {
            tally.sold_out_at = Some(Instant::now());
        }
        tally.record(method, started, code);
        if let Some(live) = &plan.live_latency_us {
            let latency_us = (started.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
            let _ = live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(latency_us);
        }
        if code == tonic::Code::Ok {
            plan.calls_ok.fetch_add(1, Ordering::Relaxed);
        }
        plan.calls_done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// One verifier of the storm: VerifyOffering on `offering_id` until the run is over. Calls the
/// server refuses (TOO_MANY_VERIFICATIONS) count by their code, and the verifier tries again.
async fn verify_over_and_over(ledger: Ledger, plan: Arc<Plan>, offering_id: String) -> Tally {
    let mut tally = Tally::new();
    while plan
        .deadline
        .is_some_and(|deadline| Instant::now() < deadline)
    {
        let started = Instant::now();
        let request = proto::VerifyOfferingRequest {
            offering_id: offering_id.clone(),
            digest: None,
        };
        let code = code_of(ledger.verify_offering(request).await);
        tally.record("VerifyOffering", started, code);
    }
    tally
}

fn code_of<T>(result: Result<T, subledger_client::Error>) -> tonic::Code {
    result.map_or_else(|error| error.code(), |_| tonic::Code::Ok)
}

/// A live line on the terminal: progress through the run, calls/s over the last second, ok,
/// errors and p99 so far. Cleared when the run ends, so the report follows on a clean screen.
async fn progress_line(plan: Arc<Plan>, duration: Duration) {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = match plan.requests_max {
        Some(requests) => ProgressBar::new(requests),
        None => ProgressBar::new(duration.as_millis() as u64),
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:24}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let _clear = ClearOnDrop(bar.clone());
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let done = plan.calls_done.load(Ordering::Relaxed);
        let ok = plan.calls_ok.load(Ordering::Relaxed);
        let p99_ms = plan.live_latency_us.as_ref().map_or(0.0, |live| {
            live.lock()
                .unwrap_or_else(|p| p.into_inner())
                .value_at_quantile(0.99) as f64
                / 1000.0
        });
        bar.set_position(match plan.requests_max {
            Some(_) => done,
            None => started.elapsed().as_millis() as u64,
        });
        bar.set_message(format!(
            "{:>8} calls/s  ok {ok}  errors {}  p99 {p99_ms:.2} ms",
            done - last,
            done - ok
        ));
        last = done;
    }
}

/// Removes the progress line however the task ends (it is aborted when the run is over).
struct ClearOnDrop(indicatif::ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// VerifyOffering on every offering used; returns the entries checked and the failures.
async fn verify(ledger: &Ledger, offering_ids: &[String]) -> anyhow::Result<(i64, Vec<String>)> {
    let mut entries = 0;
    let mut broken = Vec::new();
    for chunk in offering_ids.chunks(SETUP_PARALLELISM) {
        let checks = chunk.iter().map(|id| async move {
            let request = proto::VerifyOfferingRequest {
                offering_id: id.clone(),
                digest: None,
            };
            (id, ledger.verify_offering(request).await)
        });
        for (id, result) in futures::future::join_all(checks).await {
            let verdict = result.with_context(|| format!("VerifyOffering {id}"))?;
            entries += verdict.entries_checked;
            if !verdict.ok {
                broken.push(format!("{id}: {}", verdict.problems.join(", ")));
            }
        }
    }
    Ok((entries, broken))
}
