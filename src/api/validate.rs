//! Checks on request fields, each failure naming the field. Nothing past this module sees an
//! unchecked id, count or token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use std::sync::Arc;

use super::error::ApiError;
use crate::ledger::chain::{self, Digest};
use crate::ledger::fields::{self, Caps, FieldError};
use crate::ledger::limits::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use crate::ledger::{NewOffering, TermChanges, Timestamp};
use crate::proto;

/// The ledger's rules say which field broke which rule; the caller is told so by name.
impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        ApiError::invalid(error.field, error.reason)
    }
}

/// Ids are 1-128 characters of A-Z a-z 0-9 . _ : - (safe in logs, URLs and page tokens).
pub fn id(field: &'static str, value: &str) -> Result<(), ApiError> {
    Ok(fields::id(field, value)?)
}

/// An optional filter: empty means none.
pub fn optional_id<'a>(field: &'static str, value: &'a str) -> Result<Option<&'a str>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    id(field, value)?;
    Ok(Some(value))
}

/// An actor filter: empty means none; otherwise a principal name (the id alphabet plus / and @,
/// which client certificate identities use).
pub fn optional_actor(value: &str) -> Result<Option<&str>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    fields::actor("actor", value)?;
    Ok(Some(value))
}

/// An optional id: empty means "make one up" (a UUID).
pub fn id_or_new(field: &'static str, value: String) -> Result<String, ApiError> {
    if value.is_empty() {
        return Ok(uuid::Uuid::new_v4().to_string());
    }
    id(field, &value)?;
    Ok(value)
}

pub fn name(value: &str) -> Result<(), ApiError> {
    Ok(fields::name("name", value)?)
}

/// A timestamp field: None when unset; stored (and so compared) to the microsecond.
pub fn timestamp(
    field: &'static str,
    value: Option<prost_types::Timestamp>,
) -> Result<Option<Timestamp>, ApiError> {
    use chrono::SubsecRound;
    let Some(value) = value else {
        return Ok(None);
    };
    let nanos = u32::try_from(value.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000);
    let time = nanos
        .and_then(|nanos| chrono::DateTime::from_timestamp(value.seconds, nanos))
        .filter(|t| (1970..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or_else(|| {
            ApiError::invalid(field, "is not a valid timestamp between 1970 and 9999")
        })?;
    Ok(Some(time.trunc_subsecs(6)))
}

/// VerifyOffering's optional digest, of the offering `offering_id` (an empty offering_id in it
/// means that one).
pub fn digest(
    offering_id: &str,
    digest: Option<proto::Digest>,
) -> Result<Option<Digest>, ApiError> {
    let Some(digest) = digest else {
        return Ok(None);
    };
    if !digest.offering_id.is_empty() && digest.offering_id != offering_id {
        return Err(ApiError::invalid(
            "digest.offering_id",
            format!(
                "is {:?}, a digest of another offering than {offering_id:?}",
                digest.offering_id
            ),
        ));
    }
    if digest.sequence < 1 {
        return Err(ApiError::invalid("digest.sequence", "must be at least 1"));
    }
    let entry_hash = chain::Hash::try_from(digest.entry_hash.as_slice()).map_err(|_| {
        ApiError::invalid(
            "digest.entry_hash",
            format!(
                "must be 32 bytes (a SHA-256), not {}",
                digest.entry_hash.len()
            ),
        )
    })?;
    if digest.tree_size != 0 && digest.tree_size != digest.sequence {
        return Err(ApiError::invalid(
            "digest.tree_size",
            format!(
                "is {}: a digest's tree has its sequence's size (or 0, none)",
                digest.tree_size
            ),
        ));
    }
    let root_hash = match (digest.tree_size, digest.root_hash.len()) {
        (0, 0) => None,
        (_, 32) if digest.tree_size != 0 => chain::Hash::try_from(digest.root_hash.as_slice()).ok(),
        (_, length) => {
            return Err(ApiError::invalid(
                "digest.root_hash",
                format!(
                    "must be 32 bytes (a SHA-256) with tree_size set, or empty without; it is {length} bytes"
                ),
            ));
        }
    };
    let record_time = timestamp("digest.record_time", digest.record_time)?;
    let signed = digest_signature(&digest, record_time.is_some())?;
    Ok(Some(Digest {
        offering_id: offering_id.to_owned(),
        sequence: digest.sequence,
        entry_hash,
        record_time,
        root_hash,
        signed,
    }))
}

/// A digest's signature fields: all set (with a record_time, which the signature covers) or
/// no signature; the key id and ledger id of an unsigned digest are not looked at.
fn digest_signature(
    digest: &proto::Digest,
    has_record_time: bool,
) -> Result<Option<chain::Signed>, ApiError> {
    if digest.signature.is_empty() {
        return Ok(None);
    }
    let signature =
        <[u8; chain::SIGNATURE_BYTES]>::try_from(digest.signature.as_slice()).map_err(|_| {
            ApiError::invalid(
                "digest.signature",
                format!(
                    "must be {} bytes (Ed25519) or empty; it is {} bytes",
                    chain::SIGNATURE_BYTES,
                    digest.signature.len()
                ),
            )
        })?;
    let key_id = crate::signing::KeyId::parse(&digest.key_id).ok_or_else(|| {
        ApiError::invalid("digest.key_id", "must be 16 hex digits in a signed digest")
    })?;
    let ledger_id = uuid::Uuid::parse_str(&digest.ledger_id)
        .map_err(|_| ApiError::invalid("digest.ledger_id", "must be a UUID in a signed digest"))?;
    if !has_record_time {
        return Err(ApiError::invalid(
            "digest.record_time",
            "must be set in a signed digest: the signature covers it",
        ));
    }
    Ok(Some(chain::Signed {
        ledger_id,
        key_id: key_id.0,
        signature,
    }))
}

/// CreateOffering's fields, each checked on its own and against the others.
pub fn new_offering(
    r: proto::CreateOfferingRequest,
    actor: Arc<str>,
    now: Timestamp,
) -> Result<NewOffering, ApiError> {
    let offering_id = id_or_new("offering_id", r.offering_id)?;
    name(&r.name)?;
    let allocation = super::convert::allocation_of(r.allocation).ok_or_else(|| {
        ApiError::invalid(
            "allocation",
            format!("{} is not an Allocation", r.allocation),
        )
    })?;
    Caps {
        allocation,
        max_units: r.max_units,
        max_units_per_investor: r.max_units_per_investor,
        lot_units: r.lot_units,
        min_units_per_investor: r.min_units_per_investor,
        max_total_demand: r.max_total_demand,
    }
    .check()?;
    let open_time = timestamp("open_time", r.open_time)?;
    let close_time = timestamp("close_time", r.close_time)?;
    if let Some(close) = close_time {
        if close <= now {
            return Err(ApiError::invalid("close_time", "is not in the future"));
        }
        if open_time.is_some_and(|open| open >= close) {
            return Err(ApiError::invalid("close_time", "is not after open_time"));
        }
    }
    Ok(NewOffering {
        offering_id,
        name: r.name,
        max_units: r.max_units,
        max_units_per_investor: r.max_units_per_investor,
        request_id: id_or_new("request_id", r.request_id)?,
        actor,
        allocation,
        open_time,
        close_time,
        lot_units: r.lot_units,
        min_units_per_investor: r.min_units_per_investor,
        max_total_demand: r.max_total_demand,
    })
}

/// AmendOffering's changes, each well-formed (whether the offering allows them is the
/// ledger's to say).
pub fn term_changes(r: &proto::AmendOfferingRequest) -> Result<TermChanges, ApiError> {
    if let Some(new_name) = &r.name {
        name(new_name)?;
    }
    if let Some(max_units) = r.max_units {
        units("max_units", max_units, 1)?;
    }
    if let Some(cap) = r.max_units_per_investor {
        units("max_units_per_investor", cap, 0)?;
    }
    let changes = TermChanges {
        name: r.name.clone(),
        max_units: r.max_units,
        max_units_per_investor: r.max_units_per_investor,
        close_time: timestamp("close_time", r.close_time)?,
    };
    if changes == TermChanges::default() {
        return Err(ApiError::invalid(
            "name",
            "nothing to amend: set at least one of name, max_units, max_units_per_investor, close_time",
        ));
    }
    Ok(changes)
}

/// A count of units within `min..=UNITS_MAX`.
pub fn units(field: &'static str, value: i64, min: i64) -> Result<(), ApiError> {
    Ok(fields::units(field, value, min)?)
}

pub fn not_negative(field: &'static str, value: i64) -> Result<(), ApiError> {
    Ok(fields::not_negative(field, value)?)
}

/// page_size 0 means the default; larger than the maximum is cut to it.
pub fn page_size(value: i32) -> Result<u32, ApiError> {
    match u32::try_from(value) {
        Err(_) => Err(ApiError::invalid(
            "page_size",
            format!("is {value}; must not be negative"),
        )),
        Ok(0) => Ok(PAGE_SIZE_DEFAULT),
        Ok(size) => Ok(size.min(PAGE_SIZE_MAX)),
    }
}

/// Page tokens are opaque to callers: "<kind>:<key>" in URL-safe base64, checked on the way back
/// in so that a token from another listing, or a mangled one, is refused by name.
pub fn encode_page_token(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

/// The key of a page token made by `encode_page_token(kind, ..)`; None for an empty token.
pub fn page_token(kind: &str, token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid("page_token", "is not a token this listing returned");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let key = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_rule_is_invalid_argument_naming_the_field() {
        let error = id("offering_id", "has space").unwrap_err();
        assert!(
            matches!(
                error,
                ApiError::InvalidArgument {
                    field: "offering_id",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(name("evil\u{202E}gnp.exe").is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_other_kinds() {
        let token = encode_page_token("offerings", "deal-1");
        assert_eq!(
            page_token("offerings", &token).unwrap(),
            Some("deal-1".to_owned())
        );
        assert!(page_token("history", &token).is_err());
        assert!(page_token("offerings", "!!!").is_err());
        assert_eq!(page_token("offerings", "").unwrap(), None);
    }

    #[test]
    fn page_size_defaults_caps_and_refuses_negative() {
        assert_eq!(page_size(0).unwrap(), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(5000).unwrap(), PAGE_SIZE_MAX);
        assert!(page_size(-1).is_err());
    }
}
