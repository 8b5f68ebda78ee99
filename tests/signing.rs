//! Signed digests (docs/hash-chain.md "Signed digests"): GetDigest with and without a signing
//! key, VerifyOffering refusing a digest forged, altered, of another ledger or by a key not (or
//! no longer) trusted, and the real binary's `key new`, `key public`, `serve --signing-key` and
//! `verify --digests --public-key`.

mod common;

use std::path::Path;
use std::process::Output;

use common::process::{ServerProcess, free_address};
use common::{Client, TestDb, assert_status, offering, subscribe};
use ed25519_dalek::SigningKey;
use subledger::ledger::chain::{Digest, Signed};
use subledger::proto;
use subledger::server::ServerConfig;
use subledger::signing::{DigestKeys, DigestSigner, KeyId, TrustedKeys};
use tonic::Code;

fn subledger(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_subledger"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run subledger")
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A server config that signs with `signing` and trusts `trusted` besides.
fn signing(signing: Option<&SigningKey>, trusted: &[&SigningKey]) -> ServerConfig {
    let mut keys = TrustedKeys::default();
    for key in trusted {
        keys.trust(key.verifying_key());
    }
    ServerConfig {
        digest_keys: DigestKeys::new(signing.cloned(), keys),
        ..ServerConfig::default()
    }
}

async fn deal(client: &mut Client) {
    client
        .create_offering(offering("deal", 100, 0))
        .await
        .unwrap();
    for (investor, units) in [("alice", 10), ("bob", 5)] {
        client
            .subscribe(subscribe("deal", investor, units, investor))
            .await
            .unwrap();
    }
}

async fn get_digest(client: &mut Client) -> proto::Digest {
    client
        .get_digest(proto::GetDigestRequest {
            offering_id: "deal".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn verify(
    client: &mut Client,
    digest: proto::Digest,
) -> Result<proto::VerifyOfferingResponse, tonic::Status> {
    client
        .verify_offering(proto::VerifyOfferingRequest {
            offering_id: "deal".into(),
            digest: Some(digest),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The domain digest of a GetDigest reply, as a library user would hold it.
fn domain(digest: &proto::Digest) -> Digest {
    let time = digest.record_time.unwrap();
    Digest {
        offering_id: digest.offering_id.clone(),
        sequence: digest.sequence,
        entry_hash: digest.entry_hash.as_slice().try_into().unwrap(),
        record_time: chrono::DateTime::from_timestamp(time.seconds, time.nanos as u32),
        root_hash: Some(digest.root_hash.as_slice().try_into().unwrap()),
        signed: None,
    }
}

/// `digest` signed by `key` as a digest of `ledger_id`, in the proto's form.
fn signed_by(digest: &proto::Digest, key: &SigningKey, ledger_id: &str) -> proto::Digest {
    let ledger_id = uuid::Uuid::parse_str(ledger_id).unwrap();
    let signed = DigestSigner::new(key.clone()).sign(ledger_id, domain(digest));
    let Signed {
        ledger_id,
        key_id,
        signature,
    } = signed.signed.unwrap();
    proto::Digest {
        ledger_id: ledger_id.to_string(),
        key_id: KeyId(key_id).to_string(),
        signature: signature.to_vec(),
        ..digest.clone()
    }
}

async fn get_digest_is_signed_only_with_a_signing_key(db: TestDb) {
    let server = db.start_server().await;
    let mut client = server.client().await;
    deal(&mut client).await;
    let unsigned = get_digest(&mut client).await;
    let ledger_id = uuid::Uuid::parse_str(&unsigned.ledger_id).expect("a UUID ledger id");
    assert!(unsigned.signature.is_empty() && unsigned.key_id.is_empty());
    server.stop().await;

    let server = db.start_server_with(signing(Some(&key(1)), &[])).await;
    let mut client = server.client().await;
    let signed = get_digest(&mut client).await;
    assert_eq!(
        signed.ledger_id,
        ledger_id.to_string(),
        "the ledger id stays"
    );
    assert_eq!(
        signed.key_id,
        KeyId::of(&key(1).verifying_key()).to_string()
    );
    assert_eq!(signed.signature.len(), 64);
    // The server's signature is the one any holder of the public key recomputes.
    assert_eq!(signed, signed_by(&unsigned, &key(1), &signed.ledger_id));
    let verdict = verify(&mut client, signed).await.unwrap();
    assert!(verdict.ok && verdict.digest_ok == Some(true), "{verdict:?}");
}

async fn verify_offering_refuses_forged_altered_and_untrusted_digests(db: TestDb) {
    let (old, new, stranger) = (key(1), key(2), key(3));
    let server = db.start_server_with(signing(Some(&old), &[])).await;
    let mut client = server.client().await;
    deal(&mut client).await;
    let by_old = get_digest(&mut client).await;

    // Signed by a key the server does not trust.
    let forged = signed_by(&by_old, &stranger, &by_old.ledger_id);
    let status = assert_status(
        verify(&mut client, forged).await,
        Code::FailedPrecondition,
        "DIGEST_KEY_NOT_TRUSTED",
    );
    assert!(
        status
            .message()
            .contains(&KeyId::of(&stranger.verifying_key()).to_string())
    );
    // One field changed after signing: the signature no longer verifies.
    let mut altered = by_old.clone();
    altered.record_time.as_mut().unwrap().nanos += 1000;
    assert_status(
        verify(&mut client, altered).await,
        Code::InvalidArgument,
        "DIGEST_SIGNATURE_INVALID",
    );
    let mut altered = by_old.clone();
    altered.signature[10] ^= 1;
    assert_status(
        verify(&mut client, altered).await,
        Code::InvalidArgument,
        "DIGEST_SIGNATURE_INVALID",
    );
    // Well signed, but of another ledger.
    let elsewhere = signed_by(&by_old, &old, &uuid::Uuid::new_v4().to_string());
    assert_status(
        verify(&mut client, elsewhere).await,
        Code::FailedPrecondition,
        "DIGEST_OTHER_LEDGER",
    );
    // A signature without its key id is malformed.
    let no_key_id = proto::Digest {
        key_id: String::new(),
        ..by_old.clone()
    };
    common::assert_invalid(verify(&mut client, no_key_id).await, "digest.key_id");
    server.stop().await;

    // Rotation: sign with the new key while still trusting the old one.
    let server = db.start_server_with(signing(Some(&new), &[&old])).await;
    let mut client = server.client().await;
    let by_new = get_digest(&mut client).await;
    assert_ne!(by_new.key_id, by_old.key_id);
    for digest in [by_old.clone(), by_new.clone()] {
        let verdict = verify(&mut client, digest).await.unwrap();
        assert_eq!(verdict.digest_ok, Some(true), "{verdict:?}");
    }
    server.stop().await;

    // The old key rotated out: its digests are no longer believed.
    let server = db.start_server_with(signing(Some(&new), &[])).await;
    let mut client = server.client().await;
    assert_status(
        verify(&mut client, by_old.clone()).await,
        Code::FailedPrecondition,
        "DIGEST_KEY_NOT_TRUSTED",
    );
    assert!(verify(&mut client, by_new).await.unwrap().ok);
    // An unsigned digest is still the caller's own word, checked as before.
    let unsigned = proto::Digest {
        signature: vec![],
        key_id: String::new(),
        ..by_old
    };
    assert_eq!(
        verify(&mut client, unsigned).await.unwrap().digest_ok,
        Some(true)
    );
}

/// GetDigest's reply as grpcurl prints it (proto3 JSON: camelCase, int64 as strings, bytes in
/// base64), appended to `path`.
fn keep(digest: &proto::Digest, path: &Path) {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let time = digest.record_time.unwrap();
    let record_time = chrono::DateTime::from_timestamp(time.seconds, time.nanos as u32)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let text = format!(
        "{{\n  \"offeringId\": \"{}\",\n  \"sequence\": \"{}\",\n  \"entryHash\": \"{}\",\n  \"recordTime\": \"{record_time}\",\n  \"treeSize\": \"{}\",\n  \"rootHash\": \"{}\",\n  \"ledgerId\": \"{}\",\n  \"signature\": \"{}\",\n  \"keyId\": \"{}\"\n}}\n",
        digest.offering_id,
        digest.sequence,
        b64(&digest.entry_hash),
        digest.tree_size,
        b64(&digest.root_hash),
        digest.ledger_id,
        b64(&digest.signature),
        digest.key_id,
    );
    let mut kept = std::fs::read_to_string(path).unwrap_or_default();
    kept.push_str(&text);
    std::fs::write(path, kept).unwrap();
}

/// Exit status and stdout of `subledger verify` with these digests and public keys.
fn verify_binary(db: &TestDb, digests: &Path, public_keys: &[&Path]) -> (i32, String) {
    let mut args = vec!["verify", "--database-url", &db.url];
    args.extend(["--digests", digests.to_str().unwrap()]);
    for key in public_keys {
        args.extend(["--public-key", key.to_str().unwrap()]);
    }
    let output = subledger(&args);
    let code = output.status.code().unwrap();
    assert_ne!(code, 2, "{}", String::from_utf8_lossy(&output.stderr));
    (code, String::from_utf8(output.stdout).unwrap())
}

async fn the_binary_signs_and_verify_checks_with_the_public_key(db: TestDb) {
    let folder = tempfile::tempdir().unwrap();
    let path = |name: &str| folder.path().join(name);
    for name in ["key.pem", "other.pem"] {
        let made = subledger(&["key", "new", "--out", path(name).to_str().unwrap()]);
        assert!(made.status.success(), "{made:?}");
    }
    let again = subledger(&["key", "new", "--out", path("key.pem").to_str().unwrap()]);
    assert!(!again.status.success(), "an existing key is never replaced");
    for (private, public) in [("key.pem", "key.pub"), ("other.pem", "other.pub")] {
        let printed = subledger(&["key", "public", "--in", path(private).to_str().unwrap()]);
        assert!(printed.status.success(), "{printed:?}");
        assert!(printed.stdout.starts_with(b"-----BEGIN PUBLIC KEY-----"));
        std::fs::write(path(public), printed.stdout).unwrap();
    }

    // A public key is no signing key: serve refuses to start, naming the file.
    let refused = subledger(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--signing-key",
        path("key.pub").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not an Ed25519 private key"), "{stderr}");

    let key_path = path("key.pem");
    let flags = ["--signing-key", key_path.to_str().unwrap()];
    let server = ServerProcess::start_with(&db.url, free_address(), &flags).await;
    let mut client = server.client().await;
    deal(&mut client).await;
    let digest = get_digest(&mut client).await;
    drop(server);
    keep(&digest, &path("digests.json"));

    let (code, out) = verify_binary(&db, &path("digests.json"), &[&path("key.pub")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("OK: 1 offering, 3 entries, 1 digest checked"),
        "{out}"
    );
    // Rotation on the auditor's side: several keys, each digest checked by its key id.
    let both = [path("other.pub"), path("key.pub")];
    let (code, out) = verify_binary(&db, &path("digests.json"), &[&both[0], &both[1]]);
    assert_eq!(code, 0, "{out}");

    let (code, out) = verify_binary(&db, &path("digests.json"), &[&path("other.pub")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("which is not trusted"), "{out}");

    let mut altered = digest.clone();
    altered.sequence -= 1;
    altered.tree_size -= 1;
    keep(&altered, &path("altered.json"));
    let (code, out) = verify_binary(&db, &path("altered.json"), &[&path("key.pub")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify"), "{out}");

    let unsigned = proto::Digest {
        signature: vec![],
        key_id: String::new(),
        ..digest
    };
    keep(&unsigned, &path("unsigned.json"));
    let (code, out) = verify_binary(&db, &path("unsigned.json"), &[&path("key.pub")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not signed"), "{out}");
    // Without a public key, an unsigned digest is checked as before.
    let (code, out) = verify_binary(&db, &path("unsigned.json"), &[]);
    assert_eq!(code, 0, "{out}");
}

/// An investor's check with nothing but the proof, the signed digest and the public key: no
/// database, no server.
async fn a_proof_checks_offline_against_a_signed_digest_only(db: TestDb) {
    let server = db.start_server_with(signing(Some(&key(1)), &[])).await;
    let mut client = server.client().await;
    deal(&mut client).await;
    let digest = get_digest(&mut client).await;
    let proof = client
        .get_inclusion_proof(proto::GetInclusionProofRequest {
            offering_id: "deal".into(),
            sequence: 2,
            tree_size: digest.tree_size,
        })
        .await
        .unwrap()
        .into_inner();
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let folder = tempfile::tempdir().unwrap();
    let path = |name: &str| folder.path().join(name);
    let grpcurl_proof = serde_json::json!({
        "offeringId": proof.offering_id,
        "sequence": proof.sequence.to_string(),
        "treeSize": proof.tree_size.to_string(),
        "entryHash": b64(&proof.entry_hash),
        "auditPath": proof.audit_path.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "rootHash": b64(&proof.root_hash),
    });
    std::fs::write(path("proof.json"), grpcurl_proof.to_string()).unwrap();
    keep(&digest, &path("digest.json"));
    for (seed, name) in [(1, "key.pub"), (2, "other.pub")] {
        let pem = subledger::signing::public_key_pem(&key(seed).verifying_key()).unwrap();
        std::fs::write(path(name), pem).unwrap();
    }
    let check = |public_key: &str| {
        let output = subledger(&[
            "verify",
            "--inclusion",
            path("proof.json").to_str().unwrap(),
            "--digests",
            path("digest.json").to_str().unwrap(),
            "--public-key",
            path(public_key).to_str().unwrap(),
        ]);
        let stdout = String::from_utf8(output.stdout).unwrap();
        (output.status.code().unwrap(), stdout)
    };
    let (code, out) = check("key.pub");
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("OK: 1 proofs checked, 0 failed\n"), "{out}");
    // The same proof and digest, but the digest's signer is not the key the investor trusts:
    // the digest is refused, and with it the only root the proof could lead to.
    let (code, out) = check("other.pub");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("which is not trusted"), "{out}");
}

backend_tests!(
    a_proof_checks_offline_against_a_signed_digest_only,
    get_digest_is_signed_only_with_a_signing_key,
    verify_offering_refuses_forged_altered_and_untrusted_digests,
    the_binary_signs_and_verify_checks_with_the_public_key,
);
