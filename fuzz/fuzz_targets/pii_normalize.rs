//! The phone and email normalisers run before SHA-256 hashing for CAPI `user_data`.
//! Properties: normalising is idempotent, the output has the documented shape, the hash
//! is SHA-256 of the normalised value (or the value itself when already a digest), and
//! hashing an already-hashed value gives it back.
#![no_main]

use ctwa_shared::capi::pii::{
    hash_email, hash_phone, normalize_email, normalize_phone, sha256_hex,
};
use libfuzzer_sys::fuzz_target;

fn is_digest(s: &str) -> bool {
    (s.len() == 32 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn expected_hash(normalised: &str) -> String {
    if is_digest(normalised) {
        normalised.to_string()
    } else {
        sha256_hex(normalised)
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);

    match normalize_phone(&raw) {
        Ok(p) => {
            assert!(
                is_digest(&p)
                    || (p.len() >= 7
                        && p.bytes().all(|b| b.is_ascii_digit())
                        && !p.starts_with('0')),
                "normalised phone {p:?}"
            );
            assert_eq!(
                normalize_phone(&p).as_deref(),
                Ok(p.as_str()),
                "phone not idempotent"
            );
            let h = hash_phone(&raw).expect("a normalisable phone hashes");
            assert_eq!(h, expected_hash(&p));
            assert!(is_digest(&h), "phone hash {h:?}");
            assert_eq!(
                hash_phone(&h).as_deref(),
                Ok(h.as_str()),
                "a phone hash is not kept"
            );
        }
        Err(_) => assert!(hash_phone(&raw).is_err()),
    }

    match normalize_email(&raw) {
        Ok(e) => {
            assert_eq!(e.trim(), e, "normalised email not trimmed");
            assert_eq!(e.to_lowercase(), e, "normalised email not lowercase");
            assert!(
                is_digest(&e) || (e.contains('@') && e.contains('.')),
                "normalised email {e:?}"
            );
            assert_eq!(
                normalize_email(&e).as_deref(),
                Ok(e.as_str()),
                "email not idempotent"
            );
            let h = hash_email(&raw).expect("a normalisable email hashes");
            assert_eq!(h, expected_hash(&e));
            assert!(is_digest(&h), "email hash {h:?}");
            assert_eq!(
                hash_email(&h).as_deref(),
                Ok(h.as_str()),
                "an email hash is not kept"
            );
        }
        Err(_) => assert!(hash_email(&raw).is_err()),
    }
});
