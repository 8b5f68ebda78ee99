//! A few seconds of `subledger bench` per scenario against real servers: it runs, reports JSON,
//! and its closing VerifyOffering passes; what it left on the servers is then read back through
//! subledger-client, as a user would. A smoke test of the tool, not a timing.

mod common;

use common::TestDb;
use subledger_client::{Ledger, proto};

/// Every offering on the server, through the client.
async fn all_offerings(ledger: &Ledger) -> Vec<proto::Offering> {
    let mut offerings = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ledger
            .list_offerings(proto::ListOfferingsRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .expect("ListOfferings");
        offerings.extend(page.offerings);
        if page.next_page_token.is_empty() {
            return offerings;
        }
        page_token = page.next_page_token;
    }
}

async fn bench_scenarios_run_and_verify(db: TestDb) {
    let replicas = [db.start_server().await, db.start_server().await];
    let [first, second] = replicas.each_ref().map(|r| format!("http://{}", r.address));
    for scenario in ["hot", "spread", "mixed", "sellout", "watch"] {
        let watchers = if scenario == "watch" { "50" } else { "0" };
        // Two replicas as one comma-separated --target, or as two, or one replica alone.
        let both = format!("{first},{second}");
        let targets = match scenario {
            "hot" => vec!["--target", &both],
            "spread" => vec!["--target", &first, "--target", &second],
            _ => vec!["--target", &first],
        };
        let args = [
            "bench",
            "--scenario",
            scenario,
            "--concurrency",
            "16",
            "--requests",
            "400",
            "--offerings",
            "20",
            "--sellout-units",
            "150",
            "--watchers",
            watchers,
            "--json",
        ];
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_subledger"))
            .args(args)
            .args(&targets)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "bench {scenario}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON report");
        assert_eq!(report["calls"], 400, "{report}");
        let expected_targets = targets.len() / 2 + usize::from(scenario == "hot");
        assert_eq!(
            report["targets"].as_array().unwrap().len(),
            expected_targets,
            "{report}"
        );
        assert_eq!(report["verify_failures"].as_array().unwrap().len(), 0);
        let codes = report["codes"].as_object().unwrap();
        match scenario {
            "watch" => {
                assert_eq!(codes.get("Ok").and_then(|n| n.as_u64()), Some(400));
                let watch = &report["watch"];
                assert_eq!(watch["watchers"], 50, "{report}");
                assert_eq!(watch["mismatches"], 0, "{report}");
                assert_eq!(watch["entries_delivered"], watch["entries_expected"]);
            }
            "hot" | "spread" => assert_eq!(
                codes.get("Ok").and_then(|n| n.as_u64()),
                Some(400),
                "{report}"
            ),
            // 150 units for 400 one-unit calls: sold out exactly, the rest refused.
            "sellout" => {
                assert_eq!(
                    report["sold_units"],
                    serde_json::json!([150, 150]),
                    "{report}"
                );
                assert_eq!(
                    codes.get("FailedPrecondition").and_then(|n| n.as_u64()),
                    Some(250),
                    "{report}"
                );
            }
            _ => assert!(
                codes
                    .keys()
                    .all(|code| code == "Ok" || code == "FailedPrecondition"),
                "{report}"
            ),
        }
    }
    // Read back through the client what the runs left: one hot, 20 spread, 20 mixed, one
    // sellout and 20 watch offerings, the sellout one sold exactly to its cap, the watch ones
    // finalized, and the hot one holding the 400 calls' entries after its creation.
    let ledger = Ledger::builder([second]).build().unwrap();
    let offerings = all_offerings(&ledger).await;
    let named = |scenario: &str| -> Vec<&proto::Offering> {
        offerings
            .iter()
            .filter(|o| o.name.starts_with(&format!("bench {scenario} ")))
            .collect()
    };
    assert_eq!(
        [
            named("Hot").len(),
            named("Spread").len(),
            named("Mixed").len(),
            named("Sellout").len(),
            named("Watch").len(),
        ],
        [1, 20, 20, 1, 20]
    );
    let sellout = named("Sellout")[0];
    assert_eq!((sellout.subscribed_units, sellout.max_units), (150, 150));
    assert!(
        named("Watch")
            .iter()
            .all(|o| o.status() == proto::OfferingStatus::Finalized)
    );
    let hot = named("Hot")[0];
    assert_eq!(ledger.history(&hot.offering_id).await.unwrap().len(), 401);
}

backend_tests!(bench_scenarios_run_and_verify);

/// `subledger bench` against a secured server: mutual TLS, a client certificate and a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_over_mutual_tls_with_a_token() {
    use common::tls::SecuredServer;

    let db = TestDb::new(common::Backend::Sqlite).await.unwrap();
    let secured = SecuredServer::start(&db, "bench").await;
    let (server, token) = (&secured.server, &secured.token);
    let path = |name: &str| secured.path(name);
    let target = format!("https://localhost:{}", server.address.port());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_subledger"))
        .args([
            "bench",
            "--target",
            &target,
            "--scenario",
            "hot",
            "--concurrency",
            "8",
            "--requests",
            "200",
            "--json",
            "--tls-ca",
            &path("ca.pem"),
            "--tls-cert",
            &path("client.pem"),
            "--tls-key",
            &path("client.key"),
        ])
        .env("SUBLEDGER_TOKEN", token)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["codes"]["Ok"], 200, "{report}");
    // The same credentials through the client: the calls were recorded as the token's principal.
    let read = |name: &str| std::fs::read(path(name)).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
        .identity(tonic::transport::Identity::from_pem(
            read("client.pem"),
            read("client.key"),
        ));
    let ledger = Ledger::builder([target.clone()])
        .tls(tls)
        .bearer_token(token.clone())
        .build()
        .unwrap();
    let offerings = all_offerings(&ledger).await;
    assert_eq!(offerings.len(), 1);
    let history = ledger.history(&offerings[0].offering_id).await.unwrap();
    assert_eq!(history.len(), 201);
    assert!(history.iter().all(|entry| entry.actor == "bench"));
    // Without the token the same certificate names no principal.
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_subledger"))
        .args([
            "bench",
            "--target",
            &target,
            "--requests",
            "10",
            "--json",
            "--tls-ca",
            &path("ca.pem"),
            "--tls-cert",
            &path("client.pem"),
            "--tls-key",
            &path("client.key"),
        ])
        .env_remove("SUBLEDGER_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no bearer token was sent"), "{stderr}");
}
