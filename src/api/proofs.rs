//! The proof RPCs: an entry's inclusion in an offering's Merkle tree, and one tree's extension of
//! an earlier one (RFC 9162 §2.1; the tree itself is `ledger::merkle`). Both check the sizes
//! against the head first, then read the few thousand rows a proof needs at most; no lock.

use tonic::{Request, Response, Status};

use super::call::traced;
use super::error::ApiError;
use super::service::LedgerService;
use super::validate;
use crate::ledger::merkle::Proof;
use crate::proto;
use crate::store::{HistoryQuery, Store};

/// A size or sequence of a proof request: at least 1 (`field` names it otherwise).
fn at_least_one(field: &'static str, value: i64) -> Result<u64, ApiError> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::invalid(field, format!("is {value}; it must be at least 1")))
}

/// The tree of `size` exists: the offering's tree is at least that large.
fn within_history(field: &'static str, size: u64, tree_size: u64) -> Result<(), ApiError> {
    if size > tree_size {
        return Err(ApiError::PastHistory {
            field,
            requested: size as i64,
            tree_size,
        });
    }
    Ok(())
}

/// GetInclusionProof: the audit path of one entry in the tree of a given size.
pub(super) async fn get_inclusion_proof<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::GetInclusionProofRequest>,
) -> Result<Response<proto::InclusionProof>, Status> {
    let r = request.into_inner();
    traced(
        service.call("GetInclusionProof", &r.offering_id, ""),
        async move {
            validate::id("offering_id", &r.offering_id)?;
            let sequence = at_least_one("sequence", r.sequence)?;
            let size = at_least_one("tree_size", r.tree_size)?;
            if sequence > size {
                return Err(ApiError::invalid(
                    "sequence",
                    format!("is {sequence}, past tree_size {size}"),
                ));
            }
            let head = service.require_offering(&r.offering_id).await?;
            within_history("tree_size", size, head.tree.size())?;
            let entry = service
                .store
                .list_history(HistoryQuery::after(&r.offering_id, r.sequence - 1, 1))
                .await?;
            let entry_hash = entry
                .first()
                .filter(|e| e.sequence == r.sequence)
                .map(|e| e.entry_hash)
                .ok_or_else(|| {
                    crate::store::StoreError::Corrupt(format!(
                        "offering {:?} has no entry {sequence} within its tree",
                        r.offering_id
                    ))
                })?;
            let index = sequence - 1;
            let built = service
                .store
                .prove(&r.offering_id, Proof::Inclusion { index, size })
                .await?;
            Ok(proto::InclusionProof {
                offering_id: r.offering_id,
                sequence: r.sequence,
                tree_size: r.tree_size,
                entry_hash: entry_hash.to_vec(),
                audit_path: built.path.iter().map(|h| h.to_vec()).collect(),
                root_hash: built.root.to_vec(),
            })
        },
    )
    .await
}

/// GetConsistencyProof: that the tree of to_size extends the tree of from_size.
pub(super) async fn get_consistency_proof<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::GetConsistencyProofRequest>,
) -> Result<Response<proto::ConsistencyProof>, Status> {
    let r = request.into_inner();
    traced(
        service.call("GetConsistencyProof", &r.offering_id, ""),
        async move {
            validate::id("offering_id", &r.offering_id)?;
            let from = at_least_one("from_size", r.from_size)?;
            let to = at_least_one("to_size", r.to_size)?;
            if from > to {
                return Err(ApiError::invalid(
                    "from_size",
                    format!("is {from}, past to_size {to}"),
                ));
            }
            let head = service.require_offering(&r.offering_id).await?;
            within_history("to_size", to, head.tree.size())?;
            let built = service
                .store
                .prove(&r.offering_id, Proof::Consistency { from, to })
                .await?;
            Ok(proto::ConsistencyProof {
                offering_id: r.offering_id,
                from_size: r.from_size,
                to_size: r.to_size,
                path: built.path.iter().map(|h| h.to_vec()).collect(),
                from_root_hash: built.from_root.map_or_else(Vec::new, |h| h.to_vec()),
                to_root_hash: built.root.to_vec(),
            })
        },
    )
    .await
}
