//! The domain: offerings, positions, history entries, and the rules that decide whether a
//! command may be applied. Pure code with no I/O: both stores feed it the locked head and the
//! positions a batch touches, and write back exactly what it returns.

pub mod allocation;
pub mod chain;
pub mod limits;
mod rules;
mod types;
pub mod verify;

pub use rules::{
    Applied, Batch, BatchWrites, CreateOutcome, OfferingRequests, Rejection, Results, SYSTEM_ACTOR,
    apply_all, check_create,
};
pub use types::*;
