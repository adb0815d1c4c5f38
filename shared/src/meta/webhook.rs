//! WhatsApp Cloud API webhooks: the envelope Meta POSTs, split into inbox items (one per
//! inbound message and per automatic event), and the parse of a stored message back
//! into an [`InboundMessage`] for the capture step.
//!
//! The envelope is parsed with borrowed raw values: each message is stored exactly as
//! Meta sent it, and only the few fields we need are decoded.

use crate::domain::{AutomaticEvent, Channel, Customer, InboundMessage, Referral, Route};
use crate::store::{InboxItem, InboxKind};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    object: String,
    #[serde(borrow, default)]
    entry: Vec<Entry<'a>>,
}

#[derive(Debug, Deserialize)]
struct Entry<'a> {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(borrow, default)]
    changes: Vec<Change<'a>>,
}

#[derive(Debug, Deserialize)]
struct Change<'a> {
    field: String,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    phone_number_id: Option<String>,
}

/// `value` of a `messages` or `automatic_events` change.
#[derive(Debug, Deserialize)]
struct MessagesValue<'a> {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(borrow, default)]
    contacts: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Vec<&'a RawValue>,
    #[serde(default)]
    statuses: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    #[serde(borrow, default)]
    automatic_events: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct MessageHead {
    id: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    from_user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContactHead {
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EventHead {
    id: String,
}

/// What one webhook POST amounts to.
#[derive(Debug, Default)]
pub struct ParsedWebhook {
    /// Messages and automatic events to store once each.
    pub items: Vec<InboxItem>,
    /// Delivery statuses (sent, delivered, read, failed...): acknowledged, not stored.
    pub statuses: usize,
    /// `value.errors[]` entries: acknowledged and logged.
    pub errors: Vec<serde_json::Value>,
    /// Other `field`s (account_update, message_template_status_update, ...): acknowledged.
    pub other_fields: Vec<String>,
    /// `object` was not `whatsapp_business_account`: acknowledged, nothing read.
    pub foreign_object: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookParseError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(String),
}

/// The messaging channel of a body whose `object` is Messenger's (`page`) or
/// Instagram's (`instagram`).
fn object_channel(body: &[u8]) -> Option<crate::domain::Channel> {
    #[derive(Deserialize)]
    struct Head {
        object: String,
    }
    let h: Head = serde_json::from_slice(body).ok()?;
    super::messaging::channel_of_object(&h.object)
}

/// Splits a Meta webhook body into inbox items: the WhatsApp Cloud API's, and
/// Messenger's and Instagram's ([`super::messaging`]). Every message must carry an `id`
/// and every messages change a `metadata.phone_number_id`; otherwise the whole POST is
/// refused (nothing stored) so that nothing is half-accepted.
pub fn parse_cloud_webhook(
    body: &[u8],
    received_at_ms: i64,
    expires_at: i64,
) -> Result<ParsedWebhook, WebhookParseError> {
    let messaging = |channel| {
        super::messaging::parse_messaging_webhook(channel, body, received_at_ms, expires_at)
    };
    // WhatsApp's envelope first: its bodies (the many) are read once. A Messenger or
    // Instagram body is read again by its own parser, also when its entries do not fit
    // WhatsApp's envelope.
    let env: Envelope<'_> = match serde_json::from_slice(body) {
        Ok(env) => env,
        Err(e) if e.is_data() => {
            return match object_channel(body) {
                Some(channel) => messaging(channel),
                None => Err(WebhookParseError::Shape(format!(
                    "not a WhatsApp webhook envelope: {e}"
                ))),
            };
        }
        Err(e) => return Err(WebhookParseError::Json(e.to_string())),
    };
    if let Some(channel) = super::messaging::channel_of_object(&env.object) {
        return messaging(channel);
    }
    let mut out = ParsedWebhook::default();
    if env.object != "whatsapp_business_account" {
        out.foreign_object = Some(env.object);
        return Ok(out);
    }
    for entry in env.entry {
        let waba_id = entry.id.as_ref().and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        for change in entry.changes {
            match change.field.as_str() {
                "messages" | "automatic_events" => {}
                _ => {
                    out.other_fields.push(change.field);
                    continue;
                }
            }
            let Some(raw) = change.value else {
                return Err(WebhookParseError::Shape(format!(
                    "{} change without a value",
                    change.field
                )));
            };
            let value: MessagesValue<'_> = serde_json::from_str(raw.get())
                .map_err(|e| WebhookParseError::Shape(format!("{} value: {e}", change.field)))?;
            out.statuses += value.statuses.len();
            out.errors.extend(value.errors);
            if value.messages.is_empty() && value.automatic_events.is_empty() {
                continue;
            }
            let pnid = value
                .metadata
                .and_then(|m| m.phone_number_id)
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| {
                    WebhookParseError::Shape("messages without metadata.phone_number_id".into())
                })?;
            let route = Route::PhoneNumberId(pnid);
            let contacts: Vec<(ContactHead, &RawValue)> = value
                .contacts
                .iter()
                .filter_map(|c| {
                    serde_json::from_str::<ContactHead>(c.get())
                        .ok()
                        .map(|h| (h, *c))
                })
                .collect();
            for m in value.messages {
                let head: MessageHead = serde_json::from_str(m.get())
                    .map_err(|e| WebhookParseError::Shape(format!("message: {e}")))?;
                if head.id.trim().is_empty() {
                    return Err(WebhookParseError::Shape("message with an empty id".into()));
                }
                let contact = match_contact(&contacts, &head).map(|c| c.get().to_string());
                out.items.push(InboxItem {
                    id: format!("wa:{}", head.id),
                    kind: InboxKind::Message,
                    channel: Channel::Cloud,
                    route: route.clone(),
                    waba_id: waba_id.clone(),
                    payload: m.get().to_string(),
                    contact,
                    received_at_ms,
                    expires_at,
                });
            }
            for ev in value.automatic_events {
                let head: EventHead = serde_json::from_str(ev.get())
                    .map_err(|e| WebhookParseError::Shape(format!("automatic event: {e}")))?;
                if head.id.trim().is_empty() {
                    return Err(WebhookParseError::Shape(
                        "automatic event with an empty id".into(),
                    ));
                }
                out.items.push(InboxItem {
                    id: format!("wa-ae:{}", head.id),
                    kind: InboxKind::AutomaticEvent,
                    channel: Channel::Cloud,
                    route: route.clone(),
                    waba_id: waba_id.clone(),
                    payload: ev.get().to_string(),
                    contact: None,
                    received_at_ms,
                    expires_at,
                });
            }
        }
    }
    Ok(out)
}

fn match_contact<'a>(
    contacts: &[(ContactHead, &'a RawValue)],
    m: &MessageHead,
) -> Option<&'a RawValue> {
    let by_phone = m.from.as_deref().and_then(|from| {
        contacts
            .iter()
            .find(|(h, _)| h.wa_id.as_deref() == Some(from))
    });
    let by_user = || {
        m.from_user_id.as_deref().and_then(|u| {
            contacts
                .iter()
                .find(|(h, _)| h.user_id.as_deref() == Some(u))
        })
    };
    // The single contact of a change names the sender only when the message names
    // nobody itself: a message from someone else never takes that contact (and its
    // name) as its own.
    let anonymous = m.from.is_none() && m.from_user_id.is_none();
    by_phone
        .or_else(by_user)
        .or(if contacts.len() == 1 && anonymous {
            contacts.first()
        } else {
            None
        })
        .map(|(_, raw)| *raw)
}

// ---- the capture side: a stored Cloud API message back into the domain ----

#[derive(Debug, Deserialize)]
struct CloudMessage {
    id: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    from_user_id: Option<String>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    /// Any JSON: a `type` of another type is no reason to lose the message's click.
    #[serde(default, rename = "type")]
    kind: Option<serde_json::Value>,
    /// Read field by field ([`referral_from_json`]): one field of an unexpected type
    /// never costs the click.
    #[serde(default)]
    referral: Option<serde_json::Value>,
}

/// The text fields of a referral, as Meta names them (Cloud API and Sinch alike).
const REFERRAL_TEXT_FIELDS: [&str; 10] = [
    "ctwa_clid",
    "source_id",
    "source_url",
    "source_type",
    "headline",
    "body",
    "media_type",
    "image_url",
    "video_url",
    "thumbnail_url",
];

/// A referral as the domain keeps it, read field by field from the JSON Meta (or Sinch)
/// sent, so that a field of an unexpected type costs that field only, never the click:
/// - a text field holding text is kept (trimmed; empty is absent); `null` or absent is
///   absent;
/// - `source_id` (the ad id) holding an integer is kept as its digits, as Meta's ids
///   are, and noted as odd;
/// - any other value (a number, a list, an object, a boolean) is kept raw in
///   [`Referral::odd_fields`] under its name, and the field is absent;
/// - `image` must be `{"id": text}` and `welcome_message` `{"text": text}`; otherwise
///   the whole member is kept raw;
/// - a `ctwa_clid` that is not text is no click id: the click is kept without one (as a
///   Status placement's) and the raw value is in `odd_fields`; it is never repaired;
/// - a referral that is not an object at all is kept raw under `referral`.
pub(crate) fn referral_from_json(v: &serde_json::Value) -> Referral {
    use serde_json::Value;
    let mut r = Referral::default();
    let Value::Object(obj) = v else {
        r.odd_fields.insert("referral".into(), v.clone());
        return r;
    };
    for name in REFERRAL_TEXT_FIELDS {
        let text = match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => non_empty(Some(s.clone())),
            Some(raw) => {
                r.odd_fields.insert(name.into(), raw.clone());
                match raw {
                    Value::Number(n) if name == "source_id" && n.is_u64() => Some(n.to_string()),
                    _ => None,
                }
            }
        };
        let slot = match name {
            "ctwa_clid" => &mut r.ctwa_clid,
            "source_id" => &mut r.source_id,
            "source_url" => &mut r.source_url,
            "source_type" => &mut r.source_type,
            "headline" => &mut r.headline,
            "body" => &mut r.body,
            "media_type" => &mut r.media_type,
            "image_url" => &mut r.image_url,
            "video_url" => &mut r.video_url,
            _ => &mut r.thumbnail_url,
        };
        *slot = text;
    }
    for (name, inner) in [("image", "id"), ("welcome_message", "text")] {
        let text = match obj.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => match m.get(inner) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => non_empty(Some(s.clone())),
                Some(_) => {
                    r.odd_fields.insert(name.into(), obj[name].clone());
                    None
                }
            },
            Some(raw) => {
                r.odd_fields.insert(name.into(), raw.clone());
                None
            }
        };
        if name == "image" {
            r.image_id = text;
        } else {
            r.welcome_message = text;
        }
    }
    r
}

/// Logs the referral fields of an unexpected type (their names, never their values).
pub(crate) fn warn_odd_referral(channel: Channel, message_id: &str, r: &Referral) {
    if r.odd_fields.is_empty() {
        return;
    }
    let fields: Vec<&str> = r.odd_fields.keys().map(String::as_str).collect();
    tracing::warn!(
        channel = channel.as_str(),
        message_id,
        ?fields,
        click_id_kept = r.ctwa_clid.is_some(),
        "referral field(s) of an unexpected JSON type: the click is kept, the field(s) raw in odd_fields"
    );
}

#[derive(Debug, Default, Deserialize)]
struct CloudContact {
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Debug, Default, Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Unix seconds as Meta sends them (a string, sometimes a number) into millis.
fn meta_timestamp_ms(v: &Option<serde_json::Value>) -> Option<i64> {
    let secs = match v.as_ref()? {
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok()?,
        serde_json::Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    (secs > 0).then(|| secs.saturating_mul(1000))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored message is unreadable: {0}")]
pub struct StoredMessageError(pub String);

/// A stored Cloud API message (and its contact) as the domain sees it.
pub fn cloud_inbound(item: &InboxItem) -> Result<InboundMessage, StoredMessageError> {
    let m: CloudMessage =
        serde_json::from_str(&item.payload).map_err(|e| StoredMessageError(e.to_string()))?;
    let contact: CloudContact = item
        .contact
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_default();
    // The message's own sender wins; its contact only fills what the message lacks.
    let customer = Customer {
        wa_id: non_empty(non_empty(m.from).or(contact.wa_id)),
        user_id: non_empty(non_empty(m.from_user_id).or(contact.user_id)),
        name: non_empty(contact.profile.and_then(|p| p.name)),
        ..Customer::default()
    };
    let referral = m
        .referral
        .as_ref()
        .filter(|r| !r.is_null())
        .map(referral_from_json);
    if let Some(r) = &referral {
        warn_odd_referral(Channel::Cloud, &m.id, r);
    }
    Ok(InboundMessage {
        channel: Channel::Cloud,
        message_id: m.id,
        route: item.route.clone(),
        customer,
        sent_at_ms: meta_timestamp_ms(&m.timestamp).unwrap_or(item.received_at_ms),
        // Meta signs the whole payload with the app secret: its timestamp is Meta's.
        time_unverified: false,
        message_type: m.kind.map(|k| match k {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }),
        referral,
    })
}

#[derive(Debug, Deserialize)]
struct CloudAutomaticEvent {
    id: String,
    #[serde(default)]
    event_name: Option<String>,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    ctwa_clid: Option<String>,
    #[serde(default)]
    custom_data: Option<serde_json::Value>,
}

pub fn cloud_automatic_event(item: &InboxItem) -> Result<AutomaticEvent, StoredMessageError> {
    let e: CloudAutomaticEvent =
        serde_json::from_str(&item.payload).map_err(|e| StoredMessageError(e.to_string()))?;
    Ok(AutomaticEvent {
        id: e.id,
        event_name: non_empty(e.event_name).unwrap_or_else(|| "unknown".into()),
        occurred_at_ms: meta_timestamp_ms(&e.timestamp).unwrap_or(item.received_at_ms),
        ctwa_clid: non_empty(e.ctwa_clid),
        custom_data: e.custom_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTWA: &str = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{
 "messaging_product":"whatsapp",
 "metadata":{"display_phone_number":"15550783881","phone_number_id":"1204727649384372"},
 "contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234","user_id":"US.13491208655302741918"}],
 "messages":[{"referral":{"source_url":"https://fb.me/3cr4Wqqkv","source_id":"120226305854810726",
   "source_type":"ad","body":"Summer Succulents are here!","headline":"Chat with us",
   "media_type":"image","image_url":"https://scontent.xx.fbcdn.net/v/t45.1",
   "ctwa_clid":"Aff-n8ZTODiE79d22KtAwQKj9e_mIEOOj27v",
   "welcome_message":{"text":"Hi there! Let us know how we can help!"}},
  "from":"16505551234","id":"wamid.HBgLMTY1","timestamp":"1750275992",
  "text":{"body":"Can I get more info about this?"},"type":"text"}]},
 "field":"messages"}]}]}"#;

    /// One contact (Alice) and two messages, Alice's and Bob's with a referral: Bob's
    /// click is Bob's, never Alice's.
    #[test]
    fn each_message_keeps_its_own_sender() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{
 "messaging_product":"whatsapp",
 "metadata":{"display_phone_number":"15550783881","phone_number_id":"1204727649384372"},
 "contacts":[{"profile":{"name":"Alice"},"wa_id":"16505550001"}],
 "messages":[
  {"from":"16505550001","id":"wamid.A","timestamp":"1750275990","type":"text","text":{"body":"hi"}},
  {"from":"16505550002","id":"wamid.B","timestamp":"1750275992","type":"text","text":{"body":"hello"},
   "referral":{"source_id":"120226305854810726","source_type":"ad","ctwa_clid":"clid-bob"}}]},
 "field":"messages"}]}]}"#;
        let p = parse_cloud_webhook(body.as_bytes(), 5, 9).unwrap();
        let alice = cloud_inbound(&p.items[0]).unwrap();
        let bob = cloud_inbound(&p.items[1]).unwrap();
        assert_eq!(alice.customer.wa_id.as_deref(), Some("16505550001"));
        assert_eq!(alice.customer.name.as_deref(), Some("Alice"));
        assert_eq!(bob.customer.wa_id.as_deref(), Some("16505550002"));
        assert_eq!(bob.customer.name, None, "Alice's name is not Bob's");
        assert_eq!(bob.referral.unwrap().ctwa_clid.as_deref(), Some("clid-bob"));
        assert_ne!(alice.customer.key(), bob.customer.key());
    }

    #[test]
    fn ctwa_message_round_trip() {
        let p = parse_cloud_webhook(CTWA.as_bytes(), 5, 9).unwrap();
        assert_eq!(p.items.len(), 1);
        let item = &p.items[0];
        assert_eq!(item.id, "wa:wamid.HBgLMTY1");
        assert_eq!(item.waba_id.as_deref(), Some("102290129340398"));
        assert_eq!(item.route, Route::PhoneNumberId("1204727649384372".into()));
        assert!(
            item.payload.starts_with("{\"referral\""),
            "raw kept as sent"
        );
        let m = cloud_inbound(item).unwrap();
        assert_eq!(m.customer.wa_id.as_deref(), Some("16505551234"));
        assert_eq!(
            m.customer.user_id.as_deref(),
            Some("US.13491208655302741918")
        );
        assert_eq!(m.customer.name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(m.sent_at_ms, 1_750_275_992_000);
        let r = m.referral.unwrap();
        assert_eq!(
            r.ctwa_clid.as_deref(),
            Some("Aff-n8ZTODiE79d22KtAwQKj9e_mIEOOj27v")
        );
        assert_eq!(r.source_id.as_deref(), Some("120226305854810726"));
        assert_eq!(
            r.welcome_message.as_deref(),
            Some("Hi there! Let us know how we can help!")
        );
    }

    #[test]
    fn missing_clid_is_never_filled_from_source_id() {
        let body = CTWA.replace(
            "\"ctwa_clid\":\"Aff-n8ZTODiE79d22KtAwQKj9e_mIEOOj27v\",",
            "",
        );
        let p = parse_cloud_webhook(body.as_bytes(), 5, 9).unwrap();
        let r = cloud_inbound(&p.items[0]).unwrap().referral.unwrap();
        assert_eq!(r.ctwa_clid, None);
        assert_eq!(r.source_id.as_deref(), Some("120226305854810726"));
    }

    /// A referral field of an unexpected JSON type costs that field only: the click and
    /// its click id are kept, the odd fields raw beside them.
    #[test]
    fn odd_referral_fields_never_cost_the_click() {
        let body = CTWA
            .replace(
                "\"source_id\":\"120226305854810726\"",
                "\"source_id\":120208",
            )
            .replace("\"headline\":\"Chat with us\"", "\"headline\":null")
            .replace("\"media_type\":\"image\"", "\"media_type\":[\"image\"]");
        let p = parse_cloud_webhook(body.as_bytes(), 5, 9).unwrap();
        let m = cloud_inbound(&p.items[0]).expect("the message is not skipped");
        let r = m.referral.expect("the click is kept");
        assert_eq!(
            r.ctwa_clid.as_deref(),
            Some("Aff-n8ZTODiE79d22KtAwQKj9e_mIEOOj27v")
        );
        assert_eq!(r.source_id.as_deref(), Some("120208"), "an integer ad id");
        assert_eq!(r.headline, None, "null is absent");
        assert_eq!(r.media_type, None);
        assert_eq!(r.body.as_deref(), Some("Summer Succulents are here!"));
        assert_eq!(
            r.odd_fields,
            std::collections::BTreeMap::from([
                ("media_type".to_string(), serde_json::json!(["image"])),
                ("source_id".to_string(), serde_json::json!(120208)),
            ])
        );
    }

    #[test]
    fn every_kind_of_odd_value_is_kept_raw() {
        use serde_json::json;
        let r = referral_from_json(&json!({
            "ctwa_clid": 42, "source_id": 1.5, "source_url": true, "body": {"x": 1},
            "image": "IMG", "welcome_message": {"text": 7}, "video_url": "  ",
            "thumbnail_url": "https://t", "source_type": "ad"
        }));
        assert_eq!(
            r.ctwa_clid, None,
            "a click id that is not text is no click id"
        );
        assert_eq!(r.source_id, None, "only an integer is an ad id");
        assert_eq!(r.video_url, None);
        assert_eq!(r.thumbnail_url.as_deref(), Some("https://t"));
        assert_eq!(r.source_type.as_deref(), Some("ad"));
        let names: Vec<&str> = r.odd_fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "body",
                "ctwa_clid",
                "image",
                "source_id",
                "source_url",
                "welcome_message"
            ]
        );
        assert_eq!(r.odd_fields["welcome_message"], json!({"text": 7}));
        assert_eq!(r.odd_fields["ctwa_clid"], json!(42));
        // Not an object at all: kept whole.
        let r = referral_from_json(&json!("ad:1"));
        assert_eq!(r.odd_fields["referral"], json!("ad:1"));
        assert_eq!(r.ctwa_clid, None);
        // A well-formed referral has no odd fields, and they are not serialised.
        let r = referral_from_json(&json!({"ctwa_clid": "C", "image": {"id": "I"}}));
        assert!(r.odd_fields.is_empty());
        assert_eq!(r.image_id.as_deref(), Some("I"));
        assert!(!serde_json::to_string(&r).unwrap().contains("odd_fields"));
    }

    #[test]
    fn a_message_type_of_another_type_keeps_the_message() {
        let body = CTWA.replace("\"type\":\"text\"", "\"type\":5");
        let p = parse_cloud_webhook(body.as_bytes(), 5, 9).unwrap();
        let m = cloud_inbound(&p.items[0]).unwrap();
        assert_eq!(m.message_type.as_deref(), Some("5"));
        assert!(m.referral.unwrap().ctwa_clid.is_some());
    }

    #[test]
    fn legacy_image_id_is_tolerated() {
        let body = CTWA.replace(
            "\"image_url\":\"https://scontent.xx.fbcdn.net/v/t45.1\"",
            "\"image\":{\"id\":\"IMG1\"}",
        );
        let p = parse_cloud_webhook(body.as_bytes(), 5, 9).unwrap();
        let r = cloud_inbound(&p.items[0]).unwrap().referral.unwrap();
        assert_eq!(r.image_id.as_deref(), Some("IMG1"));
        assert_eq!(r.image_url, None);
    }

    #[test]
    fn refuses_what_it_cannot_store() {
        assert!(matches!(
            parse_cloud_webhook(b"{nope", 0, 0),
            Err(WebhookParseError::Json(_))
        ));
        assert!(matches!(
            parse_cloud_webhook(b"[]", 0, 0),
            Err(WebhookParseError::Shape(_))
        ));
        let no_id = CTWA.replace("\"id\":\"wamid.HBgLMTY1\",", "");
        assert!(matches!(
            parse_cloud_webhook(no_id.as_bytes(), 0, 0),
            Err(WebhookParseError::Shape(_))
        ));
        let no_pnid = CTWA.replace("\"phone_number_id\":\"1204727649384372\"", "\"x\":1");
        assert!(matches!(
            parse_cloud_webhook(no_pnid.as_bytes(), 0, 0),
            Err(WebhookParseError::Shape(_))
        ));
    }

    #[test]
    fn other_objects_and_fields_are_acknowledged() {
        let p = parse_cloud_webhook(br#"{"object":"user","entry":[]}"#, 0, 0).unwrap();
        assert_eq!(p.foreign_object.as_deref(), Some("user"));
        // Messenger's and Instagram's objects are read (meta::messaging), not foreign.
        let p = parse_cloud_webhook(br#"{"object":"page","entry":[]}"#, 0, 0).unwrap();
        assert_eq!(p.foreign_object, None);
        let p = parse_cloud_webhook(
            br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}}]}]}"#,
            0,
            0,
        )
        .unwrap();
        assert_eq!(p.other_fields, vec!["account_update".to_string()]);
        assert!(p.items.is_empty());
    }
}
