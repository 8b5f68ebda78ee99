//! Following the PostgreSQL host that takes writes, through a failover or a partition.
//!
//! The pool connects to one host at a time: the one last found writable. Whenever a statement
//! fails in a way a changed primary would explain (the connection lost or silent past
//! --db-io-timeout, the session read-only, the server shutting down), the store calls
//! [`Primary::suspect`]: writes wait, and every host is probed at once, again every
//! PROBE_INTERVAL while none answers as a writer, each probe bounded by the URL's
//! connect_timeout. The first host to answer writable is taken. Connections opened before a
//! confirmed loss are dropped at check-out (a node that turned read-only keeps its sessions
//! open), and writers waiting in [`Primary::wait_writable`] go on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgPool};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::url::PgTargets;
use crate::telemetry::metrics::PrimaryStats;

/// How often every host is probed while none is known to take writes. Probes overlap: one that
/// began while a host was unreachable does not delay the one that finds it back.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How often the hosts are probed while all is well, so that the roles in the metrics stay
/// current and a primary demoted without a word is noticed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// What a host was, the last time it was probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRole {
    Primary,
    Standby,
    Unreachable,
    /// Not probed yet.
    Unknown,
}

impl HostRole {
    pub fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::Unreachable => "unreachable",
            Self::Unknown => "unknown",
        }
    }
}

pub struct Primary {
    targets: PgTargets,
    state: Mutex<State>,
    /// True while the current host is believed to take writes.
    writable: watch::Sender<bool>,
    /// Wakes the follower to probe now.
    suspected: Notify,
    changes: AtomicU64,
    /// Connections opened before this instant are not handed out again; the change listener
    /// follows it to reconnect.
    fence: watch::Sender<Instant>,
}

struct State {
    current: usize,
    roles: Vec<HostRole>,
    /// Since when writes have waited, while they do.
    waiting_since: Option<Instant>,
    /// A probe saw the current host fail to take writes during this wait: the loss is real,
    /// not a single connection's trouble.
    loss_confirmed: bool,
    /// Probes begun before this are stale: they may describe the host before the last change.
    accepted_at: Instant,
}

impl Primary {
    /// Probes every host once and takes the first that answers as a writer; the error names
    /// every host and what it was found to be.
    pub async fn find(targets: PgTargets) -> Result<Arc<Self>, String> {
        let now = Instant::now();
        let primary = Arc::new(Self {
            state: Mutex::new(State {
                current: 0,
                roles: vec![HostRole::Unknown; targets.hosts.len()],
                waiting_since: Some(now),
                loss_confirmed: false,
                accepted_at: now,
            }),
            targets,
            writable: watch::Sender::new(false),
            suspected: Notify::new(),
            changes: AtomicU64::new(0),
            fence: watch::Sender::new(now),
        });
        let mut probes = primary.probe_round();
        let mut errors = Vec::new();
        while let Some((host, started, role)) = probes.next().await {
            match role {
                Ok(HostRole::Primary) => {
                    let mut state = lock(&primary.state);
                    state.roles[host] = HostRole::Primary;
                    state.current = host;
                    state.waiting_since = None;
                    state.accepted_at = started;
                    primary.writable.send_replace(true);
                    return Ok(primary.clone());
                }
                Ok(role) => {
                    lock(&primary.state).roles[host] = role;
                    errors.push(format!("{} is a {}", primary.label(host), role.name()));
                }
                Err(error) => {
                    lock(&primary.state).roles[host] = HostRole::Unreachable;
                    errors.push(format!("{}: {error}", primary.label(host)));
                }
            }
        }
        Err(format!("no host takes writes ({})", errors.join("; ")))
    }

    /// The options of the host connections are made to now.
    pub fn current_options(&self) -> PgConnectOptions {
        let current = lock(&self.state).current;
        self.targets.hosts[current].options.clone()
    }

    pub fn label(&self, host: usize) -> &str {
        &self.targets.hosts[host].label
    }

    pub fn current_label(&self) -> &str {
        self.label(lock(&self.state).current)
    }

    pub fn targets(&self) -> &PgTargets {
        &self.targets
    }

    pub fn is_writable(&self) -> bool {
        *self.writable.borrow()
    }

    /// A statement failed in a way a changed primary would explain: writes wait until a probe
    /// finds a writer (at once, if the current host still is one).
    pub fn suspect(&self) {
        {
            let mut state = lock(&self.state);
            state.waiting_since.get_or_insert_with(Instant::now);
        }
        self.writable.send_replace(false);
        self.suspected.notify_one();
    }

    /// Waits until a host takes writes (returns at once while one does); false if `deadline`
    /// passes first.
    pub async fn wait_writable(&self, deadline: Instant) -> bool {
        if self.is_writable() {
            return true;
        }
        let mut writable = self.writable.subscribe();
        let found = writable.wait_for(|writable| *writable);
        matches!(
            tokio::time::timeout_at(deadline.into(), found).await,
            Ok(Ok(_))
        )
    }

    /// Whether a pooled connection opened `age` ago may be handed out: not if it was opened
    /// before the last confirmed loss of the primary.
    pub fn keeps(&self, age: Duration) -> bool {
        let fence = *self.fence.borrow();
        Instant::now()
            .checked_sub(age)
            .is_none_or(|opened| opened >= fence)
    }

    /// Changes each time the connections are fenced off (a new primary, or the old one back).
    pub fn fences(&self) -> watch::Receiver<Instant> {
        self.fence.subscribe()
    }

    /// Whether a new session may be used: if the URL needs a writer, the session must be one.
    /// A refused session makes the follower look again.
    pub async fn check_session(&self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        if !self.targets.require_writable {
            return Ok(());
        }
        if session_role(connection).await? == HostRole::Primary {
            return Ok(());
        }
        self.suspect();
        Err(sqlx::Error::Protocol(
            "the host does not take writes (transaction_read_only is on)".into(),
        ))
    }

    pub fn stats(&self) -> PrimaryStats {
        let state = lock(&self.state);
        PrimaryStats {
            writable: self.is_writable(),
            changes: self.changes.load(Ordering::Relaxed),
            hosts: self
                .targets
                .hosts
                .iter()
                .zip(&state.roles)
                .map(|(host, role)| (host.label.clone(), role.name()))
                .collect(),
        }
    }

    /// Probes the hosts whenever suspected, every PROBE_INTERVAL while writes wait and every
    /// REFRESH_INTERVAL otherwise, and points `pool` at the writer found, until `stop`.
    pub async fn follow(self: Arc<Self>, pool: PgPool, stop: CancellationToken) {
        let mut probes = FuturesUnordered::new();
        let mut next_round = tokio::time::Instant::now() + REFRESH_INTERVAL;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.suspected.notified() => {
                    probes.extend(self.probe_round());
                    next_round = tokio::time::Instant::now() + PROBE_INTERVAL;
                }
                () = tokio::time::sleep_until(next_round) => {
                    probes.extend(self.probe_round());
                    let waiting = !self.is_writable();
                    next_round = tokio::time::Instant::now()
                        + if waiting { PROBE_INTERVAL } else { REFRESH_INTERVAL };
                }
                Some((host, started, role)) = probes.next() => {
                    let role = role.unwrap_or(HostRole::Unreachable);
                    if self.record(host, started, role) {
                        pool.set_connect_options(self.current_options());
                    }
                }
            }
        }
    }

    /// One probe of every host, at once.
    #[allow(clippy::type_complexity)]
    fn probe_round(
        &self,
    ) -> FuturesUnordered<
        futures::future::BoxFuture<'static, (usize, Instant, Result<HostRole, String>)>,
    > {
        let started = Instant::now();
        let timeout = self.targets.connect_timeout;
        let require_writable = self.targets.require_writable;
        self.targets
            .hosts
            .iter()
            .enumerate()
            .map(|(host, target)| {
                let options = target.options.clone();
                let probe = async move {
                    let role = tokio::time::timeout(timeout, probe(&options))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
                    // A URL that does not need a writer takes any host that answers.
                    let role = match role {
                        Ok(HostRole::Standby) if !require_writable => Ok(HostRole::Primary),
                        role => role,
                    };
                    (host, started, role)
                };
                Box::pin(probe) as futures::future::BoxFuture<'static, _>
            })
            .collect()
    }

    /// Takes in one probe's answer; true if the pool must now connect elsewhere.
    fn record(&self, host: usize, started: Instant, role: HostRole) -> bool {
        let mut state = lock(&self.state);
        if started < state.accepted_at {
            return false;
        }
        state.roles[host] = role;
        if host == state.current && role != HostRole::Primary {
            if !state.loss_confirmed {
                tracing::warn!(
                    host = self.label(host),
                    role = role.name(),
                    "the PostgreSQL primary does not take writes; writes wait for a writer"
                );
            }
            state.loss_confirmed = true;
            state.waiting_since.get_or_insert_with(Instant::now);
            self.writable.send_replace(false);
            return false;
        }
        if role != HostRole::Primary {
            return false;
        }
        let Some(since) = state.waiting_since else {
            // All is well: a refresh.
            return false;
        };
        let moved = host != state.current;
        let unavailable_ms = since.elapsed().as_millis() as u64;
        if moved {
            tracing::warn!(
                from = self.label(state.current),
                to = self.label(host),
                unavailable_ms,
                "the PostgreSQL primary changed"
            );
            self.changes.fetch_add(1, Ordering::Relaxed);
        } else if state.loss_confirmed {
            tracing::warn!(
                host = self.label(host),
                unavailable_ms,
                "the PostgreSQL primary takes writes again"
            );
        }
        if moved || state.loss_confirmed {
            // Whatever was opened before may sit on a demoted node or a dead socket.
            self.fence.send_replace(Instant::now());
        }
        state.current = host;
        state.waiting_since = None;
        state.loss_confirmed = false;
        state.accepted_at = Instant::now();
        drop(state);
        self.writable.send_replace(true);
        moved
    }
}

/// Connects to one host and asks what it is.
async fn probe(options: &PgConnectOptions) -> Result<HostRole, String> {
    let mut connection = PgConnection::connect_with(options)
        .await
        .map_err(|error| error.to_string())?;
    let role = session_role(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    // A probe's connection is only closed; it carries no work.
    let _ = connection.close().await;
    Ok(role)
}

/// Primary if the session may write: transaction_read_only off, which PostgreSQL forces on
/// in recovery and which pg_auto_failover keeps on for a promoted node until the old primary is
/// fenced.
async fn session_role(connection: &mut PgConnection) -> Result<HostRole, sqlx::Error> {
    let read_only: bool = sqlx::query_scalar(
        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
    )
    .fetch_one(connection)
    .await?;
    Ok(if read_only {
        HostRole::Standby
    } else {
        HostRole::Primary
    })
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(hosts: &str) -> Primary {
        let now = Instant::now();
        let targets: PgTargets = format!("postgres://u@{hosts}/db").parse().unwrap();
        let count = targets.hosts.len();
        Primary {
            targets,
            state: Mutex::new(State {
                current: 0,
                roles: vec![HostRole::Primary; count],
                waiting_since: None,
                loss_confirmed: false,
                accepted_at: now,
            }),
            writable: watch::Sender::new(true),
            suspected: Notify::new(),
            changes: AtomicU64::new(0),
            fence: watch::Sender::new(now),
        }
    }

    #[test]
    fn a_false_alarm_keeps_the_host_and_its_connections() {
        let p = primary("a:1,b:2");
        let fence = *p.fence.borrow();
        p.suspect();
        assert!(!p.is_writable(), "writes wait for the probe");
        assert!(!p.record(0, Instant::now(), HostRole::Primary));
        assert!(p.is_writable());
        assert_eq!(*p.fence.borrow(), fence, "no connection is fenced off");
        assert_eq!(p.stats().changes, 0);
    }

    #[test]
    fn a_new_writer_moves_the_pool_and_fences_older_connections() {
        let p = primary("a:1,b:2");
        p.suspect();
        let probed = Instant::now();
        assert!(
            !p.record(0, probed, HostRole::Standby),
            "the old primary was demoted"
        );
        assert!(!p.is_writable());
        assert!(p.record(1, probed, HostRole::Primary), "the pool must move");
        assert!(p.is_writable());
        assert_eq!(p.current_label(), "b:2");
        assert_eq!(p.stats().changes, 1);
        assert!(
            !p.keeps(Duration::from_secs(3600)),
            "an old connection is dropped"
        );
        assert!(p.keeps(Duration::ZERO), "a new one is kept");
        let roles: Vec<_> = p.stats().hosts.into_iter().map(|(_, r)| r).collect();
        assert_eq!(roles, ["standby", "primary"]);
    }

    #[test]
    fn a_probe_begun_before_the_change_cannot_undo_it() {
        let p = primary("a:1,b:2");
        let stale = Instant::now();
        p.suspect();
        std::thread::sleep(Duration::from_millis(2));
        assert!(p.record(1, Instant::now(), HostRole::Primary));
        // The old primary answered a probe begun before the change: ignored.
        assert!(!p.record(0, stale, HostRole::Primary));
        assert_eq!(p.current_label(), "b:2");
        assert!(p.is_writable());
    }

    #[test]
    fn an_unreachable_primary_is_a_confirmed_loss_until_it_answers_again() {
        let p = primary("a:1");
        p.suspect();
        assert!(!p.record(0, Instant::now(), HostRole::Unreachable));
        assert!(!p.is_writable());
        assert_eq!(p.stats().hosts[0].1, "unreachable");
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            !p.record(0, Instant::now(), HostRole::Primary),
            "the same host"
        );
        assert!(p.is_writable());
        assert!(
            !p.keeps(Duration::from_secs(3600)),
            "connections from before are dropped"
        );
    }
}
