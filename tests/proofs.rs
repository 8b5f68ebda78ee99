//! Merkle proofs over an offering's history (GetInclusionProof, GetConsistencyProof, and the
//! root GetDigest gives), checked as an investor or an auditor checks them: with nothing but the
//! proof and a kept digest, by the client's own code and by `subledger verify` offline.

mod common;

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{
    Client, TestDb, assert_invalid, assert_status, cancel, full_history, offering, subscribe,
};
use subledger::ledger::merkle::{self, Frontier};
use subledger::proto;
use tonic::Code;
use tonic_types::StatusExt as _;

/// Entries written straight into the database, whose tree migrate() builds (three stored
/// subtrees of 256); the appends then extend that tree from the head's frontier.
const GROWN: i64 = 700;
/// Entries after the appends: past the fourth subtree of 256.
const APPENDED: i64 = 70;

async fn digest(client: &mut Client, offering_id: &str) -> proto::Digest {
    client
        .get_digest(proto::GetDigestRequest {
            offering_id: offering_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn inclusion(
    client: &mut Client,
    sequence: i64,
    tree_size: i64,
) -> Result<proto::InclusionProof, tonic::Status> {
    let request = proto::GetInclusionProofRequest {
        offering_id: "grown".into(),
        sequence,
        tree_size,
    };
    client
        .get_inclusion_proof(request)
        .await
        .map(|r| r.into_inner())
}

async fn consistency(
    client: &mut Client,
    offering_id: &str,
    from_size: i64,
    to_size: i64,
) -> Result<proto::ConsistencyProof, tonic::Status> {
    let request = proto::GetConsistencyProofRequest {
        offering_id: offering_id.into(),
        from_size,
        to_size,
    };
    client
        .get_consistency_proof(request)
        .await
        .map(|r| r.into_inner())
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().expect("32 bytes")
}

fn path(hashes: &[Vec<u8>]) -> Vec<[u8; 32]> {
    hashes.iter().map(|h| hash(h)).collect()
}

/// "grown": GROWN entries loaded and migrated (a full offering, its whale holding all but the
/// creation's), then APPENDED cancellations of a unit through the server.
async fn grown_and_appended(db: &TestDb, client: &mut Client) -> (proto::Digest, proto::Digest) {
    common::grow_offering(db, "grown", GROWN).await;
    let early = digest(client, "grown").await;
    for k in 0..APPENDED {
        let request = cancel("grown", "whale", 1, &format!("late-{k}"));
        client.cancel(request).await.unwrap();
    }
    (early, digest(client, "grown").await)
}

async fn proofs_of_a_migrated_and_appended_history_verify_against_its_digests(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    let (early, late) = grown_and_appended(&db, &mut client).await;
    let last = GROWN + APPENDED;
    assert_eq!((early.tree_size, late.tree_size), (GROWN, last));

    // The client's own tree of the history's hashes has the digests' roots.
    let history = full_history(&mut client, "grown").await;
    let hashes: Vec<[u8; 32]> = history.iter().map(|e| hash(&e.entry_hash)).collect();
    let root_of = |size: i64| Frontier::of(&hashes[..size as usize]).root();
    assert_eq!(hash(&early.root_hash), root_of(GROWN));
    assert_eq!(hash(&late.root_hash), root_of(last));

    for sequence in [
        1,
        2,
        255,
        256,
        257,
        512,
        513,
        GROWN,
        GROWN + 1,
        768,
        769,
        last,
    ] {
        for tree_size in [sequence, GROWN.max(sequence), last] {
            let proof = inclusion(&mut client, sequence, tree_size).await.unwrap();
            assert_eq!(proof.entry_hash, history[sequence as usize - 1].entry_hash);
            assert_eq!(hash(&proof.root_hash), root_of(tree_size));
            let index = (sequence - 1) as u64;
            let (entry, root) = (hash(&proof.entry_hash), hash(&proof.root_hash));
            let audit_path = path(&proof.audit_path);
            assert!(
                merkle::verify_inclusion(index, tree_size as u64, &entry, &audit_path, &root),
                "{sequence} in {tree_size}"
            );
        }
    }
    for (from, to) in [
        (1, last),
        (256, 512),
        (GROWN, last),
        (last, last),
        (300, GROWN),
    ] {
        let proof = consistency(&mut client, "grown", from, to).await.unwrap();
        let (from_root, to_root) = (hash(&proof.from_root_hash), hash(&proof.to_root_hash));
        assert_eq!((from_root, to_root), (root_of(from), root_of(to)));
        assert!(
            merkle::verify_consistency(
                from as u64,
                to as u64,
                &from_root,
                &to_root,
                &path(&proof.path)
            ),
            "{from} to {to}"
        );
    }
}

/// A new offering's tree starts with its creation entry and grows with every append.
async fn a_new_offering_proves_from_its_first_entry(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    let first = digest(&mut client, "deal").await;
    assert_eq!(first.tree_size, 1);
    assert_eq!(
        hash(&first.root_hash),
        merkle::leaf_hash(&hash(&first.entry_hash))
    );
    client
        .subscribe(subscribe("deal", "alice", 5, "s-1"))
        .await
        .unwrap();
    let second = digest(&mut client, "deal").await;
    let proof = consistency(&mut client, "deal", 1, 2).await.unwrap();
    assert!(merkle::verify_consistency(
        1,
        2,
        &hash(&first.root_hash),
        &hash(&second.root_hash),
        &path(&proof.path)
    ));
}

async fn proof_requests_out_of_bounds_are_refused_by_reason(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    client
        .create_offering(offering("grown", 100, 0))
        .await
        .unwrap();
    client
        .subscribe(subscribe("grown", "alice", 5, "s-1"))
        .await
        .unwrap();
    assert_invalid(inclusion(&mut client, 0, 2).await, "sequence");
    assert_invalid(inclusion(&mut client, 1, 0).await, "tree_size");
    assert_invalid(inclusion(&mut client, 2, 1).await, "sequence");
    let past = assert_status(
        inclusion(&mut client, 1, 3).await,
        Code::OutOfRange,
        "TREE_SIZE_PAST_HISTORY",
    );
    let metadata = past
        .get_error_details()
        .error_info()
        .unwrap()
        .metadata
        .clone();
    assert_eq!(metadata["tree_size"], "2");
    assert_eq!(metadata["field"], "tree_size");

    assert_invalid(consistency(&mut client, "grown", 0, 2).await, "from_size");
    assert_invalid(consistency(&mut client, "grown", 1, 0).await, "to_size");
    assert_invalid(consistency(&mut client, "grown", 2, 1).await, "from_size");
    assert_status(
        consistency(&mut client, "grown", 1, 3).await,
        Code::OutOfRange,
        "TREE_SIZE_PAST_HISTORY",
    );
    assert_status(
        consistency(&mut client, "missing", 1, 1).await,
        Code::NotFound,
        "OFFERING_NOT_FOUND",
    );
    assert_invalid(consistency(&mut client, "", 1, 1).await, "offering_id");
}

/// Investors of the allocation test: their ALLOCATED entries complete a stored subtree of 256.
const INVESTORS: i64 = 300;

/// An allocation appends its entries in chunks apart from the batch's: the tree's frontier and
/// stored nodes follow them all, so the allocated history proves and verifies like any other.
async fn an_allocation_extends_the_tree_like_any_append(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    let create = proto::CreateOfferingRequest {
        allocation: proto::Allocation::ProRata.into(),
        ..offering("grown", 1_000, 0)
    };
    client.create_offering(create).await.unwrap();
    for k in 0..INVESTORS {
        let request = subscribe("grown", &format!("investor-{k}"), 10, &format!("s-{k}"));
        client.subscribe(request).await.unwrap();
    }
    let before = digest(&mut client, "grown").await;
    client
        .close_offering(proto::CloseOfferingRequest {
            offering_id: "grown".into(),
            request_id: "close".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .allocate_offering(proto::AllocateOfferingRequest {
            offering_id: "grown".into(),
            request_id: "allocate".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let after = digest(&mut client, "grown").await;
    // Created, the subscriptions, closed, one ALLOCATED entry per investor and the status's.
    assert_eq!(after.tree_size, 1 + INVESTORS + 1 + INVESTORS + 1);
    let hashes: Vec<[u8; 32]> = full_history(&mut client, "grown")
        .await
        .iter()
        .map(|e| hash(&e.entry_hash))
        .collect();
    assert_eq!(hash(&after.root_hash), Frontier::of(&hashes).root());
    let proof = consistency(&mut client, "grown", before.tree_size, after.tree_size)
        .await
        .unwrap();
    assert!(merkle::verify_consistency(
        before.tree_size as u64,
        after.tree_size as u64,
        &hash(&before.root_hash),
        &hash(&after.root_hash),
        &path(&proof.path)
    ));
    for sequence in [before.tree_size + 2, 512, after.tree_size] {
        let proof = inclusion(&mut client, sequence, after.tree_size)
            .await
            .unwrap();
        let index = (sequence - 1) as u64;
        let size = after.tree_size as u64;
        let (entry, root) = (hash(&proof.entry_hash), hash(&after.root_hash));
        let audit_path = path(&proof.audit_path);
        assert!(merkle::verify_inclusion(
            index,
            size,
            &entry,
            &audit_path,
            &root
        ));
    }
    let verdict = client
        .verify_offering(proto::VerifyOfferingRequest {
            offering_id: "grown".into(),
            digest: Some(after),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verdict.ok, "{:?}", verdict.problems);
    assert_eq!(verdict.digest_ok, Some(true));
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The reply as grpcurl prints it: proto3 JSON, int64 as strings, bytes in base64.
fn grpcurl_inclusion(proof: &proto::InclusionProof) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "offeringId": proof.offering_id,
        "sequence": proof.sequence.to_string(),
        "treeSize": proof.tree_size.to_string(),
        "entryHash": b64(&proof.entry_hash),
        "auditPath": proof.audit_path.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "rootHash": b64(&proof.root_hash),
    }))
    .unwrap()
}

fn grpcurl_consistency(proof: &proto::ConsistencyProof) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "offeringId": proof.offering_id,
        "fromSize": proof.from_size.to_string(),
        "toSize": proof.to_size.to_string(),
        "path": proof.path.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "fromRootHash": b64(&proof.from_root_hash),
        "toRootHash": b64(&proof.to_root_hash),
    }))
    .unwrap()
}

fn grpcurl_digest(digest: &proto::Digest) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "offeringId": digest.offering_id,
        "sequence": digest.sequence.to_string(),
        "entryHash": b64(&digest.entry_hash),
        "treeSize": digest.tree_size.to_string(),
        "rootHash": b64(&digest.root_hash),
    }))
    .unwrap()
}

/// `subledger verify` with these arguments: exit status and stdout.
fn verify(args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_subledger"))
        .arg("verify")
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run subledger");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let code = output.status.code().expect("an exit status");
    assert!(
        code != 2,
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (code, stdout)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Proofs saved as grpcurl prints them verify offline against the digests they lead to; a
/// flipped byte, or a digest of another root, fails them, and so does a proof with no digest.
async fn saved_proofs_verify_offline_against_kept_digests(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    let (early, late) = grown_and_appended(&db, &mut client).await;
    let dir = tempfile::tempdir().unwrap();
    let included = inclusion(&mut client, 257, late.tree_size).await.unwrap();
    let extended = consistency(&mut client, "grown", early.tree_size, late.tree_size)
        .await
        .unwrap();
    let inclusion_file = write(dir.path(), "inclusion.json", &grpcurl_inclusion(&included));
    let consistency_file = write(
        dir.path(),
        "consistency.json",
        &grpcurl_consistency(&extended),
    );
    let digests = format!("{}\n{}\n", grpcurl_digest(&early), grpcurl_digest(&late));
    let digests_file = write(dir.path(), "digests.json", &digests);

    let (code, stdout) = verify(&[
        "--inclusion",
        &inclusion_file,
        "--consistency",
        &consistency_file,
        "--digests",
        &digests_file,
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.ends_with("OK: 2 proofs checked, 0 failed\n"),
        "{stdout}"
    );

    let mut flipped = included.clone();
    flipped.audit_path[3][7] ^= 0x10;
    let flipped_file = write(dir.path(), "flipped.json", &grpcurl_inclusion(&flipped));
    let (code, stdout) = verify(&["--inclusion", &flipped_file, "--digests", &digests_file]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("does not lead from the entry to the root"),
        "{stdout}"
    );

    // A proof consistent with itself but of another root than the digest's.
    let mut other = late.clone();
    other.root_hash[0] ^= 1;
    let other_file = write(dir.path(), "other.json", &grpcurl_digest(&other));
    let (code, stdout) = verify(&["--inclusion", &inclusion_file, "--digests", &other_file]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("is not the root of the digest"), "{stdout}");

    let (code, stdout) = verify(&["--consistency", &consistency_file]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("no digest of tree_size"), "{stdout}");
}

backend_tests!(
    proofs_of_a_migrated_and_appended_history_verify_against_its_digests,
    a_new_offering_proves_from_its_first_entry,
    proof_requests_out_of_bounds_are_refused_by_reason,
    an_allocation_extends_the_tree_like_any_append,
    saved_proofs_verify_offline_against_kept_digests,
);
