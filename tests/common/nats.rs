//! A nats-server of the test's own, with JetStream, on a free loopback port and a temporary
//! store folder; stopped and restarted by its PID, on the same port and folder.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::eventually;
use super::process::free_address;

/// How long nats-server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(20);

pub struct NatsServer {
    child: Option<Child>,
    address: SocketAddr,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// None (the test skipped, a failure under CI=true) when nats-server is not installed.
    pub async fn start() -> Option<Self> {
        if !super::skip::tool_installed("nats-server", "apt-get install nats-server") {
            return None;
        }
        let mut server = Self {
            child: None,
            address: free_address(),
            store: tempfile::tempdir().expect("temporary folder"),
        };
        server.restart().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// Starts it (again) and returns once it accepts connections.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.address.port().to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let address = self.address;
        eventually("nats-server listening", START_WAIT, || async move {
            tokio::net::TcpStream::connect(address).await.map(drop)
        })
        .await;
    }

    /// Stops it by its PID (SIGTERM: JetStream flushes its store) and waits until it exited.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("nats-server running");
        let pid = child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        child.wait().await.expect("nats-server exit");
    }
}
