//! Accepting client connections within bounds, fairly between peers:
//! - at most `max_connections` open at once, and `max_connections_per_peer` from one IP address,
//!   so that one peer's sockets cannot lock everyone else out;
//! - at the cap, a connection that has not finished its handshake (no HTTP/2 preface yet) is
//!   closed to make room before a new one is refused: an established client outranks a socket
//!   that has said nothing;
//! - the handshake (TLS and the HTTP/2 preface) has one deadline from the accept, which bytes
//!   dripped one at a time cannot extend; after it, a connection silent for `idle_timeout` is
//!   closed;
//! - refusals are logged with a count, on a timer, so that neither a flood of them floods the log
//!   nor the last burst goes unreported;
//! - an accept error such as running out of file descriptors backs off instead of spinning.
//!
//! Live clients are never idle for that long: the server sends HTTP/2 PINGs after a third of
//! `idle_timeout` without a frame, and every client answers them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Pause after an accept error (EMFILE, ENFILE, ENOBUFS): the condition lasts until some
/// connection closes, and retrying at once would only spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How often refused connections are reported, with their count since the last report.
const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the acceptor waits for the slot of a connection it closed to make room.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// What a client sends first on an HTTP/2 connection ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"): a
/// connection that has sent this many bytes has finished its handshake as far as this layer
/// can tell (under TLS, tonic bounds the TLS handshake itself, and its records are longer).
const HANDSHAKE_BYTES: u64 = 24;

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Connections open at once from one IP address (--max-client-connections-per-peer).
    pub max_connections_per_peer: usize,
    pub idle_timeout: Duration,
    /// From the accept to the end of the handshake (TLS and the HTTP/2 preface).
    pub handshake_timeout: Duration,
}

/// Accepted connections on any of `listeners`, within `limits` over all of them, until they
/// are dropped.
pub fn accept(
    listeners: Vec<TcpListener>,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Connection>> {
    let shared = Arc::new(Shared::default());
    tokio::spawn(report_refusals(Arc::downgrade(&shared), limits));
    let acceptor = Acceptor {
        listeners,
        limits,
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        shared,
    };
    futures::stream::unfold(acceptor, |mut acceptor| async move {
        let connection = acceptor.next().await;
        Some((Ok(connection), acceptor))
    })
}

/// What the acceptor and its connections share.
#[derive(Default)]
struct Shared {
    /// Open connections per peer address.
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    /// Connections still in their handshake, oldest first: whom to close at the cap.
    handshaking: Mutex<VecDeque<Weak<Handshake>>>,
    refused_at_cap: AtomicU64,
    refused_per_peer: AtomicU64,
    evicted: AtomicU64,
}

/// A connection's handshake, as the acceptor sees it: finished, or closable to make room.
struct Handshake {
    finished: AtomicBool,
    evict: CancellationToken,
}

struct Acceptor {
    /// Every address the --listen name resolved to (IPv4 and IPv6 for `localhost`).
    listeners: Vec<TcpListener>,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl Acceptor {
    async fn next(&mut self) -> Connection {
        loop {
            let (stream, peer) = match self.accept_any().await {
                Ok(accepted) => accepted,
                Err(error) if is_per_connection(&error) => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept connections; retrying shortly");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            // Dropping the stream closes it: the client sees its connection reset.
            let Some(peer_slot) = self.take_peer_slot(peer.ip()) else {
                self.shared.refused_per_peer.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(permit) = self.take_permit().await else {
                self.shared.refused_at_cap.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // Replies are small and latency-bound: do not let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let handshake = Arc::new(Handshake {
                finished: AtomicBool::new(false),
                evict: CancellationToken::new(),
            });
            {
                let mut handshaking = lock(&self.shared.handshaking);
                // Forget the ones that finished or closed, so the queue holds only candidates.
                handshaking.retain(|h| {
                    h.upgrade()
                        .is_some_and(|h| !h.finished.load(Ordering::Relaxed))
                });
                handshaking.push_back(Arc::downgrade(&handshake));
            }
            return Connection::new(stream, permit, peer_slot, handshake, &self.limits);
        }
    }

    /// The next connection on whichever listener has one.
    async fn accept_any(&self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| {
            for listener in &self.listeners {
                if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                    return Poll::Ready(accepted);
                }
            }
            Poll::Pending
        })
        .await
    }

    fn take_peer_slot(&self, peer: IpAddr) -> Option<PeerSlot> {
        let mut per_peer = lock(&self.shared.per_peer);
        let open = per_peer.entry(peer).or_default();
        if *open >= self.limits.max_connections_per_peer {
            return None;
        }
        *open += 1;
        Some(PeerSlot {
            shared: self.shared.clone(),
            peer,
        })
    }

    /// A slot under the cap: a free one, or the one a connection still in its handshake held,
    /// the oldest first. None when every connection has finished its handshake.
    async fn take_permit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        let evicted = loop {
            let candidate = lock(&self.shared.handshaking).pop_front()?;
            if let Some(handshake) = candidate.upgrade()
                && !handshake.finished.load(Ordering::Relaxed)
            {
                handshake.evict.cancel();
                break handshake;
            }
        };
        drop(evicted);
        self.shared.evicted.fetch_add(1, Ordering::Relaxed);
        // The closed connection gives its slot back once the server drops it.
        tokio::time::timeout(EVICTION_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// Logs the refusals and evictions since the last report, every REFUSAL_REPORT_INTERVAL while
/// there are any, until the acceptor is gone.
async fn report_refusals(shared: Weak<Shared>, limits: ConnectionLimits) {
    let mut interval = tokio::time::interval(REFUSAL_REPORT_INTERVAL);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let at_cap = shared.refused_at_cap.swap(0, Ordering::Relaxed);
        let per_peer = shared.refused_per_peer.swap(0, Ordering::Relaxed);
        let evicted = shared.evicted.swap(0, Ordering::Relaxed);
        if at_cap + per_peer + evicted > 0 {
            tracing::warn!(
                refused_at_cap = at_cap,
                refused_per_peer = per_peer,
                closed_in_handshake = evicted,
                max_connections = limits.max_connections,
                max_connections_per_peer = limits.max_connections_per_peer,
                "client connections refused, or closed to make room, since the last report"
            );
        }
    }
}

/// One open connection counted against its peer's share.
struct PeerSlot {
    shared: Arc<Shared>,
    peer: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut per_peer = lock(&self.shared.per_peer);
        if let Some(open) = per_peer.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

/// Errors that concern only the connection being accepted (the peer gave up already).
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client connection that counts against the limits while open, and fails its next read
/// once its handshake is late, once nothing has arrived for `idle_timeout`, or once the
/// acceptor closed it to make room.
pub struct Connection {
    stream: TcpStream,
    /// Boxed so that the connection is Unpin, as tonic requires of its IO.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    last_read: Instant,
    /// Until the handshake is over: when it must be, and what ends it early.
    handshake: Option<Pending>,
    _permit: OwnedSemaphorePermit,
    _peer_slot: PeerSlot,
}

struct Pending {
    deadline: Instant,
    bytes_read: u64,
    state: Arc<Handshake>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        peer_slot: PeerSlot,
        state: Arc<Handshake>,
        limits: &ConnectionLimits,
    ) -> Self {
        let now = Instant::now();
        let deadline = now + limits.handshake_timeout;
        Self {
            stream,
            idle: Box::pin(tokio::time::sleep_until(
                deadline.min(now + limits.idle_timeout).into(),
            )),
            idle_timeout: limits.idle_timeout,
            last_read: now,
            handshake: Some(Pending {
                deadline,
                bytes_read: 0,
                evicted: Box::pin(state.evict.clone().cancelled_owned()),
                state,
            }),
            _permit: permit,
            _peer_slot: peer_slot,
        }
    }

    /// When the next read must have come: the handshake's deadline while it lasts (bytes do
    /// not move it), then `idle_timeout` after the last byte.
    fn deadline(&self) -> Instant {
        let idle = self.last_read + self.idle_timeout;
        match &self.handshake {
            Some(pending) => idle.min(pending.deadline),
            None => idle,
        }
    }

    fn count_read(&mut self, bytes: usize) {
        self.last_read = Instant::now();
        if let Some(pending) = &mut self.handshake {
            pending.bytes_read += bytes as u64;
            if pending.bytes_read >= HANDSHAKE_BYTES {
                pending.state.finished.store(true, Ordering::Relaxed);
                self.handshake = None;
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(pending) = &mut this.handshake
            && pending.evicted.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed in its handshake to make room under the connection cap",
            )));
        }
        let filled = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let read = buf.filled().len() - filled;
                if read > 0 {
                    // Only an Instant per read: the timer is moved when it fires, not here.
                    this.count_read(read);
                }
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                if this.idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = this.deadline();
                if Instant::now() >= deadline {
                    let why = match this.handshake {
                        Some(_) => "the handshake did not finish in time",
                        None => "no byte received within the idle timeout",
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
                this.idle.as_mut().reset(deadline.into());
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
