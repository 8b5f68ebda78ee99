//! WatchHistory: the backlog, then new entries as they commit, on this replica or another.
//!
//! The database is the only source of entries. A stream reads its backlog itself, then follows
//! the offering's shared reader ([`hub`]), which reads each commit's entries once for all the
//! streams of the offering. Whatever a stream misses there (entries that went by before it
//! followed, or while its client was too slow to keep up), it reads from the database itself:
//! every entry reaches it once, in sequence order, and a slow stream holds up no other.
//!
//! Entries travel encoded ([`codec`]): the shared reader encodes each once for all its streams,
//! and [`route`] serves the method with the codec that sends those bytes as they are.

pub mod codec;
pub mod hub;
pub mod route;
pub mod slots;

use std::pin::Pin;

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert;
use super::error::ApiError;
use crate::ledger::{EntryKind, Offering, OfferingStatus};
use crate::store::{HistoryQuery, Store};
use crate::telemetry::metrics::WATCH_READS;
use codec::EncodedEntry;
use hub::{Fed, FedEntry, Following, WatchHub};
use slots::WatchSlot;

pub type HistoryStream = Pin<Box<dyn Stream<Item = Result<EncodedEntry, Status>> + Send>>;

/// Entries read per query, by a stream catching up and by an offering's shared reader. With
/// SEND_BUFFER, bounds what a stream whose client reads nothing holds of its own: about
/// (READ_BATCH + SEND_BUFFER) entries of ~200 bytes.
const READ_BATCH: u32 = 64;
/// Entries buffered for a slow client before the stream stops reading.
const SEND_BUFFER: usize = 32;

/// Starts the stream of `offering` after `after_sequence`; `offering` was read after the call
/// was admitted, so its version is where the offering's shared reader starts if it has none yet.
pub fn spawn<S: Store>(
    hub: &WatchHub<S>,
    store: S,
    offering: Offering,
    after_sequence: i64,
    slot: WatchSlot,
    shutdown: CancellationToken,
) -> HistoryStream {
    let (sender, receiver) = mpsc::channel(SEND_BUFFER);
    // Nothing can follow a finalized offering's last entry: end at once instead of waiting.
    if offering.status == OfferingStatus::Finalized && after_sequence >= offering.version {
        return Box::pin(ReceiverStream::new(receiver));
    }
    // Followed before the backlog is read, so that no entry falls between the two.
    let following = hub.follow(&offering.offering_id, offering.version);
    let watcher = Watcher {
        store,
        reads: metrics::counter!(WATCH_READS, "reader" => "stream"),
        offering_id: offering.offering_id,
        after_sequence,
        following,
        sender,
        _slot: slot,
    };
    tokio::spawn(watcher.run(shutdown));
    Box::pin(ReceiverStream::new(receiver))
}

struct Watcher<S> {
    store: S,
    reads: metrics::Counter,
    offering_id: String,
    /// The last sequence sent to the client.
    after_sequence: i64,
    following: Following,
    sender: mpsc::Sender<Result<EncodedEntry, Status>>,
    /// This stream's place under the watch limits, given back when the watcher ends.
    _slot: WatchSlot,
}

/// Why a watch stops.
enum End {
    Finalized,
    ClientGone,
    Failed(Status),
}

/// The status a stream ends with after a failed read, logged here, once per failure: a shared
/// reader's failure ends all its streams with one log line.
fn failure(offering_id: &str, error: ApiError) -> Status {
    if let ApiError::Store(cause) = &error {
        tracing::warn!(offering_id, %cause, "watch stream ended by a database failure");
    }
    Status::from(error)
}

impl<S: Store> Watcher<S> {
    async fn run(mut self, shutdown: CancellationToken) {
        // Shutdown interrupts anything, a send to a client that stopped reading included.
        let end = tokio::select! {
            end = self.stream() => end,
            () = shutdown.cancelled() => End::Failed(Status::from(ApiError::ShuttingDown)),
        };
        if let End::Failed(status) = end {
            // Never wait here: a client that reads nothing must not hold the shutdown open.
            let _ = self.sender.try_send(Err(status));
        }
    }

    async fn stream(&mut self) -> End {
        if let Err(end) = self.catch_up().await {
            return end;
        }
        loop {
            let fed = tokio::select! {
                () = self.sender.closed() => return End::ClientGone,
                fed = self.following.entries.recv() => fed,
            };
            let step = match fed {
                Ok(Fed::Entry(entry)) => self.send_fed(&entry).await,
                Ok(Fed::Failed(status)) => Err(End::Failed(status)),
                // More than the shared buffer went by while the client was slow: the database
                // still has it all.
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                // The hub went with the service: the server is shutting down.
                Err(broadcast::error::RecvError::Closed) => {
                    Err(End::Failed(Status::from(ApiError::ShuttingDown)))
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends an entry from the shared reader, after any this stream lacks before it.
    async fn send_fed(&mut self, entry: &FedEntry) -> Result<(), End> {
        let sequence = entry.sequence;
        if sequence > self.after_sequence + 1 {
            // Entries went by before this stream followed, or were dropped from the shared
            // buffer before it took them. The database has them, up to this one at least.
            self.catch_up().await?;
        }
        // Lower: already sent, from the backlog or a catch-up.
        if sequence == self.after_sequence + 1 {
            // The reader's bytes, shared: this stream encodes nothing.
            self.send(entry.encoded.clone(), sequence, entry.finalized)
                .await?;
        }
        Ok(())
    }

    /// Sends every entry in the database after the last one sent; Err once the stream must end.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            self.reads.increment(1);
            let query = HistoryQuery::after(&self.offering_id, self.after_sequence, READ_BATCH);
            let entries = self
                .store
                .list_history(query)
                .await
                .map_err(|e| End::Failed(failure(&self.offering_id, ApiError::from(e))))?;
            let read = entries.len();
            for entry in entries {
                let finalized = entry.kind == EntryKind::OfferingFinalized;
                let sequence = entry.sequence;
                // Read by this stream alone, so encoded for it alone.
                let encoded = EncodedEntry::new(&convert::entry(entry));
                self.send(encoded, sequence, finalized).await?;
            }
            if read < READ_BATCH as usize {
                return Ok(());
            }
        }
    }

    /// Sends the entry numbered `sequence`, encoded.
    async fn send(
        &mut self,
        entry: EncodedEntry,
        sequence: i64,
        finalized: bool,
    ) -> Result<(), End> {
        debug_assert_eq!(sequence, self.after_sequence + 1, "sent in order, once");
        self.after_sequence = sequence;
        self.sender
            .send(Ok(entry))
            .await
            .map_err(|_| End::ClientGone)?;
        if finalized {
            return Err(End::Finalized);
        }
        Ok(())
    }
}
