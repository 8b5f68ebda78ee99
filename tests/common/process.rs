//! The real binary as a server process: started on a free port, called once it listens, sent
//! signals by PID.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{Client, roles};

pub const BINARY: &str = env!("CARGO_BIN_EXE_subledger");
/// How long a server process may take to listen: a debug build migrating on a loaded machine.
pub const START_WAIT: Duration = Duration::from_secs(30);

/// The owner migrates and grants each database once, before its first server process; replicas
/// started at once wait for it rather than grant concurrently.
async fn migrate_and_grant_once(database_url: &str) {
    static PREPARED: tokio::sync::Mutex<Vec<String>> = tokio::sync::Mutex::const_new(Vec::new());
    let mut prepared = PREPARED.lock().await;
    if !prepared.iter().any(|url| url == database_url) {
        roles::migrate_and_grant(database_url).await;
        prepared.push(database_url.to_owned());
    }
}

pub struct ServerProcess {
    pub child: Child,
    pub address: SocketAddr,
}

impl ServerProcess {
    /// `subledger serve` on `address` against `database_url`, logging warnings to the test's
    /// stderr.
    pub async fn start(database_url: &str, address: SocketAddr) -> Self {
        Self::start_with(database_url, address, &[]).await
    }

    /// The same, with more flags. With SUBLEDGER_TEST_SERVE_AS=runtime, a PostgreSQL server
    /// serves as the runtime role with `--no-migrate` ([`roles`]).
    pub async fn start_with(database_url: &str, address: SocketAddr, flags: &[&str]) -> Self {
        let (database_url, no_migrate) =
            if roles::serve_as_runtime_role() && database_url.starts_with("postgres") {
                migrate_and_grant_once(database_url).await;
                let runtime_url = roles::as_role(database_url, roles::RUNTIME_ROLE);
                (runtime_url, Some("--no-migrate"))
            } else {
                (database_url.to_owned(), None)
            };
        let child = Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                &address.to_string(),
                "--database-url",
                &database_url,
            ])
            .args(no_migrate)
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start subledger");
        Self { child, address }
    }

    /// A client once the server listens; panics after START_WAIT.
    pub async fn client(&self) -> Client {
        let channel = self.channel().await;
        subledger::proto::subscription_ledger_client::SubscriptionLedgerClient::new(channel)
    }

    /// A connected channel once the server listens; panics after START_WAIT.
    pub async fn channel(&self) -> tonic::transport::Channel {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.address)).unwrap();
        super::eventually("subledger listening", START_WAIT, || endpoint.connect()).await
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

/// A port free right now, for a server process to bind.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
