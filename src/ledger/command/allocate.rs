//! AllocateOffering: a closed pro-rata offering shares its cap among the investors' demands
//! by the exact rule of `allocation`, in one batch: an ALLOCATED entry per investor with
//! demand, then the status change to ALLOCATED, which carries the request_id.

use crate::ledger::allocation::{self, Demand};
use crate::ledger::apply::Batch;
use crate::ledger::outcome::Rejection;
use crate::ledger::types::{Allocation, Entry, EntryKind, OfferingStatus, Request};

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
        // Checked before anything is appended: a refusal leaves the batch as it was.
        let allocations = allocation::allocate(self.head.max_units, self.head.lot(), &demands)
            .map_err(|error| Rejection::StateInconsistent {
                reason: error.to_string(),
            })?;
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
        Ok(self.append_lifecycle(request, OfferingStatus::Allocated))
    }
}

#[cfg(test)]
mod tests {
    use crate::ledger::apply::Batch;
    use crate::ledger::outcome::Rejection;
    use crate::ledger::testing::{head, now, position, pro_rata_head, request};
    use crate::ledger::types::{Command, EntryKind, Offering, OfferingStatus};

    fn allocate() -> Command {
        Command::Allocate {
            expected_version: 0,
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

    #[test]
    fn allocations_follow_the_rule_then_the_status_entry_carries_the_request_id() {
        let demands = vec![
            position("cy", 0, 5, 4),
            position("ann", 0, 5, 2),
            position("ben", 0, 5, 3),
        ];
        let mut batch = Batch::new(closed_with_demand(), demands, true, vec![], now());
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
        let shares: Vec<_> = writes
            .entries
            .iter()
            .map(|e| (e.investor_id.as_str(), e.units_delta, e.request_id.as_str()))
            .collect();
        // README's worked example: the unit left goes to ann, who subscribed first.
        assert_eq!(
            shares,
            [
                ("ann", 4, "alloc/ann"),
                ("ben", 3, "alloc/ben"),
                ("cy", 3, "alloc/cy"),
                ("", 0, "alloc")
            ]
        );
        assert_eq!(writes.positions.len(), 3);
    }

    #[test]
    fn only_a_closed_pro_rata_offering_is_allocated() {
        let mut first_come = head(10, 0);
        first_come.status = OfferingStatus::Closed;
        let mut batch = Batch::new(first_come, vec![], true, vec![], now());
        assert_eq!(
            batch.apply(&request("a", allocate())).unwrap_err(),
            Rejection::NotProRata
        );
        let mut batch = Batch::new(pro_rata_head(10), vec![], true, vec![], now());
        assert_eq!(
            batch.apply(&request("a", allocate())).unwrap_err(),
            Rejection::OfferingNotClosed { status: "OPEN" }
        );
    }
}
