//! Webhook signature checks. Both compare in constant time (`Mac::verify_slice`) and both
//! work on the raw body bytes, never on re-serialised JSON.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("signature does not match")]
    Mismatch,
    #[error("signature timestamp is outside the allowed window")]
    Stale,
    #[error("unsupported signature algorithm")]
    Algorithm,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC takes any key length")
}

/// Meta: `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256(app_secret, raw body)>`.
pub fn verify_meta(
    app_secret: &str,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    const H: &str = "x-hub-signature-256";
    let header = header.ok_or(SignatureError::Missing(H))?.trim();
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(H))?;
    if hex_sig.len() != 64 {
        return Err(SignatureError::Malformed(H));
    }
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed(H))?;
    let mut m = mac(app_secret.as_bytes());
    m.update(body);
    m.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Signs like Meta does (for tests, the local walkthrough and `ctwa webhook simulate`).
pub fn sign_meta(app_secret: &str, body: &[u8]) -> String {
    let mut m = mac(app_secret.as_bytes());
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Meta's `appsecret_proof`: lowercase hex HMAC-SHA256 of the access token keyed with
/// the app secret, sent beside the token on every Graph call made with it (the app's
/// "Require App Secret" setting refuses calls without it, so a stolen token alone is
/// useless).
pub fn appsecret_proof(app_secret: &str, token: &str) -> String {
    let mut m = mac(app_secret.as_bytes());
    m.update(token.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The four Sinch callback headers.
#[derive(Debug, Clone, Copy)]
pub struct SinchHeaders<'a> {
    pub signature: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub algorithm: Option<&'a str>,
}

pub const SINCH_SIGNATURE: &str = "x-sinch-webhook-signature";
pub const SINCH_NONCE: &str = "x-sinch-webhook-signature-nonce";
pub const SINCH_TIMESTAMP: &str = "x-sinch-webhook-signature-timestamp";
pub const SINCH_ALGORITHM: &str = "x-sinch-webhook-signature-algorithm";

/// Sinch Conversation API: `base64(HMAC-SHA256(secret, raw_body + "." + nonce + "." + timestamp))`,
/// timestamp in unix seconds, rejected when further than `max_skew_secs` from `now_secs`.
pub fn verify_sinch(
    secret: &str,
    h: SinchHeaders<'_>,
    body: &[u8],
    now_secs: i64,
    max_skew_secs: i64,
) -> Result<(), SignatureError> {
    let sig = h
        .signature
        .ok_or(SignatureError::Missing(SINCH_SIGNATURE))?
        .trim();
    let nonce = h.nonce.ok_or(SignatureError::Missing(SINCH_NONCE))?.trim();
    let ts_text = h
        .timestamp
        .ok_or(SignatureError::Missing(SINCH_TIMESTAMP))?
        .trim();
    if let Some(alg) = h.algorithm
        && !alg.trim().eq_ignore_ascii_case("HmacSHA256")
    {
        return Err(SignatureError::Algorithm);
    }
    let ts: i64 = ts_text
        .parse()
        .map_err(|_| SignatureError::Malformed(SINCH_TIMESTAMP))?;
    // abs_diff: any i64 timestamp (even i64::MIN, found by fuzzing) without overflow.
    if now_secs.abs_diff(ts) > max_skew_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let expected = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|_| SignatureError::Malformed(SINCH_SIGNATURE))?;
    let mut m = mac(secret.as_bytes());
    m.update(body);
    m.update(b".");
    m.update(nonce.as_bytes());
    m.update(b".");
    m.update(ts_text.as_bytes());
    m.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Signs like Sinch does; returns the base64 signature.
pub fn sign_sinch(secret: &str, body: &[u8], nonce: &str, timestamp: &str) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(body);
    m.update(b".");
    m.update(nonce.as_bytes());
    m.update(b".");
    m.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_known_vector() {
        // HMAC-SHA256 of "hello" with key "secret".
        let h = "sha256=88aab3ede8d3adf94d26ab90d3bafd4a2083070c3bcce9c014ee04a443847c0b";
        assert_eq!(sign_meta("secret", b"hello"), h);
        assert_eq!(verify_meta("secret", Some(h), b"hello"), Ok(()));
        assert_eq!(
            verify_meta("secret", Some(h), b"hello!"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_meta("other", Some(h), b"hello"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn meta_rejects_missing_and_malformed() {
        assert!(matches!(
            verify_meta("s", None, b"x"),
            Err(SignatureError::Missing(_))
        ));
        for bad in [
            "",
            "sha1=abc",
            "sha256=",
            "sha256=zz",
            &format!("sha256={}", "g".repeat(64)),
        ] {
            assert!(
                matches!(
                    verify_meta("s", Some(bad), b"x"),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // Upper-case hex from a sloppy client still decodes; the bytes must match.
        let sig = sign_meta("s", b"x")
            .to_uppercase()
            .replace("SHA256=", "sha256=");
        assert_eq!(verify_meta("s", Some(&sig), b"x"), Ok(()));
    }

    #[test]
    fn sinch_round_trip_and_replay_window() {
        let body = br#"{"app_id":"A"}"#;
        let sig = sign_sinch("sec", body, "n1", "1700000000");
        let h = SinchHeaders {
            signature: Some(&sig),
            nonce: Some("n1"),
            timestamp: Some("1700000000"),
            algorithm: Some("HmacSHA256"),
        };
        assert_eq!(verify_sinch("sec", h, body, 1_700_000_100, 300), Ok(()));
        assert_eq!(
            verify_sinch("sec", h, body, 1_700_000_301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_sinch("bad", h, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        let other_nonce = SinchHeaders {
            nonce: Some("n2"),
            ..h
        };
        assert_eq!(
            verify_sinch("sec", other_nonce, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        let md5 = SinchHeaders {
            algorithm: Some("HmacMD5"),
            ..h
        };
        assert_eq!(
            verify_sinch("sec", md5, body, 1_700_000_000, 300),
            Err(SignatureError::Algorithm)
        );
        let none = SinchHeaders {
            signature: None,
            ..h
        };
        assert!(matches!(
            verify_sinch("sec", none, body, 1_700_000_000, 300),
            Err(SignatureError::Missing(_))
        ));
    }
}

#[cfg(test)]
mod fuzz_regressions {
    /// Found by `scripts/fuzz.sh` (sinch_signature): an i64::MIN timestamp overflowed
    /// the window check.
    #[test]
    fn extreme_sinch_timestamps_are_stale_not_a_panic() {
        for ts in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let ts = ts.to_string();
            let h = super::SinchHeaders {
                signature: Some("c2ln"),
                nonce: Some("n"),
                timestamp: Some(&ts),
                algorithm: None,
            };
            let r = super::verify_sinch("secret", h, b"{}", 1_750_000_000, 300);
            assert!(
                matches!(r, Err(super::SignatureError::Stale)),
                "{ts}: {r:?}"
            );
        }
    }
}
