//! The database going away and coming back (PostgreSQL, through a TCP proxy the test cuts):
//! calls answer UNAVAILABLE, never INTERNAL; health turns NOT_SERVING; both recover, and a
//! retry with the same request_id then applies once. A watch stream gets the entries whose
//! notifications were lost while the replica's change listener was cut off.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    Backend, TestDb, Watching, assert_ledger_consistent, assert_status, offering, subscribe,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tonic_health::pb::health_check_response::ServingStatus;

/// Forwards TCP connections to PostgreSQL until cut; while cut, refuses new ones.
struct Proxy {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Wakes every forwarding task to drop its connection.
    drop_all: Arc<Notify>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            address: listener.local_addr().unwrap(),
            cut: Arc::default(),
            drop_all: Arc::default(),
        };
        let (cut, drop_all) = (proxy.cut.clone(), proxy.drop_all.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if cut.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let drop_all = drop_all.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = drop_all.notified() => {}
                    }
                });
            }
        });
        proxy
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.drop_all.notify_waiters();
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

async fn health(address: SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "subledger.v1.SubscriptionLedger".into(),
    };
    client.check(request).await.unwrap().into_inner().status()
}

async fn wait_for_health(address: SocketAddr, wanted: ServingStatus) {
    common::eventually(
        &format!("health {wanted:?}"),
        Duration::from_secs(20),
        || async {
            match health(address).await {
                status if status == wanted => Ok(()),
                status => Err(status),
            }
        },
    )
    .await
}

/// A proxy in front of the test's PostgreSQL, and the database URL through it.
async fn proxied(db: &TestDb) -> (Proxy, String) {
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let upstream_host_port = format!("{}:{}", options.get_host(), options.get_port());
    let upstream: SocketAddr = tokio::net::lookup_host(&upstream_host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let url = db
        .url
        .replacen(&upstream_host_port, &proxy.address.to_string(), 1);
    (proxy, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_answers_unavailable_and_recovers() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (proxy, url) = proxied(&db).await;
    let server = db
        .start_server_via(&url, subledger::server::ServerConfig::default())
        .await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    client
        .subscribe(subscribe("deal", "alice", 1, "before"))
        .await
        .unwrap();
    assert_eq!(health(server.address).await, ServingStatus::Serving);

    proxy.cut();
    assert_status(
        client
            .subscribe(subscribe("deal", "alice", 2, "during"))
            .await,
        tonic::Code::Unavailable,
        "DATABASE_UNAVAILABLE",
    );
    assert_status(
        client
            .get_offering(subledger::proto::GetOfferingRequest {
                offering_id: "deal".into(),
            })
            .await,
        tonic::Code::Unavailable,
        "DATABASE_UNAVAILABLE",
    );
    wait_for_health(server.address, ServingStatus::NotServing).await;

    proxy.restore();
    wait_for_health(server.address, ServingStatus::Serving).await;
    let retried = client
        .subscribe(subscribe("deal", "alice", 2, "during"))
        .await
        .unwrap()
        .into_inner();
    assert!(!retried.replayed, "the refused call had appended nothing");
    let entries = assert_ledger_consistent(&mut client, "deal").await;
    assert_eq!(entries.len(), 3);
}

/// NOTIFY has no memory: a commit by another replica while this one's listener is cut off is
/// never announced to it. Once the listener is back, the watched offerings are read again, so
/// the stream gets that entry without any further commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_gets_entries_committed_while_the_listener_was_cut_off() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (proxy, url) = proxied(&db).await;
    let watched = db
        .start_server_via(&url, subledger::server::ServerConfig::default())
        .await;
    let writer = db.start_server().await;
    let mut writer_client = writer.client().await;
    writer_client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    let mut watching = Watching::start(&mut watched.client().await, "deal").await;
    watching.reach(1, Duration::from_secs(10)).await;

    proxy.cut();
    writer_client
        .subscribe(subscribe("deal", "alice", 1, "while-cut"))
        .await
        .unwrap();
    proxy.restore();
    // The listener retries every second; then one re-read.
    watching.reach(2, Duration::from_secs(20)).await;
}
