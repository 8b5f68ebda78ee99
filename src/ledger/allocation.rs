//! Exact pro-rata allocation of an oversubscribed offering: who gets how many units when the
//! demand is larger than the cap. Pure integer arithmetic, no floats, so every replica and every
//! re-run computes the same allocation from the same demands, to the unit.
//!
//! # The rule
//!
//! Let T be the total demand, M = `max_units`, lot = `lot_units`, and d_i investor i's demand.
//!
//! - If T <= M, everyone is allocated their demand.
//! - Otherwise investor i's exact quota is q_i = d_i * M / T (a rational). Each investor gets
//!   base_i = floor(q_i) rounded down to whole lots, i.e. lot * floor(d_i * M / (T * lot)).
//! - The lots still left, L = floor((C - sum base_i) / lot), where C = lot * floor(M / lot) is
//!   the cap rounded down to whole lots, are handed out one lot each to the L investors with the
//!   largest remainder q_i - base_i, ties broken by the earlier first subscription (lower
//!   `first_sequence`). Remainders are compared exactly, as integers over the common
//!   denominator T: r_i = d_i * M - base_i * T.
//! - So allocations are whole lots, and when the lot does not divide the cap the last partial
//!   lot is not sold: the allocations sum to min(T, C), which is min(T, M) whenever the lot
//!   divides the cap (always for lot 1). No one is allocated more than their demand, and in an
//!   oversubscribed offering no one is a whole lot or more away from their exact quota.
//!
//! # Worked example (checked by `worked_example_of_the_module_doc`)
//!
//! M = 52, lot = 5, so C = 50. Demands: A 40 (first_sequence 1), B 20 (2), C 20 (3); T = 80.
//!
//! | investor | q_i = d_i * 52 / 80 | base_i | r_i = d_i * 52 - base_i * 80 | allocation |
//! |----------|---------------------|--------|------------------------------|------------|
//! | A        | 26                  | 25     | 2080 - 2000 =  80 (1 unit)   | 25         |
//! | B        | 13                  | 10     | 1040 -  800 = 240 (3 units)  | 15         |
//! | C        | 13                  | 10     | 1040 -  800 = 240 (3 units)  | 10         |
//!
//! sum base_i = 45, so L = (50 - 45) / 5 = 1 lot is left. B and C have the largest remainder
//! and tie; B subscribed first and gets the lot. Allocations sum to 50 = C; the 2 units of the
//! cap that do not make a whole lot are not sold.

use super::limits::{DEMAND_TOTAL_MAX, UNITS_MAX};

/// One investor's demand, in the order of their first subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    pub investor_id: String,
    /// Units asked for: >= 1, <= [`DEMAND_TOTAL_MAX`], a multiple of the lot. (Without a
    /// per-investor cap one investor's demand is bounded by the total's bound only, not by
    /// [`UNITS_MAX`]: a request is, but an investor may make many.)
    pub demand: i64,
    /// The sequence of the investor's first subscription: >= 1 and distinct across investors.
    /// Breaks ties between equal remainders in favour of who came first.
    pub first_sequence: i64,
}

/// Input the rule is not defined for: the ledger never builds it, so a stored state or an
/// export that leads here is corrupt (the verifier reports it; AllocateOffering refuses).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("allocation input out of range: {0}")]
pub struct InputError(String);

/// Allocations, index for index with `demands`, by the rule in the module doc.
///
/// Inputs, checked on every call (they come from stored rows, which the verifier does not
/// trust), an [`InputError`] otherwise:
/// - 1 <= `max_units` <= [`UNITS_MAX`];
/// - `lot_units` >= 1 (a caller whose "0 or 1" means "any amount" passes 1);
/// - every demand is >= 1 and a multiple of `lot_units`, and their total is
///   <= [`DEMAND_TOTAL_MAX`] (so every product below stays inside i128);
/// - `first_sequence` values are >= 1 and distinct.
///
/// `demands` may come in any order: the allocation of each investor depends only on the data,
/// never on where the investor sits in the slice. O(n log n) for n investors.
pub fn allocate(
    max_units: i64,
    lot_units: i64,
    demands: &[Demand],
) -> Result<Vec<i64>, InputError> {
    check_input(max_units, lot_units, demands)?;
    Ok(allocate_checked(max_units, lot_units, demands))
}

fn check_input(max_units: i64, lot_units: i64, demands: &[Demand]) -> Result<(), InputError> {
    if !(1..=UNITS_MAX).contains(&max_units) {
        return Err(InputError(format!("max_units {max_units}")));
    }
    if lot_units < 1 {
        return Err(InputError(format!("lot_units {lot_units}")));
    }
    let mut total: i128 = 0;
    for d in demands {
        if !(1..=DEMAND_TOTAL_MAX).contains(&d.demand) || d.demand % lot_units != 0 {
            return Err(InputError(format!(
                "investor {:?} demands {} (lot {lot_units})",
                d.investor_id, d.demand
            )));
        }
        if d.first_sequence < 1 {
            return Err(InputError(format!(
                "investor {:?} has first_sequence {}",
                d.investor_id, d.first_sequence
            )));
        }
        total += i128::from(d.demand);
    }
    if total > i128::from(DEMAND_TOTAL_MAX) {
        return Err(InputError(format!("total demand {total}")));
    }
    if !sequences_distinct(demands) {
        return Err(InputError("first_sequence values repeat".to_owned()));
    }
    Ok(())
}

/// The rule itself, on input `check_input` accepted.
fn allocate_checked(max_units: i64, lot_units: i64, demands: &[Demand]) -> Vec<i64> {
    let total: i128 = demands.iter().map(|d| i128::from(d.demand)).sum();
    let cap = i128::from(max_units);
    if total <= cap {
        return demands.iter().map(|d| d.demand).collect();
    }

    let lot = i128::from(lot_units);
    let sellable = lot * (cap / lot);
    let mut allocations = Vec::with_capacity(demands.len());
    // r_i: the remainder q_i - base_i scaled by T, so remainders compare exactly as integers.
    let mut remainders = Vec::with_capacity(demands.len());
    for d in demands {
        let quota_scaled = i128::from(d.demand) * cap;
        let base = lot * (quota_scaled / (total * lot));
        remainders.push(quota_scaled - base * total);
        // base <= q_i < d_i, so it fits where the demand did.
        allocations.push(i64::try_from(base).expect("base is below the demand"));
    }

    let base_total: i128 = allocations.iter().map(|&a| i128::from(a)).sum();
    // base_i > q_i - lot for each i, so fewer than n lots are left: each goes to a different
    // investor, and only to one whose remainder is positive.
    let lots_left = (sellable - base_total) / lot;
    debug_assert!((0..demands.len() as i128).contains(&lots_left));
    debug_assert_eq!(
        (sellable - base_total) % lot,
        0,
        "C and every base are whole lots"
    );
    let lots_left = usize::try_from(lots_left).expect("lots left is in 0..n");

    if lots_left > 0 {
        // Largest remainder first, then earliest first subscription. Sequences are distinct,
        // so this order is total and the unstable sort cannot depend on the input order.
        let mut order: Vec<usize> = (0..demands.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            remainders[b]
                .cmp(&remainders[a])
                .then(demands[a].first_sequence.cmp(&demands[b].first_sequence))
        });
        for &i in &order[..lots_left] {
            debug_assert!(remainders[i] > 0, "an extra lot only where a quota was cut");
            allocations[i] += lot_units;
        }
    }

    debug_assert_eq!(
        allocations.iter().map(|&a| i128::from(a)).sum::<i128>(),
        sellable.min(total)
    );
    debug_assert!(allocations.iter().zip(demands).all(|(&a, d)| a <= d.demand));
    allocations
}

/// A repeated sequence would make the tie-break, and so the result, depend on the input order.
fn sequences_distinct(demands: &[Demand]) -> bool {
    let mut sequences: Vec<i64> = demands.iter().map(|d| d.first_sequence).collect();
    sequences.sort_unstable();
    sequences.windows(2).all(|pair| pair[0] != pair[1])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Random offerings the property test checks. Enough to cover every branch many times over
    /// (lots that do and do not divide the cap, under- and oversubscribed, ties, extremes)
    /// while the test stays around a second in a debug build.
    const PROPERTY_CASES: u32 = 3000;
    /// Investors in the largest random offering.
    const INVESTORS_MAX: i64 = 2000;
    /// A fixed seed: a failure is reproduced by re-running, and the case index is in the message.
    const SEED: u64 = 0x5eed_a110_c47e_d001;

    /// Demands from (units, first_sequence) pairs, with ids naming their position.
    fn demands(pairs: &[(i64, i64)]) -> Vec<Demand> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, &(demand, first_sequence))| Demand {
                investor_id: format!("investor-{i}"),
                demand,
                first_sequence,
            })
            .collect()
    }

    #[test]
    fn input_the_rule_is_not_defined_for_is_an_error_not_a_panic() {
        let one = demands(&[(5, 1)]);
        assert!(allocate(0, 1, &one).is_err(), "max_units 0");
        assert!(
            allocate(i64::MAX, 1, &one).is_err(),
            "max_units over UNITS_MAX"
        );
        assert!(allocate(10, 0, &one).is_err(), "lot 0");
        assert!(allocate(10, -3, &one).is_err(), "negative lot");
        assert!(allocate(10, 2, &one).is_err(), "5 is not a multiple of 2");
        assert!(
            allocate(10, 1, &demands(&[(-1, 1)])).is_err(),
            "negative demand"
        );
        assert!(allocate(10, 1, &demands(&[(5, 0)])).is_err(), "sequence 0");
        assert!(
            allocate(10, 1, &demands(&[(5, 1), (5, 1)])).is_err(),
            "sequences repeat"
        );
        let whales = demands(&[(DEMAND_TOTAL_MAX, 1), (DEMAND_TOTAL_MAX, 2)]);
        assert!(allocate(10, 1, &whales).is_err(), "total over the bound");
        let whale = demands(&[(DEMAND_TOTAL_MAX, 1)]);
        assert_eq!(
            allocate(UNITS_MAX, 1, &whale).unwrap(),
            [UNITS_MAX],
            "one investor may demand more than UNITS_MAX without a per-investor cap"
        );
    }

    #[test]
    fn worked_example_of_the_module_doc() {
        let example = demands(&[(40, 1), (20, 2), (20, 3)]);
        let allocations = allocate(52, 5, &example).unwrap();
        assert_eq!(allocations, vec![25, 15, 10]);
        assert_eq!(
            allocations.iter().sum::<i64>(),
            50,
            "2 units make no whole lot"
        );
        check_properties(52, 5, &example, &allocations, "worked example");
    }

    #[test]
    fn hand_checked_cases() {
        // (name, max_units, lot_units, (demand, first_sequence) per investor, expected)
        type Case = (
            &'static str,
            i64,
            i64,
            &'static [(i64, i64)],
            &'static [i64],
        );
        let cases: &[Case] = &[
            // T = 50 <= 100: everyone gets their demand, 50 units stay unsold.
            ("below the cap", 100, 1, &[(30, 1), (20, 2)], &[30, 20]),
            // T = 50 = M: still not oversubscribed.
            ("exactly at the cap", 50, 1, &[(30, 1), (20, 2)], &[30, 20]),
            // T = 9 <= 10 with lot 3: not oversubscribed, so the lot does not cut anything.
            (
                "below a cap the lot does not divide",
                10,
                3,
                &[(9, 1)],
                &[9],
            ),
            // T = 60, M = 30: q = 40*30/60 = 20 and 20*30/60 = 10, exact, no lot left.
            ("a simple 2:1 split", 30, 1, &[(40, 1), (20, 2)], &[20, 10]),
            // T = 15, M = 10: q = 10/3 each, base 3 each, 1 lot left, remainders equal (1/3):
            // the investor with first_sequence 1, second in the input, gets it.
            (
                "a tie goes to the earlier first subscription",
                10,
                1,
                &[(5, 3), (5, 1), (5, 2)],
                &[3, 4, 3],
            ),
            // T = 18, M = 10, C = 9: q = 5 each, base = 3 * floor(5/3) = 3 each, sum 6,
            // L = (9 - 6) / 3 = 1, remainders tie at 2: sequence 1 gets it. Sum 9: the tenth
            // unit makes no whole lot and is not sold.
            (
                "lot 3 does not divide cap 10",
                10,
                3,
                &[(9, 1), (9, 2)],
                &[6, 3],
            ),
            // One investor, T = 9 > 7, C = 6: q = 7, base 6, L = 0.
            ("a single investor over a cut cap", 7, 3, &[(9, 1)], &[6]),
            // Lot 10 > M = 5: C = 0, nothing can be sold.
            (
                "a lot larger than the cap",
                5,
                10,
                &[(10, 1), (20, 2)],
                &[0, 0],
            ),
            // T = 1,000,002, M = 100: the whale's q = 99.9998, base 99; the others' q = 0.0001,
            // base 0. One lot left, the whale's remainder (0.9998) is largest, so it takes the
            // whole cap and the small investors, though earlier, get nothing (within one lot
            // of their quota).
            (
                "one investor far larger than the rest",
                100,
                1,
                &[(1, 1), (1_000_000, 2), (1, 3)],
                &[0, 100, 0],
            ),
            // T = 16, M = 10: q = 2.5, 2.5, 1.875, 1.875, 1.25; base 2, 2, 1, 1, 1 (sum 7);
            // L = 3. Remainders .5, .5, .875, .875, .25: the two .875s get a lot, then the
            // tie at .5 goes to sequence 1. The size of the demand does not decide, the
            // remainder does.
            (
                "the largest-remainder step hands out several lots",
                10,
                1,
                &[(4, 1), (4, 2), (3, 3), (3, 4), (2, 5)],
                &[3, 2, 2, 2, 1],
            ),
        ];
        for &(name, max_units, lot_units, pairs, expected) in cases {
            let input = demands(pairs);
            let allocations = allocate(max_units, lot_units, &input).unwrap();
            assert_eq!(allocations, expected, "{name}");
            check_properties(max_units, lot_units, &input, &allocations, name);
        }
    }

    #[test]
    fn a_thousand_investors_at_the_largest_demand() {
        // T = 10^18 = DEMAND_TOTAL_MAX, M = 10^15: q = 10^12 each, exact, no lot left.
        // Sequences run backwards so input order and sequence order differ.
        let pairs: Vec<(i64, i64)> = (0..1000).map(|i| (UNITS_MAX, 1000 - i)).collect();
        let input = demands(&pairs);
        let allocations = allocate(UNITS_MAX, 1, &input).unwrap();
        assert!(allocations.iter().all(|&a| a == 1_000_000_000_000));
        check_properties(UNITS_MAX, 1, &input, &allocations, "limits");
        // One unit less: every quota is 10^12 - 0.001, base 10^12 - 1, and 999 lots go
        // back by sequence, so only the latest subscriber (sequence 1000, first in the input)
        // is left one short.
        let allocations = allocate(UNITS_MAX - 1, 1, &input).unwrap();
        assert_eq!(allocations[0], 999_999_999_999);
        assert!(allocations[1..].iter().all(|&a| a == 1_000_000_000_000));
        check_properties(UNITS_MAX - 1, 1, &input, &allocations, "limits - 1");
    }

    #[test]
    fn random_offerings_keep_every_property() {
        let mut rng = Rng(SEED);
        for case in 0..PROPERTY_CASES {
            let (max_units, lot_units, input) = random_offering(&mut rng);
            let context = format!("case {case}: max_units {max_units}, lot {lot_units}");
            let allocations = allocate(max_units, lot_units, &input).unwrap();
            check_properties(max_units, lot_units, &input, &allocations, &context);

            assert_eq!(
                allocate(max_units, lot_units, &input).unwrap(),
                allocations,
                "{context}"
            );
            let mut shuffled = input.clone();
            rng.shuffle(&mut shuffled);
            let reshuffled = allocate(max_units, lot_units, &shuffled).unwrap();
            let by_investor: HashMap<&str, i64> = shuffled
                .iter()
                .map(|d| d.investor_id.as_str())
                .zip(reshuffled)
                .collect();
            for (d, &a) in input.iter().zip(&allocations) {
                assert_eq!(
                    by_investor[d.investor_id.as_str()],
                    a,
                    "{context}: shuffled"
                );
            }
        }
    }

    /// Every property the rule promises, recomputed from the definition with exact integers.
    fn check_properties(
        max_units: i64,
        lot_units: i64,
        input: &[Demand],
        allocations: &[i64],
        context: &str,
    ) {
        assert_eq!(allocations.len(), input.len(), "{context}");
        let cap = i128::from(max_units);
        let lot = i128::from(lot_units);
        let total: i128 = input.iter().map(|d| i128::from(d.demand)).sum();
        let sellable = lot * (cap / lot);
        let sum: i128 = allocations.iter().map(|&a| i128::from(a)).sum();
        assert_eq!(sum, total.min(sellable), "{context}: sum");
        for (d, &a) in input.iter().zip(allocations) {
            assert!(
                (0..=d.demand).contains(&a),
                "{context}: {a} of {}",
                d.demand
            );
            assert_eq!(a % lot_units, 0, "{context}: {a} is not whole lots");
        }
        if total <= cap {
            assert_eq!(sum, total, "{context}: undersubscribed");
            let all_served = input.iter().zip(allocations).all(|(d, &a)| a == d.demand);
            assert!(all_served, "{context}: undersubscribed");
            return;
        }

        // Oversubscribed: within one lot of the quota, the extras exactly the L largest
        // remainders under (remainder desc, first_sequence asc).
        let mut extras = Vec::new();
        let mut others = Vec::new();
        let mut base_total = 0;
        for (d, &a) in input.iter().zip(allocations) {
            let (a, quota_scaled) = (i128::from(a), i128::from(d.demand) * cap);
            assert!(
                (a * total - quota_scaled).abs() < lot * total,
                "{context}: {a} far from quota"
            );
            let base = lot * (quota_scaled / (total * lot));
            base_total += base;
            let rank = (
                std::cmp::Reverse(quota_scaled - base * total),
                d.first_sequence,
            );
            match a - base {
                0 => others.push(rank),
                extra if extra == lot => extras.push(rank),
                extra => panic!("{context}: {extra} over the base is not 0 or one lot"),
            }
        }
        let lots_left = (sellable - base_total) / lot;
        assert!(
            extras.len() as i128 <= lots_left,
            "{context}: too many extra lots"
        );
        assert_eq!(extras.len() as i128, lots_left, "{context}: extra lots");
        if let (Some(last_extra), Some(first_other)) = (extras.iter().max(), others.iter().min()) {
            assert!(
                last_extra < first_other,
                "{context}: an extra lot skipped a larger remainder"
            );
        }
    }

    /// A seeded splitmix64: reproducible cases without another dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in lo..=hi (the modulo bias is irrelevant here).
        fn range(&mut self, lo: i64, hi: i64) -> i64 {
            debug_assert!(lo <= hi);
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }

        /// In lo..=hi (lo >= 1), uniform over powers of two, so small and huge values are
        /// both common.
        fn log_scale(&mut self, lo: i64, hi: i64) -> i64 {
            let bits = |v: i64| 63 - v.leading_zeros() as i64;
            let b = self.range(bits(lo), bits(hi));
            self.range(lo.max(1 << b), hi.min((1 << (b + 1)) - 1))
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.range(0, items.len() as i64 - 1) as usize]
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.range(0, i as i64) as usize);
            }
        }
    }

    /// An offering and its demands: lots that do and do not divide the cap, caps far below,
    /// near and above the total demand, tiny, huge and tied demands, sequences with gaps in a
    /// shuffled order.
    fn random_offering(rng: &mut Rng) -> (i64, i64, Vec<Demand>) {
        let lot_units = match rng.range(0, 9) {
            0..=5 => rng.pick(&[1, 2, 5, 10, 100, 1000]),
            6..=8 => rng.pick(&[3, 7, 999]),
            _ => rng.log_scale(1, 1_000_000_000),
        };
        let lots_max = UNITS_MAX / lot_units;
        let tied: Vec<i64> = (0..4).map(|_| rng.log_scale(1, lots_max)).collect();
        let investors = match rng.range(0, 3) {
            0 => rng.range(1, 3),
            1 => rng.range(1, 20),
            2 => rng.range(1, 200),
            _ => rng.range(1, INVESTORS_MAX),
        };
        let mut input = Vec::new();
        let mut total: i64 = 0;
        let mut sequence = 0;
        for i in 0..investors {
            let lots = match rng.range(0, 4) {
                0 => rng.range(1, 3.min(lots_max)),
                1 => rng.pick(&tied),
                2 => lots_max - rng.range(0, 2.min(lots_max - 1)),
                _ => rng.log_scale(1, lots_max),
            };
            let demand = lots * lot_units;
            if total + demand > DEMAND_TOTAL_MAX {
                break;
            }
            total += demand;
            sequence += rng.range(1, 5);
            input.push(Demand {
                investor_id: format!("investor-{i}"),
                demand,
                first_sequence: sequence,
            });
        }
        rng.shuffle(&mut input);

        let lot = i128::from(lot_units);
        let near_total = match rng.range(0, 3) {
            0 | 1 => i128::from(rng.log_scale(1, UNITS_MAX)),
            2 => {
                i128::from(total)
                    + i128::from(rng.range(-3, 3)) * lot
                    + i128::from(rng.range(-1, 1))
            }
            _ => i128::from(total) * i128::from(rng.range(1, 99)) / 100,
        };
        let mut max_units = near_total.clamp(1, i128::from(UNITS_MAX)) as i64;
        if rng.range(0, 1) == 0 && max_units >= lot_units {
            max_units -= max_units % lot_units;
        }
        (max_units, lot_units, input)
    }
}
