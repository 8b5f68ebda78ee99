//! Subjects: an offering's entries go to `subledger.entries.<token>`, where the token is the
//! offering_id spelled with only the characters every NATS client and ACL accepts in a subject
//! token.
//!
//! The mapping is one-to-one and can be undone: A-Z a-z 0-9 and `-` stand for themselves, and
//! every other byte of the id (in offering ids: `.`, `:` and `_`) is written `_` and its two
//! upper-case hex digits, so `fund.2026:A_1` is `fund_2E2026_3AA_5F1`. Since `_` itself is
//! always escaped, a token reads back to exactly one id ([`offering_id`]).

/// The subjects of the entries, under which the stream captures them (`subledger.entries.>`).
pub const ENTRIES_PREFIX: &str = "subledger.entries";
/// The subjects a digest publisher (issue 20) will use on the same stream.
pub const DIGESTS_PREFIX: &str = "subledger.digests";

/// The subject an offering's entries are published on.
pub fn entries_subject(offering_id: &str) -> String {
    format!("{ENTRIES_PREFIX}.{}", token(offering_id))
}

/// The offering_id as a subject token (see the module's doc).
pub fn token(offering_id: &str) -> String {
    let mut token = String::with_capacity(offering_id.len());
    for byte in offering_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("_{byte:02X}"));
        }
    }
    token
}

/// The offering_id a token stands for; None for a string [`token`] never writes.
pub fn offering_id(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if first.is_ascii_alphanumeric() || first == b'-' {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    let id = String::from_utf8(bytes).ok()?;
    // Only the canonical spelling reads back: an escaped letter is not a token we write.
    (token == self::token(&id)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_subject_separators_map_to_plain_tokens() {
        assert_eq!(token("fund.2026:A_1"), "fund_2E2026_3AA_5F1");
        assert_eq!(token("plain-ID9"), "plain-ID9");
        assert_eq!(
            entries_subject("a.b"),
            "subledger.entries.a_2Eb",
            "no dot may split the token"
        );
    }

    #[test]
    fn every_token_reads_back_to_its_id_alone() {
        for id in ["a", "a.b", "a_2Eb", "_", "__", ":.:", "x-y_z.w:v", "A_5F"] {
            let token = token(id);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(offering_id(&token).as_deref(), Some(id));
        }
        // Two ids that differ only where one is escaped stay apart.
        assert_ne!(token("a_2Eb"), token("a.b"));
    }

    #[test]
    fn strings_no_id_maps_to_are_refused() {
        for bad in ["a.b", "_2", "_zz", "_2e", "_61", "a b", "*", ">"] {
            assert_eq!(offering_id(bad), None, "{bad}");
        }
    }
}
