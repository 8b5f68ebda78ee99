//! The one hash the ledger's evidence is made of: an entry's link in its offering's chain
//! ([`super::chain`]) and a node of its Merkle tree ([`super::merkle`]) are both SHA-256 digests.

/// A SHA-256 digest.
pub type Hash = [u8; 32];
