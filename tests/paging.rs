//! Paging through 50,000 offerings: every offering exactly once, in order, and (SQLite) every page
//! a seek on the primary key rather than a scan from the start, so paging through everything stays
//! linear.

mod common;

use std::collections::HashSet;

use common::{Backend, TestDb};
use sqlx::Connection;
use subledger::proto;

const OFFERINGS: i64 = 50_000;

async fn every_offering_once_in_order_over_50_000(db: TestDb) {
    let server = db.start_server().await;
    let (series, now) = match db.backend {
        Backend::Postgres => (
            format!("SELECT g AS n FROM generate_series(1, {OFFERINGS}) AS g"),
            "now()",
        ),
        Backend::Sqlite => (
            format!(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {OFFERINGS}) SELECT n FROM g"
            ),
            "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
        ),
    };
    db.execute_sql(&format!(
        "INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units, \
            investor_count, status, version, create_time, update_time) \
         SELECT 'o-' || n, 'paged', 10, 0, 0, 0, 1, 1, {now}, {now} FROM ({series}) AS s"
    ))
    .await
    .unwrap();
    let mut client = server.client().await;
    let (mut seen, mut last, mut page_token, mut pages) =
        (HashSet::new(), String::new(), String::new(), 0);
    loop {
        let page = client
            .list_offerings(proto::ListOfferingsRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for offering in page.offerings {
            assert!(offering.offering_id > last, "in offering_id order");
            last = offering.offering_id.clone();
            assert!(seen.insert(offering.offering_id));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len() as i64, OFFERINGS);
    assert_eq!(pages, 50);
    if db.backend == Backend::Sqlite {
        // The statement ListOfferings runs, planned as SQLite plans it.
        let mut connection = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let explain = format!(
            "EXPLAIN QUERY PLAN {}",
            subledger::store::SQLITE_LIST_OFFERINGS_SQL
        );
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
            .bind("o-40000")
            .bind(1001)
            .fetch_all(&mut connection)
            .await
            .unwrap();
        let detail: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            detail
                .iter()
                .any(|d| d.starts_with("SEARCH") && d.contains("offering_id>?")),
            "a seek on the primary key, not a scan: {detail:?}"
        );
    }
}

backend_tests!(every_offering_once_in_order_over_50_000);
