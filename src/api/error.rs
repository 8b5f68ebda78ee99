//! The one place where errors become gRPC statuses.
//!
//! Every status carries a google.rpc.ErrorInfo (domain "subledger.v1") whose reason names the
//! rule, so clients branch on the reason, not on the message. Database details go to the log,
//! never to the caller.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::group_commit::{QueueFull, QueueScope};
use crate::ledger::Rejection;
use crate::signing::SignatureError;
use crate::store::StoreError;

pub const ERROR_DOMAIN: &str = "subledger.v1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed; `field` is its proto field name.
    #[error("{field}: {description}")]
    InvalidArgument {
        field: &'static str,
        description: String,
    },
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error(transparent)]
    Overloaded(#[from] QueueFull),
    /// A bound on concurrent work or on a request's size; `reason` names it.
    #[error("{message}")]
    LimitReached {
        reason: &'static str,
        limit: u64,
        message: String,
    },
    /// The request body is not the protobuf message the RPC takes.
    #[error("the request body is not a valid protobuf message: {0}")]
    MalformedRequest(String),
    /// No credential, or one that identifies nobody; the text says which, never the credential.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("principal {principal:?} may not call {method}: it needs the {required_role} role")]
    PermissionDenied {
        principal: String,
        method: String,
        required_role: &'static str,
    },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A signed digest this server does not believe.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A proof asked about a tree larger than the offering's history.
    #[error("{field} {requested} is past the offering's history: its tree has {tree_size} entries")]
    PastHistory {
        field: &'static str,
        requested: i64,
        tree_size: u64,
    },
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::Store(Arc::new(error))
    }
}

impl From<Arc<StoreError>> for ApiError {
    fn from(error: Arc<StoreError>) -> Self {
        Self::Store(error)
    }
}

impl ApiError {
    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            description: description.into(),
        }
    }

    /// The status code, and the ErrorInfo reason with its metadata.
    fn classify(&self) -> (Code, &'static str, Vec<(&'static str, String)>) {
        use Rejection as R;
        match self {
            Self::InvalidArgument { field, .. } => (
                Code::InvalidArgument,
                "INVALID_FIELD",
                vec![("field", (*field).to_owned())],
            ),
            Self::Rejected(rejection) => match rejection {
                R::OfferingNotFound { offering_id } => (
                    Code::NotFound,
                    "OFFERING_NOT_FOUND",
                    vec![("offering_id", offering_id.clone())],
                ),
                R::OfferingExists { offering_id } => (
                    Code::AlreadyExists,
                    "OFFERING_EXISTS",
                    vec![("offering_id", offering_id.clone())],
                ),
                R::OfferingCapExceeded {
                    requested,
                    remaining,
                    max_units,
                } => (
                    Code::FailedPrecondition,
                    "OFFERING_CAP_EXCEEDED",
                    vec![
                        ("requested_units", requested.to_string()),
                        ("remaining_units", remaining.to_string()),
                        ("max_units", max_units.to_string()),
                    ],
                ),
                R::InvestorCapExceeded { would_hold, cap } => (
                    Code::FailedPrecondition,
                    "INVESTOR_CAP_EXCEEDED",
                    vec![
                        ("would_hold_units", would_hold.to_string()),
                        ("max_units_per_investor", cap.to_string()),
                    ],
                ),
                R::OfferingNotOpen { status, bound } => {
                    let mut metadata = vec![("status", (*status).to_owned())];
                    if let Some(bound) = bound {
                        metadata.push(("bound", (*bound).to_owned()));
                    }
                    (Code::FailedPrecondition, "OFFERING_NOT_OPEN", metadata)
                }
                R::OfferingNotAllocated { status } => (
                    Code::FailedPrecondition,
                    "OFFERING_NOT_ALLOCATED",
                    vec![("status", (*status).to_owned())],
                ),
                R::NotAMultipleOfLot { units, lot_units } => (
                    Code::FailedPrecondition,
                    "NOT_A_MULTIPLE_OF_LOT",
                    vec![
                        ("units", units.to_string()),
                        ("lot_units", lot_units.to_string()),
                    ],
                ),
                R::BelowInvestorMinimum {
                    would_hold,
                    minimum,
                } => (
                    Code::FailedPrecondition,
                    "BELOW_INVESTOR_MINIMUM",
                    vec![
                        ("would_hold_units", would_hold.to_string()),
                        ("min_units_per_investor", minimum.to_string()),
                    ],
                ),
                R::DemandCapExceeded {
                    would_total,
                    max_total_demand,
                } => (
                    Code::FailedPrecondition,
                    "DEMAND_CAP_EXCEEDED",
                    vec![
                        ("would_total_demand", would_total.to_string()),
                        ("max_total_demand", max_total_demand.to_string()),
                    ],
                ),
                R::NotProRata => (Code::FailedPrecondition, "NOT_PRO_RATA", vec![]),
                R::StateInconsistent { .. } => (Code::Internal, "STATE_INCONSISTENT", vec![]),
                R::InvestorLimitReached { limit } => (
                    Code::ResourceExhausted,
                    "INVESTOR_LIMIT_REACHED",
                    vec![("limit", limit.to_string())],
                ),
                R::AmendmentConflict { field, .. } => (
                    Code::FailedPrecondition,
                    "AMENDMENT_CONFLICT",
                    vec![("field", (*field).to_owned())],
                ),
                R::OfferingNotClosed { status } => (
                    Code::FailedPrecondition,
                    "OFFERING_NOT_CLOSED",
                    vec![("status", (*status).to_owned())],
                ),
                R::InsufficientUnits { requested, held } => (
                    Code::FailedPrecondition,
                    "INSUFFICIENT_UNITS",
                    vec![
                        ("requested_units", requested.to_string()),
                        ("held_units", held.to_string()),
                    ],
                ),
                R::RequestIdReused { request_id } => (
                    Code::FailedPrecondition,
                    "REQUEST_ID_REUSED",
                    vec![("request_id", request_id.clone())],
                ),
                R::VersionMismatch { expected, actual } => (
                    Code::Aborted,
                    "VERSION_MISMATCH",
                    vec![
                        ("expected_version", expected.to_string()),
                        ("actual_version", actual.to_string()),
                    ],
                ),
            },
            Self::Store(error) => match error.as_ref() {
                StoreError::Unavailable(_) => (Code::Unavailable, "DATABASE_UNAVAILABLE", vec![]),
                StoreError::CommitOutcomeUnknown(_) => {
                    (Code::Unavailable, "COMMIT_OUTCOME_UNKNOWN", vec![])
                }
                StoreError::Database(_)
                | StoreError::Corrupt(_)
                | StoreError::Migrate(_)
                | StoreError::NotMigrated(_)
                | StoreError::Config(_)
                | StoreError::NoWriter(_) => (Code::Internal, "INTERNAL", vec![]),
            },
            Self::Overloaded(full) => {
                let reason = match full.scope {
                    QueueScope::Offering => "OFFERING_QUEUE_FULL",
                    QueueScope::Replica => "QUEUE_FULL",
                };
                (
                    Code::ResourceExhausted,
                    reason,
                    vec![("limit", full.limit.to_string())],
                )
            }
            Self::LimitReached { reason, limit, .. } => (
                Code::ResourceExhausted,
                reason,
                vec![("limit", limit.to_string())],
            ),
            Self::MalformedRequest(_) => (Code::InvalidArgument, "MALFORMED_REQUEST", vec![]),
            Self::Unauthenticated(_) => (Code::Unauthenticated, "UNAUTHENTICATED", vec![]),
            Self::PermissionDenied {
                principal,
                method,
                required_role,
            } => (
                Code::PermissionDenied,
                "PERMISSION_DENIED",
                vec![
                    ("principal", principal.clone()),
                    ("method", method.clone()),
                    ("required_role", (*required_role).to_owned()),
                ],
            ),
            Self::ShuttingDown => (Code::Unavailable, "SHUTTING_DOWN", vec![]),
            Self::PastHistory {
                field, tree_size, ..
            } => (
                Code::OutOfRange,
                "TREE_SIZE_PAST_HISTORY",
                vec![
                    ("field", (*field).to_owned()),
                    ("tree_size", tree_size.to_string()),
                ],
            ),
            Self::Signature(error) => signature_status(error),
        }
    }
}

/// A refused digest signature: forged or altered is the request's fault; a key or a ledger
/// this server does not know is a matter of its configuration (or of the digest's origin).
fn signature_status(error: &SignatureError) -> (Code, &'static str, Vec<(&'static str, String)>) {
    use SignatureError as E;
    match error {
        E::Unsigned => (
            Code::InvalidArgument,
            "INVALID_FIELD",
            vec![("field", "digest.signature".to_owned())],
        ),
        E::NoRecordTime => (
            Code::InvalidArgument,
            "INVALID_FIELD",
            vec![("field", "digest.record_time".to_owned())],
        ),
        E::Invalid { key_id } => (
            Code::InvalidArgument,
            "DIGEST_SIGNATURE_INVALID",
            vec![("key_id", key_id.to_string())],
        ),
        E::KeyNotTrusted { key_id } => (
            Code::FailedPrecondition,
            "DIGEST_KEY_NOT_TRUSTED",
            vec![("key_id", key_id.to_string())],
        ),
        E::OtherLedger { expected, found } => (
            Code::FailedPrecondition,
            "DIGEST_OTHER_LEDGER",
            vec![
                ("ledger_id", expected.to_string()),
                ("digest_ledger_id", found.to_string()),
            ],
        ),
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let (code, reason, metadata) = error.classify();
        let message = match &error {
            // The caller learns that the database failed, not how: the call's end line in the
            // log says how (see `api::traced`).
            ApiError::Store(store_error) => match store_error.as_ref() {
                StoreError::Unavailable(_) => {
                    "the database is unavailable; retry with the same request_id".to_owned()
                }
                StoreError::CommitOutcomeUnknown(_) => {
                    "the database became unavailable while committing and the outcome could not be learned in time; retry with the same request_id, which applies it at most once".to_owned()
                }
                _ => "internal error; see the server log".to_owned(),
            },
            other => other.to_string(),
        };
        let metadata: HashMap<String, String> = metadata
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
        if let ApiError::InvalidArgument { field, description } = &error {
            details.set_bad_request(vec![FieldViolation::new(*field, description.clone())]);
        }
        Status::with_error_details(code, message, details)
    }
}
