//! Sinch Conversation API callbacks (MESSAGE_INBOUND trigger). The click data arrives as
//! escaped JSON in the STRING `message.metadata`:
//! `"{\"referral\":{\"source_type\":\"ad\",...,\"ctwa_clid\":\"...\"}}"`.

use crate::domain::{Channel, Customer, InboundMessage, Referral, Route};
use crate::meta::webhook::{
    StoredMessageError, WebhookParseError, referral_from_json, warn_odd_referral,
};
use crate::store::{InboxItem, InboxKind};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Callback {
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    event_time: Option<String>,
    #[serde(default)]
    message: Option<Message>,
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    channel_identity: Option<ChannelIdentity>,
    #[serde(default)]
    contact_id: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    contact_message: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct ChannelIdentity {
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    identity: Option<String>,
}

/// What one Sinch callback amounts to.
#[derive(Debug)]
pub enum SinchCallback {
    /// An inbound message to store once.
    Inbound(Box<InboxItem>),
    /// Any other callback (delivery reports, events, outbound echoes): acknowledged.
    Ignored(String),
}

/// The `app_id` a callback names, read before its signature is checked (it names the
/// secret to check it with): letters and digits, as an app id is linked.
pub fn sinch_app_id(body: &[u8]) -> Result<String, WebhookParseError> {
    #[derive(Deserialize)]
    struct AppOnly {
        #[serde(default)]
        app_id: Option<serde_json::Value>,
    }
    let only: AppOnly =
        serde_json::from_slice(body).map_err(|e| WebhookParseError::Json(e.to_string()))?;
    match only.app_id {
        Some(serde_json::Value::String(a)) if crate::accounts::is_sinch_app_id(&a) => Ok(a),
        _ => Err(WebhookParseError::Shape(
            "app_id is required: the Sinch app id (letters and digits)".into(),
        )),
    }
}

/// How far before the callback's signed timestamp a click may be dated and still count
/// as a touch (a customer's message reaches us within minutes; Sinch retries for days).
pub const CLICK_WINDOW_BEFORE_MS: i64 = 7 * 86_400 * 1000;
/// How far after it.
pub const CLICK_WINDOW_AFTER_MS: i64 = 5 * 60 * 1000;

/// Whether a click dated `sent_at_ms` fits the window around the callback's signed
/// timestamp. The webhook accepts a signature only within its skew (5 minutes) of the
/// receipt time, so the window is measured from `received_at_ms`, stored with the item.
/// Outside it (an `event_time` back-dated to 1970, or in the future), the sender set a
/// time no one can vouch for: the click is kept, but never a first or last touch.
pub fn click_time_fits(sent_at_ms: i64, received_at_ms: i64) -> bool {
    (received_at_ms.saturating_sub(CLICK_WINDOW_BEFORE_MS)
        ..=received_at_ms.saturating_add(CLICK_WINDOW_AFTER_MS))
        .contains(&sent_at_ms)
}

/// Parses a Sinch callback body. An inbound message must carry `app_id` and `message.id`.
pub fn parse_sinch_callback(
    body: &[u8],
    received_at_ms: i64,
    expires_at: i64,
) -> Result<SinchCallback, WebhookParseError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookParseError::Json(e.to_string()))?;
    let Some(obj) = value.as_object() else {
        return Err(WebhookParseError::Shape(
            "a Sinch callback is a JSON object".into(),
        ));
    };
    if !obj.contains_key("message") {
        let kind = obj
            .keys()
            .find(|k| {
                !matches!(
                    k.as_str(),
                    "app_id"
                        | "accepted_time"
                        | "event_time"
                        | "project_id"
                        | "message_metadata"
                        | "correlation_id"
                )
            })
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        return Ok(SinchCallback::Ignored(kind));
    }
    // From the bytes, exactly as capture will read the stored payload (a repeated
    // field is refused here, not accepted here and skipped there).
    drop(value);
    let cb: Callback = serde_json::from_slice(body)
        .map_err(|e| WebhookParseError::Shape(format!("Sinch callback: {e}")))?;
    let msg = cb
        .message
        .ok_or_else(|| WebhookParseError::Shape("message is null".into()))?;
    if let Some(dir) = msg.direction.as_deref()
        && dir != "TO_APP"
    {
        return Ok(SinchCallback::Ignored(format!("message direction {dir}")));
    }
    let id = msg
        .id
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| WebhookParseError::Shape("message.id is required".into()))?;
    let app_id = cb
        .app_id
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| WebhookParseError::Shape("app_id is required".into()))?;
    Ok(SinchCallback::Inbound(Box::new(InboxItem {
        id: format!("sinch:{id}"),
        kind: InboxKind::Message,
        channel: Channel::Sinch,
        route: Route::SinchApp(app_id),
        waba_id: None,
        // The whole callback, as Sinch sent it.
        payload: String::from_utf8_lossy(body).into_owned(),
        contact: None,
        received_at_ms,
        expires_at,
    })))
}

/// The referral inside Sinch's `metadata` string; `None` when absent or when the
/// string is not JSON. Its fields are read one by one ([`referral_from_json`]): a field
/// of an unexpected type is kept raw, never a reason to drop the click.
pub fn referral_from_metadata(metadata: &serde_json::Value) -> Option<Referral> {
    // Through a Value, as for the callback itself: a repeated key keeps the last.
    let parsed: serde_json::Value = match metadata {
        serde_json::Value::String(s) if !s.trim().is_empty() => serde_json::from_str(s).ok()?,
        serde_json::Value::Object(_) => metadata.clone(),
        _ => return None,
    };
    parsed
        .get("referral")
        .filter(|r| !r.is_null())
        .map(referral_from_json)
}

/// A stored Sinch callback as the domain sees it.
pub fn sinch_inbound(item: &InboxItem) -> Result<InboundMessage, StoredMessageError> {
    let cb: Callback =
        serde_json::from_str(&item.payload).map_err(|e| StoredMessageError(e.to_string()))?;
    let msg = cb
        .message
        .ok_or_else(|| StoredMessageError("no message".into()))?;
    let id = msg
        .id
        .ok_or_else(|| StoredMessageError("no message id".into()))?;
    let identity = msg.channel_identity.as_ref();
    let is_whatsapp = identity
        .and_then(|c| c.channel.as_deref())
        .is_none_or(|c| c.eq_ignore_ascii_case("WHATSAPP"));
    let wa_id = identity
        .and_then(|c| c.identity.clone())
        .filter(|_| is_whatsapp)
        .and_then(|i| crate::domain::Phone::parse(&i).ok())
        .map(|p| p.digits().to_string());
    let customer = Customer {
        wa_id,
        user_id: msg.contact_id.filter(|c| !c.trim().is_empty()),
        name: None,
        ..Customer::default()
    };
    let sent_at_ms = cb
        .event_time
        .as_deref()
        .and_then(crate::time::parse_rfc3339_millis)
        .unwrap_or(item.received_at_ms);
    let message_type = msg
        .contact_message
        .as_ref()
        .and_then(|m| m.keys().next().cloned());
    let referral = msg.metadata.as_ref().and_then(referral_from_metadata);
    if let Some(r) = &referral {
        warn_odd_referral(Channel::Sinch, &id, r);
    }
    Ok(InboundMessage {
        channel: Channel::Sinch,
        message_id: id,
        route: item.route.clone(),
        customer,
        time_unverified: !click_time_fits(sent_at_ms, item.received_at_ms),
        sent_at_ms,
        message_type,
        referral,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a repeated field was accepted by the webhook and then skipped
    /// by capture. Now the webhook refuses it (400), and a repeated key inside the
    /// metadata string keeps the last value instead of dropping the click.
    #[test]
    fn repeated_keys_are_refused_or_read_the_same_way_on_both_sides() {
        let body = br#"{"app_id":"A","message":{"id":"1","metadata":"{}","metadata":"{}"}}"#;
        assert!(parse_sinch_callback(body, 0, 0).is_err());
        let meta =
            serde_json::json!(r#"{"referral":{"ctwa_clid":"X"},"referral":{"ctwa_clid":"CLID"}}"#);
        let r = referral_from_metadata(&meta);
        assert_eq!(r.and_then(|r| r.ctwa_clid).as_deref(), Some("CLID"));
    }

    /// Found by fuzzing: a number kept among a referral's odd fields came back one ULP
    /// off after being stored and read again (serde_json's fast float parser is not
    /// exact). The workspace enables `float_roundtrip`, so a kept number stays the number
    /// that was sent.
    #[test]
    fn odd_numbers_in_a_referral_survive_storing_and_reading() {
        let meta = serde_json::json!(
            r#"{"referral":{"ctwa_clid":"C","headline":665468799.6936622501926e-22,"media_type":[407484983.14957887545775e253]}}"#
        );
        let r = referral_from_metadata(&meta).expect("a referral");
        assert_eq!(r.odd_fields.len(), 2, "{r:?}");
        let back: Referral = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
    const SEED: &str = r#"{
  "app_id": "01EB37HMH1M6SV18ASNS3G135H",
  "accepted_time": "2020-10-01T12:10:55.073703Z",
  "event_time": "2020-10-01T12:10:53.991Z",
  "project_id": "c36f3d3d-1513-4edd-ae42-11995557ff61",
  "message": {
    "id": "01EKJ1534NWK5R02TGWEJN13HA",
    "direction": "TO_APP",
    "contact_message": {"media_card_message": {"url": "https://example.com/x.png", "caption": "Check out my product!"}},
    "channel_identity": {"channel": "WHATSAPP", "identity": "46712312312", "app_id": ""},
    "conversation_id": "01EKJ0KSWXMVDF05MG9TQ20S06",
    "contact_id": "01EKA07N79THJ20WSN6AS30TMW",
    "metadata": "{\"referral\":{\"source_type\":\"ad\",\"source_id\":\"120226305854810726\",\"source_url\":\"https://fb.me/x\",\"ctwa_clid\":\"CLID-SINCH-1\",\"headline\":\"Our new product\",\"body\":\"This is a great product\"}}",
    "accept_time": "2020-10-01T12:10:55.060170Z"
  }
}"#;

    #[test]
    fn seed_004_callback() {
        let SinchCallback::Inbound(item) = parse_sinch_callback(SEED.as_bytes(), 1, 2).unwrap()
        else {
            panic!("inbound expected")
        };
        assert_eq!(item.id, "sinch:01EKJ1534NWK5R02TGWEJN13HA");
        assert_eq!(
            item.route,
            Route::SinchApp("01EB37HMH1M6SV18ASNS3G135H".into())
        );
        let m = sinch_inbound(&item).unwrap();
        assert_eq!(m.customer.wa_id.as_deref(), Some("46712312312"));
        assert_eq!(
            m.customer.user_id.as_deref(),
            Some("01EKA07N79THJ20WSN6AS30TMW")
        );
        assert_eq!(m.sent_at_ms, 1_601_554_253_991);
        assert_eq!(m.message_type.as_deref(), Some("media_card_message"));
        let r = m.referral.unwrap();
        assert_eq!(r.ctwa_clid.as_deref(), Some("CLID-SINCH-1"));
        assert_eq!(r.headline.as_deref(), Some("Our new product"));
        // Received at 1 ms after the epoch, the 2020 event_time is in the future.
        assert!(m.time_unverified);
    }

    /// Issue 14: a signed callback may still carry any `event_time`. Only a time near
    /// the signature's (7 days back, 5 minutes ahead) makes the click a touch.
    #[test]
    fn a_click_counts_as_a_touch_only_near_its_signed_timestamp() {
        let at = 1_601_554_253_991;
        let received = |ms: i64| {
            let SinchCallback::Inbound(mut item) =
                parse_sinch_callback(SEED.as_bytes(), ms, 0).unwrap()
            else {
                panic!("inbound expected")
            };
            item.received_at_ms = ms;
            sinch_inbound(&item).unwrap().time_unverified
        };
        assert!(!received(at), "received when sent");
        assert!(
            !received(at + CLICK_WINDOW_BEFORE_MS),
            "a week later: a Sinch retry"
        );
        assert!(
            received(at + CLICK_WINDOW_BEFORE_MS + 1),
            "back-dated beyond a week"
        );
        assert!(
            !received(at - CLICK_WINDOW_AFTER_MS),
            "five minutes of clock skew"
        );
        assert!(
            received(at - CLICK_WINDOW_AFTER_MS - 1),
            "dated in the future"
        );
        assert!(click_time_fits(0, 0) && !click_time_fits(i64::MIN, i64::MAX));
        assert!(!click_time_fits(i64::MAX, i64::MIN));
    }

    #[test]
    fn the_app_id_names_the_secret_and_must_be_letters_and_digits() {
        assert_eq!(
            sinch_app_id(SEED.as_bytes()).unwrap(),
            "01EB37HMH1M6SV18ASNS3G135H"
        );
        for bad in [
            r#"{}"#,
            r#"{"app_id":""}"#,
            r#"{"app_id":"../webhook-secret"}"#,
            r#"{"app_id":7}"#,
            r#"not json"#,
        ] {
            assert!(sinch_app_id(bad.as_bytes()).is_err(), "{bad}");
        }
        let long = format!(r#"{{"app_id":"{}"}}"#, "A".repeat(65));
        assert!(sinch_app_id(long.as_bytes()).is_err());
    }

    /// A referral field of an unexpected type inside Sinch's metadata string costs that
    /// field only: the click and its click id are kept, the odd fields raw.
    #[test]
    fn odd_referral_fields_never_cost_the_click() {
        let body = SEED
            .replace(
                r#"\"source_id\":\"120226305854810726\""#,
                r#"\"source_id\":120208"#,
            )
            .replace(
                r#"\"headline\":\"Our new product\""#,
                r#"\"headline\":null,\"media_type\":[\"image\"]"#,
            );
        let SinchCallback::Inbound(item) = parse_sinch_callback(body.as_bytes(), 1, 2).unwrap()
        else {
            panic!("inbound expected")
        };
        let r = sinch_inbound(&item)
            .unwrap()
            .referral
            .expect("the click is kept");
        assert_eq!(r.ctwa_clid.as_deref(), Some("CLID-SINCH-1"));
        assert_eq!(r.source_id.as_deref(), Some("120208"));
        assert_eq!(r.headline, None);
        assert_eq!(r.body.as_deref(), Some("This is a great product"));
        assert_eq!(r.odd_fields["media_type"], serde_json::json!(["image"]));
        assert_eq!(r.odd_fields["source_id"], serde_json::json!(120208));
        assert_eq!(r.odd_fields.len(), 2);
    }

    #[test]
    fn bad_metadata_means_no_referral_not_an_error() {
        let body = SEED.replace(
            r#""metadata": "{\"referral\""#,
            r#""metadata": "{\"referral\"[[["#,
        );
        let SinchCallback::Inbound(item) = parse_sinch_callback(body.as_bytes(), 1, 2).unwrap()
        else {
            panic!()
        };
        assert_eq!(sinch_inbound(&item).unwrap().referral, None);
    }

    #[test]
    fn other_callbacks_are_ignored_and_bad_ones_refused() {
        let dr =
            br#"{"app_id":"A","message_delivery_report":{"message_id":"1","status":"DELIVERED"}}"#;
        assert!(
            matches!(parse_sinch_callback(dr, 0, 0).unwrap(), SinchCallback::Ignored(k) if k == "message_delivery_report")
        );
        let no_id = br#"{"app_id":"A","message":{"direction":"TO_APP"}}"#;
        assert!(parse_sinch_callback(no_id, 0, 0).is_err());
        let no_app = br#"{"message":{"id":"1"}}"#;
        assert!(parse_sinch_callback(no_app, 0, 0).is_err());
        assert!(parse_sinch_callback(b"\"str\"", 0, 0).is_err());
        assert!(parse_sinch_callback(b"{", 0, 0).is_err());
    }
}
