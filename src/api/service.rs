//! The service's state: the store, the group committer, and what bounds the work callers can
//! make one process do (watch streams, verifications). Handlers reach it as `service`; the
//! tonic trait impl in `mod.rs` hands each RPC to its handler.

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::auth;
use super::call::Call;
use super::error::ApiError;
use super::watch;
use crate::group_commit::GroupCommitter;
use crate::ledger;
use crate::signing::DigestKeys;
use crate::store::Store;
use crate::telemetry::metrics;

/// VerifyOffering calls running at once per process. Each holds a pooled connection for as long
/// as it reads the offering's whole history (seconds at a million entries); more at once would
/// take the pool from the writes. Others wait their turn, holding no connection.
pub const VERIFY_RUNNING_MAX: usize = 1;
/// VerifyOffering calls running or waiting per process; past it a call is refused.
pub const VERIFY_ADMITTED_MAX: usize = 64;

/// Bounds on what callers can make one process hold.
#[derive(Clone, Copy, Debug)]
pub struct ServiceLimits {
    /// WatchHistory streams open at once.
    pub max_watch_streams: usize,
    /// WatchHistory streams one principal (or, anonymous, one peer address) may hold open.
    pub max_watch_streams_per_principal: usize,
    /// Investors one offering may have positions for.
    pub max_investors_per_offering: i64,
}

impl Default for ServiceLimits {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            max_watch_streams: 1_000,
            max_watch_streams_per_principal: 100,
            max_investors_per_offering: ledger::limits::INVESTORS_PER_OFFERING_DEFAULT,
        }
    }
}

/// The SubscriptionLedger service, one per process, shared by every connection.
pub struct LedgerService<S> {
    pub(super) store: S,
    pub(super) committer: GroupCommitter<S>,
    /// Cancelled when the server shuts down: ends the WatchHistory streams, which would
    /// otherwise hold a graceful shutdown open forever.
    pub(super) shutdown: CancellationToken,
    pub(super) watch_slots: watch::slots::WatchSlots,
    /// The shared reader of each offering watched on this process.
    pub(super) watch_hub: watch::hub::WatchHub<S>,
    pub(super) verifications_admitted: Semaphore,
    pub(super) verifications_running: Semaphore,
    /// When each offering that failed verification last raised an alarm.
    pub(super) verification_alarms: AlarmThrottle,
    /// The ledger's id, which every digest carries (read at start-up; it never changes).
    pub(super) ledger_id: uuid::Uuid,
    /// How digests are signed and which signed ones are believed.
    pub(super) digest_keys: DigestKeys,
    /// Each RPC's metric handles, registered once.
    rpc_metrics: std::collections::HashMap<&'static str, metrics::RpcMetrics>,
}

impl<S: Store> LedgerService<S> {
    pub fn new(store: S, limits: ServiceLimits, shutdown: CancellationToken) -> Self {
        Self {
            committer: GroupCommitter::new(store.clone())
                .with_investors_max(limits.max_investors_per_offering),
            watch_hub: watch::hub::WatchHub::new(store.clone()),
            store,
            shutdown,
            watch_slots: watch::slots::WatchSlots::new(
                limits.max_watch_streams,
                limits.max_watch_streams_per_principal,
            ),
            verifications_admitted: Semaphore::new(VERIFY_ADMITTED_MAX),
            verifications_running: Semaphore::new(VERIFY_RUNNING_MAX),
            verification_alarms: AlarmThrottle::default(),
            ledger_id: uuid::Uuid::nil(),
            digest_keys: DigestKeys::default(),
            rpc_metrics: auth::RPC_ROLES
                .iter()
                .map(|(method, _)| (*method, metrics::RpcMetrics::new(method)))
                .collect(),
        }
    }

    /// Serves the ledger `ledger_id`, signing and checking digests with `keys`.
    pub fn with_digest_keys(mut self, ledger_id: uuid::Uuid, keys: DigestKeys) -> Self {
        self.ledger_id = ledger_id;
        self.digest_keys = keys;
        self
    }

    /// A call's span and metric handles (registered once per RPC, at start-up).
    pub(super) fn call(&self, method: &'static str, offering_id: &str, request_id: &str) -> Call {
        let metrics = match self.rpc_metrics.get(method) {
            Some(metrics) => metrics.clone(),
            None => metrics::RpcMetrics::new(method),
        };
        Call::new(method, offering_id, request_id, metrics)
    }

    /// The offering's head, or OFFERING_NOT_FOUND.
    pub(super) async fn require_offering(
        &self,
        offering_id: &str,
    ) -> Result<ledger::Offering, ApiError> {
        self.store.get_offering(offering_id).await?.ok_or_else(|| {
            ledger::Rejection::OfferingNotFound {
                offering_id: offering_id.to_owned(),
            }
            .into()
        })
    }
}

/// One alarm per key per minute: an offering whose history is broken, verified by everyone
/// every second, logs one ERROR a minute. Keys are offerings that failed verification, few by
/// nature; those silent for a minute are forgotten.
#[derive(Default)]
pub(super) struct AlarmThrottle {
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl AlarmThrottle {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// True if `key` raised no alarm in the last minute; it has now.
    pub(super) fn first_within_a_minute(&self, key: &str) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().expect("alarm throttle lock");
        last.retain(|_, at| now.duration_since(*at) < Self::EVERY);
        if last.contains_key(key) {
            return false;
        }
        last.insert(key.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_is_raised_once_per_key_per_minute() {
        let alarms = AlarmThrottle::default();
        assert!(alarms.first_within_a_minute("deal"));
        assert!(!alarms.first_within_a_minute("deal"));
        assert!(alarms.first_within_a_minute("other"));
        let an_hour_ago = std::time::Instant::now() - std::time::Duration::from_secs(3600);
        alarms
            .last
            .lock()
            .unwrap()
            .insert("deal".into(), an_hour_ago);
        assert!(alarms.first_within_a_minute("deal"));
    }
}
