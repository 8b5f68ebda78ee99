//! Group commit: concurrent mutations share transactions.
//!
//! Every mutation of an offering serializes on its head lock, so while one transaction for an
//! offering is in flight, another would only wait for it. Instead, requests that arrive at this
//! process meanwhile queue up, and go together into the next transaction for that offering: one
//! lock, each request validated in order against the running totals, one commit, then every
//! caller answered with its own result.
//!
//! A transaction may also carry several offerings (each locked, in offering_id order): with
//! calls spread over many offerings, one commit then serves many of them, instead of one commit
//! per call. One transaction is in flight per process, and what queues meanwhile goes into the
//! next: the fewer the commits, the less CPU and WAL each call costs. A second one starts only
//! if the first has stalled (no transaction started or ended for STALLED_AFTER: a head held
//! elsewhere, a slow disk), so that one stuck offering does not hold up the others. An offering
//! is in at most one transaction. A lone request starts a transaction at once when none is in
//! flight: nobody waits for company.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::ledger::{Applied, OfferingRequests, Rejection, Request, Results};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::CommitMetrics;

/// Requests in one transaction at most: bounds lock hold times and a statement's size.
pub const BATCH_REQUESTS_MAX: usize = 256;
/// Requests queued for one offering at most; past it a call is refused (RESOURCE_EXHAUSTED)
/// rather than queued behind seconds of work.
pub const QUEUE_REQUESTS_MAX: usize = 16 * BATCH_REQUESTS_MAX;
/// Requests queued over all offerings at most, per process: bounds the memory that callers
/// spread over many offerings can pin while the database is slow (each holds its request and
/// its gRPC call). Four offerings' worth of full queues.
pub const QUEUED_REQUESTS_TOTAL_MAX: usize = 4 * QUEUE_REQUESTS_MAX;
/// Transactions in flight at once per process, the second only past STALLED_AFTER. Fewer in
/// flight means larger batches, so fewer commits for the same calls: measured on PostgreSQL with
/// 3 replicas and calls spread over 1,000 offerings, one at a time served 43% more calls at 64
/// in flight and 25% more at 16 than two at a time, and four or eight fewer still
/// (BENCHMARKS.md).
pub const TRANSACTIONS_IN_FLIGHT_MAX: usize = 2;
/// With a transaction in flight, a second starts only when no transaction has started or ended
/// for this long: far above a healthy transaction (a few ms), far below lock_timeout (10 s).
pub const STALLED_AFTER: Duration = Duration::from_millis(50);

/// One request's outcome: applied or rejected by a rule, or its transaction failed as a whole.
pub type Outcome = Result<Result<Applied, Rejection>, Arc<StoreError>>;

/// Which queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueScope {
    /// This offering's, on this process.
    Offering,
    /// This process's, over all offerings.
    Replica,
}

#[derive(Debug, thiserror::Error)]
#[error("{limit} requests are already queued {}; retry later", match .scope {
    QueueScope::Offering => "for this offering on this replica",
    QueueScope::Replica => "on this replica",
})]
pub struct QueueFull {
    pub scope: QueueScope,
    pub limit: usize,
}

struct Pending {
    request: Request,
    /// How long the caller waits; its transaction tries through a failover until then.
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// What waits, and what is in flight. Changed only under its mutex, so a worker that finds
/// nothing to take and retires can never strand a request: whoever queues next sees the free
/// worker slot, and whoever finishes a transaction looks again.
#[derive(Default)]
struct State {
    queued: HashMap<Arc<str>, Vec<Pending>>,
    /// Offerings with queued requests, oldest first: no offering is starved by busier ones.
    ready: VecDeque<Arc<str>>,
    /// Offerings in a transaction now; their newer requests wait for the next one.
    in_flight: HashSet<Arc<str>>,
    /// Requests in `queued`, over all offerings.
    queued_total: usize,
    workers: usize,
    /// When a transaction last started or ended: how a stall is told.
    last_progress: Option<Instant>,
}

impl State {
    /// The committer's one rule: an offering is in `ready` exactly when it has queued requests
    /// and is in no transaction. Called wherever either side of that may have changed.
    /// `offering_id` must not be in `ready` already: callers pass one that was just queued for
    /// the first time, or one whose transaction just ended (neither can be ready).
    fn make_ready_if_idle(&mut self, offering_id: &Arc<str>) {
        if self.queued.contains_key(offering_id) && !self.in_flight.contains(offering_id) {
            self.ready.push_back(offering_id.clone());
        }
        self.debug_check();
    }

    /// No worker is running, or the ones running have stalled and there is room for one more.
    fn may_start_worker(&self) -> bool {
        match self.workers {
            0 => true,
            n if n < TRANSACTIONS_IN_FLIGHT_MAX => self
                .last_progress
                .is_some_and(|progress| progress.elapsed() >= STALLED_AFTER),
            _ => false,
        }
    }

    /// A transaction for these offerings ended (committed, failed or panicked).
    fn finish(&mut self, offerings: &[Arc<str>]) {
        for offering_id in offerings {
            self.in_flight.remove(offering_id);
            self.make_ready_if_idle(offering_id);
        }
    }

    /// The rule above, and the counts, asserted in debug builds (tests run them).
    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let mut seen = HashSet::with_capacity(self.ready.len());
            for offering_id in &self.ready {
                assert!(
                    self.queued.contains_key(offering_id),
                    "ready but nothing queued"
                );
                assert!(
                    !self.in_flight.contains(offering_id),
                    "ready while in flight"
                );
                assert!(seen.insert(offering_id), "ready twice");
            }
            for offering_id in self.queued.keys() {
                let waiting = self.in_flight.contains(offering_id) || seen.contains(offering_id);
                assert!(
                    waiting,
                    "queued but neither ready nor in flight: it would wait forever"
                );
            }
            let queued: usize = self.queued.values().map(Vec::len).sum();
            assert_eq!(
                queued, self.queued_total,
                "queued_total counts every queued request"
            );
            assert!(self.workers <= TRANSACTIONS_IN_FLIGHT_MAX);
        }
    }
}

#[derive(Clone)]
pub struct GroupCommitter<S> {
    store: S,
    state: Arc<Mutex<State>>,
    metrics: Arc<CommitMetrics>,
    /// Investors an offering may have positions for: the ledger refuses a new one past it.
    investors_max: i64,
}

impl<S: Store> GroupCommitter<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            state: Arc::default(),
            metrics: Arc::new(CommitMetrics::new()),
            investors_max: crate::ledger::limits::INVESTORS_PER_OFFERING_DEFAULT,
        }
    }

    /// The same committer, with at most `investors_max` positions per offering.
    pub fn with_investors_max(self, investors_max: i64) -> Self {
        Self {
            investors_max,
            ..self
        }
    }

    /// Queues `request` for `offering_id` and waits for the transaction that applies it, which
    /// tries through a failover until `deadline`. The request is applied even if the caller
    /// stops waiting: a retry will find it recorded.
    pub async fn submit(
        &self,
        offering_id: &str,
        request: Request,
        deadline: Instant,
    ) -> Result<Outcome, QueueFull> {
        let (reply, outcome) = oneshot::channel();
        let start_worker = {
            let mut state = lock(&self.state);
            if state.queued_total >= QUEUED_REQUESTS_TOTAL_MAX {
                return Err(QueueFull {
                    scope: QueueScope::Replica,
                    limit: QUEUED_REQUESTS_TOTAL_MAX,
                });
            }
            if state.queued.get(offering_id).map_or(0, Vec::len) >= QUEUE_REQUESTS_MAX {
                return Err(QueueFull {
                    scope: QueueScope::Offering,
                    limit: QUEUE_REQUESTS_MAX,
                });
            }
            state.queued_total += 1;
            let pending = Pending {
                request,
                deadline,
                reply,
            };
            match state.queued.get_mut(offering_id) {
                Some(queue) => queue.push(pending),
                None => {
                    let offering_id: Arc<str> = offering_id.into();
                    state.queued.insert(offering_id.clone(), vec![pending]);
                    state.make_ready_if_idle(&offering_id);
                }
            }
            let start = !state.ready.is_empty() && state.may_start_worker();
            if start {
                state.workers += 1;
            }
            start
        };
        // Metrics outside the lock: the critical section stays as short as without them.
        self.metrics.queued.increment(1);
        if start_worker {
            tokio::spawn(self.clone().run_worker());
        }
        // A worker answers every request it takes, even when its transaction fails.
        Ok(outcome.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::Corrupt(
                "group commit worker stopped".into(),
            )))
        }))
    }

    /// Runs transactions until nothing is ready, then retires.
    async fn run_worker(self) {
        let mut guard = WorkerGuard {
            committer: &self,
            taken: Vec::new(),
        };
        loop {
            let (work, replies, deadline) = match self.take_batch(&guard.taken) {
                Some(batch) => batch,
                None => break,
            };
            guard.taken = work.iter().map(|item| item.offering_id.clone()).collect();
            let requests: usize = work.iter().map(|item| item.requests.len()).sum();
            let metrics = &self.metrics;
            metrics.queued.decrement(requests as f64);
            metrics.requests.record(requests as f64);
            metrics.offerings.record(work.len() as f64);
            metrics.in_flight.increment(1);
            let started = Instant::now();
            let (applied, work) = self.apply(work, deadline).await;
            metrics.duration.record(started.elapsed().as_secs_f64());
            metrics.in_flight.decrement(1);
            match applied {
                Ok(results) => answer(replies, results),
                // One offering's trouble (a head locked elsewhere past lock_timeout, say) must
                // not fail the others that shared its transaction: try each on its own.
                Err(error) if work.len() > 1 && error.may_concern_one_offering() => {
                    for (item, offering_replies) in work.iter().zip(replies) {
                        match self.store.apply(std::slice::from_ref(item), deadline).await {
                            Ok(results) => answer(vec![offering_replies], results),
                            Err(error) => fail(offering_replies, error),
                        }
                    }
                }
                Err(error) => fail(replies.into_iter().flatten().collect(), error),
            }
        }
    }

    /// One transaction of `work` (given back with its result). A batch that handles every
    /// investor of an offering (an allocation, an amendment of the per-investor cap) is seconds
    /// of CPU at a million investors, reading the rows, deciding, hashing and writing: it runs
    /// on a blocking thread, which drives the store itself, so that the runtime's threads stay
    /// free for every other call.
    async fn apply(
        &self,
        work: Vec<OfferingRequests>,
        deadline: Instant,
    ) -> (Result<Results, StoreError>, Vec<OfferingRequests>) {
        if !work.iter().any(OfferingRequests::handles_every_investor) {
            return (self.store.apply(&work, deadline).await, work);
        }
        let store = self.store.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let applied = runtime.block_on(store.apply(&work, deadline));
            (applied, work)
        })
        .await
        .unwrap_or_else(|stopped| std::panic::resume_unwind(stopped.into_panic()))
    }

    /// Marks the offerings of the last transaction done, then takes up to BATCH_REQUESTS_MAX
    /// queued requests, whole offerings in the order they became ready, with the latest of
    /// their callers' deadlines. None (and the worker retires) when nothing is ready.
    #[allow(clippy::type_complexity)]
    fn take_batch(
        &self,
        done: &[Arc<str>],
    ) -> Option<(
        Vec<OfferingRequests>,
        Vec<Vec<oneshot::Sender<Outcome>>>,
        Instant,
    )> {
        let mut guard = lock(&self.state);
        // One &mut for the whole body, so that its fields can be borrowed apart.
        let state = &mut *guard;
        state.finish(done);
        state.last_progress = Some(Instant::now());
        let mut work = Vec::new();
        let mut replies = Vec::new();
        let mut taken = 0;
        let mut deadline = Instant::now();
        while taken < BATCH_REQUESTS_MAX {
            let Some(offering_id) = state.ready.pop_front() else {
                break;
            };
            let Some(queue) = state.queued.get_mut(&offering_id) else {
                continue;
            };
            let take = queue.len().min(BATCH_REQUESTS_MAX - taken);
            let batch: Vec<Pending> = queue.drain(..take).collect();
            state.queued_total -= batch.len();
            if queue.is_empty() {
                state.queued.remove(&offering_id);
            }
            // A partly taken offering stays out of `ready` until this transaction ends.
            state.in_flight.insert(offering_id.clone());
            taken += batch.len();
            deadline = batch
                .iter()
                .map(|p| p.deadline)
                .fold(deadline, Instant::max);
            let (requests, offering_replies): (Vec<Request>, Vec<_>) =
                batch.into_iter().map(|p| (p.request, p.reply)).unzip();
            work.push(OfferingRequests {
                offering_id,
                requests,
                investors_max: self.investors_max,
            });
            replies.push(offering_replies);
        }
        if work.is_empty() {
            state.workers -= 1;
            return None;
        }
        Some((work, replies, deadline))
    }
}

/// Sends each request its result, offering by offering.
fn answer(replies: Vec<Vec<oneshot::Sender<Outcome>>>, results: crate::ledger::Results) {
    debug_assert_eq!(results.len(), replies.len());
    for (offering_replies, offering_results) in replies.into_iter().zip(results) {
        for (reply, result) in offering_replies.into_iter().zip(offering_results) {
            let _ = reply.send(Ok(result));
        }
    }
}

/// Tells every request of a failed transaction why.
fn fail(replies: Vec<oneshot::Sender<Outcome>>, error: StoreError) {
    let error = Arc::new(error);
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave State half-changed in a way that matters
    // more than refusing all further calls would.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Should a worker panic (a bug), its slot and its offerings must be released and the queue
/// picked up again, or later requests for them would wait forever. Dropping the panicked batch's
/// replies answers those callers with an error.
struct WorkerGuard<'a, S: Store> {
    committer: &'a GroupCommitter<S>,
    taken: Vec<Arc<str>>,
}

impl<S: Store> Drop for WorkerGuard<'_, S> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut state = lock(&self.committer.state);
        state.finish(&self.taken);
        // This worker's slot passes to a fresh worker if anything is waiting.
        if state.ready.is_empty() {
            state.workers -= 1;
        } else {
            tokio::spawn(self.committer.clone().run_worker());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Command;
    use crate::store::fake::{FakeStore, Step};

    /// A caller's deadline that no test reaches.
    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn request(n: usize) -> Request {
        Request {
            request_id: format!("r{n}"),
            actor: "test".into(),
            command: Command::Subscribe {
                investor_id: "alice".into(),
                units: 1,
            },
        }
    }

    /// While the database is stuck, queues fill up to their bounds and no further: one
    /// offering's at QUEUE_REQUESTS_MAX, all of them together at QUEUED_REQUESTS_TOTAL_MAX.
    /// Once it moves again, every request that was queued is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queues_are_bounded_per_offering_and_per_process() {
        let store = FakeStore::gated(0);
        let committer = GroupCommitter::new(store.clone());
        let mut queued = Vec::new();
        // Polled once, a submission is queued (Pending) or refused (Ready) at once.
        let mut submit_until_full = |offering: &dyn Fn(usize) -> String, n: &mut usize| loop {
            let (committer, offering_id, request) = (committer.clone(), offering(*n), request(*n));
            let mut call =
                Box::pin(async move { committer.submit(&offering_id, request, soon()).await });
            *n += 1;
            match futures::FutureExt::now_or_never(&mut call) {
                None => queued.push(call),
                Some(Err(full)) => return full,
                Some(Ok(outcome)) => panic!("answered while the store is stuck: {outcome:?}"),
            }
        };
        let mut n = 0;
        let full = submit_until_full(&|_| "hot".to_owned(), &mut n);
        assert_eq!(full.scope, QueueScope::Offering);
        // The transactions in flight took some requests of "hot"; its queue holds the rest.
        let in_flight = n - 1 - QUEUE_REQUESTS_MAX;
        assert!((1..=TRANSACTIONS_IN_FLIGHT_MAX * BATCH_REQUESTS_MAX).contains(&in_flight));
        let full = submit_until_full(&|n| format!("o{}", n % 64), &mut n);
        assert_eq!(full.scope, QueueScope::Replica);
        assert_eq!(
            lock(&committer.state).queued_total,
            QUEUED_REQUESTS_TOTAL_MAX
        );

        store.let_through(1_000_000);
        for call in queued {
            let outcome = call.await;
            assert!(matches!(
                outcome,
                Ok(Ok(Err(Rejection::OfferingNotFound { .. })))
            ));
        }
        assert_eq!(lock(&committer.state).queued_total, 0);
    }

    fn not_found(outcome: &Outcome) -> bool {
        matches!(outcome, Ok(Err(Rejection::OfferingNotFound { .. })))
    }

    /// A transaction that fails answers each of its callers with the error; the next one, for
    /// the same offering, goes on as usual.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_answers_its_callers_and_the_next_goes_on() {
        let store = FakeStore::new().scripted(vec![Step::Fail]);
        let committer = GroupCommitter::new(store.clone());
        let failed = committer.submit("deal", request(1), soon()).await.unwrap();
        assert!(matches!(&failed, Err(error) if matches!(**error, StoreError::Unavailable(_))));
        let next = committer.submit("deal", request(2), soon()).await.unwrap();
        assert!(not_found(&next), "{next:?}");
        // Retrying through a failover is the store's part, not the committer's.
        assert_eq!(store.transactions(), 2, "each call once");
        retired(&committer).await;
    }

    /// Waits (briefly) for every worker to retire: a worker answers its callers before it looks
    /// for more work and finds none.
    async fn retired(committer: &GroupCommitter<FakeStore>) {
        for _ in 0..1000 {
            if lock(&committer.state).workers == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("a worker did not retire");
    }

    /// While a transaction is in flight, what arrives waits for it (one commit for all), until
    /// the transaction has stalled for STALLED_AFTER: then a second one starts, so that one stuck
    /// offering does not hold up the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_transaction_starts_only_when_the_first_has_stalled() {
        let store = FakeStore::gated(0);
        let committer = GroupCommitter::new(store.clone());
        let submit = |offering: &str, n| {
            let (committer, offering) = (committer.clone(), offering.to_owned());
            tokio::spawn(async move { committer.submit(&offering, request(n), soon()).await })
        };
        let in_flight = |offering: &str| lock(&committer.state).in_flight.contains(offering);
        let stuck = submit("stuck", 1);
        while !in_flight("stuck") {
            tokio::task::yield_now().await;
        }
        let early = submit("early", 2);
        tokio::time::sleep(STALLED_AFTER / 5).await;
        assert_eq!(lock(&committer.state).workers, 1, "no second worker yet");
        assert!(
            !in_flight("early"),
            "it waits for the transaction in flight"
        );

        tokio::time::sleep(STALLED_AFTER).await;
        let late = submit("late", 3);
        while !in_flight("late") {
            tokio::task::yield_now().await;
        }
        assert_eq!(lock(&committer.state).workers, 2);
        assert!(
            in_flight("early"),
            "the second transaction takes everything ready"
        );

        store.let_through(1_000);
        for call in [stuck, early, late] {
            assert!(not_found(&call.await.unwrap().unwrap()));
        }
        retired(&committer).await;
    }

    /// A worker that panics (a bug) answers its callers with an error, gives its slot back, and
    /// the requests queued behind it are still applied: nobody waits forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_transaction_answers_its_callers_and_the_queue_goes_on() {
        let store = FakeStore::gated(0).scripted(vec![Step::Panic]);
        let committer = GroupCommitter::new(store.clone());
        let calls: Vec<_> = (0..20)
            .map(|n| {
                let committer = committer.clone();
                tokio::spawn(async move {
                    committer
                        .submit(&format!("o{}", n % 4), request(n), soon())
                        .await
                })
            })
            .collect();
        loop {
            let waiting = {
                let state = lock(&committer.state);
                state.queued_total + state.in_flight.len()
            };
            if waiting >= 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        store.let_through(1_000);
        let (mut errors, mut applied) = (0, 0);
        for call in calls {
            match call.await.unwrap().unwrap() {
                Err(_) => errors += 1,
                outcome if not_found(&outcome) => applied += 1,
                outcome => panic!("{outcome:?}"),
            }
        }
        assert!(errors >= 1, "the panicked transaction's callers are told");
        assert_eq!(errors + applied, 20, "every caller is answered");
        let later = committer.submit("o1", request(99), soon()).await.unwrap();
        assert!(not_found(&later));
        retired(&committer).await;
        assert_eq!(lock(&committer.state).queued_total, 0);
    }
}
