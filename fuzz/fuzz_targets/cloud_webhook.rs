//! `POST /webhook` after the signature check: `parse_cloud_webhook` on the raw body (a
//! WhatsApp, Messenger or Instagram delivery), then
//! every stored item through the stream image and the capture step (in-memory store),
//! delivered twice and in reverse order.
#![no_main]

use ctwa_fuzz::{EXPIRES_AT, NOW_MS, capture_batch, check_inbox_item};
use ctwa_shared::domain::Channel;
use ctwa_shared::meta::webhook::{WebhookParseError, parse_cloud_webhook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let is_json = serde_json::from_slice::<serde_json::Value>(body).is_ok();
    let parsed = match parse_cloud_webhook(body, NOW_MS, EXPIRES_AT) {
        Ok(p) => p,
        Err(WebhookParseError::Json(e)) => {
            assert!(!is_json, "valid JSON refused as not JSON: {e}");
            return;
        }
        Err(WebhookParseError::Shape(_)) => return,
    };
    if parsed.foreign_object.is_some() {
        assert!(parsed.items.is_empty() && parsed.statuses == 0 && parsed.errors.is_empty());
        assert!(parsed.other_fields.is_empty());
    }
    for item in &parsed.items {
        // A Meta body is WhatsApp's, Messenger's or Instagram's, never Sinch's.
        assert_ne!(item.channel, Channel::Sinch);
        check_inbox_item(item, item.channel);
    }
    // The handler's answer serialises whatever was parsed.
    let answer = serde_json::json!({
        "received": parsed.items.len(),
        "statuses": parsed.statuses,
        "ignored_fields": parsed.other_fields,
        "errors": parsed.errors,
    });
    serde_json::to_vec(&answer).expect("the answer serialises");
    capture_batch(&parsed.items);
});
