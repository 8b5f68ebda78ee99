//! What every call shares on its way through the service: its span and metric handles, who the
//! caller is and until when it waits (`Caller`), and `traced`, which runs the call inside its
//! span and logs and counts how it ended, once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::auth;
use super::error::ApiError;
use crate::ledger;
use crate::telemetry::metrics;

/// How long a mutation may keep trying through a database failover when the caller set no
/// deadline: longer than pg_auto_failover takes to promote a standby after losing its primary.
const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(30);
/// The share of the caller's own deadline (grpc-timeout) a mutation may spend: the rest is left
/// for the answer to reach the caller before it gives up.
const DEADLINE_SHARE: f64 = 0.9;

/// Who calls a mutation, and until when it waits.
pub(super) struct Caller {
    /// Recorded as the entries' actor.
    pub(super) actor: Arc<str>,
    /// Until when the mutation may try through a failover: most of the caller's grpc-timeout,
    /// or DEFAULT_CALL_DEADLINE without one.
    pub(super) deadline: Instant,
}

impl Caller {
    pub(super) fn of<T>(request: &Request<T>) -> Self {
        Self {
            actor: auth::actor(request),
            deadline: caller_deadline(request),
        }
    }
}

fn caller_deadline<T>(request: &Request<T>) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(DEFAULT_CALL_DEADLINE, |timeout| {
            timeout.mul_f64(DEADLINE_SHARE)
        });
    Instant::now() + timeout
}

/// The grpc-timeout header: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// One call's tracing span and metric handles.
pub(super) struct Call {
    span: tracing::Span,
    metrics: metrics::RpcMetrics,
}

impl Call {
    /// The ids are logged before they are validated, so they are cut to a valid id's length: a
    /// caller cannot write megabytes into the log with one request.
    pub(super) fn new(
        method: &'static str,
        offering_id: &str,
        request_id: &str,
        metrics: metrics::RpcMetrics,
    ) -> Self {
        let span = tracing::info_span!(
            "rpc",
            method,
            offering_id = cut_for_log(offering_id),
            request_id = cut_for_log(request_id)
        );
        Self { span, metrics }
    }
}

fn cut_for_log(id: &str) -> &str {
    &id[..id.floor_char_boundary(ledger::limits::ID_CHARS_MAX + 1)]
}

/// Runs one call inside its span and logs how it ended, once: successes at DEBUG, refusals at
/// INFO, server-side failures at ERROR (with the database's own message, which the caller never
/// sees).
pub(super) async fn traced<T>(
    span: Call,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let Call { span, metrics } = span;
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let latency_us = elapsed.as_micros() as u64;
    let _entered = span.enter();
    match result {
        Ok(reply) => {
            metrics.record(tonic::Code::Ok, elapsed);
            tracing::debug!(code = ?tonic::Code::Ok, latency_us, "call finished");
            Ok(Response::new(reply))
        }
        Err(error) => {
            let cause = matches!(error, ApiError::Store(_)).then(|| error.to_string());
            let status = Status::from(error);
            let code = status.code();
            metrics.record(code, elapsed);
            match (code, cause) {
                (tonic::Code::Internal, cause) => {
                    tracing::error!(
                        ?code,
                        latency_us,
                        message = status.message(),
                        cause,
                        "call failed"
                    );
                }
                (_, Some(cause)) => {
                    tracing::warn!(
                        ?code,
                        latency_us,
                        message = status.message(),
                        cause,
                        "call failed"
                    );
                }
                (_, None) => {
                    tracing::info!(
                        ?code,
                        latency_us,
                        message = status.message(),
                        "call refused"
                    );
                }
            }
            Err(status)
        }
    }
}
