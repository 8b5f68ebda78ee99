//! AllocateOffering: a closed pro-rata offering shares its cap among the investors' demands
//! by the exact rule of `allocation`, in one batch: an ALLOCATED entry per investor with
//! demand, then the status change to ALLOCATED, which carries the request_id.
//!
//! An allocation may append a million entries, so it does not append them as other commands
//! do. The store loads only what the rule needs, each investor's demand and first sequence
//! ([`Batch::with_demands`]); the batch computes the shares and hashes the entries in sequence
//! order, keeping their hashes only, and leaves an [`AllocationRun`] that rebuilds the entries
//! and positions a chunk at a time while the store writes them. One function builds an
//! allocation entry, for the hash and for the write alike, so the two cannot differ.

use crate::ledger::allocation::{self, Demand};
use crate::ledger::allocation_run::AllocationRun;
use crate::ledger::apply::Batch;
use crate::ledger::outcome::Rejection;
use crate::ledger::types::{Allocation, Entry, OfferingStatus, Request};

impl Batch {
    /// CLOSED -> ALLOCATED, pro rata only.
    pub(in crate::ledger) fn allocate(
        &mut self,
        request: &Request,
        expected_version: i64,
    ) -> Result<Entry, Rejection> {
        if self.head.allocation != Allocation::ProRata {
            return Err(Rejection::NotProRata);
        }
        if self.head.status != OfferingStatus::Closed {
            return Err(Rejection::OfferingNotClosed {
                status: self.head.status.name(),
            });
        }
        self.check_version(expected_version)?;
        self.append_allocations(request)
    }

    /// Every investor with demand gets their allocation entry, in order of first subscription,
    /// then the status change, which carries the request_id.
    fn append_allocations(&mut self, request: &Request) -> Result<Entry, Rejection> {
        let Some(stored) = self.demands.take() else {
            debug_assert!(false, "an allocating batch is given the demands");
            return Err(Rejection::StateInconsistent {
                reason: "the investors' demand was not loaded".to_owned(),
            });
        };
        let demands = self.current_demands(stored);
        // Checked before anything is appended: a refusal leaves the batch as it was.
        let units = match allocation::allocate(self.head.max_units, self.head.lot(), &demands) {
            Ok(units) => units,
            Err(error) => {
                self.demands = Some(demands);
                return Err(Rejection::StateInconsistent {
                    reason: error.to_string(),
                });
            }
        };
        let mut run = AllocationRun {
            offering_id: self.head.offering_id.clone(),
            request_id: request.request_id.clone(),
            actor: request.actor.to_string(),
            expected_version: request.command.request_fields().1,
            record_time: self.now,
            first_sequence: self.head.version + 1,
            offering_units_before: self.head.subscribed_units,
            offering_demand: self.head.demanded_units,
            hashes: Vec::with_capacity(demands.len()),
            demands,
            units,
        };
        for index in 0..run.len() {
            let (investor_id, units) = (&run.demands[index].investor_id, run.units[index]);
            // Only investors the batch named have a holding; the others are in the run alone.
            if let Some(holding) = self.holdings.get_mut(investor_id) {
                holding.units = units;
                holding.update_time = Some(self.now);
            }
            if units > 0 {
                self.head.investor_count += 1;
            }
            self.head.subscribed_units += units;
            self.head.version += 1;
            let mut entry = run.entry(index, self.head.subscribed_units);
            self.link(&mut entry);
            run.hashes.push(self.head.last_hash);
        }
        self.head.update_time = self.now;
        self.allocation = Some(run);
        Ok(self.append_lifecycle(request, OfferingStatus::Allocated))
    }

    /// The demands as the batch leaves them: those stored, except that an investor the batch
    /// holds (named by a request, perhaps changed by one) counts as held; in order of first
    /// subscription.
    fn current_demands(&self, mut demands: Vec<Demand>) -> Vec<Demand> {
        if !self.holdings.is_empty() {
            demands.retain(|d| !self.holdings.contains_key(&d.investor_id));
            demands.extend(self.holdings.iter().filter(|(_, h)| h.demand > 0).map(
                |(investor_id, h)| Demand {
                    investor_id: investor_id.clone(),
                    demand: h.demand,
                    first_sequence: h.first_sequence,
                },
            ));
        }
        // Investor ids are distinct, so this order is total and an unstable sort is exact.
        demands.sort_unstable_by(|a, b| {
            (a.first_sequence, &a.investor_id).cmp(&(b.first_sequence, &b.investor_id))
        });
        demands
    }
}

#[cfg(test)]
mod tests {
    use super::AllocationRun;
    use crate::ledger::allocation::Demand;
    use crate::ledger::apply::{Batch, BatchWrites};
    use crate::ledger::chain;
    use crate::ledger::outcome::Rejection;
    use crate::ledger::testing::{head, now, position, pro_rata_head, request, subscribe};
    use crate::ledger::types::{Command, Entry, EntryKind, Offering, OfferingStatus};

    fn allocate() -> Command {
        Command::Allocate {
            expected_version: 0,
        }
    }

    fn demand(investor: &str, units: i64, first_sequence: i64) -> Demand {
        Demand {
            investor_id: investor.into(),
            demand: units,
            first_sequence,
        }
    }

    /// A closed pro-rata offering of 10 units with 5 demanded by each of three investors.
    fn closed_with_demand() -> Offering {
        let mut start = pro_rata_head(10);
        start.status = OfferingStatus::Closed;
        start.demanded_units = 15;
        start.version = 5;
        start
    }

    /// Every entry the writes append, in sequence order, as the store writes them.
    fn appended(writes: &BatchWrites, rows: usize) -> Vec<Entry> {
        let run = writes.allocation.iter().flat_map(|run| run.chunks(rows));
        let mut entries: Vec<Entry> = run.flat_map(|chunk| chunk.entries).collect();
        entries.extend(writes.entries.iter().cloned());
        entries.sort_by_key(|e| e.sequence);
        entries
    }

    #[test]
    fn allocations_follow_the_rule_then_the_status_entry_carries_the_request_id() {
        let demands = vec![demand("cy", 5, 4), demand("ann", 5, 2), demand("ben", 5, 3)];
        let mut batch =
            Batch::new(closed_with_demand(), vec![], false, vec![], now()).with_demands(demands);
        let applied = batch.apply(&request("alloc", allocate())).unwrap();
        assert_eq!(
            (applied.entry.kind, applied.entry.investor_id.as_str()),
            (EntryKind::Allocated, "")
        );
        assert_eq!(applied.entry.request_id, "alloc");
        assert_eq!(applied.offering.status, OfferingStatus::Allocated);
        assert_eq!(
            (
                applied.offering.subscribed_units,
                applied.offering.investor_count
            ),
            (10, 3)
        );
        let writes = batch.into_writes();
        let shares: Vec<_> = appended(&writes, 2)
            .iter()
            .map(|e| (e.investor_id.as_str(), e.units_delta, e.request_id.as_str()))
            .map(|(i, u, r)| (i.to_owned(), u, r.to_owned()))
            .collect();
        // README's worked example: the unit left goes to ann, who subscribed first.
        let expected = [
            ("ann", 4, "alloc/ann"),
            ("ben", 3, "alloc/ben"),
            ("cy", 3, "alloc/cy"),
            ("", 0, "alloc"),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|&(i, u, r)| (i.to_owned(), u, r.to_owned()))
            .collect();
        assert_eq!(shares, expected);
        let positions: Vec<_> = writes
            .allocation
            .iter()
            .flat_map(|run| run.chunks(2))
            .flat_map(|chunk| chunk.positions)
            .map(|p| (p.investor_id, p.units, p.demanded_units, p.first_sequence))
            .collect();
        assert_eq!(
            positions,
            [
                ("ann".to_owned(), 4, 5, 2),
                ("ben".to_owned(), 3, 5, 3),
                ("cy".to_owned(), 3, 5, 4)
            ]
        );
        assert!(writes.positions.is_empty(), "the run carries its positions");
    }

    #[test]
    fn the_entries_rebuilt_chunk_by_chunk_are_those_hashed_in_the_chain() {
        let start = closed_with_demand();
        let created = start.last_hash;
        let demands: Vec<Demand> = (1..=7)
            .map(|i| demand(&format!("investor-{i}"), 5, 10 - i))
            .collect();
        let mut batch = Batch::new(start, vec![], false, vec![], now()).with_demands(demands);
        batch.apply(&request("alloc", allocate())).unwrap();
        let writes = batch.into_writes();
        let run: &AllocationRun = writes.allocation.as_ref().unwrap();
        assert_eq!(run.len(), 7);
        for rows in [1, 3, 7, 100] {
            let entries = appended(&writes, rows);
            assert_eq!(entries.len(), 8);
            let mut previous = created;
            let mut units = 0;
            for entry in &entries {
                assert_eq!(entry.entry_hash, chain::entry_hash(&previous, entry));
                previous = entry.entry_hash;
                units += entry.units_delta;
                assert_eq!(entry.offering_units_after, units);
            }
            assert_eq!(entries[0].sequence, 6);
            assert_eq!(writes.head.last_hash, previous);
            assert_eq!(writes.head.version, 13);
        }
    }

    #[test]
    fn an_investor_the_batch_changed_counts_as_the_batch_left_them() {
        // Open with two stored demands; the batch subscribes dan, cancels ann, closes, allocates.
        let mut start = pro_rata_head(4);
        start.demanded_units = 10;
        start.version = 3;
        let stored = vec![demand("ann", 5, 2), demand("ben", 5, 3)];
        let positions = vec![position("ann", 0, 5, 2)];
        let close = Command::Close {
            expected_version: 0,
        };
        let mut batch = Batch::new(start, positions, false, vec![], now()).with_demands(stored);
        batch.apply(&request("s", subscribe("dan", 3))).unwrap();
        batch
            .apply(&request("c", crate::ledger::testing::cancel("ann", 0)))
            .unwrap();
        batch.apply(&request("close", close)).unwrap();
        let applied = batch.apply(&request("alloc", allocate())).unwrap();
        assert_eq!(applied.offering.subscribed_units, 4);
        let writes = batch.into_writes();
        let shares: Vec<_> = appended(&writes, 10)
            .into_iter()
            .filter(|e| e.kind == EntryKind::Allocated && !e.investor_id.is_empty())
            .map(|e| (e.investor_id, e.units_delta))
            .collect();
        // ben 5 and dan 3 of 4 units: quotas 2.5 and 1.5, the lot left goes to ben (earlier).
        assert_eq!(shares, [("ben".to_owned(), 3), ("dan".to_owned(), 1)]);
        let dan = writes.positions.iter().find(|p| p.investor_id == "dan");
        assert_eq!(
            dan.map(|p| p.units),
            Some(1),
            "the batch's holding is allocated too"
        );
    }

    #[test]
    fn only_a_closed_pro_rata_offering_is_allocated() {
        let mut first_come = head(10, 0);
        first_come.status = OfferingStatus::Closed;
        let mut batch = Batch::new(first_come, vec![], false, vec![], now());
        assert_eq!(
            batch.apply(&request("a", allocate())).unwrap_err(),
            Rejection::NotProRata
        );
        let mut batch = Batch::new(pro_rata_head(10), vec![], false, vec![], now());
        assert_eq!(
            batch.apply(&request("a", allocate())).unwrap_err(),
            Rejection::OfferingNotClosed { status: "OPEN" }
        );
    }
}
