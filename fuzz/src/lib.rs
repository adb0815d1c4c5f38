//! Helpers shared by the fuzz targets: a poll-once executor for the in-memory store, the
//! capture pipeline as production runs it (inbox `put_once` -> stream image -> capture),
//! and the invariants every parsed item and message must hold.
//!
//! Every check is an `assert!`: libFuzzer reports a failed one as a crash, with the input.

use ctwa_shared::capture::{CaptureDeps, Outcome, process_item};
use ctwa_shared::domain::{
    Account, Channel, Click, Conversation, Customer, InboundMessage, Referral, Route,
    conversation_id,
};
use ctwa_shared::meta::webhook::{cloud_automatic_event, cloud_inbound};
use ctwa_shared::sinch::sinch_inbound;
use ctwa_shared::store::memory::MemoryStore;
use ctwa_shared::store::{
    Accounts, Conversations, FirstTouchOutcome, Inbox, InboxItem, InboxKind, first_touch_of,
};
use ctwa_shared::stream::{image_of, inbox_item_from_image};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// "Now" for every target: a fixed instant, so that a crash reproduces exactly.
pub const NOW_MS: i64 = 1_750_275_999_000;
/// The TTL the webhook handler would put on inbox items received at [`NOW_MS`].
pub const EXPIRES_AT: i64 = NOW_MS / 1000 + 7 * 86_400;
const ACCOUNT: &str = "acct_fuzz";
/// At most this many items of one input go through the capture pipeline: the in-memory
/// store scans lists linearly, and a timeout in the test fake would be noise.
pub const MAX_PIPELINE_ITEMS: usize = 64;

/// Runs a future of the in-memory store, which never waits on anything.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory store future returned Pending"),
    }
}

/// The capture step's own reading of a stored item (what `process_item` dispatches to).
pub enum Stored {
    Message(Box<InboundMessage>),
    Event(ctwa_shared::domain::AutomaticEvent),
    Unreadable,
}

pub fn read_stored(item: &InboxItem) -> Stored {
    match (item.kind, item.channel) {
        (InboxKind::AutomaticEvent, _) => match cloud_automatic_event(item) {
            Ok(e) => Stored::Event(e),
            Err(_) => Stored::Unreadable,
        },
        (InboxKind::Message, Channel::Cloud) => match cloud_inbound(item) {
            Ok(m) => Stored::Message(Box::new(m)),
            Err(_) => Stored::Unreadable,
        },
        (InboxKind::Message, Channel::Sinch) => match sinch_inbound(item) {
            Ok(m) => Stored::Message(Box::new(m)),
            Err(_) => Stored::Unreadable,
        },
        (InboxKind::Message, Channel::Messenger | Channel::Instagram) => {
            match ctwa_shared::meta::messaging::messaging_inbound(item) {
                Ok(m) => Stored::Message(Box::new(m)),
                Err(_) => Stored::Unreadable,
            }
        }
    }
}

fn assert_trimmed(what: &str, v: &Option<String>) {
    if let Some(s) = v {
        assert!(
            !s.is_empty() && s.trim() == s,
            "{what} must be trimmed and non-empty, got {s:?}"
        );
    }
}

/// Invariants of a referral as the domain receives it, and its JSON round trip.
pub fn check_referral(r: &Referral) {
    for (name, v) in [
        ("ctwa_clid", &r.ctwa_clid),
        ("source_id", &r.source_id),
        ("source_url", &r.source_url),
        ("source_type", &r.source_type),
        ("headline", &r.headline),
        ("body", &r.body),
        ("media_type", &r.media_type),
        ("image_url", &r.image_url),
        ("image_id", &r.image_id),
        ("video_url", &r.video_url),
        ("thumbnail_url", &r.thumbnail_url),
        ("welcome_message", &r.welcome_message),
    ] {
        assert_trimmed(name, v);
    }
    let json = serde_json::to_string(r).expect("a referral serialises");
    let back: Referral = serde_json::from_str(&json).expect("a serialised referral parses");
    assert_eq!(&back, r, "referral JSON round trip");
}

/// Invariants of an inbound message read from `item`.
pub fn check_inbound(item: &InboxItem, m: &InboundMessage) {
    assert_eq!(m.channel, item.channel);
    assert_eq!(m.route, item.route);
    let prefix = match item.channel {
        Channel::Cloud => "wa:",
        Channel::Sinch => "sinch:",
        Channel::Messenger => "fb:",
        Channel::Instagram => "ig:",
    };
    // The inbox id and the message id come from the same `id` field of the payload.
    if let Some(id) = item.id.strip_prefix(prefix) {
        assert_eq!(m.message_id, id, "message id differs from the inbox id");
    }
    let c: &Customer = &m.customer;
    match m.channel {
        Channel::Messenger => assert_trimmed("customer.psid", &c.psid),
        Channel::Instagram => assert_trimmed("customer.igsid", &c.igsid),
        Channel::Cloud => assert_trimmed("customer.wa_id", &c.wa_id),
        Channel::Sinch => {
            if let Some(w) = &c.wa_id {
                assert!(
                    (6..=15).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_digit()),
                    "Sinch wa_id must be 6 to 15 digits, got {w:?}"
                );
            }
        }
    }
    assert_trimmed("customer.name", &c.name);
    if let Some(k) = c.key() {
        assert!(
            ["wa:", "u:", "psid:", "igsid:"]
                .iter()
                .any(|p| k.starts_with(p)),
            "customer key {k:?}"
        );
    }
    let json = serde_json::to_string(c).expect("a customer serialises");
    let back: Customer = serde_json::from_str(&json).expect("a serialised customer parses");
    assert_eq!(&back, c, "customer JSON round trip");
    if let Some(r) = &m.referral {
        check_referral(r);
    }
}

/// Invariants of an inbox item as the webhook handler would store it, including the
/// DynamoDB stream image round trip the capture function reads it back through.
pub fn check_inbox_item(item: &InboxItem, channel: Channel) {
    assert_eq!(item.channel, channel);
    assert_eq!(item.received_at_ms, NOW_MS);
    assert_eq!(item.expires_at, EXPIRES_AT);
    let (prefixes, route_ok): (&[&str], bool) = match (channel, item.kind) {
        (Channel::Cloud, InboxKind::Message) => {
            (&["wa:"], matches!(item.route, Route::PhoneNumberId(_)))
        }
        (Channel::Cloud, InboxKind::AutomaticEvent) => {
            (&["wa-ae:"], matches!(item.route, Route::PhoneNumberId(_)))
        }
        (Channel::Sinch, InboxKind::Message) => {
            (&["sinch:"], matches!(item.route, Route::SinchApp(_)))
        }
        (Channel::Messenger, InboxKind::Message) => (
            &["fb:", "fb-ref:", "fb-pb:"],
            matches!(item.route, Route::Page(_)),
        ),
        (Channel::Instagram, InboxKind::Message) => (
            &["ig:", "ig-ref:", "ig-pb:"],
            matches!(item.route, Route::Instagram(_)),
        ),
        (_, InboxKind::AutomaticEvent) => panic!("{channel:?} has no automatic events"),
    };
    assert!(route_ok, "route {:?} for a {channel:?} item", item.route);
    let id = prefixes
        .iter()
        .find_map(|p| item.id.strip_prefix(p))
        .unwrap_or_else(|| panic!("inbox id {:?}", item.id));
    assert!(
        !id.trim().is_empty(),
        "inbox id {:?} names nothing",
        item.id
    );
    assert!(
        !item.route.business_id().trim().is_empty(),
        "blank route {:?}",
        item.route
    );
    assert_eq!(
        Route::parse(&item.route.key()).as_ref(),
        Some(&item.route),
        "route key round trip"
    );
    // Kept exactly as sent: JSON text. Only syntax is checked: a lone surrogate escape
    // (`"\ud800"`) is valid JSON syntax that serde_json's `Value` refuses.
    serde_json::from_str::<serde::de::IgnoredAny>(&item.payload).expect("stored payload is JSON");
    if let Some(c) = &item.contact {
        serde_json::from_str::<serde::de::IgnoredAny>(c).expect("stored contact is JSON");
    }
    let back =
        inbox_item_from_image(&image_of(item)).expect("an inbox item survives its stream image");
    assert_eq!(&back, item, "stream image round trip");
}

/// The capture pipeline against a fresh in-memory store whose one account owns `routes`.
pub struct Pipeline {
    store: Arc<MemoryStore>,
    deps: CaptureDeps,
    /// Items newly stored, in delivery order, with their first outcome.
    delivered: Vec<(InboxItem, Outcome)>,
}

impl Pipeline {
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a Route>) -> Self {
        let mut phone_number_ids: Vec<String> = Vec::new();
        let mut page_ids: Vec<String> = Vec::new();
        let mut instagram_account_ids: Vec<String> = Vec::new();
        let mut sinch_app_id = None;
        for r in routes {
            match r {
                Route::PhoneNumberId(p) if !phone_number_ids.contains(p) => {
                    phone_number_ids.push(p.clone())
                }
                Route::Page(p) if !page_ids.contains(p) => page_ids.push(p.clone()),
                Route::Instagram(i) if !instagram_account_ids.contains(i) => {
                    instagram_account_ids.push(i.clone())
                }
                Route::SinchApp(a) if sinch_app_id.is_none() => sinch_app_id = Some(a.clone()),
                _ => {}
            }
        }
        let store = Arc::new(MemoryStore::new());
        block_on(store.create_account(&Account {
            id: ACCOUNT.into(),
            name: "fuzz".into(),
            waba_id: None,
            phone_number_ids,
            sinch_app_id,
            page_ids,
            instagram_account_ids,
            created_at_ms: 0,
        }))
        .expect("a fresh store takes the account");
        let deps = CaptureDeps::new(store.clone(), store.clone());
        Self {
            store,
            deps,
            delivered: Vec::new(),
        }
    }

    /// What production does with a webhook's items: `put_once` into the inbox (as the
    /// handler does), and for each new one the stream image, then `process_item`.
    pub fn deliver(&mut self, items: &[InboxItem]) {
        for item in items.iter().take(MAX_PIPELINE_ITEMS) {
            if !block_on(self.store.put_once(item)).expect("memory inbox") {
                continue;
            }
            let from_stream = inbox_item_from_image(&image_of(item)).expect("stream image");
            let outcome = block_on(process_item(&self.deps, &from_stream, NOW_MS))
                .expect("the in-memory store never fails");
            self.check_first(item, &outcome);
            self.delivered.push((item.clone(), outcome));
        }
    }

    fn check_first(&self, item: &InboxItem, outcome: &Outcome) {
        match (read_stored(item), outcome) {
            (_, Outcome::Unrouted) => panic!("routed item {:?} came out unrouted", item.id),
            (Stored::Unreadable, Outcome::Skipped(_)) => {}
            (Stored::Event(_), Outcome::AutomaticEvent { new }) => {
                assert!(
                    new,
                    "first delivery of automatic event {:?} was not new",
                    item.id
                )
            }
            (Stored::Message(m), Outcome::Skipped(_)) => {
                assert_eq!(
                    m.customer.key(),
                    None,
                    "readable message with a customer skipped"
                )
            }
            (
                Stored::Message(m),
                Outcome::Message {
                    conversation_id: cid,
                    click_recorded,
                    first_touch,
                },
            ) => {
                check_inbound(item, &m);
                let key = m
                    .customer
                    .key()
                    .expect("a captured message names its customer");
                assert_eq!(cid, &conversation_id(ACCOUNT, m.route.business_id(), &key));
                assert_eq!(
                    *click_recorded,
                    m.referral.is_some(),
                    "first delivery records the click"
                );
                // A touch: a click id on WhatsApp, an ad on Messenger and Instagram.
                let touch = m
                    .referral
                    .as_ref()
                    .filter(|r| ctwa_shared::domain::attributable(m.channel, r));
                // A click dated outside its signed callback's window is never a touch.
                match (touch, m.time_unverified, first_touch) {
                    (None, _, FirstTouchOutcome::NoClick) => {}
                    (Some(_), true, FirstTouchOutcome::NoClick) => {}
                    (Some(_), false, FirstTouchOutcome::Captured | FirstTouchOutcome::Kept) => {}
                    (c, u, o) => panic!(
                        "touch {c:?} (time unverified: {u}) gave first-touch outcome {o:?}"
                    ),
                }
                let conv = self
                    .conversation(cid)
                    .expect("a captured message has its conversation");
                if *first_touch == FirstTouchOutcome::Captured {
                    let click = Click {
                        conversation_id: cid.clone(),
                        message_id: m.message_id.clone(),
                        channel: m.channel,
                        clicked_at_ms: m.sent_at_ms,
                        time_unverified: m.time_unverified,
                        referral: m.referral.clone().unwrap_or_default(),
                    };
                    assert_eq!(
                        conv.first_touch,
                        first_touch_of(&click, NOW_MS),
                        "captured first touch"
                    );
                }
            }
            (_, o) => panic!("item {:?} ({:?}) gave outcome {o:?}", item.id, item.kind),
        }
    }

    fn conversation(&self, id: &str) -> Option<Conversation> {
        block_on(self.store.get_conversation(id)).expect("memory store")
    }

    fn snapshot(&self) -> (BTreeMap<String, Option<Conversation>>, usize, usize) {
        let convs = self
            .delivered
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Message {
                    conversation_id, ..
                } => Some(conversation_id.clone()),
                _ => None,
            })
            .map(|id| {
                let c = self.conversation(&id);
                (id, c)
            })
            .collect();
        let events = self
            .store
            .automatic_events
            .lock()
            .map(|e| e.len())
            .unwrap_or(0);
        (convs, self.store.click_count(), events)
    }

    /// Redelivers every stored item (the stream's at-least-once retries): nothing changes.
    pub fn replay_changes_nothing(&self) {
        let before = self.snapshot();
        for (item, first) in &self.delivered {
            let again = block_on(process_item(&self.deps, item, NOW_MS)).expect("memory store");
            match (first, &again) {
                (Outcome::Skipped(a), Outcome::Skipped(b)) => assert_eq!(a, b),
                (Outcome::AutomaticEvent { .. }, Outcome::AutomaticEvent { new }) => {
                    assert!(!new, "a replayed automatic event was new again")
                }
                (
                    Outcome::Message {
                        conversation_id: a,
                        first_touch: ft,
                        ..
                    },
                    Outcome::Message {
                        conversation_id: b,
                        click_recorded,
                        first_touch,
                    },
                ) => {
                    assert_eq!(a, b);
                    assert!(!click_recorded, "a replayed click was recorded again");
                    let want = match ft {
                        FirstTouchOutcome::NoClick => FirstTouchOutcome::NoClick,
                        _ => FirstTouchOutcome::Kept,
                    };
                    assert_eq!(*first_touch, want, "replayed first touch");
                }
                (a, b) => panic!(
                    "replay of {:?} changed its outcome: {a:?} then {b:?}",
                    item.id
                ),
            }
        }
        assert_eq!(
            before,
            self.snapshot(),
            "a replayed batch changed the store"
        );
    }

    /// The first touch of every conversation and the click count: what must not depend on
    /// the order the stream delivers items in (the earliest click wins).
    /// Per conversation, when its first touch was clicked (on an exact tie the stored
    /// click stays, so which of two same-second clicks it is may depend on order; its
    /// time never does), and the number of clicks.
    pub fn attribution(&self) -> (BTreeMap<String, Option<i64>>, usize) {
        let (convs, clicks, _) = self.snapshot();
        let ft = convs
            .into_iter()
            .map(|(id, c)| (id, c.and_then(|c| c.first_touch).map(|f| f.clicked_at_ms)))
            .collect();
        (ft, clicks)
    }
}

/// Full capture check of a batch: deliver, replay, and deliver reversed into a fresh
/// store for the same attribution.
pub fn capture_batch(items: &[InboxItem]) {
    let mut p = Pipeline::new(items.iter().map(|i| &i.route));
    p.deliver(items);
    p.replay_changes_nothing();
    if items.len() > 1 {
        let mut reversed: Vec<InboxItem> = items.iter().take(MAX_PIPELINE_ITEMS).cloned().collect();
        // Keep the inbox's first-wins dedup: the same set of items must be stored.
        let mut seen = std::collections::HashSet::new();
        reversed.retain(|i| seen.insert(i.id.clone()));
        reversed.reverse();
        let mut q = Pipeline::new(items.iter().map(|i| &i.route));
        q.deliver(&reversed);
        assert_eq!(
            p.attribution(),
            q.attribution(),
            "attribution depends on delivery order"
        );
    }
}

/// Whether a JSON text repeats a key inside one object, anywhere. `serde_json::Value`
/// keeps the last of them while a derived struct refuses the text, so the same body can
/// be read one way and not the other; the targets say so where it matters.
pub fn has_duplicate_keys(json: &[u8]) -> bool {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Unique;
    impl<'de> Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(UniqueVisitor)
        }
    }
    struct UniqueVisitor;
    impl<'de> Visitor<'de> for UniqueVisitor {
        type Value = Unique;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                if !keys.insert(k) {
                    return Err(serde::de::Error::custom("duplicate key"));
                }
                map.next_value::<Unique>()?;
            }
            Ok(Unique)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }
        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }
    }
    // Syntax errors are not duplicates.
    serde_json::from_slice::<IgnoredAny>(json).is_ok()
        && serde_json::from_slice::<Unique>(json).is_err()
}

#[cfg(test)]
mod tests {
    //! The harness is not vacuous: the fixtures reach the capture step and capture clicks.
    //! `cargo test --manifest-path fuzz/Cargo.toml --lib`
    use super::*;
    use ctwa_shared::meta::webhook::parse_cloud_webhook;
    use ctwa_shared::sinch::{SinchCallback, parse_sinch_callback};

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../events/webhooks/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn outcomes(items: &[InboxItem]) -> Vec<Outcome> {
        let mut p = Pipeline::new(items.iter().map(|i| &i.route));
        p.deliver(items);
        p.replay_changes_nothing();
        capture_batch(items);
        p.delivered.into_iter().map(|(_, o)| o).collect()
    }

    #[test]
    fn cloud_fixtures_reach_capture() {
        let body = fixture("cloud/text_with_referral_image_ad.json");
        let items = parse_cloud_webhook(&body, NOW_MS, EXPIRES_AT)
            .unwrap()
            .items;
        items
            .iter()
            .for_each(|i| check_inbox_item(i, Channel::Cloud));
        assert!(matches!(
            outcomes(&items)[..],
            [Outcome::Message {
                click_recorded: true,
                first_touch: FirstTouchOutcome::Captured,
                ..
            }]
        ));
        let body = fixture("cloud/automatic_events_lead.json");
        let items = parse_cloud_webhook(&body, NOW_MS, EXPIRES_AT)
            .unwrap()
            .items;
        assert!(matches!(
            outcomes(&items)[..],
            [Outcome::AutomaticEvent { new: true }]
        ));
        let body = fixture("cloud/multiple_messages_batch.json");
        let items = parse_cloud_webhook(&body, NOW_MS, EXPIRES_AT)
            .unwrap()
            .items;
        assert!(items.len() > 1);
        assert!(
            outcomes(&items)
                .iter()
                .all(|o| matches!(o, Outcome::Message { .. }))
        );
    }

    #[test]
    fn sinch_fixture_reaches_capture() {
        let body = fixture("sinch/message_inbound_ctwa.json");
        let Ok(SinchCallback::Inbound(item)) = parse_sinch_callback(&body, NOW_MS, EXPIRES_AT)
        else {
            panic!("inbound expected")
        };
        check_inbox_item(&item, Channel::Sinch);
        assert!(matches!(
            outcomes(std::slice::from_ref(&*item))[..],
            [Outcome::Message {
                click_recorded: true,
                first_touch: FirstTouchOutcome::Captured,
                ..
            }]
        ));
    }

    #[test]
    fn duplicate_keys_are_seen() {
        assert!(has_duplicate_keys(br#"{"a":{"b":1,"b":2}}"#));
        assert!(!has_duplicate_keys(
            br#"{"a":{"b":1},"b":[{"a":1},{"a":2}]}"#
        ));
        assert!(!has_duplicate_keys(b"{"));
    }
}
