//! WatchHistory: the backlog, then live entries committed through another replica, and the end of
//! the stream after OFFERING_FINALIZED.

mod common;

use std::time::Duration;

use common::{TestDb, offering, subscribe};
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

backend_tests!(
    watch_streams_backlog_then_live_entries_until_finalized,
    graceful_shutdown_ends_watch_streams
);
