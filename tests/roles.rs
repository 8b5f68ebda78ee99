//! Least privilege (docs/operations.md, "Roles"): `subledger migrate --grant-to ROLE` run as the
//! owner gives the runtime role exactly what serving needs, `serve --no-migrate` runs as it, and
//! the runtime role can neither rewrite the history nor switch off what protects it.
//!
//! The ledger's other tests run as the runtime role too with SUBLEDGER_TEST_SERVE_AS=runtime
//! (tests/common/roles.rs; .ci/run does so for the ledger's tests).

mod common;

use std::process::Output;

use common::process::{BINARY, ServerProcess, free_address};
use common::roles::RUNTIME_ROLE;
use common::{Backend, TestDb, assert_ledger_consistent, offering, subscribe};
use sqlx::Connection;
use tokio::process::Command;

/// SQLSTATE insufficient_privilege.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

async fn subledger(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run subledger")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `subledger migrate --grant-to` as the owner, through the binary.
async fn migrate_granting_runtime_role(db: &TestDb) {
    common::roles::ensure_runtime_role(&db.url).await;
    let output = subledger(&[
        "migrate",
        "--database-url",
        &db.url,
        "--grant-to",
        RUNTIME_ROLE,
    ])
    .await;
    assert!(
        output.status.success(),
        "migrate --grant-to: {}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runtime_role_cannot_rewrite_or_unprotect_the_history() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    migrate_granting_runtime_role(&db).await;
    // Some history to aim at, written by a server serving as the runtime role.
    let runtime_url = db.runtime_url();
    let server = ServerProcess::start_with(&runtime_url, free_address(), &["--no-migrate"]).await;
    let mut client = server.client().await;
    client
        .create_offering(offering("o1", 100, 0))
        .await
        .expect("CreateOffering");
    client
        .subscribe(subscribe("o1", "alice", 5, "s1"))
        .await
        .expect("Subscribe");
    assert_ledger_consistent(&mut client, "o1").await;

    let mut runtime = sqlx::PgConnection::connect(&runtime_url)
        .await
        .expect("connect as the runtime role");
    for sql in [
        "UPDATE history_entry SET units_delta = 50 WHERE offering_id = 'o1'",
        "DELETE FROM history_entry WHERE offering_id = 'o1'",
        "TRUNCATE history_entry",
        "ALTER TABLE history_entry DISABLE TRIGGER history_entry_no_update_delete",
        "ALTER TABLE history_entry DISABLE TRIGGER ALL",
        "SET session_replication_role = replica",
        "DROP TABLE history_entry",
        "DELETE FROM offering_head WHERE offering_id = 'o1'",
        "DELETE FROM investor_position WHERE offering_id = 'o1'",
        "DELETE FROM _sqlx_migrations",
        "CREATE TABLE shadow (id int)",
    ] {
        let error = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut runtime)
            .await
            .expect_err(sql);
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(
            code.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql} must be refused for want of privilege, got {error}"
        );
    }
    // Still whole, as the runtime role's server sees it.
    assert_eq!(assert_ledger_consistent(&mut client, "o1").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_to_refuses_a_missing_role_and_a_superuser() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    for (role, why) in [
        ("subledger_no_such_role", "no such role"),
        ("postgres", "superuser"),
    ] {
        let output = subledger(&["migrate", "--database-url", &db.url, "--grant-to", role]).await;
        assert_eq!(output.status.code(), Some(2), "--grant-to {role}");
        assert!(
            stderr(&output).contains(why),
            "--grant-to {role}: {}",
            stderr(&output)
        );
    }
}

/// `serve --no-migrate` on a database that is not exactly this binary's migration: refused,
/// naming `subledger migrate`; then served once migrated.
async fn no_migrate_refuses_what_it_would_have_to_migrate(db: TestDb) {
    let serve_no_migrate = || async {
        subledger(&[
            "serve",
            "--no-migrate",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--data-dir",
            "/nonexistent",
        ])
        .await
    };
    let refused = |output: Output, why: &str| {
        assert_eq!(output.status.code(), Some(2));
        let text = stderr(&output);
        assert!(
            text.contains("subledger migrate"),
            "names the command: {text}"
        );
        assert!(text.contains(why), "says why ({why}): {text}");
    };
    if db.backend == Backend::Postgres {
        refused(serve_no_migrate().await, "_sqlx_migrations");
    } else {
        // No file at all: nothing to check.
        refused(serve_no_migrate().await, "no SQLite database");
    }
    db.migrate().await;
    db.execute_sql("UPDATE _sqlx_migrations SET checksum = substr(checksum, 2) WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .await
        .expect("tamper with the bookkeeping");
    refused(serve_no_migrate().await, "different file");
    db.execute_sql(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .await
    .expect("tamper with the bookkeeping");
    refused(serve_no_migrate().await, "is not applied");
}

/// Once migrated, `serve --no-migrate` serves, and sends no migration of its own.
async fn no_migrate_serves_a_migrated_database(db: TestDb) {
    db.migrate().await;
    let server = ServerProcess::start_with(&db.url, free_address(), &["--no-migrate"]).await;
    let mut client = server.client().await;
    client
        .create_offering(offering("o1", 10, 0))
        .await
        .expect("CreateOffering");
    client
        .subscribe(subscribe("o1", "bob", 3, "s1"))
        .await
        .expect("Subscribe");
    assert_ledger_consistent(&mut client, "o1").await;
}

backend_tests!(
    no_migrate_refuses_what_it_would_have_to_migrate,
    no_migrate_serves_a_migrated_database,
);

/// docs/operations.md's table of grants is RUNTIME_GRANTS, row for row.
#[test]
fn the_operations_guide_lists_exactly_the_grants() {
    let doc = std::fs::read_to_string("docs/operations.md").expect("read docs/operations.md");
    let rows: Vec<String> = doc
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter(|line| line.split('|').nth(2).is_some_and(|p| p.contains("SELECT")))
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = subledger::store::RUNTIME_GRANTS
        .iter()
        .map(|grant| {
            format!(
                "| `{}` | {} | {} |",
                grant.table, grant.privileges, grant.why
            )
        })
        .collect();
    assert_eq!(
        rows, expected,
        "docs/operations.md's grants table against RUNTIME_GRANTS"
    );
}

/// The test helper that turns the owner's URL into the runtime role's.
#[test]
fn the_user_of_a_url_is_replaced() {
    assert_eq!(
        common::roles::as_role(
            "postgres://postgres:pw@127.0.0.1:5432/db?sslmode=disable",
            "app"
        ),
        "postgres://app@127.0.0.1:5432/db?sslmode=disable"
    );
    assert_eq!(
        common::roles::as_role("postgres://h1,h2/db", "app"),
        "postgres://app@h1,h2/db"
    );
}
