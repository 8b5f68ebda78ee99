//! The least-privilege runtime role (docs/operations.md, "Roles") in tests: one LOGIN role in
//! the test cluster, granted on each test database by `subledger migrate --grant-to`'s code.
//!
//! With SUBLEDGER_TEST_SERVE_AS=runtime, every in-process PostgreSQL server
//! (`TestDb::start_server*` on the test's own database) is served as that role with
//! `--no-migrate`'s check, after the owner migrated and granted: the ledger's tests then prove
//! that the grants are enough. Server processes (`process::ServerProcess`) on PostgreSQL are
//! started so too, after the owner migrated and granted once per database. The owner (the admin
//! URL's user) still sets up and tampers.

use sqlx::Connection;

/// The runtime role's name; a cluster-wide role shared by every test (never dropped: tests run
/// at once, and its grants go with each test database).
pub const RUNTIME_ROLE: &str = "subledger_test_runtime";

/// Whether in-process PostgreSQL servers are to connect as [`RUNTIME_ROLE`].
pub fn serve_as_runtime_role() -> bool {
    std::env::var("SUBLEDGER_TEST_SERVE_AS").as_deref() == Ok("runtime")
}

/// Creates [`RUNTIME_ROLE`] (LOGIN, nothing else) unless it exists; the test cluster trusts
/// local connections, so it needs no password.
pub async fn ensure_runtime_role(admin_url: &str) {
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to PostgreSQL as the admin");
    // Tests create it at once: a concurrent CREATE ROLE fails with duplicate_object or with
    // unique_violation on pg_authid, and either means it exists.
    let sql = format!(
        "DO $$ BEGIN CREATE ROLE {RUNTIME_ROLE} LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .expect("create the runtime role");
}

/// What `subledger migrate --grant-to` does as the owner of `url`'s database: migrate, then
/// grant [`RUNTIME_ROLE`] (created if missing) what serving needs.
pub async fn migrate_and_grant(url: &str) {
    ensure_runtime_role(&super::postgres_admin_url()).await;
    let owner = subledger::cli::open_postgres(
        url,
        subledger::store::PgSettings {
            max_connections: 1,
            ..Default::default()
        },
    )
    .await
    .expect("migrate as the owner");
    owner
        .grant_runtime(RUNTIME_ROLE)
        .await
        .expect("grant the runtime role");
}

/// `url` with its user (and password) replaced by `role`.
pub fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (authority_end, _) = rest
        .char_indices()
        .find(|(_, c)| *c == '/')
        .unwrap_or((rest.len(), '/'));
    let hosts = match rest[..authority_end].rsplit_once('@') {
        Some((_, hosts)) => hosts,
        None => &rest[..authority_end],
    };
    format!("{scheme}://{role}@{hosts}{}", &rest[authority_end..])
}
