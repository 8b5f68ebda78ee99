//! The connection to NATS and the JetStream stream subledger publishes to: one handle, cloned
//! by whatever publishes (the history's publisher today; a digest publisher on the same stream
//! later, under [`super::subject::DIGESTS_PREFIX`]).
//!
//! The client reconnects by itself, forever: subledger starts and serves while NATS is down,
//! and the publisher's calls fail (and are retried) until it is back.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use bytes::Bytes;

use super::config::NatsConfig;
use super::error::PublishError;
use super::subject::{DIGESTS_PREFIX, ENTRIES_PREFIX};

/// A JetStream API request (stream info, last message of a subject) or a publish ack waits
/// this long; past it the publisher treats NATS as unreachable and tries again later.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Publishes awaiting their ack on one connection at most: bounds the client's memory while
/// JetStream is slow (a publish then waits for a slot).
pub const ACKS_IN_FLIGHT_MAX: usize = 4096;

#[derive(Clone)]
pub struct Nats {
    jetstream: jetstream::Context,
    stream_name: String,
    duplicate_window: Duration,
}

impl Nats {
    /// A client that connects in the background (now or once NATS is up).
    pub async fn connect(config: &NatsConfig) -> Result<Self, PublishError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("subledger")
            .retry_on_initial_connect()
            .max_reconnects(None);
        if let Some(path) = &config.creds {
            options = options.credentials_file(path).await.map_err(|error| {
                PublishError::Config(format!(
                    "cannot read --nats-creds {}: {error}",
                    path.display()
                ))
            })?;
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if config.url.starts_with("tls://") {
            options = options.require_tls(true);
        }
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|error| PublishError::Config(format!("--nats-url: {error}")))?;
        let jetstream = jetstream::context::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(ACKS_IN_FLIGHT_MAX)
            .build(client);
        Ok(Self {
            jetstream,
            stream_name: config.stream.clone(),
            duplicate_window: config.duplicate_window,
        })
    }

    /// The stream, created if missing with subledger's subjects and the duplicate window. An
    /// existing stream is used as it is; a duplicate window other than the configured one is
    /// logged, since exactly-once rests on it.
    pub async fn stream(&self) -> Result<stream::Stream, PublishError> {
        let config = stream::Config {
            name: self.stream_name.clone(),
            subjects: vec![format!("{ENTRIES_PREFIX}.>"), format!("{DIGESTS_PREFIX}.>")],
            duplicate_window: self.duplicate_window,
            ..Default::default()
        };
        let mut stream = self
            .jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| self.stream_error(error))?;
        let info = stream
            .info()
            .await
            .map_err(|error| self.stream_error(error))?;
        if info.config.duplicate_window != self.duplicate_window {
            tracing::warn!(
                stream = %self.stream_name,
                stream_duplicate_window_s = info.config.duplicate_window.as_secs(),
                configured_s = self.duplicate_window.as_secs(),
                "the stream's duplicate window is not --nats-duplicate-window; the stream's applies"
            );
        }
        Ok(stream)
    }

    fn stream_error(&self, error: impl std::fmt::Display) -> PublishError {
        PublishError::Stream {
            stream: self.stream_name.clone(),
            detail: error.to_string(),
        }
    }

    /// Sends one message and returns the future of its ack, without waiting for it: publishes
    /// go out in the order of the calls, on one connection.
    pub async fn publish(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<PublishAckFuture, PublishError> {
        self.jetstream
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|error| PublishError::Publish {
                subject,
                detail: error.to_string(),
            })
    }

    /// The headers of the last message stored on `subject`; None when it has none.
    pub async fn last_headers(
        &self,
        stream: &stream::Stream,
        subject: &str,
    ) -> Result<Option<async_nats::HeaderMap>, PublishError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some(message.headers)),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(PublishError::Reconcile {
                subject: subject.to_owned(),
                detail: error.to_string(),
            }),
        }
    }
}
