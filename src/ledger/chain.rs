//! The per-offering hash chain that makes the history tamper-evident.
//!
//! Every entry carries `entry_hash = SHA-256(previous hash || canonical encoding of the entry)`,
//! where the previous hash is that of the entry one sequence earlier in the same offering (32
//! zero bytes for sequence 1). Changing, removing or renumbering any stored entry changes every
//! hash from there on, so a verifier that recomputes the chain finds the first sequence touched;
//! the head keeps the latest hash, so appending needs no extra read.
//!
//! The encoding is specified in docs/hash-chain.md precisely enough to be recomputed in another
//! language from a ListHistory page; a test below checks the document's worked example against
//! this code, so the two cannot drift apart.

use sha2::{Digest as _, Sha256};

use super::types::{Entry, Offering, Terms, Timestamp};

pub use super::hash::Hash;

/// Where an offering's chain stood at one moment (GetDigest): kept elsewhere, it later proves
/// that the history up to `sequence` has not changed since, even if every hash was recomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    pub offering_id: String,
    pub sequence: i64,
    pub entry_hash: Hash,
    /// The entry's record_time; a digest kept without it is checked by its hash alone (which
    /// covers the time anyway).
    pub record_time: Option<Timestamp>,
    /// The root of the Merkle tree of the first `sequence` entries (`merkle`); None in a digest
    /// taken before the tree existed.
    pub root_hash: Option<Hash>,
    /// Who vouches for it (`crate::signing`): None in a digest of a server with no signing key.
    pub signed: Option<Signed>,
}

/// An Ed25519 signature's length (RFC 8032).
pub const SIGNATURE_BYTES: usize = 64;

/// A digest's signature (docs/hash-chain.md "Signed digests"): by which key, over which ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The database the offering lives in (made by its first migrate); the signature covers it.
    pub ledger_id: uuid::Uuid,
    /// The first 8 bytes of SHA-256 of the signer's raw public key.
    pub key_id: [u8; 8],
    /// Ed25519, over `signed_bytes`.
    pub signature: [u8; SIGNATURE_BYTES],
}

impl Digest {
    /// The digest of the head's latest entry: the head keeps its hash, and its update_time is
    /// that entry's record_time.
    pub fn of(head: &Offering) -> Self {
        Self {
            offering_id: head.offering_id.clone(),
            sequence: head.version,
            entry_hash: head.last_hash,
            record_time: Some(head.update_time),
            // An offering whose tree migrate() has not built yet has none to give.
            root_hash: (head.tree.size() == head.version as u64).then(|| head.tree.root()),
            signed: None,
        }
    }
}

/// The first field of the bytes a digest's signature covers: no entry encoding (which starts
/// with a version byte, then a length) and no other protocol's message reads as one of these.
pub const DIGEST_SIGNATURE_DOMAIN: &str = "subledger.v1.digest-signature";

/// What a digest's signature covers, with the entry encoding's primitives: the domain, the 16
/// bytes of the ledger id, offering_id, sequence, entry_hash, root_hash (32 zero bytes when
/// there is no tree), tree_size (0 then), record_time. None without a record_time, which the
/// signature must cover.
pub fn signed_bytes(ledger_id: &uuid::Uuid, digest: &Digest) -> Option<Vec<u8>> {
    let record_time = digest.record_time?;
    let (root_hash, tree_size) = match digest.root_hash {
        Some(root) => (root, digest.sequence),
        None => ([0; 32], 0),
    };
    let mut out = Vec::with_capacity(200);
    put_str(&mut out, DIGEST_SIGNATURE_DOMAIN);
    out.extend_from_slice(ledger_id.as_bytes());
    put_str(&mut out, &digest.offering_id);
    put_i64(&mut out, digest.sequence);
    out.extend_from_slice(&digest.entry_hash);
    out.extend_from_slice(&root_hash);
    put_i64(&mut out, tree_size);
    put_time(&mut out, record_time);
    Some(out)
}

/// The "previous hash" of sequence 1.
pub const GENESIS: Hash = [0; 32];

/// The first byte of every encoding: which version of the encoding below was hashed.
pub const ENCODING_VERSION: u8 = 1;

/// The canonical encoding of `entry`, version 1 (docs/hash-chain.md): the version byte, then
/// every field in a fixed order, each in a fixed-width or length-prefixed form, so that no two
/// different entries encode alike.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(ENCODING_VERSION);
    put_str(&mut out, &entry.offering_id);
    put_i64(&mut out, entry.sequence);
    put_i64(&mut out, entry.kind as i64);
    put_str(&mut out, &entry.investor_id);
    put_i64(&mut out, entry.units_delta);
    put_i64(&mut out, entry.investor_units_after);
    put_i64(&mut out, entry.offering_units_after);
    put_str(&mut out, &entry.request_id);
    put_i64(&mut out, entry.requested_units);
    put_i64(&mut out, entry.expected_version);
    put_time(&mut out, entry.record_time);
    put_str(&mut out, &entry.actor);
    put_i64(&mut out, entry.demand_delta);
    put_i64(&mut out, entry.investor_demand_after);
    put_i64(&mut out, entry.offering_demand_after);
    put_terms(&mut out, entry.terms_before.as_ref());
    put_terms(&mut out, entry.terms_after.as_ref());
    out
}

/// The hash of `entry` following the entry whose hash is `previous` (GENESIS for sequence 1).
pub fn entry_hash(previous: &Hash, entry: &Entry) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(encode(entry));
    hasher.finalize().into()
}

/// Sets `entry.entry_hash` to follow `previous`, and returns it (the next entry's previous).
pub fn link(previous: &Hash, entry: &mut Entry) -> Hash {
    entry.entry_hash = entry_hash(previous, entry);
    entry.entry_hash
}

/// Links consecutive entries (in sequence order) to the one whose hash is `previous`, whatever
/// hashes they held; returns the last hash. The backfill of entries recorded before the chain
/// uses it, a page at a time.
pub fn link_all(previous: Hash, entries: &mut [Entry]) -> Hash {
    entries
        .iter_mut()
        .fold(previous, |previous, entry| link(&previous, entry))
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    // Ids are at most 128 characters and names 256: far inside u32.
    let len = u32::try_from(value.len()).expect("a stored string is shorter than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// Microseconds since the Unix epoch: the precision both databases store, so the encoding is of
/// exactly what a later read returns.
fn put_time(out: &mut Vec<u8>, time: Timestamp) {
    put_i64(out, time.timestamp_micros());
}

fn put_terms(out: &mut Vec<u8>, terms: Option<&Terms>) {
    let Some(terms) = terms else {
        out.push(0);
        return;
    };
    out.push(1);
    put_str(out, &terms.name);
    put_i64(out, terms.max_units);
    put_i64(out, terms.max_units_per_investor);
    match terms.close_time {
        None => out.push(0),
        Some(close) => {
            out.push(1);
            put_time(out, close);
        }
    }
}

/// Lower-case hex, as docs/hash-chain.md and the problems VerifyOffering reports print hashes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 written in hex (64 digits, either case); None for anything else.
pub fn parse_hex(text: &str) -> Option<Hash> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let digit = |d: u8| char::from(d).to_digit(16);
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks(2)) {
        // Two hex digits make at most 255.
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::EntryKind;

    const DOC: &str = include_str!("../../docs/hash-chain.md");

    /// The value of the line "`name`: `value`" of the document's worked example.
    fn doc_value(name: &str) -> String {
        let prefix = format!("- {name}: `");
        let line = DOC
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("docs/hash-chain.md has no line {prefix:?}"));
        line[prefix.len()..]
            .trim_end_matches('`')
            .split_whitespace()
            .collect()
    }

    /// The example entry of docs/hash-chain.md.
    fn example() -> Entry {
        let time = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        Entry {
            offering_id: "deal-1".into(),
            sequence: 2,
            kind: EntryKind::OfferingAmended,
            investor_id: String::new(),
            units_delta: 0,
            investor_units_after: 0,
            offering_units_after: 0,
            request_id: "amend-1".into(),
            requested_units: 0,
            expected_version: 1,
            record_time: time("2026-11-26T12:00:00.123456Z"),
            actor: "ops".into(),
            demand_delta: 0,
            investor_demand_after: 0,
            offering_demand_after: 0,
            terms_before: Some(Terms {
                name: "Deal".into(),
                max_units: 1000,
                max_units_per_investor: 0,
                close_time: None,
            }),
            terms_after: Some(Terms {
                name: "Deal".into(),
                max_units: 500,
                max_units_per_investor: 0,
                close_time: Some(time("2026-12-31T00:00:00Z")),
            }),
            entry_hash: GENESIS,
        }
    }

    /// The creation entry whose hash is the example's previous hash.
    fn example_created() -> Entry {
        let mut entry = example();
        entry.sequence = 1;
        entry.kind = EntryKind::OfferingCreated;
        entry.request_id = "create-1".into();
        entry.requested_units = 1000;
        entry.expected_version = 0;
        entry.record_time = chrono::DateTime::parse_from_rfc3339("2026-11-26T11:59:00.000001Z")
            .unwrap()
            .to_utc();
        entry.terms_after = entry.terms_before.take();
        entry
    }

    #[test]
    fn the_documented_example_is_what_the_code_computes() {
        let entry = example();
        assert_eq!(hex(&encode(&entry)), doc_value("encoding"));
        let previous = entry_hash(&GENESIS, &example_created());
        assert_eq!(hex(&previous), doc_value("previous hash"));
        assert_eq!(hex(&entry_hash(&previous, &entry)), doc_value("entry_hash"));
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = example();
        let hash = entry_hash(&GENESIS, &base);
        let mut changed = Vec::new();
        let mut variant = |change: &dyn Fn(&mut Entry)| {
            let mut entry = base.clone();
            change(&mut entry);
            changed.push(entry_hash(&GENESIS, &entry));
        };
        variant(&|e| e.offering_id.push('x'));
        variant(&|e| e.sequence += 1);
        variant(&|e| e.kind = EntryKind::OfferingClosed);
        variant(&|e| e.investor_id.push('x'));
        variant(&|e| e.units_delta += 1);
        variant(&|e| e.investor_units_after += 1);
        variant(&|e| e.offering_units_after += 1);
        variant(&|e| e.request_id.push('x'));
        variant(&|e| e.requested_units += 1);
        variant(&|e| e.expected_version += 1);
        variant(&|e| e.record_time += chrono::Duration::microseconds(1));
        variant(&|e| e.actor.push('x'));
        variant(&|e| e.demand_delta += 1);
        variant(&|e| e.investor_demand_after += 1);
        variant(&|e| e.offering_demand_after += 1);
        variant(&|e| e.terms_before = None);
        variant(&|e| e.terms_after.as_mut().unwrap().close_time = None);
        variant(&|e| e.terms_after.as_mut().unwrap().max_units_per_investor += 1);
        assert!(changed.iter().all(|h| *h != hash));
        assert_ne!(
            entry_hash(&[1; 32], &base),
            hash,
            "the previous hash counts"
        );
    }

    #[test]
    fn hex_reads_back_what_it_writes_and_nothing_else() {
        let hash = entry_hash(&GENESIS, &example());
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
        assert_eq!(parse_hex(&hex(&hash).to_uppercase()), Some(hash));
        assert_eq!(parse_hex(&hex(&hash)[2..]), None);
        assert_eq!(parse_hex(&format!("+f{}", &hex(&hash)[2..])), None);
        assert_eq!(parse_hex(&format!("é{}", &hex(&hash)[2..])), None);
    }

    #[test]
    fn strings_are_length_prefixed_so_fields_cannot_trade_bytes() {
        let mut a = example();
        a.investor_id = "ab".into();
        a.request_id = "c".into();
        let mut b = example();
        b.investor_id = "a".into();
        b.request_id = "bc".into();
        assert_ne!(encode(&a), encode(&b));
    }
}
