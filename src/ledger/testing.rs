//! What the ledger's unit tests build their cases from: an offering just created, a request, a
//! position held. One set, so each command's tests read as the rule they check.

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
