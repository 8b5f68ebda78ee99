//! The real binary: kill -9 under load loses no acknowledged write, SIGTERM shuts down cleanly,
//! and start-up failures are one clear line and a non-zero exit.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{BINARY, START_WAIT, ServerProcess, free_address};
use common::{Client, TestDb, assert_ledger_consistent, full_history, offering, subscribe};
use tokio::process::Command;

async fn acknowledged_subscribes_survive_kill_9(db: TestDb) {
    const LOADERS: usize = 16;
    const ACKS_BEFORE_KILL: usize = 300;
    let address = free_address();
    let mut server = ServerProcess::start(&db.url, address).await;
    let client = server.client().await;
    client
        .clone()
        .create_offering(offering("deal", 1_000_000_000, 0))
        .await
        .unwrap();

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let loaders: Vec<_> = (0..LOADERS)
        .map(|loader| {
            let mut client = client.clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for k in 0.. {
                    let request_id = format!("load-{loader}-{k}");
                    match client
                        .subscribe(subscribe(
                            "deal",
                            &format!("investor-{loader}"),
                            1,
                            &request_id,
                        ))
                        .await
                    {
                        Ok(_) => acknowledged.lock().unwrap().push(request_id),
                        Err(_) => return, // the server died under us
                    }
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < ACKS_BEFORE_KILL {
        assert!(tokio::time::Instant::now() < deadline, "load too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.signal("-KILL");
    server.child.wait().await.unwrap();
    for loader in loaders {
        loader.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!(
        "{} subscribes acknowledged before kill -9",
        acknowledged.len()
    );

    let mut restarted = ServerProcess::start(&db.url, address).await;
    let mut client = restarted.client().await;
    let recorded: std::collections::HashSet<String> = full_history(&mut client, "deal")
        .await
        .into_iter()
        .map(|e| e.request_id)
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not in history: {lost:?}");
    assert_ledger_consistent(&mut client, "deal").await;
    // Retrying an acknowledged request after the crash is a replay.
    let (loader, k) = acknowledged[0]
        .trim_start_matches("load-")
        .split_once('-')
        .unwrap();
    let retry = client
        .subscribe(subscribe(
            "deal",
            &format!("investor-{loader}"),
            1,
            &format!("load-{loader}-{k}"),
        ))
        .await;
    assert!(retry.unwrap().into_inner().replayed);

    // SIGTERM: a graceful shutdown, exit status 0.
    restarted.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), restarted.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Two server processes on one database (for SQLite: one file, serialized by its file lock),
/// started together (so migrating together), loaded together: caps hold and the ledger verifies.
async fn two_processes_on_one_database_stay_exact(db: TestDb) {
    const CALLS: usize = 300;
    let servers = [
        ServerProcess::start(&db.url, free_address()).await,
        ServerProcess::start(&db.url, free_address()).await,
    ];
    let clients = [servers[0].client().await, servers[1].client().await];
    clients[0]
        .clone()
        .create_offering(offering("shared", 500, 25))
        .await
        .unwrap();
    let calls = (0..CALLS).map(|k| {
        let mut client = clients[k % 2].clone();
        tokio::spawn(async move {
            let investor = format!("investor-{}", k % 30);
            client
                .subscribe(subscribe(
                    "shared",
                    &investor,
                    1 + (k % 5) as i64,
                    &format!("r-{k}"),
                ))
                .await
        })
    });
    let mut accepted = 0;
    for call in futures::future::join_all(calls).await {
        match call.unwrap() {
            Ok(reply) => accepted += reply.into_inner().entry.unwrap().units_delta,
            Err(status) => assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}"),
        }
    }
    let mut client = clients[1].clone();
    let entries = assert_ledger_consistent(&mut client, "shared").await;
    assert_eq!(entries.last().unwrap().offering_units_after, accepted);
    assert!((400..=500).contains(&accepted), "sold {accepted} of 500");
}

backend_tests!(
    acknowledged_subscribes_survive_kill_9,
    two_processes_on_one_database_stay_exact
);

/// Runs the binary to completion; returns its exit success and stderr's non-empty lines.
async fn run_binary(args: &[&str]) -> (bool, Vec<String>) {
    let output = tokio::time::timeout(
        START_WAIT,
        Command::new(BINARY)
            .args(args)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await
    .expect("the binary exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (
        output.status.success(),
        stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

#[track_caller]
fn assert_fails_with_one_line(outcome: (bool, Vec<String>), expected: &str) {
    let (success, lines) = outcome;
    assert!(!success, "should fail");
    assert_eq!(lines.len(), 1, "one error line, got {lines:?}");
    assert!(
        lines[0].starts_with("subledger: error:") && lines[0].contains(expected),
        "{:?} should say {expected:?}",
        lines[0]
    );
}

#[tokio::test]
async fn startup_failures_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails_with_one_line(
        run_binary(&["serve", "--database-url", "mysql://localhost/x"]).await,
        "neither postgres",
    );
    assert_fails_with_one_line(
        run_binary(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/x",
        ])
        .await,
        "cannot connect to PostgreSQL at 127.0.0.1:1/x",
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let under_file = file.join("data");
    assert_fails_with_one_line(
        run_binary(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            under_file.to_str().unwrap(),
        ])
        .await,
        "cannot create data folder",
    );
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x42u8; 8192]).unwrap();
    let corrupt_url = format!("sqlite://{}", corrupt.display());
    assert_fails_with_one_line(
        run_binary(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &corrupt_url,
        ])
        .await,
        "cannot open SQLite database",
    );
    // Secure by default: no anonymous service on a network address.
    let (_, lines) = run_binary(&["serve", "--listen", "0.0.0.0:0"]).await;
    assert_fails_with_one_line(
        run_binary(&["serve", "--listen", "0.0.0.0:0"]).await,
        "--auth-file",
    );
    assert!(lines[0].contains("--allow-anonymous"), "{lines:?}");
    let broken_auth = dir.path().join("auth.toml");
    std::fs::write(&broken_auth, "[[principal]]\nname = \"x\"\n").unwrap();
    assert_fails_with_one_line(
        run_binary(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth-file",
            broken_auth.to_str().unwrap(),
        ])
        .await,
        "missing field `roles`",
    );
    assert_fails_with_one_line(
        run_binary(&["serve", "--listen", "256.0.0.1:1"]).await,
        "--listen \"256.0.0.1:1\": not HOST:PORT, or the host does not resolve",
    );
    // Flag errors are clap's: the error, then a hint to --help.
    let (success, lines) = run_binary(&["serve", "--max-watch-streams", "lots"]).await;
    assert!(
        !success && lines[0].contains("invalid value 'lots' for '--max-watch-streams"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data");
    let (success, lines) = run_binary(&["migrate", "--data-dir", data_dir.to_str().unwrap()]).await;
    assert!(success, "{lines:?}");
    assert!(data_dir.join("subledger.db").exists());
    // Twice is fine: nothing left to apply.
    assert!(
        run_binary(&["migrate", "--data-dir", data_dir.to_str().unwrap()])
            .await
            .0
    );
}

/// `subledger serve` on SQLite in `dir`, logging JSON at debug to a pipe that
/// [`stop_and_read_json_logs`] reads.
fn serve_with_json_logs(dir: &std::path::Path) -> ServerProcess {
    let address = free_address();
    let child = Command::new(BINARY)
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            &address.to_string(),
        ])
        .args(["--data-dir", dir.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "subledger=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    ServerProcess { child, address }
}

/// Stops the server with SIGTERM and returns every line it logged, each parsed as JSON.
async fn stop_and_read_json_logs(server: ServerProcess) -> Vec<serde_json::Value> {
    server.signal("-TERM");
    let output = tokio::time::timeout(Duration::from_secs(15), server.child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"))
        })
        .collect()
}

#[tokio::test]
async fn json_logs_carry_one_line_per_call_with_ids_code_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_json_logs(dir.path());
    let mut client = server.client().await;
    client
        .create_offering(offering("logged", 10, 0))
        .await
        .unwrap();
    client
        .subscribe(subscribe("logged", "alice", 4, "req-ok"))
        .await
        .unwrap();
    client
        .subscribe(subscribe("logged", "bob", 7, "req-over"))
        .await
        .unwrap_err();
    let lines = stop_and_read_json_logs(server).await;
    let call = |request_id: &str| {
        lines
            .iter()
            .find(|l| l["span"]["request_id"] == request_id && l["span"]["method"] == "Subscribe")
            .unwrap_or_else(|| panic!("no log line for {request_id}"))
            .clone()
    };
    let ok = call("req-ok");
    assert_eq!(
        (ok["level"].as_str(), ok["fields"]["code"].as_str()),
        (Some("DEBUG"), Some("Ok")),
        "{ok}"
    );
    assert_eq!(ok["span"]["offering_id"], "logged");
    assert!(ok["fields"]["latency_us"].as_u64().is_some(), "{ok}");
    let refused = call("req-over");
    assert_eq!(
        (
            refused["level"].as_str(),
            refused["fields"]["code"].as_str()
        ),
        (Some("INFO"), Some("FailedPrecondition")),
        "{refused}"
    );
}

/// A caller's wrong digest is logged at INFO naming the caller, never as an alarm; a stored
/// history that does not hold is an ERROR, once per offering per minute however often it is
/// verified.
#[tokio::test]
async fn verification_alarms_are_for_stored_history_and_once_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_json_logs(dir.path());
    let mut client = server.client().await;
    client
        .create_offering(offering("watched", 10, 0))
        .await
        .unwrap();
    client
        .subscribe(subscribe("watched", "alice", 4, "s-1"))
        .await
        .unwrap();
    let verify = |digest: Option<subledger::proto::Digest>| {
        let mut client = client.clone();
        async move {
            client
                .verify_offering(subledger::proto::VerifyOfferingRequest {
                    offering_id: "watched".into(),
                    digest,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let forged = subledger::proto::Digest {
        offering_id: "watched".into(),
        sequence: 2,
        entry_hash: vec![0; 32],
        record_time: None,
        ..Default::default()
    };
    for _ in 0..3 {
        assert_eq!(verify(Some(forged.clone())).await.digest_ok, Some(false));
    }
    // An edit of the stored head, as by someone with the database's credentials.
    let mut sqlite = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        dir.path().join("subledger.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE offering_head SET subscribed_units = 5 WHERE offering_id = 'watched'")
        .execute(&mut sqlite)
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(!verify(None).await.ok);
    }
    let lines = stop_and_read_json_logs(server).await;
    let with = |level: &str, message: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["level"] == level && l["fields"]["message"].as_str() == Some(message))
            .cloned()
            .collect()
    };
    let digests = with(
        "INFO",
        "a caller's digest does not match the stored history",
    );
    assert_eq!(digests.len(), 3, "{lines:?}");
    assert_eq!(digests[0]["fields"]["principal"], "anonymous");
    let alarms = with(
        "ERROR",
        "offering failed verification: its stored history does not hold",
    );
    assert_eq!(alarms.len(), 1, "one alarm a minute: {alarms:?}");
    assert_eq!(alarms[0]["fields"]["offering_id"], "watched");
    let errors = lines.iter().filter(|l| l["level"] == "ERROR").count();
    assert_eq!(errors, 1, "no other ERROR line: {lines:?}");
}

/// `subledger token new` output: the token on its own line, then the block for the auth file.
fn new_token(name: &str, role: &str) -> (String, String) {
    let output = std::process::Command::new(BINARY)
        .args(["token", "new", "--name", name, "--role", role])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("# token: "))
        .expect("a token line")
        .to_owned();
    let block: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !block.contains(&token),
        "the auth file block holds only the digest"
    );
    (token, block)
}

/// SIGHUP re-reads the auth file: a token added works without a restart, one removed stops
/// working, and a file that does not parse leaves the principals as they were (and says why).
#[tokio::test]
async fn sighup_reloads_the_auth_file_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.toml");
    let (old_token, old_block) = new_token("old", "operator");
    let (new_token, new_block) = new_token("new", "reader");
    std::fs::write(&auth_file, &old_block).unwrap();
    let address = free_address();
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            &address.to_string(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--auth-file",
            auth_file.to_str().unwrap(),
        ])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let collected = log.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            collected
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    let server = ServerProcess { child, address };
    let mut client = server.client().await;
    let list = |token: &str| {
        let mut request = tonic::Request::new(subledger::proto::ListOfferingsRequest::default());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    /// Waits for a token's answer to become `allowed` (the reload is asynchronous to the signal).
    async fn settles(
        client: &mut Client,
        request: impl Fn() -> tonic::Request<subledger::proto::ListOfferingsRequest>,
        allowed: bool,
    ) {
        common::eventually("the reloaded auth file", Duration::from_secs(5), || {
            let mut client = client.clone();
            let request = request();
            async move {
                let result = client.list_offerings(request).await;
                match (&result, allowed) {
                    (Ok(_), true) => Ok(()),
                    (Err(status), false) if status.code() == tonic::Code::Unauthenticated => Ok(()),
                    _ => Err(result.map(|_| ())),
                }
            }
        })
        .await
    }
    settles(&mut client, || list(&old_token), true).await;
    settles(&mut client, || list(&new_token), false).await;

    std::fs::write(&auth_file, format!("{old_block}{new_block}")).unwrap();
    server.signal("-HUP");
    settles(&mut client, || list(&new_token), true).await;

    std::fs::write(&auth_file, &new_block).unwrap();
    server.signal("-HUP");
    settles(&mut client, || list(&old_token), false).await;

    std::fs::write(&auth_file, "[[principal]\nthis is not toml").unwrap();
    server.signal("-HUP");
    common::eventually(
        "a log line about the broken file",
        Duration::from_secs(5),
        || async {
            match log.lock().unwrap().contains("auth file not reloaded") {
                true => Ok(()),
                false => Err("not yet"),
            }
        },
    )
    .await;
    settles(&mut client, || list(&new_token), true).await;
    settles(&mut client, || list(&old_token), false).await;
    assert!(
        !log.lock().unwrap().contains(&new_token),
        "a token never appears in the log"
    );
}

/// `--listen localhost:PORT`, as the README dials it: served on every address the name
/// resolves to, and allowed without an auth file because each of them is loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_a_host_name_and_serves_every_address_it_resolves_to() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let child = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            &format!("localhost:{}", address.port()),
        ])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let resolved: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host(("localhost", address.port()))
            .await
            .unwrap()
            .collect();
    assert!(!resolved.is_empty());
    let mut server = ServerProcess { child, address };
    for each in resolved {
        server.address = each;
        let mut client = server.client().await;
        client
            .create_offering(offering(&format!("on-{}", each.port()), 10, 0))
            .await
            .map(|_| ())
            .or_else(|status| match status.code() {
                // The second address reaches the same database.
                tonic::Code::AlreadyExists => Ok(()),
                _ => Err(status),
            })
            .unwrap();
    }
    server.signal("-TERM");
}
