//! The history's hash chain (docs/hash-chain.md): every entry is linked to the one before, and
//! VerifyOffering finds the first sequence where stored history was changed, removed or
//! renumbered, even when whoever did it made every total agree again.

mod common;

use common::tamper::{PgBypass, UNITS_REWRITTEN, rehash_from_the_history, tamper};
use common::{
    Backend, TestDb, assert_invalid, assert_ledger_consistent, assert_status, offering, subscribe,
};
use subledger::proto;

/// Creates "deal" with three subscriptions (sequences 2, 3, 4: alice 10, bob 5, carol 3).
async fn deal_with_three_subscriptions(client: &mut common::Client) {
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    for (investor, units) in [("alice", 10), ("bob", 5), ("carol", 3)] {
        client
            .subscribe(subscribe("deal", investor, units, &format!("s-{investor}")))
            .await
            .unwrap();
    }
}

async fn verify(client: &mut common::Client) -> proto::VerifyOfferingResponse {
    verify_against(client, None).await
}

async fn verify_against(
    client: &mut common::Client,
    digest: Option<proto::Digest>,
) -> proto::VerifyOfferingResponse {
    client
        .verify_offering(proto::VerifyOfferingRequest {
            offering_id: "deal".into(),
            digest,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn digest(client: &mut common::Client) -> proto::Digest {
    client
        .get_digest(proto::GetDigestRequest {
            offering_id: "deal".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Asserts that the chain, and only the chain, found the tampering, at `sequence`.
#[track_caller]
fn assert_chain_breaks_at(verdict: &proto::VerifyOfferingResponse, sequence: i64) {
    assert!(!verdict.ok, "tampering went unnoticed");
    assert_eq!(
        verdict.first_bad_sequence, sequence,
        "{:?}",
        verdict.problems
    );
    assert!(
        verdict.problems[0].starts_with(&format!("sequence {sequence}: entry_hash")),
        "{:?}",
        verdict.problems
    );
    // Every total was made to agree: nothing but the chain can tell.
    assert!(
        verdict.problems.iter().all(|p| p.contains("chain")),
        "{:?}",
        verdict.problems
    );
}

async fn rewritten_units_are_found_at_their_sequence(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal_with_three_subscriptions(&mut client).await;
    assert_ledger_consistent(&mut client, "deal").await;

    tamper(&db, PgBypass::DisableTrigger, &UNITS_REWRITTEN).await;
    assert_chain_breaks_at(&verify(&mut client).await, 3);
}

/// PostgreSQL's other way past a trigger, on the same connection as the UPDATEs.
async fn rewritten_units_are_found_past_replica_mode(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal_with_three_subscriptions(&mut client).await;

    tamper(&db, PgBypass::ReplicationRole, &UNITS_REWRITTEN).await;
    assert_chain_breaks_at(&verify(&mut client).await, 3);
}

/// Bob's subscription (sequence 3) is deleted and carol's renumbered from 4 to 3, with her
/// running total, bob's position, the head's version, total and investor count all made to
/// agree: the chain breaks at the first renumbered sequence.
async fn a_deleted_and_renumbered_entry_is_found(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal_with_three_subscriptions(&mut client).await;

    tamper(
        &db,
        PgBypass::DisableTrigger,
        &[
            "DELETE FROM history_entry WHERE offering_id = 'deal' AND sequence = 3",
            "UPDATE history_entry SET sequence = 3, offering_units_after = 13 \
             WHERE offering_id = 'deal' AND sequence = 4",
            "DELETE FROM investor_position WHERE offering_id = 'deal' AND investor_id = 'bob'",
            // The Merkle tree's size must be the version: cleared, as if never built.
            "UPDATE offering_head SET version = 3, subscribed_units = 13, investor_count = 2, \
             merkle_size = NULL, merkle_frontier = NULL WHERE offering_id = 'deal'",
        ],
    )
    .await;
    let verdict = verify(&mut client).await;
    assert_chain_breaks_at(&verdict, 3);
    assert_eq!(verdict.entries_checked, 3);
}

/// Entries appended by three replicas, in group-commit batches of many requests, each link to
/// the one before whichever replica and batch appended it.
async fn the_chain_holds_across_replicas_and_batches(db: TestDb) {
    const REPLICAS: usize = 3;
    const CALLS: usize = 300;
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..REPLICAS {
        let server = db.start_server().await;
        clients.push(server.client().await);
        servers.push(server);
    }
    clients[0]
        .create_offering(offering("deal", 1_000_000, 0))
        .await
        .unwrap();
    let calls = (0..CALLS).map(|k| {
        let mut client = clients[k % REPLICAS].clone();
        tokio::spawn(async move {
            client
                .subscribe(subscribe(
                    "deal",
                    &format!("investor-{}", k % 40),
                    1,
                    &format!("s-{k}"),
                ))
                .await
        })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    let entries = assert_ledger_consistent(&mut clients[1], "deal").await;
    assert_eq!(entries.len(), CALLS + 1);
    assert!(entries.iter().all(|e| e.entry_hash.len() == 32));
    let verdict = verify(&mut clients[2]).await;
    assert!(verdict.ok, "{:?}", verdict.problems);
    assert_eq!(verdict.first_bad_sequence, 0);
}

/// A client can recompute every hash from ListHistory alone, as docs/hash-chain.md says.
async fn a_client_recomputes_the_chain_from_list_history(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal_with_three_subscriptions(&mut client).await;
    client
        .amend_offering(proto::AmendOfferingRequest {
            offering_id: "deal".into(),
            max_units: Some(50),
            close_time: Some(prost_types::Timestamp {
                seconds: 4_102_444_800,
                nanos: 0,
            }),
            request_id: "amend".into(),
            expected_version: 4,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut previous = [0u8; 32];
    for entry in common::full_history(&mut client, "deal").await {
        let hash = common::recompute_entry_hash(&previous, &entry);
        assert_eq!(entry.entry_hash, hash, "sequence {}", entry.sequence);
        previous = hash;
    }
}

/// An offering whose history was loaded straight into the database after the server migrated
/// has no hashes yet: it still reads, but nothing is appended to it (that would link to nothing)
/// until migrate() hashes it.
async fn an_unhashed_offering_reads_but_refuses_appends_until_migrated(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    let now = match db.backend {
        Backend::Postgres => "now()",
        Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')",
    };
    let head = format!(
        "INSERT INTO offering_head (offering_id, name, max_units, max_units_per_investor, subscribed_units, \
            investor_count, status, version, create_time, update_time) \
         VALUES ('deal', 'loaded', 100, 0, 0, 0, 1, 1, {now}, {now})"
    );
    let entry = format!(
        "INSERT INTO history_entry (offering_id, sequence, kind, investor_id, units_delta, investor_units_after, \
            offering_units_after, request_id, requested_units, expected_version, record_time, actor) \
         VALUES ('deal', 1, 1, '', 0, 0, 0, 'create', 100, 0, {now}, 'loader')"
    );
    db.insert_unhashed_history(&[&head, &entry]).await;

    let read = client
        .get_offering(proto::GetOfferingRequest {
            offering_id: "deal".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.version, 1);
    let refused = client.subscribe(subscribe("deal", "alice", 1, "s1")).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Internal);

    db.migrate().await;
    client
        .subscribe(subscribe("deal", "alice", 1, "s1"))
        .await
        .unwrap();
    let entries = assert_ledger_consistent(&mut client, "deal").await;
    let mut previous = [0u8; 32];
    for entry in &entries {
        previous = common::recompute_entry_hash(&previous, entry);
        assert_eq!(entry.entry_hash, previous);
    }
}

/// GetDigest names the latest entry exactly as ListHistory returns it, and VerifyOffering holds
/// the chain against it, at the time and later.
async fn a_digest_is_the_latest_entry_and_verifies_later(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal_with_three_subscriptions(&mut client).await;
    let taken = digest(&mut client).await;
    let last = common::full_history(&mut client, "deal")
        .await
        .pop()
        .unwrap();
    assert_eq!(
        (
            &taken.offering_id,
            taken.sequence,
            &taken.entry_hash,
            &taken.record_time
        ),
        (
            &last.offering_id,
            last.sequence,
            &last.entry_hash,
            &last.record_time
        )
    );

    let without = verify(&mut client).await;
    assert!(without.ok && without.digest_ok.is_none(), "{without:?}");
    client
        .subscribe(subscribe("deal", "dave", 1, "s-dave"))
        .await
        .unwrap();
    let later = verify_against(&mut client, Some(taken.clone())).await;
    assert!(later.ok, "{:?}", later.problems);
    assert_eq!(later.digest_ok, Some(true));

    // A digest kept without its offering_id or record_time is held by its hash alone.
    let bare = proto::Digest {
        offering_id: String::new(),
        record_time: None,
        ..taken.clone()
    };
    assert_eq!(
        verify_against(&mut client, Some(bare)).await.digest_ok,
        Some(true)
    );
    // One that does not match is not an error status: ok and digest_ok say so.
    let mut forged = taken.clone();
    forged.entry_hash[0] ^= 1;
    let verdict = verify_against(&mut client, Some(forged)).await;
    assert!(
        !verdict.ok && verdict.digest_ok == Some(false),
        "{verdict:?}"
    );
    assert!(
        verdict.problems[0].starts_with("digest at sequence 4"),
        "{verdict:?}"
    );
    let beyond = proto::Digest {
        sequence: 99,
        tree_size: 99,
        ..taken.clone()
    };
    let verdict = verify_against(&mut client, Some(beyond)).await;
    assert_eq!(verdict.digest_ok, Some(false));
    assert!(
        verdict.problems[0].contains("the history ends at sequence 5"),
        "{verdict:?}"
    );
}

async fn bad_digest_requests_name_their_field(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal_with_three_subscriptions(&mut client).await;
    let taken = digest(&mut client).await;
    let cases = [
        (
            "digest.offering_id",
            proto::Digest {
                offering_id: "other".into(),
                ..taken.clone()
            },
        ),
        (
            "digest.sequence",
            proto::Digest {
                sequence: 0,
                ..taken.clone()
            },
        ),
        (
            "digest.entry_hash",
            proto::Digest {
                entry_hash: vec![0; 31],
                ..taken.clone()
            },
        ),
        (
            "digest.tree_size",
            proto::Digest {
                tree_size: 3,
                ..taken.clone()
            },
        ),
        (
            "digest.root_hash",
            proto::Digest {
                root_hash: vec![0; 31],
                ..taken.clone()
            },
        ),
        (
            "digest.root_hash",
            proto::Digest {
                tree_size: 0,
                ..taken.clone()
            },
        ),
        (
            "digest.record_time",
            proto::Digest {
                record_time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..taken.clone()
            },
        ),
    ];
    for (field, digest) in cases {
        let result = client
            .verify_offering(proto::VerifyOfferingRequest {
                offering_id: "deal".into(),
                digest: Some(digest),
            })
            .await;
        assert_invalid(result, field);
    }
    let unknown = client
        .get_digest(proto::GetDigestRequest {
            offering_id: "nope".into(),
        })
        .await;
    assert_status(unknown, tonic::Code::NotFound, "OFFERING_NOT_FOUND");
    let malformed = client
        .get_digest(proto::GetDigestRequest {
            offering_id: "no spaces".into(),
        })
        .await;
    assert_invalid(malformed, "offering_id");
}

/// The edit the chain alone cannot see: bob's units rewritten as in UNITS_REWRITTEN, and then
/// every hash from his entry on recomputed (with the code any client can write from
/// docs/hash-chain.md) and stored, the head's last hash too. The stored chain agrees with
/// itself; only a digest taken before the edit tells.
async fn a_rehashed_edit_is_caught_only_against_an_earlier_digest(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal_with_three_subscriptions(&mut client).await;
    let before_the_edit = digest(&mut client).await;

    tamper(&db, PgBypass::DisableTrigger, &UNITS_REWRITTEN).await;
    rehash_from_the_history(&db, &mut client, "deal").await;

    let alone = verify(&mut client).await;
    assert!(
        alone.ok,
        "the rehashed history should agree with itself: {:?}",
        alone.problems
    );
    let after_the_edit = digest(&mut client).await;
    assert_ne!(after_the_edit.entry_hash, before_the_edit.entry_hash);

    let verdict = verify_against(&mut client, Some(before_the_edit)).await;
    assert!(!verdict.ok);
    assert_eq!(verdict.digest_ok, Some(false));
    assert_eq!(
        verdict.first_bad_sequence, 0,
        "the stored chain itself is whole"
    );
    assert_eq!(verdict.problems.len(), 1, "{:?}", verdict.problems);
    assert!(
        verdict.problems[0].starts_with("digest at sequence 4")
            && verdict.problems[0].contains("changed after the digest was taken"),
        "{:?}",
        verdict.problems
    );
}

backend_tests!(
    an_unhashed_offering_reads_but_refuses_appends_until_migrated,
    a_digest_is_the_latest_entry_and_verifies_later,
    bad_digest_requests_name_their_field,
    a_rehashed_edit_is_caught_only_against_an_earlier_digest,
    rewritten_units_are_found_at_their_sequence,
    a_deleted_and_renumbered_entry_is_found,
    the_chain_holds_across_replicas_and_batches,
    a_client_recomputes_the_chain_from_list_history,
);

/// PostgreSQL only: session_replication_role has no SQLite counterpart.
mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rewritten_units_are_found_past_replica_mode() {
        if let Some(db) = super::common::TestDb::new(super::common::Backend::Postgres).await {
            super::rewritten_units_are_found_past_replica_mode(db).await;
        }
    }
}
