//! The proof files of `subledger verify --inclusion` and `--consistency`: GetInclusionProof and
//! GetConsistencyProof replies as grpcurl prints them (camelCase, int64 as strings, hashes in
//! base64, one object after another), checked with no database and no server.
//!
//! A proof alone shows that its path leads from the entry (or the earlier tree) to the root it
//! names; what makes that root the ledger's is a digest kept earlier. So every root a proof
//! leads to must be the root_hash of a digest given with --digests, of the same offering and
//! tree size: a proof no digest anchors fails, and says so.

use anyhow::{Context, anyhow};
use serde::Deserialize;

use super::digests::{Sequence, hash};
use crate::ledger::chain::{self, Digest, Hash};
use crate::ledger::merkle;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InclusionText {
    offering_id: String,
    sequence: Sequence,
    tree_size: Sequence,
    entry_hash: String,
    /// grpcurl leaves an empty list out (a tree of one entry).
    #[serde(default)]
    audit_path: Vec<String>,
    root_hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConsistencyText {
    offering_id: String,
    from_size: Sequence,
    to_size: Sequence,
    #[serde(default)]
    path: Vec<String>,
    from_root_hash: String,
    to_root_hash: String,
}

/// What the proofs given came to.
#[derive(Debug, Default)]
pub struct ProofSummary {
    pub checked: usize,
    pub failed: usize,
}

impl ProofSummary {
    pub fn holds(&self) -> bool {
        self.failed == 0
    }
}

impl std::fmt::Display for ProofSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.holds() { "OK" } else { "FAILED" };
        write!(
            f,
            "{verdict}: {} proofs checked, {} failed",
            self.checked, self.failed
        )
    }
}

/// Every object of a proof file, parsed by `parse`; the error names the object that is not one.
fn objects<T: for<'de> Deserialize<'de>>(text: &str) -> anyhow::Result<Vec<T>> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<T>()
        .enumerate()
        .map(|(index, object)| object.with_context(|| format!("proof {}", index + 1)))
        .collect()
}

fn size(value: Sequence, name: &str) -> anyhow::Result<u64> {
    let number = value.number(name)?;
    u64::try_from(number)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| anyhow!("{name} {number} is below 1"))
}

fn hashes(texts: &[String]) -> anyhow::Result<Vec<Hash>> {
    texts.iter().map(|text| hash(text)).collect()
}

/// Why `root` of the tree of `size` is not anchored by a digest of `offering_id`; None when it is.
fn unanchored(digests: &[Digest], offering_id: &str, size: u64, root: &Hash) -> Option<String> {
    let same_tree = digests
        .iter()
        .filter(|d| d.offering_id == offering_id && d.sequence as u64 == size);
    let mut roots = same_tree.filter_map(|d| d.root_hash).peekable();
    if roots.peek().is_none() {
        return Some(format!(
            "no digest of tree_size {size} given (--digests) to hold its root {} against",
            chain::hex(root)
        ));
    }
    if roots.any(|kept| kept != *root) {
        return Some(format!(
            "its root {} is not the root of the digest of tree_size {size}",
            chain::hex(root)
        ));
    }
    None
}

/// Checks the inclusion proofs and consistency proofs in the texts against `digests`, printing
/// one line per proof.
pub fn check(
    inclusion: &[String],
    consistency: &[String],
    digests: &[Digest],
    out: &mut impl std::io::Write,
) -> anyhow::Result<ProofSummary> {
    let mut summary = ProofSummary::default();
    let mut report = |what: String, failure: Option<String>| -> std::io::Result<()> {
        summary.checked += 1;
        match failure {
            None => writeln!(out, "ok {what}"),
            Some(failure) => {
                summary.failed += 1;
                writeln!(out, "FAILED {what}: {failure}")
            }
        }
    };
    for text in inclusion {
        for proof in objects::<InclusionText>(text)? {
            let sequence = size(proof.sequence, "sequence")?;
            let tree_size = size(proof.tree_size, "treeSize")?;
            let entry_hash = hash(&proof.entry_hash)?;
            let root = hash(&proof.root_hash)?;
            let path = hashes(&proof.audit_path)?;
            let what = format!(
                "inclusion of {}#{sequence} in its tree of {tree_size}",
                proof.offering_id
            );
            let failure =
                if !merkle::verify_inclusion(sequence - 1, tree_size, &entry_hash, &path, &root) {
                    Some("the audit path does not lead from the entry to the root".to_owned())
                } else {
                    unanchored(digests, &proof.offering_id, tree_size, &root)
                };
            report(what, failure)?;
        }
    }
    for text in consistency {
        for proof in objects::<ConsistencyText>(text)? {
            let from = size(proof.from_size, "fromSize")?;
            let to = size(proof.to_size, "toSize")?;
            let from_root = hash(&proof.from_root_hash)?;
            let to_root = hash(&proof.to_root_hash)?;
            let path = hashes(&proof.path)?;
            let what = format!(
                "consistency of {}'s tree of {from} with its tree of {to}",
                proof.offering_id
            );
            let failure = if !merkle::verify_consistency(from, to, &from_root, &to_root, &path) {
                Some("the path does not lead from the earlier root to the later one".to_owned())
            } else {
                unanchored(digests, &proof.offering_id, from, &from_root)
                    .or_else(|| unanchored(digests, &proof.offering_id, to, &to_root))
            };
            report(what, failure)?;
        }
    }
    Ok(summary)
}
