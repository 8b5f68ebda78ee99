//! Which replica publishes: the one holding the publication lease (store::publication). The
//! holder renews it often; when it dies, the lease expires and another replica takes it within
//! LEASE_TTL + LEASE_RETRY, far inside JetStream's duplicate window (config::DUPLICATE_WINDOW_MIN).
//!
//! A holder stops publishing on its own when it could not renew in time (LEASE_TTL less a
//! margin, by its own clock, from the start of its last renewal), before the database lets
//! another take over: two publishers at once are then a rare overlap (a pause longer than the
//! margin), whose duplicates JetStream drops by Msg-Id and whose cursor writes the epoch fences.

use std::time::Duration;

use tokio::time::Instant;

use crate::store::{Lease, StartAt, Store, StoreError};

/// How long a lease lasts unless renewed: how long the offerings wait for a dead publisher.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews it, and how often the others try to take it.
pub const LEASE_RETRY: Duration = Duration::from_secs(2);
/// The holder stops this long before its lease could expire: covers the time a renewal takes
/// to reach the database and a drift between the two clocks' rates.
const LEASE_MARGIN: Duration = Duration::from_secs(3);

/// What [`LeaseKeeper::keep`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// Another replica holds it.
    NotHeld,
    /// Taken just now, at this epoch: whatever was published before must be reconciled.
    Taken(i64),
    /// Still held, at this epoch.
    Held(i64),
}

pub struct LeaseKeeper<S> {
    store: S,
    name: &'static str,
    /// This process, for the logs.
    holder: String,
    start: StartAt,
    epoch: Option<i64>,
    /// This process may publish until then.
    valid_until: Instant,
    /// The next renewal or attempt to take.
    next_try: Instant,
}

impl<S: Store> LeaseKeeper<S> {
    pub fn new(store: S, name: &'static str, start: StartAt) -> Self {
        let now = Instant::now();
        Self {
            store,
            name,
            holder: uuid::Uuid::new_v4().to_string(),
            start,
            epoch: None,
            valid_until: now,
            next_try: now,
        }
    }

    fn lease(&self) -> Lease<'_> {
        Lease {
            name: self.name,
            holder: &self.holder,
            ttl: LEASE_TTL,
        }
    }

    /// Renews or takes the lease when due; otherwise says what holds.
    pub async fn keep(&mut self) -> Holding {
        let now = Instant::now();
        if now >= self.next_try {
            self.next_try = now + LEASE_RETRY;
            match self.try_keep(now).await {
                Ok(holding) => return holding,
                Err(error) => {
                    tracing::warn!(%error, lease = self.name, "cannot renew or take the publication lease");
                }
            }
        }
        match self.epoch {
            Some(epoch) if Instant::now() < self.valid_until => Holding::Held(epoch),
            Some(epoch) => {
                tracing::warn!(
                    lease = self.name,
                    epoch,
                    "publication lease not renewed in time; publishing stops"
                );
                self.epoch = None;
                Holding::NotHeld
            }
            None => Holding::NotHeld,
        }
    }

    async fn try_keep(&mut self, started: Instant) -> Result<Holding, StoreError> {
        if let Some(epoch) = self.epoch {
            if self
                .store
                .renew_publication_lease(&self.lease(), epoch)
                .await?
            {
                self.valid_until = started + LEASE_TTL - LEASE_MARGIN;
                return Ok(Holding::Held(epoch));
            }
            tracing::warn!(
                lease = self.name,
                epoch,
                "publication lease taken over by another replica"
            );
            self.epoch = None;
        }
        let taken = self
            .store
            .take_publication_lease(&self.lease(), self.start)
            .await?;
        Ok(match taken {
            Some(epoch) => {
                tracing::info!(lease = self.name, epoch, holder = %self.holder, "publication lease taken");
                self.epoch = Some(epoch);
                self.valid_until = started + LEASE_TTL - LEASE_MARGIN;
                Holding::Taken(epoch)
            }
            None => Holding::NotHeld,
        })
    }

    /// Until when this process may publish under the lease it holds.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Lets the lease go (a graceful stop) so that another replica takes over at once.
    pub async fn release(&mut self) {
        if let Some(epoch) = self.epoch.take()
            && let Err(error) = self.store.release_publication_lease(self.name, epoch).await
        {
            tracing::warn!(%error, lease = self.name, "cannot release the publication lease; it expires by itself");
        }
    }
}
