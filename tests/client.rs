//! subledger-client against real servers: its example runs as written, one handle spreads calls
//! over replicas and steps past one that is down, the server's refusals arrive as typed errors
//! with their metadata, and TLS with a bearer token works.

mod common;

use std::time::Duration;

use common::TestDb;
use subledger_client::{Error, Ledger, proto};

/// The client's documented example, compiled here from its own file.
#[allow(dead_code)] // its main() is for `cargo run --example`; the test calls run()
#[path = "../crates/subledger-client/examples/subscribe.rs"]
mod example;

async fn the_example_runs_as_written(db: TestDb) {
    let server = db.start_server().await;
    let ledger = Ledger::builder([format!("http://{}", server.address)])
        .build()
        .unwrap();
    let outcome = example::run(&ledger).await.expect("the example runs");
    assert_eq!(outcome.alice_units, 50);
    assert_eq!(outcome.remaining_when_refused, 50);
    // Created, alice, bob, closed.
    assert_eq!(outcome.closed_version, 4);
    // The offering_id and every request_id were made by the client.
    let history = ledger.history(&outcome.offering_id).await.unwrap();
    assert_eq!(history.len(), 4);
    for entry in &history {
        assert!(
            uuid::Uuid::parse_str(&entry.request_id).is_ok(),
            "{entry:?}"
        );
    }
    assert!(uuid::Uuid::parse_str(&outcome.offering_id).is_ok());
}

/// An address nothing listens on: bound, then released.
async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

async fn one_handle_spreads_calls_over_replicas_and_skips_a_dead_one(db: TestDb) {
    const CALLS: usize = 60;
    let replicas = [db.start_server().await, db.start_server().await];
    let mut endpoints = vec![dead_address().await];
    endpoints.extend(replicas.iter().map(|r| format!("http://{}", r.address)));
    let ledger = Ledger::builder(endpoints).build().unwrap();
    ledger
        .create_offering(proto::CreateOfferingRequest {
            offering_id: "spread".into(),
            name: "Spread".into(),
            max_units: 1000,
            ..Default::default()
        })
        .await
        .expect("a create that meets the dead replica first is retried on the next");
    let calls = (0..CALLS).map(|k| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            ledger
                .subscribe(proto::SubscribeRequest {
                    offering_id: "spread".into(),
                    investor_id: format!("investor-{}", k % 7),
                    units: 1,
                    ..Default::default()
                })
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        let reply = call.unwrap().expect("every call reaches a live replica");
        assert!(!reply.replayed);
    }
    let history = ledger.history("spread").await.unwrap();
    assert_eq!(history.len(), CALLS + 1);
    let mut request_ids: Vec<_> = history.iter().map(|e| e.request_id.clone()).collect();
    request_ids.sort();
    request_ids.dedup();
    assert_eq!(request_ids.len(), CALLS + 1, "one request_id per call");
    let head = ledger.get_offering("spread").await.unwrap();
    assert_eq!(head.subscribed_units, CALLS as i64);
}

async fn refusals_are_typed_errors_with_their_metadata(db: TestDb) {
    let server = db.start_server().await;
    let ledger = Ledger::builder([format!("http://{}", server.address)])
        .build()
        .unwrap();
    let create = proto::CreateOfferingRequest {
        offering_id: "typed".into(),
        name: "Typed".into(),
        max_units: 100,
        max_units_per_investor: 30,
        request_id: "create-typed".into(),
        ..Default::default()
    };
    ledger.create_offering(create.clone()).await.unwrap();
    let taken = ledger
        .create_offering(proto::CreateOfferingRequest {
            request_id: "another".into(),
            ..create
        })
        .await;
    assert!(matches!(taken, Err(Error::OfferingExists { offering_id }) if offering_id == "typed"));
    let subscribe = |investor: &str, units: i64, request_id: &str| proto::SubscribeRequest {
        offering_id: "typed".into(),
        investor_id: investor.into(),
        units,
        request_id: request_id.into(),
    };
    ledger.subscribe(subscribe("ann", 20, "s-1")).await.unwrap();
    // The same request_id again replays; for another request it is refused.
    assert!(
        ledger
            .subscribe(subscribe("ann", 20, "s-1"))
            .await
            .unwrap()
            .replayed
    );
    let reused = ledger.subscribe(subscribe("ann", 5, "s-1")).await;
    assert!(matches!(reused, Err(Error::RequestIdReused { request_id }) if request_id == "s-1"));
    let over_investor = ledger.subscribe(subscribe("ann", 11, "s-2")).await;
    assert!(
        matches!(
            over_investor,
            Err(Error::InvestorCapExceeded {
                would_hold: 31,
                max_units_per_investor: 30
            })
        ),
        "{over_investor:?}"
    );
    for (investor, id) in [("ben", "s-3"), ("cy", "s-4")] {
        ledger.subscribe(subscribe(investor, 30, id)).await.unwrap();
    }
    let over_cap = ledger.subscribe(subscribe("dee", 25, "s-5")).await;
    assert!(
        matches!(
            over_cap,
            Err(Error::OfferingCapExceeded {
                requested: 25,
                remaining: 20,
                max_units: 100
            })
        ),
        "{over_cap:?}"
    );
    let invalid = ledger.subscribe(subscribe("dee", 0, "s-6")).await;
    assert!(
        matches!(&invalid, Err(Error::InvalidField { field, .. }) if field == "units"),
        "{invalid:?}"
    );
    let missing = ledger.get_offering("nowhere").await;
    assert!(
        matches!(missing, Err(Error::OfferingNotFound { offering_id }) if offering_id == "nowhere")
    );
    let cancel_too_much = ledger
        .cancel(proto::CancelRequest {
            offering_id: "typed".into(),
            investor_id: "ann".into(),
            units: 21,
            ..Default::default()
        })
        .await;
    assert!(matches!(
        cancel_too_much,
        Err(Error::InsufficientUnits {
            requested: 21,
            held: 20
        })
    ));
    let stale_close = ledger
        .close_offering(proto::CloseOfferingRequest {
            offering_id: "typed".into(),
            expected_version: 2,
            ..Default::default()
        })
        .await;
    assert!(matches!(
        stale_close,
        Err(Error::VersionMismatch {
            expected: 2,
            actual: 4
        })
    ));
    ledger
        .close_offering(proto::CloseOfferingRequest {
            offering_id: "typed".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let closed = ledger.subscribe(subscribe("dee", 1, "s-7")).await;
    assert!(
        matches!(&closed, Err(Error::OfferingNotOpen { status, bound: None }) if status == "CLOSED"),
        "{closed:?}"
    );
    assert_eq!(closed.unwrap_err().code(), tonic::Code::FailedPrecondition);
}

backend_tests!(
    the_example_runs_as_written,
    one_handle_spreads_calls_over_replicas_and_skips_a_dead_one,
    refusals_are_typed_errors_with_their_metadata,
);

/// Mutual TLS and a bearer token: the principal the token names is recorded as the actor; the
/// same certificate without the token is refused as a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_bearer_token_identify_the_caller() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let db = TestDb::new(common::Backend::Sqlite).await.unwrap();
    let secured = common::tls::SecuredServer::start(&db, "checkout").await;
    let read = |name: &str| std::fs::read(secured.path(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("client.pem"), read("client.key")));
    let target = format!("https://localhost:{}", secured.server.address.port());
    let builder = || Ledger::builder([target.clone()]).tls(tls.clone());
    let ledger = builder()
        .bearer_token(secured.token.clone())
        .connect()
        .await
        .unwrap();
    ledger
        .create_offering(proto::CreateOfferingRequest {
            offering_id: "secured".into(),
            name: "Secured".into(),
            max_units: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let history = ledger.history("secured").await.unwrap();
    assert_eq!(history[0].actor, "checkout");

    let anonymous = builder()
        .deadline(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let refused = anonymous.get_offering("secured").await;
    assert!(
        matches!(&refused, Err(Error::Unauthenticated { message }) if message.contains("no bearer token")),
        "{refused:?}"
    );
}
