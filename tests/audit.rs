//! `subledger verify` and `subledger export`, run as an auditor runs them: the real binary,
//! reading the database directly (no server) or an export file with no database at all.

mod common;

use std::path::Path;
use std::process::Output;

use common::tamper::{PgBypass, UNITS_REWRITTEN, rehash_from_the_history, tamper};
use common::{Client, TestDb, offering, subscribe};
use subledger::proto;

fn subledger(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_subledger"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run subledger")
}

/// Exit status, stdout.
fn run(args: &[&str]) -> (i32, String) {
    let output = subledger(args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let code = output.status.code().expect("an exit status");
    assert!(
        code != 2,
        "subledger {args:?} could not run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (code, stdout)
}

/// The last line: the summary.
fn summary(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or_default()
}

/// "deal" (alice 10, bob 5, carol 3: sequences 2-4) and "other" (one subscription).
async fn two_offerings(client: &mut Client) {
    for (id, investors) in [
        ("deal", &[("alice", 10), ("bob", 5), ("carol", 3)][..]),
        ("other", &[("dave", 1)][..]),
    ] {
        client.create_offering(offering(id, 100, 0)).await.unwrap();
        for (investor, units) in investors {
            client
                .subscribe(subscribe(id, investor, *units, &format!("{id}-{investor}")))
                .await
                .unwrap();
        }
    }
}

/// GetDigest's reply as grpcurl prints it (pretty-printed proto3 JSON), appended to `path`.
async fn keep_digest(client: &mut Client, offering_id: &str, path: &Path) {
    use base64::Engine as _;
    let digest = client
        .get_digest(proto::GetDigestRequest {
            offering_id: offering_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let time = digest.record_time.unwrap();
    let record_time = chrono::DateTime::from_timestamp(time.seconds, time.nanos as u32)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let text = format!(
        "{{\n  \"offeringId\": \"{}\",\n  \"sequence\": \"{}\",\n  \"entryHash\": \"{}\",\n  \"recordTime\": \"{record_time}\"\n}}\n",
        digest.offering_id,
        digest.sequence,
        base64::engine::general_purpose::STANDARD.encode(&digest.entry_hash),
    );
    let mut kept = std::fs::read_to_string(path).unwrap_or_default();
    kept.push_str(&text);
    std::fs::write(path, kept).unwrap();
}

async fn the_database_verifies_offline_against_kept_digests(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    two_offerings(&mut client).await;
    let folder = tempfile::tempdir().unwrap();
    let digests = folder.path().join("digests.json");
    keep_digest(&mut client, "deal", &digests).await;
    keep_digest(&mut client, "other", &digests).await;
    let digests = digests.to_str().unwrap();

    let (code, out) = run(&["verify", "--database-url", &db.url, "--digests", digests]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        summary(&out),
        "OK: 2 offerings, 6 entries, 2 digests checked; 0 offerings failed, 0 digests not matched"
    );

    // Edited, then hashed again: the chain alone is whole, the digest is not.
    tamper(&db, PgBypass::DisableTrigger, &UNITS_REWRITTEN).await;
    rehash_from_the_history(&db, &mut client, "deal").await;
    let (code, out) = run(&["verify", "--database-url", &db.url]);
    assert_eq!(code, 0, "without a digest nothing can tell: {out}");
    let (code, out) = run(&["verify", "--database-url", &db.url, "--digests", digests]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line for the failed offering, then the summary: {out}"
    );
    assert!(
        lines[0].starts_with("FAILED deal: digest at sequence 4"),
        "{out}"
    );
    assert!(summary(&out).starts_with("FAILED: 2 offerings"), "{out}");

    // Only the offerings named, against their digests.
    let (code, out) = run(&[
        "verify",
        "--database-url",
        &db.url,
        "--offering",
        "other",
        "--digests",
        digests,
    ]);
    assert_eq!(code, 0, "{out}");
    // A digest of an offering that is no longer there (here: never was) fails.
    let gone = folder.path().join("gone.json");
    std::fs::write(
        &gone,
        format!(
            "{{\"offering_id\":\"gone\",\"sequence\":2,\"entry_hash\":\"{}\"}}\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let (code, out) = run(&[
        "verify",
        "--database-url",
        &db.url,
        "--digests",
        gone.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAILED gone: a digest at sequence 2 names it but the offering does not exist"
        ),
        "{out}"
    );
}

async fn an_export_verifies_alone_and_fails_with_one_byte_changed(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    two_offerings(&mut client).await;
    let folder = tempfile::tempdir().unwrap();
    let digest = folder.path().join("deal.digest.json");
    keep_digest(&mut client, "deal", &digest).await;
    let export = folder.path().join("deal.jsonl");
    let export_path = export.to_str().unwrap();
    let digest = digest.to_str().unwrap();

    let output = subledger(&[
        "export",
        "--database-url",
        &db.url,
        "--offering",
        "deal",
        "--output",
        export_path,
    ]);
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&export).unwrap();
    // The head, four entries, three positions.
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(
        text.starts_with("{\"offering\":{\"offering_id\":\"deal\""),
        "{text}"
    );
    // The server is not needed any more, nor the database.
    server.stop().await;
    drop(db);

    let (code, out) = run(&["verify", "--export", export_path, "--digest", digest]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        summary(&out),
        "OK: 1 offering, 4 entries, 1 digest checked; 0 offerings failed, 0 digests not matched"
    );

    // One byte: carol's 3 units become 2 in her entry.
    let changed = text.replacen("\"units_delta\":3,", "\"units_delta\":2,", 1);
    assert_eq!(changed.len(), text.len());
    assert_ne!(changed, text);
    std::fs::write(&export, &changed).unwrap();
    let (code, out) = run(&["verify", "--export", export_path]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("FAILED deal: sequence 4: entry_hash"),
        "the chain breaks where the byte changed: {out}"
    );

    // A file that is not an export is an error (2), not a verdict.
    std::fs::write(&export, "{\"entry\":{}}\n").unwrap();
    let output = subledger(&["verify", "--export", export_path]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

backend_tests!(
    the_database_verifies_offline_against_kept_digests,
    an_export_verifies_alone_and_fails_with_one_byte_changed,
);

#[test]
fn verify_never_creates_a_database() {
    let folder = tempfile::tempdir().unwrap();
    let output = subledger(&["verify", "--data-dir", folder.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no SQLite database at"),
        "{output:?}"
    );
    assert!(std::fs::read_dir(folder.path()).unwrap().next().is_none());
}
