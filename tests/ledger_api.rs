//! Every RPC's happy path and every error reason, through a real client and server, on both backends.

mod common;

use common::{
    TestDb, assert_invalid, assert_ledger_consistent, assert_status, cancel, offering, subscribe,
};
use subledger::proto::{self, EntryKind, OfferingStatus};
use tonic::Code;

async fn create_get_and_list_offerings(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;

    let created = client
        .create_offering(offering("deal-1", 1000, 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.offering_id, "deal-1");
    assert_eq!(
        (created.max_units, created.max_units_per_investor),
        (1000, 100)
    );
    assert_eq!(
        (
            created.subscribed_units,
            created.remaining_units,
            created.investor_count
        ),
        (0, 1000, 0)
    );
    assert_eq!(created.status(), OfferingStatus::Open);
    assert_eq!(created.version, 1);
    assert!(created.create_time.is_some() && created.update_time.is_some());

    // The same request again is a replay: same offering, nothing new.
    let again = client
        .create_offering(offering("deal-1", 1000, 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, created);
    // Same id, other parameters or another request_id: OFFERING_EXISTS.
    assert_status(
        client.create_offering(offering("deal-1", 999, 100)).await,
        Code::AlreadyExists,
        "OFFERING_EXISTS",
    );
    let mut other_request = offering("deal-1", 1000, 100);
    other_request.request_id = "another".into();
    assert_status(
        client.create_offering(other_request).await,
        Code::AlreadyExists,
        "OFFERING_EXISTS",
    );

    // An empty offering_id gets a server-made UUID.
    let mut generated = offering("", 10, 0);
    generated.request_id = String::new();
    let generated = client
        .create_offering(generated)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        generated.offering_id.len(),
        36,
        "a UUID: {}",
        generated.offering_id
    );

    let got = client
        .get_offering(proto::GetOfferingRequest {
            offering_id: "deal-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);

    for id in ["deal-2", "deal-3", "deal-4"] {
        client.create_offering(offering(id, 10, 0)).await.unwrap();
    }
    // 5 offerings, pages of 2: 2 + 2 + 1, in offering_id order, the last with no token.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_offerings(proto::ListOfferingsRequest {
                page_size: 2,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.offerings.len() <= 2);
        seen.extend(page.offerings.into_iter().map(|o| o.offering_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 5);
    let all = client
        .list_offerings(proto::ListOfferingsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.offerings.len(), 5);
    assert!(all.next_page_token.is_empty());
}

async fn subscribe_cancel_and_positions(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 1000, 300))
        .await
        .unwrap();

    let first = client
        .subscribe(subscribe("deal", "alice", 120, "s1"))
        .await
        .unwrap()
        .into_inner();
    let entry = first.entry.as_ref().unwrap();
    assert_eq!(
        (entry.sequence, entry.kind(), entry.units_delta),
        (2, EntryKind::Subscribed, 120)
    );
    assert_eq!(
        (entry.investor_units_after, entry.offering_units_after),
        (120, 120)
    );
    assert_eq!(entry.request_id, "s1");
    assert!(!first.replayed);
    let offering_after = first.offering.as_ref().unwrap();
    assert_eq!(
        (
            offering_after.subscribed_units,
            offering_after.remaining_units,
            offering_after.investor_count
        ),
        (120, 880, 1)
    );
    assert_eq!(offering_after.version, 2);
    assert_eq!(first.position.as_ref().unwrap().units, 120);

    // A retry returns the original entry, marked replayed, and counts nothing.
    let retry = client
        .subscribe(subscribe("deal", "alice", 120, "s1"))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.replayed);
    assert_eq!(retry.entry, first.entry);
    assert_eq!(retry.offering.unwrap().subscribed_units, 120);
    // The same request_id for something else is refused.
    assert_status(
        client
            .subscribe(subscribe("deal", "alice", 121, "s1"))
            .await,
        Code::FailedPrecondition,
        "REQUEST_ID_REUSED",
    );
    assert_status(
        client.cancel(cancel("deal", "alice", 0, "s1")).await,
        Code::FailedPrecondition,
        "REQUEST_ID_REUSED",
    );

    client
        .subscribe(subscribe("deal", "bob", 200, "s2"))
        .await
        .unwrap();
    let cancelled = client
        .cancel(cancel("deal", "alice", 20, "c1"))
        .await
        .unwrap()
        .into_inner();
    let entry = cancelled.entry.unwrap();
    assert_eq!(
        (
            entry.kind(),
            entry.units_delta,
            entry.investor_units_after,
            entry.offering_units_after
        ),
        (EntryKind::Cancelled, -20, 100, 300)
    );
    // units = 0 cancels everything held, and the investor no longer counts.
    let all = client
        .cancel(cancel("deal", "alice", 0, "c2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entry.unwrap().units_delta, -100);
    assert_eq!(all.position.unwrap().units, 0);
    assert_eq!(all.offering.unwrap().investor_count, 1);
    let replay = client
        .cancel(cancel("deal", "alice", 0, "c2"))
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.entry.unwrap().units_delta, -100);

    let bob = client
        .get_position(proto::GetPositionRequest {
            offering_id: "deal".into(),
            investor_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((bob.units, bob.update_time.is_some()), (200, true));
    let nobody = client
        .get_position(proto::GetPositionRequest {
            offering_id: "deal".into(),
            investor_id: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((nobody.units, nobody.update_time), (0, None));

    let entries = assert_ledger_consistent(&mut client, "deal").await;
    assert_eq!(entries.len(), 5);
}

async fn lifecycle_close_then_finalize_once(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    client
        .subscribe(subscribe("deal", "alice", 10, "s1"))
        .await
        .unwrap();

    let finalize = |expected_version: i64, request_id: &str| proto::FinalizeOfferingRequest {
        offering_id: "deal".into(),
        expected_version,
        request_id: request_id.into(),
    };
    let close = |expected_version: i64, request_id: &str| proto::CloseOfferingRequest {
        offering_id: "deal".into(),
        expected_version,
        request_id: request_id.into(),
    };
    assert_status(
        client.finalize_offering(finalize(0, "f0")).await,
        Code::FailedPrecondition,
        "OFFERING_NOT_CLOSED",
    );
    let mismatch = assert_status(
        client.close_offering(close(1, "x1")).await,
        Code::Aborted,
        "VERSION_MISMATCH",
    );
    assert!(
        mismatch.message().contains("version 2"),
        "{}",
        mismatch.message()
    );

    let closed = client
        .close_offering(close(2, "x2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (closed.status(), closed.version),
        (OfferingStatus::Closed, 3)
    );
    // A retried close is answered with the offering as it is, not an error.
    let retried = client
        .close_offering(close(2, "x2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.status(), OfferingStatus::Closed);
    assert_status(
        client.close_offering(close(0, "x3")).await,
        Code::FailedPrecondition,
        "OFFERING_NOT_OPEN",
    );
    assert_status(
        client.subscribe(subscribe("deal", "bob", 1, "s2")).await,
        Code::FailedPrecondition,
        "OFFERING_NOT_OPEN",
    );
    assert_status(
        client.cancel(cancel("deal", "alice", 1, "c1")).await,
        Code::FailedPrecondition,
        "OFFERING_NOT_OPEN",
    );

    let finalized = client
        .finalize_offering(finalize(3, "f1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            finalized.status(),
            finalized.version,
            finalized.subscribed_units
        ),
        (OfferingStatus::Finalized, 4, 10)
    );
    let again = client
        .finalize_offering(finalize(3, "f1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.version, 4, "a retry appends nothing");
    assert_status(
        client.finalize_offering(finalize(0, "f1")).await,
        Code::FailedPrecondition,
        "REQUEST_ID_REUSED",
    );
    assert_status(
        client.finalize_offering(finalize(0, "f2")).await,
        Code::FailedPrecondition,
        "OFFERING_NOT_CLOSED",
    );
    // Even with a stale expected_version: the offering moved on for good, no point retrying.
    assert_status(
        client.finalize_offering(finalize(3, "f3")).await,
        Code::FailedPrecondition,
        "OFFERING_NOT_CLOSED",
    );

    let entries = assert_ledger_consistent(&mut client, "deal").await;
    let kinds: Vec<_> = entries.iter().map(|e| e.kind()).collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        [
            OfferingCreated,
            Subscribed,
            OfferingClosed,
            OfferingFinalized
        ]
    );
}

async fn caps_and_units_are_enforced(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 60))
        .await
        .unwrap();
    client
        .subscribe(subscribe("deal", "alice", 60, "s1"))
        .await
        .unwrap();
    assert_status(
        client.subscribe(subscribe("deal", "alice", 1, "s2")).await,
        Code::FailedPrecondition,
        "INVESTOR_CAP_EXCEEDED",
    );
    client
        .subscribe(subscribe("deal", "bob", 30, "s3"))
        .await
        .unwrap();
    let over = assert_status(
        client.subscribe(subscribe("deal", "carol", 11, "s4")).await,
        Code::FailedPrecondition,
        "OFFERING_CAP_EXCEEDED",
    );
    assert!(
        over.message().contains("only 10"),
        "says how many remain: {}",
        over.message()
    );
    let details = tonic_types::StatusExt::get_error_details(&over);
    assert_eq!(
        details
            .error_info()
            .unwrap()
            .metadata
            .get("remaining_units")
            .map(String::as_str),
        Some("10")
    );
    // A refused request_id may be used again once the request can succeed.
    client
        .subscribe(subscribe("deal", "carol", 10, "s4"))
        .await
        .unwrap();
    // Sold out: a retry of an accepted request is still a replay, not OFFERING_CAP_EXCEEDED.
    let retry = client
        .subscribe(subscribe("deal", "carol", 10, "s4"))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.replayed);
    assert_eq!(retry.offering.unwrap().remaining_units, 0);

    assert_status(
        client.cancel(cancel("deal", "bob", 31, "c1")).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_UNITS",
    );
    assert_status(
        client.cancel(cancel("deal", "dave", 0, "c2")).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_UNITS",
    );
    assert_ledger_consistent(&mut client, "deal").await;
}

async fn unknown_offerings_are_not_found(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    let not_found = |r| assert_status(r, Code::NotFound, "OFFERING_NOT_FOUND");
    not_found(
        client
            .get_offering(proto::GetOfferingRequest {
                offering_id: "nope".into(),
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .subscribe(subscribe("nope", "alice", 1, "r"))
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .cancel(cancel("nope", "alice", 1, "r"))
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .close_offering(proto::CloseOfferingRequest {
                offering_id: "nope".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .finalize_offering(proto::FinalizeOfferingRequest {
                offering_id: "nope".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .get_position(proto::GetPositionRequest {
                offering_id: "nope".into(),
                investor_id: "a".into(),
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .list_history(proto::ListHistoryRequest {
                offering_id: "nope".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .verify_offering(proto::VerifyOfferingRequest {
                offering_id: "nope".into(),
                digest: None,
            })
            .await
            .map(|_| ()),
    );
    not_found(
        client
            .watch_history(proto::WatchHistoryRequest {
                offering_id: "nope".into(),
                after_sequence: 0,
            })
            .await
            .map(|_| ()),
    );
}

async fn malformed_requests_name_the_field(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();

    let mut bad = offering("has space", 10, 0);
    assert_invalid(client.create_offering(bad.clone()).await, "offering_id");
    bad = offering(&"x".repeat(129), 10, 0);
    assert_invalid(client.create_offering(bad).await, "offering_id");
    bad = offering("ok", 0, 0);
    assert_invalid(client.create_offering(bad).await, "max_units");
    bad = offering("ok", -5, 0);
    assert_invalid(client.create_offering(bad).await, "max_units");
    bad = offering("ok", 10, 11);
    assert_invalid(client.create_offering(bad).await, "max_units_per_investor");
    bad = offering("ok", 10, -1);
    assert_invalid(client.create_offering(bad).await, "max_units_per_investor");
    bad = offering("ok", 10, 0);
    bad.name = String::new();
    assert_invalid(client.create_offering(bad).await, "name");
    // Characters that make a name display as another: a bidi override, a zero-width space.
    for disguise in ["Tower \u{202E}7 rewoT", "Tower\u{200B}7"] {
        bad = offering("ok", 10, 0);
        bad.name = disguise.into();
        assert_invalid(client.create_offering(bad).await, "name");
    }
    bad = offering("ok", 10, 0);
    bad.request_id = "no/slashes".into();
    assert_invalid(client.create_offering(bad).await, "request_id");

    assert_invalid(
        client.subscribe(subscribe("", "alice", 1, "r")).await,
        "offering_id",
    );
    assert_invalid(
        client.subscribe(subscribe("deal", "", 1, "r")).await,
        "investor_id",
    );
    assert_invalid(
        client.subscribe(subscribe("deal", "al ice", 1, "r")).await,
        "investor_id",
    );
    assert_invalid(
        client.subscribe(subscribe("deal", "alice", 0, "r")).await,
        "units",
    );
    assert_invalid(
        client.subscribe(subscribe("deal", "alice", -1, "r")).await,
        "units",
    );
    assert_invalid(
        client
            .subscribe(subscribe("deal", "alice", i64::MAX, "r"))
            .await,
        "units",
    );
    assert_invalid(
        client.subscribe(subscribe("deal", "alice", 1, "")).await,
        "request_id",
    );
    assert_invalid(
        client.cancel(cancel("deal", "alice", -1, "r")).await,
        "units",
    );
    assert_invalid(
        client.cancel(cancel("deal", "alice", 1, "")).await,
        "request_id",
    );
    assert_invalid(
        client
            .close_offering(proto::CloseOfferingRequest {
                offering_id: "deal".into(),
                expected_version: -1,
                request_id: "r".into(),
            })
            .await,
        "expected_version",
    );
    assert_invalid(
        client
            .list_offerings(proto::ListOfferingsRequest {
                page_size: -1,
                page_token: String::new(),
            })
            .await,
        "page_size",
    );
    assert_invalid(
        client
            .list_offerings(proto::ListOfferingsRequest {
                page_size: 0,
                page_token: "garbage!".into(),
            })
            .await,
        "page_token",
    );
    let history = |page_size, page_token: &str, after_sequence| proto::ListHistoryRequest {
        offering_id: "deal".into(),
        investor_id: String::new(),
        after_sequence,
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    assert_invalid(client.list_history(history(-3, "", 0)).await, "page_size");
    assert_invalid(
        client.list_history(history(0, "bm9wZQ", 0)).await,
        "page_token",
    );
    assert_invalid(
        client.list_history(history(0, "", -1)).await,
        "after_sequence",
    );
    // A forged token whose key is no id (PostgreSQL would refuse the NUL byte).
    use base64::Engine as _;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("offerings:\0");
    assert_invalid(
        client
            .list_offerings(proto::ListOfferingsRequest {
                page_size: 0,
                page_token: forged,
            })
            .await,
        "page_token",
    );
    // Watching from past the last entry could never see the end of the offering.
    assert_invalid(
        client
            .watch_history(proto::WatchHistoryRequest {
                offering_id: "deal".into(),
                after_sequence: 2,
            })
            .await,
        "after_sequence",
    );
    // A token of one listing is refused by another.
    client
        .create_offering(offering("deal-2", 10, 0))
        .await
        .unwrap();
    let page = client
        .list_offerings(proto::ListOfferingsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap();
    assert_invalid(
        client
            .list_history(history(0, &page.into_inner().next_page_token, 0))
            .await,
        "page_token",
    );
}

async fn history_pages_and_filters(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 10_000, 0))
        .await
        .unwrap();
    for i in 0..25 {
        let investor = if i % 5 == 0 { "alice" } else { "bob" };
        client
            .subscribe(subscribe("deal", investor, 1, &format!("s{i}")))
            .await
            .unwrap();
    }
    let entries = common::full_history(&mut client, "deal").await;
    assert_eq!(entries.len(), 26);

    let mut request = proto::ListHistoryRequest {
        offering_id: "deal".into(),
        page_size: 10,
        ..Default::default()
    };
    let first = client
        .list_history(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    request.page_token = first.next_page_token;
    let second = client
        .list_history(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.entries[0].sequence, 11);
    // A token goes on only with the filters that made it (AIP-158).
    for (investor_id, actor, after_sequence) in
        [("alice", "", 0), ("", "anonymous", 0), ("", "", 3)]
    {
        let mut other_filters = request.clone();
        other_filters.investor_id = investor_id.into();
        other_filters.actor = actor.into();
        other_filters.after_sequence = after_sequence;
        assert_invalid(client.list_history(other_filters).await, "page_token");
    }

    // Every entry records who made it; without authentication that is "anonymous".
    assert!(entries.iter().all(|e| e.actor == "anonymous"));
    let by_actor = |actor: &str| proto::ListHistoryRequest {
        offering_id: "deal".into(),
        actor: actor.into(),
        page_size: 20,
        ..Default::default()
    };
    let anonymous = client
        .list_history(by_actor("anonymous"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(anonymous.entries.len(), 20);
    let mut rest = by_actor("anonymous");
    rest.page_token = anonymous.next_page_token;
    let rest = client.list_history(rest).await.unwrap().into_inner();
    assert_eq!(rest.entries.len(), 6);
    assert!(rest.next_page_token.is_empty());
    let nobody = client
        .list_history(by_actor("checkout"))
        .await
        .unwrap()
        .into_inner();
    assert!(nobody.entries.is_empty() && nobody.next_page_token.is_empty());
    assert_invalid(client.list_history(by_actor("no spaces")).await, "actor");

    let alice = client
        .list_history(proto::ListHistoryRequest {
            offering_id: "deal".into(),
            investor_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alice.entries.len(), 5);
    assert!(alice.entries.iter().all(|e| e.investor_id == "alice"));

    let after = client
        .list_history(proto::ListHistoryRequest {
            offering_id: "deal".into(),
            after_sequence: 24,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [25, 26]
    );
    assert!(after.next_page_token.is_empty());
}

async fn verify_reports_a_tampered_position(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    client
        .subscribe(subscribe("deal", "alice", 10, "s1"))
        .await
        .unwrap();
    assert_ledger_consistent(&mut client, "deal").await;

    // Positions are derived data and may be written by SQL; VerifyOffering must notice.
    db.execute_sql("UPDATE investor_position SET units = 9 WHERE investor_id = 'alice'")
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
    assert!(!verdict.ok);
    assert_eq!(verdict.entries_checked, 2);
    assert!(
        verdict
            .problems
            .iter()
            .any(|p| p.contains("alice") && p.contains("9")),
        "{:?}",
        verdict.problems
    );
}

async fn database_refuses_to_rewrite_history(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 10))
        .await
        .unwrap();
    client
        .subscribe(subscribe("deal", "alice", 10, "s1"))
        .await
        .unwrap();

    let update = db
        .execute_sql("UPDATE history_entry SET units_delta = 1 WHERE sequence = 2")
        .await;
    assert!(update.unwrap_err().contains("append-only"));
    let delete = db.execute_sql("DELETE FROM history_entry").await;
    assert!(delete.unwrap_err().contains("append-only"));
    if db.backend == common::Backend::Postgres {
        assert!(
            db.execute_sql("TRUNCATE history_entry CASCADE")
                .await
                .unwrap_err()
                .contains("append-only")
        );
    }
    // CHECK constraints: no over-cap head, no negative position, whatever writes them.
    assert!(
        db.execute_sql("UPDATE offering_head SET subscribed_units = 101")
            .await
            .is_err()
    );
    assert!(
        db.execute_sql("UPDATE offering_head SET subscribed_units = -1")
            .await
            .is_err()
    );
    assert!(
        db.execute_sql("UPDATE investor_position SET units = -1")
            .await
            .is_err()
    );
    assert_ledger_consistent(&mut client, "deal").await;
}

async fn health_reports_serving(db: TestDb) {
    let server = db.start_server().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "subledger.v1.SubscriptionLedger"] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
}

backend_tests!(
    create_get_and_list_offerings,
    subscribe_cancel_and_positions,
    lifecycle_close_then_finalize_once,
    caps_and_units_are_enforced,
    unknown_offerings_are_not_found,
    malformed_requests_name_the_field,
    history_pages_and_filters,
    verify_reports_a_tampered_position,
    database_refuses_to_rewrite_history,
    health_reports_serving,
);
