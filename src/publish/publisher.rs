//! The history's publisher: while this replica holds the lease, every entry after an offering's
//! cursor is published in sequence order, several at a time, and the cursor moves as the acks
//! come back in order.
//!
//! Why nothing is lost, doubled or reordered (README "Events"):
//! - an entry is published only after it committed, and the cursor moves only past entries
//!   JetStream acknowledged (stored): a crash loses no entry, it only repeats some;
//! - a repeat carries the same `Nats-Msg-Id` (`<offering_id>:<sequence>`), which JetStream drops
//!   inside its duplicate window; on taking the lease and after any failure, the cursor is first
//!   brought up to the last message stored on the offering's subject, so that even a repeat after
//!   the window closed is not sent;
//! - one publisher sends an offering's entries in order on one connection, so what JetStream
//!   stores of them is a prefix of what was sent; the first failed ack stops the offering's round
//!   and what follows is read back before anything is sent again.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use prost::Message;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::PublishError;
use super::lease::{Holding, LEASE_RETRY, LeaseKeeper};
use super::nats::{Nats, REQUEST_TIMEOUT};
use super::subject::entries_subject;
use crate::ledger::Entry;
use crate::store::publication::ENTRIES_LEASE;
use crate::store::{Backlog, HistoryQuery, StartAt, Store};
use crate::telemetry::metrics::PublishMetrics;

/// Offerings published at once: each has its own entries in flight, so a thousand offerings
/// with one entry each do not wait for each other's acks one by one.
const OFFERINGS_IN_FLIGHT: usize = 32;
/// Entries of one offering read and sent before their acks are awaited: the pipeline's depth,
/// and a hot offering's progress per round trip to the database and to JetStream.
const ENTRIES_PER_ROUND: u32 = 512;
/// Offerings read per page of the backlog.
const BACKLOG_PAGE: u32 = 1000;
/// Offerings with a backlog taken into one round at most; the rest wait for the next.
const BACKLOG_ROUND_MAX: usize = 10_000;
/// With nothing to publish the backlog is read again this often even if no commit was
/// announced (SQLite: another process's commits are not).
const IDLE_SCAN: Duration = Duration::from_secs(1);
/// After a round with failures (NATS or the database unreachable), the pause before the next.
const FAILURE_PAUSE: Duration = Duration::from_secs(1);
/// How often the lag metric is brought up to the clock between two reads of the backlog.
const LAG_TICK: Duration = Duration::from_millis(500);

/// Publishes until `shutdown`, then lets the lease go.
pub async fn run<S: Store>(store: S, nats: Nats, start: StartAt, shutdown: CancellationToken) {
    let metrics = std::sync::Arc::new(PublishMetrics::new());
    tokio::spawn(tick_lag(metrics.clone(), shutdown.clone()));
    let mut lease = LeaseKeeper::new(store.clone(), ENTRIES_LEASE, start);
    let mut changes = store.changes();
    let mut stream = None;
    // Offerings whose cursor agrees with the stream, as read back since the lease was taken.
    let mut reconciled: HashSet<String> = HashSet::new();
    while !shutdown.is_cancelled() {
        let epoch = match lease.keep().await {
            Holding::NotHeld => {
                metrics.not_publishing();
                stream = None;
                pause(&shutdown, LEASE_RETRY).await;
                continue;
            }
            Holding::Taken(epoch) => {
                reconciled.clear();
                epoch
            }
            Holding::Held(epoch) => epoch,
        };
        let backlog = match read_backlog(&store).await {
            Ok(backlog) => backlog,
            Err(error) => {
                metrics.errors.increment(1);
                tracing::warn!(%error, "cannot read the publication backlog; retrying");
                pause(&shutdown, FAILURE_PAUSE).await;
                continue;
            }
        };
        // Read even while NATS is down, so that the backlog metric stays true.
        metrics.backlog(
            backlog.iter().map(|b| b.entries() as u64).sum(),
            backlog.iter().filter_map(|b| b.oldest_unpublished).min(),
        );
        // Made when the lease is taken, before any backlog: consumers can bind to it early.
        let stream_handle = match &stream {
            Some(stream) => stream,
            None => match nats.stream().await {
                Ok(found) => stream.insert(found),
                Err(error) => {
                    metrics.errors.increment(1);
                    tracing::warn!(%error, "cannot reach the JetStream stream; retrying");
                    pause(&shutdown, FAILURE_PAUSE).await;
                    continue;
                }
            },
        };
        if backlog.is_empty() {
            // Until a commit is announced, or the next scan is due.
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = changes.recv() => {}
                () = tokio::time::sleep(IDLE_SCAN) => {}
            }
            // Announcements already queued are covered by the scan that follows.
            while changes.recv().now_or_never().is_some_and(|r| r.is_ok()) {}
            continue;
        }
        let round = Round {
            store: &store,
            nats: &nats,
            stream: stream_handle,
            epoch,
            valid_until: lease.valid_until(),
            metrics: &metrics,
        };
        let outcomes: Vec<(String, Result<(), PublishError>)> = futures::stream::iter(backlog)
            .map(|offering| {
                let reconcile = !reconciled.contains(&offering.offering_id);
                let round = &round;
                async move {
                    let result = round.publish(&offering, reconcile).await;
                    (offering.offering_id, result)
                }
            })
            .buffer_unordered(OFFERINGS_IN_FLIGHT)
            .collect()
            .await;
        let mut failed = false;
        for (offering_id, result) in outcomes {
            match result {
                Ok(()) => {
                    reconciled.insert(offering_id);
                }
                Err(error) => {
                    if !failed {
                        tracing::warn!(%error, offering_id, "publication failed; retrying");
                    }
                    metrics.errors.increment(1);
                    reconciled.remove(&offering_id);
                    failed = true;
                }
            }
        }
        if failed {
            stream = None;
            pause(&shutdown, FAILURE_PAUSE).await;
        }
    }
    lease.release().await;
    metrics.not_publishing();
}

async fn tick_lag(metrics: std::sync::Arc<PublishMetrics>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(LAG_TICK);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => metrics.tick(),
        }
    }
}

async fn pause(shutdown: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

/// Every offering behind its cursor, page by page, up to BACKLOG_ROUND_MAX.
async fn read_backlog<S: Store>(store: &S) -> Result<Vec<Backlog>, PublishError> {
    let mut backlog: Vec<Backlog> = Vec::new();
    loop {
        let after = backlog.last().map(|b| b.offering_id.as_str());
        let page = store.publication_backlog(after, BACKLOG_PAGE).await?;
        let last_page = page.len() < BACKLOG_PAGE as usize;
        backlog.extend(page);
        if last_page || backlog.len() >= BACKLOG_ROUND_MAX {
            return Ok(backlog);
        }
    }
}

/// What every offering of one round shares.
struct Round<'a, S> {
    store: &'a S,
    nats: &'a Nats,
    stream: &'a async_nats::jetstream::stream::Stream,
    epoch: i64,
    valid_until: Instant,
    metrics: &'a PublishMetrics,
}

impl<S: Store> Round<'_, S> {
    /// Publishes up to ENTRIES_PER_ROUND entries of one offering after its cursor (read back
    /// from the stream first when `reconcile`), and moves the cursor past those acknowledged.
    async fn publish(&self, offering: &Backlog, reconcile: bool) -> Result<(), PublishError> {
        let id = offering.offering_id.as_str();
        let subject = entries_subject(id);
        let mut cursor = offering.published_sequence;
        if reconcile {
            cursor = self.reconcile(offering, &subject).await?;
        }
        if cursor >= offering.head_version || Instant::now() >= self.valid_until {
            return Ok(());
        }
        let entries = self
            .store
            .list_history(HistoryQuery::after(id, cursor, ENTRIES_PER_ROUND))
            .await?;
        let mut acks = Vec::with_capacity(entries.len());
        for entry in entries {
            debug_assert_eq!(entry.sequence, cursor + 1 + acks.len() as i64);
            let sequence = entry.sequence;
            let (headers, payload) = message(entry);
            acks.push((
                sequence,
                self.nats.publish(subject.clone(), headers, payload).await?,
            ));
        }
        let mut acked = cursor;
        let mut failure = None;
        for (sequence, ack) in acks {
            match tokio::time::timeout(REQUEST_TIMEOUT, ack).await {
                Ok(Ok(_)) => acked = sequence,
                Ok(Err(error)) => {
                    failure = Some(error.to_string());
                    break;
                }
                Err(_) => {
                    failure = Some(format!("no ack within {REQUEST_TIMEOUT:?}"));
                    break;
                }
            }
        }
        if acked > cursor {
            self.store
                .advance_publication_cursor(ENTRIES_LEASE, self.epoch, id, acked)
                .await?;
            self.metrics.published.increment((acked - cursor) as u64);
        }
        match failure {
            None => Ok(()),
            Some(detail) => Err(PublishError::Publish { subject, detail }),
        }
    }

    /// Brings the cursor up to the last entry stored on the subject (a publish whose ack was
    /// lost, by this process or by the lease's previous holder); returns the cursor.
    async fn reconcile(&self, offering: &Backlog, subject: &str) -> Result<i64, PublishError> {
        let cursor = offering.published_sequence;
        let Some(headers) = self.nats.last_headers(self.stream, subject).await? else {
            return Ok(cursor);
        };
        let stored = headers
            .get(SEQUENCE_HEADER)
            .and_then(|value| value.as_str().parse::<i64>().ok());
        let Some(stored) = stored else {
            return Err(PublishError::Reconcile {
                subject: subject.to_owned(),
                detail: format!("the last message has no {SEQUENCE_HEADER} header"),
            });
        };
        if stored > offering.head_version {
            // The stream holds entries this database never recorded: another database publishes
            // to it. Publishing on would interleave two histories.
            return Err(PublishError::Reconcile {
                subject: subject.to_owned(),
                detail: format!(
                    "the stream holds sequence {stored}, past this database's {} (another database publishes to the same stream?)",
                    offering.head_version
                ),
            });
        }
        if stored <= cursor {
            return Ok(cursor);
        }
        self.store
            .advance_publication_cursor(ENTRIES_LEASE, self.epoch, &offering.offering_id, stored)
            .await?;
        tracing::info!(
            offering_id = %offering.offering_id,
            cursor,
            stored,
            "publication cursor brought up to the stream"
        );
        Ok(stored)
    }
}

pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
pub const OFFERING_HEADER: &str = "Subledger-Offering";
pub const SEQUENCE_HEADER: &str = "Subledger-Sequence";
pub const KIND_HEADER: &str = "Subledger-Kind";
pub const ENTRY_HASH_HEADER: &str = "Subledger-Entry-Hash";

/// The headers and the payload (the HistoryEntry protobuf) of one entry's message.
fn message(entry: Entry) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let sequence = entry.sequence.to_string();
    headers.insert(
        MSG_ID_HEADER,
        format!("{}:{sequence}", entry.offering_id).as_str(),
    );
    headers.insert(OFFERING_HEADER, entry.offering_id.as_str());
    headers.insert(SEQUENCE_HEADER, sequence.as_str());
    headers.insert(ENTRY_HASH_HEADER, hex(&entry.entry_hash).as_str());
    let entry = crate::api::convert::entry(entry);
    headers.insert(KIND_HEADER, entry.kind().as_str_name());
    (headers, Bytes::from(entry.encode_to_vec()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
