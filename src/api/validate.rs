//! Checks on request fields, each failure naming the field. Nothing past this module sees an
//! unchecked id, count or token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::ApiError;
use crate::ledger::limits::{
    ID_CHARS_MAX, NAME_CHARS_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, UNITS_MAX,
};

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
    if value.len() > ID_CHARS_MAX
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/' | '@'))
    {
        return Err(ApiError::invalid(
            "actor",
            format!("must be at most {ID_CHARS_MAX} characters of A-Z a-z 0-9 . _ : - / @"),
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
