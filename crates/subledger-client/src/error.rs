//! The server's refusals as a typed enum: one variant per google.rpc.ErrorInfo reason of domain
//! `subledger.v1` (the proto's header lists them with their metadata keys), so callers match on
//! what happened instead of parsing messages. The status is read once, here, with tonic-types.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What a call failed with. Variants carry the ErrorInfo metadata the server sends with the
/// reason; a number the server did not send reads 0.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// INVALID_ARGUMENT INVALID_FIELD: `field` is the request field at fault.
    #[error("invalid {field}: {message}")]
    InvalidField { field: String, message: String },
    /// INVALID_ARGUMENT MALFORMED_REQUEST: the body was not the RPC's protobuf message.
    #[error("malformed request: {message}")]
    MalformedRequest { message: String },
    /// UNAUTHENTICATED: no credential, or one that names no principal (the message says which,
    /// never the credential).
    #[error("unauthenticated: {message}")]
    Unauthenticated { message: String },
    /// PERMISSION_DENIED: the principal's roles do not cover the RPC.
    #[error("{principal} may not call {method}: it needs the {required_role} role")]
    PermissionDenied {
        principal: String,
        method: String,
        required_role: String,
    },
    /// NOT_FOUND OFFERING_NOT_FOUND.
    #[error("no offering {offering_id:?}")]
    OfferingNotFound { offering_id: String },
    /// ALREADY_EXISTS OFFERING_EXISTS: the offering_id is taken by another request.
    #[error("offering {offering_id:?} exists, made by another request")]
    OfferingExists { offering_id: String },
    /// FAILED_PRECONDITION OFFERING_CAP_EXCEEDED.
    #[error("{requested} units requested, {remaining} of {max_units} remain")]
    OfferingCapExceeded {
        requested: i64,
        remaining: i64,
        max_units: i64,
    },
    /// FAILED_PRECONDITION INVESTOR_CAP_EXCEEDED.
    #[error("the investor would hold {would_hold} units, over the cap of {max_units_per_investor}")]
    InvestorCapExceeded {
        would_hold: i64,
        max_units_per_investor: i64,
    },
    /// FAILED_PRECONDITION OFFERING_NOT_OPEN; `bound` is `open_time` or `close_time` when the
    /// subscription window is why.
    #[error("the offering is not open (status {status}{})", .bound.as_ref().map(|b| format!(", {b}")).unwrap_or_default())]
    OfferingNotOpen {
        status: String,
        bound: Option<String>,
    },
    /// FAILED_PRECONDITION OFFERING_NOT_CLOSED.
    #[error("the offering is not closed (status {status})")]
    OfferingNotClosed { status: String },
    /// FAILED_PRECONDITION OFFERING_NOT_ALLOCATED: a PRO_RATA offering finalized before
    /// AllocateOffering.
    #[error("the offering is not allocated (status {status})")]
    OfferingNotAllocated { status: String },
    /// FAILED_PRECONDITION NOT_PRO_RATA: AllocateOffering on a first-come offering.
    #[error("the offering is not pro rata")]
    NotProRata,
    /// FAILED_PRECONDITION NOT_A_MULTIPLE_OF_LOT.
    #[error("{units} units is not a multiple of the lot of {lot_units}")]
    NotAMultipleOfLot { units: i64, lot_units: i64 },
    /// FAILED_PRECONDITION BELOW_INVESTOR_MINIMUM.
    #[error(
        "the investor would hold {would_hold} units, below the minimum of {min_units_per_investor}"
    )]
    BelowInvestorMinimum {
        would_hold: i64,
        min_units_per_investor: i64,
    },
    /// FAILED_PRECONDITION DEMAND_CAP_EXCEEDED.
    #[error("total demand would be {would_total_demand}, over {max_total_demand}")]
    DemandCapExceeded {
        would_total_demand: i64,
        max_total_demand: i64,
    },
    /// FAILED_PRECONDITION AMENDMENT_CONFLICT: `field` is the term the offering forbids.
    #[error("amendment conflict on {field}: {message}")]
    AmendmentConflict { field: String, message: String },
    /// FAILED_PRECONDITION INSUFFICIENT_UNITS: a cancel of more than is held.
    #[error("{requested} units to cancel, {held} held")]
    InsufficientUnits { requested: i64, held: i64 },
    /// FAILED_PRECONDITION REQUEST_ID_REUSED: the request_id was used for another request, or by
    /// another principal.
    #[error("request_id {request_id:?} was used for another request")]
    RequestIdReused { request_id: String },
    /// ABORTED VERSION_MISMATCH: re-read and decide again.
    #[error("expected version {expected}, the offering is at {actual}")]
    VersionMismatch { expected: i64, actual: i64 },
    /// RESOURCE_EXHAUSTED: a bound on the server; `reason` names it (OFFERING_QUEUE_FULL,
    /// QUEUE_FULL, INVESTOR_LIMIT_REACHED, TOO_MANY_WATCH_STREAMS, TOO_MANY_WATCH_STREAMS_FOR_PRINCIPAL,
    /// TOO_MANY_VERIFICATIONS, MESSAGE_TOO_LARGE, HEADERS_TOO_LARGE).
    #[error("{reason} (limit {limit}): {message}")]
    LimitReached {
        reason: String,
        limit: u64,
        message: String,
    },
    /// UNAVAILABLE after the retries the deadline allowed: `reason` is the server's
    /// (DATABASE_UNAVAILABLE, SHUTTING_DOWN, COMMIT_OUTCOME_UNKNOWN), or None when no replica
    /// answered at all. A mutation may or may not have been applied: retry it with the same
    /// request_id.
    #[error("unavailable{}: {message}", .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Unavailable {
        reason: Option<String>,
        message: String,
    },
    /// A connection could not be set up: a bad endpoint address or TLS configuration, or (from
    /// [`crate::LedgerBuilder::connect`]) an endpoint that cannot be reached.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The client was given settings it cannot use (no endpoint, a token that is not a header
    /// value); the text never holds the token.
    #[error("client settings: {0}")]
    Config(String),
    /// Any other status: INTERNAL, DEADLINE_EXCEEDED, UNIMPLEMENTED, or one without a known
    /// reason.
    #[error("{}: {}", .0.code(), .0.message())]
    Other(Status),
}

impl Error {
    /// The gRPC status code the server answered with (UNAVAILABLE for a transport failure).
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidField { .. } | Self::MalformedRequest { .. } => Code::InvalidArgument,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::OfferingNotFound { .. } => Code::NotFound,
            Self::OfferingExists { .. } => Code::AlreadyExists,
            Self::OfferingCapExceeded { .. }
            | Self::InvestorCapExceeded { .. }
            | Self::OfferingNotOpen { .. }
            | Self::OfferingNotClosed { .. }
            | Self::OfferingNotAllocated { .. }
            | Self::NotProRata
            | Self::NotAMultipleOfLot { .. }
            | Self::BelowInvestorMinimum { .. }
            | Self::DemandCapExceeded { .. }
            | Self::AmendmentConflict { .. }
            | Self::InsufficientUnits { .. }
            | Self::RequestIdReused { .. } => Code::FailedPrecondition,
            Self::VersionMismatch { .. } => Code::Aborted,
            Self::LimitReached { .. } => Code::ResourceExhausted,
            Self::Unavailable { .. } | Self::Transport(_) => Code::Unavailable,
            Self::Config(_) => Code::InvalidArgument,
            Self::Other(status) => status.code(),
        }
    }

    /// Reads the status's ErrorInfo (domain `subledger.v1`) into its variant; a status without
    /// one, or with a reason this client does not know, is [`Error::Other`].
    pub fn from_status(status: Status) -> Self {
        let details = status.get_error_details();
        let Some(info) = details
            .error_info()
            .filter(|info| info.domain == subledger_proto::ERROR_DOMAIN)
        else {
            return match status.code() {
                // A connection refused or reset: no replica answered.
                Code::Unavailable => Self::Unavailable {
                    reason: None,
                    message: status.message().to_owned(),
                },
                _ => Self::Other(status),
            };
        };
        let metadata = &info.metadata;
        let text = |key: &str| metadata.get(key).cloned().unwrap_or_default();
        let number = |key: &str| number(metadata, key);
        let message = status.message().to_owned();
        match (status.code(), info.reason.as_str()) {
            (Code::InvalidArgument, "INVALID_FIELD") => Self::InvalidField {
                field: text("field"),
                message,
            },
            (Code::InvalidArgument, "MALFORMED_REQUEST") => Self::MalformedRequest { message },
            (Code::Unauthenticated, "UNAUTHENTICATED") => Self::Unauthenticated { message },
            (Code::PermissionDenied, "PERMISSION_DENIED") => Self::PermissionDenied {
                principal: text("principal"),
                method: text("method"),
                required_role: text("required_role"),
            },
            (Code::NotFound, "OFFERING_NOT_FOUND") => Self::OfferingNotFound {
                offering_id: text("offering_id"),
            },
            (Code::AlreadyExists, "OFFERING_EXISTS") => Self::OfferingExists {
                offering_id: text("offering_id"),
            },
            (Code::FailedPrecondition, reason) => match reason {
                "OFFERING_CAP_EXCEEDED" => Self::OfferingCapExceeded {
                    requested: number("requested_units"),
                    remaining: number("remaining_units"),
                    max_units: number("max_units"),
                },
                "INVESTOR_CAP_EXCEEDED" => Self::InvestorCapExceeded {
                    would_hold: number("would_hold_units"),
                    max_units_per_investor: number("max_units_per_investor"),
                },
                "OFFERING_NOT_OPEN" => Self::OfferingNotOpen {
                    status: text("status"),
                    bound: metadata.get("bound").cloned(),
                },
                "OFFERING_NOT_CLOSED" => Self::OfferingNotClosed {
                    status: text("status"),
                },
                "OFFERING_NOT_ALLOCATED" => Self::OfferingNotAllocated {
                    status: text("status"),
                },
                "NOT_PRO_RATA" => Self::NotProRata,
                "NOT_A_MULTIPLE_OF_LOT" => Self::NotAMultipleOfLot {
                    units: number("units"),
                    lot_units: number("lot_units"),
                },
                "BELOW_INVESTOR_MINIMUM" => Self::BelowInvestorMinimum {
                    would_hold: number("would_hold_units"),
                    min_units_per_investor: number("min_units_per_investor"),
                },
                "DEMAND_CAP_EXCEEDED" => Self::DemandCapExceeded {
                    would_total_demand: number("would_total_demand"),
                    max_total_demand: number("max_total_demand"),
                },
                "AMENDMENT_CONFLICT" => Self::AmendmentConflict {
                    field: text("field"),
                    message,
                },
                "INSUFFICIENT_UNITS" => Self::InsufficientUnits {
                    requested: number("requested_units"),
                    held: number("held_units"),
                },
                "REQUEST_ID_REUSED" => Self::RequestIdReused {
                    request_id: text("request_id"),
                },
                _ => Self::Other(status),
            },
            (Code::Aborted, "VERSION_MISMATCH") => Self::VersionMismatch {
                expected: number("expected_version"),
                actual: number("actual_version"),
            },
            (Code::ResourceExhausted, reason) => Self::LimitReached {
                reason: reason.to_owned(),
                limit: u64::try_from(number("limit")).unwrap_or(0),
                message,
            },
            (Code::Unavailable, reason) => Self::Unavailable {
                reason: Some(reason.to_owned()),
                message,
            },
            _ => Self::Other(status),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::from_status(status)
    }
}

/// A metadata value the server wrote with `to_string()` of an integer; 0 if it is missing.
fn number(metadata: &HashMap<String, String>, key: &str) -> i64 {
    metadata
        .get(key)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, FieldViolation};

    use super::*;

    fn status(code: Code, reason: &str, metadata: &[(&str, &str)]) -> Status {
        let metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>();
        let details = ErrorDetails::with_error_info(reason, "subledger.v1", metadata);
        Status::with_error_details(code, "the server's message", details)
    }

    #[test]
    fn reasons_become_variants_with_their_metadata() {
        let cap = status(
            Code::FailedPrecondition,
            "OFFERING_CAP_EXCEEDED",
            &[
                ("requested_units", "50"),
                ("remaining_units", "10"),
                ("max_units", "1000"),
            ],
        );
        assert!(matches!(
            Error::from(cap),
            Error::OfferingCapExceeded {
                requested: 50,
                remaining: 10,
                max_units: 1000
            }
        ));
        let version = status(
            Code::Aborted,
            "VERSION_MISMATCH",
            &[("expected_version", "2"), ("actual_version", "3")],
        );
        assert!(matches!(
            Error::from(version),
            Error::VersionMismatch {
                expected: 2,
                actual: 3
            }
        ));
        let reused = status(
            Code::FailedPrecondition,
            "REQUEST_ID_REUSED",
            &[("request_id", "r-1")],
        );
        assert!(
            matches!(Error::from(reused), Error::RequestIdReused { request_id } if request_id == "r-1")
        );
        let not_open = status(
            Code::FailedPrecondition,
            "OFFERING_NOT_OPEN",
            &[("status", "OPEN"), ("bound", "close_time")],
        );
        assert!(matches!(
            Error::from(not_open),
            Error::OfferingNotOpen { status, bound: Some(bound) } if status == "OPEN" && bound == "close_time"
        ));
        let full = status(
            Code::ResourceExhausted,
            "OFFERING_QUEUE_FULL",
            &[("limit", "4096")],
        );
        assert!(matches!(
            Error::from(full),
            Error::LimitReached { reason, limit: 4096, .. } if reason == "OFFERING_QUEUE_FULL"
        ));
        let unknown = status(Code::Unavailable, "COMMIT_OUTCOME_UNKNOWN", &[]);
        let unknown = Error::from(unknown);
        assert!(
            matches!(&unknown, Error::Unavailable { reason: Some(r), .. } if r == "COMMIT_OUTCOME_UNKNOWN")
        );
        assert_eq!(unknown.code(), Code::Unavailable);
    }

    #[test]
    fn invalid_field_keeps_the_field_and_the_message() {
        let mut details = ErrorDetails::with_error_info(
            "INVALID_FIELD",
            "subledger.v1",
            HashMap::from([("field".to_owned(), "units".to_owned())]),
        );
        details.set_bad_request(vec![FieldViolation::new("units", "must be positive")]);
        let status =
            Status::with_error_details(Code::InvalidArgument, "units: must be positive", details);
        let error = Error::from(status);
        assert!(
            matches!(&error, Error::InvalidField { field, message } if field == "units" && message == "units: must be positive")
        );
        assert_eq!(error.code(), Code::InvalidArgument);
    }

    #[test]
    fn statuses_without_a_known_reason_stay_statuses() {
        let bare = Error::from(Status::internal("boom"));
        assert!(matches!(&bare, Error::Other(s) if s.code() == Code::Internal));
        // Another domain's ErrorInfo is not ours to interpret.
        let foreign =
            ErrorDetails::with_error_info("OFFERING_NOT_FOUND", "elsewhere", HashMap::new());
        let foreign = Status::with_error_details(Code::NotFound, "no", foreign);
        assert!(matches!(Error::from(foreign), Error::Other(_)));
        // A refused connection has no ErrorInfo: no replica answered.
        let refused = Error::from(Status::unavailable("connection refused"));
        assert!(matches!(refused, Error::Unavailable { reason: None, .. }));
    }
}
