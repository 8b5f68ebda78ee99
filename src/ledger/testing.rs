//! What unit tests build their cases from: an offering just created, a request, a position
//! held (one set, so each command's tests read as the rule they check); and, in
//! [`every_field`], values with every field set, for the tests of conversions.

use chrono::TimeDelta;

use super::types::{Allocation, Command, NewOffering, Offering, Position, Request, Timestamp};

/// A fixed instant, so that tests of windows and times read as offsets from it.
pub fn now() -> Timestamp {
    Timestamp::from_timestamp(1_800_000_000, 0).expect("a valid time")
}

pub fn minutes(count: i64) -> TimeDelta {
    TimeDelta::minutes(count)
}

/// CreateOffering's request for "deal", first come, by "ops".
pub fn new_offering(max_units: i64, per_investor: i64) -> NewOffering {
    NewOffering {
        offering_id: "deal".into(),
        name: "Deal".into(),
        max_units,
        max_units_per_investor: per_investor,
        request_id: "create".into(),
        actor: "ops".into(),
        allocation: Allocation::FirstCome,
        open_time: None,
        close_time: None,
        lot_units: 0,
        min_units_per_investor: 0,
        max_total_demand: 0,
    }
}

/// A first-come offering as just created (version 1, OPEN, nothing sold).
pub fn head(max_units: i64, per_investor: i64) -> Offering {
    new_offering(max_units, per_investor).first_rows(now()).0
}

/// A pro-rata offering as just created.
pub fn pro_rata_head(max_units: i64) -> Offering {
    let mut new = new_offering(max_units, 0);
    new.allocation = Allocation::ProRata;
    new.first_rows(now()).0
}

/// A request by "checkout".
pub fn request(request_id: &str, command: Command) -> Request {
    Request {
        request_id: request_id.into(),
        actor: "checkout".into(),
        command,
    }
}

pub fn subscribe(investor: &str, units: i64) -> Command {
    Command::Subscribe {
        investor_id: investor.into(),
        units,
    }
}

pub fn cancel(investor: &str, units: i64) -> Command {
    Command::Cancel {
        investor_id: investor.into(),
        units,
    }
}

/// What `investor` holds in "deal" (units first come, demand pro rata).
pub fn position(investor: &str, units: i64, demand: i64, first_sequence: i64) -> Position {
    Position {
        offering_id: "deal".into(),
        investor_id: investor.into(),
        units,
        update_time: None,
        demanded_units: demand,
        first_sequence,
    }
}

/// Example domain values for unit tests: every field set, each to a value of its own, so that a
/// conversion that drops or swaps a field fails the test that round-trips them. They need not
/// be values the rules would make (an amendment with an investor, say).
pub mod every_field {
    use crate::ledger::{
        Allocation, Entry, EntryKind, Offering, OfferingStatus, Position, Terms, Timestamp,
    };

    /// `seconds` after 2023-11-14T22:13:20.123456Z: microseconds, as both databases store them.
    pub fn time(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + seconds, 123_456_000).expect("in range")
    }

    pub fn offering() -> Offering {
        Offering {
            offering_id: "tower-7".into(),
            name: "Tower 7".into(),
            max_units: 1_000,
            max_units_per_investor: 100,
            subscribed_units: 40,
            investor_count: 2,
            position_count: 3,
            status: OfferingStatus::Closed,
            version: 9,
            create_time: time(1),
            update_time: time(2),
            allocation: Allocation::ProRata,
            open_time: Some(time(3)),
            close_time: Some(time(4)),
            lot_units: 5,
            min_units_per_investor: 10,
            max_total_demand: 5_000,
            demanded_units: 700,
            last_hash: [7; 32],
            tree: crate::ledger::merkle::Frontier::from_bytes(9, &[[5; 32], [6; 32]].concat())
                .unwrap(),
        }
    }

    /// An amendment, with the terms before and after.
    pub fn entry() -> Entry {
        Entry {
            offering_id: "tower-7".into(),
            sequence: 9,
            kind: EntryKind::OfferingAmended,
            investor_id: "alice".into(),
            units_delta: -3,
            investor_units_after: 17,
            offering_units_after: 40,
            request_id: "amend-1".into(),
            requested_units: 3,
            expected_version: 8,
            record_time: time(5),
            actor: "ops".into(),
            demand_delta: 11,
            investor_demand_after: 13,
            offering_demand_after: 700,
            terms_before: Some(Terms {
                name: "Tower 7".into(),
                max_units: 900,
                max_units_per_investor: 90,
                close_time: None,
            }),
            terms_after: Some(Terms {
                name: "Tower Seven".into(),
                max_units: 1_000,
                max_units_per_investor: 100,
                close_time: Some(time(4)),
            }),
            entry_hash: [9; 32],
        }
    }

    pub fn position() -> Position {
        Position {
            offering_id: "tower-7".into(),
            investor_id: "alice".into(),
            units: 17,
            update_time: Some(time(6)),
            demanded_units: 13,
            first_sequence: 2,
        }
    }
}
