//! Upgrading a database that an earlier subledger built: its history keeps every row, reads
//! back as before (with what the new columns say about old rows), verifies, and new entries
//! follow on.

mod common;

use std::str::FromStr;

use common::{TestDb, assert_ledger_consistent, subscribe};
use sqlx::Connection;
use subledger::proto;

/// Applies only the first `count` migrations of `backend`, as an earlier release would have.
async fn migrate_as_release(db: &TestDb, count: usize) {
    let folder = match db.backend {
        common::Backend::Postgres => "migrations/postgres",
        common::Backend::Sqlite => "migrations/sqlite",
    };
    let earlier = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in files.iter().take(count) {
        std::fs::copy(file, earlier.path().join(file.file_name().unwrap())).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(earlier.path()).await.unwrap();
    match db.backend {
        common::Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&db.url).await.unwrap();
            migrator.run(&mut connection).await.unwrap();
        }
        common::Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
                .unwrap()
                .create_if_missing(true);
            let mut connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            migrator.run(&mut connection).await.unwrap();
        }
    }
}

/// A database of the first release (no actors) with an offering and two subscriptions in it,
/// written as that release wrote them.
async fn entries_recorded_before_actors_read_unknown(db: TestDb) {
    migrate_as_release(&db, 1).await;
    let now = match db.backend {
        common::Backend::Postgres => "now()",
        common::Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
    };
    for sql in [
        format!(
            "INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units, \
                investor_count, status, version, create_time, update_time) \
             VALUES ('old', 'Old deal', 100, 0, 7, 2, 1, 3, {now}, {now})"
        ),
        format!(
            "INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after, \
                offering_units_after, request_id, requested_units, expected_version, record_time) VALUES \
             ('old', 1, 1, '', 0, 0, 0, 'create-old', 100, 0, {now}), \
             ('old', 2, 2, 'alice', 3, 3, 3, 's1', 3, 0, {now}), \
             ('old', 3, 2, 'bob', 4, 4, 7, 's2', 4, 0, {now})"
        ),
        format!(
            "INSERT INTO investor_position (offering_id, investor_id, units, update_time) VALUES \
             ('old', 'alice', 3, {now}), ('old', 'bob', 4, {now})"
        ),
    ] {
        db.execute_sql(&sql).await.unwrap();
    }

    let server = db.start_server().await;
    let mut client = server.client().await;
    let before = common::full_history(&mut client, "old").await;
    assert_eq!(before.len(), 3, "no row lost");
    assert!(before.iter().all(|e| e.actor == "unknown"), "{before:?}");
    assert_eq!(before[2].offering_units_after, 7);

    // A retry of an old request is still recognised (its actor is unknown, so only an anonymous
    // caller is not that principal either: the request_id stays taken).
    let reused = client.subscribe(subscribe("old", "alice", 3, "s1")).await;
    assert_eq!(reused.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let next = client
        .subscribe(subscribe("old", "carol", 5, "s3"))
        .await
        .unwrap()
        .into_inner();
    let entry = next.entry.unwrap();
    assert_eq!((entry.sequence, entry.actor.as_str()), (4, "anonymous"));
    assert_ledger_consistent(&mut client, "old").await;
    let old_ones = client
        .list_history(proto::ListHistoryRequest {
            offering_id: "old".into(),
            actor: "unknown".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old_ones.entries.len(), 3);
}

backend_tests!(entries_recorded_before_actors_read_unknown);
