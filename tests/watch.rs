//! WatchHistory: the backlog, then live entries committed through another replica, and the end of
//! the stream after OFFERING_FINALIZED; many streams sharing an offering's reader, and a slow
//! stream that must neither lose entries nor hold up the others.

mod common;

use std::time::Duration;

use common::{Backend, TestDb, Watching, close_and_finalize, offering, subscribe};
use sqlx::Connection;
use subledger::proto::{self, EntryKind};
use tokio_stream::StreamExt;

/// Long enough for the poll fallback (SQLite across servers) several times over.
const ENTRY_WAIT: Duration = Duration::from_secs(10);

async fn watch_streams_backlog_then_live_entries_until_finalized(db: TestDb) {
    let watched = db.start_server().await;
    let writer = db.start_server().await;
    let mut writer_client = writer.client().await;
    writer_client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    writer_client
        .subscribe(subscribe("deal", "alice", 5, "s1"))
        .await
        .unwrap();

    let mut stream = watched
        .client()
        .await
        .watch_history(proto::WatchHistoryRequest {
            offering_id: "deal".into(),
            after_sequence: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(ENTRY_WAIT, stream.next())
            .await
            .expect("an entry in time")
    };
    // Backlog: only what follows after_sequence.
    assert_eq!(next().await.unwrap().unwrap().sequence, 2);

    writer_client
        .subscribe(subscribe("deal", "bob", 7, "s2"))
        .await
        .unwrap();
    let live = next().await.unwrap().unwrap();
    assert_eq!(
        (live.sequence, live.investor_id.as_str(), live.units_delta),
        (3, "bob", 7)
    );

    writer_client
        .close_offering(proto::CloseOfferingRequest {
            offering_id: "deal".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    writer_client
        .finalize_offering(proto::FinalizeOfferingRequest {
            offering_id: "deal".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next().await.unwrap().unwrap().kind(),
        EntryKind::OfferingClosed
    );
    assert_eq!(
        next().await.unwrap().unwrap().kind(),
        EntryKind::OfferingFinalized
    );
    assert!(
        next().await.is_none(),
        "the stream ends after OFFERING_FINALIZED"
    );

    // Watching a finalized offering from its end returns at once.
    let mut ended = watched
        .client()
        .await
        .watch_history(proto::WatchHistoryRequest {
            offering_id: "deal".into(),
            after_sequence: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(ENTRY_WAIT, ended.next())
            .await
            .unwrap()
            .is_none()
    );
}

async fn graceful_shutdown_ends_watch_streams(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    let mut stream = client
        .watch_history(proto::WatchHistoryRequest {
            offering_id: "deal".into(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().sequence, 1);
    // A stream open forever must not hold the shutdown open: stop() fails after 10 s.
    server.stop().await;
    match tokio::time::timeout(ENTRY_WAIT, stream.next())
        .await
        .expect("stream ends")
    {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable),
        None => {}
        Some(Ok(entry)) => panic!("unexpected entry {entry:?}"),
    }
}

/// Streams per client connection: below the server's 256 streams per connection.
const STREAMS_PER_CONNECTION: usize = 50;

/// 200 streams on four offerings over three replicas, half opened before the writes and half
/// while replicas write concurrently: each stream gets every entry once, in order.
async fn many_watchers_across_replicas_get_every_entry_in_order(db: TestDb) {
    const OFFERINGS: usize = 4;
    const WATCHERS: usize = 200;
    const WRITERS: usize = 6;
    const SUBSCRIBES_PER_WRITER: usize = 20;
    let replicas = [
        db.start_server().await,
        db.start_server().await,
        db.start_server().await,
    ];
    let offering_ids: Vec<String> = (0..OFFERINGS).map(|n| format!("deal-{n}")).collect();
    let mut admin = replicas[0].client().await;
    for id in &offering_ids {
        admin
            .create_offering(offering(id, 1_000_000, 0))
            .await
            .unwrap();
    }
    // Several connections per replica, each under its streams-per-connection limit.
    let mut clients = Vec::new();
    for n in 0..WATCHERS.div_ceil(STREAMS_PER_CONNECTION) {
        clients.push(replicas[n % replicas.len()].client().await);
    }
    let open = async |n: usize, clients: &mut Vec<common::Client>| {
        let client = &mut clients[n / STREAMS_PER_CONNECTION];
        let offering_id = offering_ids[n % OFFERINGS].clone();
        (
            offering_id.clone(),
            Watching::start(client, &offering_id).await,
        )
    };
    let mut watchers = Vec::new();
    for n in 0..WATCHERS / 2 {
        let (offering_id, mut watching) = open(n, &mut clients).await;
        watching.reach(1, ENTRY_WAIT).await;
        watchers.push((offering_id, watching));
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = replicas[w % replicas.len()].client().await;
        let offering_ids = offering_ids.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..SUBSCRIBES_PER_WRITER {
                let offering_id = &offering_ids[(w + n) % OFFERINGS];
                client
                    .subscribe(subscribe(
                        offering_id,
                        &format!("investor-{w}"),
                        1,
                        &format!("w{w}-{n}"),
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for n in WATCHERS / 2..WATCHERS {
        watchers.push(open(n, &mut clients).await);
    }
    for writer in writers {
        writer.await.unwrap();
    }

    let mut last = std::collections::HashMap::new();
    for id in &offering_ids {
        last.insert(id.clone(), close_and_finalize(&mut admin, id).await);
    }
    let total: i64 = last.values().map(|version| version - 3).sum();
    assert_eq!(
        total as usize,
        WRITERS * SUBSCRIBES_PER_WRITER,
        "every subscribe recorded"
    );
    for (offering_id, watching) in watchers {
        watching
            .assert_received_all(last[&offering_id], ENTRY_WAIT)
            .await;
    }
}

/// A stream whose client reads nothing while far more entries commit than the shared buffer
/// holds: a fast stream of the same offering gets each as it commits, and the slow one, once
/// its client reads again, gets them all in order from the database.
async fn slow_watcher_catches_up_without_holding_up_a_fast_one(db: TestDb) {
    const WRITERS: usize = 12;
    const SUBSCRIBES_PER_WRITER: usize = 500;
    let server = db.start_server().await;
    let mut admin = server.client().await;
    admin
        .create_offering(offering("deal", 1_000_000, 0))
        .await
        .unwrap();
    // Separate connections: an unread stream holds its connection's flow-control window.
    let mut fast = Watching::start(&mut server.client().await, "deal").await;
    // A small window, so that the entries back up into the server soon (the client's default
    // would buffer megabytes).
    let slow_channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.address))
            .unwrap()
            .initial_stream_window_size(16 * 1024)
            .initial_connection_window_size(16 * 1024)
            .connect()
            .await
            .unwrap();
    let mut slow_stream = common::Client::new(slow_channel)
        .watch_history(proto::WatchHistoryRequest {
            offering_id: "deal".into(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(slow_stream.next().await.unwrap().unwrap().sequence, 1);

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = server.client().await;
        writers.push(tokio::spawn(async move {
            for n in 0..SUBSCRIBES_PER_WRITER {
                let request_id = format!("w{w}-{n}");
                client
                    .subscribe(subscribe("deal", &format!("investor-{w}"), 1, &request_id))
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let written = 1 + (WRITERS * SUBSCRIBES_PER_WRITER) as i64;
    // The fast stream is not held up by the slow one, which has read nothing since its first entry.
    fast.reach(written, ENTRY_WAIT).await;

    let last = close_and_finalize(&mut admin, "deal").await;
    let mut received = vec![1];
    while let Some(entry) = tokio::time::timeout(ENTRY_WAIT, slow_stream.next())
        .await
        .expect("an entry in time")
    {
        received.push(entry.unwrap().sequence);
    }
    assert_eq!(received, (1..=last).collect::<Vec<_>>());
    fast.assert_received_all(last, ENTRY_WAIT).await;
}

backend_tests!(
    watch_streams_backlog_then_live_entries_until_finalized,
    graceful_shutdown_ends_watch_streams,
    many_watchers_across_replicas_get_every_entry_in_order,
    slow_watcher_catches_up_without_holding_up_a_fast_one
);

/// The PostgreSQL sessions LISTENing for subledger's commits on the test database.
async fn listening_sessions(db: &TestDb) -> i64 {
    let mut connection = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap()
}

async fn wait_for_listening_sessions(db: &TestDb, expected: i64) {
    common::eventually(
        &format!("{expected} sessions LISTENing"),
        ENTRY_WAIT,
        || async {
            match listening_sessions(db).await {
                sessions if sessions == expected => Ok(()),
                sessions => Err(sessions),
            }
        },
    )
    .await
}

/// A replica LISTENs for other replicas' commits only while it has WatchHistory streams: every
/// commit would otherwise wake a PostgreSQL backend to notify each replica, watched or not. A
/// stream still gets what another replica commits, and its client leaving releases the LISTEN.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_listen_only_while_watched() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let watched = db.start_server().await;
    let writer = db.start_server().await;
    let mut writer = writer.client().await;
    writer
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    writer
        .subscribe(subscribe("deal", "alice", 5, "s1"))
        .await
        .unwrap();
    assert_eq!(listening_sessions(&db).await, 0, "no stream, no LISTEN");

    let mut client = watched.client().await;
    let mut watching = Watching::start(&mut client, "deal").await;
    watching.reach(2, ENTRY_WAIT).await;
    wait_for_listening_sessions(&db, 1).await;
    writer
        .subscribe(subscribe("deal", "bob", 5, "s2"))
        .await
        .unwrap();
    watching.reach(3, ENTRY_WAIT).await;

    // The client goes away: the server drops the stream, and the LISTEN after a short linger.
    watching.received.abort();
    drop(client);
    wait_for_listening_sessions(&db, 0).await;
}
