//! What can go wrong while publishing. None of it reaches a caller of the API: the publisher
//! logs it, counts it (subledger_publish_errors_total), and tries again.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The NATS options could not be built (an unreadable credentials file): only at start.
    #[error("NATS configuration: {0}")]
    Config(String),
    /// The stream could not be created or looked up.
    #[error("JetStream stream {stream}: {detail}")]
    Stream { stream: String, detail: String },
    /// A publish was not sent, or JetStream did not acknowledge it in time.
    #[error("publishing {subject}: {detail}")]
    Publish { subject: String, detail: String },
    /// The last message of a subject could not be read back.
    #[error("reading the last message of {subject}: {detail}")]
    Reconcile { subject: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}
