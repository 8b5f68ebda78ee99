//! The rules: where caps, the lifecycle, expected versions and request_id reuse are checked.
//!
//! A store locks an offering's head, loads what a batch of requests needs (the head, the
//! positions of the investors named, the entries already recorded under the request_ids named),
//! and hands them to a [`Batch`]. The batch validates each request in order against the running
//! totals, so request 2 sees request 1's effect, and collects the rows to write. A rejected
//! request changes nothing and does not affect the others.

use std::collections::HashMap;
use std::sync::Arc;

use super::types::{
    Command, Entry, EntryKind, NewOffering, Offering, OfferingStatus, Position, Request, Timestamp,
};

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
    #[error("offering is {status}, not OPEN")]
    OfferingNotOpen { status: &'static str },
    #[error("offering is {status}, not CLOSED")]
    OfferingNotClosed { status: &'static str },
    #[error("{requested} units to cancel but the investor holds {held}")]
    InsufficientUnits { requested: i64, held: i64 },
    #[error("request_id {request_id:?} was already used for a different request")]
    RequestIdReused { request_id: String },
    #[error("expected_version {expected} but the offering is at version {actual}")]
    VersionMismatch { expected: i64, actual: i64 },
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

/// Requests being applied to one locked offering inside one transaction.
pub struct Batch {
    head: Offering,
    /// Units held, for every investor named in the batch (0 when no row exists).
    units_by_investor: HashMap<String, i64>,
    /// Entries recorded under the batch's request_ids, earlier or within this batch.
    recorded: HashMap<String, Entry>,
    position_times: HashMap<String, Timestamp>,
    now: Timestamp,
    appended: Vec<Entry>,
}

/// What a batch leaves to write: the new head, the entries to append (in sequence order) and
/// the positions whose units changed.
pub struct BatchWrites {
    pub head: Offering,
    pub entries: Vec<Entry>,
    pub positions: Vec<Position>,
}

impl Batch {
    /// `positions` must hold a row for every investor that has one among those the requests
    /// name; `recorded` every existing entry whose request_id the requests use.
    pub fn new(
        head: Offering,
        positions: Vec<Position>,
        recorded: Vec<Entry>,
        now: Timestamp,
    ) -> Self {
        let mut units_by_investor = HashMap::with_capacity(positions.len());
        let mut position_times = HashMap::with_capacity(positions.len());
        for position in positions {
            if let Some(time) = position.update_time {
                position_times.insert(position.investor_id.clone(), time);
            }
            units_by_investor.insert(position.investor_id, position.units);
        }
        let recorded = recorded
            .into_iter()
            .map(|e| (e.request_id.clone(), e))
            .collect();
        Self {
            head,
            units_by_investor,
            recorded,
            position_times,
            now,
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
        let (units_delta, status_after) = self.check(&request.command)?;
        let entry = self.append(request, units_delta, status_after);
        Ok(self.applied(entry, false))
    }

    /// The rules proper: the units change and the status after `command`, or why not.
    fn check(&self, command: &Command) -> Result<(i64, OfferingStatus), Rejection> {
        let head = &self.head;
        let not_open = || Rejection::OfferingNotOpen {
            status: head.status.name(),
        };
        match command {
            Command::Subscribe { investor_id, units } => {
                if head.status != OfferingStatus::Open {
                    return Err(not_open());
                }
                if *units > head.remaining_units() {
                    return Err(Rejection::OfferingCapExceeded {
                        requested: *units,
                        remaining: head.remaining_units(),
                        max_units: head.max_units,
                    });
                }
                let would_hold = self.units_held(investor_id) + units;
                let cap = head.max_units_per_investor;
                if cap > 0 && would_hold > cap {
                    return Err(Rejection::InvestorCapExceeded { would_hold, cap });
                }
                Ok((*units, OfferingStatus::Open))
            }
            Command::Cancel { investor_id, units } => {
                if head.status != OfferingStatus::Open {
                    return Err(not_open());
                }
                let held = self.units_held(investor_id);
                let cancelled = if *units == 0 { held } else { *units };
                if cancelled == 0 || cancelled > held {
                    return Err(Rejection::InsufficientUnits {
                        requested: cancelled,
                        held,
                    });
                }
                Ok((-cancelled, OfferingStatus::Open))
            }
            // Status before version: a second close or finalize is told the offering moved on
            // (final), not to re-read and retry (ABORTED).
            Command::Close { expected_version } => {
                if head.status != OfferingStatus::Open {
                    return Err(not_open());
                }
                self.check_version(*expected_version)?;
                Ok((0, OfferingStatus::Closed))
            }
            Command::Finalize { expected_version } => {
                if head.status != OfferingStatus::Closed {
                    return Err(Rejection::OfferingNotClosed {
                        status: head.status.name(),
                    });
                }
                self.check_version(*expected_version)?;
                Ok((0, OfferingStatus::Finalized))
            }
        }
    }

    fn check_version(&self, expected: i64) -> Result<(), Rejection> {
        if expected != 0 && expected != self.head.version {
            return Err(Rejection::VersionMismatch {
                expected,
                actual: self.head.version,
            });
        }
        Ok(())
    }

    fn units_held(&self, investor_id: &str) -> i64 {
        self.units_by_investor
            .get(investor_id)
            .copied()
            .unwrap_or(0)
    }

    fn append(
        &mut self,
        request: &Request,
        units_delta: i64,
        status_after: OfferingStatus,
    ) -> Entry {
        let investor_id = request.command.investor_id().unwrap_or("").to_owned();
        let mut investor_units_after = 0;
        if !investor_id.is_empty() {
            let held = self.units_held(&investor_id);
            investor_units_after = held + units_delta;
            if held == 0 && investor_units_after > 0 {
                self.head.investor_count += 1;
            } else if held > 0 && investor_units_after == 0 {
                self.head.investor_count -= 1;
            }
            self.units_by_investor
                .insert(investor_id.clone(), investor_units_after);
            self.position_times.insert(investor_id.clone(), self.now);
        }
        self.head.subscribed_units += units_delta;
        self.head.version += 1;
        self.head.status = status_after;
        self.head.update_time = self.now;
        debug_assert!((0..=self.head.max_units).contains(&self.head.subscribed_units));
        debug_assert!(investor_units_after >= 0);

        let (requested_units, expected_version) = request.command.request_fields();
        let entry = Entry {
            offering_id: self.head.offering_id.clone(),
            sequence: self.head.version,
            kind: request.command.kind(),
            investor_id,
            units_delta,
            investor_units_after,
            offering_units_after: self.head.subscribed_units,
            request_id: request.request_id.clone(),
            requested_units,
            expected_version,
            record_time: self.now,
            actor: request.actor.to_string(),
        };
        self.recorded
            .insert(entry.request_id.clone(), entry.clone());
        self.appended.push(entry.clone());
        entry
    }

    fn applied(&self, entry: Entry, replayed: bool) -> Applied {
        let position = (!entry.investor_id.is_empty()).then(|| Position {
            offering_id: self.head.offering_id.clone(),
            investor_id: entry.investor_id.clone(),
            units: self.units_held(&entry.investor_id),
            update_time: self.position_times.get(&entry.investor_id).copied(),
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
            .map(|investor_id| Position {
                offering_id: self.head.offering_id.clone(),
                investor_id: investor_id.to_owned(),
                units: self.units_held(investor_id),
                update_time: Some(self.now),
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

/// One result per request, per offering, in the order of the work given.
pub type Results = Vec<Vec<Result<Applied, Rejection>>>;

/// Applies the requests of several offerings, each against its own locked head, from the rows a
/// store loaded for all of them at once: the heads that exist, and the positions and recorded
/// entries of the investors and request_ids named. Returns the results and the rows to write
/// (only for offerings that changed).
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
        let mut batch = Batch::new(head, positions, recorded, now);
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
    let same = existing.name == new.name
        && existing.max_units == new.max_units
        && existing.max_units_per_investor == new.max_units_per_investor
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
    /// The head and first history entry of a new offering.
    pub fn first_rows(&self, now: Timestamp) -> (Offering, Entry) {
        let head = Offering {
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
        };
        let entry = Entry {
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
        };
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
        let mut batch = Batch::new(head(10, 0), vec![], vec![], chrono::Utc::now());
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
    fn a_request_id_repeated_in_one_batch_is_a_replay() {
        let mut batch = Batch::new(head(10, 0), vec![], vec![], chrono::Utc::now());
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
        };
        let mut batch = Batch::new(head(100, 5), vec![held], vec![], chrono::Utc::now());
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
        };
        let mut start = head(100, 0);
        start.subscribed_units = 4;
        start.investor_count = 1;
        let mut batch = Batch::new(start, vec![held], vec![], chrono::Utc::now());
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
        let mut batch = Batch::new(head(10, 0), vec![], vec![], chrono::Utc::now());
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
