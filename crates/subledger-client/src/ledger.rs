//! [`Ledger`]: one handle over the replicas of a subledger deployment. Calls go round-robin over
//! the endpoints' connections; a retry goes to the next endpoint, so a replica that is down costs
//! one attempt, not the call.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::proto::subscription_ledger_client::SubscriptionLedgerClient;
use crate::proto::{self};
use crate::{Error, RetryPolicy, retry};

/// The raw stub, with the bearer token added to every call.
type Stub = SubscriptionLedgerClient<InterceptedService<Channel, BearerToken>>;

/// How long opening one connection may take before the attempt fails (and is retried).
const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// A handle over one or more subledger replicas; clone it freely (the clones share the
/// connections). Built with [`Ledger::builder`].
///
/// Every mutation gets a request_id made here (a UUID v4) unless the caller set one, before the
/// first attempt, so its retries replay rather than apply it again; CreateOffering without an
/// offering_id gets one too. Every call is retried on UNAVAILABLE and DEADLINE_EXCEEDED
/// according to its [`RetryPolicy`].
#[derive(Clone)]
pub struct Ledger {
    connections: Arc<Connections>,
    policy: RetryPolicy,
}

struct Connections {
    endpoints: Vec<String>,
    /// Endpoint by endpoint within each round: [e1, e2, e3, e1, e2, e3, ...], so that the next
    /// index is always the next endpoint.
    stubs: Vec<Stub>,
    next: AtomicUsize,
}

/// Sets up a [`Ledger`]: endpoints, TLS, bearer token, connections and retries.
pub struct LedgerBuilder {
    endpoints: Vec<String>,
    tls: Option<ClientTlsConfig>,
    token: Option<String>,
    connections_per_endpoint: usize,
    connect_timeout: Duration,
    policy: RetryPolicy,
}

impl Ledger {
    /// A builder over these endpoints (`http://host:port`, or `https://` with
    /// [`LedgerBuilder::tls`]).
    pub fn builder<I, S>(endpoints: I) -> LedgerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LedgerBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            token: None,
            connections_per_endpoint: 1,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            policy: RetryPolicy::default(),
        }
    }

    /// The same handle with another overall deadline per call.
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        self.with_retry_policy(RetryPolicy {
            deadline,
            ..self.policy.clone()
        })
    }

    /// The same handle with another retry policy.
    pub fn with_retry_policy(&self, policy: RetryPolicy) -> Self {
        Self {
            connections: self.connections.clone(),
            policy,
        }
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub fn endpoints(&self) -> &[String] {
        &self.connections.endpoints
    }

    /// CreateOffering. Without an offering_id or request_id, the client makes them.
    pub async fn create_offering(
        &self,
        mut request: proto::CreateOfferingRequest,
    ) -> Result<proto::Offering, Error> {
        fill_id(&mut request.offering_id);
        fill_id(&mut request.request_id);
        self.call(request, |mut stub, request| async move {
            stub.create_offering(request).await
        })
        .await
    }

    /// Subscribe. Without a request_id, the client makes one.
    pub async fn subscribe(
        &self,
        mut request: proto::SubscribeRequest,
    ) -> Result<proto::SubscribeResponse, Error> {
        fill_id(&mut request.request_id);
        self.call(request, |mut stub, request| async move {
            stub.subscribe(request).await
        })
        .await
    }

    /// Cancel (units 0: everything the investor holds). Without a request_id, the client makes
    /// one.
    pub async fn cancel(
        &self,
        mut request: proto::CancelRequest,
    ) -> Result<proto::CancelResponse, Error> {
        fill_id(&mut request.request_id);
        self.call(request, |mut stub, request| async move {
            stub.cancel(request).await
        })
        .await
    }

    /// CloseOffering. Without a request_id, the client makes one.
    pub async fn close_offering(
        &self,
        mut request: proto::CloseOfferingRequest,
    ) -> Result<proto::Offering, Error> {
        fill_id(&mut request.request_id);
        self.call(request, |mut stub, request| async move {
            stub.close_offering(request).await
        })
        .await
    }

    /// FinalizeOffering. Without a request_id, the client makes one.
    pub async fn finalize_offering(
        &self,
        mut request: proto::FinalizeOfferingRequest,
    ) -> Result<proto::Offering, Error> {
        fill_id(&mut request.request_id);
        self.call(request, |mut stub, request| async move {
            stub.finalize_offering(request).await
        })
        .await
    }

    /// AllocateOffering (PRO_RATA). Without a request_id, the client makes one.
    pub async fn allocate_offering(
        &self,
        mut request: proto::AllocateOfferingRequest,
    ) -> Result<proto::Offering, Error> {
        fill_id(&mut request.request_id);
        self.call(request, |mut stub, request| async move {
            stub.allocate_offering(request).await
        })
        .await
    }

    /// AmendOffering. Without a request_id, the client makes one.
    pub async fn amend_offering(
        &self,
        mut request: proto::AmendOfferingRequest,
    ) -> Result<proto::Offering, Error> {
        fill_id(&mut request.request_id);
        self.call(request, |mut stub, request| async move {
            stub.amend_offering(request).await
        })
        .await
    }

    pub async fn get_offering(&self, offering_id: &str) -> Result<proto::Offering, Error> {
        let request = proto::GetOfferingRequest {
            offering_id: offering_id.to_owned(),
        };
        self.call(request, |mut stub, request| async move {
            stub.get_offering(request).await
        })
        .await
    }

    pub async fn list_offerings(
        &self,
        request: proto::ListOfferingsRequest,
    ) -> Result<proto::ListOfferingsResponse, Error> {
        self.call(request, |mut stub, request| async move {
            stub.list_offerings(request).await
        })
        .await
    }

    pub async fn get_position(
        &self,
        offering_id: &str,
        investor_id: &str,
    ) -> Result<proto::Position, Error> {
        let request = proto::GetPositionRequest {
            offering_id: offering_id.to_owned(),
            investor_id: investor_id.to_owned(),
        };
        self.call(request, |mut stub, request| async move {
            stub.get_position(request).await
        })
        .await
    }

    /// One page of history; see [`Ledger::history`] for all of it.
    pub async fn list_history(
        &self,
        request: proto::ListHistoryRequest,
    ) -> Result<proto::ListHistoryResponse, Error> {
        self.call(request, |mut stub, request| async move {
            stub.list_history(request).await
        })
        .await
    }

    /// Every history entry of an offering, page after page.
    pub async fn history(&self, offering_id: &str) -> Result<Vec<proto::HistoryEntry>, Error> {
        let mut entries = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .list_history(proto::ListHistoryRequest {
                    offering_id: offering_id.to_owned(),
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await?;
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                return Ok(entries);
            }
            page_token = page.next_page_token;
        }
    }

    /// WatchHistory: the entries after `after_sequence`, then each new one as it commits. Opening
    /// the stream is retried like any call; the stream itself is bounded by no deadline.
    pub async fn watch_history(
        &self,
        request: proto::WatchHistoryRequest,
    ) -> Result<Streaming<proto::HistoryEntry>, Error> {
        let base = self.connections.next.fetch_add(1, Ordering::Relaxed);
        retry::run(&self.policy, |attempt, _timeout| {
            let mut stub = self.connections.stub(base + attempt as usize);
            let request = Request::new(request.clone());
            async move { stub.watch_history(request).await }
        })
        .await
        .map(Response::into_inner)
    }

    pub async fn verify_offering(
        &self,
        request: proto::VerifyOfferingRequest,
    ) -> Result<proto::VerifyOfferingResponse, Error> {
        self.call(request, |mut stub, request| async move {
            stub.verify_offering(request).await
        })
        .await
    }

    pub async fn get_digest(&self, offering_id: &str) -> Result<proto::Digest, Error> {
        let request = proto::GetDigestRequest {
            offering_id: offering_id.to_owned(),
        };
        self.call(request, |mut stub, request| async move {
            stub.get_digest(request).await
        })
        .await
    }

    /// The audit path of entry `sequence` in the offering's Merkle tree of `tree_size` entries:
    /// check it with `subledger::ledger::merkle::verify_inclusion` against a digest's root.
    pub async fn get_inclusion_proof(
        &self,
        request: proto::GetInclusionProofRequest,
    ) -> Result<proto::InclusionProof, Error> {
        self.call(request, |mut stub, request| async move {
            stub.get_inclusion_proof(request).await
        })
        .await
    }

    /// The proof that the offering's tree of `to_size` extends its tree of `from_size`.
    pub async fn get_consistency_proof(
        &self,
        request: proto::GetConsistencyProofRequest,
    ) -> Result<proto::ConsistencyProof, Error> {
        self.call(request, |mut stub, request| async move {
            stub.get_consistency_proof(request).await
        })
        .await
    }

    /// One unary call under the retry policy: each attempt on the next connection, with the same
    /// request and the time left as its grpc-timeout.
    async fn call<Req, Resp, F, Fut>(&self, request: Req, rpc: F) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(Stub, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let base = self.connections.next.fetch_add(1, Ordering::Relaxed);
        retry::run(&self.policy, |attempt, timeout| {
            let stub = self.connections.stub(base + attempt as usize);
            let mut request = Request::new(request.clone());
            request.set_timeout(timeout);
            rpc(stub, request)
        })
        .await
        .map(Response::into_inner)
    }
}

impl Connections {
    fn stub(&self, index: usize) -> Stub {
        self.stubs[index % self.stubs.len()].clone()
    }
}

/// Never shows the token.
impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("endpoints", &self.connections.endpoints)
            .field("connections", &self.connections.stubs.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A mutation's id made by the client when the caller left it empty: a UUID v4, which the
/// server's id rule (1-128 of `A-Z a-z 0-9 . _ : -`) accepts.
fn fill_id(id: &mut String) {
    if id.is_empty() {
        *id = uuid::Uuid::new_v4().to_string();
    }
}

impl LedgerBuilder {
    /// TLS for `https://` endpoints: the CA, and a client certificate for mutual TLS.
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sent with every call as `authorization: Bearer <token>`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// HTTP/2 connections per endpoint (default 1). One connection carries at most 256 calls at
    /// once (the server's limit) and serializes its frames on one socket: a load generator or
    /// thousands of WatchHistory streams want several.
    pub fn connections_per_endpoint(mut self, connections: usize) -> Self {
        self.connections_per_endpoint = connections.max(1);
        self
    }

    /// How long opening a connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The overall deadline of each call, retries included (default 30 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = deadline;
        self
    }

    /// The handle, connecting on first use: an endpoint that is down now is only skipped by
    /// the calls that meet it. Call it inside a Tokio runtime.
    pub fn build(self) -> Result<Ledger, Error> {
        let (endpoints, token) = self.prepare()?;
        let channels = endpoints.iter().map(|(_, e)| e.connect_lazy()).collect();
        Ok(self.ledger(channels, token))
    }

    /// The handle, with every connection open: fails, naming the endpoint, if one cannot be
    /// reached now.
    pub async fn connect(self) -> Result<Ledger, Error> {
        let (endpoints, token) = self.prepare()?;
        let mut channels = Vec::new();
        for (_, endpoint) in &endpoints {
            channels.push(endpoint.connect().await?);
        }
        Ok(self.ledger(channels, token))
    }

    /// One endpoint per connection, ordered endpoint by endpoint within each round, and the
    /// token as a header value.
    fn prepare(&self) -> Result<(Vec<(String, Endpoint)>, BearerToken), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("no endpoint given".to_owned()));
        }
        let token = match &self.token {
            Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
                // Not the token itself: it is a secret.
                Error::Config("the bearer token is not a valid header value".to_owned())
            })?),
            None => None,
        };
        let mut endpoints = Vec::new();
        for _ in 0..self.connections_per_endpoint {
            for address in &self.endpoints {
                let mut endpoint = Endpoint::from_shared(address.clone())?
                    .tcp_nodelay(true)
                    .connect_timeout(self.connect_timeout);
                if let Some(tls) = &self.tls {
                    endpoint = endpoint.tls_config(tls.clone())?;
                }
                endpoints.push((address.clone(), endpoint));
            }
        }
        Ok((endpoints, BearerToken(token)))
    }

    fn ledger(self, channels: Vec<Channel>, token: BearerToken) -> Ledger {
        let stubs = channels
            .into_iter()
            .map(|channel| SubscriptionLedgerClient::with_interceptor(channel, token.clone()))
            .collect();
        Ledger {
            connections: Arc::new(Connections {
                endpoints: self.endpoints,
                stubs,
                next: AtomicUsize::new(0),
            }),
            policy: self.policy,
        }
    }
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_once_and_never_replace_the_callers() {
        let mut id = String::new();
        fill_id(&mut id);
        assert_eq!(id.len(), 36);
        let made = id.clone();
        fill_id(&mut id);
        assert_eq!(id, made, "a retry keeps the id made for the first attempt");
        let mut given = "create-tower-7".to_owned();
        fill_id(&mut given);
        assert_eq!(given, "create-tower-7");
    }

    #[tokio::test]
    async fn the_handle_spreads_calls_over_endpoints_and_hides_its_token() {
        let ledger = Ledger::builder(["http://127.0.0.1:1", "http://127.0.0.1:2"])
            .connections_per_endpoint(2)
            .bearer_token("s3cret-token")
            .build()
            .unwrap();
        assert_eq!(ledger.connections.stubs.len(), 4);
        assert_eq!(ledger.endpoints().len(), 2);
        let shown = format!("{ledger:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let ledger = ledger.with_deadline(Duration::from_secs(1));
        assert_eq!(ledger.retry_policy().deadline, Duration::from_secs(1));
    }

    #[tokio::test]
    async fn bad_settings_fail_when_built() {
        assert!(matches!(
            Ledger::builder(Vec::<String>::new()).build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Ledger::builder(["http://127.0.0.1:1"])
                .bearer_token("line\nbreak")
                .build(),
            Err(Error::Config(message)) if !message.contains("line")
        ));
        assert!(matches!(
            Ledger::builder(["not a uri"]).build(),
            Err(Error::Transport(_))
        ));
    }

    /// Nothing listens on port 1: every attempt is refused, each on the next endpoint, until
    /// the deadline; the error says no replica answered.
    #[tokio::test]
    async fn no_replica_answering_is_unavailable_after_the_retries() {
        let ledger = Ledger::builder(["http://127.0.0.1:1"])
            .deadline(Duration::from_millis(500))
            .build()
            .unwrap();
        let error = ledger.get_offering("x").await.unwrap_err();
        assert!(
            matches!(error, Error::Unavailable { reason: None, .. }),
            "{error:?}"
        );
    }
}
