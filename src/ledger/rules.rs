//! The rules: where caps, windows, lots, minimums, the lifecycle, expected versions and
//! request_id reuse are checked, and where pro-rata allocations and amendments are made.
//!
//! A store locks an offering's head, loads what a batch of requests needs (the head, the
//! positions of the investors named, or every position when a request needs them all, the
//! entries already recorded under the request_ids named, and the time by the database's clock),
//! and hands them to a [`Batch`]. The batch validates each request in order against the running
//! state, so request 2 sees request 1's effect, and collects the rows to write. A rejected
//! request changes nothing and does not affect the others.

use std::collections::HashMap;
use std::sync::Arc;

use super::allocation::{self, Demand};
use super::chain;
use super::limits::DEMAND_TOTAL_MAX;
use super::types::{
    Allocation, Command, Entry, EntryKind, NewOffering, Offering, OfferingStatus, Position,
    Request, TermChanges, Terms, Timestamp,
};

/// The actor of what the clock does (the CLOSED entry appended once close_time has passed).
pub const SYSTEM_ACTOR: &str = "system";
/// The request_id of that CLOSED entry: '@' is outside the id alphabet, so no caller's request
/// can collide with it.
const CLOSED_BY_CLOCK_REQUEST_ID: &str = "@close_time";

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

/// An investor's running state within a batch.
#[derive(Clone, Debug, Default)]
struct Holding {
    units: i64,
    demand: i64,
    first_sequence: i64,
    update_time: Option<Timestamp>,
}

/// What a command does to an investor's position.
struct Change {
    units_delta: i64,
    demand_delta: i64,
}

/// Requests being applied to one locked offering inside one transaction.
pub struct Batch {
    head: Offering,
    /// Every investor named in the batch (or every investor, when the batch reads them all).
    holdings: HashMap<String, Holding>,
    /// True when `holdings` has every position of the offering.
    all_positions: bool,
    /// Entries recorded under the batch's request_ids, earlier or within this batch.
    recorded: HashMap<String, Entry>,
    now: Timestamp,
    /// The version before the clock closed the offering in this batch: a caller who read the
    /// offering as closed (GetOffering shows it so) saw that version.
    version_before_clock: Option<i64>,
    appended: Vec<Entry>,
}

/// What a batch leaves to write: the new head, the entries to append (in sequence order) and
/// the positions whose units or demand changed.
pub struct BatchWrites {
    pub head: Offering,
    pub entries: Vec<Entry>,
    pub positions: Vec<Position>,
}

impl Batch {
    /// `positions` must hold a row for every investor that has one among those the requests
    /// name (every investor of the offering when `all_positions`); `recorded` every existing
    /// entry whose request_id the requests use. `now` is the database's clock, read after the
    /// head was locked.
    pub fn new(
        head: Offering,
        positions: Vec<Position>,
        all_positions: bool,
        recorded: Vec<Entry>,
        now: Timestamp,
    ) -> Self {
        let holdings = positions
            .into_iter()
            .map(|p| {
                let holding = Holding {
                    units: p.units,
                    demand: p.demanded_units,
                    first_sequence: p.first_sequence,
                    update_time: p.update_time,
                };
                (p.investor_id, holding)
            })
            .collect();
        let recorded = recorded
            .into_iter()
            .map(|e| (e.request_id.clone(), e))
            .collect();
        Self {
            head,
            holdings,
            all_positions,
            recorded,
            now,
            version_before_clock: None,
            appended: Vec::new(),
        }
    }

    /// Validates `request` against the running state and, if accepted, records its effect.
    pub fn apply(&mut self, request: &Request) -> Result<Applied, Rejection> {
        if let Some(entry) = self.recorded.get(&request.request_id) {
            if !request.is_recorded_by(entry) {
                return Err(Rejection::RequestIdReused {
                    request_id: request.request_id.clone(),
                });
            }
            let entry = entry.clone();
            return Ok(self.applied(entry, true));
        }
        // Past close_time the offering is closed: the first mutation to see it so records it,
        // unless it is the CloseOffering that records it itself.
        if !matches!(request.command, Command::Close { .. }) && self.head.closes_by_clock(self.now)
        {
            self.close_by_clock();
        }
        let entry = match &request.command {
            Command::Subscribe { investor_id, units } => {
                let change = self.check_subscribe(investor_id, *units)?;
                self.append_investor(request, investor_id, change)
            }
            Command::Cancel { investor_id, units } => {
                let change = self.check_cancel(investor_id, *units)?;
                self.append_investor(request, investor_id, change)
            }
            Command::Close { expected_version } => {
                self.require_open()?;
                self.check_version(*expected_version)?;
                self.append_lifecycle(request, OfferingStatus::Closed)
            }
            Command::Finalize { expected_version } => {
                let required = match self.head.allocation {
                    Allocation::FirstCome => OfferingStatus::Closed,
                    Allocation::ProRata => OfferingStatus::Allocated,
                };
                // Status before version: a second finalize is told the offering moved on
                // (final), not to re-read and retry (ABORTED).
                if self.head.status != required {
                    let status = self.head.status.name();
                    return Err(match required {
                        OfferingStatus::Allocated => Rejection::OfferingNotAllocated { status },
                        _ => Rejection::OfferingNotClosed { status },
                    });
                }
                self.check_version(*expected_version)?;
                self.append_lifecycle(request, OfferingStatus::Finalized)
            }
            Command::Allocate { expected_version } => {
                if self.head.allocation != Allocation::ProRata {
                    return Err(Rejection::NotProRata);
                }
                if self.head.status != OfferingStatus::Closed {
                    return Err(Rejection::OfferingNotClosed {
                        status: self.head.status.name(),
                    });
                }
                self.check_version(*expected_version)?;
                self.allocate(request)
            }
            Command::Amend {
                expected_version,
                changes,
            } => {
                self.require_open()?;
                self.check_version(*expected_version)?;
                let after = self.check_amendment(changes)?;
                self.append_amendment(request, after)
            }
        };
        Ok(self.applied(entry, false))
    }

    /// Subscribe: units now (first come) or demand (pro rata), within every rule.
    fn check_subscribe(&self, investor_id: &str, units: i64) -> Result<Change, Rejection> {
        self.require_open_window()?;
        self.check_lot(units)?;
        let head = &self.head;
        let holding = self.holding(investor_id);
        let cap = head.max_units_per_investor;
        match head.allocation {
            Allocation::FirstCome => {
                if units > head.remaining_units() {
                    return Err(Rejection::OfferingCapExceeded {
                        requested: units,
                        remaining: head.remaining_units(),
                        max_units: head.max_units,
                    });
                }
                let would_hold = holding.units + units;
                if cap > 0 && would_hold > cap {
                    return Err(Rejection::InvestorCapExceeded { would_hold, cap });
                }
                self.check_minimum(would_hold)?;
                Ok(Change {
                    units_delta: units,
                    demand_delta: 0,
                })
            }
            Allocation::ProRata => {
                let would_demand = holding.demand + units;
                if cap > 0 && would_demand > cap {
                    return Err(Rejection::InvestorCapExceeded {
                        would_hold: would_demand,
                        cap,
                    });
                }
                self.check_minimum(would_demand)?;
                let bound = match head.max_total_demand {
                    0 => DEMAND_TOTAL_MAX,
                    bound => bound,
                };
                let would_total = head.demanded_units + units;
                if would_total > bound {
                    return Err(Rejection::DemandCapExceeded {
                        would_total,
                        max_total_demand: bound,
                    });
                }
                Ok(Change {
                    units_delta: 0,
                    demand_delta: units,
                })
            }
        }
    }

    /// Cancel: units (0 = all) given back, or demand withdrawn (pro rata).
    fn check_cancel(&self, investor_id: &str, units: i64) -> Result<Change, Rejection> {
        self.require_open_window()?;
        let holding = self.holding(investor_id);
        let held = match self.head.allocation {
            Allocation::FirstCome => holding.units,
            Allocation::ProRata => holding.demand,
        };
        let cancelled = if units == 0 { held } else { units };
        if cancelled == 0 || cancelled > held {
            return Err(Rejection::InsufficientUnits {
                requested: cancelled,
                held,
            });
        }
        if units != 0 {
            self.check_lot(units)?;
        }
        self.check_minimum(held - cancelled)?;
        Ok(match self.head.allocation {
            Allocation::FirstCome => Change {
                units_delta: -cancelled,
                demand_delta: 0,
            },
            Allocation::ProRata => Change {
                units_delta: 0,
                demand_delta: -cancelled,
            },
        })
    }

    fn require_open(&self) -> Result<(), Rejection> {
        if self.head.status != OfferingStatus::Open {
            let bound = self
                .head
                .close_time
                .is_some_and(|close| self.now >= close)
                .then_some("close_time");
            return Err(Rejection::OfferingNotOpen {
                status: self.head.status.name(),
                bound,
            });
        }
        Ok(())
    }

    /// Open, and within the subscription window (close_time is settled before any rule runs).
    fn require_open_window(&self) -> Result<(), Rejection> {
        self.require_open()?;
        if self.head.open_time.is_some_and(|open| self.now < open) {
            return Err(Rejection::OfferingNotOpen {
                status: self.head.status.name(),
                bound: Some("open_time"),
            });
        }
        Ok(())
    }

    fn check_lot(&self, units: i64) -> Result<(), Rejection> {
        let lot_units = self.head.lot();
        if units % lot_units != 0 {
            return Err(Rejection::NotAMultipleOfLot { units, lot_units });
        }
        Ok(())
    }

    /// A position is 0 or at least the minimum.
    fn check_minimum(&self, would_hold: i64) -> Result<(), Rejection> {
        let minimum = self.head.min_units_per_investor;
        if would_hold != 0 && would_hold < minimum {
            return Err(Rejection::BelowInvestorMinimum {
                would_hold,
                minimum,
            });
        }
        Ok(())
    }

    fn check_version(&self, expected: i64) -> Result<(), Rejection> {
        let seen = expected == 0
            || expected == self.head.version
            || Some(expected) == self.version_before_clock;
        if !seen {
            return Err(Rejection::VersionMismatch {
                expected,
                actual: self.head.version,
            });
        }
        Ok(())
    }

    /// The terms after `changes`, or why the offering as it stands forbids them.
    fn check_amendment(&self, changes: &TermChanges) -> Result<Terms, Rejection> {
        debug_assert!(
            self.all_positions,
            "an amendment is checked against every position"
        );
        let head = &self.head;
        let after = changes.apply_to(&head.terms());
        let conflict = |field, reason: String| Err(Rejection::AmendmentConflict { field, reason });
        if changes.max_units.is_some() {
            let floor = [
                (head.subscribed_units, "the units subscribed"),
                (after.max_units_per_investor, "max_units_per_investor"),
                (head.min_units_per_investor, "min_units_per_investor"),
                (head.lot_units, "lot_units"),
            ];
            for (value, what) in floor {
                if after.max_units < value {
                    return conflict(
                        "max_units",
                        format!("{} is below {what} ({value})", after.max_units),
                    );
                }
            }
        }
        if let Some(cap) = changes.max_units_per_investor.filter(|cap| *cap > 0) {
            if cap < head.min_units_per_investor {
                return conflict(
                    "max_units_per_investor",
                    format!(
                        "{cap} is below min_units_per_investor ({})",
                        head.min_units_per_investor
                    ),
                );
            }
            if cap % head.lot() != 0 {
                return conflict(
                    "max_units_per_investor",
                    format!("{cap} is not a multiple of lot_units ({})", head.lot()),
                );
            }
            if cap > after.max_units {
                return conflict(
                    "max_units_per_investor",
                    format!("{cap} is over max_units ({})", after.max_units),
                );
            }
            let largest = self
                .holdings
                .values()
                .map(|h| h.units.max(h.demand))
                .max()
                .unwrap_or(0);
            if cap < largest {
                return conflict(
                    "max_units_per_investor",
                    format!("{cap} is below what an investor already holds or demands ({largest})"),
                );
            }
        }
        if let Some(close) = changes.close_time {
            if close <= self.now {
                return conflict("close_time", "is not in the future".to_owned());
            }
            if head.open_time.is_some_and(|open| close <= open) {
                return conflict("close_time", "is not after open_time".to_owned());
            }
        }
        Ok(after)
    }

    fn holding(&self, investor_id: &str) -> Holding {
        self.holdings.get(investor_id).cloned().unwrap_or_default()
    }

    /// A new entry at the next sequence, with the head's totals after it.
    fn next_entry(&mut self, request_id: String, actor: &str, kind: EntryKind) -> Entry {
        self.head.version += 1;
        self.head.update_time = self.now;
        Entry {
            offering_id: self.head.offering_id.clone(),
            sequence: self.head.version,
            kind,
            investor_id: String::new(),
            units_delta: 0,
            investor_units_after: 0,
            offering_units_after: self.head.subscribed_units,
            request_id,
            requested_units: 0,
            expected_version: 0,
            record_time: self.now,
            actor: actor.to_owned(),
            demand_delta: 0,
            investor_demand_after: 0,
            offering_demand_after: self.head.demanded_units,
            terms_before: None,
            terms_after: None,
            entry_hash: chain::GENESIS,
        }
    }

    /// Every appended entry passes here, complete: it is linked to the chain, and the head
    /// keeps its hash for the next one.
    fn push(&mut self, mut entry: Entry) -> Entry {
        debug_assert!((0..=self.head.max_units).contains(&self.head.subscribed_units));
        debug_assert_eq!(entry.sequence, self.head.version, "entries append in order");
        self.head.last_hash = chain::link(&self.head.last_hash, &mut entry);
        self.recorded
            .insert(entry.request_id.clone(), entry.clone());
        self.appended.push(entry.clone());
        entry
    }

    /// The CLOSED entry that close_time implies, by the "system" actor.
    fn close_by_clock(&mut self) {
        self.version_before_clock = Some(self.head.version);
        self.head.status = OfferingStatus::Closed;
        let entry = self.next_entry(
            CLOSED_BY_CLOCK_REQUEST_ID.to_owned(),
            SYSTEM_ACTOR,
            EntryKind::OfferingClosed,
        );
        self.push(entry);
    }

    fn append_lifecycle(&mut self, request: &Request, status_after: OfferingStatus) -> Entry {
        self.head.status = status_after;
        let mut entry = self.next_entry(
            request.request_id.clone(),
            &request.actor,
            request.command.kind(),
        );
        let (requested_units, expected_version) = request.command.request_fields();
        entry.requested_units = requested_units;
        entry.expected_version = expected_version;
        self.push(entry)
    }

    fn append_investor(&mut self, request: &Request, investor_id: &str, change: Change) -> Entry {
        let sequence = self.head.version + 1;
        let holding = self.holdings.entry(investor_id.to_owned()).or_default();
        let (units_before, units_after) = (holding.units, holding.units + change.units_delta);
        holding.units = units_after;
        holding.demand += change.demand_delta;
        holding.update_time = Some(self.now);
        if holding.first_sequence == 0 {
            holding.first_sequence = sequence;
        }
        let demand_after = holding.demand;
        if units_before == 0 && units_after > 0 {
            self.head.investor_count += 1;
        } else if units_before > 0 && units_after == 0 {
            self.head.investor_count -= 1;
        }
        self.head.subscribed_units += change.units_delta;
        self.head.demanded_units += change.demand_delta;
        debug_assert!(units_after >= 0 && demand_after >= 0);
        let mut entry = self.next_entry(
            request.request_id.clone(),
            &request.actor,
            request.command.kind(),
        );
        let (requested_units, expected_version) = request.command.request_fields();
        entry.investor_id = investor_id.to_owned();
        entry.units_delta = change.units_delta;
        entry.investor_units_after = units_after;
        entry.demand_delta = change.demand_delta;
        entry.investor_demand_after = demand_after;
        entry.requested_units = requested_units;
        entry.expected_version = expected_version;
        self.push(entry)
    }

    fn append_amendment(&mut self, request: &Request, after: Terms) -> Entry {
        let before = self.head.terms();
        self.head.name = after.name.clone();
        self.head.max_units = after.max_units;
        self.head.max_units_per_investor = after.max_units_per_investor;
        self.head.close_time = after.close_time;
        let mut entry = self.next_entry(
            request.request_id.clone(),
            &request.actor,
            EntryKind::OfferingAmended,
        );
        entry.expected_version = request.command.request_fields().1;
        entry.terms_before = Some(before);
        entry.terms_after = Some(after);
        self.push(entry)
    }

    /// Every investor with demand gets their allocation entry, in order of first subscription,
    /// then the status change, which carries the request_id.
    fn allocate(&mut self, request: &Request) -> Entry {
        debug_assert!(
            self.all_positions,
            "an allocation needs every investor's demand"
        );
        let mut demands: Vec<Demand> = self
            .holdings
            .iter()
            .filter(|(_, h)| h.demand > 0)
            .map(|(investor_id, h)| Demand {
                investor_id: investor_id.clone(),
                demand: h.demand,
                first_sequence: h.first_sequence,
            })
            .collect();
        demands.sort_by_key(|d| (d.first_sequence, d.investor_id.clone()));
        let allocations = allocation::allocate(self.head.max_units, self.head.lot(), &demands);
        let expected_version = request.command.request_fields().1;
        for (demand, units) in demands.iter().zip(allocations) {
            let holding = self
                .holdings
                .get_mut(&demand.investor_id)
                .expect("every demand comes from a holding");
            holding.units = units;
            holding.update_time = Some(self.now);
            if units > 0 {
                self.head.investor_count += 1;
            }
            self.head.subscribed_units += units;
            // Derived ids hold '/', which no caller's request_id can: they never collide.
            let request_id = format!("{}/{}", request.request_id, demand.investor_id);
            let mut entry = self.next_entry(request_id, &request.actor, EntryKind::Allocated);
            entry.investor_id = demand.investor_id.clone();
            entry.units_delta = units;
            entry.investor_units_after = units;
            entry.investor_demand_after = demand.demand;
            entry.expected_version = expected_version;
            self.push(entry);
        }
        self.append_lifecycle(request, OfferingStatus::Allocated)
    }

    fn applied(&self, entry: Entry, replayed: bool) -> Applied {
        let position = (!entry.investor_id.is_empty()).then(|| {
            let holding = self.holding(&entry.investor_id);
            Position {
                offering_id: self.head.offering_id.clone(),
                investor_id: entry.investor_id.clone(),
                units: holding.units,
                update_time: holding.update_time,
                demanded_units: holding.demand,
                first_sequence: holding.first_sequence,
            }
        });
        Applied {
            entry,
            offering: self.head.clone(),
            position,
            replayed,
        }
    }

    /// True when the batch appended anything (otherwise there is nothing to write).
    pub fn has_writes(&self) -> bool {
        !self.appended.is_empty()
    }

    pub fn into_writes(self) -> BatchWrites {
        let mut touched: Vec<&str> = self
            .appended
            .iter()
            .filter(|e| !e.investor_id.is_empty())
            .map(|e| e.investor_id.as_str())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let positions = touched
            .into_iter()
            .map(|investor_id| {
                let holding = self.holding(investor_id);
                Position {
                    offering_id: self.head.offering_id.clone(),
                    investor_id: investor_id.to_owned(),
                    units: holding.units,
                    update_time: Some(self.now),
                    demanded_units: holding.demand,
                    first_sequence: holding.first_sequence,
                }
            })
            .collect();
        BatchWrites {
            head: self.head,
            entries: self.appended,
            positions,
        }
    }
}

/// The requests for one offering that go into one transaction, in the order they are applied.
#[derive(Clone, Debug)]
pub struct OfferingRequests {
    pub offering_id: Arc<str>,
    pub requests: Vec<Request>,
}

impl OfferingRequests {
    /// True when a store must load every position of the offering, not only those named.
    pub fn reads_all_positions(&self) -> bool {
        self.requests
            .iter()
            .any(|r| r.command.reads_all_positions())
    }
}

/// One result per request, per offering, in the order of the work given.
pub type Results = Vec<Vec<Result<Applied, Rejection>>>;

/// Applies the requests of several offerings, each against its own locked head, from the rows a
/// store loaded for all of them at once: the heads that exist, the positions of the investors
/// named (all of them for offerings whose requests [read all positions]), and the recorded
/// entries of the request_ids named. Returns the results and the rows to write (only for
/// offerings that changed).
///
/// [read all positions]: OfferingRequests::reads_all_positions
pub fn apply_all(
    work: &[OfferingRequests],
    heads: Vec<Offering>,
    positions: Vec<Position>,
    recorded: Vec<Entry>,
    now: Timestamp,
) -> (Results, Vec<BatchWrites>) {
    let mut heads: HashMap<String, Offering> = heads
        .into_iter()
        .map(|h| (h.offering_id.clone(), h))
        .collect();
    let mut positions_by_offering: HashMap<String, Vec<Position>> = HashMap::new();
    for position in positions {
        positions_by_offering
            .entry(position.offering_id.clone())
            .or_default()
            .push(position);
    }
    let mut recorded_by_offering: HashMap<String, Vec<Entry>> = HashMap::new();
    for entry in recorded {
        recorded_by_offering
            .entry(entry.offering_id.clone())
            .or_default()
            .push(entry);
    }
    let mut results = Vec::with_capacity(work.len());
    let mut writes = Vec::new();
    for item in work {
        let Some(head) = heads.remove(&*item.offering_id) else {
            let missing = Rejection::OfferingNotFound {
                offering_id: item.offering_id.to_string(),
            };
            results.push(item.requests.iter().map(|_| Err(missing.clone())).collect());
            continue;
        };
        let positions = positions_by_offering
            .remove(&*item.offering_id)
            .unwrap_or_default();
        let recorded = recorded_by_offering
            .remove(&*item.offering_id)
            .unwrap_or_default();
        let all_positions = item.reads_all_positions();
        let mut batch = Batch::new(head, positions, all_positions, recorded, now);
        results.push(
            item.requests
                .iter()
                .map(|request| batch.apply(request))
                .collect(),
        );
        if batch.has_writes() {
            writes.push(batch.into_writes());
        }
    }
    (results, writes)
}

/// What CreateOffering does when the offering_id may already be taken.
pub enum CreateOutcome {
    Created(Offering),
    /// The same request again: the existing offering, nothing written.
    Replayed(Offering),
}

/// Decides a CreateOffering whose offering_id is taken: a replay when the existing offering was
/// created by this very request, OFFERING_EXISTS otherwise.
pub fn check_create(
    new: &NewOffering,
    existing: Offering,
    created_by: &Entry,
) -> Result<CreateOutcome, Rejection> {
    let (would_be, _) = new.first_rows(existing.create_time);
    let same = would_be.terms()
        == created_by
            .terms_after
            .clone()
            .unwrap_or_else(|| existing.terms())
        && would_be.allocation == existing.allocation
        && would_be.open_time == existing.open_time
        && would_be.lot_units == existing.lot_units
        && would_be.min_units_per_investor == existing.min_units_per_investor
        && would_be.max_total_demand == existing.max_total_demand
        && created_by.kind == EntryKind::OfferingCreated
        && created_by.request_id == new.request_id
        && created_by.actor == *new.actor;
    if same {
        Ok(CreateOutcome::Replayed(existing))
    } else {
        Err(Rejection::OfferingExists {
            offering_id: new.offering_id.clone(),
        })
    }
}

impl NewOffering {
    /// The head and first history entry of a new offering; the entry records its terms.
    pub fn first_rows(&self, now: Timestamp) -> (Offering, Entry) {
        let mut head = Offering {
            offering_id: self.offering_id.clone(),
            name: self.name.clone(),
            max_units: self.max_units,
            max_units_per_investor: self.max_units_per_investor,
            subscribed_units: 0,
            investor_count: 0,
            status: OfferingStatus::Open,
            version: 1,
            create_time: now,
            update_time: now,
            allocation: self.allocation,
            open_time: self.open_time,
            close_time: self.close_time,
            lot_units: self.lot_units,
            min_units_per_investor: self.min_units_per_investor,
            max_total_demand: self.max_total_demand,
            demanded_units: 0,
            last_hash: chain::GENESIS,
        };
        let mut entry = Entry {
            offering_id: self.offering_id.clone(),
            sequence: 1,
            kind: EntryKind::OfferingCreated,
            investor_id: String::new(),
            units_delta: 0,
            investor_units_after: 0,
            offering_units_after: 0,
            request_id: self.request_id.clone(),
            requested_units: self.max_units,
            expected_version: 0,
            record_time: now,
            actor: self.actor.to_string(),
            demand_delta: 0,
            investor_demand_after: 0,
            offering_demand_after: 0,
            terms_before: None,
            terms_after: Some(head.terms()),
            entry_hash: chain::GENESIS,
        };
        head.last_hash = chain::link(&chain::GENESIS, &mut entry);
        (head, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(max_units: i64, per_investor: i64) -> Offering {
        let new = NewOffering {
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
        };
        new.first_rows(chrono::Utc::now()).0
    }

    fn request(request_id: &str, command: Command) -> Request {
        Request {
            request_id: request_id.into(),
            actor: "checkout".into(),
            command,
        }
    }

    fn subscribe(investor: &str, units: i64) -> Command {
        Command::Subscribe {
            investor_id: investor.into(),
            units,
        }
    }

    #[test]
    fn later_requests_see_earlier_ones_in_the_same_batch() {
        let mut batch = Batch::new(head(10, 0), vec![], false, vec![], chrono::Utc::now());
        assert!(batch.apply(&request("a", subscribe("alice", 6))).is_ok());
        let refused = batch.apply(&request("b", subscribe("bob", 5)));
        assert_eq!(
            refused.unwrap_err(),
            Rejection::OfferingCapExceeded {
                requested: 5,
                remaining: 4,
                max_units: 10
            }
        );
        let fits = batch.apply(&request("c", subscribe("bob", 4))).unwrap();
        assert_eq!(
            (fits.entry.sequence, fits.entry.offering_units_after),
            (3, 10)
        );
        let writes = batch.into_writes();
        assert_eq!(
            writes.entries.len(),
            2,
            "the refused request appends nothing"
        );
        assert_eq!(
            (
                writes.head.subscribed_units,
                writes.head.version,
                writes.head.investor_count
            ),
            (10, 3, 2)
        );
    }

    #[test]
    fn appended_entries_chain_on_from_the_head_and_the_head_keeps_the_last_hash() {
        let start = head(10, 0);
        let created = start.last_hash;
        assert_ne!(created, chain::GENESIS, "the creation entry is hashed too");
        let mut batch = Batch::new(start, vec![], false, vec![], chrono::Utc::now());
        let a = batch.apply(&request("a", subscribe("alice", 1))).unwrap();
        let b = batch.apply(&request("b", subscribe("bob", 1))).unwrap();
        let replay = batch.apply(&request("a", subscribe("alice", 1))).unwrap();
        assert_eq!(a.entry.entry_hash, chain::entry_hash(&created, &a.entry));
        assert_eq!(
            b.entry.entry_hash,
            chain::entry_hash(&a.entry.entry_hash, &b.entry)
        );
        assert_eq!(replay.entry.entry_hash, a.entry.entry_hash);
        let writes = batch.into_writes();
        assert_eq!(writes.head.last_hash, b.entry.entry_hash);
    }

    #[test]
    fn a_request_id_repeated_in_one_batch_is_a_replay() {
        let mut batch = Batch::new(head(10, 0), vec![], false, vec![], chrono::Utc::now());
        let first = batch.apply(&request("a", subscribe("alice", 2))).unwrap();
        let again = batch.apply(&request("a", subscribe("alice", 2))).unwrap();
        assert!(again.replayed && !first.replayed);
        assert_eq!(again.entry, first.entry);
        let reused = batch.apply(&request("a", subscribe("alice", 3)));
        assert!(matches!(reused, Err(Rejection::RequestIdReused { .. })));
        assert_eq!(batch.into_writes().entries.len(), 1);
    }

    #[test]
    fn per_investor_cap_counts_units_already_held() {
        let held = Position {
            offering_id: "deal".into(),
            investor_id: "alice".into(),
            units: 4,
            update_time: None,
            demanded_units: 0,
            first_sequence: 2,
        };
        let mut batch = Batch::new(head(100, 5), vec![held], false, vec![], chrono::Utc::now());
        assert_eq!(
            batch
                .apply(&request("a", subscribe("alice", 2)))
                .unwrap_err(),
            Rejection::InvestorCapExceeded {
                would_hold: 6,
                cap: 5
            }
        );
        assert!(batch.apply(&request("b", subscribe("alice", 1))).is_ok());
    }

    #[test]
    fn cancel_of_all_takes_what_is_held_and_drops_the_investor() {
        let held = Position {
            offering_id: "deal".into(),
            investor_id: "alice".into(),
            units: 4,
            update_time: None,
            demanded_units: 0,
            first_sequence: 2,
        };
        let mut start = head(100, 0);
        start.subscribed_units = 4;
        start.investor_count = 1;
        let mut batch = Batch::new(start, vec![held], false, vec![], chrono::Utc::now());
        let cancelled = batch
            .apply(&request(
                "c",
                Command::Cancel {
                    investor_id: "alice".into(),
                    units: 0,
                },
            ))
            .unwrap();
        assert_eq!(
            (
                cancelled.entry.units_delta,
                cancelled.offering.investor_count
            ),
            (-4, 0)
        );
        let nothing_left = batch.apply(&request(
            "d",
            Command::Cancel {
                investor_id: "alice".into(),
                units: 0,
            },
        ));
        assert_eq!(
            nothing_left.unwrap_err(),
            Rejection::InsufficientUnits {
                requested: 0,
                held: 0
            }
        );
    }

    #[test]
    fn lifecycle_moves_forward_only_and_checks_versions() {
        let mut batch = Batch::new(head(10, 0), vec![], false, vec![], chrono::Utc::now());
        let finalize = |v| Command::Finalize {
            expected_version: v,
        };
        assert!(matches!(
            batch.apply(&request("f", finalize(0))),
            Err(Rejection::OfferingNotClosed { .. })
        ));
        assert_eq!(
            batch
                .apply(&request(
                    "c",
                    Command::Close {
                        expected_version: 7
                    }
                ))
                .unwrap_err(),
            Rejection::VersionMismatch {
                expected: 7,
                actual: 1
            }
        );
        assert!(
            batch
                .apply(&request(
                    "c",
                    Command::Close {
                        expected_version: 1
                    }
                ))
                .is_ok()
        );
        assert!(matches!(
            batch.apply(&request("s", subscribe("alice", 1))),
            Err(Rejection::OfferingNotOpen { .. })
        ));
        assert!(batch.apply(&request("f", finalize(2))).is_ok());
        assert!(matches!(
            batch.apply(&request("f2", finalize(0))),
            Err(Rejection::OfferingNotClosed { .. })
        ));
    }
}
