//! Places among the open WatchHistory streams: at most `max_watch_streams` on the process, and
//! at most `max_per_principal` for one caller, so that one caller cannot take every place.
//! A caller is its principal, or, when anonymous, its peer's IP address (anonymous callers
//! behind one proxy therefore share one quota).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::auth::ANONYMOUS;
use super::super::error::ApiError;
use crate::telemetry::metrics::WATCH_STREAMS;

/// The places of one process.
pub struct WatchSlots {
    total: Arc<Semaphore>,
    max_total: usize,
    max_per_principal: usize,
    /// Streams held per caller; a caller holding none has no key.
    held: Arc<Mutex<HashMap<Arc<str>, usize>>>,
}

impl WatchSlots {
    pub fn new(max_total: usize, max_per_principal: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            max_per_principal,
            held: Arc::default(),
        }
    }

    /// A place for one more stream of `principal` calling from `peer`, or the limit it is past.
    pub fn take(&self, principal: &str, peer: Option<IpAddr>) -> Result<WatchSlot, ApiError> {
        let caller: Arc<str> = match (principal, peer) {
            (ANONYMOUS, Some(ip)) => format!("{ANONYMOUS}@{ip}").into(),
            _ => principal.into(),
        };
        // The process's limit first: past it, another replica is the answer.
        let permit = self.total.clone().try_acquire_owned().map_err(|_| {
            ApiError::LimitReached {
                reason: "TOO_MANY_WATCH_STREAMS",
                limit: self.max_total as u64,
                message: format!(
                    "{} WatchHistory streams are open on this replica, the most it serves; retry later or on another replica",
                    self.max_total
                ),
            }
        })?;
        let mut held = self.held.lock().expect("watch slots lock");
        let count = held.get(&caller).copied().unwrap_or(0);
        if count >= self.max_per_principal {
            return Err(ApiError::LimitReached {
                reason: "TOO_MANY_WATCH_STREAMS_FOR_PRINCIPAL",
                limit: self.max_per_principal as u64,
                message: format!(
                    "{count} WatchHistory streams of this caller are open on this replica, the most one caller may hold; close one, or retry later"
                ),
            });
        }
        held.insert(caller.clone(), count + 1);
        metrics::gauge!(WATCH_STREAMS).increment(1);
        Ok(WatchSlot {
            _permit: permit,
            caller,
            held: self.held.clone(),
        })
    }
}

/// One stream's place, given back when the stream's watcher ends.
pub struct WatchSlot {
    _permit: OwnedSemaphorePermit,
    caller: Arc<str>,
    held: Arc<Mutex<HashMap<Arc<str>, usize>>>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        metrics::gauge!(WATCH_STREAMS).decrement(1);
        let mut held = self.held.lock().expect("watch slots lock");
        if let Some(count) = held.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<WatchSlot, ApiError>) -> &'static str {
        match result {
            Err(ApiError::LimitReached { reason, .. }) => reason,
            Err(other) => panic!("{other:?}"),
            Ok(_) => "taken",
        }
    }

    #[test]
    fn one_principal_cannot_take_every_place() {
        let slots = WatchSlots::new(3, 2);
        let a1 = slots.take("alice", None).unwrap();
        let _a2 = slots.take("alice", None).unwrap();
        assert_eq!(
            reason(slots.take("alice", None)),
            "TOO_MANY_WATCH_STREAMS_FOR_PRINCIPAL"
        );
        let _b1 = slots.take("bob", None).unwrap();
        assert_eq!(reason(slots.take("bob", None)), "TOO_MANY_WATCH_STREAMS");
        drop(a1);
        assert_eq!(reason(slots.take("alice", None)), "taken");
    }

    #[test]
    fn anonymous_callers_are_counted_per_peer_address() {
        let slots = WatchSlots::new(10, 1);
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let _held = slots.take(ANONYMOUS, Some(one)).unwrap();
        assert_eq!(
            reason(slots.take(ANONYMOUS, Some(one))),
            "TOO_MANY_WATCH_STREAMS_FOR_PRINCIPAL"
        );
        assert_eq!(reason(slots.take(ANONYMOUS, Some(two))), "taken");
        // A principal's streams are its own wherever it calls from.
        let _alice = slots.take("alice", Some(one)).unwrap();
        assert_eq!(
            reason(slots.take("alice", Some(two))),
            "TOO_MANY_WATCH_STREAMS_FOR_PRINCIPAL"
        );
    }

    #[test]
    fn a_caller_holding_nothing_leaves_no_key() {
        let slots = WatchSlots::new(10, 5);
        let held = slots.take("alice", None).unwrap();
        drop(held);
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
