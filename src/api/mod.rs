//! The gRPC service: parse and validate a request, hand it to the ledger (mutations go through
//! the group committer, reads straight to the store), convert the answer. One tracing span per
//! call carries the method, the ids, the status code and the latency.
//!
//! The tonic trait below is the table of contents: each RPC is handed to its handler, in
//! `mutations` (which share one path to the group committer) or `reads`. `service` holds the
//! state they share, `call` the span, the caller and the deadline every call has.

pub mod auth;
mod call;
pub(crate) mod convert;
pub mod edge;
pub mod error;
mod mutations;
mod proofs;
mod reads;
mod service;
mod validate;
mod watch;

use tonic::{Request, Response, Status};

use crate::proto::{self, subscription_ledger_server::SubscriptionLedger};
use crate::store::Store;
pub use reads::ACTOR_SCAN_ENTRIES_MAX;
pub use service::{LedgerService, ServiceLimits, VERIFY_ADMITTED_MAX, VERIFY_RUNNING_MAX};
pub use watch::route::LedgerServer;

#[tonic::async_trait]
impl<S: Store> SubscriptionLedger for LedgerService<S> {
    async fn create_offering(
        &self,
        request: Request<proto::CreateOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        mutations::create_offering(self, request).await
    }

    async fn get_offering(
        &self,
        request: Request<proto::GetOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        reads::get_offering(self, request).await
    }

    async fn list_offerings(
        &self,
        request: Request<proto::ListOfferingsRequest>,
    ) -> Result<Response<proto::ListOfferingsResponse>, Status> {
        reads::list_offerings(self, request).await
    }

    async fn close_offering(
        &self,
        request: Request<proto::CloseOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        mutations::mutate(self, request).await
    }

    async fn finalize_offering(
        &self,
        request: Request<proto::FinalizeOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        mutations::mutate(self, request).await
    }

    async fn allocate_offering(
        &self,
        request: Request<proto::AllocateOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        mutations::mutate(self, request).await
    }

    async fn amend_offering(
        &self,
        request: Request<proto::AmendOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        mutations::mutate(self, request).await
    }

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<proto::SubscribeResponse>, Status> {
        mutations::mutate(self, request).await
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::CancelResponse>, Status> {
        mutations::mutate(self, request).await
    }

    async fn get_position(
        &self,
        request: Request<proto::GetPositionRequest>,
    ) -> Result<Response<proto::Position>, Status> {
        reads::get_position(self, request).await
    }

    async fn list_history(
        &self,
        request: Request<proto::ListHistoryRequest>,
    ) -> Result<Response<proto::ListHistoryResponse>, Status> {
        reads::list_history(self, request).await
    }

    type WatchHistoryStream = futures::stream::Empty<Result<proto::HistoryEntry, Status>>;

    /// Never called: [`LedgerServer`] serves WatchHistory itself (`reads::watch_history`,
    /// through `watch::route`), with the codec that sends each entry encoded once.
    async fn watch_history(
        &self,
        _request: Request<proto::WatchHistoryRequest>,
    ) -> Result<Response<Self::WatchHistoryStream>, Status> {
        Err(Status::internal(
            "WatchHistory reached the generated server: serve the ledger through api::LedgerServer",
        ))
    }

    async fn verify_offering(
        &self,
        request: Request<proto::VerifyOfferingRequest>,
    ) -> Result<Response<proto::VerifyOfferingResponse>, Status> {
        reads::verify_offering(self, request).await
    }

    async fn get_digest(
        &self,
        request: Request<proto::GetDigestRequest>,
    ) -> Result<Response<proto::Digest>, Status> {
        reads::get_digest(self, request).await
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<proto::GetInclusionProofRequest>,
    ) -> Result<Response<proto::InclusionProof>, Status> {
        proofs::get_inclusion_proof(self, request).await
    }

    async fn get_consistency_proof(
        &self,
        request: Request<proto::GetConsistencyProofRequest>,
    ) -> Result<Response<proto::ConsistencyProof>, Status> {
        proofs::get_consistency_proof(self, request).await
    }
}
