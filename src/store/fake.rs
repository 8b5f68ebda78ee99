//! One fake [`Store`] for the unit tests of what sits on a store (the group committer, the watch
//! hub), so that each tests its own rules without a database.
//!
//! Its transactions wait at a gate the test opens, then do what the test scripted next (fail,
//! panic) or apply nothing (every request answered "offering not found"). Its history is what
//! the test appends, announced when the test says so, and every history read is counted. What
//! no unit test needs (offerings, positions, snapshots) is unreachable.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, broadcast};

use super::{
    Backlog, Change, Changes, HistoryQuery, Lease, PoolStats, SnapshotReader, StartAt, Store,
    StoreError,
};
use crate::ledger::{
    CreateOutcome, Entry, EntryKind, NewOffering, Offering, OfferingRequests, Position, Rejection,
    Results, testing::every_field,
};

/// What the fake's next transaction does instead of applying nothing.
pub enum Step {
    /// Fails as an unreachable database does.
    Fail,
    /// Panics, as a bug would.
    Panic,
}

#[derive(Clone)]
pub struct FakeStore {
    /// A transaction takes a permit before it runs.
    gate: Arc<Semaphore>,
    script: Arc<Mutex<VecDeque<Step>>>,
    transactions: Arc<AtomicUsize>,
    entries: Arc<Mutex<Vec<Entry>>>,
    history_reads: Arc<AtomicUsize>,
    changes: broadcast::Sender<Change>,
}

impl FakeStore {
    /// A store whose transactions run at once, with no history.
    pub fn new() -> Self {
        Self::gated(Semaphore::MAX_PERMITS)
    }

    /// A store whose first `permits` transactions run at once; later ones wait for
    /// [`FakeStore::let_through`].
    pub fn gated(permits: usize) -> Self {
        Self {
            gate: Arc::new(Semaphore::new(permits)),
            script: Arc::default(),
            transactions: Arc::default(),
            entries: Arc::default(),
            history_reads: Arc::default(),
            changes: broadcast::channel(16).0,
        }
    }

    /// What the next transactions do, one step each, before they go back to applying nothing.
    pub fn scripted(self, steps: Vec<Step>) -> Self {
        *self.script.lock().unwrap() = steps.into();
        self
    }

    /// Lets `transactions` more transactions through the gate.
    pub fn let_through(&self, transactions: usize) {
        self.gate.add_permits(transactions);
    }

    /// Transactions that went through the gate.
    pub fn transactions(&self) -> usize {
        self.transactions.load(Ordering::SeqCst)
    }

    /// Appends the offering's next entry (a Subscribe); returns its sequence.
    pub fn append(&self, offering_id: &str) -> i64 {
        let mut entries = self.entries.lock().unwrap();
        let sequence = 1 + entries
            .iter()
            .filter(|e| e.offering_id == offering_id)
            .count() as i64;
        entries.push(Entry {
            offering_id: offering_id.to_owned(),
            sequence,
            kind: EntryKind::Subscribed,
            request_id: format!("r{sequence}"),
            ..every_field::entry()
        });
        sequence
    }

    /// Announces a commit of the offering, as a store does after each.
    pub fn announce(&self, offering_id: &str, version: i64) {
        let change = Change::Committed {
            offering_id: offering_id.into(),
            version,
        };
        self.changes.send(change).unwrap();
    }

    /// Says that commits may have gone unannounced, as PostgreSQL's listener does once back.
    pub fn announce_missed(&self) {
        self.changes.send(Change::Missed).unwrap();
    }

    /// History reads so far (`list_history`).
    pub fn history_reads(&self) -> usize {
        self.history_reads.load(Ordering::SeqCst)
    }

    /// Who follows the changes now.
    pub fn followers(&self) -> usize {
        self.changes.receiver_count()
    }
}

impl Store for FakeStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ledger_id(&self) -> Result<uuid::Uuid, StoreError> {
        Ok(uuid::Uuid::nil())
    }

    async fn create_offering(
        &self,
        _: &NewOffering,
        _: Instant,
    ) -> Result<Result<CreateOutcome, Rejection>, StoreError> {
        unreachable!("no unit test creates")
    }

    async fn apply(&self, work: &[OfferingRequests], _: Instant) -> Result<Results, StoreError> {
        let _pass = self.gate.acquire().await.expect("gate open");
        self.transactions.fetch_add(1, Ordering::SeqCst);
        let step = self.script.lock().unwrap().pop_front();
        match step {
            Some(Step::Fail) => return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            Some(Step::Panic) => panic!("a bug in a transaction"),
            None => {}
        }
        Ok(work
            .iter()
            .map(|item| {
                let missing = Rejection::OfferingNotFound {
                    offering_id: item.offering_id.to_string(),
                };
                item.requests.iter().map(|_| Err(missing.clone())).collect()
            })
            .collect())
    }

    async fn get_offering(&self, _: &str) -> Result<Option<Offering>, StoreError> {
        unreachable!("every commit is announced (PostgreSQL-like): no head is polled")
    }

    async fn list_offerings(&self, _: Option<&str>, _: u32) -> Result<Vec<Offering>, StoreError> {
        unreachable!("no unit test lists offerings")
    }

    async fn get_position(&self, _: &str, _: &str) -> Result<Option<Position>, StoreError> {
        unreachable!("no unit test reads positions")
    }

    async fn read_snapshot<R: SnapshotReader>(
        &self,
        _: &str,
        _: &mut R,
    ) -> Result<bool, StoreError> {
        unreachable!("no unit test reads snapshots")
    }

    async fn list_history(&self, query: HistoryQuery<'_>) -> Result<Vec<Entry>, StoreError> {
        self.history_reads.fetch_add(1, Ordering::SeqCst);
        let entries = self.entries.lock().unwrap();
        Ok(entries
            .iter()
            .filter(|e| e.offering_id == query.offering_id)
            .filter(|e| e.sequence > query.after_sequence)
            .take(query.limit as usize)
            .cloned()
            .collect())
    }

    async fn tree_rows(
        &self,
        _: &str,
        _: &[crate::ledger::merkle::NodeRange],
    ) -> Result<Vec<Vec<crate::ledger::chain::Hash>>, StoreError> {
        unreachable!("no unit test reads the Merkle tree")
    }

    fn changes(&self) -> Changes {
        Changes::new(self.changes.subscribe(), None)
    }

    fn unannounced_commits_poll(&self) -> Option<Duration> {
        None
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: 0,
            idle: 0,
            max: 0,
            primary: None,
        }
    }

    async fn take_publication_lease(
        &self,
        _: &Lease<'_>,
        _: StartAt,
    ) -> Result<Option<i64>, StoreError> {
        unreachable!("no unit test publishes")
    }

    async fn renew_publication_lease(&self, _: &Lease<'_>, _: i64) -> Result<bool, StoreError> {
        unreachable!("no unit test publishes")
    }

    async fn release_publication_lease(&self, _: &str, _: i64) -> Result<(), StoreError> {
        unreachable!("no unit test publishes")
    }

    async fn publication_backlog(
        &self,
        _: Option<&str>,
        _: u32,
    ) -> Result<Vec<Backlog>, StoreError> {
        unreachable!("no unit test publishes")
    }

    async fn advance_publication_cursor(
        &self,
        _: &str,
        _: i64,
        _: &str,
        _: i64,
    ) -> Result<bool, StoreError> {
        unreachable!("no unit test publishes")
    }
}
