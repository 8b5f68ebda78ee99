//! CloseOffering and FinalizeOffering: the lifecycle moves forward, never back. Close takes an
//! OPEN offering to CLOSED (the clock does it too, once close_time has passed: see
//! `apply::Batch::apply`); Finalize takes it to FINALIZED exactly once, from CLOSED (first come)
//! or ALLOCATED (pro rata). Both may carry the version the caller read, so nobody acts on a
//! stale read.

use crate::ledger::apply::Batch;
use crate::ledger::outcome::Rejection;
use crate::ledger::types::{Allocation, Entry, OfferingStatus, Request};

impl Batch {
    /// OPEN -> CLOSED.
    pub(in crate::ledger) fn close(
        &mut self,
        request: &Request,
        expected_version: i64,
    ) -> Result<Entry, Rejection> {
        self.require_open()?;
        self.check_version(expected_version)?;
        Ok(self.append_lifecycle(request, OfferingStatus::Closed))
    }

    /// CLOSED (or ALLOCATED, pro rata) -> FINALIZED.
    pub(in crate::ledger) fn finalize(
        &mut self,
        request: &Request,
        expected_version: i64,
    ) -> Result<Entry, Rejection> {
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
        self.check_version(expected_version)?;
        Ok(self.append_lifecycle(request, OfferingStatus::Finalized))
    }
}

#[cfg(test)]
mod tests {
    use crate::ledger::apply::Batch;
    use crate::ledger::outcome::Rejection;
    use crate::ledger::testing::{head, minutes, now, pro_rata_head, request, subscribe};
    use crate::ledger::types::{Command, OfferingStatus};

    fn close(expected_version: i64) -> Command {
        Command::Close { expected_version }
    }

    fn finalize(expected_version: i64) -> Command {
        Command::Finalize { expected_version }
    }

    #[test]
    fn lifecycle_moves_forward_only_and_checks_versions() {
        let mut batch = Batch::new(head(10, 0), vec![], false, vec![], now());
        assert!(matches!(
            batch.apply(&request("f", finalize(0))),
            Err(Rejection::OfferingNotClosed { .. })
        ));
        assert_eq!(
            batch.apply(&request("c", close(7))).unwrap_err(),
            Rejection::VersionMismatch {
                expected: 7,
                actual: 1
            }
        );
        assert!(batch.apply(&request("c", close(1))).is_ok());
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

    #[test]
    fn a_pro_rata_offering_is_allocated_before_it_is_finalized() {
        let mut start = pro_rata_head(10);
        start.status = OfferingStatus::Closed;
        let mut batch = Batch::new(start, vec![], false, vec![], now());
        assert_eq!(
            batch.apply(&request("f", finalize(0))).unwrap_err(),
            Rejection::OfferingNotAllocated { status: "CLOSED" }
        );
    }

    #[test]
    fn a_finalize_may_pass_the_version_it_read_before_the_clock_closed_the_offering() {
        let mut start = head(10, 0);
        start.close_time = Some(now() - minutes(1));
        let mut batch = Batch::new(start, vec![], false, vec![], now());
        // GetOffering showed the offering CLOSED at version 1; the clock's entry makes it 2.
        let finalized = batch.apply(&request("f", finalize(1))).unwrap();
        assert_eq!(finalized.entry.sequence, 3);
        assert_eq!(finalized.offering.status, OfferingStatus::Finalized);
    }

    #[test]
    fn close_records_itself_past_close_time_instead_of_the_clock() {
        let mut start = head(10, 0);
        start.close_time = Some(now() - minutes(1));
        let mut batch = Batch::new(start, vec![], false, vec![], now());
        let closed = batch.apply(&request("c", close(1))).unwrap();
        assert_eq!(
            (closed.entry.sequence, closed.entry.actor.as_str()),
            (2, "checkout"),
            "one CLOSED entry, the caller's"
        );
    }
}
