//! One reader per watched offering, shared by every WatchHistory stream of it on this process.
//!
//! Each stream used to re-read the history after every commit and poll besides: N streams of an
//! offering cost N queries per commit, and 2 N a second with nothing committed. Here the store's
//! announcement of a commit ([`Change`]) wakes the offering's one reader, which reads the new
//! entries once and hands them to every stream through a broadcast channel; nothing is read while
//! nothing commits. A stream that misses entries (it joined while they went by, or fell more than
//! FEED_BUFFER behind) reads them from the database itself, so the reader waits for nobody.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;

use super::codec::EncodedEntry;
use super::{READ_BATCH, failure};
use crate::api::convert;
use crate::api::error::ApiError;
use crate::ledger::EntryKind;
use crate::store::{Change, Changes, HistoryQuery, Store};
use crate::telemetry::metrics::{WATCH_POLLS, WATCH_READS};

/// Entries an offering's reader keeps for streams that have not taken them yet. A stream further
/// behind (its client reads slowly) reads from the database instead; the buffer holds at most this
/// many entries (~300 bytes each) per watched offering, shared by all its streams.
const FEED_BUFFER: usize = 1024;

/// What an offering's reader hands to its streams.
#[derive(Clone)]
pub(super) enum Fed {
    Entry(FedEntry),
    /// The reader's read failed: its streams end with this, as their own read would have.
    Failed(Status),
}

/// An entry as read and encoded once, for every stream; a clone shares the encoded bytes.
#[derive(Clone)]
pub(super) struct FedEntry {
    pub sequence: i64,
    pub finalized: bool,
    pub encoded: EncodedEntry,
}

/// The readers of the offerings watched on this process (owned by the service).
pub struct WatchHub<S> {
    store: S,
    feeds: Arc<Feeds>,
}

type Feeds = Mutex<Watched>;

#[derive(Default)]
struct Watched {
    readers: HashMap<Arc<str>, Registered>,
    /// Stops the task that routes the store's changes to the readers, which runs only while
    /// there are readers: following no changes lets the store stop listening for them.
    dispatcher: Option<DropGuard>,
}

/// A watched offering: its reader, and how many streams follow it.
struct Registered {
    feed: Arc<Feed>,
    followers: usize,
    /// Stops the reader when the last follower leaves.
    _reader: DropGuard,
}

/// What the dispatcher tells an offering's reader, and what the reader hands on.
struct Feed {
    entries: broadcast::Sender<Fed>,
    /// The highest version announced: the reader reads when it is past what it has read.
    announced_version: AtomicI64,
    /// Set when announcements may have been lost: the reader reads even if no version past
    /// its own was announced.
    reread: AtomicBool,
    /// Keeps one wake-up for a reader busy reading, so that none is lost.
    wake: Notify,
}

impl Feed {
    fn announce(&self, version: i64) {
        self.announced_version.fetch_max(version, Ordering::AcqRel);
        self.wake.notify_one();
    }

    fn reread(&self) {
        self.reread.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

impl<S: Store> WatchHub<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            feeds: Arc::new(Feeds::default()),
        }
    }

    /// Follows the offering's reader, starting one whose position is `version` (read before
    /// this call) if the offering has none. The caller reads its backlog only after this: an
    /// entry committed meanwhile then reaches it from the backlog, the reader, or both.
    ///
    /// The first follower starts the task that routes the store's changes (so: on a tokio
    /// runtime), subscribed before this returns, so that no commit announced from here on is lost.
    pub(super) fn follow(&self, offering_id: &str, version: i64) -> Following {
        let mut watched = lock(&self.feeds);
        if watched.dispatcher.is_none() {
            let stop = CancellationToken::new();
            let changes = self.store.changes();
            tokio::spawn(dispatch(changes, self.feeds.clone(), stop.clone()));
            watched.dispatcher = Some(stop.drop_guard());
        }
        let registered = match watched.readers.get_mut(offering_id) {
            Some(registered) => registered,
            None => {
                let offering_id: Arc<str> = offering_id.into();
                let registered = self.start_reader(offering_id.clone(), version);
                watched.readers.entry(offering_id).or_insert(registered)
            }
        };
        registered.followers += 1;
        Following {
            entries: registered.feed.entries.subscribe(),
            offering_id: offering_id.into(),
            feeds: self.feeds.clone(),
        }
    }

    /// A commit made between `version` being read and the reader being registered is not
    /// announced to it: it reads that entry with the next commit's, and streams that have it
    /// already (from their backlog, read after registering) skip it.
    fn start_reader(&self, offering_id: Arc<str>, version: i64) -> Registered {
        let (entries, _) = broadcast::channel(FEED_BUFFER);
        let feed = Arc::new(Feed {
            entries,
            announced_version: AtomicI64::new(version),
            reread: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let reader = Reader {
            store: self.store.clone(),
            reads: metrics::counter!(WATCH_READS, "reader" => "shared"),
            offering_id,
            feed: feed.clone(),
            read_through: version,
        };
        let stop = CancellationToken::new();
        let poll = self.store.unannounced_commits_poll();
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped.cancelled() => {}
                () = reader.run(poll) => {}
            }
        });
        Registered {
            feed,
            followers: 0,
            _reader: stop.drop_guard(),
        }
    }
}

/// One stream's place among the followers of an offering's reader; leaving drops the reader
/// with its last follower, and the dispatcher with the last reader.
pub(super) struct Following {
    pub entries: broadcast::Receiver<Fed>,
    offering_id: Arc<str>,
    feeds: Arc<Feeds>,
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut watched = lock(&self.feeds);
        if let Some(registered) = watched.readers.get_mut(&self.offering_id) {
            registered.followers -= 1;
            if registered.followers == 0 {
                watched.readers.remove(&self.offering_id);
            }
        }
        if watched.readers.is_empty() {
            watched.dispatcher = None;
        }
    }
}

fn lock(feeds: &Feeds) -> MutexGuard<'_, Watched> {
    // Nothing panics while holding the lock; if something did, the map is still whole.
    feeds.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Routes the store's changes to the readers of the offerings they concern: one receiver per
/// process, however many offerings are watched.
async fn dispatch(mut changes: Changes, feeds: Arc<Feeds>, stop: CancellationToken) {
    loop {
        let change = tokio::select! {
            () = stop.cancelled() => return,
            change = changes.recv() => change,
        };
        let watched = lock(&feeds);
        match change {
            Ok(Change::Committed {
                offering_id,
                version,
            }) => {
                if let Some(registered) = watched.readers.get(&offering_id) {
                    registered.feed.announce(version);
                }
            }
            // Some announcements were lost: any watched offering may have moved.
            Ok(Change::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => {
                for registered in watched.readers.values() {
                    registered.feed.reread();
                }
            }
            // The store is gone, and no entry can follow.
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads an offering's new entries once for all its streams.
struct Reader<S> {
    store: S,
    reads: metrics::Counter,
    offering_id: Arc<str>,
    feed: Arc<Feed>,
    /// The last sequence read and handed on.
    read_through: i64,
}

impl<S: Store> Reader<S> {
    async fn run(mut self, poll: Option<Duration>) {
        let mut poll = poll.map(|period| {
            let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
            poll
        });
        let polls = metrics::counter!(WATCH_POLLS);
        loop {
            let behind = tokio::select! {
                () = self.feed.wake.notified() => {
                    self.feed.reread.swap(false, Ordering::AcqRel)
                        || self.feed.announced_version.load(Ordering::Acquire) > self.read_through
                }
                () = next_tick(&mut poll) => {
                    polls.increment(1);
                    self.head_moved().await
                }
            };
            if behind {
                self.read_new_entries().await;
            }
        }
    }

    /// Whether the offering's head is past what was read; true when the head cannot be read, so
    /// that the read that follows tells the streams why.
    async fn head_moved(&self) -> bool {
        match self.store.get_offering(&self.offering_id).await {
            Ok(Some(offering)) => offering.version > self.read_through,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    async fn read_new_entries(&mut self) {
        loop {
            self.reads.increment(1);
            let query = HistoryQuery::after(&self.offering_id, self.read_through, READ_BATCH);
            let entries = match self.store.list_history(query).await {
                Ok(entries) => entries,
                Err(error) => {
                    let status = failure(&self.offering_id, ApiError::from(error));
                    // No follower left is no one to tell.
                    let _ = self.feed.entries.send(Fed::Failed(status));
                    return;
                }
            };
            let read = entries.len();
            for entry in entries {
                debug_assert_eq!(entry.sequence, self.read_through + 1, "history has no gaps");
                self.read_through = entry.sequence;
                let fed = FedEntry {
                    sequence: entry.sequence,
                    finalized: entry.kind == EntryKind::OfferingFinalized,
                    encoded: EncodedEntry::new(&convert::entry(entry)),
                };
                let _ = self.feed.entries.send(Fed::Entry(fed));
            }
            if read < READ_BATCH as usize {
                return;
            }
        }
    }
}

/// The next tick, or never without an interval.
async fn next_tick(poll: &mut Option<Interval>) {
    match poll {
        Some(poll) => {
            poll.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fake::FakeStore;

    /// The next entry's sequence a follower receives.
    async fn next_sequence(following: &mut Following) -> i64 {
        let fed = tokio::time::timeout(Duration::from_secs(5), following.entries.recv())
            .await
            .expect("an entry in time")
            .expect("the feed is open");
        match fed {
            Fed::Entry(entry) => entry.sequence,
            Fed::Failed(status) => panic!("read failed: {status:?}"),
        }
    }

    /// Lets the dispatcher and the readers run what is ready.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn followers_share_one_read_per_commit_and_none_while_idle() {
        let store = FakeStore::new();
        store.append("deal");
        let hub = WatchHub::new(store.clone());
        let mut followers: Vec<Following> = (0..100).map(|_| hub.follow("deal", 1)).collect();
        settle().await;
        assert_eq!(store.history_reads(), 0, "nothing read before a commit");

        let sequence = store.append("deal");
        // PostgreSQL announces a commit twice: from the writing process, and by NOTIFY.
        store.announce("deal", sequence);
        store.announce("deal", sequence);
        for following in &mut followers {
            assert_eq!(next_sequence(following).await, 2);
        }
        settle().await;
        assert_eq!(
            store.history_reads(),
            1,
            "one read for 100 followers and two announcements"
        );
    }

    #[tokio::test]
    async fn missed_announcements_make_every_reader_read_once() {
        let store = FakeStore::new();
        store.append("a");
        store.append("b");
        let hub = WatchHub::new(store.clone());
        let mut a = hub.follow("a", 1);
        let mut b = hub.follow("b", 1);
        // Committed while the listener was down: never announced.
        store.append("a");
        store.append("b");
        store.announce_missed();
        assert_eq!(next_sequence(&mut a).await, 2);
        assert_eq!(next_sequence(&mut b).await, 2);
        settle().await;
        assert_eq!(store.history_reads(), 2);
    }

    #[tokio::test]
    async fn the_reader_leaves_with_its_last_follower() {
        let store = FakeStore::new();
        store.append("deal");
        let hub = WatchHub::new(store.clone());
        let first = hub.follow("deal", 1);
        let second = hub.follow("deal", 1);
        drop(first);
        assert_eq!(lock(&hub.feeds).readers["deal"].followers, 1);
        drop(second);
        assert!(lock(&hub.feeds).readers.is_empty());
        // A stopped reader reads nothing more.
        let sequence = store.append("deal");
        store.announce("deal", sequence);
        settle().await;
        assert_eq!(store.history_reads(), 0);
    }

    #[tokio::test]
    async fn the_store_is_followed_only_while_an_offering_is_watched() {
        let store = FakeStore::new();
        store.append("a");
        store.append("b");
        let hub = WatchHub::new(store.clone());
        settle().await;
        assert_eq!(store.followers(), 0, "no stream, no follower");

        let a = hub.follow("a", 1);
        assert_eq!(store.followers(), 1, "followed before follow returns");
        let b = hub.follow("b", 1);
        assert_eq!(store.followers(), 1, "one follower per process");
        drop(a);
        settle().await;
        assert_eq!(store.followers(), 1, "b is still watched");
        drop(b);
        settle().await;
        assert_eq!(store.followers(), 0, "left with the last stream");

        // Watched again: followed again, and announcements reach the new reader.
        let mut a = hub.follow("a", 1);
        let sequence = store.append("a");
        store.announce("a", sequence);
        assert_eq!(next_sequence(&mut a).await, 2);
    }
}
