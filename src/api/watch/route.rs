//! The ledger's gRPC service as served: the generated server, except for WatchHistory, which is
//! served here with [`EncodedEntries`], the codec that sends entries encoded once.
//!
//! tonic's generated server picks one codec for every method of a service (prost's, which
//! encodes each message it sends), and tonic-prost-build sets no codec per method. So this one
//! method is routed before the generated server and served the way the generated code serves a
//! server-streaming method (`tonic::server::Grpc`), with the same limits; every other path goes
//! on to the generated server. The generated trait's `watch_history` is then never called.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tower::Service;

use super::HistoryStream;
use super::codec::{EncodedEntries, EncodedEntry};
use crate::api::auth::method_name;
use crate::api::{LedgerService, reads};
use crate::proto::{self, subscription_ledger_server::SubscriptionLedgerServer};
use crate::store::Store;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The SubscriptionLedger service with WatchHistory sending entries encoded once.
pub struct LedgerServer<S> {
    generated: SubscriptionLedgerServer<LedgerService<S>>,
    service: Arc<LedgerService<S>>,
    request_bytes_max: usize,
}

impl<S: Store> LedgerServer<S> {
    /// Serves `service`, refusing requests of more than `request_bytes_max` bytes on every method.
    pub fn new(service: LedgerService<S>, request_bytes_max: usize) -> Self {
        let service = Arc::new(service);
        Self {
            generated: SubscriptionLedgerServer::from_arc(service.clone())
                .max_decoding_message_size(request_bytes_max),
            service,
            request_bytes_max,
        }
    }
}

impl<S> Clone for LedgerServer<S> {
    fn clone(&self) -> Self {
        Self {
            generated: self.generated.clone(),
            service: self.service.clone(),
            request_bytes_max: self.request_bytes_max,
        }
    }
}

impl<S> NamedService for LedgerServer<S> {
    const NAME: &'static str = proto::SERVICE_NAME;
}

impl<S: Store> Service<Request<Body>> for LedgerServer<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if method_name(request.uri().path()) != "WatchHistory" {
            return self.generated.call(request);
        }
        let method = WatchHistory(self.service.clone());
        // As the generated server is configured: no compression, the same request limit.
        let mut grpc = Grpc::new(EncodedEntries)
            .apply_max_message_size_config(Some(self.request_bytes_max), None);
        Box::pin(async move { Ok(grpc.server_streaming(method, request).await) })
    }
}

/// WatchHistory's handler, as tonic calls a server-streaming method.
struct WatchHistory<S>(Arc<LedgerService<S>>);

impl<S: Store> ServerStreamingService<proto::WatchHistoryRequest> for WatchHistory<S> {
    type Response = EncodedEntry;
    type ResponseStream = HistoryStream;
    type Future = BoxFuture<Result<tonic::Response<HistoryStream>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<proto::WatchHistoryRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { reads::watch_history(&service, request).await })
    }
}
