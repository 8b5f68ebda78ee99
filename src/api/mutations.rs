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
pub(super) trait MutationRequest: Addressed + Send + 'static {
    /// The RPC's name, as in the span, the metrics and `auth::RPC_ROLES`.
    const METHOD: &'static str;
    type Reply: Send;
    /// The request validated, in the order that decides which field a caller hears of first.
    fn into_mutation(self) -> Result<Mutation, ApiError>;
    fn reply(applied: Applied) -> Self::Reply;
}

/// offering_id and request_id as sent, for the span: it is opened before validation.
pub(super) trait Addressed {
    fn ids(&self) -> (&str, &str);
}

macro_rules! addressed {
    ($($message:ty),+) => {$(
        impl Addressed for $message {
            fn ids(&self) -> (&str, &str) {
                (&self.offering_id, &self.request_id)
            }
        }
    )+};
}

addressed!(
    proto::SubscribeRequest,
    proto::CancelRequest,
    proto::CloseOfferingRequest,
    proto::FinalizeOfferingRequest,
    proto::AllocateOfferingRequest,
    proto::AmendOfferingRequest
);

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

/// Subscribe and Cancel: the same fields, checked alike and in the same order, and replies of
/// the same fields; only Cancel's units may be 0 ("all").
macro_rules! investor_mutation {
    ($method:literal: $message:ty => $reply:ident, $command:ident, units_min = $units_min:literal) => {
        impl MutationRequest for $message {
            const METHOD: &'static str = $method;
            type Reply = proto::$reply;

            fn into_mutation(self) -> Result<Mutation, ApiError> {
                validate::id("offering_id", &self.offering_id)?;
                validate::id("investor_id", &self.investor_id)?;
                validate::units("units", self.units, $units_min)?;
                validate::id("request_id", &self.request_id)?;
                Ok(Mutation {
                    offering_id: self.offering_id,
                    request_id: self.request_id,
                    command: Command::$command {
                        investor_id: self.investor_id,
                        units: self.units,
                    },
                })
            }

            fn reply(applied: Applied) -> Self::Reply {
                let (entry, offering, position, replayed) = convert::applied(applied);
                proto::$reply {
                    entry,
                    offering,
                    position,
                    replayed,
                }
            }
        }
    };
}

investor_mutation!("Subscribe": proto::SubscribeRequest => SubscribeResponse, Subscribe, units_min = 1);
investor_mutation!("Cancel": proto::CancelRequest => CancelResponse, Cancel, units_min = 0);

/// CloseOffering, FinalizeOffering and AllocateOffering: the same request, a different command,
/// and the offering after it for a reply. Their request_id is optional: one left empty is made
/// up (a UUID), as for AmendOffering.
macro_rules! status_change {
    ($method:literal: $message:ty, $command:ident) => {
        impl MutationRequest for $message {
            const METHOD: &'static str = $method;
            type Reply = proto::Offering;

            fn into_mutation(self) -> Result<Mutation, ApiError> {
                validate::id("offering_id", &self.offering_id)?;
                validate::not_negative("expected_version", self.expected_version)?;
                let request_id = validate::id_or_new("request_id", self.request_id)?;
                Ok(Mutation {
                    offering_id: self.offering_id,
                    request_id,
                    command: Command::$command {
                        expected_version: self.expected_version,
                    },
                })
            }

            fn reply(applied: Applied) -> Self::Reply {
                convert::offering(applied.offering)
            }
        }
    };
}

status_change!("CloseOffering": proto::CloseOfferingRequest, Close);
status_change!("FinalizeOffering": proto::FinalizeOfferingRequest, Finalize);
status_change!("AllocateOffering": proto::AllocateOfferingRequest, Allocate);

impl MutationRequest for proto::AmendOfferingRequest {
    const METHOD: &'static str = "AmendOffering";
    type Reply = proto::Offering;

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
        convert::offering(applied.offering)
    }
}
