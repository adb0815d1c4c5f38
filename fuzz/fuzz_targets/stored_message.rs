//! The capture side alone: a stored payload (Cloud API message or automatic event, or a
//! whole Sinch callback) and contact, read back into the domain by `process_item`.
//!
//! Input: one selector byte (bit 0: Sinch, bit 1: automatic event, Cloud only; bits 2-3:
//! 01 Messenger, 10 Instagram, over the others), then the
//! payload, then optionally a NUL byte and the Cloud `contacts[]` entry.
#![no_main]

use ctwa_fuzz::{EXPIRES_AT, NOW_MS, Stored, capture_batch, check_inbound, read_stored};
use ctwa_shared::domain::{Channel, Route};
use ctwa_shared::store::{InboxItem, InboxKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (payload, contact) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (channel, route) = match (selector & 1, selector & 12) {
        (_, 4) => (Channel::Messenger, Route::Page("1122334455".into())),
        (_, 8) => (
            Channel::Instagram,
            Route::Instagram("17841400000000001".into()),
        ),
        (0, _) => (
            Channel::Cloud,
            Route::PhoneNumberId("1204727649384372".into()),
        ),
        _ => (
            Channel::Sinch,
            Route::SinchApp("01EB37HMH1M6SV18ASNS3G135H".into()),
        ),
    };
    let kind = if selector & 2 != 0 && channel == Channel::Cloud {
        InboxKind::AutomaticEvent
    } else {
        InboxKind::Message
    };
    let item = InboxItem {
        // Not derived from the payload here, so `check_inbound` does not compare ids.
        id: "fuzz".into(),
        kind,
        channel,
        route,
        waba_id: Some("102290129340398".into()),
        payload: String::from_utf8_lossy(payload).into_owned(),
        contact: contact.map(|c| String::from_utf8_lossy(c).into_owned()),
        received_at_ms: NOW_MS,
        expires_at: EXPIRES_AT,
    };
    match read_stored(&item) {
        Stored::Message(m) => check_inbound(&item, &m),
        Stored::Event(e) => {
            if let Some(c) = &e.ctwa_clid {
                assert!(!c.is_empty() && c.trim() == c, "event click id {c:?}");
            }
            assert!(!e.event_name.is_empty() && e.event_name.trim() == e.event_name);
            serde_json::to_string(&e).expect("an automatic event serialises");
        }
        Stored::Unreadable => {}
    }
    capture_batch(std::slice::from_ref(&item));
});
