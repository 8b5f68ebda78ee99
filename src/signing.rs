//! Signed digests: a digest proves nothing about where it came from unless the ledger that gave
//! it signs it. `serve --signing-key` signs every GetDigest reply with Ed25519 (ed25519-dalek);
//! `serve` and `verify` hold digests against the keys they are told to trust, several at once so
//! that a key can be rotated, each named by its key id.
//!
//! Key files are PEM, as OpenSSL writes them: the private key PKCS#8 ("BEGIN PRIVATE KEY",
//! what `openssl genpkey -algorithm ed25519` writes too) and the public key SPKI ("BEGIN PUBLIC
//! KEY", what `subledger key public` prints and `--trusted-public-key` reads). What is signed is
//! `ledger::chain::signed_bytes` (docs/hash-chain.md "Signed digests").

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::ledger::chain::{self, Digest, Signed};

/// Bytes of SHA-256 of the raw public key that name it: 64 bits, plenty to tell a ledger's few
/// keys apart, short enough to read out.
pub const KEY_ID_BYTES: usize = 8;

/// A key's name: the first 8 bytes of SHA-256 of its raw 32-byte public key, shown in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_BYTES]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        let hash = Sha256::digest(key.as_bytes());
        let mut id = [0; KEY_ID_BYTES];
        id.copy_from_slice(&hash[..KEY_ID_BYTES]);
        Self(id)
    }

    /// 16 hex digits, either case; None for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 2 * KEY_ID_BYTES || !text.is_ascii() {
            return None;
        }
        let mut id = [0; KEY_ID_BYTES];
        for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain::hex(&self.0))
    }
}

/// Why a digest's signature is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the digest is not signed, and a signed one is required")]
    Unsigned,
    #[error("the digest has no record_time, which its signature covers")]
    NoRecordTime,
    #[error("the digest is signed by key {key_id}, which is not trusted")]
    KeyNotTrusted { key_id: KeyId },
    #[error("the digest is of ledger {found}, not of this ledger ({expected})")]
    OtherLedger { expected: Uuid, found: Uuid },
    #[error(
        "the digest's signature by key {key_id} does not verify: it was not signed so, or a field was changed"
    )]
    Invalid { key_id: KeyId },
}

/// The key a server signs its digests with.
pub struct DigestSigner {
    key: SigningKey,
    key_id: KeyId,
}

impl fmt::Debug for DigestSigner {
    /// The key id only: the private key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestSigner({})", self.key_id)
    }
}

impl DigestSigner {
    pub fn new(key: SigningKey) -> Self {
        let key_id = KeyId::of(&key.verifying_key());
        Self { key, key_id }
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `digest` as a digest of ledger `ledger_id`; a digest with no record_time (never one
    /// of GetDigest) is left unsigned.
    pub fn sign(&self, ledger_id: Uuid, mut digest: Digest) -> Digest {
        digest.signed = chain::signed_bytes(&ledger_id, &digest).map(|bytes| Signed {
            ledger_id,
            key_id: self.key_id.0,
            signature: self.key.sign(&bytes).to_bytes(),
        });
        digest
    }
}

/// The public keys whose digests are believed, by key id: during a rotation the old key and the
/// new one are both trusted, and dropping the old one from the set rotates it out.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: HashMap<KeyId, VerifyingKey>,
}

impl TrustedKeys {
    pub fn trust(&mut self, key: VerifyingKey) {
        self.keys.insert(KeyId::of(&key), key);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a signed digest: a trusted key id, the ledger expected (when one is), a
    /// signature that verifies over its signed bytes. Ok(false) for an unsigned digest, which
    /// the caller may accept or not.
    pub fn check(&self, digest: &Digest, ledger_id: Option<Uuid>) -> Result<bool, SignatureError> {
        let Some(signed) = &digest.signed else {
            return Ok(false);
        };
        let key_id = KeyId(signed.key_id);
        let key = self
            .keys
            .get(&key_id)
            .ok_or(SignatureError::KeyNotTrusted { key_id })?;
        if let Some(expected) = ledger_id
            && expected != signed.ledger_id
        {
            return Err(SignatureError::OtherLedger {
                expected,
                found: signed.ledger_id,
            });
        }
        let bytes =
            chain::signed_bytes(&signed.ledger_id, digest).ok_or(SignatureError::NoRecordTime)?;
        key.verify_strict(&bytes, &Signature::from_bytes(&signed.signature))
            .map_err(|_| SignatureError::Invalid { key_id })?;
        Ok(true)
    }
}

/// What a server does with digests: signs those GetDigest returns (with --signing-key), and
/// believes those VerifyOffering is given when signed by its own key or a --trusted-public-key.
#[derive(Debug, Default)]
pub struct DigestKeys {
    pub signer: Option<DigestSigner>,
    pub trusted: TrustedKeys,
}

impl DigestKeys {
    pub fn new(signing_key: Option<SigningKey>, mut trusted: TrustedKeys) -> Self {
        let signer = signing_key.map(DigestSigner::new);
        if let Some(signer) = &signer {
            trusted.trust(signer.public_key());
        }
        Self { signer, trusted }
    }
}

/// Writes a new random private key to `path` (PKCS#8 PEM, mode 0600), refusing to replace a file.
pub fn write_new_key(path: &Path) -> anyhow::Result<KeyId> {
    let mut secret = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
    getrandom::fill(&mut secret)
        .map_err(|error| anyhow::anyhow!("no randomness from the operating system: {error}"))?;
    let key = SigningKey::from_bytes(&secret);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|error| anyhow::anyhow!("cannot encode the key: {error}"))?;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing key is never replaced)",
                path.display()
            )
        })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(KeyId::of(&key.verifying_key()))
}

/// A private key file (PKCS#8 PEM).
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|error| {
        anyhow::anyhow!(
            "{} is not an Ed25519 private key in PKCS#8 PEM (`subledger key new`): {error}",
            path.display()
        )
    })
}

/// A public key file (SPKI PEM, as `subledger key public` prints it).
pub fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    VerifyingKey::from_public_key_pem(&text).map_err(|error| {
        anyhow::anyhow!(
            "{} is not an Ed25519 public key in PEM (`subledger key public`): {error}",
            path.display()
        )
    })
}

/// The trusted set of the keys in these public key files.
pub fn read_trusted_keys(paths: &[impl AsRef<Path>]) -> anyhow::Result<TrustedKeys> {
    let mut trusted = TrustedKeys::default();
    for path in paths {
        trusted.trust(read_public_key(path.as_ref())?);
    }
    Ok(trusted)
}

/// The public key as `subledger key public` prints it (SPKI PEM).
pub fn public_key_pem(key: &VerifyingKey) -> anyhow::Result<String> {
    key.to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|error| anyhow::anyhow!("cannot encode the public key: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::chain::{Hash, hex};

    const DOC: &str = include_str!("../docs/hash-chain.md");

    /// The value of the line "- `name`: `value`" of the document's signed-digest example.
    fn doc_value(name: &str) -> String {
        let prefix = format!("- signed {name}: `");
        let line = DOC
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("docs/hash-chain.md has no line {prefix:?}"));
        line[prefix.len()..]
            .trim_end_matches('`')
            .split_whitespace()
            .collect()
    }

    /// The documented test key: its 32 secret bytes are 0x00, 0x01, ... 0x1f. Never use it.
    fn example_key() -> SigningKey {
        SigningKey::from_bytes(&std::array::from_fn(|i| i as u8))
    }

    fn example_digest() -> Digest {
        let time = chrono::DateTime::parse_from_rfc3339("2026-11-26T12:00:00.123456Z")
            .unwrap()
            .to_utc();
        let hash = |text: &str| -> Hash { chain::parse_hex(text).unwrap() };
        Digest {
            offering_id: "deal-1".into(),
            sequence: 2,
            entry_hash: hash("9dd81c028c1a07d4618a5c08403d49280f316cead6d0e7e5630960ff28684638"),
            record_time: Some(time),
            root_hash: Some(hash(
                "d4652dc68bf92737d7f93017acc49adc9a3afcefdd0f364e38fd4381cbd322b5",
            )),
            signed: None,
        }
    }

    fn example_ledger() -> Uuid {
        Uuid::parse_str("6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b").unwrap()
    }

    fn trusting(keys: &[&SigningKey]) -> TrustedKeys {
        let mut trusted = TrustedKeys::default();
        for key in keys {
            trusted.trust(key.verifying_key());
        }
        trusted
    }

    #[test]
    fn the_documented_signed_digest_is_what_the_code_computes() {
        let key = example_key();
        let digest = example_digest();
        assert_eq!(hex(key.verifying_key().as_bytes()), doc_value("public key"));
        assert_eq!(
            KeyId::of(&key.verifying_key()).to_string(),
            doc_value("key id")
        );
        // The tree of the chain example's two entries: its creation entry, then the amendment.
        let previous =
            chain::parse_hex("ca29026c12c503d523d8fcbac59b69f23c35e9ab3183eb5748e2a82be9b34306")
                .unwrap();
        let tree = crate::ledger::merkle::Frontier::of([&previous, &digest.entry_hash]);
        assert_eq!(hex(&tree.root()), doc_value("root_hash"));
        assert_eq!(digest.root_hash, Some(tree.root()));
        let bytes = chain::signed_bytes(&example_ledger(), &digest).unwrap();
        assert_eq!(hex(&bytes), doc_value("bytes"));
        let signed = DigestSigner::new(key).sign(example_ledger(), digest);
        assert_eq!(
            hex(&signed.signed.unwrap().signature),
            doc_value("signature")
        );
    }

    #[test]
    fn a_signed_digest_verifies_under_its_key_alone() {
        let (key, other) = (example_key(), SigningKey::from_bytes(&[7; 32]));
        let signed = DigestSigner::new(key.clone()).sign(example_ledger(), example_digest());
        assert_eq!(
            trusting(&[&key]).check(&signed, Some(example_ledger())),
            Ok(true)
        );
        let key_id = KeyId::of(&key.verifying_key());
        assert_eq!(
            trusting(&[&other]).check(&signed, None),
            Err(SignatureError::KeyNotTrusted { key_id })
        );
        // Rotation: old and new trusted at once, each digest checked by its own key id.
        let by_other = DigestSigner::new(other.clone()).sign(example_ledger(), example_digest());
        let both = trusting(&[&key, &other]);
        assert_eq!(both.check(&signed, None), Ok(true));
        assert_eq!(both.check(&by_other, None), Ok(true));
        let found = Uuid::nil();
        assert_eq!(
            both.check(&signed, Some(found)),
            Err(SignatureError::OtherLedger {
                expected: found,
                found: example_ledger()
            })
        );
        assert_eq!(both.check(&example_digest(), None), Ok(false));
    }

    #[test]
    fn every_signed_field_breaks_the_signature() {
        let key = example_key();
        let trusted = trusting(&[&key]);
        let signed = DigestSigner::new(key.clone()).sign(example_ledger(), example_digest());
        let key_id = KeyId::of(&key.verifying_key());
        let changes: [fn(&mut Digest); 8] = [
            |d| d.offering_id.push('x'),
            |d| d.sequence += 1,
            |d| d.entry_hash[0] ^= 1,
            |d| d.root_hash.as_mut().unwrap()[31] ^= 1,
            |d| d.root_hash = None,
            |d| *d.record_time.as_mut().unwrap() += chrono::Duration::microseconds(1),
            |d| d.signed.as_mut().unwrap().ledger_id = Uuid::nil(),
            |d| d.signed.as_mut().unwrap().signature[0] ^= 1,
        ];
        for change in changes {
            let mut digest = signed.clone();
            change(&mut digest);
            assert_eq!(
                trusted.check(&digest, None),
                Err(SignatureError::Invalid { key_id })
            );
        }
        let mut no_time = signed.clone();
        no_time.record_time = None;
        assert_eq!(
            trusted.check(&no_time, None),
            Err(SignatureError::NoRecordTime)
        );
    }

    #[test]
    fn key_files_round_trip_and_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let key_id = write_new_key(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let key = read_signing_key(&path).unwrap();
        assert_eq!(KeyId::of(&key.verifying_key()), key_id);
        assert!(write_new_key(&path).is_err());
        let public = dir.path().join("key.pub");
        std::fs::write(&public, public_key_pem(&key.verifying_key()).unwrap()).unwrap();
        assert_eq!(read_public_key(&public).unwrap(), key.verifying_key());
        assert!(
            read_public_key(&path).is_err(),
            "a private key is not a public one"
        );
        assert_eq!(KeyId::parse(&key_id.to_string()), Some(key_id));
        assert_eq!(KeyId::parse("0011"), None);
    }
}
