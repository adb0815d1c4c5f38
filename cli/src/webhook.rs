//! `ctwa webhook simulate`: a Meta Cloud API webhook with one Click-to-WhatsApp text
//! message (the shape of `events/webhooks/cloud/text_with_referral_image_ad.json`), or
//! a Messenger (`object: "page"`) / Instagram (`object: "instagram"`) webhook with one
//! customer message opened from an ad (Meta's Messenger Platform "messages" webhook
//! reference, "Webhooks for Instagram Messaging"), signed like Meta signs it:
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

pub struct Message<'a> {
    pub phone_number_id: &'a str,
    pub waba_id: Option<&'a str>,
    /// Digits only.
    pub wa_id: &'a str,
    pub name: &'a str,
    pub text: &'a str,
    pub wamid: &'a str,
    pub timestamp: i64,
    /// `(ctwa_clid, source_id)`; `None` for a plain message.
    pub referral: Option<(&'a str, &'a str)>,
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Without an OS random source there is nothing sensible to do but stop.
    getrandom::fill(&mut b).expect("the OS random source is available");
    b
}

/// A click id shaped like Meta's (opaque, base64url).
pub fn new_clid() -> String {
    format!(
        "Aff-sim-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<36>())
    )
}

pub fn new_wamid() -> String {
    format!(
        "wamid.{}",
        base64::engine::general_purpose::STANDARD.encode(random_bytes::<24>())
    )
}

pub fn body(m: &Message) -> Vec<u8> {
    let mut message = json!({
        "from": m.wa_id,
        "id": m.wamid,
        "timestamp": m.timestamp.to_string(),
        "type": "text",
        "text": {"body": m.text},
    });
    if let Some((clid, source_id)) = m.referral {
        message["referral"] = json!({
            "source_url": "https://fb.me/3cr4Wqqkv",
            "source_id": source_id,
            "source_type": "ad",
            "headline": "Chat with us",
            "body": "Summer Succulents are here!",
            "media_type": "image",
            "image_url": "https://scontent.xx.fbcdn.net/v/t45.1",
            "ctwa_clid": clid,
            "welcome_message": {"text": "Hi there! Let us know how we can help!"},
        });
    }
    let mut entry = json!({
        "changes": [{
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": m.phone_number_id},
                "contacts": [{"profile": {"name": m.name}, "wa_id": m.wa_id}],
                "messages": [message],
            },
        }],
    });
    if let Some(w) = m.waba_id {
        entry["id"] = Value::String(w.to_string());
    }
    json!({"object": "whatsapp_business_account", "entry": [entry]})
        .to_string()
        .into_bytes()
}

/// One customer message to a Page or an Instagram account.
pub struct MessagingMessage<'a> {
    /// `page` (Messenger) or `instagram`.
    pub object: &'a str,
    /// The Page id or the Instagram account id: `entry[].id` and `recipient.id`.
    pub business_id: &'a str,
    /// The PSID or IGSID: `sender.id`.
    pub sender_id: &'a str,
    pub mid: &'a str,
    pub text: &'a str,
    /// Milliseconds, as Meta sends them on these webhooks.
    pub timestamp_ms: i64,
    /// The ad id of the referral (`source: "ADS"`); `None` for a plain message.
    pub ad_id: Option<&'a str>,
}

/// A message id shaped like Messenger's (`m_` and opaque base64url).
pub fn new_mid() -> String {
    format!(
        "m_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<24>())
    )
}

/// `{"object", "entry": [{"id", "time", "messaging": [{"sender", "recipient",
/// "timestamp", "message": {"mid", "text", "referral"?}}]}]}`.
pub fn messaging_body(m: &MessagingMessage) -> Vec<u8> {
    let mut message = json!({"mid": m.mid, "text": m.text});
    if let Some(ad_id) = m.ad_id {
        message["referral"] = json!({
            "ref": "summer-sale",
            "ad_id": ad_id,
            "source": "ADS",
            "type": "OPEN_THREAD",
            "ads_context_data": {
                "ad_title": "Summer Succulents are here!",
                "photo_url": "https://scontent.xx.fbcdn.net/v/t45.1",
            },
        });
    }
    json!({
        "object": m.object,
        "entry": [{
            "id": m.business_id,
            "time": m.timestamp_ms,
            "messaging": [{
                "sender": {"id": m.sender_id},
                "recipient": {"id": m.business_id},
                "timestamp": m.timestamp_ms,
                "message": message,
            }],
        }],
    })
    .to_string()
    .into_bytes()
}

pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn body_is_a_ctwa_message() {
        let b = body(&Message {
            phone_number_id: "123",
            waba_id: Some("999"),
            wa_id: "919876543210",
            name: "A",
            text: "hi",
            wamid: "wamid.X",
            timestamp: 1_800_000_000,
            referral: Some(("Aff-1", "120")),
        });
        let v: Value = serde_json::from_slice(&b).unwrap();
        let value = &v["entry"][0]["changes"][0]["value"];
        assert_eq!(v["entry"][0]["id"], "999");
        assert_eq!(value["metadata"]["phone_number_id"], "123");
        assert_eq!(value["messages"][0]["referral"]["ctwa_clid"], "Aff-1");
        assert_eq!(value["messages"][0]["timestamp"], "1800000000");
        assert!(new_clid().starts_with("Aff-sim-") && new_wamid().starts_with("wamid."));
    }

    #[test]
    fn messaging_body_is_metas_shape() {
        let m = MessagingMessage {
            object: "instagram",
            business_id: "17841400000000001",
            sender_id: "IGSID1",
            mid: "m_1",
            text: "hi",
            timestamp_ms: 1_800_000_000_123,
            ad_id: Some("120"),
        };
        let v: Value = serde_json::from_slice(&messaging_body(&m)).unwrap();
        assert_eq!(v["object"], "instagram");
        let entry = &v["entry"][0];
        assert_eq!(entry["id"], "17841400000000001");
        let e = &entry["messaging"][0];
        assert_eq!(e["sender"]["id"], "IGSID1");
        assert_eq!(e["recipient"]["id"], "17841400000000001");
        assert_eq!(e["timestamp"], 1_800_000_000_123_i64);
        assert_eq!(e["message"]["mid"], "m_1");
        let r = &e["message"]["referral"];
        assert_eq!(
            (&r["ad_id"], &r["source"], &r["type"]),
            (&json!("120"), &json!("ADS"), &json!("OPEN_THREAD"))
        );
        assert!(r["ads_context_data"]["ad_title"].is_string());
        let plain = MessagingMessage { ad_id: None, ..m };
        let v: Value = serde_json::from_slice(&messaging_body(&plain)).unwrap();
        assert!(
            v["entry"][0]["messaging"][0]["message"]
                .get("referral")
                .is_none()
        );
        assert!(new_mid().starts_with("m_"));
    }
}
