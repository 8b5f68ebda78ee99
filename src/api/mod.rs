//! The gRPC service: parse and validate a request, hand it to the ledger (mutations go through
//! the group committer, reads straight to the store), convert the answer. One tracing span per
//! call carries the method, the ids, the status code and the latency.

mod convert;
pub mod error;
mod validate;
mod watch;

use std::future::Future;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::group_commit::GroupCommitter;
use crate::ledger::{self, Applied, Command, CreateOutcome, NewOffering, Position};
use crate::proto::{self, subscription_ledger_server::SubscriptionLedger};
use crate::store::{HistoryQuery, Store};
use error::ApiError;

/// Page-token kinds: a token is only accepted by the listing that made it.
const OFFERINGS_TOKEN: &str = "offerings";
const HISTORY_TOKEN: &str = "history";

pub struct LedgerService<S> {
    store: S,
    committer: GroupCommitter<S>,
    /// Cancelled when the server shuts down: ends the WatchHistory streams, which would
    /// otherwise hold a graceful shutdown open forever.
    shutdown: CancellationToken,
}

impl<S: Store> LedgerService<S> {
    pub fn new(store: S, shutdown: CancellationToken) -> Self {
        Self {
            committer: GroupCommitter::new(store.clone()),
            store,
            shutdown,
        }
    }

    async fn mutate(
        &self,
        offering_id: &str,
        request_id: String,
        command: Command,
    ) -> Result<Applied, ApiError> {
        let request = ledger::Request {
            request_id,
            command,
        };
        Ok(self.committer.submit(offering_id, request).await???)
    }

    /// CloseOffering and FinalizeOffering: the same request, a different command.
    async fn change_status(
        &self,
        method: &'static str,
        offering_id: String,
        expected_version: i64,
        request_id: String,
        command: fn(i64) -> Command,
    ) -> Result<Response<proto::Offering>, Status> {
        traced(rpc_span(method, &offering_id, &request_id), async move {
            validate::id("offering_id", &offering_id)?;
            validate::not_negative("expected_version", expected_version)?;
            let request_id = validate::id_or_new("request_id", request_id)?;
            let applied = self
                .mutate(&offering_id, request_id, command(expected_version))
                .await?;
            Ok(convert::offering(applied.offering))
        })
        .await
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

/// The ids are logged before they are validated, so they are cut to a valid id's length: a
/// caller cannot write megabytes into the log with one request.
fn rpc_span(method: &'static str, offering_id: &str, request_id: &str) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method,
        offering_id = cut_for_log(offering_id),
        request_id = cut_for_log(request_id)
    )
}

fn cut_for_log(id: &str) -> &str {
    &id[..id.floor_char_boundary(ledger::limits::ID_CHARS_MAX + 1)]
}

/// Runs one call inside its span and logs how it ended: successes at DEBUG, refusals at INFO,
/// server-side failures at ERROR (where the database's own message is logged).
async fn traced<T>(
    span: tracing::Span,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let latency_us = started.elapsed().as_micros() as u64;
    let _entered = span.enter();
    match result {
        Ok(reply) => {
            tracing::debug!(code = ?tonic::Code::Ok, latency_us, "call finished");
            Ok(Response::new(reply))
        }
        Err(error) => {
            let status = Status::from(error);
            if status.code() == tonic::Code::Internal {
                tracing::error!(code = ?status.code(), latency_us, message = status.message(), "call failed");
            } else {
                tracing::info!(code = ?status.code(), latency_us, message = status.message(), "call refused");
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
        let r = request.into_inner();
        traced(
            rpc_span("CreateOffering", &r.offering_id, &r.request_id),
            async move {
                let offering_id = validate::id_or_new("offering_id", r.offering_id)?;
                validate::name(&r.name)?;
                validate::units("max_units", r.max_units, 1)?;
                if !(0..=r.max_units).contains(&r.max_units_per_investor) {
                    return Err(ApiError::invalid(
                        "max_units_per_investor",
                        format!(
                            "is {}; must be 0 (no cap) up to max_units ({})",
                            r.max_units_per_investor, r.max_units
                        ),
                    ));
                }
                let new = NewOffering {
                    offering_id,
                    name: r.name,
                    max_units: r.max_units,
                    max_units_per_investor: r.max_units_per_investor,
                    request_id: validate::id_or_new("request_id", r.request_id)?,
                };
                match self.store.create_offering(&new).await?? {
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
        traced(rpc_span("GetOffering", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            Ok(convert::offering(
                self.require_offering(&r.offering_id).await?,
            ))
        })
        .await
    }

    async fn list_offerings(
        &self,
        request: Request<proto::ListOfferingsRequest>,
    ) -> Result<Response<proto::ListOfferingsResponse>, Status> {
        let r = request.into_inner();
        traced(rpc_span("ListOfferings", "", ""), async move {
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
            Ok(proto::ListOfferingsResponse {
                offerings: offerings.into_iter().map(convert::offering).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn close_offering(
        &self,
        request: Request<proto::CloseOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let r = request.into_inner();
        let close = |expected_version| Command::Close { expected_version };
        self.change_status(
            "CloseOffering",
            r.offering_id,
            r.expected_version,
            r.request_id,
            close,
        )
        .await
    }

    async fn finalize_offering(
        &self,
        request: Request<proto::FinalizeOfferingRequest>,
    ) -> Result<Response<proto::Offering>, Status> {
        let r = request.into_inner();
        let finalize = |expected_version| Command::Finalize { expected_version };
        self.change_status(
            "FinalizeOffering",
            r.offering_id,
            r.expected_version,
            r.request_id,
            finalize,
        )
        .await
    }

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<proto::SubscribeResponse>, Status> {
        let r = request.into_inner();
        traced(
            rpc_span("Subscribe", &r.offering_id, &r.request_id),
            async move {
                validate::id("offering_id", &r.offering_id)?;
                validate::id("investor_id", &r.investor_id)?;
                validate::units("units", r.units, 1)?;
                validate::id("request_id", &r.request_id)?;
                let command = Command::Subscribe {
                    investor_id: r.investor_id,
                    units: r.units,
                };
                let applied = self.mutate(&r.offering_id, r.request_id, command).await?;
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
        let r = request.into_inner();
        traced(
            rpc_span("Cancel", &r.offering_id, &r.request_id),
            async move {
                validate::id("offering_id", &r.offering_id)?;
                validate::id("investor_id", &r.investor_id)?;
                validate::units("units", r.units, 0)?;
                validate::id("request_id", &r.request_id)?;
                let command = Command::Cancel {
                    investor_id: r.investor_id,
                    units: r.units,
                };
                let applied = self.mutate(&r.offering_id, r.request_id, command).await?;
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
        traced(rpc_span("GetPosition", &r.offering_id, ""), async move {
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
        traced(rpc_span("ListHistory", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            if !r.investor_id.is_empty() {
                validate::id("investor_id", &r.investor_id)?;
            }
            validate::not_negative("after_sequence", r.after_sequence)?;
            let limit = validate::page_size(r.page_size)?;
            let mut after_sequence = r.after_sequence;
            if let Some(key) = validate::page_token(HISTORY_TOKEN, &r.page_token)? {
                after_sequence = after_sequence.max(history_token_sequence(&key, &r.offering_id)?);
            }
            let query = HistoryQuery {
                offering_id: &r.offering_id,
                investor_id: (!r.investor_id.is_empty()).then_some(r.investor_id.as_str()),
                after_sequence,
                limit: limit + 1,
            };
            let mut entries = self.store.list_history(query).await?;
            if entries.is_empty() {
                // Every offering has at least its creation entry; tell "none" from "no offering".
                self.require_offering(&r.offering_id).await?;
            }
            let mut next_page_token = String::new();
            if entries.len() > limit as usize {
                entries.truncate(limit as usize);
                if let Some(last) = entries.last() {
                    let key = format!("{}@{}", r.offering_id, last.sequence);
                    next_page_token = validate::encode_page_token(HISTORY_TOKEN, &key);
                }
            }
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
        traced(rpc_span("WatchHistory", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            validate::not_negative("after_sequence", r.after_sequence)?;
            if self.shutdown.is_cancelled() {
                return Err(ApiError::ShuttingDown);
            }
            // Subscribe before the first read, so that no commit falls between the two.
            let changes = self.store.changes();
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
                self.store.clone(),
                offering,
                r.after_sequence,
                changes,
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
        traced(rpc_span("VerifyOffering", &r.offering_id, ""), async move {
            validate::id("offering_id", &r.offering_id)?;
            let report = self
                .store
                .verify_offering(&r.offering_id)
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
            })
        })
        .await
    }
}

/// The sequence in a history page token, which must belong to this offering.
fn history_token_sequence(key: &str, offering_id: &str) -> Result<i64, ApiError> {
    let invalid =
        || ApiError::invalid("page_token", "was not returned for this offering's history");
    let (token_offering, sequence) = key.rsplit_once('@').ok_or_else(invalid)?;
    if token_offering != offering_id {
        return Err(invalid());
    }
    sequence
        .parse::<i64>()
        .ok()
        .filter(|s| *s >= 0)
        .ok_or_else(invalid)
}
