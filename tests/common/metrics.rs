//! A server with its Prometheus endpoint, read as a scraper reads it.

use std::net::SocketAddr;

use prometheus_parse::Scrape;
use subledger::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TestDb, TestServer};

/// A server that also serves /metrics, and where.
pub async fn start_server_with_metrics(db: &TestDb) -> (TestServer, SocketAddr) {
    start_server_with_metrics_and(db, ServerConfig::default()).await
}

/// The same, with `config` otherwise.
pub async fn start_server_with_metrics_and(
    db: &TestDb,
    config: ServerConfig,
) -> (TestServer, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = db
        .start_server_with(ServerConfig {
            metrics_listener: Some(listener),
            ..config
        })
        .await;
    (server, address)
}

/// GET /metrics, parsed by a real Prometheus text parser.
pub async fn scrape(address: SocketAddr) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}
