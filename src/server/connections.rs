//! Accepting client connections within bounds: at most `max_connections` open at once (past it
//! a new connection is closed at once, and logged), none silent for longer than `idle_timeout`
//! (a connection that never sends a byte, or stops answering, is closed), and an accept error
//! such as running out of file descriptors backs off instead of spinning.
//!
//! Live clients are never idle for that long: the server sends HTTP/2 PINGs after a third of
//! `idle_timeout` without a frame, and every client answers them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Pause after an accept error (EMFILE, ENFILE, ENOBUFS): the condition lasts until some
/// connection closes, and retrying at once would only spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Refused connections are logged at most this often, with a count, so that a flood of them
/// cannot flood the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// Accepted connections on any of `listeners`, within `limits` over all of them, until they
/// are dropped.
pub fn accept(
    listeners: Vec<TcpListener>,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Connection>> {
    let acceptor = Acceptor {
        listeners,
        limits,
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        refused_since_log: 0,
        last_refusal_log: None,
    };
    futures::stream::unfold(acceptor, |mut acceptor| async move {
        let connection = acceptor.next().await;
        Some((Ok(connection), acceptor))
    })
}

struct Acceptor {
    /// Every address the --listen name resolved to (IPv4 and IPv6 for `localhost`).
    listeners: Vec<TcpListener>,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    refused_since_log: u64,
    last_refusal_log: Option<Instant>,
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
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    // Replies are small and latency-bound: do not let Nagle hold them back.
                    let _ = stream.set_nodelay(true);
                    return Connection::new(stream, permit, self.limits.idle_timeout);
                }
                // Dropping the stream closes it: the client sees its connection reset.
                Err(_) => self.log_refusal(peer),
            }
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

    fn log_refusal(&mut self, peer: SocketAddr) {
        self.refused_since_log += 1;
        let due = self
            .last_refusal_log
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            tracing::warn!(
                %peer,
                refused = self.refused_since_log,
                max_connections = self.limits.max_connections,
                "connection refused: the server holds as many client connections as it accepts"
            );
            self.refused_since_log = 0;
            self.last_refusal_log = Some(Instant::now());
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

/// A client connection that counts against the limit while open and fails its next read once
/// nothing has arrived for `idle_timeout`.
pub struct Connection {
    stream: TcpStream,
    /// Boxed so that the connection is Unpin, as tonic requires of its IO.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    last_read: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Self {
            stream,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            last_read: Instant::now(),
            _permit: permit,
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
        let filled = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > filled {
                    // Only an Instant per read: the timer is moved when it fires, not here.
                    this.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                if this.idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = this.last_read + this.idle_timeout;
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no byte received within the idle timeout",
                    )));
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
