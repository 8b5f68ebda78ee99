//! The Merkle tree of an offering's history (RFC 9162 §2.1), so that one entry's presence, or
//! the extension of an earlier history by a later one, is proven with O(log n) hashes instead of
//! the whole history.
//!
//! The leaf at index n - 1 is the entry of sequence n, and its hash is SHA-256(0x00 ||
//! entry_hash); an inner node is SHA-256(0x01 || left || right). The tree of a history of n
//! entries has size n: it is the offering's version.
//!
//! Three pieces, all pure:
//! - [`Frontier`]: the roots of the complete subtrees of the tree as it stands (one per set bit
//!   of its size), which the head keeps: an append costs O(log n) hashes and reads nothing.
//!   Appending also yields the [`Node`]s to store: the root of every complete subtree of a
//!   level that is a multiple of [`STORED_LEVEL_STEP`].
//! - Proofs ([`Proof`]): RFC 9162's PATH and PROOF, built over any source of complete-subtree
//!   hashes. [`Proof::ranges`] says which stored rows a proof needs (at most 2^(STEP-1) per
//!   subtree, each read from the leaves or from a stored band), and [`Proof::build`] makes the
//!   proof from them.
//! - Verification: RFC 9162's algorithms (§2.1.3.2, §2.1.4.2), which `subledger verify` runs
//!   offline.

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

use super::hash::Hash;

/// Complete subtrees whose level is a multiple of this (256 leaves, 65,536, ...) have their
/// root stored when they complete. Any other complete subtree is hashed from fewer than 256
/// rows of the band below (leaves, or stored roots): a proof of a million-entry tree reads a few
/// thousand rows at most, while the table grows by one row per 256 entries, not one per entry.
pub const STORED_LEVEL_STEP: u8 = 8;

/// Bytes of one hash in [`Frontier::to_bytes`].
const HASH_BYTES: usize = 32;

/// SHA-256(0x00 || entry_hash): the leaf of an entry.
pub fn leaf_hash(entry_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(entry_hash);
    hasher.finalize().into()
}

/// SHA-256(0x01 || left || right): an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The root of a complete subtree: `level` (2^level leaves), and `index`, its place among the
/// subtrees of that level from the left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub level: u8,
    pub index: u64,
    pub hash: Hash,
}

/// The roots of the complete subtrees of a tree of `size` leaves, highest first: what extends
/// the tree on append and gives its root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

/// A stored frontier that cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("a frontier of size {size} holds {bytes} bytes, not {expected}")]
pub struct BadFrontier {
    size: u64,
    bytes: usize,
    expected: usize,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf of `entry_hash`, and pushes onto `stored` every completed subtree whose
    /// level is a multiple of [`STORED_LEVEL_STEP`].
    pub fn append(&mut self, entry_hash: &Hash, stored: &mut Vec<Node>) {
        let mut hash = leaf_hash(entry_hash);
        let (mut level, mut size) = (0u8, self.size);
        // Each trailing 1 bit of the size is a complete subtree the new leaf completes a twin of.
        while size & 1 == 1 {
            let left = self
                .hashes
                .pop()
                .expect("a frontier has a hash per set bit");
            hash = node_hash(&left, &hash);
            level += 1;
            size >>= 1;
            if level.is_multiple_of(STORED_LEVEL_STEP) {
                stored.push(Node {
                    level,
                    index: ((self.size + 1) >> level) - 1,
                    hash,
                });
            }
        }
        self.hashes.push(hash);
        self.size += 1;
        debug_assert_eq!(self.hashes.len(), self.size.count_ones() as usize);
    }

    /// The tree of these entry hashes, in sequence order (nodes to store are not kept).
    pub fn of<'a>(entry_hashes: impl IntoIterator<Item = &'a Hash>) -> Self {
        let mut frontier = Self::default();
        for hash in entry_hashes {
            frontier.append(hash, &mut Vec::new());
        }
        frontier
    }

    /// The tree's root hash (MTH of RFC 9162).
    pub fn root(&self) -> Hash {
        let mut hashes = self.hashes.iter().rev();
        let Some(last) = hashes.next() else {
            return empty_root();
        };
        hashes.fold(*last, |right, left| node_hash(left, &right))
    }

    /// The hashes concatenated, highest subtree first: the head's merkle_frontier column.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.hashes.concat()
    }

    /// The frontier of a tree of `size` leaves stored as [`Frontier::to_bytes`] wrote it.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Result<Self, BadFrontier> {
        let expected = size.count_ones() as usize * HASH_BYTES;
        if bytes.len() != expected {
            return Err(BadFrontier {
                size,
                bytes: bytes.len(),
                expected,
            });
        }
        let hashes = bytes
            .chunks_exact(HASH_BYTES)
            .map(|chunk| chunk.try_into().expect("chunks of 32 bytes"))
            .collect();
        Ok(Self { size, hashes })
    }
}

/// Rows of one band to read: `count` consecutive subtree roots of `level` from `first` on.
/// Level 0 is the leaves, read as the entry_hash of sequences first + 1 ..= first + count; any
/// other level is a multiple of [`STORED_LEVEL_STEP`], read from the stored nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRange {
    pub level: u8,
    pub first: u64,
    pub count: u64,
}

/// What a proof is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// That the leaf at `index` is in the tree of `size` (index < size).
    Inclusion { index: u64, size: u64 },
    /// That the tree of `to` extends the tree of `from` (0 < from <= to).
    Consistency { from: u64, to: u64 },
}

/// A proof, with the roots it leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub path: Vec<Hash>,
    /// The root of the tree of the proof's size (Inclusion) or of `to` (Consistency).
    pub root: Hash,
    /// Consistency: the root of the tree of `from`.
    pub from_root: Option<Hash>,
}

/// The stored rows came back short: the store lost rows a complete tree must have.
#[derive(Debug, thiserror::Error)]
#[error("the tree's rows of level {level} from {first} came back {got} of {count}")]
pub struct MissingRows {
    level: u8,
    first: u64,
    count: u64,
    got: usize,
}

/// Hashes of complete subtrees, by level and index.
trait Subtrees {
    fn complete(&mut self, level: u8, index: u64) -> Hash;
}

/// Records which complete subtrees a proof reads, answering zeros.
#[derive(Default)]
struct Wanted(Vec<(u8, u64)>);

impl Subtrees for Wanted {
    fn complete(&mut self, level: u8, index: u64) -> Hash {
        self.0.push((level, index));
        [0; 32]
    }
}

/// Complete subtrees already hashed.
struct Known(HashMap<(u8, u64), Hash>);

impl Subtrees for Known {
    fn complete(&mut self, level: u8, index: u64) -> Hash {
        self.0[&(level, index)]
    }
}

/// The largest power of two below `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[lo:hi]) of RFC 9162, for a range the proofs ask about: a complete subtree, or one that
/// splits into a complete left subtree and the rest.
fn range_hash(tree: &mut impl Subtrees, lo: u64, hi: u64) -> Hash {
    let n = hi - lo;
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        let level = n.trailing_zeros() as u8;
        return tree.complete(level, lo >> level);
    }
    let k = split(n);
    let left = range_hash(tree, lo, lo + k);
    let right = range_hash(tree, lo + k, hi);
    node_hash(&left, &right)
}

/// PATH(m, D[lo:hi]) of RFC 9162, leaf m counted from lo.
fn path(tree: &mut impl Subtrees, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(tree, m, lo, lo + k, out);
        out.push(range_hash(tree, lo + k, hi));
    } else {
        path(tree, m - k, lo + k, hi, out);
        out.push(range_hash(tree, lo, lo + k));
    }
}

/// SUBPROOF(m, D[lo:hi], whole) of RFC 9162.
fn subproof(tree: &mut impl Subtrees, m: u64, lo: u64, hi: u64, whole: bool, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(range_hash(tree, lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(tree, m, lo, lo + k, whole, out);
        out.push(range_hash(tree, lo + k, hi));
    } else {
        subproof(tree, m - k, lo + k, hi, false, out);
        out.push(range_hash(tree, lo, lo + k));
    }
}

impl Proof {
    /// The tree size the proof is against (its `size`, or `to`).
    pub fn size(&self) -> u64 {
        match *self {
            Self::Inclusion { size, .. } => size,
            Self::Consistency { to, .. } => to,
        }
    }

    fn make(&self, tree: &mut impl Subtrees) -> Built {
        let mut out = Vec::new();
        let from_root = match *self {
            Self::Inclusion { index, size } => {
                debug_assert!(index < size);
                path(tree, index, 0, size, &mut out);
                None
            }
            Self::Consistency { from, to } => {
                debug_assert!(0 < from && from <= to);
                subproof(tree, from, 0, to, true, &mut out);
                Some(range_hash(tree, 0, from))
            }
        };
        Built {
            path: out,
            root: range_hash(tree, 0, self.size()),
            from_root,
        }
    }

    /// The complete subtrees the proof (and its roots) are made of.
    fn wanted(&self) -> Vec<(u8, u64)> {
        let mut wanted = Wanted::default();
        self.make(&mut wanted);
        let mut subtrees = wanted.0;
        subtrees.sort_unstable();
        subtrees.dedup();
        subtrees
    }

    /// The rows to read, one range per complete subtree the proof needs: its stored root, or
    /// the fewer than 2^STEP rows of the band below it that hash up to it.
    pub fn ranges(&self) -> Vec<NodeRange> {
        self.wanted().into_iter().map(band_range).collect()
    }

    /// The proof, from the rows [`Proof::ranges`] asked for, range for range (entry hashes for
    /// level 0, stored roots otherwise).
    pub fn build(&self, rows: &[Vec<Hash>]) -> Result<Built, MissingRows> {
        let mut known = HashMap::new();
        for ((level, index), rows) in self.wanted().into_iter().zip(rows) {
            let range = band_range((level, index));
            if rows.len() as u64 != range.count {
                return Err(MissingRows {
                    level: range.level,
                    first: range.first,
                    count: range.count,
                    got: rows.len(),
                });
            }
            let mut band: Vec<Hash> = if range.level == 0 {
                rows.iter().map(leaf_hash).collect()
            } else {
                rows.clone()
            };
            while band.len() > 1 {
                band = band.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
            }
            known.insert((level, index), band[0]);
        }
        Ok(self.make(&mut Known(known)))
    }
}

/// Where the root of complete subtree (level, index) is read from: itself when stored, the
/// band below otherwise.
fn band_range((level, index): (u8, u64)) -> NodeRange {
    let band = level - level % STORED_LEVEL_STEP;
    let below = level - band;
    NodeRange {
        level: band,
        first: index << below,
        count: 1 << below,
    }
}

/// RFC 9162 §2.1.3.2: true when `path` proves that the leaf of `entry_hash`, at `index`, is in
/// the tree of `size` whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    entry_hash: &Hash,
    path: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(entry_hash);
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: true when `path` proves that the tree of `to` (root `to_root`) extends
/// the tree of `from` (root `from_root`).
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    path: &[Hash],
) -> bool {
    if from == 0 || from > to {
        return false;
    }
    if from == to {
        return path.is_empty() && from_root == to_root;
    }
    if path.is_empty() {
        return false;
    }
    let mut path = path.to_vec();
    if from.is_power_of_two() {
        path.insert(0, *from_root);
    }
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *from_root && sr == *to_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Entry hashes that differ, one per sequence.
    fn entries(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| Sha256::digest(i.to_be_bytes()).into())
            .collect()
    }

    /// MTH straight from RFC 9162's definition, over every leaf.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// A tree grown one append at a time, and the nodes it stored.
    fn grow(leaves: &[Hash]) -> (Frontier, HashMap<(u8, u64), Hash>) {
        let (mut frontier, mut stored) = (Frontier::default(), Vec::new());
        for leaf in leaves {
            frontier.append(leaf, &mut stored);
        }
        let stored = stored
            .into_iter()
            .map(|n| ((n.level, n.index), n.hash))
            .collect();
        (frontier, stored)
    }

    /// The rows a store would return for `proof`, from the entries and the stored nodes.
    fn rows(proof: &Proof, leaves: &[Hash], stored: &HashMap<(u8, u64), Hash>) -> Vec<Vec<Hash>> {
        proof
            .ranges()
            .iter()
            .map(|r| {
                (r.first..r.first + r.count)
                    .map(|i| match r.level {
                        0 => leaves[i as usize],
                        level => stored[&(level, i)],
                    })
                    .collect()
            })
            .collect()
    }

    fn flip(hashes: &[Hash], bit: usize) -> Vec<Hash> {
        let mut flipped = hashes.to_vec();
        flipped[bit / 256][bit % 256 / 8] ^= 1 << (bit % 8);
        flipped
    }

    fn flip_one(hash: &Hash, bit: usize) -> Hash {
        flip(&[*hash], bit % 256)[0]
    }

    const DOC: &str = include_str!("../../docs/hash-chain.md");

    /// The hashes of the line "- proof `name`: `value`" of the document's proofs example.
    fn doc_hashes(name: &str) -> Vec<Hash> {
        let prefix = format!("- proof {name}: `");
        let line = DOC
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("docs/hash-chain.md has no line {prefix:?}"));
        line[prefix.len()..]
            .trim_end_matches('`')
            .split_whitespace()
            .map(|text| crate::ledger::chain::parse_hex(text).expect("a hash in hex"))
            .collect()
    }

    fn doc_hash(name: &str) -> Hash {
        let hashes = doc_hashes(name);
        assert_eq!(hashes.len(), 1, "{name}: one hash");
        hashes[0]
    }

    /// docs/hash-chain.md, "Worked example: a tree of 7 entries": every value it gives is the
    /// code's, and the documented paths are the ones the server builds and they verify.
    #[test]
    fn the_documented_proofs_are_what_the_code_computes() {
        // Entry hashes of 32 bytes each equal to the sequence.
        let entries: Vec<Hash> = (1..=7u8).map(|n| [n; 32]).collect();
        let leaf: Vec<Hash> = entries.iter().map(leaf_hash).collect();
        for (i, hash) in leaf.iter().enumerate() {
            assert_eq!(
                *hash,
                doc_hash(&format!("leaf {}", i + 1)),
                "leaf {}",
                i + 1
            );
        }
        let n12 = node_hash(&leaf[0], &leaf[1]);
        let n34 = node_hash(&leaf[2], &leaf[3]);
        let n56 = node_hash(&leaf[4], &leaf[5]);
        let n14 = node_hash(&n12, &n34);
        let n57 = node_hash(&n56, &leaf[6]);
        assert_eq!(n12, doc_hash("node 1-2"));
        assert_eq!(n34, doc_hash("node 3-4"));
        assert_eq!(n56, doc_hash("node 5-6"));
        assert_eq!(n14, doc_hash("node 1-4"));
        assert_eq!(n57, doc_hash("node 5-7"));
        let (root3, root7) = (doc_hash("root of 3"), doc_hash("root of 7"));
        assert_eq!(Frontier::of(&entries[..3]).root(), root3);
        assert_eq!(Frontier::of(&entries).root(), root7);
        assert_eq!(mth(&entries[..3]), root3);
        assert_eq!(node_hash(&n14, &n57), root7);

        // The paths as the server builds them, from the rows a store returns.
        let (_, stored) = grow(&entries);
        let inclusion = Proof::Inclusion { index: 2, size: 7 };
        let built = inclusion
            .build(&rows(&inclusion, &entries, &stored))
            .unwrap();
        assert_eq!(built.path, doc_hashes("inclusion path"));
        assert_eq!(built.path, vec![leaf[3], n12, n57]);
        assert_eq!(built.root, root7);
        assert!(verify_inclusion(2, 7, &entries[2], &built.path, &root7));

        let consistency = Proof::Consistency { from: 3, to: 7 };
        let built = consistency
            .build(&rows(&consistency, &entries, &stored))
            .unwrap();
        assert_eq!(built.path, doc_hashes("consistency path"));
        assert_eq!(built.path, vec![leaf[2], leaf[3], n12, n57]);
        assert_eq!((built.from_root, built.root), (Some(root3), root7));
        assert!(verify_consistency(3, 7, &root3, &root7, &built.path));
    }

    #[test]
    fn the_frontier_gives_rfc_roots_and_stores_every_completed_band() {
        let leaves = entries(70_000);
        let (mut frontier, mut stored) = (Frontier::default(), Vec::new());
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.append(leaf, &mut stored);
            let n = i + 1;
            if n <= 300 || n % 4_099 == 0 || n == 65_536 {
                assert_eq!(frontier.root(), mth(&leaves[..n]), "size {n}");
            }
        }
        assert_eq!(Frontier::default().root(), empty_root());
        // 70,000 leaves: 273 subtrees of 256 and one of 65,536.
        assert_eq!(stored.len(), 273 + 1);
        assert!(stored.contains(&Node {
            level: 16,
            index: 0,
            hash: mth(&leaves[..65_536])
        }));
        assert!(stored.contains(&Node {
            level: 8,
            index: 272,
            hash: mth(&leaves[272 * 256..273 * 256])
        }));
        let bytes = frontier.to_bytes();
        assert_eq!(Frontier::from_bytes(70_000, &bytes).unwrap(), frontier);
        assert!(Frontier::from_bytes(70_001, &bytes).is_err());
    }

    #[test]
    fn a_proof_reads_at_most_a_band_per_subtree() {
        let proof = Proof::Consistency {
            from: 333_333,
            to: 1_000_000,
        };
        let ranges = proof.ranges();
        let rows: u64 = ranges.iter().map(|r| r.count).sum();
        assert!(ranges.iter().all(|r| r.count < 256), "{ranges:?}");
        assert!(rows < 3_000, "{rows} rows");
    }

    #[test]
    fn proofs_of_the_rfc_examples_have_the_rfc_shape() {
        // RFC 9162 §2.1.5: the tree of 7 leaves a..g.
        let leaves = entries(7);
        let (_, stored) = grow(&leaves);
        let proof = Proof::Inclusion { index: 3, size: 7 };
        let built = proof.build(&rows(&proof, &leaves, &stored)).unwrap();
        // d's path is c, g(a,b), i(e,f,g).
        assert_eq!(
            built.path,
            vec![
                leaf_hash(&leaves[2]),
                mth(&leaves[0..2]),
                mth(&leaves[4..7])
            ]
        );
        let proof = Proof::Consistency { from: 3, to: 7 };
        let built = proof.build(&rows(&proof, &leaves, &stored)).unwrap();
        // PROOF(3, D[7]) = [c, d, g, l].
        assert_eq!(
            built.path,
            vec![
                leaf_hash(&leaves[2]),
                leaf_hash(&leaves[3]),
                mth(&leaves[0..2]),
                mth(&leaves[4..7])
            ]
        );
    }

    #[test]
    fn short_rows_are_refused() {
        let proof = Proof::Inclusion {
            index: 0,
            size: 300,
        };
        let mut rows = rows(&proof, &entries(300), &grow(&entries(300)).1);
        rows[0].pop();
        assert!(proof.build(&rows).is_err());
    }

    /// Every size from 1 to 2,000: a proof of inclusion and one of consistency, at an index and
    /// an earlier size that move through the tree from one size to the next, verify against the
    /// roots that appends gave (the proptests below flip the bits).
    #[test]
    fn every_size_from_1_to_2000_proves_and_verifies() {
        let leaves = entries(2_000);
        let (mut frontier, mut stored_nodes) = (Frontier::default(), Vec::new());
        let mut roots = Vec::new();
        for leaf in &leaves {
            frontier.append(leaf, &mut stored_nodes);
            roots.push(frontier.root());
        }
        let stored = stored_nodes
            .into_iter()
            .map(|n| ((n.level, n.index), n.hash))
            .collect();
        for size in 1..=2_000u64 {
            let root = roots[size as usize - 1];
            // A spread of indexes and earlier sizes, each size its own.
            let spread = |salt: u64| {
                (size
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(salt)
                    >> 33)
                    % size
            };
            for index in [spread(1), size - 1] {
                let proof = Proof::Inclusion { index, size };
                let built = proof.build(&rows(&proof, &leaves, &stored)).unwrap();
                assert_eq!(built.root, root);
                let leaf = &leaves[index as usize];
                assert!(
                    verify_inclusion(index, size, leaf, &built.path, &root),
                    "{size} {index}"
                );
            }
            for from in [spread(2) + 1, size] {
                let proof = Proof::Consistency { from, to: size };
                let built = proof.build(&rows(&proof, &leaves, &stored)).unwrap();
                let from_root = roots[from as usize - 1];
                assert_eq!(built.from_root, Some(from_root));
                assert!(verify_consistency(
                    from,
                    size,
                    &from_root,
                    &root,
                    &built.path
                ));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_flipped_bit_fails_an_inclusion_proof(size in 1u64..=2_000, at in 0.0f64..1.0, bit in 0usize..1 << 20) {
            let leaves = entries(size);
            let (frontier, stored) = grow(&leaves);
            let index = ((size as f64 * at) as u64).min(size - 1);
            let proof = Proof::Inclusion { index, size };
            let built = proof.build(&rows(&proof, &leaves, &stored)).unwrap();
            let (leaf, root) = (leaves[index as usize], frontier.root());
            prop_assert!(verify_inclusion(index, size, &leaf, &built.path, &root));
            if !built.path.is_empty() {
                let path = flip(&built.path, bit % (built.path.len() * 256));
                prop_assert!(!verify_inclusion(index, size, &leaf, &path, &root));
            }
            prop_assert!(!verify_inclusion(index, size, &flip_one(&leaf, bit), &built.path, &root));
            prop_assert!(!verify_inclusion(index, size, &leaf, &built.path, &flip_one(&root, bit)));
            prop_assert!(!verify_inclusion(index ^ 1, size, &leaf, &built.path, &root) || leaves.len() == 1);
        }

        #[test]
        fn any_flipped_bit_fails_a_consistency_proof(to in 2u64..=2_000, at in 0.0f64..1.0, bit in 0usize..1 << 20) {
            let leaves = entries(to);
            let (frontier, stored) = grow(&leaves);
            let from = ((to as f64 * at) as u64).clamp(1, to - 1);
            let proof = Proof::Consistency { from, to };
            let built = proof.build(&rows(&proof, &leaves, &stored)).unwrap();
            let (from_root, to_root) = (built.from_root.unwrap(), frontier.root());
            prop_assert_eq!(from_root, mth(&leaves[..from as usize]));
            prop_assert!(verify_consistency(from, to, &from_root, &to_root, &built.path));
            let path = flip(&built.path, bit % (built.path.len() * 256));
            prop_assert!(!verify_consistency(from, to, &from_root, &to_root, &path));
            prop_assert!(!verify_consistency(from, to, &flip_one(&from_root, bit), &to_root, &built.path));
            prop_assert!(!verify_consistency(from, to, &from_root, &flip_one(&to_root, bit), &built.path));
        }
    }
}
