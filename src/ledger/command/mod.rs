//! One file per command, each with its rules and its tests, as mini-redis keeps its `cmd/`.
//! A command's rules are methods of the [`Batch`](super::apply::Batch) it runs in: they read
//! the running state, refuse with a [`Rejection`](super::Rejection), or append through the
//! batch's shared append, which links the chain. What commands share (the window, lots,
//! minimums, versions, the append, `apply_all`) is in `apply`; whether a request is a replay,
//! in `idempotency`.
//!
//! - `subscribe`: Subscribe and Cancel
//! - `create`: CreateOffering (outside any batch: there is no head to lock yet)
//! - `close`: CloseOffering and FinalizeOffering
//! - `allocate`: AllocateOffering
//! - `amend`: AmendOffering

pub(super) mod allocate;
mod amend;
mod close;
pub mod create;
mod subscribe;
