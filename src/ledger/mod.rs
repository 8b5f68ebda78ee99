//! The domain: offerings, positions, history entries, and the rules that decide whether a
//! command may be applied. Pure code with no I/O: both stores feed it the locked head and the
//! positions a batch touches, and write back exactly what it returns.
//!
//! `apply` runs a batch and holds what the commands share; `command/` has one file per
//! command; `idempotency` alone decides whether a request is a replay; `outcome` is what they
//! answer.

pub mod allocation;
mod allocation_run;
mod apply;
pub mod chain;
mod command;
pub mod fields;
mod hash;
pub mod idempotency;
pub mod limits;
pub mod merkle;
mod outcome;
#[cfg(test)]
pub(crate) mod testing;
mod types;
pub mod verify;

pub use allocation_run::{AllocationChunk, AllocationRun};
pub use apply::{
    Batch, BatchWrites, CLOSED_BY_CLOCK_REQUEST_ID, OfferingRequests, SYSTEM_ACTOR, UNKNOWN_ACTOR,
    apply_all,
};
pub use command::create::{CreateOutcome, check_create};
pub use outcome::{Applied, Rejection, Results};
pub use types::*;
