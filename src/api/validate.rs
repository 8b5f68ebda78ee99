//! Checks on request fields, each failure naming the field. Nothing past this module sees an
//! unchecked id, count or token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use std::sync::Arc;

use super::error::ApiError;
use crate::ledger::chain::{self, Digest};
use crate::ledger::limits::{
    DEMAND_TOTAL_MAX, ID_CHARS_MAX, NAME_CHARS_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, UNITS_MAX,
};
use crate::ledger::{Allocation, NewOffering, TermChanges, Timestamp};
use crate::proto;

/// Ids are 1-128 characters of A-Z a-z 0-9 . _ : - (safe in logs, URLs and page tokens).
pub fn id(field: &'static str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    if value.len() > ID_CHARS_MAX {
        return Err(ApiError::invalid(
            field,
            format!(
                "is {} characters long; at most {ID_CHARS_MAX} are allowed",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(ApiError::invalid(
            field,
            format!("contains {bad:?}; only A-Z a-z 0-9 . _ : - are allowed"),
        ));
    }
    Ok(())
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
    if !super::auth::is_actor_name(value) {
        return Err(ApiError::invalid(
            "actor",
            format!(
                "must be at most {} characters of A-Z a-z 0-9 . _ : - / @",
                super::auth::PRINCIPAL_NAME_CHARS_MAX
            ),
        ));
    }
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
    let chars = value.chars().count();
    if chars == 0 || chars > NAME_CHARS_MAX {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1-{NAME_CHARS_MAX} characters, got {chars}"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| is_invisible(*c)) {
        return Err(ApiError::invalid(
            "name",
            format!(
                "must not contain control or format characters (found U+{:04X}): they can make a name display as another",
                u32::from(bad)
            ),
        ));
    }
    Ok(())
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
    Ok(Some(Digest {
        offering_id: offering_id.to_owned(),
        sequence: digest.sequence,
        entry_hash,
        record_time: timestamp("digest.record_time", digest.record_time)?,
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
    units("max_units", r.max_units, 1)?;
    let allocation = super::convert::allocation_of(r.allocation).ok_or_else(|| {
        ApiError::invalid(
            "allocation",
            format!("{} is not an Allocation", r.allocation),
        )
    })?;
    let within = |field, value: i64, max: i64, what: &str| {
        if !(0..=max).contains(&value) {
            return Err(ApiError::invalid(
                field,
                format!("is {value}; must be 0 up to {what} ({max})"),
            ));
        }
        Ok(())
    };
    within(
        "max_units_per_investor",
        r.max_units_per_investor,
        r.max_units,
        "max_units",
    )?;
    within("lot_units", r.lot_units, r.max_units, "max_units")?;
    let lot = r.lot_units.max(1);
    let investor_max = match r.max_units_per_investor {
        0 => r.max_units,
        cap => cap,
    };
    within(
        "min_units_per_investor",
        r.min_units_per_investor,
        investor_max,
        "the units one investor may hold",
    )?;
    for (field, value) in [
        ("max_units_per_investor", r.max_units_per_investor),
        ("min_units_per_investor", r.min_units_per_investor),
    ] {
        if value % lot != 0 {
            return Err(ApiError::invalid(
                field,
                format!("is {value}; must be a multiple of lot_units ({lot})"),
            ));
        }
    }
    match allocation {
        Allocation::FirstCome if r.max_total_demand != 0 => {
            return Err(ApiError::invalid(
                "max_total_demand",
                "is for pro-rata offerings only; must be 0",
            ));
        }
        _ => within(
            "max_total_demand",
            r.max_total_demand,
            DEMAND_TOTAL_MAX,
            "10^18",
        )?,
    }
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

/// Control characters (Cc) and format characters (Cf: bidi overrides such as U+202E, zero-width
/// characters such as U+200B), which change how the text around them displays.
fn is_invisible(c: char) -> bool {
    use unicode_general_category::{GeneralCategory, get_general_category};
    c.is_control() || get_general_category(c) == GeneralCategory::Format
}

/// A count of units within `min..=UNITS_MAX`.
pub fn units(field: &'static str, value: i64, min: i64) -> Result<(), ApiError> {
    if value < min || value > UNITS_MAX {
        return Err(ApiError::invalid(
            field,
            format!("is {value}; must be between {min} and {UNITS_MAX}"),
        ));
    }
    Ok(())
}

pub fn not_negative(field: &'static str, value: i64) -> Result<(), ApiError> {
    if value < 0 {
        return Err(ApiError::invalid(
            field,
            format!("is {value}; must not be negative"),
        ));
    }
    Ok(())
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
    fn ids_accept_the_documented_alphabet_only() {
        assert!(id("offering_id", "deal-42.a_b:c").is_ok());
        assert!(id("offering_id", "").is_err());
        assert!(id("offering_id", "has space").is_err());
        assert!(id("offering_id", "é").is_err());
        assert!(id("offering_id", &"x".repeat(ID_CHARS_MAX)).is_ok());
        assert!(id("offering_id", &"x".repeat(ID_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn names_refuse_characters_that_change_how_they_display() {
        assert!(name("Tower 7 — Zürich").is_ok());
        assert!(name("evil\u{202E}gnp.exe").is_err(), "bidi override");
        assert!(name("Tower\u{200B}7").is_err(), "zero-width space");
        assert!(name("Tower\u{FEFF}7").is_err(), "byte order mark");
        assert!(name("line\nbreak").is_err(), "control character");
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
