//! The digests file of `subledger verify --digests`: earlier GetDigest replies, kept outside
//! subledger, one JSON object after another.
//!
//! Two spellings are read, so that a digest can be kept however it was taken:
//! - what grpcurl prints for GetDigest (camelCase names, int64 as a string, the hash in base64,
//!   pretty-printed over several lines: appending grpcurl's output to a file is enough);
//! - JSON lines in the export's spelling (snake_case, the hash in hex).

use anyhow::{Context, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::export::{parse_hash, parse_time};
use crate::ledger::chain::{Digest, Hash, SIGNATURE_BYTES, Signed};
use crate::signing::KeyId;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestText {
    #[serde(alias = "offeringId")]
    offering_id: String,
    sequence: Sequence,
    #[serde(alias = "entryHash")]
    entry_hash: String,
    #[serde(alias = "recordTime", default)]
    record_time: Option<String>,
    /// Absent from digests taken before the Merkle tree (and from grpcurl's output for 0).
    #[serde(alias = "treeSize", default)]
    tree_size: Option<Sequence>,
    #[serde(alias = "rootHash", default)]
    root_hash: Option<String>,
    /// Set by GetDigest; part of what a signature covers.
    #[serde(alias = "ledgerId", default)]
    ledger_id: Option<String>,
    /// Absent (or empty) in an unsigned digest: base64 (grpcurl) or hex, 64 bytes.
    #[serde(default)]
    signature: Option<String>,
    #[serde(alias = "keyId", default)]
    key_id: Option<String>,
}

/// proto3 JSON writes int64 as a string; JSON lines may write a number.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Sequence {
    Number(i64),
    Text(String),
}

/// Every digest in `text`, in the order written; the error names the digest that is not one.
pub fn parse(text: &str) -> anyhow::Result<Vec<Digest>> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<DigestText>()
        .enumerate()
        .map(|(index, digest)| {
            let number = index + 1;
            digest
                .map_err(anyhow::Error::from)
                .and_then(DigestText::parse)
                .with_context(|| format!("digest {number}"))
        })
        .collect()
}

impl DigestText {
    fn parse(self) -> anyhow::Result<Digest> {
        let sequence = self.sequence.number("sequence")?;
        if sequence < 1 {
            return Err(anyhow!("sequence {sequence} is below 1"));
        }
        let tree_size = match self.tree_size {
            None => 0,
            Some(size) => size.number("tree_size")?,
        };
        if tree_size != 0 && tree_size != sequence {
            return Err(anyhow!(
                "tree_size {tree_size} is not the sequence {sequence}"
            ));
        }
        let root_hash = match (tree_size, self.root_hash.as_deref()) {
            (0, None | Some("")) => None,
            (0, Some(_)) => return Err(anyhow!("a root_hash without a tree_size")),
            (_, Some(text)) => Some(hash(text)?),
            (_, None) => return Err(anyhow!("a tree_size without a root_hash")),
        };
        let signed = match self.signature.as_deref() {
            None | Some("") => None,
            Some(text) => Some(Signed {
                signature: signature(text)?,
                key_id: self
                    .key_id
                    .as_deref()
                    .and_then(KeyId::parse)
                    .ok_or_else(|| anyhow!("a signature without a key_id of 16 hex digits"))?
                    .0,
                ledger_id: self
                    .ledger_id
                    .as_deref()
                    .and_then(|text| uuid::Uuid::parse_str(text).ok())
                    .ok_or_else(|| anyhow!("a signature without a ledger_id (a UUID)"))?,
            }),
        };
        Ok(Digest {
            signed,
            offering_id: self.offering_id,
            sequence,
            entry_hash: hash(&self.entry_hash)?,
            record_time: self
                .record_time
                .map(|text| parse_time("record_time", &text))
                .transpose()?,
            root_hash,
        })
    }
}

impl Sequence {
    pub(crate) fn number(self, name: &str) -> anyhow::Result<i64> {
        match self {
            Self::Number(n) => Ok(n),
            Self::Text(text) => text
                .parse()
                .map_err(|_| anyhow!("{name} {text:?} is not a number")),
        }
    }
}

/// An Ed25519 signature: 128 hex digits, or base64 as proto3 JSON writes bytes.
fn signature(text: &str) -> anyhow::Result<[u8; SIGNATURE_BYTES]> {
    let bytes = if text.len() == 2 * SIGNATURE_BYTES {
        (0..SIGNATURE_BYTES)
            .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
    } else {
        STANDARD.decode(text).ok()
    };
    bytes
        .and_then(|bytes| <[u8; SIGNATURE_BYTES]>::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| {
            anyhow!("signature {text:?} is neither 128 hex digits nor 64 bytes of base64")
        })
}

/// 64 hex digits, or the 44 characters of base64 that proto3 JSON writes for 32 bytes.
pub(crate) fn hash(text: &str) -> anyhow::Result<Hash> {
    if text.len() == 64 {
        return parse_hash("entry_hash", text);
    }
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| {
            anyhow!("entry_hash {text:?} is neither 64 hex digits nor 32 bytes of base64")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpcurl_output_and_json_lines_alike() {
        let grpcurl = r#"{
  "offeringId": "deal",
  "sequence": "4",
  "entryHash": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
  "recordTime": "2026-11-26T12:00:00.123456Z"
}
"#;
        let line = r#"{"offering_id":"deal","sequence":4,"entry_hash":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"}"#;
        let digests = parse(&format!("{grpcurl}{line}\n")).unwrap();
        assert_eq!(digests.len(), 2);
        assert_eq!(digests[0].entry_hash, digests[1].entry_hash);
        assert_eq!(digests[0].entry_hash[31], 31);
        assert_eq!(digests[0].sequence, 4);
        assert!(digests[0].record_time.is_some() && digests[1].record_time.is_none());
    }

    #[test]
    fn reads_the_merkle_root_of_a_digest_and_refuses_half_of_one() {
        let grpcurl = r#"{
  "offeringId": "deal",
  "sequence": "4",
  "entryHash": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
  "treeSize": "4",
  "rootHash": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
}"#;
        let digests = parse(grpcurl).unwrap();
        assert_eq!(digests[0].root_hash.unwrap()[31], 31);
        let other_size = grpcurl.replace(r#""treeSize": "4""#, r#""treeSize": "3""#);
        assert!(parse(&other_size).is_err());
        let no_root = grpcurl.replace(r#""rootHash""#, r#""recordTime""#);
        assert!(parse(&no_root).is_err());
    }

    #[test]
    fn reads_a_signature_in_base64_or_hex_and_refuses_one_without_its_key_id() {
        let signature = [7u8; 64];
        let grpcurl = format!(
            r#"{{"offeringId": "deal", "sequence": "4", "entryHash": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "recordTime": "2026-11-26T12:00:00.123456Z", "ledgerId": "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "signature": "{}", "keyId": "56475aa75463474c"}}"#,
            STANDARD.encode(signature)
        );
        let line = grpcurl.replace(&STANDARD.encode(signature), &"07".repeat(64));
        for text in [&grpcurl, &line] {
            let signed = parse(text).unwrap().remove(0).signed.unwrap();
            assert_eq!(signed.signature, signature);
            assert_eq!(KeyId(signed.key_id).to_string(), "56475aa75463474c");
            assert_eq!(
                signed.ledger_id.to_string(),
                "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
            );
        }
        let unsigned = grpcurl.replace(&STANDARD.encode(signature), "");
        assert!(parse(&unsigned).unwrap()[0].signed.is_none());
        assert!(parse(&grpcurl.replace("56475aa75463474c", "")).is_err());
        assert!(parse(&grpcurl.replace("6f1c2a3b-", "")).is_err());
    }

    #[test]
    fn a_bad_digest_is_named() {
        let error = parse(r#"{"offering_id":"a","sequence":1,"entry_hash":"00"}"#).unwrap_err();
        assert!(
            format!("{error:#}").starts_with("digest 1: entry_hash"),
            "{error:#}"
        );
        assert!(parse(r#"{"offering_id":"a","sequence":0,"entry_hash":""}"#).is_err());
        assert!(parse(r#"{"offering_id":"a","sequence":1,"entryHash":"x","extra":1}"#).is_err());
    }
}
