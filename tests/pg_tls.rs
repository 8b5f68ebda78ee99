//! TLS to PostgreSQL (sqlx with rustls, the platform's roots plus `sslrootcert`): a cluster of
//! the test's own (tests/ha/cluster.sh, on a free port) serving a certificate from a CA made
//! here, whose pg_hba.conf refuses every connection without TLS. `sslmode=verify-full` with
//! `sslrootcert` naming that CA serves; a CA that did not sign the server's certificate, or no
//! TLS at all, is refused before anything is sent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::{BINARY, ServerProcess, free_address};
use common::tls::Pki;
use common::{assert_ledger_consistent, offering, subscribe};
use sqlx::Connection;

const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of the test's own, removed when dropped.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn script(&self, command: &str) -> std::process::Output {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ha/cluster.sh"))
            .args([command, self.dir.to_str().unwrap(), &self.port.to_string()])
            .output()
            .expect("run tests/ha/cluster.sh")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

/// Writes `text` into the cluster's data folder as the postgres user's file (the key: 0600, as
/// PostgreSQL demands).
fn write_owned_by_postgres(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let status = Command::new("chown")
        .arg("postgres:")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_full_serves_through_tls_and_refuses_a_foreign_ca_or_plaintext() {
    if !Path::new(POSTGRES_BIN).join("initdb").exists() {
        common::skip::skip(&format!(
            "no PostgreSQL 15 server binaries in {POSTGRES_BIN}"
        ));
        return;
    }
    let port = free_address().port();
    let cluster = Cluster {
        dir: std::env::temp_dir().join(format!("subledger-pg-tls-{}-{port}", std::process::id())),
        port,
    };
    let up = cluster.script("up");
    assert!(
        up.status.success(),
        "cluster up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let plain_url = String::from_utf8(up.stdout).unwrap().trim().to_owned();

    // The server's certificate (localhost, 127.0.0.1) from a CA of the test's own; then TLS on,
    // and every TCP connection without it refused.
    let pki = Pki::new("subledger test PostgreSQL CA");
    let data = cluster.dir.join("data");
    write_owned_by_postgres(&data.join("server.crt"), &pki.server.cert, 0o644);
    write_owned_by_postgres(&data.join("server.key"), &pki.server.key, 0o600);
    write_owned_by_postgres(
        &data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n\
         hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n",
        0o600,
    );
    let mut admin = sqlx::PgConnection::connect(&format!("{plain_url}?sslmode=disable"))
        .await
        .expect("connect before TLS is required");
    for sql in ["ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"] {
        sqlx::raw_sql(sql).execute(&mut admin).await.expect(sql);
    }

    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let foreign_ca = files.path().join("foreign-ca.pem");
    std::fs::write(&foreign_ca, Pki::new("another CA").ca_pem).unwrap();
    let url = |sslmode: &str, root: &Path| {
        format!(
            "postgres://postgres@localhost:{port}/postgres?sslmode={sslmode}&sslrootcert={}",
            root.display()
        )
    };

    // Refused: a CA that did not sign the certificate, and no TLS (pg_hba.conf). Once reloaded,
    // the configuration is in force for every new connection.
    let migrate = |database_url: String| {
        Command::new(BINARY)
            .args(["migrate", "--database-url", &database_url])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run subledger migrate")
    };
    let refused = common::eventually(
        "pg_hba.conf reloaded",
        std::time::Duration::from_secs(10),
        || {
            let output = migrate(url("disable", &ca));
            async move {
                if output.status.success() {
                    Err("plaintext accepted")
                } else {
                    Ok(output)
                }
            }
        },
    )
    .await;
    assert_eq!(refused.status.code(), Some(2));
    let foreign = migrate(url("verify-full", &foreign_ca));
    assert_eq!(
        foreign.status.code(),
        Some(2),
        "a foreign CA must be refused: {}",
        String::from_utf8_lossy(&foreign.stderr)
    );

    // Served through verify-full.
    let server = ServerProcess::start_with(&url("verify-full", &ca), free_address(), &[]).await;
    let mut client = server.client().await;
    client
        .create_offering(offering("tls", 100, 0))
        .await
        .expect("CreateOffering");
    client
        .subscribe(subscribe("tls", "alice", 4, "s1"))
        .await
        .expect("Subscribe");
    assert_ledger_consistent(&mut client, "tls").await;
    let (with_tls, without): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(with_tls >= 1, "the server's connections use TLS");
    assert_eq!(without, 0, "no connection of the server is plaintext");
}
