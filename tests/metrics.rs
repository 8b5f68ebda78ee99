//! /metrics after known calls, parsed by a real Prometheus text parser: the counters moved by
//! exactly the calls made, per method and code, and the histograms have buckets. One test
//! function for both backends, because the recorder is one per process.

mod common;

use common::metrics::{scrape, start_server_with_metrics};
use common::{Backend, TestDb, offering, subscribe};
use prometheus_parse::{Sample, Scrape, Value};
use subledger::proto;

fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn counter(scrape: &Scrape, method: &str, code: &str) -> f64 {
    match find(
        scrape,
        "subledger_rpc_requests_total",
        &[("method", method), ("code", code)],
    ) {
        Some(Sample {
            value: Value::Counter(n),
            ..
        }) => *n,
        Some(other) => panic!("not a counter: {other:?}"),
        None => 0.0,
    }
}

/// A histogram's count of observations; None when it has recorded nothing yet.
fn histogram_count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match find(scrape, metric, labels)? {
        Sample {
            value: Value::Histogram(buckets),
            ..
        } => {
            assert!(buckets.len() > 3, "{metric} has buckets");
            Some(buckets.last().unwrap().count)
        }
        other => panic!("{metric} {labels:?} is not a histogram: {other:?}"),
    }
}

async fn known_calls_move_the_counters_exactly(backend: Backend) {
    let db = TestDb::new(backend)
        .await
        .unwrap_or_else(|| panic!("{backend:?} database"));
    let (server, metrics_address) = start_server_with_metrics(&db).await;
    let before = scrape(metrics_address).await;
    // Gauges are there before anything happened, so that dashboards read 0, not "no data".
    for gauge in [
        "subledger_watch_streams",
        "subledger_queued_requests",
        "subledger_transactions_in_flight",
    ] {
        assert!(
            find(&before, gauge, &[]).is_some(),
            "{gauge} missing at start-up"
        );
    }
    let mut client = server.client().await;
    let deal = format!("deal-{backend:?}");
    client
        .create_offering(offering(&deal, 10, 0))
        .await
        .unwrap();
    for n in 0..5 {
        client
            .subscribe(subscribe(&deal, "alice", 2, &format!("s{n}")))
            .await
            .unwrap();
    }
    for n in 5..7 {
        let refused = client
            .subscribe(subscribe(&deal, "bob", 1, &format!("s{n}")))
            .await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);
    }
    let missing = client
        .get_offering(proto::GetOfferingRequest {
            offering_id: "nope".into(),
        })
        .await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);
    let _watch = client
        .watch_history(proto::WatchHistoryRequest {
            offering_id: deal.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap();
    let after = scrape(metrics_address).await;

    let delta = |method, code| counter(&after, method, code) - counter(&before, method, code);
    assert_eq!(delta("CreateOffering", "OK"), 1.0);
    assert_eq!(delta("Subscribe", "OK"), 5.0);
    assert_eq!(delta("Subscribe", "FAILED_PRECONDITION"), 2.0);
    assert_eq!(delta("GetOffering", "NOT_FOUND"), 1.0);
    assert_eq!(delta("WatchHistory", "OK"), 1.0);
    assert_eq!(delta("GetOffering", "OK"), 0.0);

    let durations = |scrape: &Scrape| {
        histogram_count(
            scrape,
            "subledger_rpc_duration_seconds",
            &[("method", "Subscribe")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(durations(&after) - durations(&before), 7.0);
    // Seven Subscribes went through the group committer, in one to seven transactions.
    let commits =
        |scrape: &Scrape| histogram_count(scrape, "subledger_commit_requests", &[]).unwrap_or(0.0);
    assert!((1.0..=7.0).contains(&(commits(&after) - commits(&before))));
    for metric in [
        "subledger_commit_offerings",
        "subledger_commit_duration_seconds",
    ] {
        assert!(histogram_count(&after, metric, &[]).is_some(), "{metric}");
    }

    let gauge = |metric: &str, labels: &[(&str, &str)]| match find(&after, metric, labels) {
        Some(Sample {
            value: Value::Gauge(v),
            ..
        }) => *v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    };
    assert_eq!(gauge("subledger_queued_requests", &[]), 0.0);
    assert_eq!(gauge("subledger_transactions_in_flight", &[]), 0.0);
    assert!(
        gauge("subledger_watch_streams", &[]) >= 1.0,
        "the watch above is open"
    );
    assert!(gauge("subledger_db_connections", &[("state", "max")]) >= 1.0);
    gauge("subledger_db_connections", &[("state", "idle")]);
    gauge("subledger_db_connections", &[("state", "in_use")]);
    assert_eq!(
        gauge(
            "subledger_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Process metrics, from metrics-process on Linux.
    for metric in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(find(&after, metric, &[]).is_some(), "{metric} missing");
    }
    server.stop().await;
    // The metrics listener stops with the server.
    common::eventually(
        "/metrics stops with the server",
        std::time::Duration::from_secs(5),
        || async {
            match tokio::net::TcpStream::connect(metrics_address).await {
                Ok(_) => Err("still served"),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
}

/// Paths no service has, health's included (it skips authentication), cannot grow /metrics:
/// they are all counted under method="unknown".
async fn invented_paths_add_no_series(backend: Backend) {
    let db = TestDb::new(backend)
        .await
        .unwrap_or_else(|| panic!("{backend:?} database"));
    let (server, metrics_address) = start_server_with_metrics(&db).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Warm up: whatever series the invented paths make appear once.
    for path in ["/x.Y/warm", "/grpc.health.v1.Health/warm"] {
        let _ = common::raw::call_on(channel.clone(), path, vec![], None).await;
    }
    let before = scrape(metrics_address).await;
    for n in 0..10_000 {
        let path = match n % 3 {
            0 => format!("/x.Y/{n:x}{}", "z".repeat(n % 200)),
            1 => format!("/grpc.health.v1.Health/{n:x}"),
            _ => format!("/subledger.v1.SubscriptionLedger/Nope{n}"),
        };
        let _ = common::raw::call_on(channel.clone(), &path, vec![], None).await;
    }
    let after = scrape(metrics_address).await;
    let series = |scrape: &Scrape| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric.starts_with("subledger_rpc_"))
            .count()
    };
    assert!(
        series(&after) <= series(&before) + 2,
        "10,000 invented paths grew the RPC series from {} to {}",
        series(&before),
        series(&after)
    );
    let unknown = after
        .samples
        .iter()
        .filter(|s| s.labels.get("method") == Some("unknown"))
        .count();
    assert!(unknown > 0, "invented paths are counted as method=unknown");
    for sample in &after.samples {
        if let Some(method) = sample.labels.get("method") {
            assert!(
                method.len() <= 64,
                "a method label of {} bytes",
                method.len()
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_known_calls_on_both_backends() {
    invented_paths_add_no_series(Backend::Sqlite).await;
    known_calls_move_the_counters_exactly(Backend::Sqlite).await;
    if std::env::var("SUBLEDGER_TEST_SKIP_POSTGRES").as_deref() != Ok("1") {
        known_calls_move_the_counters_exactly(Backend::Postgres).await;
    }
}
