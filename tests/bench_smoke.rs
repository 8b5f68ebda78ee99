//! A few seconds of `subledger bench` per scenario against a real server: it runs, reports JSON,
//! and its closing VerifyOffering passes. A smoke test of the tool, not a timing.

mod common;

use common::TestDb;

async fn bench_scenarios_run_and_verify(db: TestDb) {
    let server = db.start_server().await;
    let target = format!("http://{}", server.address);
    for scenario in ["hot", "spread", "mixed", "sellout", "watch"] {
        let watchers = if scenario == "watch" { "50" } else { "0" };
        let args = [
            "bench",
            "--target",
            &target,
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
