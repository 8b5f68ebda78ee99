//! How serve reaches NATS, from its flags (`--nats-*`, see docs/operations.md): the server's
//! URL, credentials, the stream and its duplicate window, and where publication starts.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::StartAt;

/// --nats-stream's default.
pub const STREAM_DEFAULT: &str = "SUBLEDGER";
/// --nats-duplicate-window's default: JetStream's own (2 min) is not far enough above a lease
/// takeover and a reconnect to be safe; ten minutes costs the server only an index of recent
/// message ids.
pub const DUPLICATE_WINDOW_DEFAULT: &str = "10m";
/// The duplicate window must cover a lease takeover (super::lease::LEASE_TTL) many times over:
/// a replica that lost its lease may still publish for a while, and its duplicates are dropped
/// only inside the window.
pub const DUPLICATE_WINDOW_MIN: Duration = Duration::from_secs(60);
/// Where a token comes from when no --nats-token-file is given. Never a flag: a flag's value
/// shows in `ps`.
pub const TOKEN_ENV: &str = "SUBLEDGER_NATS_TOKEN";

/// Everything the publisher needs to know about NATS.
#[derive(Clone)]
pub struct NatsConfig {
    /// nats://host:port (tls://host:port requires TLS); several separated by commas.
    pub url: String,
    /// A .creds file (JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// A token, from --nats-token-file or SUBLEDGER_NATS_TOKEN.
    pub token: Option<String>,
    /// The JetStream stream, created if missing.
    pub stream: String,
    pub duplicate_window: Duration,
    /// Where the offerings that exist start when publication is first enabled.
    pub start: StartAt,
}

impl std::fmt::Debug for NatsConfig {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &self.url)
            .field("creds", &self.creds)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("stream", &self.stream)
            .field("duplicate_window", &self.duplicate_window)
            .field("start", &self.start)
            .finish()
    }
}
