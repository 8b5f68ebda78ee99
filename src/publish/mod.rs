//! Publication of every history entry to NATS JetStream, exactly once and in order per
//! offering, for the services that react to what subledger records (README "Events").
//!
//! The history is the outbox: append-only, gaplessly numbered per offering, committed with the
//! change it records. Commits never wait on NATS; a publisher on one replica at a time (the
//! lease) follows them with a cursor per offering.
//!
//! - [`config`]: the `--nats-*` settings;
//! - [`nats`]: the connection and the stream, a handle other publishers can share;
//! - [`subject`]: offering_id to subject token, one-to-one;
//! - [`lease`]: which replica publishes;
//! - [`publisher`]: the loop that publishes and moves the cursors.

pub mod config;
pub mod error;
pub mod lease;
pub mod nats;
pub mod publisher;
pub mod subject;

pub use config::NatsConfig;
pub use error::PublishError;
pub use nats::Nats;
