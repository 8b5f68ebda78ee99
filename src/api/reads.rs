//! The reading RPCs: heads, positions, history (listed, watched or verified) and digests. They
//! go straight to the store, outside any transaction that writes, each within its bounds (page
//! sizes, an actor scan's length, the streams and verifications one process runs at once).

use tonic::{Request, Response, Status};

use super::auth;
use super::call::traced;
use super::convert;
use super::error::ApiError;
use super::service::{LedgerService, VERIFY_ADMITTED_MAX};
use super::validate;
use super::watch;
use crate::ledger::chain::Digest;
use crate::ledger::{self, Position};
use crate::proto;
use crate::store::{HistoryQuery, Store};

/// Page-token kinds: a token is only accepted by the listing that made it.
const OFFERINGS_TOKEN: &str = "offerings";
const HISTORY_TOKEN: &str = "history";
/// History entries one ListHistory page examines at most when filtered by actor, which no index
/// serves: a page for a rare actor stops there and hands back a token to go on from.
pub const ACTOR_SCAN_ENTRIES_MAX: i64 = 10_000;

/// GetOffering: the head as callers see it now (past close_time, CLOSED).
pub(super) async fn get_offering<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::GetOfferingRequest>,
) -> Result<Response<proto::Offering>, Status> {
    let r = request.into_inner();
    traced(
        service.call("GetOffering", &r.offering_id, ""),
        async move {
            validate::id("offering_id", &r.offering_id)?;
            let offering = service.require_offering(&r.offering_id).await?;
            Ok(convert::offering(offering.as_of(crate::store::now())))
        },
    )
    .await
}

/// ListOfferings: heads in offering_id order, a page at a time.
pub(super) async fn list_offerings<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::ListOfferingsRequest>,
) -> Result<Response<proto::ListOfferingsResponse>, Status> {
    let r = request.into_inner();
    traced(service.call("ListOfferings", "", ""), async move {
        let limit = validate::page_size(r.page_size)?;
        let after = validate::page_token(OFFERINGS_TOKEN, &r.page_token)?;
        if let Some(key) = &after {
            validate::id("page_token", key).map_err(|_| {
                ApiError::invalid("page_token", "is not a token this listing returned")
            })?;
        }
        // One row past the page tells whether another page follows.
        let mut offerings = service
            .store
            .list_offerings(after.as_deref(), limit + 1)
            .await?;
        let mut next_page_token = String::new();
        if offerings.len() > limit as usize {
            offerings.truncate(limit as usize);
            if let Some(last) = offerings.last() {
                next_page_token = validate::encode_page_token(OFFERINGS_TOKEN, &last.offering_id);
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

/// GetPosition: what an investor holds; 0 for one who never subscribed.
pub(super) async fn get_position<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::GetPositionRequest>,
) -> Result<Response<proto::Position>, Status> {
    let r = request.into_inner();
    traced(
        service.call("GetPosition", &r.offering_id, ""),
        async move {
            validate::id("offering_id", &r.offering_id)?;
            validate::id("investor_id", &r.investor_id)?;
            let position = match service
                .store
                .get_position(&r.offering_id, &r.investor_id)
                .await?
            {
                Some(position) => position,
                // An investor who never subscribed holds nothing; an unknown offering is an error.
                None => {
                    service.require_offering(&r.offering_id).await?;
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
        },
    )
    .await
}

/// ListHistory: entries in sequence order, optionally one investor's or one actor's, a page at
/// a time.
pub(super) async fn list_history<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::ListHistoryRequest>,
) -> Result<Response<proto::ListHistoryResponse>, Status> {
    let r = request.into_inner();
    traced(
        service.call("ListHistory", &r.offering_id, ""),
        async move {
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
            let mut entries = service.store.list_history(query).await?;
            let mut next_after = None;
            if entries.len() > limit as usize {
                entries.truncate(limit as usize);
                next_after = entries.last().map(|e| e.sequence);
            }
            if entries.is_empty() || (next_after.is_none() && sequence_max < i64::MAX) {
                // Every offering has at least its creation entry: tell "none" from "no
                // offering". A scan cut short goes on in the next page if entries follow.
                let offering = service.require_offering(&r.offering_id).await?;
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
        },
    )
    .await
}

/// WatchHistory: the backlog, then each entry as it commits, until OFFERING_FINALIZED.
pub(super) async fn watch_history<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::WatchHistoryRequest>,
) -> Result<Response<watch::HistoryStream>, Status> {
    let principal = auth::actor(&request);
    let peer = request.remote_addr();
    let r = request.into_inner();
    traced(
        service.call("WatchHistory", &r.offering_id, ""),
        async move {
            validate::id("offering_id", &r.offering_id)?;
            validate::not_negative("after_sequence", r.after_sequence)?;
            if service.shutdown.is_cancelled() {
                return Err(ApiError::ShuttingDown);
            }
            let slot = service.watch_slots.take(&principal, peer.map(|a| a.ip()))?;
            let offering = service.require_offering(&r.offering_id).await?;
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
                &service.watch_hub,
                service.store.clone(),
                offering,
                r.after_sequence,
                slot,
                service.shutdown.clone(),
            ))
        },
    )
    .await
}

/// VerifyOffering: the offering recomputed from its history and held against what is stored;
/// a bounded number run at once, each holding a connection.
pub(super) async fn verify_offering<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::VerifyOfferingRequest>,
) -> Result<Response<proto::VerifyOfferingResponse>, Status> {
    let principal = auth::actor(&request);
    let r = request.into_inner();
    traced(service.call("VerifyOffering", &r.offering_id, ""), async move {
        validate::id("offering_id", &r.offering_id)?;
        let digest = validate::digest(&r.offering_id, r.digest)?;
        if let Some(digest) = &digest {
            // An unsigned digest is the caller's own word, checked as before; a signed one
            // must be by a key this server trusts, of this ledger.
            service
                .digest_keys
                .trusted
                .check(digest, Some(service.ledger_id))?;
        }
        let _admitted = service.verifications_admitted.try_acquire().map_err(|_| {
            ApiError::LimitReached {
                reason: "TOO_MANY_VERIFICATIONS",
                limit: VERIFY_ADMITTED_MAX as u64,
                message: format!(
                    "{VERIFY_ADMITTED_MAX} VerifyOffering calls are running or waiting on this replica, the most it admits; retry later"
                ),
            }
        })?;
        // The semaphore is never closed, so acquiring fails only if it were.
        let _running = service
            .verifications_running
            .acquire()
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        let report = service
            .store
            .verify_offering(&r.offering_id, digest.as_slice())
            .await?
            .ok_or_else(|| {
                ApiError::from(ledger::Rejection::OfferingNotFound {
                    offering_id: r.offering_id.clone(),
                })
            })?;
        report_verification(service, &principal, &r.offering_id, &report);
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

/// Logs what a verification found. A stored history that does not hold is an alarm (ERROR), at
/// most once per offering per minute however often it is verified. A caller's digest that does
/// not match is the caller's finding, answered to it: INFO, naming the caller, so that no caller
/// can raise false alarms at will.
fn report_verification<S: Store>(
    service: &LedgerService<S>,
    principal: &str,
    offering_id: &str,
    report: &ledger::verify::Report,
) {
    let stored_problems = report.problems.len() - report.digests_failed;
    if stored_problems > 0
        && service
            .verification_alarms
            .first_within_a_minute(offering_id)
    {
        tracing::error!(
            offering_id,
            problems = ?report.problems,
            "offering failed verification: its stored history does not hold"
        );
    }
    if report.digests_failed > 0 {
        tracing::info!(
            offering_id,
            principal,
            digests_failed = report.digests_failed,
            "a caller's digest does not match the stored history"
        );
    }
}

/// GetDigest: the latest entry's place in the hash chain, to keep outside subledger.
pub(super) async fn get_digest<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::GetDigestRequest>,
) -> Result<Response<proto::Digest>, Status> {
    let r = request.into_inner();
    traced(service.call("GetDigest", &r.offering_id, ""), async move {
        validate::id("offering_id", &r.offering_id)?;
        let head = service.require_offering(&r.offering_id).await?;
        let mut digest = Digest::of(&head);
        if let Some(signer) = &service.digest_keys.signer {
            digest = signer.sign(service.ledger_id, digest);
        }
        Ok(convert::digest(digest, service.ledger_id))
    })
    .await
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
