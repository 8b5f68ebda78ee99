//! Publication to NATS JetStream: every history entry reaches the stream exactly once, in
//! sequence order per offering, whatever the replicas and NATS do meanwhile. Each test starts
//! its own nats-server and real `subledger serve` processes with --nats-url.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prost::Message;
use subledger::proto;
use subledger::publish::subject::{entries_subject, offering_id as offering_of_token};

use common::metrics::scrape;
use common::nats::NatsServer;
use common::process::{ServerProcess, free_address};
use common::{Client, TestDb, eventually, full_history, offering, subscribe};

/// The longest wait for the stream to hold everything: a lease takeover (10 s TTL), NATS
/// reconnecting after a restart, and a debug build on a loaded machine.
const ARRIVAL_WAIT: Duration = Duration::from_secs(90);
const STREAM: &str = "SUBLEDGER";

/// A replica publishing to `nats`, with its metrics on a port of its own.
async fn replica(db: &TestDb, nats: &NatsServer) -> (ServerProcess, SocketAddr) {
    let metrics = free_address();
    let server = ServerProcess::start_with(
        &db.url,
        free_address(),
        &[
            "--nats-url",
            &nats.url(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
    )
    .await;
    (server, metrics)
}

/// One metric's value on a replica (0 when absent).
async fn metric(address: SocketAddr, name: &str) -> f64 {
    scrape(address)
        .await
        .samples
        .iter()
        .find(|sample| sample.metric == name)
        .map_or(0.0, |sample| match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
}

/// The stream, once the publisher created it (right after it took the lease and reached NATS).
async fn stream(nats: &NatsServer) -> jetstream::stream::Stream {
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to NATS");
    let jetstream = jetstream::new(client);
    eventually("the stream subledger creates", ARRIVAL_WAIT, || {
        let jetstream = jetstream.clone();
        async move {
            jetstream
                .get_stream(STREAM)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// Every entry committed, over every offering: the sum of the heads' versions.
async fn committed_entries(client: &mut Client) -> u64 {
    let offerings = client
        .list_offerings(proto::ListOfferingsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListOfferings")
        .into_inner()
        .offerings;
    offerings.iter().map(|o| o.version as u64).sum()
}

/// Waits until the stream holds `expected` messages, then reads every one, in stream order,
/// and checks that per offering they are its whole history, each once, in sequence order,
/// equal to what ListHistory returns (hashes included), with the documented headers.
async fn assert_published_exactly_once(nats: &NatsServer, client: &mut Client, expected: u64) {
    let stream = stream(nats).await;
    eventually("the stream holds every entry", ARRIVAL_WAIT, || {
        let mut stream = stream.clone();
        async move {
            let stored = stream
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .messages;
            if stored >= expected {
                Ok(stored)
            } else {
                Err(format!("{stored} of {expected}"))
            }
        }
    })
    .await;
    // Whatever was still in flight lands now, or never: a duplicate would show in the count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stream.clone().info().await.unwrap().state.messages;
    assert_eq!(
        stored, expected,
        "the stream holds more messages than entries were committed"
    );

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut by_offering: BTreeMap<String, Vec<proto::HistoryEntry>> = BTreeMap::new();
    for _ in 0..expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message within 10 s")
            .expect("the stream goes on")
            .expect("a message");
        let entry = proto::HistoryEntry::decode(message.payload.clone()).expect("a HistoryEntry");
        let token = message.subject.as_str().rsplit('.').next().unwrap();
        assert_eq!(
            offering_of_token(token).as_deref(),
            Some(entry.offering_id.as_str())
        );
        let headers = message.headers.as_ref().expect("headers");
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(
            header("Nats-Msg-Id"),
            Some(format!("{}:{}", entry.offering_id, entry.sequence))
        );
        assert_eq!(
            header("Subledger-Offering").as_deref(),
            Some(entry.offering_id.as_str())
        );
        assert_eq!(
            header("Subledger-Sequence"),
            Some(entry.sequence.to_string())
        );
        assert_eq!(
            header("Subledger-Kind").as_deref(),
            Some(entry.kind().as_str_name())
        );
        assert_eq!(header("Subledger-Entry-Hash"), Some(hex(&entry.entry_hash)));
        by_offering
            .entry(entry.offering_id.clone())
            .or_default()
            .push(entry);
    }
    for (offering_id, published) in &by_offering {
        let history = full_history(client, offering_id).await;
        let sequences: Vec<i64> = published.iter().map(|e| e.sequence).collect();
        let expected: Vec<i64> = (1..=history.len() as i64).collect();
        assert_eq!(
            sequences, expected,
            "{offering_id}: each entry once, in order"
        );
        assert_eq!(
            published, &history,
            "{offering_id}: as ListHistory returns them"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `subscribes` concurrent Subscribes spread over `offerings` offerings and every replica.
async fn subscribe_concurrently(clients: &[Client], offerings: usize, subscribes: usize) {
    let calls: Vec<_> = (0..subscribes)
        .map(|k| {
            let mut client = clients[k % clients.len()].clone();
            tokio::spawn(async move {
                client
                    .subscribe(subscribe(
                        &format!("offering-{}", k % offerings),
                        &format!("investor-{k}"),
                        1,
                        &format!("subscribe-{k}"),
                    ))
                    .await
                    .expect("Subscribe");
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
}

async fn create_offerings(client: &mut Client, offerings: usize) {
    for k in 0..offerings {
        client
            .create_offering(offering(&format!("offering-{k}"), 1_000_000_000, 0))
            .await
            .expect("CreateOffering");
    }
}

async fn publish_exactly_once(db: &TestDb, replicas: usize, offerings: usize, subscribes: usize) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(replica(db, &nats).await);
    }
    let mut clients = Vec::new();
    for (server, _) in &servers {
        clients.push(server.client().await);
    }
    create_offerings(&mut clients[0], offerings).await;
    subscribe_concurrently(&clients, offerings, subscribes).await;
    let expected = (offerings + subscribes) as u64;
    assert_published_exactly_once(&nats, &mut clients[0], expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_publish_every_entry_exactly_once_in_order() {
    let Some(db) = TestDb::new(common::Backend::Postgres).await else {
        return;
    };
    publish_exactly_once(&db, 3, 20, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_publishes_every_entry_exactly_once_in_order() {
    let db = TestDb::new(common::Backend::Sqlite)
        .await
        .expect("SQLite database");
    publish_exactly_once(&db, 1, 5, 50).await;
}

/// `.`, `:` and `_` are not token characters: the id is published under its mapped token.
async fn an_offering_id_invalid_in_a_subject_is_published_under_its_token(db: TestDb) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (server, _) = replica(&db, &nats).await;
    let mut client = server.client().await;
    let id = "fund.2026:class_A";
    client
        .create_offering(offering(id, 1_000, 0))
        .await
        .expect("CreateOffering");
    let subject = entries_subject(id);
    assert_eq!(subject, "subledger.entries.fund_2E2026_3Aclass_5FA");
    let stream = stream(&nats).await;
    let last = eventually("the entry on its mapped subject", ARRIVAL_WAIT, || {
        let stream = &stream;
        let subject = subject.clone();
        async move {
            stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let entry = proto::HistoryEntry::decode(last.payload).expect("a HistoryEntry");
    assert_eq!((entry.offering_id.as_str(), entry.sequence), (id, 1));
}

/// The README's consumer example, compiled here from its own file.
#[allow(dead_code)] // its main() is for `cargo run --example`; the test calls run()
#[path = "../examples/events.rs"]
mod example;

/// The README's example reads every entry of its offering through a durable pull consumer.
async fn the_events_example_runs_as_written(db: TestDb) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (server, _) = replica(&db, &nats).await;
    drop(server.client().await);
    // The publisher creates the stream once it holds the lease, right after the start.
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to NATS");
    let jetstream = jetstream::new(client);
    eventually("the stream created", ARRIVAL_WAIT, || {
        let jetstream = jetstream.clone();
        async move {
            jetstream
                .get_stream(STREAM)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let ledger = subledger_client::Ledger::builder([format!("http://{}", server.address)])
        .build()
        .unwrap();
    let entries = example::run(&ledger, &nats.url())
        .await
        .expect("the example runs");
    let kinds: Vec<(i64, proto::EntryKind)> =
        entries.iter().map(|e| (e.sequence, e.kind())).collect();
    assert_eq!(
        kinds,
        [
            (1, proto::EntryKind::OfferingCreated),
            (2, proto::EntryKind::Subscribed)
        ]
    );
}

backend_tests!(
    an_offering_id_invalid_in_a_subject_is_published_under_its_token,
    publish_from_now_skips_the_history_recorded_before,
    serve_starts_and_commits_before_nats_is_up,
    the_events_example_runs_as_written
);

/// Publication first enabled with `--nats-publish-from now` skips the history recorded before;
/// with the default (`all`) it is published, oldest first: the exactly-once tests above start
/// with it.
async fn publish_from_now_skips_the_history_recorded_before(db: TestDb) {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let before = ServerProcess::start(&db.url, free_address()).await;
    let mut client = before.client().await;
    create_offerings(&mut client, 2).await;
    subscribe_concurrently(std::slice::from_ref(&client), 2, 4).await;
    drop(before);

    let server = ServerProcess::start_with(
        &db.url,
        free_address(),
        &["--nats-url", &nats.url(), "--nats-publish-from", "now"],
    )
    .await;
    let mut client = server.client().await;
    // "now" is when the publisher first takes the lease, just after the start; it makes the
    // stream right then.
    let mut stream = stream(&nats).await;
    client
        .subscribe(subscribe("offering-0", "late", 1, "late-subscribe"))
        .await
        .expect("Subscribe");
    let last = eventually("the new entry published", ARRIVAL_WAIT, || {
        let stream = stream.clone();
        async move {
            stream
                .get_last_raw_message_by_subject(&entries_subject("offering-0"))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let entry = proto::HistoryEntry::decode(last.payload).expect("a HistoryEntry");
    // offering-0 had its creation and 2 Subscribes before.
    assert_eq!((entry.sequence, entry.investor_id.as_str()), (4, "late"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "only the entry recorded after publication was enabled"
    );
}

/// serve does not wait for NATS: it starts and commits while NATS is not there yet, and
/// publishes everything once it is.
async fn serve_starts_and_commits_before_nats_is_up(db: TestDb) {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    nats.stop().await;
    let (server, _) = replica(&db, &nats).await;
    let mut client = server.client().await;
    create_offerings(&mut client, 2).await;
    subscribe_concurrently(std::slice::from_ref(&client), 2, 10).await;
    nats.restart().await;
    assert_published_exactly_once(&nats, &mut client, 12).await;
}

/// Subscribes through `clients`, round robin, until `stop`; counts those acknowledged.
fn load(
    clients: Vec<Client>,
    offerings: usize,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|loader| {
            let mut client = clients[loader % clients.len()].clone();
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for k in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let result = client
                        .subscribe(subscribe(
                            &format!("offering-{}", k % offerings),
                            &format!("investor-{loader}"),
                            1,
                            &format!("load-{loader}-{k}"),
                        ))
                        .await;
                    if result.is_ok() {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_publishing_replica_loses_and_doubles_nothing() {
    let Some(db) = TestDb::new(common::Backend::Postgres).await else {
        return;
    };
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(replica(&db, &nats).await);
    }
    let mut clients = Vec::new();
    for (server, _) in &servers {
        clients.push(server.client().await);
    }
    create_offerings(&mut clients[0], 10).await;
    // The publisher is the replica whose published counter moves.
    let publisher = eventually("one replica publishing", ARRIVAL_WAIT, || {
        let servers = &servers;
        async move {
            for (k, (_, metrics)) in servers.iter().enumerate() {
                if metric(*metrics, "subledger_published_entries_total").await > 0.0 {
                    return Ok(k);
                }
            }
            Err("none yet")
        }
    })
    .await;
    let survivors: Vec<Client> = (0..3)
        .filter(|&k| k != publisher)
        .map(|k| clients[k].clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let loaders = load(survivors.clone(), 10, stop.clone(), acknowledged.clone());
    let survivor_metrics: Vec<SocketAddr> = (0..3)
        .filter(|&k| k != publisher)
        .map(|k| servers[k].1)
        .collect();
    // Mid-stream: the publisher has published some of the load.
    let published_before = metric(servers[publisher].1, "subledger_published_entries_total").await;
    eventually("the publisher publishing the load", ARRIVAL_WAIT, || {
        let metrics = servers[publisher].1;
        async move {
            let now = metric(metrics, "subledger_published_entries_total").await;
            if now >= published_before + 50.0 {
                Ok(())
            } else {
                Err(now)
            }
        }
    })
    .await;
    servers[publisher].0.signal("-KILL");
    // Another replica takes the lease over and publishes while the load goes on.
    eventually("a survivor publishing", ARRIVAL_WAIT, || {
        let survivor_metrics = survivor_metrics.clone();
        async move {
            for metrics in survivor_metrics {
                if metric(metrics, "subledger_published_entries_total").await > 0.0 {
                    return Ok(());
                }
            }
            Err("not yet")
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for loader in loaders {
        loader.await.unwrap();
    }
    assert!(acknowledged.load(Ordering::SeqCst) > 0);
    let mut client = survivors[0].clone();
    let expected = committed_entries(&mut client).await;
    assert_published_exactly_once(&nats, &mut client, expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_go_on_while_nats_is_down_and_everything_arrives_once_after() {
    let Some(db) = TestDb::new(common::Backend::Postgres).await else {
        return;
    };
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let (server, metrics) = replica(&db, &nats).await;
    let mut client = server.client().await;
    create_offerings(&mut client, 5).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let loaders = load(vec![client.clone()], 5, stop.clone(), acknowledged.clone());
    eventually("publishing under load", ARRIVAL_WAIT, || async move {
        let published = metric(metrics, "subledger_published_entries_total").await;
        if published > 20.0 {
            Ok(())
        } else {
            Err(published)
        }
    })
    .await;

    nats.stop().await;
    let acknowledged_at_stop = acknowledged.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let acknowledged_while_down = acknowledged.load(Ordering::SeqCst) - acknowledged_at_stop;
    assert!(
        acknowledged_while_down > 0,
        "no Subscribe committed while NATS was down"
    );
    let lag = metric(metrics, "subledger_publish_lag_seconds").await;
    assert!(
        lag >= 2.0,
        "the lag metric did not grow while NATS was down: {lag}"
    );
    assert!(metric(metrics, "subledger_publish_backlog_entries").await > 0.0);

    nats.restart().await;
    stop.store(true, Ordering::SeqCst);
    for loader in loaders {
        loader.await.unwrap();
    }
    let expected = committed_entries(&mut client).await;
    assert_published_exactly_once(&nats, &mut client, expected).await;
    eventually("the lag back to 0", ARRIVAL_WAIT, || async move {
        let lag = metric(metrics, "subledger_publish_lag_seconds").await;
        if lag == 0.0 { Ok(()) } else { Err(lag) }
    })
    .await;
}
