//! What a run reports: latency histograms per worker (`Tally`), merged into one [`Report`],
//! printed as text or JSON.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{BenchArgs, LATENCY_US_MAX, Plan, Scenario, watch};

#[derive(Serialize)]
pub(crate) struct Report {
    scenario: Scenario,
    targets: Vec<String>,
    concurrency: usize,
    offerings: usize,
    elapsed_s: f64,
    calls: u64,
    calls_per_s: f64,
    ok_per_s: f64,
    latency_ms: Latency,
    /// Latency per RPC (mixed has four).
    latency_ms_by_method: BTreeMap<String, Latency>,
    codes: BTreeMap<String, u64>,
    /// sellout only: seconds from the first call until the offering was sold out.
    sold_out_after_s: Option<f64>,
    /// sellout only: units sold when the run ended, and the cap.
    pub(crate) sold_units: Option<(i64, i64)>,
    verified_offerings: usize,
    verified_entries: i64,
    /// Offerings whose VerifyOffering failed, with the problems: must be empty.
    pub(crate) verify_failures: Vec<String>,
    /// watch only: what the streams received, and what the server read for them.
    pub(crate) watch: Option<watch::WatchReport>,
}

#[derive(Serialize)]
struct Latency {
    calls: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// What one worker saw.
pub(crate) struct Tally {
    latency_us: Histogram<u64>,
    latency_us_by_method: BTreeMap<&'static str, Histogram<u64>>,
    codes: BTreeMap<String, u64>,
    /// sellout: when this worker first saw the offering sold out.
    pub(crate) sold_out_at: Option<Instant>,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            latency_us_by_method: BTreeMap::new(),
            codes: BTreeMap::new(),
            sold_out_at: None,
        }
    }

    pub(crate) fn record(&mut self, method: &'static str, started: Instant, code: tonic::Code) {
        let latency_us = (started.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
        let _ = self.latency_us.record(latency_us);
        let by_method = self
            .latency_us_by_method
            .entry(method)
            .or_insert_with(new_histogram);
        let _ = by_method.record(latency_us);
        *self.codes.entry(format!("{code:?}")).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        let _ = self.latency_us.add(&other.latency_us);
        self.merge_by_method(other);
    }

    /// Adds `other`'s calls to the latency per RPC and the codes, not to the overall latency.
    pub(crate) fn merge_by_method(&mut self, other: Tally) {
        for (method, histogram) in other.latency_us_by_method {
            match self.latency_us_by_method.get_mut(method) {
                Some(mine) => {
                    let _ = mine.add(histogram);
                }
                None => {
                    self.latency_us_by_method.insert(method, histogram);
                }
            }
        }
        for (code, count) in other.codes {
            *self.codes.entry(code).or_default() += count;
        }
        self.sold_out_at = match (self.sold_out_at, other.sold_out_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

pub(crate) fn report(
    args: &BenchArgs,
    plan: &Plan,
    tally: &Tally,
    elapsed: Duration,
    started: Instant,
    verified_entries: i64,
) -> Report {
    let calls = tally.latency_us.len();
    let seconds = elapsed.as_secs_f64();
    let ok = tally.codes.get("Ok").copied().unwrap_or(0);
    let latency = |histogram: &Histogram<u64>| {
        let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        Latency {
            calls: histogram.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: histogram.max() as f64 / 1000.0,
        }
    };
    Report {
        scenario: args.scenario,
        targets: args.targets.clone(),
        concurrency: args.concurrency,
        offerings: plan.offering_ids.len(),
        elapsed_s: seconds,
        calls,
        calls_per_s: calls as f64 / seconds,
        ok_per_s: ok as f64 / seconds,
        latency_ms: latency(&tally.latency_us),
        latency_ms_by_method: tally
            .latency_us_by_method
            .iter()
            .map(|(method, histogram)| (method.to_string(), latency(histogram)))
            .collect(),
        codes: tally.codes.clone(),
        sold_out_after_s: tally.sold_out_at.map(|at| (at - started).as_secs_f64()),
        sold_units: None,
        verified_offerings: plan.offering_ids.len(),
        verified_entries,
        verify_failures: Vec::new(),
        watch: None,
    }
}

pub(crate) fn print_text(report: &Report) {
    println!(
        "scenario={:?} targets={} concurrency={} offerings={}",
        report.scenario,
        report.targets.join(","),
        report.concurrency,
        report.offerings
    );
    println!(
        "calls={} in {:.1} s: {:.0} calls/s, {:.0} ok/s",
        report.calls, report.elapsed_s, report.calls_per_s, report.ok_per_s
    );
    let l = &report.latency_ms;
    println!(
        "latency ms: p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        l.p50, l.p90, l.p99, l.max
    );
    if report.latency_ms_by_method.len() > 1 {
        for (method, l) in &report.latency_ms_by_method {
            println!(
                "  {method}: {} calls, p50={:.2} p99={:.2} ms",
                l.calls, l.p50, l.p99
            );
        }
    }
    let codes: Vec<String> = report
        .codes
        .iter()
        .map(|(code, n)| format!("{code}={n}"))
        .collect();
    println!("codes: {}", codes.join(" "));
    if let Some((sold, cap)) = report.sold_units {
        match report.sold_out_after_s {
            Some(after) => {
                println!("sellout: {sold} of {cap} units sold, sold out after {after:.2} s")
            }
            None => println!("sellout: {sold} of {cap} units sold, not sold out"),
        }
    }
    let verdict = if report.verify_failures.is_empty() {
        "all ok"
    } else {
        "FAILED"
    };
    println!(
        "VerifyOffering: {} offerings, {} entries checked, {verdict}",
        report.verified_offerings, report.verified_entries
    );
    if let Some(watch) = &report.watch {
        watch.print();
    }
}
