//! What applying a request answers: the entry it appended (or had appended before) with the
//! offering and position after it, or the reason it was refused. Every command, the batch and
//! the idempotency decision speak in these terms, and `api::error` maps each refusal to a status.

use super::types::{Entry, Offering, Position};

/// Why a request was refused. Each variant is a caller-visible reason (see `api::error`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("offering {offering_id:?} does not exist")]
    OfferingNotFound { offering_id: String },
    #[error("offering {offering_id:?} already exists with other parameters or another request_id")]
    OfferingExists { offering_id: String },
    #[error(
        "{requested} units requested but only {remaining} of the offering's {max_units} remain"
    )]
    OfferingCapExceeded {
        requested: i64,
        remaining: i64,
        max_units: i64,
    },
    #[error("investor would hold {would_hold} units, over the per-investor cap of {cap}")]
    InvestorCapExceeded { would_hold: i64, cap: i64 },
    #[error("offering is {status}, not OPEN{}", match .bound {
        Some("open_time") => " (its open_time has not come)",
        Some(_) => " (its close_time has passed)",
        None => "",
    })]
    OfferingNotOpen {
        status: &'static str,
        /// "open_time" or "close_time" when the window is why.
        bound: Option<&'static str>,
    },
    #[error("offering is {status}, not CLOSED")]
    OfferingNotClosed { status: &'static str },
    #[error(
        "offering is {status}, not ALLOCATED: a pro-rata offering is allocated before it is finalized"
    )]
    OfferingNotAllocated { status: &'static str },
    #[error("{requested} units to cancel but the investor holds {held}")]
    InsufficientUnits { requested: i64, held: i64 },
    #[error("request_id {request_id:?} was already used for a different request")]
    RequestIdReused { request_id: String },
    #[error("expected_version {expected} but the offering is at version {actual}")]
    VersionMismatch { expected: i64, actual: i64 },
    #[error("{units} units is not a multiple of the offering's lot of {lot_units}")]
    NotAMultipleOfLot { units: i64, lot_units: i64 },
    #[error(
        "the investor would hold {would_hold}, below the minimum of {minimum} per investor (a position is 0 or at least it)"
    )]
    BelowInvestorMinimum { would_hold: i64, minimum: i64 },
    #[error("total demand would be {would_total}, over the offering's bound of {max_total_demand}")]
    DemandCapExceeded {
        would_total: i64,
        max_total_demand: i64,
    },
    #[error(
        "the offering allocates first come, first served: only pro-rata offerings are allocated"
    )]
    NotProRata,
    #[error("{field}: {reason}")]
    AmendmentConflict { field: &'static str, reason: String },
    /// A new investor in an offering that already has positions for `limit` investors.
    #[error("the offering already has {limit} investors, the most it may have")]
    InvestorLimitReached { limit: i64 },
    /// The stored state is one the rules never write (run `subledger verify`).
    #[error("the stored offering is inconsistent: {reason}")]
    StateInconsistent { reason: String },
}

/// The outcome of one accepted request.
#[derive(Clone, Debug)]
pub struct Applied {
    pub entry: Entry,
    /// The offering right after this entry (for a replay: as it is now).
    pub offering: Offering,
    /// The investor's position right after this entry; None for lifecycle commands.
    pub position: Option<Position>,
    /// True when the request_id had been applied before and nothing was appended.
    pub replayed: bool,
}

/// One result per request, per offering, in the order of the work given.
pub type Results = Vec<Vec<Result<Applied, Rejection>>>;
