//! The click inside Sinch's `message.metadata`: a JSON string holding escaped JSON, or
//! (tolerated) an object. Input: the metadata text.
#![no_main]

use ctwa_fuzz::{check_referral, has_duplicate_keys};
use ctwa_shared::sinch::referral_from_metadata;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let from_string = referral_from_metadata(&Value::String(text.clone()));
    if let Some(r) = &from_string {
        check_referral(r);
    }
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        let from_value = referral_from_metadata(&v);
        if let Some(r) = &from_value {
            check_referral(r);
        }
        // The same JSON as a string or as an object means the same click (unless a key
        // repeats: the object form keeps the last, the string form is refused).
        if v.is_object() && !has_duplicate_keys(text.as_bytes()) {
            assert_eq!(from_string, from_value, "string and object metadata differ");
        }
    }
});
