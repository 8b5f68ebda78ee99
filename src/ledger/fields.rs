//! The form each stored field must have: the id and actor alphabets and lengths, the name
//! rule, unit ranges, and how an offering's caps, lot and minimum fit together.
//!
//! These are the rules the API applies to a request before anything is written
//! (`api::validate` turns a failure into INVALID_ARGUMENT naming the field), and the rules the
//! verifier (`verify`) holds every stored entry to, so the two cannot drift apart. Each check
//! is pure and says which field broke which rule.

use super::limits::{
    DEMAND_TOTAL_MAX, ID_CHARS_MAX, NAME_CHARS_MAX, PRINCIPAL_NAME_CHARS_MAX, UNITS_MAX,
};
use super::types::{Allocation, Terms};

/// A field that breaks a rule: the field's name and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Ids are 1-128 characters of A-Z a-z 0-9 . _ : - (safe in logs, URLs and page tokens).
pub fn id(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.len() > ID_CHARS_MAX {
        return Err(FieldError::new(
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
        return Err(FieldError::new(
            field,
            format!("contains {bad:?}; only A-Z a-z 0-9 . _ : - are allowed"),
        ));
    }
    Ok(())
}

/// True for 1-128 characters of A-Z a-z 0-9 . _ : - / @: the form of every name an entry can
/// record as its actor, reserved ones included (client certificate identities use / and @).
pub fn is_actor_name(name: &str) -> bool {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/' | '@');
    !name.is_empty() && name.len() <= PRINCIPAL_NAME_CHARS_MAX && name.chars().all(allowed)
}

pub fn actor(field: &'static str, value: &str) -> Result<(), FieldError> {
    if is_actor_name(value) {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        format!(
            "must be 1-{PRINCIPAL_NAME_CHARS_MAX} characters of A-Z a-z 0-9 . _ : - / @ (is {} bytes)",
            value.len()
        ),
    ))
}

/// An offering's name: 1-256 characters, none of them a control or format character.
pub fn name(field: &'static str, value: &str) -> Result<(), FieldError> {
    name_length(field, value)?;
    if let Some(bad) = value.chars().find(|c| is_invisible(*c)) {
        return Err(FieldError::new(
            field,
            format!(
                "must not contain control or format characters (found U+{:04X}): they can make a name display as another",
                u32::from(bad)
            ),
        ));
    }
    Ok(())
}

/// The name rule of the first release, before format characters were refused (they were from
/// the release that recorded actors on): 1-256 characters and no control character. Only an
/// offering created by that release (its creation entry's actor is "unknown") may carry such a
/// name (docs/hash-chain.md, "Entries older than a rule").
pub fn name_before_format_rule(field: &'static str, value: &str) -> Result<(), FieldError> {
    name_length(field, value)?;
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            format!(
                "must not contain control characters (found U+{:04X})",
                u32::from(bad)
            ),
        ));
    }
    Ok(())
}

fn name_length(field: &'static str, value: &str) -> Result<(), FieldError> {
    // Counting stops past the limit, so a name of any length costs at most that many steps.
    let chars = value.chars().take(NAME_CHARS_MAX + 1).count();
    if chars == 0 || chars > NAME_CHARS_MAX {
        let shown = if chars > NAME_CHARS_MAX {
            format!("{} bytes", value.len())
        } else {
            "0".to_owned()
        };
        return Err(FieldError::new(
            field,
            format!("must be 1-{NAME_CHARS_MAX} characters, got {shown}"),
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
pub fn units(field: &'static str, value: i64, min: i64) -> Result<(), FieldError> {
    if value < min || value > UNITS_MAX {
        return Err(FieldError::new(
            field,
            format!("is {value}; must be between {min} and {UNITS_MAX}"),
        ));
    }
    Ok(())
}

pub fn not_negative(field: &'static str, value: i64) -> Result<(), FieldError> {
    if value < 0 {
        return Err(FieldError::new(
            field,
            format!("is {value}; must not be negative"),
        ));
    }
    Ok(())
}

/// What CreateOffering fixes about an offering's units: its cap, per-investor cap, lot, minimum
/// and pro-rata demand bound, which must fit together.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub allocation: Allocation,
    pub max_units: i64,
    pub max_units_per_investor: i64,
    pub lot_units: i64,
    pub min_units_per_investor: i64,
    pub max_total_demand: i64,
}

impl Caps {
    /// The checks of CreateOffering, each naming the field that breaks it.
    pub fn check(&self) -> Result<(), FieldError> {
        units("max_units", self.max_units, 1)?;
        let within = |field, value: i64, max: i64, what: &str| {
            if !(0..=max).contains(&value) {
                return Err(FieldError::new(
                    field,
                    format!("is {value}; must be 0 up to {what} ({max})"),
                ));
            }
            Ok(())
        };
        within(
            "max_units_per_investor",
            self.max_units_per_investor,
            self.max_units,
            "max_units",
        )?;
        within("lot_units", self.lot_units, self.max_units, "max_units")?;
        let lot = self.lot_units.max(1);
        let investor_max = match self.max_units_per_investor {
            0 => self.max_units,
            cap => cap,
        };
        within(
            "min_units_per_investor",
            self.min_units_per_investor,
            investor_max,
            "the units one investor may hold",
        )?;
        for (field, value) in [
            ("max_units_per_investor", self.max_units_per_investor),
            ("min_units_per_investor", self.min_units_per_investor),
        ] {
            if value % lot != 0 {
                return Err(FieldError::new(
                    field,
                    format!("is {value}; must be a multiple of lot_units ({lot})"),
                ));
            }
        }
        match self.allocation {
            Allocation::FirstCome if self.max_total_demand != 0 => Err(FieldError::new(
                "max_total_demand",
                "is for pro-rata offerings only; must be 0",
            )),
            _ => within(
                "max_total_demand",
                self.max_total_demand,
                DEMAND_TOTAL_MAX,
                "10^18",
            ),
        }
    }
}

/// What holds of the amendable terms in force at every moment, given the lot and minimum fixed
/// at creation: CreateOffering checks it (`Caps::check`) and AmendOffering refuses every change
/// that would break it (command/amend.rs). The name is checked where it is set, not here.
pub fn terms_in_force(terms: &Terms, lot_units: i64, min: i64) -> Result<(), FieldError> {
    units("max_units", terms.max_units, 1)?;
    let cap = terms.max_units_per_investor;
    if !(0..=terms.max_units).contains(&cap) {
        return Err(FieldError::new(
            "max_units_per_investor",
            format!("is {cap}; must be 0 up to max_units ({})", terms.max_units),
        ));
    }
    for (field, value) in [("lot_units", lot_units), ("min_units_per_investor", min)] {
        if value > terms.max_units {
            return Err(FieldError::new(
                field,
                format!("is {value}, over max_units ({})", terms.max_units),
            ));
        }
    }
    let lot = lot_units.max(1);
    if cap > 0 && (cap < min || cap % lot != 0) {
        return Err(FieldError::new(
            "max_units_per_investor",
            format!(
                "is {cap}; must be at least min_units_per_investor ({min}) and a multiple of lot_units ({lot})"
            ),
        ));
    }
    Ok(())
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
        assert!(id("offering_id", "line\nbreak").is_err());
        assert!(id("offering_id", &"x".repeat(ID_CHARS_MAX)).is_ok());
        assert!(id("offering_id", &"x".repeat(ID_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn names_refuse_characters_that_change_how_they_display() {
        assert!(name("name", "Tower 7 — Zürich").is_ok());
        assert!(
            name("name", "evil\u{202E}gnp.exe").is_err(),
            "bidi override"
        );
        assert!(name("name", "Tower\u{200B}7").is_err(), "zero-width space");
        assert!(name("name", "Tower\u{FEFF}7").is_err(), "byte order mark");
        assert!(name("name", "line\nbreak").is_err(), "control character");
        assert!(name("name", "nul\0").is_err(), "NUL");
    }

    #[test]
    fn the_first_releases_name_rule_let_format_characters_through_but_not_controls() {
        assert!(name_before_format_rule("name", "evil\u{202E}gnp.exe").is_ok());
        assert!(name_before_format_rule("name", "nul\0").is_err());
        assert!(name_before_format_rule("name", "").is_err());
    }

    #[test]
    fn a_name_of_any_length_is_measured_in_bounded_steps() {
        let huge = "x".repeat(10 << 20);
        let error = name("name", &huge).unwrap_err();
        assert_eq!(error.field, "name");
        assert!(error.reason.contains("10485760 bytes"), "{error}");
        assert!(name("name", &"é".repeat(NAME_CHARS_MAX)).is_ok());
    }

    #[test]
    fn actors_are_principal_names_or_reserved_ones() {
        for ok in [
            "ops",
            "anonymous",
            "unknown",
            "system",
            "svc/billing@example.com",
        ] {
            assert!(actor("actor", ok).is_ok(), "{ok}");
        }
        assert!(actor("actor", "").is_err());
        assert!(actor("actor", "two words").is_err());
        assert!(actor("actor", &"a".repeat(1 << 20)).is_err());
    }

    #[test]
    fn caps_fit_together_as_create_offering_requires() {
        let caps = Caps {
            allocation: Allocation::FirstCome,
            max_units: 100,
            max_units_per_investor: 20,
            lot_units: 5,
            min_units_per_investor: 10,
            max_total_demand: 0,
        };
        assert_eq!(caps.check(), Ok(()));
        let field = |caps: Caps| caps.check().unwrap_err().field;
        assert_eq!(
            field(Caps {
                max_units: i64::MAX,
                ..caps
            }),
            "max_units"
        );
        assert_eq!(
            field(Caps {
                max_units_per_investor: -1,
                ..caps
            }),
            "max_units_per_investor"
        );
        assert_eq!(
            field(Caps {
                max_units_per_investor: 101,
                ..caps
            }),
            "max_units_per_investor"
        );
        assert_eq!(
            field(Caps {
                lot_units: -3,
                ..caps
            }),
            "lot_units"
        );
        assert_eq!(
            field(Caps {
                min_units_per_investor: 25,
                ..caps
            }),
            "min_units_per_investor"
        );
        assert_eq!(
            field(Caps {
                min_units_per_investor: 12,
                ..caps
            }),
            "min_units_per_investor"
        );
        assert_eq!(
            field(Caps {
                max_total_demand: 1,
                ..caps
            }),
            "max_total_demand"
        );
        let pro_rata = Caps {
            allocation: Allocation::ProRata,
            ..caps
        };
        assert_eq!(pro_rata.check(), Ok(()));
        assert_eq!(
            field(Caps {
                max_total_demand: -1,
                ..pro_rata
            }),
            "max_total_demand"
        );
    }

    #[test]
    fn terms_in_force_keep_the_cap_within_max_units_and_on_the_lot() {
        let terms = Terms {
            name: "Deal".into(),
            max_units: 100,
            max_units_per_investor: 20,
            close_time: None,
        };
        assert_eq!(terms_in_force(&terms, 5, 10), Ok(()));
        assert!(
            terms_in_force(&terms, 3, 0).is_err(),
            "20 is not a multiple of 3"
        );
        assert!(
            terms_in_force(&terms, 5, 25).is_err(),
            "the cap is below the minimum"
        );
        assert!(
            terms_in_force(&terms, 200, 0).is_err(),
            "the lot is over max_units"
        );
        let huge = Terms {
            max_units: i64::MAX,
            ..terms.clone()
        };
        assert!(terms_in_force(&huge, 5, 10).is_err());
        let negative = Terms {
            max_units_per_investor: -1,
            ..terms
        };
        assert!(terms_in_force(&negative, 5, 10).is_err());
    }
}
