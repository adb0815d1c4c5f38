//! PII normalisation and hashing exactly as Meta's official Python business SDK does it
//! (`facebook_business/adobjects/serverside/normalize.py`): lowercase + trim; a value
//! that already looks like an MD5/SHA-256 hex digest passes through; then per field;
//! then lowercase hex SHA-256 of the UTF-8 bytes. A test compares these hashes with the
//! SDK's own on a battery of messy inputs. `ctwa_clid` is never hashed.

use crate::domain::Phone;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    #[error(
        "invalid phone number: use the international format with the country code, e.g. +919876543210"
    )]
    Phone,
    #[error("invalid email address")]
    Email,
}

fn is_hex_digest(s: &str) -> bool {
    (s.len() == 32 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The normalised phone (`ph`), before hashing: the digits of [`Phone`], the one
/// normalisation the click lookups use too.
pub fn normalize_phone(raw: &str) -> Result<String, PiiError> {
    let lowered = raw.to_lowercase();
    let v = lowered.trim();
    if is_hex_digest(v) {
        return Ok(v.to_string());
    }
    Phone::parse(v)
        .map(|p| p.digits().to_string())
        .map_err(|_| PiiError::Phone)
}

/// The normalised email (`em`), before hashing; must match `.+@.+\..+` (from the start).
pub fn normalize_email(raw: &str) -> Result<String, PiiError> {
    let lowered = raw.to_lowercase();
    let v = lowered.trim();
    if is_hex_digest(v) {
        return Ok(v.to_string());
    }
    // `.` does not match a newline and `match` anchors at the start: the match lies in
    // the first line. It needs an `@` after at least one character, then a `.` with at
    // least one character on each side.
    let line: Vec<char> = v.split('\n').next().unwrap_or("").chars().collect();
    let ok = line
        .iter()
        .position(|c| *c == '@')
        .filter(|&at| at >= 1)
        .is_some_and(|at| {
            line.iter()
                .enumerate()
                .any(|(j, c)| *c == '.' && j >= at + 2 && j + 1 < line.len())
        });
    if ok {
        Ok(v.to_string())
    } else {
        Err(PiiError::Email)
    }
}

fn hash_normalized(v: String) -> String {
    if is_hex_digest(&v) { v } else { sha256_hex(&v) }
}

pub fn hash_phone(raw: &str) -> Result<String, PiiError> {
    normalize_phone(raw).map(hash_normalized)
}

pub fn hash_email(raw: &str) -> Result<String, PiiError> {
    normalize_email(raw).map(hash_normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_spellings_normalise_like_the_sdk() {
        for (raw, want) in [
            ("+91 98765-43210", "919876543210"),
            ("(+91) 98765 43210", "919876543210"),
            ("0091 98765 43210", "919876543210"),
            // Up to two leading zeros go (twice, as the SDK does): a trunk 0 too.
            ("0 98765 43210", "9876543210"),
            ("+0091-98765-43210", "919876543210"),
            ("  +1 (650) 555-1234 ", "16505551234"),
        ] {
            assert_eq!(normalize_phone(raw).as_deref(), Ok(want), "{raw}");
        }
        for raw in ["", "+00000", "12345", "+91 98765 4321x", "phone"] {
            assert!(normalize_phone(raw).is_err(), "{raw}");
        }
        let h = sha256_hex("919876543210");
        assert_eq!(
            hash_phone(&h.to_uppercase()).unwrap(),
            h,
            "already hashed passes through"
        );
    }

    /// Every spelling Meta's SDK accepts hashes to the digits the click lookup uses, so
    /// a conversion finds the click captured under Meta's `wa_id` and Meta can match
    /// the hash.
    #[test]
    fn lookups_and_hashes_agree_for_every_spelling() {
        let wa_id = crate::domain::Customer {
            wa_id: Some("919876543210".into()),
            ..Default::default()
        };
        let captured = wa_id.key().unwrap();
        for raw in [
            "919876543210",
            "+919876543210",
            "+91 98765 43210",
            "+91-98765-43210",
            "(+91) 98765 43210",
            "+91 (98765) 43210",
            "0091 98765 43210",
            "+0091 98765 43210",
            "00919876543210",
            "91.98765.43210",
            "  +91 98765 43210\t",
            "++919876543210",
        ] {
            let phone = Phone::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(phone.customer_key(), captured, "{raw}");
            assert_eq!(
                hash_phone(raw).unwrap(),
                sha256_hex("919876543210"),
                "{raw}"
            );
        }
    }

    #[test]
    fn email_rules() {
        assert_eq!(
            normalize_email("  John.Doe@Example.COM ").as_deref(),
            Ok("john.doe@example.com")
        );
        for bad in ["", "a@b", "@b.c", "a@.c", "ab.c", "a@b.", "a\n@b.c"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email("a@b.c").is_ok());
        assert!(normalize_email("a@b.c\nanything").is_ok());
        assert_eq!(
            hash_email("John.Doe@Example.COM").unwrap(),
            "836f82db99121b3481011f16b49dfa5fbc714a0d1b1b9f784a1ebbbf5b39577f"
        );
    }
}
