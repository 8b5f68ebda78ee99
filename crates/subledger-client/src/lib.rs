//! A typed async client for subledger, the gRPC subscription ledger.
//!
//! - [`Ledger`]: one handle over one or more replicas (calls go round-robin over them, and a
//!   retry goes to the next one), with TLS ([`tonic::transport::ClientTlsConfig`]) and a bearer
//!   token; cheap to clone and share between tasks.
//! - Safe retries: every mutation carries a `request_id`, made here (a UUID v4) unless the
//!   caller gives one, and kept across its retries, so a retry after UNAVAILABLE (including
//!   COMMIT_OUTCOME_UNKNOWN: the commit's fate is unknown), DEADLINE_EXCEEDED or CANCELLED (an
//!   attempt's grpc-timeout expiring on the server) replays instead
//!   of applying twice. CreateOffering without an `offering_id` gets one made here before the
//!   first attempt, so a retry cannot create a second offering. Retries back off exponentially
//!   ([`RetryPolicy`]) within the caller's overall deadline.
//! - Typed errors: [`Error`] has one variant per ErrorInfo reason the server sends, with its
//!   metadata as fields (`Error::OfferingCapExceeded { requested, remaining, max_units }`).
//! - [`proto`]: the generated messages and the raw stubs, for what this crate does not wrap.
//!
//! ```no_run
//! # async fn example() -> Result<(), subledger_client::Error> {
//! use subledger_client::{Error, Ledger, proto};
//! let ledger = Ledger::builder(["http://127.0.0.1:50051"]).connect()?;
//! let reply = ledger
//!     .subscribe(proto::SubscribeRequest {
//!         offering_id: "tower-7".into(),
//!         investor_id: "alice".into(),
//!         units: 50,
//!         ..Default::default() // request_id: made by the client, kept across retries
//!     })
//!     .await;
//! match reply {
//!     Ok(reply) => println!("holds {}", reply.position.unwrap_or_default().units),
//!     Err(Error::OfferingCapExceeded { remaining, .. }) => println!("only {remaining} left"),
//!     Err(other) => return Err(other),
//! }
//! # Ok(()) }
//! ```
//!
//! A complete program: `examples/subscribe.rs`.

pub mod duration;
mod error;
mod ledger;
mod retry;

pub use error::Error;
pub use ledger::{Ledger, LedgerBuilder};
pub use retry::RetryPolicy;
/// The generated messages and stubs of `proto/subledger/v1/subledger.proto`.
pub use subledger_proto as proto;
