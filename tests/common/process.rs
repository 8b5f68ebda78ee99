//! The real binary as a server process: started on a free port, called once it listens, sent
//! signals by PID.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::Client;

pub const BINARY: &str = env!("CARGO_BIN_EXE_subledger");
/// How long a server process may take to listen: a debug build migrating on a loaded machine.
pub const START_WAIT: Duration = Duration::from_secs(30);

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

    /// The same, with more flags.
    pub async fn start_with(database_url: &str, address: SocketAddr, flags: &[&str]) -> Self {
        let child = Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                &address.to_string(),
                "--database-url",
                database_url,
            ])
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
