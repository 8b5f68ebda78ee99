//! Limits on input, each a named bound so that no caller can make the server do unbounded work.

/// Ids are keys in indexes and in logs: long enough for a UUID with a prefix, short enough
/// to keep index entries small.
pub const ID_CHARS_MAX: usize = 128;
/// An offering's display name.
pub const NAME_CHARS_MAX: usize = 256;
/// Units are i64 in storage; a cap this far below i64::MAX keeps every sum in range.
pub const UNITS_MAX: i64 = 1_000_000_000_000_000;
/// page_size 0 means this.
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// Larger requested pages are cut to this, bounding one reply's size and one query's work.
pub const PAGE_SIZE_MAX: u32 = 1000;
/// A pro-rata offering's total demand at most (when max_total_demand does not bound it
/// lower): demand * max_units and allocation * demand stay far inside i128, and the total
/// inside i64.
pub const DEMAND_TOTAL_MAX: i64 = 1_000_000_000_000_000_000;
/// --max-investors-per-offering's default: allocation and verification handle every position
/// of an offering at once, so their number is bounded.
pub const INVESTORS_PER_OFFERING_DEFAULT: i64 = 1_000_000;
/// Principal names are recorded as the actor of every history entry: short, and printable
/// without escapes.
pub const PRINCIPAL_NAME_CHARS_MAX: usize = 128;
