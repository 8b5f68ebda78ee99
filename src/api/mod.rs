//! The gRPC service: parse and validate a request, hand it to the ledger (mutations go through
//! the group committer, reads straight to the store), convert the answer. One tracing span per
//! call carries the method, the ids, the status code and the latency.

pub mod auth;
mod convert;
pub mod edge;
pub mod error;
mod validate;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::group_commit::GroupCommitter;
use crate::ledger::chain::Digest;
use crate::ledger::{self, Applied, Command, CreateOutcome, Position};
use crate::proto::{self, subscription_ledger_server::SubscriptionLedger};
use crate::store::{HistoryQuery, Store};
use crate::telemetry::metrics;
use error::ApiError;

/// Page-token kinds: a token is only accepted by the listing that made it.
const OFFERINGS_TOKEN: &str = "offerings";
const HISTORY_TOKEN: &str = "history";
/// History entries one ListHistory page examines at most when filtered by actor, which no index
/// serves: a page for a rare actor stops there and hands back a token to go on from.
pub const ACTOR_SCAN_ENTRIES_MAX: i64 = 10_000;
/// VerifyOffering calls running at once per process. Each holds a pooled connection for as long
/// as it reads the offering's whole history (seconds at a million entries); more at once would
/// take the pool from the writes. Others wait their turn, holding no connection.
pub const VERIFY_RUNNING_MAX: usize = 2;
/// VerifyOffering calls running or waiting per process; past it a call is refused.
pub const VERIFY_ADMITTED_MAX: usize = 64;

/// Bounds on what callers can make one process hold.
#[derive(Clone, Copy, Debug)]
pub struct ServiceLimits {
    /// WatchHistory streams open at once.
    pub max_watch_streams: usize,
}

pub struct LedgerService<S> {
    store: S,
    committer: GroupCommitter<S>,
    /// Cancelled when the server shuts down: ends the WatchHistory streams, which would
    /// otherwise hold a graceful shutdown open forever.
    shutdown: CancellationToken,
    watch_streams: Arc<Semaphore>,
    max_watch_streams: usize,
    /// The shared reader of each offering watched on this process.
    watch_hub: watch::hub::WatchHub<S>,
    verifications_admitted: Semaphore,
    verifications_running: Semaphore,
    /// Each RPC's metric handles, registered once.
    rpc_metrics: std::collections::HashMap<&'static str, metrics::RpcMetrics>,
}

impl<S: Store> LedgerService<S> {
    pub fn new(store: S, limits: ServiceLimits, shutdown: CancellationToken) -> Self {
        Self {
            committer: GroupCommitter::new(store.clone()),
            watch_hub: watch::hub::WatchHub::new(store.clone()),
            store,
            shutdown,
            watch_streams: Arc::new(Semaphore::new(limits.max_watch_streams)),
            max_watch_streams: limits.max_watch_streams,
            verifications_admitted: Semaphore::new(VERIFY_ADMITTED_MAX),
            verifications_running: Semaphore::new(VERIFY_RUNNING_MAX),
            rpc_metrics: auth::RPC_ROLES
                .iter()
                .map(|(method, _)| (*method, metrics::RpcMetrics::new(method)))
                .collect(),
        }
    }

    async fn mutate(
        &self,
        offering_id: &str,
        request_id: String,
        caller: Caller,
        command: Command,
    ) -> Result<Applied, ApiError> {
        let request = ledger::Request {
            request_id,
            actor: caller.actor,
            command,
        };
        Ok(self
            .committer
            .submit(offering_id, request, caller.deadline)
            .await???)
    }

    /// CloseOffering, FinalizeOffering and AllocateOffering: the same request, a different
    /// command.
    async fn change_status(
        &self,
        method: &'static str,
        offering_id: String,
        expected_version: i64,
        request_id: String,
        caller: Caller,
        command: fn(i64) -> Command,
    ) -> Result<Response<proto::Offering>, Status> {
        traced(self.call(method, &offering_id, &request_id), async move {
            validate::id("offering_id", &offering_id)?;
            validate::not_negative("expected_version", expected_version)?;
            let request_id = validate::id_or_new("request_id", request_id)?;
            let applied = self
                .mutate(&offering_id, request_id, caller, command(expected_version))
                .await?;
            Ok(convert::offering(applied.offering))
        })
        .await
    }

    /// A call's span and metrics. The ids are logged before they are validated, so they are
    /// cut to a valid id's length: a caller cannot write megabytes into the log with one request.
    fn call(&self, method: &'static str, offering_id: &str, request_id: &str) -> Call {
        let span = tracing::info_span!(
            "rpc",
            method,
            offering_id = cut_for_log(offering_id),
            request_id = cut_for_log(request_id)
        );
        let metrics = match self.rpc_metrics.get(method) {
            Some(metrics) => metrics.clone(),
            None => metrics::RpcMetrics::new(method),
        };
        Call { span, metrics }
    }

    async fn require_offering(&self, offering_id: &str) -> Result<ledger::Offering, ApiError> {
        self.store.get_offering(offering_id).await?.ok_or_else(|| {
            ledger::Rejection::OfferingNotFound {
                offering_id: offering_id.to_owned(),
            }
            .into()
        })
    }
}

/// How long a mutation may keep trying through a database failover when the caller set no
/// deadline: longer than pg_auto_failover takes to promote a standby after losing its primary.
const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(30);
/// The share of the caller's own deadline (grpc-timeout) a mutation may spend: the rest is left
/// for the answer to reach the caller before it gives up.
const DEADLINE_SHARE: f64 = 0.9;

/// Who calls a mutation, and until when it waits.
struct Caller {
    /// Recorded as the entries' actor.
    actor: Arc<str>,
    /// Until when the mutation may try through a failover: most of the caller's grpc-timeout,
    /// or DEFAULT_CALL_DEADLINE without one.
    deadline: Instant,
}

impl Caller {
    fn of<T>(request: &Request<T>) -> Self {
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
struct Call {
    span: tracing::Span,
    metrics: metrics::RpcMetrics,
}

fn cut_for_log(id: &str) -> &str {
    &id[..id.floor_char_boundary(ledger::limits::ID_CHARS_MAX + 1)]
}

/// Runs one call inside its span and logs how it ended, once: successes at DEBUG, refusals at
/// INFO, server-side failures at ERROR (with the database's own message, which the caller never
/// sees).
async fn traced<T>(
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

#[tonic::async_trait]
impl<S: Store> SubscriptionLedger for LedgerService<S> {
    async fn create_offering(
        &self,
        request: Request<proto::CreateOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        traced(
            self.call("CreateOffering", &r.offering_id, &r.request_id),
            async move {
                let new = validate::new_offering(r, caller.actor, crate::store::now())?;
                match self.store.create_offering(&new, caller.deadline).await?? {
                    CreateOutcome::Created(offering) | CreateOutcome::Replayed(offering) => {
                        Ok(convert::offering(offering))
                    }
                }
            },
        )
        .await
    }

    async fn get_offering(
        &self,
        request: Request<proto::GetOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let r = request.into_inner();
        traced(self.call("GetOffering", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            let offering = self.require_offering(&r.offering_id).await?;
            Ok(convert::offering(offering.as_of(crate::store::now())))
        })
        .await
    }

    async fn list_offerings(
        &self,
        request: Request<proto::ListOfferingsRequest>,
    ) -> Result<Response<proto::ListOfferingsResponse>, Status> {
        let r = request.into_inner();
        traced(self.call("ListOfferings", "", ""), async move {
            let limit = validate::page_size(r.page_size)?;
            let after = validate::page_token(OFFERINGS_TOKEN, &r.page_token)?;
            if let Some(key) = &after {
                validate::id("page_token", key).map_err(|_| {
                    ApiError::invalid("page_token", "is not a token this listing returned")
                })?;
            }
            // One row past the page tells whether another page follows.
            let mut offerings = self
                .store
                .list_offerings(after.as_deref(), limit + 1)
                .await?;
            let mut next_page_token = String::new();
            if offerings.len() > limit as usize {
                offerings.truncate(limit as usize);
                if let Some(last) = offerings.last() {
                    next_page_token =
                        validate::encode_page_token(OFFERINGS_TOKEN, &last.offering_id);
                }
            }
            let now = crate::store::now();
            Ok(proto::ListOfferingsResponse {
                offerings: offerings
                    .into_iter()
                    .map(|offering| convert::offering(offering.as_of(now)))
                    .collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn close_offering(
        &self,
        request: Request<proto::CloseOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let close = |expected_version| Command::Close { expected_version };
        self.change_status(
            "CloseOffering",
            r.offering_id,
            r.expected_version,
            r.request_id,
            caller,
            close,
        )
        .await
    }

    async fn finalize_offering(
        &self,
        request: Request<proto::FinalizeOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let finalize = |expected_version| Command::Finalize { expected_version };
        self.change_status(
            "FinalizeOffering",
            r.offering_id,
            r.expected_version,
            r.request_id,
            caller,
            finalize,
        )
        .await
    }

    async fn allocate_offering(
        &self,
        request: Request<proto::AllocateOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        let allocate = |expected_version| Command::Allocate { expected_version };
        self.change_status(
            "AllocateOffering",
            r.offering_id,
            r.expected_version,
            r.request_id,
            caller,
            allocate,
        )
        .await
    }

    async fn amend_offering(
        &self,
        request: Request<proto::AmendOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        traced(
            self.call("AmendOffering", &r.offering_id, &r.request_id),
            async move {
                validate::id("offering_id", &r.offering_id)?;
                validate::not_negative("expected_version", r.expected_version)?;
                let changes = validate::term_changes(&r)?;
                let request_id = validate::id_or_new("request_id", r.request_id)?;
                let command = Command::Amend {
                    expected_version: r.expected_version,
                    changes,
                };
                let applied = self
                    .mutate(&r.offering_id, request_id, caller, command)
                    .await?;
                Ok(convert::offering(applied.offering))
            },
        )
        .await
    }

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<proto::SubscribeResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        traced(
            self.call("Subscribe", &r.offering_id, &r.request_id),
            async move {
                validate::id("offering_id", &r.offering_id)?;
                validate::id("investor_id", &r.investor_id)?;
                validate::units("units", r.units, 1)?;
                validate::id("request_id", &r.request_id)?;
                let command = Command::Subscribe {
                    investor_id: r.investor_id,
                    units: r.units,
                };
                let applied = self
                    .mutate(&r.offering_id, r.request_id, caller, command)
                    .await?;
                let (entry, offering, position, replayed) = convert::applied(applied);
                Ok(proto::SubscribeResponse {
                    entry,
                    offering,
                    position,
                    replayed,
                })
            },
        )
        .await
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::CancelResponse>, Status> {
        let caller = Caller::of(&request);
        let r = request.into_inner();
        traced(
            self.call("Cancel", &r.offering_id, &r.request_id),
            async move {
                validate::id("offering_id", &r.offering_id)?;
                validate::id("investor_id", &r.investor_id)?;
                validate::units("units", r.units, 0)?;
                validate::id("request_id", &r.request_id)?;
                let command = Command::Cancel {
                    investor_id: r.investor_id,
                    units: r.units,
                };
                let applied = self
                    .mutate(&r.offering_id, r.request_id, caller, command)
                    .await?;
                let (entry, offering, position, replayed) = convert::applied(applied);
                Ok(proto::CancelResponse {
                    entry,
                    offering,
                    position,
                    replayed,
                })
            },
        )
        .await
    }

    async fn get_position(
        &self,
        request: Request<proto::GetPositionRequest>,
    ) -> Result<Response<proto::Position>, Status> {
        let r = request.into_inner();
        traced(self.call("GetPosition", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            validate::id("investor_id", &r.investor_id)?;
            let position = match self
                .store
                .get_position(&r.offering_id, &r.investor_id)
                .await?
            {
                Some(position) => position,
                // An investor who never subscribed holds nothing; an unknown offering is an error.
                None => {
                    self.require_offering(&r.offering_id).await?;
                    Position {
                        offering_id: r.offering_id,
                        investor_id: r.investor_id,
                        units: 0,
                        update_time: None,
                        demanded_units: 0,
                        first_sequence: 0,
                    }
                }
            };
            Ok(convert::position(position))
        })
        .await
    }

    async fn list_history(
        &self,
        request: Request<proto::ListHistoryRequest>,
    ) -> Result<Response<proto::ListHistoryResponse>, Status> {
        let r = request.into_inner();
        traced(self.call("ListHistory", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            let investor_id = validate::optional_id("investor_id", &r.investor_id)?;
            let actor = validate::optional_actor(&r.actor)?;
            validate::not_negative("after_sequence", r.after_sequence)?;
            let limit = validate::page_size(r.page_size)?;
            // A token continues the listing that made it, and only with the same filters.
            let filters = HistoryPageKey {
                offering_id: r.offering_id.clone(),
                investor_id: r.investor_id.clone(),
                actor: r.actor.clone(),
                after_sequence: r.after_sequence,
                next_after: 0,
            };
            let after_sequence = match validate::page_token(HISTORY_TOKEN, &r.page_token)? {
                Some(key) => HistoryPageKey::decode(&key, &filters)?,
                None => r.after_sequence,
            };
            // Filtered by actor, a page examines a bounded range of sequences.
            let sequence_max = match actor {
                Some(_) => after_sequence.saturating_add(ACTOR_SCAN_ENTRIES_MAX),
                None => i64::MAX,
            };
            let query = HistoryQuery {
                offering_id: &r.offering_id,
                investor_id,
                actor,
                after_sequence,
                sequence_max,
                limit: limit + 1,
            };
            let mut entries = self.store.list_history(query).await?;
            let mut next_after = None;
            if entries.len() > limit as usize {
                entries.truncate(limit as usize);
                next_after = entries.last().map(|e| e.sequence);
            }
            if entries.is_empty() || (next_after.is_none() && sequence_max < i64::MAX) {
                // Every offering has at least its creation entry: tell "none" from "no
                // offering". A scan cut short goes on in the next page if entries follow.
                let offering = self.require_offering(&r.offering_id).await?;
                if offering.version > sequence_max {
                    next_after = Some(sequence_max);
                }
            }
            let next_page_token = next_after.map_or_else(String::new, |next_after| {
                let key = HistoryPageKey {
                    next_after,
                    ..filters
                };
                validate::encode_page_token(HISTORY_TOKEN, &key.encode())
            });
            Ok(proto::ListHistoryResponse {
                entries: entries.into_iter().map(convert::entry).collect(),
                next_page_token,
            })
        })
        .await
    }

    type WatchHistoryStream = watch::HistoryStream;

    async fn watch_history(
        &self,
        request: Request<proto::WatchHistoryRequest>,
    ) -> Result<Response<Self::WatchHistoryStream>, Status> {
        let r = request.into_inner();
        traced(self.call("WatchHistory", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            validate::not_negative("after_sequence", r.after_sequence)?;
            if self.shutdown.is_cancelled() {
                return Err(ApiError::ShuttingDown);
            }
            let permit = self.watch_streams.clone().try_acquire_owned().map_err(|_| {
                ApiError::LimitReached {
                    reason: "TOO_MANY_WATCH_STREAMS",
                    limit: self.max_watch_streams as u64,
                    message: format!(
                        "{} WatchHistory streams are open on this replica, the most it serves; retry later or on another replica",
                        self.max_watch_streams
                    ),
                }
            })?;
            let offering = self.require_offering(&r.offering_id).await?;
            // Past the last entry the stream could miss OFFERING_FINALIZED and never end.
            if r.after_sequence > offering.version {
                return Err(ApiError::invalid(
                    "after_sequence",
                    format!(
                        "is {}, past the offering's last entry ({})",
                        r.after_sequence, offering.version
                    ),
                ));
            }
            Ok(watch::spawn(
                &self.watch_hub,
                self.store.clone(),
                offering,
                r.after_sequence,
                permit,
                self.shutdown.clone(),
            ))
        })
        .await
    }

    async fn verify_offering(
        &self,
        request: Request<proto::VerifyOfferingRequest>,
    ) -> Result<Response<proto::VerifyOfferingResponse>, Status> {
        let r = request.into_inner();
        traced(self.call("VerifyOffering", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            let digest = validate::digest(&r.offering_id, r.digest)?;
            let _admitted = self.verifications_admitted.try_acquire().map_err(|_| {
                ApiError::LimitReached {
                    reason: "TOO_MANY_VERIFICATIONS",
                    limit: VERIFY_ADMITTED_MAX as u64,
                    message: format!(
                        "{VERIFY_ADMITTED_MAX} VerifyOffering calls are running or waiting on this replica, the most it admits; retry later"
                    ),
                }
            })?;
            // The semaphore is never closed, so acquiring fails only if it were.
            let _running = self
                .verifications_running
                .acquire()
                .await
                .map_err(|_| ApiError::ShuttingDown)?;
            let report = self
                .store
                .verify_offering(&r.offering_id, digest.as_slice())
                .await?
                .ok_or_else(|| {
                    ApiError::from(ledger::Rejection::OfferingNotFound {
                        offering_id: r.offering_id.clone(),
                    })
                })?;
            if !report.problems.is_empty() {
                tracing::error!(problems = ?report.problems, "offering failed verification");
            }
            Ok(proto::VerifyOfferingResponse {
                ok: report.problems.is_empty(),
                entries_checked: report.entries_checked,
                problems: report.problems,
                first_bad_sequence: report.first_bad_sequence,
                digest_ok: digest.map(|_| report.digests_failed == 0),
            })
        })
        .await
    }

    async fn get_digest(
        &self,
        request: Request<proto::GetDigestRequest>,
    ) -> Result<Response<proto::Digest>, Status> {
        let r = request.into_inner();
        traced(self.call("GetDigest", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            let head = self.require_offering(&r.offering_id).await?;
            Ok(convert::digest(Digest::of(&head)))
        })
        .await
    }
}

/// What a ListHistory page token holds: the filters of the request that made it, and where the
/// next page starts.
#[derive(serde::Serialize, serde::Deserialize)]
struct HistoryPageKey {
    offering_id: String,
    investor_id: String,
    actor: String,
    after_sequence: i64,
    next_after: i64,
}

impl HistoryPageKey {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Where the next page starts, if the token was made by a request with these filters.
    fn decode(key: &str, filters: &HistoryPageKey) -> Result<i64, ApiError> {
        let made: HistoryPageKey = serde_json::from_str(key)
            .map_err(|_| ApiError::invalid("page_token", "is not a token this listing returned"))?;
        let same_filters = made.offering_id == filters.offering_id
            && made.investor_id == filters.investor_id
            && made.actor == filters.actor
            && made.after_sequence == filters.after_sequence;
        if !same_filters {
            return Err(ApiError::invalid(
                "page_token",
                "was returned for another offering_id, investor_id, actor or after_sequence; repeat the request that returned it",
            ));
        }
        if made.next_after < filters.after_sequence {
            return Err(ApiError::invalid(
                "page_token",
                "is not a token this listing returned",
            ));
        }
        Ok(made.next_after)
    }
}
