//! The point of the product: several replicas (servers with their own pools) on one database,
//! hundreds of concurrent calls, and the invariants checked from the history afterwards.
//!
//! The calls go through subledger-client, one handle over the three replicas (round-robin), as
//! a service would make them; the invariants are read back with the raw stubs of tests/common.

mod common;

use std::collections::HashMap;

use common::{Client, TestDb, TestServer, assert_ledger_consistent, cancel, offering, subscribe};
use subledger::proto::EntryKind;
use subledger_client::{Error, Ledger, proto};
use tonic::Code;
use tonic_types::StatusExt;

const REPLICAS: usize = 3;

/// The replicas, and one client handle that spreads calls over them.
async fn start_replicas(db: &TestDb) -> (Vec<TestServer>, Ledger) {
    let mut servers = Vec::new();
    for _ in 0..REPLICAS {
        servers.push(db.start_server().await);
    }
    let endpoints = servers.iter().map(|s| format!("http://{}", s.address));
    let ledger = Ledger::builder(endpoints).build().expect("client");
    (servers, ledger)
}

/// A raw stub on one replica, for the checks of tests/common.
async fn raw(servers: &[TestServer], replica: usize) -> Client {
    servers[replica].client().await
}

/// The ErrorInfo reason of a raw status.
fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

async fn concurrent_subscribes_never_exceed_caps(db: TestDb) {
    const CALLS: usize = 400;
    const INVESTORS: usize = 80;
    const MAX_UNITS: i64 = 1000;
    const MAX_PER_INVESTOR: i64 = 20;
    let (servers, ledger) = start_replicas(&db).await;
    ledger
        .create_offering(offering("hot", MAX_UNITS, MAX_PER_INVESTOR))
        .await
        .unwrap();

    // Demand is about 2,200 units against a cap of 1,000, and about 27 per investor against 20:
    // both caps refuse calls while many others are in flight.
    let calls = (0..CALLS).map(|k| {
        let ledger = ledger.clone();
        let investor = format!("investor-{}", k % INVESTORS);
        let units = 1 + (k as i64 * 7) % 10;
        tokio::spawn(async move {
            let result = ledger
                .subscribe(subscribe("hot", &investor, units, &format!("req-{k}")))
                .await;
            (investor, units, result)
        })
    });
    let mut accepted_units = 0;
    let mut accepted_by_investor: HashMap<String, i64> = HashMap::new();
    let mut offering_cap_refusals = 0;
    let mut investor_cap_refusals = 0;
    for call in futures::future::join_all(calls).await {
        let (investor, units, result) = call.unwrap();
        match result {
            Ok(reply) => {
                assert!(!reply.replayed);
                accepted_units += units;
                *accepted_by_investor.entry(investor).or_default() += units;
            }
            Err(Error::OfferingCapExceeded { requested, .. }) => {
                assert_eq!(requested, units);
                offering_cap_refusals += 1;
            }
            Err(Error::InvestorCapExceeded { would_hold, .. }) => {
                assert!(would_hold > MAX_PER_INVESTOR);
                investor_cap_refusals += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    eprintln!(
        "accepted {accepted_units} units; refused {offering_cap_refusals} over the offering cap, \
         {investor_cap_refusals} over the investor cap"
    );

    let head = ledger.get_offering("hot").await.unwrap();
    assert!(head.subscribed_units <= MAX_UNITS);
    assert_eq!(head.subscribed_units, accepted_units);
    let mut positions_total = 0;
    for i in 0..INVESTORS {
        let investor = format!("investor-{i}");
        let position = ledger.get_position("hot", &investor).await.unwrap();
        assert!(position.units <= MAX_PER_INVESTOR);
        assert_eq!(
            position.units,
            accepted_by_investor.get(&investor).copied().unwrap_or(0)
        );
        positions_total += position.units;
    }
    assert_eq!(positions_total, accepted_units);
    let entries = assert_ledger_consistent(&mut raw(&servers, 1).await, "hot").await;
    let subscribed = entries
        .iter()
        .filter(|e| e.kind() == EntryKind::Subscribed)
        .count();
    assert_eq!(
        subscribed,
        CALLS - offering_cap_refusals - investor_cap_refusals
    );
    // Demand exceeds the cap, and each refusal left only fewer units than asked for: sold out
    // to within the largest request.
    assert!(
        head.subscribed_units > MAX_UNITS - 10,
        "sold {} of {MAX_UNITS}",
        head.subscribed_units
    );
}

async fn concurrent_subscribes_and_cancels_keep_positions_exact(db: TestDb) {
    const INVESTORS: usize = 40;
    let (servers, ledger) = start_replicas(&db).await;
    ledger
        .create_offering(offering("churn", 500, 30))
        .await
        .unwrap();
    let calls = (0..300).map(|k| {
        let ledger = ledger.clone();
        let investor = format!("investor-{}", k % INVESTORS);
        tokio::spawn(async move {
            let request_id = format!("req-{k}");
            match k % 3 {
                2 => ledger
                    .cancel(cancel("churn", &investor, 0, &request_id))
                    .await
                    .map(|r| r.entry),
                _ => ledger
                    .subscribe(subscribe("churn", &investor, 5, &request_id))
                    .await
                    .map(|r| r.entry),
            }
        })
    });
    let mut net_units = 0;
    for call in futures::future::join_all(calls).await {
        match call.unwrap() {
            Ok(entry) => net_units += entry.unwrap().units_delta,
            Err(error) => assert!(
                matches!(
                    error,
                    Error::InsufficientUnits { .. }
                        | Error::InvestorCapExceeded { .. }
                        | Error::OfferingCapExceeded { .. }
                ),
                "{error:?}"
            ),
        }
    }
    let entries = assert_ledger_consistent(&mut raw(&servers, 2).await, "churn").await;
    assert_eq!(entries.last().unwrap().offering_units_after, net_units);
}

async fn one_request_id_sent_to_every_replica_appends_once(db: TestDb) {
    const COPIES: usize = 30;
    let (servers, ledger) = start_replicas(&db).await;
    ledger
        .create_offering(offering("deal", 1000, 0))
        .await
        .unwrap();
    // Round-robin: each replica gets a third of the copies.
    let calls = (0..COPIES).map(|_| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            ledger
                .subscribe(subscribe("deal", "alice", 7, "the-one"))
                .await
                .unwrap()
        })
    });
    let replies: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        replies.iter().filter(|r| !r.replayed).count(),
        1,
        "exactly one call appended"
    );
    let sequences: Vec<i64> = replies
        .iter()
        .map(|r| r.entry.as_ref().unwrap().sequence)
        .collect();
    assert!(
        sequences.iter().all(|s| *s == 2),
        "all saw the one entry: {sequences:?}"
    );

    let entries = assert_ledger_consistent(&mut raw(&servers, 1).await, "deal").await;
    assert_eq!(
        entries.iter().filter(|e| e.request_id == "the-one").count(),
        1
    );
    assert_eq!(entries.len(), 2);
}

async fn concurrent_finalize_succeeds_exactly_once(db: TestDb) {
    const CALLS: usize = 20;
    let (servers, ledger) = start_replicas(&db).await;
    ledger
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    ledger
        .subscribe(subscribe("deal", "alice", 10, "s1"))
        .await
        .unwrap();
    ledger
        .close_offering(proto::CloseOfferingRequest {
            offering_id: "deal".into(),
            expected_version: 0,
            request_id: "close".into(),
        })
        .await
        .unwrap();
    let calls = (0..CALLS).map(|k| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            ledger
                .finalize_offering(proto::FinalizeOfferingRequest {
                    offering_id: "deal".into(),
                    expected_version: 0,
                    request_id: format!("finalize-{k}"),
                })
                .await
        })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one finalize succeeds"
    );
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(error, Error::OfferingNotClosed { status } if status == "FINALIZED"),
            "{error:?}"
        );
    }
    let entries = assert_ledger_consistent(&mut raw(&servers, 0).await, "deal").await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind() == EntryKind::OfferingFinalized)
            .count(),
        1
    );
}

async fn concurrent_creates_of_one_offering_agree(db: TestDb) {
    let (servers, ledger) = start_replicas(&db).await;
    let calls = (0..12).map(|_| {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.create_offering(offering("new", 50, 0)).await })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let offerings: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("a retry of the same create succeeds"))
        .collect();
    assert!(offerings.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(
        assert_ledger_consistent(&mut raw(&servers, 0).await, "new")
            .await
            .len(),
        1
    );
}

/// Calls spread over many offerings share transactions (several heads locked in one, in
/// offering_id order): replicas batching overlapping sets must neither deadlock nor mix up
/// offerings, and a call for a missing offering fails alone.
async fn concurrent_subscribes_over_many_offerings_stay_exact(db: TestDb) {
    const OFFERINGS: usize = 25;
    const CALLS: usize = 600;
    let (servers, ledger) = start_replicas(&db).await;
    for i in 0..OFFERINGS {
        ledger
            .create_offering(offering(&format!("o-{i:02}"), 200, 0))
            .await
            .unwrap();
    }
    let calls = (0..CALLS).map(|k| {
        let ledger = ledger.clone();
        // Every 50th call names an offering that does not exist.
        let offering_id = if k % 50 == 7 {
            "missing".to_owned()
        } else {
            format!("o-{:02}", (k * 7) % OFFERINGS)
        };
        tokio::spawn(async move {
            let result = ledger
                .subscribe(subscribe(
                    &offering_id,
                    &format!("inv-{}", k % 13),
                    1 + (k % 4) as i64,
                    &format!("r-{k}"),
                ))
                .await;
            (offering_id, result)
        })
    });
    let mut accepted: HashMap<String, i64> = HashMap::new();
    for call in futures::future::join_all(calls).await {
        let (offering_id, result) = call.unwrap();
        match result {
            Ok(reply) => {
                let entry = reply.entry.unwrap();
                assert_eq!(entry.offering_id, offering_id);
                *accepted.entry(offering_id).or_default() += entry.units_delta;
            }
            Err(Error::OfferingNotFound {
                offering_id: missing,
            }) => {
                assert_eq!(
                    (missing.as_str(), offering_id.as_str()),
                    ("missing", "missing")
                )
            }
            Err(error) => assert!(
                matches!(error, Error::OfferingCapExceeded { .. }),
                "{error:?}"
            ),
        }
    }
    let mut client = raw(&servers, 1).await;
    for i in 0..OFFERINGS {
        let offering_id = format!("o-{i:02}");
        let entries = assert_ledger_consistent(&mut client, &offering_id).await;
        assert_eq!(
            entries.last().unwrap().offering_units_after,
            accepted.get(&offering_id).copied().unwrap_or(0)
        );
    }
}

backend_tests!(
    concurrent_subscribes_never_exceed_caps,
    concurrent_subscribes_over_many_offerings_stay_exact,
    concurrent_subscribes_and_cancels_keep_positions_exact,
    one_request_id_sent_to_every_replica_appends_once,
    concurrent_finalize_succeeds_exactly_once,
    concurrent_creates_of_one_offering_agree,
);

/// PostgreSQL only (SQLite has no row locks): an offering whose head another session holds
/// fails alone, after lock_timeout (10 s), even when it shared a transaction with others.
/// Raw stubs here: the client would retry the DATABASE_UNAVAILABLE this test is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_stuck_head_fails_only_its_own_offering() {
    use sqlx::Connection;
    let Some(db) = TestDb::new(common::Backend::Postgres).await else {
        return;
    };
    let server = db.start_server().await;
    let mut client = server.client().await;
    for id in ["stuck-1", "stuck-2", "stuck-3", "free-a", "free-b"] {
        client.create_offering(offering(id, 100, 0)).await.unwrap();
    }
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("SELECT 1 FROM offering_head WHERE offering_id LIKE 'stuck-%' FOR UPDATE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let call = |offering_id: &'static str| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .subscribe(subscribe(offering_id, "alice", 1, offering_id))
                .await
        })
    };
    // Both transactions a replica runs at once wait on stuck-1 and stuck-2; the next three
    // calls queue, and then share one transaction, which waits on stuck-3.
    let stuck_1 = call("stuck-1");
    let stuck_2 = call("stuck-2");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stuck_3 = call("stuck-3");
    let free_a = call("free-a");
    let free_b = call("free-b");
    for free in [free_a, free_b] {
        let reply = free
            .await
            .unwrap()
            .expect("an offering nobody holds succeeds");
        assert!(!reply.into_inner().replayed);
    }
    for stuck in [stuck_1, stuck_2, stuck_3] {
        let status = stuck.await.unwrap().unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::Unavailable, "DATABASE_UNAVAILABLE")
        );
    }
    drop(blocker);
    assert_ledger_consistent(&mut client, "free-a").await;
}
