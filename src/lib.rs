//! subledger: a gRPC subscription ledger for capped offerings.
//!
//! Layers, each depending only on the ones after it:
//! - [`proto`]: the generated gRPC types (proto/subledger/v1/subledger.proto);
//! - [`api`]: the tonic service: authentication and roles, validation, conversion, status
//!   mapping, tracing;
//! - [`group_commit`]: concurrent mutations of one offering share one transaction;
//! - [`ledger`]: the domain rules (caps, lifecycle, idempotency), pure;
//! - [`store`]: one trait with a PostgreSQL and a SQLite implementation; owns SQL and transactions.
//!
//! [`publish`] follows the history out to NATS JetStream.
//!
//! [`cli`] and [`server`] wire them together ([`config_file`]: serve's options from TOML),
//! [`audit`] verifies a database or an export offline; `main.rs` only calls [`cli::run`].
//! Beside this crate in the workspace: crates/subledger-proto (the generated code [`proto`]
//! re-exports), crates/subledger-client (the typed client), crates/subledger-bench
//! (`subledger bench`).

pub mod api;
pub mod audit;
pub mod cli;
pub mod config_file;
pub mod group_commit;
pub mod ledger;
pub mod proto;
pub mod publish;
pub mod server;
pub mod signing;
pub mod store;
pub mod telemetry;
