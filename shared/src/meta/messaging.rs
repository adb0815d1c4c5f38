//! Messenger (`object: "page"`) and Instagram Direct (`object: "instagram"`) webhooks:
//! the envelope Meta POSTs, split into inbox items (one per customer message, per
//! `messaging_referrals` event and per postback that carries an ad referral), and the
//! parse of a stored event back into an [`InboundMessage`] for the capture step.
//!
//! Shapes (Meta's Messenger Platform webhook reference, "messages",
//! "messaging_referrals", "messaging_postbacks"; "Webhooks for Instagram Messaging"):
//! `{"object":"page","entry":[{"id":"<PAGE_ID>","time":<ms>,"messaging":[{"sender":
//! {"id":"<PSID>"},"recipient":{"id":"<PAGE_ID>"},"timestamp":<ms>,"message":{"mid",
//! "text","referral":{"ref","ad_id","source":"ADS","type":"OPEN_THREAD",
//! "ads_context_data":{"ad_title","photo_url","video_url","post_id"}}}}]}]}`. Instagram
//! is the same with the Instagram professional account's id and the IGSID. A click
//! comes on `message.referral` (a new thread), on an event-level `referral` (Messenger's
//! `messaging_referrals`: the customer already had a thread) or on
//! `postback.referral` (the first postback after an ad, e.g. Get Started). Echoes of the
//! business's own messages, deliveries, reads, reactions and the rest are acknowledged
//! and ignored.

use crate::domain::{Channel, Customer, InboundMessage, Referral, Route};
use crate::store::{InboxItem, InboxKind};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::webhook::{ParsedWebhook, StoredMessageError, WebhookParseError};

#[derive(Debug, Deserialize)]
struct Entry<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    messaging: Vec<&'a RawValue>,
    /// Events of threads another app holds (the handover protocol): the customer's
    /// messages all the same.
    #[serde(borrow, default)]
    standby: Vec<&'a RawValue>,
    /// Instagram comment / mention webhooks (`changes[]`): not chats.
    #[serde(default)]
    changes: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    entry: Vec<Entry<'a>>,
}

/// The few members of one `messaging[]` event the webhook step reads.
#[derive(Debug, Default, Deserialize)]
struct EventHead {
    #[serde(default)]
    sender: Option<Party>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    message: Option<MessageHead>,
    #[serde(default)]
    referral: Option<Value>,
    #[serde(default)]
    postback: Option<PostbackHead>,
}

#[derive(Debug, Default, Deserialize)]
struct Party {
    #[serde(default)]
    id: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct MessageHead {
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    is_echo: Option<bool>,
    #[serde(default)]
    referral: Option<Value>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    attachments: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct PostbackHead {
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    referral: Option<Value>,
}

/// The channel of a Meta webhook `object`, when it is one of the messaging apps'.
pub fn channel_of_object(object: &str) -> Option<Channel> {
    match object {
        "page" => Some(Channel::Messenger),
        "instagram" => Some(Channel::Instagram),
        _ => None,
    }
}

fn id_text(v: &Option<Value>) -> Option<String> {
    match v.as_ref()? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn prefix(channel: Channel) -> &'static str {
    if channel == Channel::Instagram {
        "ig"
    } else {
        "fb"
    }
}

/// An id for an event Meta gives none (a `messaging_referrals` event, a postback with
/// no `mid`): the hash of what makes it that event (the account, the sender, its time,
/// the whole referral), so a redelivery is the same item.
fn derived_id(route: &Route, event: &EventHead, what: &Value) -> String {
    let mut h = Sha256::new();
    h.update(route.key().as_bytes());
    h.update([0]);
    h.update(
        id_text(&event.sender.as_ref().and_then(|s| s.id.clone()))
            .unwrap_or_default()
            .as_bytes(),
    );
    h.update([0]);
    h.update(
        event
            .timestamp
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
            .as_bytes(),
    );
    h.update([0]);
    h.update(what.to_string().as_bytes());
    hex::encode(h.finalize())[..32].to_string()
}

/// Splits a Messenger or Instagram webhook body (already known to be `object` `page`
/// or `instagram`) into inbox items. An entry with events must name its Page /
/// Instagram account (`entry.id`) and a customer message must carry its `mid`;
/// otherwise the whole POST is refused (nothing stored).
pub fn parse_messaging_webhook(
    channel: Channel,
    body: &[u8],
    received_at_ms: i64,
    expires_at: i64,
) -> Result<ParsedWebhook, WebhookParseError> {
    let env: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        WebhookParseError::Shape(format!("not a {} webhook: {e}", channel.as_str()))
    })?;
    let mut out = ParsedWebhook::default();
    for entry in env.entry {
        if !entry.changes.is_empty() {
            out.other_fields.push("changes".into());
        }
        let events: Vec<&RawValue> = entry.messaging.into_iter().chain(entry.standby).collect();
        if events.is_empty() {
            continue;
        }
        let business = id_text(&entry.id).ok_or_else(|| {
            WebhookParseError::Shape(format!(
                "{} entry without an id (the {})",
                channel.as_str(),
                if channel == Channel::Instagram {
                    "Instagram account id"
                } else {
                    "Page id"
                }
            ))
        })?;
        let route = if channel == Channel::Instagram {
            Route::Instagram(business)
        } else {
            Route::Page(business)
        };
        for raw in events {
            let ev: EventHead = serde_json::from_str(raw.get())
                .map_err(|e| WebhookParseError::Shape(format!("messaging event: {e}")))?;
            let id = match (&ev.message, &ev.referral, &ev.postback) {
                (Some(m), _, _) if m.is_echo == Some(true) => None,
                (Some(m), _, _) => {
                    let mid = m
                        .mid
                        .as_deref()
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .ok_or_else(|| WebhookParseError::Shape("message without a mid".into()))?;
                    Some(format!("{}:{mid}", prefix(channel)))
                }
                (None, Some(r), _) if !r.is_null() => Some(format!(
                    "{}-ref:{}",
                    prefix(channel),
                    derived_id(&route, &ev, r)
                )),
                (None, _, Some(p)) if p.referral.as_ref().is_some_and(|r| !r.is_null()) => Some(
                    match p.mid.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
                        Some(mid) => format!("{}-pb:{mid}", prefix(channel)),
                        None => format!(
                            "{}-pb:{}",
                            prefix(channel),
                            derived_id(&route, &ev, p.referral.as_ref().unwrap_or(&Value::Null))
                        ),
                    },
                ),
                _ => None,
            };
            let Some(id) = id else {
                // Echoes, deliveries, reads, reactions, plain postbacks, opt-ins...
                out.statuses += 1;
                continue;
            };
            out.items.push(InboxItem {
                id,
                kind: InboxKind::Message,
                channel,
                route: route.clone(),
                waba_id: None,
                payload: raw.get().to_string(),
                contact: None,
                received_at_ms,
                expires_at,
            });
        }
    }
    Ok(out)
}

/// Meta's Messenger / Instagram `timestamp`: unix milliseconds (seconds are taken too:
/// a value below 10^11 cannot be milliseconds of this century).
fn timestamp_ms(v: &Option<Value>) -> Option<i64> {
    let t = match v.as_ref()? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    match t {
        t if t <= 0 => None,
        t if t < 100_000_000_000 => Some(t.saturating_mul(1000)),
        t => Some(t),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A Messenger / Instagram referral as the domain keeps it. Only an ad's referral
/// (`source: "ADS"` with its `ad_id`) is a click: `ad_id` is its `source_id`, `ADS` its
/// `source_type`, `ads_context_data`'s `ad_title` / `photo_url` / `video_url` /
/// `post_id` its headline, image, video thumbnail and post. Shortlinks (`m.me`,
/// `ig.me`), the chat plugin and Shops product pages are not ads: `None`.
pub fn ad_referral(v: &Value) -> Option<Referral> {
    let obj = v.as_object()?;
    let source = text(obj.get("source"))?;
    if !source.eq_ignore_ascii_case("ADS") {
        return None;
    }
    let ad_id = text(obj.get("ad_id"))?;
    let ctx = obj.get("ads_context_data").and_then(Value::as_object);
    let from_ctx = |k: &str| ctx.and_then(|c| text(c.get(k)));
    Some(Referral {
        source_id: Some(ad_id),
        source_type: Some(source),
        ref_param: text(obj.get("ref")),
        headline: from_ctx("ad_title"),
        image_url: from_ctx("photo_url"),
        video_url: from_ctx("video_url"),
        post_id: from_ctx("post_id"),
        ..Referral::default()
    })
}

/// A stored Messenger / Instagram event as the domain sees it.
pub fn messaging_inbound(item: &InboxItem) -> Result<InboundMessage, StoredMessageError> {
    let ev: EventHead =
        serde_json::from_str(&item.payload).map_err(|e| StoredMessageError(e.to_string()))?;
    let sender = id_text(&ev.sender.as_ref().and_then(|s| s.id.clone()));
    let customer = Customer {
        psid: sender
            .clone()
            .filter(|_| item.channel == Channel::Messenger),
        igsid: sender.filter(|_| item.channel == Channel::Instagram),
        ..Customer::default()
    };
    let (message_id, kind, referral) = match (&ev.message, &ev.referral, &ev.postback) {
        (Some(m), _, _) => (
            m.mid
                .as_deref()
                .map(str::trim)
                .unwrap_or_default()
                .to_string(),
            if m.text.is_some() {
                "text"
            } else if m.attachments.is_some() {
                "attachments"
            } else {
                "message"
            },
            m.referral.as_ref(),
        ),
        (None, Some(r), _) => (item.id.clone(), "referral", Some(r)),
        // The inbox id (`fb-pb:<mid>`): a postback's mid may be a message's too.
        (None, _, Some(p)) => (item.id.clone(), "postback", p.referral.as_ref()),
        _ => (item.id.clone(), "other", None),
    };
    Ok(InboundMessage {
        channel: item.channel,
        message_id: if message_id.trim().is_empty() {
            item.id.clone()
        } else {
            message_id
        },
        route: item.route.clone(),
        customer,
        sent_at_ms: timestamp_ms(&ev.timestamp).unwrap_or(item.received_at_ms),
        // Meta signs the whole payload with the app secret: its timestamp is Meta's.
        time_unverified: false,
        message_type: Some(kind.to_string()),
        referral: referral.and_then(ad_referral),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Meta's example of a message with an ad referral (Messenger Platform reference,
    /// "messages"), placeholders filled in.
    const MESSENGER_AD: &str = r#"{"object":"page","entry":[{"id":"1122334455","time":1458692752478,"messaging":[{
 "sender":{"id":"6123456789012345"},"recipient":{"id":"1122334455"},"timestamp":1458692752478,
 "message":{"mid":"mid.1457764197618:41d102a3e1ae206a38","text":"hello, world!",
  "referral":{"ref":"summer-sale","ad_id":"120226305854810726","source":"ADS","type":"OPEN_THREAD",
   "ads_context_data":{"ad_title":"Summer Succulents","photo_url":"https://scontent.xx.fbcdn.net/p.jpg",
    "video_url":"https://scontent.xx.fbcdn.net/t.jpg","post_id":"1122334455_998877"}}}}]}]}"#;

    fn parse(channel: Channel, body: &str) -> ParsedWebhook {
        parse_messaging_webhook(channel, body.as_bytes(), 1_000, 2).unwrap()
    }

    #[test]
    fn a_messenger_ad_click_is_one_item_and_a_click() {
        let p = parse(Channel::Messenger, MESSENGER_AD);
        assert_eq!(p.items.len(), 1);
        let it = &p.items[0];
        assert_eq!(it.id, "fb:mid.1457764197618:41d102a3e1ae206a38");
        assert_eq!(it.route, Route::Page("1122334455".into()));
        let m = messaging_inbound(it).unwrap();
        assert_eq!(m.customer.psid.as_deref(), Some("6123456789012345"));
        assert_eq!(m.customer.key().as_deref(), Some("psid:6123456789012345"));
        assert_eq!(m.sent_at_ms, 1_458_692_752_478);
        let r = m.referral.unwrap();
        assert_eq!(r.source_id.as_deref(), Some("120226305854810726"));
        assert_eq!(r.headline.as_deref(), Some("Summer Succulents"));
        assert_eq!(r.ref_param.as_deref(), Some("summer-sale"));
        assert_eq!(r.post_id.as_deref(), Some("1122334455_998877"));
        assert!(r.ctwa_clid.is_none());
    }

    #[test]
    fn instagram_referral_event_and_postback_are_clicks_echoes_and_reads_are_not() {
        let body = r#"{"object":"instagram","entry":[{"id":"17841400000000001","time":1,"messaging":[
 {"sender":{"id":"IGSID1"},"recipient":{"id":"17841400000000001"},"timestamp":1700000000000,
  "message":{"mid":"aWdfZAG1","text":"hi","referral":{"ref":"r","ad_id":"777","source":"ADS","type":"OPEN_THREAD","ads_context_data":{"ad_title":"T"}}}},
 {"sender":{"id":"17841400000000001"},"recipient":{"id":"IGSID1"},"timestamp":1700000000001,
  "message":{"mid":"aWdfZAG2","text":"welcome","is_echo":true}},
 {"sender":{"id":"IGSID1"},"recipient":{"id":"17841400000000001"},"timestamp":1700000000002,"read":{"mid":"aWdfZAG2"}},
 {"sender":{"id":"IGSID2"},"recipient":{"id":"17841400000000001"},"timestamp":1700000000003,
  "postback":{"mid":"aWdfZAG3","title":"Get Started","payload":"GS","referral":{"ad_id":"778","source":"ADS","type":"OPEN_THREAD"}}},
 {"sender":{"id":"IGSID3"},"recipient":{"id":"17841400000000001"},"timestamp":1700000000004,
  "referral":{"ref":"x","source":"IGME-SOURCE-LINK","type":"OPEN_THREAD"}}]}]}"#;
        let p = parse(Channel::Instagram, body);
        let ids: Vec<&str> = p.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids[..2], ["ig:aWdfZAG1", "ig-pb:aWdfZAG3"]);
        assert!(ids[2].starts_with("ig-ref:"), "{ids:?}");
        assert_eq!(p.statuses, 2, "the echo and the read");
        let m = messaging_inbound(&p.items[1]).unwrap();
        assert_eq!(m.customer.key().as_deref(), Some("igsid:IGSID2"));
        assert_eq!(m.referral.unwrap().source_id.as_deref(), Some("778"));
        // An ig.me link is no ad: no click.
        let m = messaging_inbound(&p.items[2]).unwrap();
        assert!(m.referral.is_none());
        // The same body again: the same ids.
        let again = parse(Channel::Instagram, body);
        assert_eq!(again.items[2].id, p.items[2].id);
    }

    #[test]
    fn refusals() {
        for (body, want) in [
            (
                r#"{"object":"page","entry":[{"messaging":[{"message":{"mid":"m"}}]}]}"#,
                "without an id",
            ),
            (
                r#"{"object":"page","entry":[{"id":"1","messaging":[{"message":{"text":"x"}}]}]}"#,
                "without a mid",
            ),
            (r#"{"object":"page","entry":{}}"#, "not a messenger webhook"),
        ] {
            let e = parse_messaging_webhook(Channel::Messenger, body.as_bytes(), 1, 2).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        // Nothing to store: fine.
        let p = parse(
            Channel::Messenger,
            r#"{"object":"page","entry":[{"id":"1","time":1}]}"#,
        );
        assert!(p.items.is_empty());
    }

    /// The fixtures of `events/webhooks/{messenger,instagram}`: (file, items stored,
    /// events acknowledged only, ad clicks).
    #[test]
    fn the_fixtures_parse_as_documented() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/webhooks");
        for (channel, file, items, ignored, clicks) in [
            (
                Channel::Messenger,
                "messenger/message_ad_referral.json",
                1,
                0,
                1,
            ),
            (
                Channel::Messenger,
                "messenger/messaging_referrals_existing_thread.json",
                1,
                0,
                1,
            ),
            (
                Channel::Messenger,
                "messenger/postback_get_started_referral.json",
                1,
                0,
                1,
            ),
            (
                Channel::Messenger,
                "messenger/echo_delivery_read_shortlink.json",
                1,
                3,
                0,
            ),
            (
                Channel::Instagram,
                "instagram/message_ad_referral.json",
                1,
                0,
                1,
            ),
            (
                Channel::Instagram,
                "instagram/echo_seen_igme_link.json",
                1,
                2,
                0,
            ),
        ] {
            let body = std::fs::read(format!("{dir}/{file}")).unwrap();
            let p = crate::meta::webhook::parse_cloud_webhook(&body, 1, 2).unwrap();
            assert_eq!((p.items.len(), p.statuses), (items, ignored), "{file}");
            let n = p
                .items
                .iter()
                .map(|i| {
                    assert_eq!(i.channel, channel, "{file}");
                    messaging_inbound(i).unwrap()
                })
                .filter(|m| m.referral.is_some())
                .count();
            assert_eq!(n, clicks, "{file}");
        }
    }

    #[test]
    fn only_an_ads_referral_is_a_click() {
        for v in [
            serde_json::json!({"source": "SHORTLINK", "ref": "x", "type": "OPEN_THREAD"}),
            serde_json::json!({"source": "ADS"}),
            serde_json::json!({"product": {"id": "1"}}),
            serde_json::json!("ADS"),
        ] {
            assert!(ad_referral(&v).is_none(), "{v}");
        }
        let r = ad_referral(&serde_json::json!({"source": "ADS", "ad_id": 123})).unwrap();
        assert_eq!(r.source_id.as_deref(), Some("123"));
    }
}
