//! Sinch callback signature: arbitrary headers, secret and body never panic; accepted
//! only when the signature is the HMAC of body, nonce and timestamp and the timestamp is
//! within the window; what `sign_sinch` makes verifies inside the window, is stale
//! outside it, and fails for another nonce.
#![no_main]

use base64::Engine;
use ctwa_shared::signature::{SignatureError, SinchHeaders, sign_sinch, verify_sinch};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// A fixed "now" and the deployed default window (`SINCH_MAX_SKEW_SECONDS`).
const NOW: i64 = 1_750_275_992;
const SKEW: i64 = 300;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a str,
    signature: Option<&'a str>,
    nonce: Option<&'a str>,
    timestamp: Option<&'a str>,
    algorithm: Option<&'a str>,
    body: &'a [u8],
    /// Seconds between "now" and the timestamp of the well-formed signature.
    offset: i16,
}

fuzz_target!(|input: Input<'_>| {
    let headers = SinchHeaders {
        signature: input.signature,
        nonce: input.nonce,
        timestamp: input.timestamp,
        algorithm: input.algorithm,
    };
    if verify_sinch(input.secret, headers, input.body, NOW, SKEW).is_ok() {
        let (sig, nonce, ts) = (
            headers.signature.unwrap().trim(),
            headers.nonce.unwrap().trim(),
            headers.timestamp.unwrap().trim(),
        );
        let ts_value: i64 = ts.parse().expect("accepted an unparsable timestamp");
        assert!(
            (NOW - ts_value).abs() <= SKEW,
            "accepted a stale timestamp {ts:?}"
        );
        if let Some(a) = headers.algorithm {
            assert!(
                a.trim().eq_ignore_ascii_case("HmacSHA256"),
                "accepted algorithm {a:?}"
            );
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let want = b64
            .decode(sign_sinch(input.secret, input.body, nonce, ts))
            .unwrap();
        assert_eq!(
            b64.decode(sig).unwrap(),
            want,
            "accepted a signature that is not the HMAC"
        );
    }

    // A well-formed signature made with `sign_sinch`.
    let nonce = input.nonce.unwrap_or("n").trim();
    let ts = (NOW + i64::from(input.offset)).to_string();
    let sig = sign_sinch(input.secret, input.body, nonce, &ts);
    let good = SinchHeaders {
        signature: Some(&sig),
        nonce: Some(nonce),
        timestamp: Some(&ts),
        algorithm: Some("HmacSHA256"),
    };
    let want = if i64::from(input.offset).abs() <= SKEW {
        Ok(())
    } else {
        Err(SignatureError::Stale)
    };
    assert_eq!(
        verify_sinch(input.secret, good, input.body, NOW, SKEW),
        want
    );
    let no_algorithm = SinchHeaders {
        algorithm: None,
        ..good
    };
    assert_eq!(
        verify_sinch(input.secret, no_algorithm, input.body, NOW, SKEW),
        want
    );
    if want.is_ok() {
        let other_nonce = format!("{nonce}x");
        let replayed = SinchHeaders {
            nonce: Some(&other_nonce),
            ..good
        };
        assert_eq!(
            verify_sinch(input.secret, replayed, input.body, NOW, SKEW),
            Err(SignatureError::Mismatch)
        );
    }
});
