//! WatchHistory: the backlog, then new entries as they commit, on this replica or another.
//!
//! The database is the only source of entries. A [`Change`] only wakes the stream up to read
//! what follows the last entry it sent, so a lost or late notification delays an entry by at
//! most POLL_INTERVAL and never loses or reorders one.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert;
use super::error::ApiError;
use crate::ledger::{EntryKind, Offering, OfferingStatus};
use crate::proto;
use crate::store::{Change, HistoryQuery, Store};
use crate::telemetry::metrics::WATCH_STREAMS;

pub type HistoryStream = Pin<Box<dyn Stream<Item = Result<proto::HistoryEntry, Status>> + Send>>;

/// Entries read per query while catching up. With SEND_BUFFER, bounds what a stream whose
/// client reads nothing holds: about (READ_BATCH + SEND_BUFFER) entries of ~200 bytes.
const READ_BATCH: u32 = 64;
/// Entries buffered for a slow client before the stream stops reading.
const SEND_BUFFER: usize = 32;
/// Re-read at least this often even without a notification (a lost NOTIFY, another process on
/// the same SQLite file).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub fn spawn<S: Store>(
    store: S,
    offering: Offering,
    after_sequence: i64,
    changes: broadcast::Receiver<Change>,
    permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) -> HistoryStream {
    let (sender, receiver) = mpsc::channel(SEND_BUFFER);
    // Nothing can follow a finalized offering's last entry: end at once instead of waiting.
    if offering.status == OfferingStatus::Finalized && after_sequence >= offering.version {
        return Box::pin(ReceiverStream::new(receiver));
    }
    let watcher = Watcher {
        store,
        offering_id: offering.offering_id,
        after_sequence,
        changes,
        sender,
        _slot: WatchSlot::new(permit),
    };
    tokio::spawn(watcher.run(shutdown));
    Box::pin(ReceiverStream::new(receiver))
}

struct Watcher<S> {
    store: S,
    offering_id: String,
    after_sequence: i64,
    changes: broadcast::Receiver<Change>,
    sender: mpsc::Sender<Result<proto::HistoryEntry, Status>>,
    /// This stream's place under --max-watch-streams, given back when the watcher ends.
    _slot: WatchSlot,
}

/// A place among the open watch streams, counted in the metrics while held.
struct WatchSlot {
    _permit: OwnedSemaphorePermit,
}

impl WatchSlot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(WATCH_STREAMS).increment(1);
        Self { _permit: permit }
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        metrics::gauge!(WATCH_STREAMS).decrement(1);
    }
}

/// Why a watch stops.
enum End {
    Finalized,
    ClientGone,
    Failed(ApiError),
}

impl<S: Store> Watcher<S> {
    async fn run(mut self, shutdown: CancellationToken) {
        // Shutdown interrupts anything, a send to a client that stopped reading included.
        let end = tokio::select! {
            end = self.stream() => end,
            () = shutdown.cancelled() => End::Failed(ApiError::ShuttingDown),
        };
        if let End::Failed(error) = end {
            // The stream's end line: the call's own span ended when the stream was handed over.
            if let ApiError::Store(cause) = &error {
                tracing::warn!(offering_id = %self.offering_id, %cause, "watch stream ended by a database failure");
            }
            let status = Status::from(error);
            // Never wait here: a client that reads nothing must not hold the shutdown open.
            let _ = self.sender.try_send(Err(status));
        }
    }

    async fn stream(&mut self) -> End {
        loop {
            if let Err(end) = self.send_new_entries().await {
                return end;
            }
            let sender = self.sender.clone();
            tokio::select! {
                () = sender.closed() => return End::ClientGone,
                () = self.next_change() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Sends every entry after the last one sent; Err once the stream must end.
    async fn send_new_entries(&mut self) -> Result<(), End> {
        loop {
            let query = HistoryQuery::after(&self.offering_id, self.after_sequence, READ_BATCH);
            let entries = self
                .store
                .list_history(query)
                .await
                .map_err(|e| End::Failed(ApiError::from(e)))?;
            let read = entries.len();
            for entry in entries {
                self.after_sequence = entry.sequence;
                let finalized = entry.kind == EntryKind::OfferingFinalized;
                self.sender
                    .send(Ok(convert::entry(entry)))
                    .await
                    .map_err(|_| End::ClientGone)?;
                if finalized {
                    return Err(End::Finalized);
                }
            }
            if read < READ_BATCH as usize {
                return Ok(());
            }
        }
    }

    /// Returns when this offering may have moved past the last entry sent.
    async fn next_change(&mut self) {
        loop {
            match self.changes.recv().await {
                Ok(change)
                    if *change.offering_id == *self.offering_id
                        && change.version > self.after_sequence =>
                {
                    return;
                }
                Ok(_) => {}
                // Missed some: re-read to be sure.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                // No more notifications: the poll interval takes over.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}
