//! The watch scenario's streams: opened before the load, spread over its offerings; ended after
//! it by finalizing the offerings; then checked: every stream must have received every entry of
//! its offering once, in order. Also what the server read for them, from its /metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use subledger_client::{Ledger, proto};

/// Streams per HTTP/2 connection: under the server's 256 (STREAMS_PER_CONNECTION_MAX). The
/// handle opens streams round-robin over its connections, so each carries at most this many
/// when it has count / STREAMS_PER_CONNECTION connections or more.
pub const STREAMS_PER_CONNECTION: usize = 200;
/// Streams being opened at once, so that opening 10,000 does not queue 10,000 calls.
const OPENING_AT_ONCE: usize = 256;
/// How long the streams may take to be open, and to deliver the last entries after the load.
const SETTLE_WAIT: Duration = Duration::from_secs(120);
/// How long the open streams are left idle, before the load, to count what they read then.
pub const IDLE: Duration = Duration::from_secs(2);

/// What one stream received.
struct Received {
    entries: u64,
    /// False once an entry came that was not the one after the last.
    in_order: bool,
    last_sequence: i64,
    error: Option<String>,
}

pub struct Watchers {
    /// Each stream's offering (an index into the offerings) and its reading task.
    streams: Vec<(usize, JoinHandle<Received>)>,
    connections: usize,
}

#[derive(Serialize)]
pub struct WatchReport {
    pub watchers: usize,
    pub connections: usize,
    pub entries_delivered: u64,
    pub entries_expected: u64,
    /// Streams that did not receive exactly 1..=last of their offering, in order: must be 0.
    pub mismatches: usize,
    /// From --metrics-url: history reads in IDLE with the streams open and nothing committed.
    pub idle_reads: Option<f64>,
    /// From --metrics-url, over the load.
    pub server: Option<ServerReads>,
}

/// What the server read for the streams during the load, and what it committed.
#[derive(Clone, Copy, Serialize)]
pub struct ServerReads {
    /// History reads by the offerings' shared readers.
    pub shared_reads: f64,
    /// History reads by streams catching up on their own (fallen behind).
    pub stream_reads: f64,
    /// Group-commit transactions.
    pub transactions: f64,
    /// Offerings committed, summed over the transactions (one transaction may carry several).
    pub offering_commits: f64,
}

impl ServerReads {
    pub fn history_reads(&self) -> f64 {
        self.shared_reads + self.stream_reads
    }
}

impl std::ops::Sub for ServerReads {
    type Output = Self;

    fn sub(self, before: Self) -> Self {
        Self {
            shared_reads: self.shared_reads - before.shared_reads,
            stream_reads: self.stream_reads - before.stream_reads,
            transactions: self.transactions - before.transactions,
            offering_commits: self.offering_commits - before.offering_commits,
        }
    }
}

impl WatchReport {
    pub fn print(&self) {
        let verdict = if self.mismatches == 0 {
            "every stream got every entry in order".to_owned()
        } else {
            format!("{} streams MISSED or REORDERED entries", self.mismatches)
        };
        println!(
            "watchers={} on {} connections: {} of {} entries delivered, {verdict}",
            self.watchers, self.connections, self.entries_delivered, self.entries_expected
        );
        if let Some(reads) = self.idle_reads {
            println!(
                "server history reads in {IDLE:?} with the streams open and nothing committed: {reads:.0}"
            );
        }
        if let Some(r) = &self.server {
            println!(
                "server history reads for the streams during the load: {:.0} shared + {:.0} by streams catching up, \
                 for {:.0} transactions committing {:.0} offerings: {:.2} shared reads per offering committed, {:.2} reads in all per transaction",
                r.shared_reads,
                r.stream_reads,
                r.transactions,
                r.offering_commits,
                r.shared_reads / r.offering_commits.max(1.0),
                r.history_reads() / r.transactions.max(1.0)
            );
        }
    }
}

impl Watchers {
    /// Opens `count` streams from each offering's first entry, round-robin over the offerings and
    /// over the handle's connections (each carrying at most STREAMS_PER_CONNECTION), and waits
    /// until each has received its first entry.
    pub async fn open(
        ledger: &Ledger,
        offering_ids: &[String],
        count: usize,
    ) -> anyhow::Result<Self> {
        let live = Arc::new(AtomicUsize::new(0));
        let opened = futures::stream::iter(0..count)
            .map(|n| {
                let offering = n % offering_ids.len();
                let request = proto::WatchHistoryRequest {
                    offering_id: offering_ids[offering].clone(),
                    after_sequence: 0,
                };
                let live = live.clone();
                async move {
                    let stream = ledger
                        .watch_history(request)
                        .await
                        .context("WatchHistory")?;
                    anyhow::Ok((offering, tokio::spawn(receive(stream, live))))
                }
            })
            .buffer_unordered(OPENING_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let streams = opened.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let deadline = Instant::now() + SETTLE_WAIT;
        while live.load(Ordering::Relaxed) < count {
            if Instant::now() > deadline {
                bail!(
                    "{} of {count} WatchHistory streams received their first entry within {SETTLE_WAIT:?}",
                    live.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            streams,
            connections: count.div_ceil(STREAMS_PER_CONNECTION),
        })
    }

    /// Waits for every stream's end (its offering finalized) and checks what it received
    /// against its offering's last sequence.
    pub async fn finish(self, last_sequences: &[i64]) -> WatchReport {
        let mut report = WatchReport {
            watchers: self.streams.len(),
            connections: self.connections,
            entries_delivered: 0,
            entries_expected: 0,
            mismatches: 0,
            idle_reads: None,
            server: None,
        };
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        for (offering, task) in self.streams {
            let last = last_sequences[offering];
            report.entries_expected += last as u64;
            let received = match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(received)) => received,
                _ => {
                    report.mismatches += 1;
                    continue;
                }
            };
            report.entries_delivered += received.entries;
            let complete = received.in_order
                && received.error.is_none()
                && received.last_sequence == last
                && received.entries == last as u64;
            if !complete {
                if report.mismatches == 0 {
                    eprintln!(
                        "first mismatch: {} entries up to {} of {last}, in order: {}, error: {:?}",
                        received.entries, received.last_sequence, received.in_order, received.error
                    );
                }
                report.mismatches += 1;
            }
        }
        report
    }
}

/// Reads a stream to its end, checking that each entry is the one after the last.
async fn receive(
    mut stream: tonic::Streaming<proto::HistoryEntry>,
    live: Arc<AtomicUsize>,
) -> Received {
    let mut received = Received {
        entries: 0,
        in_order: true,
        last_sequence: 0,
        error: None,
    };
    loop {
        match stream.message().await {
            Ok(Some(entry)) => {
                received.in_order &= entry.sequence == received.last_sequence + 1;
                received.last_sequence = entry.sequence;
                received.entries += 1;
                if received.entries == 1 {
                    live.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(None) => return received,
            Err(status) => {
                received.error = Some(format!("{:?}: {}", status.code(), status.message()));
                return received;
            }
        }
    }
}

/// Closes and finalizes each offering, which ends its streams; returns their last sequences.
pub async fn finalize(ledger: &Ledger, offering_ids: &[String]) -> anyhow::Result<Vec<i64>> {
    let mut last_sequences = Vec::new();
    for offering_id in offering_ids {
        ledger
            .close_offering(proto::CloseOfferingRequest {
                offering_id: offering_id.clone(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("CloseOffering {offering_id}"))?;
        let finalized = ledger
            .finalize_offering(proto::FinalizeOfferingRequest {
                offering_id: offering_id.clone(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("FinalizeOffering {offering_id}"))?;
        last_sequences.push(finalized.version);
    }
    Ok(last_sequences)
}

/// The server's metric names read here (`telemetry::metrics` in the server, which a test there
/// holds these to).
pub const COMMIT_OFFERINGS: &str = "subledger_commit_offerings";
pub const WATCH_READS: &str = "subledger_watch_reads_total";

/// The server's WatchHistory history reads and commits so far, from its /metrics
/// (http://host:port/metrics).
pub async fn scrape_server_reads(metrics_url: &str) -> anyhow::Result<ServerReads> {
    let text = http_get(metrics_url).await?;
    // The sum of a metric's samples whose labels include `label` (Prometheus text format).
    let total = |metric: &str, label: &str| -> f64 {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let name = series.split('{').next()?;
                (name == metric && series.contains(label)).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    };
    Ok(ServerReads {
        shared_reads: total(WATCH_READS, "reader=\"shared\""),
        stream_reads: total(WATCH_READS, "reader=\"stream\""),
        transactions: total(&format!("{COMMIT_OFFERINGS}_count"), ""),
        offering_commits: total(&format!("{COMMIT_OFFERINGS}_sum"), ""),
    })
}

/// A plain HTTP/1.1 GET of the body at `url`: all /metrics needs.
async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--metrics-url {url:?} is not http://host:port/path"))?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, "/metrics".to_owned()),
    };
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url} answered no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{url}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}
