//! Upgrading a database that an earlier subledger built: its history keeps every row, reads
//! back as before (with what the new columns say about old rows), is hash-chained, verifies,
//! and new entries follow on.

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
    // The upgrade counted the two positions it found; carol's is the third. (No RPC shows the
    // count: a no-op UPDATE that matches only that count says it.)
    let counted = db
        .execute_sql(
            "UPDATE offering_head SET name = name WHERE offering_id = 'old' AND position_count = 3",
        )
        .await
        .unwrap();
    assert_eq!(
        counted, 1,
        "position_count after the upgrade and one new investor"
    );
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

/// More entries than the backfill hashes in one page, so that its paging is exercised.
const LONG_HISTORY_SUBSCRIPTIONS: i64 = 10_001;

/// A database of the release before the hash chain (migrations 1-3), written as that release
/// wrote it: actors, an amendment with its terms, and one long history. Opening it hashes every
/// entry, in the order and encoding a client recomputes, VerifyOffering passes, the append-only
/// trigger is in force again, and new entries chain on.
async fn history_recorded_before_the_chain_is_hashed_on_upgrade(db: TestDb) {
    migrate_as_release(&db, 3).await;
    let (now, series) = match db.backend {
        common::Backend::Postgres => ("now()", "SELECT k FROM generate_series(1, $N) AS k"),
        common::Backend::Sqlite => (
            "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
            "WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < $N) SELECT k FROM s",
        ),
    };
    let series = series.replace("$N", &LONG_HISTORY_SUBSCRIPTIONS.to_string());
    let n = LONG_HISTORY_SUBSCRIPTIONS;
    for sql in [
        format!(
            "INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units, \
                investor_count, status, version, create_time, update_time) VALUES \
             ('old', 'Old deal v2', 50, 0, 7, 2, 1, 4, {now}, {now}), \
             ('long', 'Long deal', 100000, 0, {n}, 1, 1, {}, {now}, {now})",
            n + 1
        ),
        format!(
            "INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after, \
                offering_units_after, request_id, requested_units, expected_version, record_time, actor, \
                before_name, before_max_units, before_max_units_per_investor, after_name, after_max_units, \
                after_max_units_per_investor) VALUES \
             ('old', 1, 1, '', 0, 0, 0, 'create-old', 100, 0, {now}, 'ops', NULL, NULL, NULL, 'Old deal', 100, 0), \
             ('old', 2, 2, 'alice', 3, 3, 3, 's1', 3, 0, {now}, 'checkout', NULL, NULL, NULL, NULL, NULL, NULL), \
             ('old', 3, 2, 'bob', 4, 4, 7, 's2', 4, 0, {now}, 'checkout', NULL, NULL, NULL, NULL, NULL, NULL), \
             ('old', 4, 7, '', 0, 0, 7, 'amend', 0, 3, {now}, 'ops', 'Old deal', 100, 0, 'Old deal v2', 50, 0), \
             ('long', 1, 1, '', 0, 0, 0, 'create-long', 100000, 0, {now}, 'ops', NULL, NULL, NULL, 'Long deal', 100000, 0)"
        ),
        format!(
            "INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after, \
                offering_units_after, request_id, requested_units, expected_version, record_time, actor) \
             SELECT 'long', k + 1, 2, 'ann', 1, k, k, 'r' || k, 1, 0, {now}, 'checkout' FROM ({series}) AS ks"
        ),
        format!(
            "INSERT INTO investor_position (offering_id, investor_id, units, update_time, first_sequence) VALUES \
             ('old', 'alice', 3, {now}, 2), ('old', 'bob', 4, {now}, 3), ('long', 'ann', {n}, {now}, 2)"
        ),
    ] {
        db.execute_sql(&sql).await.unwrap();
    }

    let server = db.start_server().await;
    let mut client = server.client().await;
    for offering_id in ["old", "long"] {
        let entries = assert_ledger_consistent(&mut client, offering_id).await;
        let mut previous = [0u8; 32];
        for entry in &entries {
            let hash = common::recompute_entry_hash(&previous, entry);
            assert_eq!(
                entry.entry_hash, hash,
                "{offering_id} sequence {}",
                entry.sequence
            );
            previous = hash;
        }
    }
    let old = common::full_history(&mut client, "old").await;
    assert_eq!(old.len(), 4, "no row lost");
    assert_eq!(
        (
            old[3].actor.as_str(),
            old[3].terms_after.as_ref().unwrap().max_units
        ),
        ("ops", 50)
    );
    let long = common::full_history(&mut client, "long").await;
    assert_eq!(long.len() as i64, n + 1, "no row lost");

    // The backfill got past the append-only trigger in its own transaction only.
    let rewrite = db
        .execute_sql(
            "UPDATE history_entry SET units_delta = 9 WHERE offering_id = 'old' AND sequence = 2",
        )
        .await;
    assert!(rewrite.unwrap_err().contains("append-only"));
    // New entries chain on from the backfilled head.
    let next = client
        .subscribe(subscribe("old", "carol", 5, "s3"))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(next.sequence, 5);
    assert_eq!(
        next.entry_hash,
        common::recompute_entry_hash(&previous_hash(&old), &next)
    );
    let entries = assert_ledger_consistent(&mut client, "old").await;
    assert_eq!(entries.len(), 5);
    // A second start finds nothing left to hash.
    drop(server);
    let server = db.start_server().await;
    assert_ledger_consistent(&mut server.client().await, "long").await;
}

fn previous_hash(entries: &[proto::HistoryEntry]) -> [u8; 32] {
    entries
        .last()
        .unwrap()
        .entry_hash
        .clone()
        .try_into()
        .unwrap()
}

backend_tests!(
    entries_recorded_before_actors_read_unknown,
    history_recorded_before_the_chain_is_hashed_on_upgrade,
);
