//! Wires a store into a gRPC server: the ledger service behind its edge and auth layers,
//! health and reflection, TLS, bounded connections, and a graceful shutdown (stop accepting,
//! finish calls in flight, end watch streams, return).

mod connections;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use connections::ConnectionLimits;

use crate::api::auth::{AuthLayer, Authenticator};
use crate::api::edge::{EdgeLayer, HTTP2_HEADER_LIST_BYTES_MAX, REQUEST_BYTES_MAX};
use crate::api::{LedgerServer, LedgerService, ServiceLimits};
use crate::proto;
use crate::signing::DigestKeys;
use crate::store::Store;
use crate::telemetry::metrics;

/// How long a graceful shutdown waits for calls in flight and open streams before it gives up
/// on them. Unary calls finish in milliseconds; this bounds only streams that never end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often health checks ask the database whether it answers.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A probe slower than this counts as the database not answering.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Concurrent calls (HTTP/2 streams) on one connection, announced in SETTINGS: one client
/// connection cannot take more than this share of the server.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// The TLS handshake must finish within this, whatever the idle timeout.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything about a server but its store and its listener.
pub struct ServerConfig {
    /// None: plaintext.
    pub tls: Option<ServerTlsConfig>,
    pub authenticator: Arc<Authenticator>,
    pub connections: ConnectionLimits,
    pub service: ServiceLimits,
    /// Where to serve Prometheus metrics (GET /metrics); None: no metrics are recorded.
    pub metrics_listener: Option<TcpListener>,
    /// The key GetDigest signs with (none: unsigned digests) and the keys VerifyOffering trusts.
    pub digest_keys: DigestKeys,
}

impl Default for ServerConfig {
    /// Plaintext, no authentication, the default limits.
    fn default() -> Self {
        Self {
            tls: None,
            authenticator: Arc::new(Authenticator::disabled()),
            connections: ConnectionLimits {
                max_connections: 10_000,
                max_connections_per_peer: 1_000,
                idle_timeout: Duration::from_secs(60),
                handshake_timeout: Duration::from_secs(10),
            },
            service: ServiceLimits::default(),
            metrics_listener: None,
            digest_keys: DigestKeys::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("cannot read the ledger id (is the database migrated?): {0}")]
    LedgerId(#[from] crate::store::StoreError),
}

/// Serves on `listeners` (one per address the listen name resolved to) until `shutdown` is
/// cancelled and the calls in flight have finished.
pub async fn serve<S: Store>(
    store: S,
    listeners: Vec<TcpListener>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    // Every digest names its ledger, so the id is read once, before the first call.
    let ledger_id = store.ledger_id().await?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // The first answer is known before the first call can ask.
    let first = probe_health(&store, &health_reporter, None).await;
    tokio::spawn(report_health(
        store.clone(),
        health_reporter,
        first,
        shutdown.clone(),
    ));
    if let Some(listener) = config.metrics_listener {
        let handle = metrics::install().map_err(ServeError::Metrics)?;
        let pool = store.clone();
        // Stops with the server: a shutdown ends it with the ledger service.
        tokio::spawn(metrics::serve(
            listener,
            handle,
            move || pool.pool_stats(),
            shutdown.clone(),
        ));
    }
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let ledger = LedgerServer::new(
        LedgerService::new(store, config.service, shutdown.clone())
            .with_digest_keys(ledger_id, config.digest_keys),
        REQUEST_BYTES_MAX,
    );
    // Live peers answer PINGs long before the idle timeout; dead ones are dropped.
    let keepalive = config.connections.idle_timeout / 3;
    let mut builder = Server::builder()
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive))
        .http2_max_header_list_size(HTTP2_HEADER_LIST_BYTES_MAX);
    if let Some(tls) = config.tls {
        builder = builder.tls_config(tls.timeout(TLS_HANDSHAKE_TIMEOUT))?;
    }
    let serving = builder
        .layer(EdgeLayer)
        .layer(AuthLayer::new(config.authenticator))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ledger)
        .serve_with_incoming_shutdown(
            connections::accept(listeners, config.connections),
            shutdown.clone().cancelled_owned(),
        );
    // tonic waits for every connection to close; a client holding a stream open (a
    // grpc.health.v1 Watch never ends) would hold the shutdown open forever.
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serving => served?,
        () = grace_over => tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the shutdown grace period; closing them"),
    }
    Ok(())
}

/// Asks the database once and publishes the answer if it changed; returns the status now shown.
async fn probe_health<S: Store>(
    store: &S,
    reporter: &HealthReporter,
    last: Option<ServingStatus>,
) -> ServingStatus {
    let answers = matches!(
        tokio::time::timeout(HEALTH_PROBE_TIMEOUT, store.ping()).await,
        Ok(Ok(()))
    );
    let status = if answers {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    if last != Some(status) {
        if !answers {
            tracing::warn!("database does not answer; health is NOT_SERVING");
        }
        reporter.set_service_status("", status).await;
        reporter
            .set_service_status(proto::SERVICE_NAME, status)
            .await;
    }
    status
}

/// Reflection describes the ledger and health services, so grpcurl needs no proto files.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// SERVING while the database answers, NOT_SERVING otherwise, for the whole server ("") and the
/// ledger service by name.
async fn report_health<S: Store>(
    store: S,
    reporter: HealthReporter,
    mut last: ServingStatus,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                reporter.set_service_status("", ServingStatus::NotServing).await;
                return;
            }
            () = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
        }
        last = probe_health(&store, &reporter, Some(last)).await;
    }
}
