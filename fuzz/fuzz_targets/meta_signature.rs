//! `X-Hub-Signature-256` (Meta): arbitrary header, secret and body never panic; a header
//! is accepted only if it is the body's HMAC; what `sign_meta` makes always verifies
//! (also in upper-case hex and with surrounding spaces), and any change is refused.
#![no_main]

use ctwa_shared::signature::{SignatureError, sign_meta, verify_meta};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a str,
    header: Option<&'a str>,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let Input {
        secret,
        header,
        body,
    } = input;
    let signed = sign_meta(secret, body);

    if verify_meta(secret, header, body).is_ok() {
        let h = header.expect("accepted without a header");
        assert_eq!(
            h.trim().to_ascii_lowercase(),
            signed,
            "accepted a header that is not the HMAC"
        );
    }

    assert_eq!(
        verify_meta(secret, Some(&signed), body),
        Ok(()),
        "own signature refused"
    );
    let upper = format!("sha256={}", signed["sha256=".len()..].to_ascii_uppercase());
    assert_eq!(
        verify_meta(secret, Some(&upper), body),
        Ok(()),
        "upper-case hex refused"
    );
    assert_eq!(
        verify_meta(secret, Some(&format!(" \t{signed}\r\n")), body),
        Ok(()),
        "padded header refused"
    );

    // One hex digit changed.
    let mut wrong = signed.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).expect("ascii");
    assert_eq!(
        verify_meta(secret, Some(&wrong), body),
        Err(SignatureError::Mismatch)
    );
    // Another body or another secret.
    let mut other = body.to_vec();
    other.push(b' ');
    assert_eq!(
        verify_meta(secret, Some(&signed), &other),
        Err(SignatureError::Mismatch)
    );
    let other_secret = format!("{secret}x");
    assert_eq!(
        verify_meta(&other_secret, Some(&signed), body),
        Err(SignatureError::Mismatch)
    );
});
