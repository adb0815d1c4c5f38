//! The proxy's multipart/form-data reader (`adimages` uploads): any body is an answer or
//! a refusal, never a panic, and an answer holds what Graph can take. Input: the first
//! byte chooses whether a file is allowed; the rest is the body (boundary `XyZ`).
#![no_main]

use ctwa_fuzz::block_on;
use ctwa_shared::ads::multipart::{MAX_PARTS, graph_fields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let allow_file = first & 1 == 1;
    let limit = 64 * 1024;
    if let Ok(fields) = block_on(graph_fields(
        body,
        "multipart/form-data; boundary=XyZ",
        limit,
        allow_file,
    )) {
        assert!(fields.len() <= MAX_PARTS);
        if !allow_file {
            assert!(!fields.contains_key("bytes"), "an image on an edge that takes none");
        }
        if let Some(b) = fields.get("bytes") {
            let b = b.as_str().expect("bytes is a string");
            use base64::Engine as _;
            assert!(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .is_ok(),
                "bytes Graph cannot decode"
            );
        }
    }
});
