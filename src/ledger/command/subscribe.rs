//! Subscribe and Cancel: an investor takes units within the offering's caps, or gives them
//! back. A first-come offering moves units at once; a pro-rata one records demand, which
//! AllocateOffering turns into units after the close (see `allocate`). Both are refused outside
//! the subscription window, in other than whole lots, or where they would leave a position
//! below the investor minimum.

use crate::ledger::apply::{Batch, Change};
use crate::ledger::limits::DEMAND_TOTAL_MAX;
use crate::ledger::outcome::Rejection;
use crate::ledger::types::{Allocation, Entry, Request};

impl Batch {
    /// Subscribe: `units` more for the investor, as units or as demand.
    pub(in crate::ledger) fn subscribe(
        &mut self,
        request: &Request,
        investor_id: &str,
        units: i64,
    ) -> Result<Entry, Rejection> {
        let change = self.check_subscribe(investor_id, units)?;
        Ok(self.append_investor(request, investor_id, change))
    }

    /// Cancel: `units` given back (0 = all the investor holds or demands).
    pub(in crate::ledger) fn cancel(
        &mut self,
        request: &Request,
        investor_id: &str,
        units: i64,
    ) -> Result<Entry, Rejection> {
        let change = self.check_cancel(investor_id, units)?;
        Ok(self.append_investor(request, investor_id, change))
    }

    /// Subscribe: units now (first come) or demand (pro rata), within every rule.
    fn check_subscribe(&self, investor_id: &str, units: i64) -> Result<Change, Rejection> {
        self.require_open_window()?;
        self.check_lot(units)?;
        let head = &self.head;
        let holding = self.holding(investor_id);
        // A new investor is one without a position (first_sequence is set by the first entry).
        if holding.first_sequence == 0 && head.position_count >= self.investors_max {
            return Err(Rejection::InvestorLimitReached {
                limit: self.investors_max,
            });
        }
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
}

#[cfg(test)]
mod tests {
    use crate::ledger::apply::Batch;
    use crate::ledger::outcome::Rejection;
    use crate::ledger::testing::{
        cancel, head, minutes, now, position, pro_rata_head, request, subscribe,
    };

    #[test]
    fn per_investor_cap_counts_units_already_held() {
        let held = position("alice", 4, 0, 2);
        let mut batch = Batch::new(head(100, 5), vec![held], false, vec![], now());
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
    fn a_new_investor_past_the_limit_is_refused_and_counted_once_admitted() {
        for start in [head(100, 0), pro_rata_head(100)] {
            let mut batch = Batch::new(start, vec![], false, vec![], now());
            batch.investors_max = 2;
            let first = batch.apply(&request("a", subscribe("alice", 1))).unwrap();
            assert_eq!(first.offering.position_count, 1);
            // The same investor again is no new position.
            batch.apply(&request("b", subscribe("alice", 1))).unwrap();
            batch.apply(&request("c", subscribe("bob", 1))).unwrap();
            assert_eq!(
                batch
                    .apply(&request("d", subscribe("carol", 1)))
                    .unwrap_err(),
                Rejection::InvestorLimitReached { limit: 2 }
            );
            batch.apply(&request("e", subscribe("bob", 1))).unwrap();
        }
    }

    #[test]
    fn cancel_of_all_takes_what_is_held_and_drops_the_investor() {
        let held = position("alice", 4, 0, 2);
        let mut start = head(100, 0);
        start.subscribed_units = 4;
        start.investor_count = 1;
        let mut batch = Batch::new(start, vec![held], false, vec![], now());
        let cancelled = batch.apply(&request("c", cancel("alice", 0))).unwrap();
        assert_eq!(
            (
                cancelled.entry.units_delta,
                cancelled.offering.investor_count
            ),
            (-4, 0)
        );
        let nothing_left = batch.apply(&request("d", cancel("alice", 0)));
        assert_eq!(
            nothing_left.unwrap_err(),
            Rejection::InsufficientUnits {
                requested: 0,
                held: 0
            }
        );
    }

    #[test]
    fn pro_rata_demand_may_pass_the_cap_but_not_the_demand_bound() {
        let mut start = pro_rata_head(10);
        start.max_total_demand = 25;
        let mut batch = Batch::new(start, vec![], false, vec![], now());
        let ann = batch.apply(&request("a", subscribe("ann", 20))).unwrap();
        assert_eq!(
            (ann.entry.units_delta, ann.entry.demand_delta),
            (0, 20),
            "demand, not units"
        );
        assert_eq!(ann.offering.subscribed_units, 0);
        assert_eq!(ann.position.unwrap().demanded_units, 20);
        assert_eq!(
            batch.apply(&request("b", subscribe("ben", 6))).unwrap_err(),
            Rejection::DemandCapExceeded {
                would_total: 26,
                max_total_demand: 25
            }
        );
        let withdrawn = batch.apply(&request("c", cancel("ann", 5))).unwrap();
        assert_eq!(
            (
                withdrawn.entry.demand_delta,
                withdrawn.offering.demanded_units
            ),
            (-5, 15)
        );
    }

    #[test]
    fn units_come_in_whole_lots_and_a_position_is_zero_or_at_least_the_minimum() {
        let mut start = head(100, 0);
        start.lot_units = 5;
        start.min_units_per_investor = 10;
        let mut batch = Batch::new(start, vec![], false, vec![], now());
        assert_eq!(
            batch
                .apply(&request("a", subscribe("alice", 12)))
                .unwrap_err(),
            Rejection::NotAMultipleOfLot {
                units: 12,
                lot_units: 5
            }
        );
        assert_eq!(
            batch
                .apply(&request("b", subscribe("alice", 5)))
                .unwrap_err(),
            Rejection::BelowInvestorMinimum {
                would_hold: 5,
                minimum: 10
            }
        );
        assert!(batch.apply(&request("c", subscribe("alice", 15))).is_ok());
        assert!(matches!(
            batch.apply(&request("d", cancel("alice", 10))),
            Err(Rejection::BelowInvestorMinimum { would_hold: 5, .. })
        ));
        assert!(
            batch.apply(&request("e", cancel("alice", 0))).is_ok(),
            "all of it leaves 0, which is allowed"
        );
    }

    #[test]
    fn before_open_time_subscribe_and_cancel_are_refused() {
        let mut start = head(100, 0);
        start.open_time = Some(now() + minutes(5));
        let held = position("alice", 4, 0, 2);
        let mut batch = Batch::new(start, vec![held], false, vec![], now());
        let not_yet = Rejection::OfferingNotOpen {
            status: "OPEN",
            bound: Some("open_time"),
        };
        assert_eq!(
            batch
                .apply(&request("a", subscribe("alice", 1)))
                .unwrap_err(),
            not_yet
        );
        assert_eq!(
            batch.apply(&request("b", cancel("alice", 1))).unwrap_err(),
            not_yet
        );
    }
}
