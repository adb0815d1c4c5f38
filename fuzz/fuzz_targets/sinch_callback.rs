//! `POST /webhook/sinch` after the signature check: `parse_sinch_callback` on the raw
//! body, then the stored callback through the stream image and the capture step.
#![no_main]

use ctwa_fuzz::{
    EXPIRES_AT, NOW_MS, Stored, capture_batch, check_inbox_item, has_duplicate_keys, read_stored,
};
use ctwa_shared::domain::Channel;
use ctwa_shared::meta::webhook::WebhookParseError;
use ctwa_shared::sinch::{SinchCallback, parse_sinch_callback};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let is_json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    match parse_sinch_callback(body, NOW_MS, EXPIRES_AT) {
        Err(WebhookParseError::Json(e)) => assert!(!is_json, "valid JSON refused as not JSON: {e}"),
        Err(WebhookParseError::Shape(_)) => assert!(is_json),
        Ok(SinchCallback::Ignored(kind)) => {
            serde_json::to_vec(&serde_json::json!({"received": 0, "ignored": kind}))
                .expect("the answer serialises");
        }
        Ok(SinchCallback::Inbound(item)) => {
            check_inbox_item(&item, Channel::Sinch);
            assert_eq!(
                item.payload.as_bytes(),
                body,
                "the callback is stored as sent"
            );
            // What the webhook accepts, the capture step can read. Known exception: a
            // repeated key (the webhook reads a `Value`, keeping the last; the capture
            // step's struct refuses the text), so such a callback is acknowledged, stored
            // and then skipped by the capture step.
            assert!(
                matches!(read_stored(&item), Stored::Message(_)) || has_duplicate_keys(body),
                "accepted Sinch callback unreadable at capture"
            );
            capture_batch(std::slice::from_ref(&*item));
        }
    }
});
