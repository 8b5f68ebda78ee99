//! Group commit: concurrent requests for one offering share one transaction.
//!
//! Every mutation of an offering serializes on its head lock, so while one transaction for the
//! offering is in flight, any other would only wait for it. Instead, requests that arrive at this
//! process meanwhile queue up, and the offering's worker applies them together in its next
//! transaction: one lock, each request validated in order against the running totals, one commit,
//! then every caller answered with its own result. A lone request starts a worker and is applied
//! at once: nobody waits for company.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::ledger::{Applied, Rejection, Request};
use crate::store::{Store, StoreError};

/// Requests applied in one transaction at most: bounds the lock hold time and a statement's size.
pub const BATCH_REQUESTS_MAX: usize = 256;
/// Requests queued for one offering at most; past it a call is refused (RESOURCE_EXHAUSTED)
/// rather than queued behind minutes of work.
pub const QUEUE_REQUESTS_MAX: usize = 16 * BATCH_REQUESTS_MAX;

/// One request's outcome: applied or rejected by a rule, or the transaction failed as a whole.
pub type Outcome = Result<Result<Applied, Rejection>, Arc<StoreError>>;

#[derive(Debug, thiserror::Error)]
#[error("{queued} requests are already queued for this offering")]
pub struct QueueFull {
    pub queued: usize,
}

struct Pending {
    request: Request,
    reply: oneshot::Sender<Outcome>,
}

/// Offerings with a worker running, and the requests waiting for its next transaction.
/// An offering is in the map exactly while its worker runs.
type Queues = HashMap<Arc<str>, Vec<Pending>>;

#[derive(Clone)]
pub struct GroupCommitter<S> {
    store: S,
    queues: Arc<Mutex<Queues>>,
}

impl<S: Store> GroupCommitter<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            queues: Arc::default(),
        }
    }

    /// Queues `request` for `offering_id` and waits for the transaction that applies it.
    /// The request is applied even if the caller stops waiting: a retry will find it recorded.
    pub async fn submit(&self, offering_id: &str, request: Request) -> Result<Outcome, QueueFull> {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending { request, reply };
        let start_worker = {
            let mut queues = self
                .queues
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match queues.get_mut(offering_id) {
                Some(queue) if queue.len() >= QUEUE_REQUESTS_MAX => {
                    return Err(QueueFull {
                        queued: queue.len(),
                    });
                }
                Some(queue) => {
                    queue.push(pending);
                    None
                }
                None => {
                    let offering_id: Arc<str> = offering_id.into();
                    queues.insert(offering_id.clone(), vec![pending]);
                    Some(offering_id)
                }
            }
        };
        if let Some(offering_id) = start_worker {
            tokio::spawn(self.clone().run_worker(offering_id));
        }
        // The worker answers every request it takes, even when the transaction fails.
        Ok(outcome.await.unwrap_or_else(|_| {
            Err(Arc::new(StoreError::Corrupt(
                "group commit worker stopped".into(),
            )))
        }))
    }

    /// Applies the offering's queue batch by batch until it is empty, then retires.
    async fn run_worker(self, offering_id: Arc<str>) {
        let _retire_on_panic = RetireOnPanic {
            queues: &self.queues,
            offering_id: &offering_id,
        };
        while let Some(batch) = self.next_batch(&offering_id) {
            let (requests, replies): (Vec<Request>, Vec<_>) =
                batch.into_iter().map(|p| (p.request, p.reply)).unzip();
            match self.store.apply(&offering_id, &requests).await {
                Ok(results) => {
                    debug_assert_eq!(results.len(), replies.len());
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(error) => {
                    let error = Arc::new(error);
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// Takes up to BATCH_REQUESTS_MAX queued requests, or removes the offering (retiring its
    /// worker) when none are left. Both under the map's lock, so a request is never queued for a
    /// worker that has already retired.
    fn next_batch(&self, offering_id: &str) -> Option<Vec<Pending>> {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let queue = queues.get_mut(offering_id)?;
        if queue.is_empty() {
            queues.remove(offering_id);
            return None;
        }
        let take = queue.len().min(BATCH_REQUESTS_MAX);
        Some(queue.drain(..take).collect())
    }
}

/// Should a worker panic (a bug), its offering must not stay marked as having a worker, or every
/// later request for it would queue forever. Dropping the queue answers its callers with an error.
struct RetireOnPanic<'a> {
    queues: &'a Mutex<Queues>,
    offering_id: &'a str,
}

impl Drop for RetireOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queues = self
                .queues
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            queues.remove(self.offering_id);
        }
    }
}
