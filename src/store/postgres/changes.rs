//! Other replicas' commits, heard: LISTEN on a connection of its own while anyone follows the
//! changes, each NOTIFY turned into a [`Change`], and a [`Change::Missed`] whenever the
//! listener (re)starts, since what committed while it was not listening went unannounced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::primary::Primary;
use super::session_options;
use crate::store::Change;

/// NOTIFY channel carrying "version:offering_id" after each commit.
pub(super) const CHANGE_CHANNEL: &str = "subledger_history";
/// How long the change listener stays after its last follower leaves, so that a watcher that
/// reconnects does not make it reconnect too.
const LISTEN_LINGER: Duration = Duration::from_secs(2);
/// Pause before the change listener reconnects after losing its connection.
const LISTENER_RETRY: Duration = Duration::from_secs(1);

/// Turns NOTIFYs from every replica into [`Change`]s while anyone follows them, on a connection
/// of its own to the primary (not one of the pool's, which it would hold forever), reconnecting
/// until the store is dropped (`stop`), and whenever the primary changes or comes back (its
/// old connection may hang silently in a partition). With no follower it holds no connection:
/// every replica's commit would otherwise wake a backend to send this process a notification
/// nobody reads.
pub(super) async fn forward_notifications(
    primary: Arc<Primary>,
    changes: broadcast::WeakSender<Change>,
    mut followers: watch::Receiver<usize>,
    stop: CancellationToken,
) {
    let mut fences = primary.fences();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            followed = async { followers.wait_for(|n| *n > 0).await.is_ok() } => {
                if !followed { return }
            }
        }
        // NOTIFYs are delivered by the primary only.
        tokio::select! {
            () = stop.cancelled() => return,
            _ = async { while !primary.wait_writable(Instant::now() + LISTENER_RETRY).await {} } => {}
        }
        fences.mark_unchanged();
        let error = tokio::select! {
            () = stop.cancelled() => return,
            error = listen(session_options(&primary), &changes) => error,
            // Dropping the listener closes its connection; the next follower listens anew.
            () = unfollowed(&mut followers) => continue,
            _ = fences.changed() => {
                tracing::info!(host = primary.current_label(), "change listener follows the primary; watchers re-read once it listens");
                continue;
            }
        };
        let Some(error) = error else { return };
        tracing::warn!(%error, "change listener lost its connection; watchers re-read once it is back");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(LISTENER_RETRY) => {}
        }
    }
}

/// Returns once nobody has followed the changes for LISTEN_LINGER.
async fn unfollowed(followers: &mut watch::Receiver<usize>) {
    loop {
        if followers.wait_for(|n| *n == 0).await.is_err() {
            // The store is gone; `stop` ends the listener.
            return std::future::pending().await;
        }
        let followed_again = async { followers.wait_for(|n| *n > 0).await.is_ok() };
        if tokio::time::timeout(LISTEN_LINGER, followed_again)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Returns when the listener's connection fails, or None once the store is gone.
async fn listen(
    options: sqlx::postgres::PgConnectOptions,
    changes: &broadcast::WeakSender<Change>,
) -> Option<sqlx::Error> {
    // A pool of one for the listener alone.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(listener) => listener,
        Err(error) => return Some(error),
    };
    if let Err(error) = listener.listen(CHANGE_CHANNEL).await {
        return Some(error);
    }
    // Listening (again): whatever committed before, or while the connection was lost, was never
    // announced. Sent only now that LISTEN is in place, so a re-read from here misses nothing.
    changes.upgrade()?.send(Change::Missed).ok();
    loop {
        // try_recv, not recv: recv reconnects by itself and the notifications lost on the way
        // would go unnoticed. None means the connection closed; sqlx would reconnect on the next
        // call, but Missed must wait until LISTEN is in place again (a re-read sent before then
        // could meet the same outage and fail the watchers' streams), so the caller reconnects
        // and says Missed once it listens.
        let change = match listener.try_recv().await {
            Ok(Some(notification)) => match parse_notification(notification.payload()) {
                Some(change) => change,
                None => continue,
            },
            Ok(None) => {
                return Some(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the LISTEN connection closed",
                )));
            }
            Err(error) => return Some(error),
        };
        changes.upgrade()?.send(change).ok();
    }
}

/// "version:offering_id", as the write sends it; None for anything else on the channel.
fn parse_notification(payload: &str) -> Option<Change> {
    let (version, offering_id) = payload.split_once(':')?;
    Some(Change::Committed {
        offering_id: Arc::from(offering_id),
        version: version.parse().ok()?,
    })
}
