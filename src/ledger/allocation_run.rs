//! The ALLOCATED entries of an allocation as the batch leaves them for the store: shares and
//! hashes, rebuilt into entries and positions a chunk at a time while the store writes them
//! (`command/allocate` makes a run; `apply` hands it over in `BatchWrites`).

use crate::ledger::allocation::Demand;
use crate::ledger::chain::{self, Hash};
use crate::ledger::types::{Entry, EntryKind, Position, Timestamp};

/// The ALLOCATED entries of one allocation, held as their shares and hashes: about 90 bytes an
/// investor instead of the few hundred of an [`Entry`]. [`AllocationRun::chunks`] rebuilds
/// them in sequence order.
#[derive(Debug)]
pub struct AllocationRun {
    pub(in crate::ledger) offering_id: String,
    /// The AllocateOffering's request_id; each entry's is `<request_id>/<investor_id>`.
    pub(in crate::ledger) request_id: String,
    pub(in crate::ledger) actor: String,
    pub(in crate::ledger) expected_version: i64,
    pub(in crate::ledger) record_time: Timestamp,
    /// The sequence of the first entry; the others follow without gaps.
    pub(in crate::ledger) first_sequence: i64,
    /// The offering's subscribed units before the first entry.
    pub(in crate::ledger) offering_units_before: i64,
    /// The offering's demand, which an allocation does not change.
    pub(in crate::ledger) offering_demand: i64,
    /// In sequence order: who, and what they demanded.
    pub(in crate::ledger) demands: Vec<Demand>,
    /// Units allocated, index for index with `demands`.
    pub(in crate::ledger) units: Vec<i64>,
    /// Entry hashes, index for index with `demands`.
    pub(in crate::ledger) hashes: Vec<Hash>,
}

/// Rows of an [`AllocationRun`] to write together: its entries (hashed) and the positions
/// they leave.
pub struct AllocationChunk {
    pub entries: Vec<Entry>,
    pub positions: Vec<Position>,
}

impl AllocationRun {
    /// How many entries (and positions) the run writes.
    pub fn len(&self) -> usize {
        self.demands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.demands.is_empty()
    }

    /// The entry of the `index`th investor, the offering holding `offering_units_after` after
    /// it; hashed once `hashes` has its hash.
    pub(in crate::ledger) fn entry(&self, index: usize, offering_units_after: i64) -> Entry {
        let demand = &self.demands[index];
        let units = self.units[index];
        Entry {
            offering_id: self.offering_id.clone(),
            sequence: self.first_sequence + index as i64,
            kind: EntryKind::Allocated,
            investor_id: demand.investor_id.clone(),
            units_delta: units,
            investor_units_after: units,
            offering_units_after,
            // Derived ids hold '/', which no caller's request_id can: they never collide.
            request_id: format!("{}/{}", self.request_id, demand.investor_id),
            requested_units: 0,
            expected_version: self.expected_version,
            record_time: self.record_time,
            actor: self.actor.clone(),
            demand_delta: 0,
            investor_demand_after: demand.demand,
            offering_demand_after: self.offering_demand,
            terms_before: None,
            terms_after: None,
            entry_hash: self.hashes.get(index).copied().unwrap_or(chain::GENESIS),
        }
    }

    fn position(&self, index: usize) -> Position {
        let demand = &self.demands[index];
        Position {
            offering_id: self.offering_id.clone(),
            investor_id: demand.investor_id.clone(),
            units: self.units[index],
            update_time: Some(self.record_time),
            demanded_units: demand.demand,
            first_sequence: demand.first_sequence,
        }
    }

    /// The entries and positions in sequence order, `rows` at a time: only one chunk is ever
    /// built, whatever the number of investors.
    pub fn chunks(&self, rows: usize) -> impl Iterator<Item = AllocationChunk> + '_ {
        assert!(rows > 0, "a chunk holds at least one row");
        let mut offering_units_after = self.offering_units_before;
        (0..self.len()).step_by(rows).map(move |start| {
            let end = (start + rows).min(self.len());
            let entries = (start..end)
                .map(|index| {
                    offering_units_after += self.units[index];
                    self.entry(index, offering_units_after)
                })
                .collect();
            let positions = (start..end).map(|index| self.position(index)).collect();
            AllocationChunk { entries, positions }
        })
    }
}
