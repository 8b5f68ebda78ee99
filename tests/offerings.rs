//! Offerings as issuers run them, on both backends: pro-rata allocation from create to finalize,
//! one allocation however many replicas are asked, subscription windows judged by the database's
//! clock on every replica, lots and minimums, and amendments under load.

mod common;

use std::time::{Duration, SystemTime};

use common::{TestDb, assert_ledger_consistent, assert_status, cancel, offering, subscribe};
use subledger::proto::{self, Allocation, EntryKind, OfferingStatus};
use tonic::Code;

fn pro_rata(id: &str, max_units: i64, per_investor: i64) -> proto::CreateOfferingRequest {
    proto::CreateOfferingRequest {
        allocation: Allocation::ProRata.into(),
        ..offering(id, max_units, per_investor)
    }
}

fn get(id: &str) -> proto::GetOfferingRequest {
    proto::GetOfferingRequest {
        offering_id: id.into(),
    }
}

fn close(id: &str, request_id: &str) -> proto::CloseOfferingRequest {
    proto::CloseOfferingRequest {
        offering_id: id.into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn allocate(id: &str, request_id: &str) -> proto::AllocateOfferingRequest {
    proto::AllocateOfferingRequest {
        offering_id: id.into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn at(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

async fn pro_rata_offering_from_create_to_finalize(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    let created = client
        .create_offering(pro_rata("deal", 10, 6))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.allocation(), Allocation::ProRata);
    // Demand may add up to more than the cap; the per-investor cap applies to demand.
    for (investor, units, id) in [("a", 6, "s1"), ("b", 6, "s2"), ("c", 3, "s3")] {
        let reply = client
            .subscribe(subscribe("deal", investor, units, id))
            .await
            .unwrap()
            .into_inner();
        let entry = reply.entry.unwrap();
        assert_eq!((entry.units_delta, entry.demand_delta), (0, units));
        assert_eq!(reply.position.unwrap().demanded_units, units);
    }
    assert_status(
        client.subscribe(subscribe("deal", "a", 1, "s4")).await,
        Code::FailedPrecondition,
        "INVESTOR_CAP_EXCEEDED",
    );
    let open = client.get_offering(get("deal")).await.unwrap().into_inner();
    assert_eq!((open.demanded_units, open.subscribed_units), (15, 0));
    // A pro-rata offering is allocated before it is finalized; a first-come one is not allocated.
    client.close_offering(close("deal", "close")).await.unwrap();
    let finalize = proto::FinalizeOfferingRequest {
        offering_id: "deal".into(),
        request_id: "finalize".into(),
        ..Default::default()
    };
    assert_status(
        client.finalize_offering(finalize.clone()).await,
        Code::FailedPrecondition,
        "OFFERING_NOT_ALLOCATED",
    );
    client
        .create_offering(offering("plain", 10, 0))
        .await
        .unwrap();
    client
        .close_offering(close("plain", "close-plain"))
        .await
        .unwrap();
    assert_status(
        client.allocate_offering(allocate("plain", "a1")).await,
        Code::FailedPrecondition,
        "NOT_PRO_RATA",
    );

    // Quotas 6*10/15 = 4, 4 and 2: exact, no lot left over.
    let allocated = client
        .allocate_offering(allocate("deal", "allocate"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allocated.status(), OfferingStatus::Allocated);
    assert_eq!(
        (allocated.subscribed_units, allocated.investor_count),
        (10, 3)
    );
    let again = client
        .allocate_offering(allocate("deal", "allocate"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.version, allocated.version, "a retry is a replay");
    let history = common::full_history(&mut client, "deal").await;
    let allocations: Vec<(&str, i64, i64)> = history
        .iter()
        .filter(|e| e.kind() == EntryKind::Allocated && !e.investor_id.is_empty())
        .map(|e| {
            (
                e.investor_id.as_str(),
                e.units_delta,
                e.investor_demand_after,
            )
        })
        .collect();
    assert_eq!(allocations, [("a", 4, 6), ("b", 4, 6), ("c", 2, 3)]);
    let last = history.last().unwrap();
    assert_eq!(
        (last.kind(), last.request_id.as_str()),
        (EntryKind::Allocated, "allocate")
    );
    let position = client
        .get_position(proto::GetPositionRequest {
            offering_id: "deal".into(),
            investor_id: "c".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((position.units, position.demanded_units), (2, 3));
    let finalized = client
        .finalize_offering(finalize)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finalized.status(), OfferingStatus::Finalized);
    assert_ledger_consistent(&mut client, "deal").await;
}

/// Demand sent concurrently through three replicas, then AllocateOffering sent to all three at
/// once: exactly one allocation is appended, and the ledger verifies.
async fn one_allocation_however_many_replicas_are_asked(db: TestDb) {
    let servers = [
        db.start_server().await,
        db.start_server().await,
        db.start_server().await,
    ];
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(server.client().await);
    }
    clients[0]
        .create_offering(proto::CreateOfferingRequest {
            lot_units: 5,
            ..pro_rata("deal", 1_000, 0)
        })
        .await
        .unwrap();
    let calls: Vec<_> = (0..120)
        .map(|n| {
            let mut client = clients[n % 3].clone();
            let units = 5 * (1 + (n as i64 * 7) % 13);
            tokio::spawn(async move {
                client
                    .subscribe(subscribe(
                        "deal",
                        &format!("inv-{}", n % 40),
                        units,
                        &format!("s{n}"),
                    ))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    clients[1]
        .close_offering(close("deal", "close"))
        .await
        .unwrap();
    let allocations: Vec<_> = (0..3)
        .map(|n| {
            let mut client = clients[n].clone();
            tokio::spawn(async move {
                client
                    .allocate_offering(allocate("deal", &format!("allocate-{n}")))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for call in allocations {
        match call.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => {
                assert_status::<()>(Err(status), Code::FailedPrecondition, "OFFERING_NOT_CLOSED");
            }
        }
    }
    assert_eq!(won, 1);
    let history = assert_ledger_consistent(&mut clients[2], "deal").await;
    let allocated: Vec<_> = history
        .iter()
        .filter(|e| e.kind() == EntryKind::Allocated)
        .collect();
    assert_eq!(
        allocated.len(),
        40 + 1,
        "one entry per investor, then the status change"
    );
    let total: i64 = allocated.iter().map(|e| e.units_delta).sum();
    assert_eq!(total, 1_000, "oversubscribed: the whole cap, in lots of 5");
    assert!(allocated.iter().all(|e| e.units_delta % 5 == 0));
}

/// close_time passes: a Subscribe just before it is accepted, one just after is refused on
/// every replica (the database's clock decides), GetOffering shows CLOSED, and one CLOSED entry
/// by "system" is appended. Before open_time Subscribe is refused the same way.
async fn windows_are_judged_by_the_database_clock_on_every_replica(db: TestDb) {
    let servers = [
        db.start_server().await,
        db.start_server().await,
        db.start_server().await,
    ];
    let mut client = servers[0].client().await;
    let close_time = SystemTime::now() + Duration::from_millis(1500);
    client
        .create_offering(proto::CreateOfferingRequest {
            close_time: Some(at(close_time)),
            ..offering("deal", 100, 0)
        })
        .await
        .unwrap();
    for (n, server) in servers.iter().enumerate() {
        let mut replica = server.client().await;
        replica
            .subscribe(subscribe("deal", "alice", 1, &format!("before-{n}")))
            .await
            .expect("before close_time");
    }
    let wait = close_time
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1)).await;
    for (n, server) in servers.iter().enumerate() {
        let mut replica = server.client().await;
        let status = assert_status(
            replica
                .subscribe(subscribe("deal", "alice", 1, &format!("after-{n}")))
                .await,
            Code::FailedPrecondition,
            "OFFERING_NOT_OPEN",
        );
        let details = tonic_types::StatusExt::get_error_details(&status);
        assert_eq!(
            details.error_info().unwrap().metadata["bound"],
            "close_time"
        );
        let shown = replica
            .get_offering(get("deal"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(shown.status(), OfferingStatus::Closed);
    }
    let history = assert_ledger_consistent(&mut client, "deal").await;
    let closed: Vec<_> = history
        .iter()
        .filter(|e| e.kind() == EntryKind::OfferingClosed)
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].actor, "system");

    // Before open_time: refused, naming the bound; after it: accepted.
    let open_time = SystemTime::now() + Duration::from_millis(800);
    client
        .create_offering(proto::CreateOfferingRequest {
            open_time: Some(at(open_time)),
            ..offering("later", 100, 0)
        })
        .await
        .unwrap();
    let status = assert_status(
        client
            .subscribe(subscribe("later", "bob", 1, "early"))
            .await,
        Code::FailedPrecondition,
        "OFFERING_NOT_OPEN",
    );
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(details.error_info().unwrap().metadata["bound"], "open_time");
    let wait = open_time
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    client
        .subscribe(subscribe("later", "bob", 1, "early"))
        .await
        .expect("after open_time");
}

async fn lots_and_minimums_name_their_rule(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(proto::CreateOfferingRequest {
            lot_units: 10,
            min_units_per_investor: 20,
            ..offering("deal", 1000, 0)
        })
        .await
        .unwrap();
    assert_status(
        client.subscribe(subscribe("deal", "alice", 15, "s1")).await,
        Code::FailedPrecondition,
        "NOT_A_MULTIPLE_OF_LOT",
    );
    assert_status(
        client.subscribe(subscribe("deal", "alice", 10, "s2")).await,
        Code::FailedPrecondition,
        "BELOW_INVESTOR_MINIMUM",
    );
    client
        .subscribe(subscribe("deal", "alice", 30, "s3"))
        .await
        .unwrap();
    // Cancelling 20 would leave 10, below the minimum: a position is 0 or at least 20.
    assert_status(
        client.cancel(cancel("deal", "alice", 20, "c1")).await,
        Code::FailedPrecondition,
        "BELOW_INVESTOR_MINIMUM",
    );
    client
        .cancel(cancel("deal", "alice", 0, "c2"))
        .await
        .unwrap();
    // Creation refuses terms that contradict each other.
    let mut bad = offering("bad", 100, 25);
    bad.lot_units = 10;
    common::assert_invalid(client.create_offering(bad).await, "max_units_per_investor");
    let mut bad = offering("bad", 100, 0);
    bad.max_total_demand = 500;
    common::assert_invalid(client.create_offering(bad).await, "max_total_demand");
    let mut bad = offering("bad", 100, 0);
    bad.close_time = Some(at(SystemTime::now() - Duration::from_secs(1)));
    common::assert_invalid(client.create_offering(bad).await, "close_time");
    assert_ledger_consistent(&mut client, "deal").await;
}

/// The cap raised while Subscribes pour in, then more accepted; a cap below what is subscribed
/// refused; every amendment in the history with the terms before and after; verified.
async fn amendments_change_terms_under_load(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    let calls: Vec<_> = (0..150)
        .map(|n| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .subscribe(subscribe(
                        "deal",
                        &format!("inv-{}", n % 30),
                        1,
                        &format!("s{n}"),
                    ))
                    .await
            })
        })
        .collect();
    let raised = client
        .amend_offering(proto::AmendOfferingRequest {
            offering_id: "deal".into(),
            request_id: "raise".into(),
            max_units: Some(200),
            name: Some("Deal, enlarged".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (raised.max_units, raised.name.as_str()),
        (200, "Deal, enlarged")
    );
    let mut accepted = 0;
    for call in calls {
        if call.await.unwrap().is_ok() {
            accepted += 1;
        }
    }
    assert!(
        accepted > 100 || raised.subscribed_units < 100,
        "the raise let more in"
    );
    client
        .subscribe(subscribe("deal", "late", 1, "late-1"))
        .await
        .expect("room under the raised cap");
    let now = client.get_offering(get("deal")).await.unwrap().into_inner();
    let status = assert_status(
        client
            .amend_offering(proto::AmendOfferingRequest {
                offering_id: "deal".into(),
                request_id: "lower".into(),
                max_units: Some(now.subscribed_units - 1),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "AMENDMENT_CONFLICT",
    );
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(details.error_info().unwrap().metadata["field"], "max_units");
    assert_status(
        client
            .amend_offering(proto::AmendOfferingRequest {
                offering_id: "deal".into(),
                request_id: "cap".into(),
                max_units_per_investor: Some(1),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "AMENDMENT_CONFLICT",
    );
    common::assert_invalid(
        client
            .amend_offering(proto::AmendOfferingRequest {
                offering_id: "deal".into(),
                request_id: "nothing".into(),
                ..Default::default()
            })
            .await,
        "name",
    );
    // The same amendment again is a replay; its request_id for another change is refused.
    let replay = client
        .amend_offering(proto::AmendOfferingRequest {
            offering_id: "deal".into(),
            request_id: "raise".into(),
            max_units: Some(200),
            name: Some("Deal, enlarged".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.max_units, 200);
    assert_status(
        client
            .amend_offering(proto::AmendOfferingRequest {
                offering_id: "deal".into(),
                request_id: "raise".into(),
                max_units: Some(300),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "REQUEST_ID_REUSED",
    );
    let history = assert_ledger_consistent(&mut client, "deal").await;
    let amended: Vec<_> = history
        .iter()
        .filter(|e| e.kind() == EntryKind::OfferingAmended)
        .collect();
    assert_eq!(amended.len(), 1);
    let (before, after) = (
        amended[0].terms_before.as_ref().unwrap(),
        amended[0].terms_after.as_ref().unwrap(),
    );
    assert_eq!((before.max_units, after.max_units), (100, 200));
    assert_eq!(after.name, "Deal, enlarged");
    // Tampering with the amended cap is caught: the history says 200.
    db.execute_sql("UPDATE offering_head SET max_units = 250 WHERE offering_id = 'deal'")
        .await
        .unwrap();
    let verdict = client
        .verify_offering(proto::VerifyOfferingRequest {
            offering_id: "deal".into(),
            digest: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !verdict.ok && verdict.problems.iter().any(|p| p.contains("terms")),
        "{:?}",
        verdict.problems
    );
}

backend_tests!(
    pro_rata_offering_from_create_to_finalize,
    one_allocation_however_many_replicas_are_asked,
    windows_are_judged_by_the_database_clock_on_every_replica,
    lots_and_minimums_name_their_rule,
    amendments_change_terms_under_load,
);
