//! Domain types: what a click, a conversation, a customer and an account are, parsed
//! once so a value of the type is known-good everywhere after.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The channel a message came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Meta's WhatsApp Cloud API webhook.
    Cloud,
    /// Sinch Conversation API callback.
    Sinch,
    /// Meta's Messenger Platform webhook (`object: "page"`): a Facebook Page's chats.
    Messenger,
    /// Meta's Instagram Messaging webhook (`object: "instagram"`): an Instagram
    /// professional account's Direct chats.
    Instagram,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Cloud => "cloud",
            Channel::Sinch => "sinch",
            Channel::Messenger => "messenger",
            Channel::Instagram => "instagram",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cloud" => Some(Channel::Cloud),
            "sinch" => Some(Channel::Sinch),
            "messenger" => Some(Channel::Messenger),
            "instagram" => Some(Channel::Instagram),
            _ => None,
        }
    }
    /// The `messaging_channel` of Meta's Conversions API for Business Messaging.
    pub fn messaging_channel(self) -> MessagingChannel {
        match self {
            Channel::Cloud | Channel::Sinch => MessagingChannel::Whatsapp,
            Channel::Messenger => MessagingChannel::Messenger,
            Channel::Instagram => MessagingChannel::Instagram,
        }
    }
}

/// The app a conversation runs in, as Meta's Conversions API for Business Messaging
/// names it (`messaging_channel`). WhatsApp arrives through the Cloud API or Sinch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessagingChannel {
    Whatsapp,
    Messenger,
    Instagram,
}

impl MessagingChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            MessagingChannel::Whatsapp => "whatsapp",
            MessagingChannel::Messenger => "messenger",
            MessagingChannel::Instagram => "instagram",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "whatsapp" => Some(Self::Whatsapp),
            "messenger" => Some(Self::Messenger),
            "instagram" => Some(Self::Instagram),
            _ => None,
        }
    }
    /// The permission Meta requires on the token to send this channel's events
    /// (Meta's onboarding guide, "Conversions API for Business Messaging").
    pub fn events_permission(self) -> &'static str {
        match self {
            MessagingChannel::Whatsapp => "whatsapp_business_manage_events",
            MessagingChannel::Messenger => "page_events",
            MessagingChannel::Instagram => "instagram_manage_events",
        }
    }
    /// Whether a token granted `scopes` holds [`Self::events_permission`].
    pub fn permission_granted(self, scopes: &[String]) -> bool {
        scopes.iter().any(|s| s == self.events_permission())
    }
}

/// A PSID or IGSID as an API caller gives it (Meta's webhooks' `sender.id`): trimmed,
/// 1 to 128 of `[A-Za-z0-9_.-]` (Meta's are digits); `None` otherwise.
pub fn scoped_user_id(raw: &str) -> Option<&str> {
    let t = raw.trim();
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(t)
}

/// The rule every conversation id this service makes keeps (`c_` + hex, see
/// [`conversation_id`]), loosened to 1 to 64 of `[A-Za-z0-9_]`: anything else is no
/// conversation and is not looked up.
pub fn is_conversation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where an inbound webhook is routed: Meta's `phone_number_id`, Sinch's `app_id`, a
/// Facebook Page id (Messenger) or an Instagram professional account id (Instagram
/// Direct).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    PhoneNumberId(String),
    SinchApp(String),
    Page(String),
    Instagram(String),
}

impl Route {
    const PREFIXES: [&'static str; 4] = ["pnid:", "sinch:", "page:", "ig:"];

    pub fn key(&self) -> String {
        match self {
            Route::PhoneNumberId(id) => format!("pnid:{id}"),
            Route::SinchApp(id) => format!("sinch:{id}"),
            Route::Page(id) => format!("page:{id}"),
            Route::Instagram(id) => format!("ig:{id}"),
        }
    }
    pub fn parse(key: &str) -> Option<Self> {
        let (i, id) = Self::PREFIXES
            .iter()
            .enumerate()
            .find_map(|(i, p)| key.strip_prefix(p).map(|id| (i, id)))?;
        if id.is_empty() {
            return None;
        }
        let id = id.to_string();
        Some(match i {
            0 => Route::PhoneNumberId(id),
            1 => Route::SinchApp(id),
            2 => Route::Page(id),
            _ => Route::Instagram(id),
        })
    }
    /// The API field that names this route (`phone_number_id`, `sinch_app_id`, `page_id`,
    /// `instagram_account_id`).
    pub fn field(&self) -> &'static str {
        match self {
            Route::PhoneNumberId(_) => "phone_number_id",
            Route::SinchApp(_) => "sinch_app_id",
            Route::Page(_) => "page_id",
            Route::Instagram(_) => "instagram_account_id",
        }
    }
    /// What this route is called in messages.
    pub fn noun(&self) -> &'static str {
        match self {
            Route::PhoneNumberId(_) => "phone number id",
            Route::SinchApp(_) => "Sinch app",
            Route::Page(_) => "Page",
            Route::Instagram(_) => "Instagram account",
        }
    }
    /// The Conversions API channel of the conversations that come through this route.
    pub fn messaging_channel(&self) -> MessagingChannel {
        match self {
            Route::PhoneNumberId(_) | Route::SinchApp(_) => MessagingChannel::Whatsapp,
            Route::Page(_) => MessagingChannel::Messenger,
            Route::Instagram(_) => MessagingChannel::Instagram,
        }
    }
    /// The business line the conversation is with (phone number id, the Sinch app, the
    /// Page, the Instagram account).
    pub fn business_id(&self) -> &str {
        match self {
            Route::PhoneNumberId(id)
            | Route::SinchApp(id)
            | Route::Page(id)
            | Route::Instagram(id) => id,
        }
    }
}

/// The ad data Meta attaches to the first message after a Click-to-WhatsApp tap.
/// `ctwa_clid` is absent for WhatsApp Status placements and is never filled from
/// `source_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctwa_clid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Older (On-Premises API) shape: `"image": {"id": ...}` instead of `image_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome_message: Option<String>,
    /// Messenger / Instagram: the `ref` parameter the ad was set up with.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_param: Option<String>,
    /// Messenger: `ads_context_data.post_id`, the ad's post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_id: Option<String>,
    /// The referral fields that came with an unexpected JSON type (a number, a list, an
    /// object where text was expected), each exactly as sent. The click is kept without
    /// them, and nothing of them is lost. A referral that is not a JSON object at all is
    /// kept whole under `referral`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub odd_fields: BTreeMap<String, serde_json::Value>,
}

/// The customer side of a conversation: on WhatsApp the phone (`wa_id`) when Meta gives
/// it, else the business-scoped user id; on Messenger the Page-scoped user id (PSID); on
/// Instagram the Instagram-scoped user id (IGSID). Customers are keyed on `wa_id`,
/// falling back to `user_id`; a PSID or IGSID is its own key (it names one person for
/// one Page / one Instagram account only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub igsid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A PSID's customer key.
pub fn psid_key(psid: &str) -> String {
    format!("psid:{}", psid.trim())
}
/// An IGSID's customer key.
pub fn igsid_key(igsid: &str) -> String {
    format!("igsid:{}", igsid.trim())
}

impl Customer {
    /// `wa:<digits>`, `u:<user id>`, `psid:<id>` or `igsid:<id>`; `None` when the
    /// message names no customer at all.
    pub fn key(&self) -> Option<String> {
        if let Some(phone) = self.wa_id.as_deref().and_then(|w| Phone::parse(w).ok()) {
            return Some(phone.customer_key());
        }
        let some = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
        };
        if let Some(u) = some(&self.user_id) {
            return Some(format!("u:{u}"));
        }
        if let Some(p) = some(&self.psid) {
            return Some(psid_key(&p));
        }
        some(&self.igsid).map(|i| igsid_key(&i))
    }
}

/// One inbound customer message, whatever the channel, as the capture step needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub channel: Channel,
    pub message_id: String,
    pub route: Route,
    pub customer: Customer,
    /// When the customer sent it (unix millis): Meta's `timestamp`, Sinch's `event_time`;
    /// the time we received it when the payload has none.
    pub sent_at_ms: i64,
    /// `sent_at_ms` lies outside the window around the callback's signed timestamp
    /// (Sinch: [`crate::sinch::click_time_fits`]): its click is kept in the history but
    /// never becomes a first or last touch. Always false for Meta's own webhooks.
    pub time_unverified: bool,
    pub message_type: Option<String>,
    pub referral: Option<Referral>,
}

/// Deterministic conversation id: one business line x one customer within one account.
/// Deterministic so that concurrent first messages all land on the same record.
pub fn conversation_id(account_id: &str, business_id: &str, customer_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(account_id.as_bytes());
    h.update([0]);
    h.update(business_id.as_bytes());
    h.update([0]);
    h.update(customer_key.as_bytes());
    format!("c_{}", &hex::encode(h.finalize())[..24])
}

/// A customer's phone number, parsed once with the normalisation of Meta's business SDK
/// (`facebook_business/adobjects/serverside/normalize.py`), so that the number a click
/// was captured under, the number a conversion is looked up by and the number hashed
/// for Meta are the same digits whatever the spelling:
/// lowercase and trim; spaces, dashes, dots and parentheses dropped; a leading `+` and up
/// to two zeros stripped, twice (so `+91`, `0091`, `+0091`, and a trunk `0` all go);
/// then 7 to 15 digits (E.164's maximum) not starting with 0. Dots are dropped here too
/// (the SDK refuses them, so nothing it accepts changes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error(
        "invalid phone number: use the international format with the country code, e.g. +919876543210"
    )]
    Invalid,
    #[error(
        "the phone number must be international: + then the country code and number, e.g. +919876543210"
    )]
    NotInternational,
}

/// Python's `re.sub(r"^\+?0{0,2}", "", s)`.
fn strip_plus_and_two_zeros(s: &str) -> &str {
    let s = s.strip_prefix('+').unwrap_or(s);
    let s = s.strip_prefix('0').unwrap_or(s);
    s.strip_prefix('0').unwrap_or(s)
}

fn without_separators(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '-' | '.' | '(' | ')')))
        .collect()
}

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let v = without_separators(raw);
        // The SDK strips twice (normalize, then get_international_number).
        let v = strip_plus_and_two_zeros(strip_plus_and_two_zeros(&v));
        if v.starts_with('0')
            || !(7..=15).contains(&v.len())
            || !v.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(PhoneError::Invalid);
        }
        Ok(Self(v.to_string()))
    }

    /// A number that must be written internationally (an ad's WhatsApp number): `+` or
    /// `00` then a country code, which never starts with 0.
    pub fn parse_international(raw: &str) -> Result<Self, PhoneError> {
        let v = without_separators(raw);
        let rest = v
            .strip_prefix('+')
            .or_else(|| v.strip_prefix("00"))
            .ok_or(PhoneError::NotInternational)?;
        if rest.starts_with('0') || rest.len() < 8 {
            return Err(PhoneError::NotInternational);
        }
        Self::parse(rest)
    }

    /// The digits, country code first (what Meta's `wa_id` is, and what is hashed).
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// `+` and the digits.
    pub fn e164(&self) -> String {
        format!("+{}", self.0)
    }

    /// The customer key a WhatsApp customer is kept under (`wa:<digits>`).
    pub fn customer_key(&self) -> String {
        format!("wa:{}", self.0)
    }

    /// Every spelling of this number WhatsApp may use as the customer's `wa_id`, this one
    /// first. A `wa_id` is not always the E.164 number:
    /// - Mexico: mobiles are `52` + 10 digits in E.164 and `521` + 10 digits as WhatsApp
    ///   ids (the old mobile prefix `1`; e.g. loqui/im#96, evolution-api#447).
    /// - Argentina: mobiles are `54 9` + 10 digits; the `9` is often left out when the
    ///   number is written (`54` + 10 digits).
    /// - Brazil: mobiles gained a ninth digit (`55` + area + `9` + 8 digits, 2012-2016);
    ///   accounts registered before keep the 8-digit id, so `55 DD 9XXXXXXXX` and
    ///   `55 DD XXXXXXXX` (8 digits starting 6-9, a mobile) are one customer
    ///   (wwebjs/whatsapp-web.js#596).
    pub fn whatsapp_forms(&self) -> Vec<Phone> {
        let d = self.0.as_str();
        let b = d.as_bytes();
        let other = match d.len() {
            12 if d.starts_with("52") => Some(format!("521{}", &d[2..])),
            13 if d.starts_with("521") => Some(format!("52{}", &d[3..])),
            12 if d.starts_with("54") && !d.starts_with("549") => Some(format!("549{}", &d[2..])),
            13 if d.starts_with("549") => Some(format!("54{}", &d[3..])),
            // 55 + area (two digits, no 0) + 9 + 8 digits, and the 8-digit form.
            13 if d.starts_with("55") && b[2] != b'0' && b[4] == b'9' => {
                Some(format!("{}{}", &d[..4], &d[5..]))
            }
            12 if d.starts_with("55") && b[2] != b'0' && matches!(b[4], b'6'..=b'9') => {
                Some(format!("{}9{}", &d[..4], &d[4..]))
            }
            _ => None,
        };
        let mut forms = vec![self.clone()];
        forms.extend(other.map(Phone));
        forms
    }
}

/// The customer keys that name the same customer as `key`: for a WhatsApp number every
/// spelling of [`Phone::whatsapp_forms`], else `key` alone.
pub fn equivalent_customer_keys(key: &str) -> Vec<String> {
    match key.strip_prefix("wa:").map(Phone::parse) {
        Some(Ok(p)) => p.whatsapp_forms().iter().map(Phone::customer_key).collect(),
        _ => vec![key.to_string()],
    }
}

/// A click as kept in the customer's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    pub conversation_id: String,
    pub message_id: String,
    pub channel: Channel,
    pub clicked_at_ms: i64,
    /// The click's time could not be vouched for (see
    /// [`InboundMessage::time_unverified`]): history only, never a first or last touch.
    pub time_unverified: bool,
    pub referral: Referral,
}

impl Click {
    /// Whether a conversion can be attributed to this click: on WhatsApp a click with a
    /// click id (a Status placement has none); on Messenger and Instagram an ad's click
    /// (Meta names the customer by the PSID / IGSID, no click id exists there). Never a
    /// click whose time could not be vouched for.
    pub fn is_attributable(&self) -> bool {
        !self.time_unverified && attributable(self.channel, &self.referral)
    }
}

/// Whether a referral of `channel` is an ad click a conversion can be attributed to.
pub fn attributable(channel: Channel, r: &Referral) -> bool {
    match channel {
        Channel::Cloud | Channel::Sinch => r.ctwa_clid.is_some(),
        Channel::Messenger | Channel::Instagram => r.source_id.is_some(),
    }
}

/// First-touch attribution captured on a conversation (one-shot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstTouch {
    /// WhatsApp's click id; `None` on Messenger and Instagram (no click id there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctwa_clid: Option<String>,
    pub captured_at_ms: i64,
    pub clicked_at_ms: i64,
    pub message_id: String,
    pub referral: Referral,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub account_id: String,
    pub channel: Channel,
    pub business_id: String,
    pub customer_key: String,
    pub customer: Customer,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub first_touch: Option<FirstTouch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub waba_id: Option<String>,
    #[serde(default)]
    pub phone_number_ids: Vec<String>,
    #[serde(default)]
    pub sinch_app_id: Option<String>,
    /// The Facebook Pages linked to it (Messenger), kept in step with their routes.
    #[serde(default)]
    pub page_ids: Vec<String>,
    /// The Instagram professional accounts linked to it (Instagram Direct).
    #[serde(default)]
    pub instagram_account_ids: Vec<String>,
    pub created_at_ms: i64,
}

impl Account {
    pub fn routes(&self) -> Vec<Route> {
        let mut r: Vec<Route> = self
            .phone_number_ids
            .iter()
            .map(|p| Route::PhoneNumberId(p.clone()))
            .collect();
        if let Some(app) = &self.sinch_app_id {
            r.push(Route::SinchApp(app.clone()));
        }
        r.extend(self.page_ids.iter().map(|p| Route::Page(p.clone())));
        r.extend(
            self.instagram_account_ids
                .iter()
                .map(|i| Route::Instagram(i.clone())),
        );
        r
    }
}

/// A Meta-detected event in a CTWA chat (`automatic_events` webhook field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutomaticEvent {
    pub id: String,
    pub event_name: String,
    pub occurred_at_ms: i64,
    pub ctwa_clid: Option<String>,
    pub custom_data: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_spellings_are_one_number() {
        for s in [
            "+91 98765-43210",
            "919876543210",
            "+91 (98765) 43210",
            "(+91) 98765 43210",
            " 91.98765.43210 ",
            "0091 98765 43210",
            "+0091-98765-43210",
            "++919876543210",
        ] {
            let p = Phone::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(p.digits(), "919876543210", "{s}");
            assert_eq!(p.customer_key(), "wa:919876543210");
        }
        // The SDK strips a trunk zero too.
        assert_eq!(
            Phone::parse("0 98765 43210").unwrap().digits(),
            "9876543210"
        );
        for s in [
            "",
            "+",
            "123456",
            "1234567890123456",
            "91abc",
            "9+1234567",
            "+00000",
            "0000 0 98765 43210",
        ] {
            assert!(Phone::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn an_ads_number_must_be_international() {
        assert_eq!(
            Phone::parse_international("+91 98765 43210")
                .unwrap()
                .e164(),
            "+919876543210"
        );
        assert_eq!(
            Phone::parse_international("0091 98765 43210")
                .unwrap()
                .digits(),
            "919876543210"
        );
        for s in ["9876543210", "+0123456789", "+1234567", "0 98765 43210"] {
            assert!(Phone::parse_international(s).is_err(), "{s}");
        }
    }

    #[test]
    fn whatsapp_ids_that_differ_from_e164_are_one_customer() {
        let forms = |raw: &str| -> Vec<String> {
            Phone::parse(raw)
                .unwrap()
                .whatsapp_forms()
                .iter()
                .map(|p| p.digits().to_string())
                .collect()
        };
        // Mexico: E.164 and the 521 WhatsApp id, both ways.
        assert_eq!(forms("+52 55 1234 5678"), ["525512345678", "5215512345678"]);
        assert_eq!(forms("5215512345678"), ["5215512345678", "525512345678"]);
        // Argentina: with and without the mobile 9.
        assert_eq!(
            forms("+54 9 11 2345 6789"),
            ["5491123456789", "541123456789"]
        );
        assert_eq!(forms("+54 11 2345 6789"), ["541123456789", "5491123456789"]);
        // Brazil: the ninth digit, both ways; a landline (starts 2-5) has no other form.
        assert_eq!(
            forms("+55 31 99688 3193"),
            ["5531996883193", "553196883193"]
        );
        assert_eq!(forms("552164180266"), ["552164180266", "5521964180266"]);
        assert_eq!(forms("+55 11 3456 7890"), ["551134567890"]);
        // Everyone else: one form.
        assert_eq!(forms("+91 98765 43210"), ["919876543210"]);
        assert_eq!(forms("+1 650 555 1234"), ["16505551234"]);
        assert_eq!(
            equivalent_customer_keys("wa:5215512345678"),
            ["wa:5215512345678", "wa:525512345678"]
        );
        assert_eq!(equivalent_customer_keys("u:US.1"), ["u:US.1"]);
    }

    #[test]
    fn customer_key_prefers_phone_then_user_id() {
        let both = Customer {
            wa_id: Some("16505551234".into()),
            user_id: Some("US.1".into()),
            name: None,
            ..Customer::default()
        };
        assert_eq!(both.key().as_deref(), Some("wa:16505551234"));
        let user = Customer {
            wa_id: None,
            user_id: Some("US.1".into()),
            name: None,
            ..Customer::default()
        };
        assert_eq!(user.key().as_deref(), Some("u:US.1"));
        assert_eq!(Customer::default().key(), None);
    }

    #[test]
    fn conversation_ids_are_stable_and_distinct() {
        let a = conversation_id("acct", "pn1", "wa:1");
        assert_eq!(a, conversation_id("acct", "pn1", "wa:1"));
        assert_ne!(a, conversation_id("acct2", "pn1", "wa:1"));
        assert_ne!(a, conversation_id("acct", "pn2", "wa:1"));
        assert_eq!(a.len(), 26);
        // No ambiguity from concatenation.
        assert_ne!(
            conversation_id("ab", "c", "d"),
            conversation_id("a", "bc", "d")
        );
    }

    #[test]
    fn routes_round_trip() {
        for r in [
            Route::PhoneNumberId("1".into()),
            Route::SinchApp("A".into()),
        ] {
            assert_eq!(Route::parse(&r.key()), Some(r));
        }
        assert_eq!(Route::parse("pnid:"), None);
        assert_eq!(Route::parse("x:1"), None);
    }
}
