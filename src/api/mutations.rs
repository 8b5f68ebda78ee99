//! The mutating RPCs and the one path they share. A handler is its request's validation into a
//! ledger command and the conversion of what the ledger applied into its reply
//! ([`MutationRequest`]); [`mutate`] does the rest alike for all: the caller's actor and
//! deadline, the call's span, submission to the group committer, and the answer.
//!
//! CreateOffering is the exception: a new offering has no head to lock, so it goes to the store
//! directly, not through the group committer, but with the same caller and span.

use tonic::{Request, Response, Status};

use super::call::{Caller, traced};
use super::convert;
use super::error::ApiError;
use super::service::LedgerService;
use super::validate;
use crate::ledger::{self, Applied, Command, CreateOutcome};
use crate::proto;
use crate::store::Store;

/// A mutating RPC's request, as the shared mutation path needs it.
pub(super) trait MutationRequest: Send + 'static {
    /// The RPC's name, as in the span, the metrics and `auth::RPC_ROLES`.
    const METHOD: &'static str;
    type Reply: Send;
    /// offering_id and request_id as sent, for the span: it is opened before validation.
    fn ids(&self) -> (&str, &str);
    /// The request validated, in the order that decides which field a caller hears of first.
    fn into_mutation(self) -> Result<Mutation, ApiError>;
    fn reply(applied: Applied) -> Self::Reply;
}

/// A validated mutation: the command and the offering and request_id it applies under.
pub(super) struct Mutation {
    offering_id: String,
    request_id: String,
    command: Command,
}

/// Every mutating RPC but CreateOffering: validate, submit the command to the offering's group
/// commit as the caller, within the caller's deadline, and convert what was applied.
pub(super) async fn mutate<S: Store, R: MutationRequest>(
    service: &LedgerService<S>,
    request: Request<R>,
) -> Result<Response<R::Reply>, Status> {
    let caller = Caller::of(&request);
    let r = request.into_inner();
    let (offering_id, request_id) = r.ids();
    let call = service.call(R::METHOD, offering_id, request_id);
    traced(call, async move {
        let Mutation {
            offering_id,
            request_id,
            command,
        } = r.into_mutation()?;
        let request = ledger::Request {
            request_id,
            actor: caller.actor,
            command,
        };
        let applied = service
            .committer
            .submit(&offering_id, request, caller.deadline)
            .await???;
        Ok(R::reply(applied))
    })
    .await
}

/// CreateOffering: straight to the store, which decides a taken offering_id with the ledger.
pub(super) async fn create_offering<S: Store>(
    service: &LedgerService<S>,
    request: Request<proto::CreateOfferingRequest>,
) -> Result<Response<proto::Offering>, Status> {
    let caller = Caller::of(&request);
    let r = request.into_inner();
    let call = service.call("CreateOffering", &r.offering_id, &r.request_id);
    traced(call, async move {
        let new = validate::new_offering(r, caller.actor, crate::store::now())?;
        match service
            .store
            .create_offering(&new, caller.deadline)
            .await??
        {
            CreateOutcome::Created(offering) | CreateOutcome::Replayed(offering) => {
                Ok(convert::offering(offering))
            }
        }
    })
    .await
}

/// Subscribe and Cancel: the same fields, checked alike, but Cancel's units may be 0 ("all").
fn investor_mutation(
    (offering_id, investor_id, units, request_id): (String, String, i64, String),
    units_min: i64,
    command: fn(String, i64) -> Command,
) -> Result<Mutation, ApiError> {
    validate::id("offering_id", &offering_id)?;
    validate::id("investor_id", &investor_id)?;
    validate::units("units", units, units_min)?;
    validate::id("request_id", &request_id)?;
    Ok(Mutation {
        offering_id,
        request_id,
        command: command(investor_id, units),
    })
}

impl MutationRequest for proto::SubscribeRequest {
    const METHOD: &'static str = "Subscribe";
    type Reply = proto::SubscribeResponse;

    fn ids(&self) -> (&str, &str) {
        (&self.offering_id, &self.request_id)
    }

    fn into_mutation(self) -> Result<Mutation, ApiError> {
        let fields = (
            self.offering_id,
            self.investor_id,
            self.units,
            self.request_id,
        );
        investor_mutation(fields, 1, |investor_id, units| Command::Subscribe {
            investor_id,
            units,
        })
    }

    fn reply(applied: Applied) -> Self::Reply {
        let (entry, offering, position, replayed) = convert::applied(applied);
        proto::SubscribeResponse {
            entry,
            offering,
            position,
            replayed,
        }
    }
}

impl MutationRequest for proto::CancelRequest {
    const METHOD: &'static str = "Cancel";
    type Reply = proto::CancelResponse;

    fn ids(&self) -> (&str, &str) {
        (&self.offering_id, &self.request_id)
    }

    fn into_mutation(self) -> Result<Mutation, ApiError> {
        let fields = (
            self.offering_id,
            self.investor_id,
            self.units,
            self.request_id,
        );
        investor_mutation(fields, 0, |investor_id, units| Command::Cancel {
            investor_id,
            units,
        })
    }

    fn reply(applied: Applied) -> Self::Reply {
        let (entry, offering, position, replayed) = convert::applied(applied);
        proto::CancelResponse {
            entry,
            offering,
            position,
            replayed,
        }
    }
}

/// CloseOffering, FinalizeOffering and AllocateOffering: the same request, a different command.
/// Their request_id is optional: one left empty is made up (a UUID), as for AmendOffering.
fn status_change(
    (offering_id, expected_version, request_id): (String, i64, String),
    command: fn(i64) -> Command,
) -> Result<Mutation, ApiError> {
    validate::id("offering_id", &offering_id)?;
    validate::not_negative("expected_version", expected_version)?;
    let request_id = validate::id_or_new("request_id", request_id)?;
    Ok(Mutation {
        offering_id,
        request_id,
        command: command(expected_version),
    })
}

/// The offering after the entry: what every lifecycle RPC answers.
fn offering_reply(applied: Applied) -> proto::Offering {
    convert::offering(applied.offering)
}

impl MutationRequest for proto::CloseOfferingRequest {
    const METHOD: &'static str = "CloseOffering";
    type Reply = proto::Offering;

    fn ids(&self) -> (&str, &str) {
        (&self.offering_id, &self.request_id)
    }

    fn into_mutation(self) -> Result<Mutation, ApiError> {
        let fields = (self.offering_id, self.expected_version, self.request_id);
        status_change(fields, |expected_version| Command::Close {
            expected_version,
        })
    }

    fn reply(applied: Applied) -> Self::Reply {
        offering_reply(applied)
    }
}

impl MutationRequest for proto::FinalizeOfferingRequest {
    const METHOD: &'static str = "FinalizeOffering";
    type Reply = proto::Offering;

    fn ids(&self) -> (&str, &str) {
        (&self.offering_id, &self.request_id)
    }

    fn into_mutation(self) -> Result<Mutation, ApiError> {
        let fields = (self.offering_id, self.expected_version, self.request_id);
        status_change(fields, |expected_version| Command::Finalize {
            expected_version,
        })
    }

    fn reply(applied: Applied) -> Self::Reply {
        offering_reply(applied)
    }
}

impl MutationRequest for proto::AllocateOfferingRequest {
    const METHOD: &'static str = "AllocateOffering";
    type Reply = proto::Offering;

    fn ids(&self) -> (&str, &str) {
        (&self.offering_id, &self.request_id)
    }

    fn into_mutation(self) -> Result<Mutation, ApiError> {
        let fields = (self.offering_id, self.expected_version, self.request_id);
        status_change(fields, |expected_version| Command::Allocate {
            expected_version,
        })
    }

    fn reply(applied: Applied) -> Self::Reply {
        offering_reply(applied)
    }
}

impl MutationRequest for proto::AmendOfferingRequest {
    const METHOD: &'static str = "AmendOffering";
    type Reply = proto::Offering;

    fn ids(&self) -> (&str, &str) {
        (&self.offering_id, &self.request_id)
    }

    fn into_mutation(self) -> Result<Mutation, ApiError> {
        validate::id("offering_id", &self.offering_id)?;
        validate::not_negative("expected_version", self.expected_version)?;
        let changes = validate::term_changes(&self)?;
        let request_id = validate::id_or_new("request_id", self.request_id)?;
        Ok(Mutation {
            offering_id: self.offering_id,
            request_id,
            command: Command::Amend {
                expected_version: self.expected_version,
                changes,
            },
        })
    }

    fn reply(applied: Applied) -> Self::Reply {
        offering_reply(applied)
    }
}
