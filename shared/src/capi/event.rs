//! Conversion events for the Conversions API for Business Messaging: the allowed event
//! names (with documented aliases), currencies, and the payload Meta receives.

use crate::domain::MessagingChannel;
use serde::Serialize;
use serde_json::{Value, json};

/// Meta's business-messaging allowlist (meta-api.md section 2). Other names (`Lead`,
/// `Contact`, `Schedule`, custom ones) are rejected by Meta with subcode 2804066.
pub const ALLOWED_EVENTS: [&str; 14] = [
    "Purchase",
    "LeadSubmitted",
    "InitiateCheckout",
    "AddToCart",
    "ViewContent",
    "OrderCreated",
    "OrderShipped",
    "OrderDelivered",
    "OrderCanceled",
    "OrderReturned",
    "CartAbandoned",
    "QualifiedLead",
    "RatingProvided",
    "ReviewProvided",
];

/// Documented aliases: the standard pixel name `Lead` and the seed CLI's event types.
pub const ALIASES: [(&str, &str); 3] = [
    ("lead", "LeadSubmitted"),
    ("purchase", "Purchase"),
    ("order", "OrderCreated"),
];

/// Events that carry money: `currency` and `value` are required.
pub const VALUE_REQUIRED: [&str; 1] = ["Purchase"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventName(String);

impl EventName {
    /// Case-insensitive match on the allowlist, then the aliases.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let t = raw.trim();
        if let Some(n) = ALLOWED_EVENTS.iter().find(|n| n.eq_ignore_ascii_case(t)) {
            return Ok(Self(n.to_string()));
        }
        if let Some((_, n)) = ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(t)) {
            return Ok(Self(n.to_string()));
        }
        Err(format!(
            "event_name {t:?} is not accepted by Meta for business messaging; allowed: {} (aliases: Lead -> LeadSubmitted, purchase -> Purchase, order -> OrderCreated)",
            ALLOWED_EVENTS.join(", ")
        ))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn requires_value(&self) -> bool {
        VALUE_REQUIRED.contains(&self.0.as_str())
    }
}

/// Active ISO 4217 codes.
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let c = raw.trim().to_ascii_uppercase();
        if c.len() == 3 && CURRENCIES.split(' ').any(|k| k == c) {
            Ok(Self(c))
        } else {
            Err(format!(
                "currency {raw:?} is not an ISO 4217 code (e.g. INR, USD)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name Meta's onboarding guide ("Conversions API for Business Messaging", ads
/// that click to Instagram Direct) gives the Instagram account's key in `user_data`.
/// One place: a practitioner reports Meta asking for `ig_account_id` instead (see the
/// README's "Channels" section).
pub const INSTAGRAM_ACCOUNT_KEY: &str = "instagram_business_account_id";

/// Who the event is about, in each channel's keys (Meta's onboarding guide): the
/// WhatsApp Business Account and the click id; the Page and the Page-scoped user id;
/// the Instagram account and the Instagram-scoped user id. Never hashed: they are ids
/// Meta gave, not personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "messaging_channel", rename_all = "snake_case")]
pub enum UserKeys {
    Whatsapp {
        waba_id: String,
        ctwa_clid: String,
    },
    Messenger {
        page_id: String,
        psid: String,
    },
    Instagram {
        ig_account_id: String,
        igsid: String,
    },
}

impl UserKeys {
    pub fn channel(&self) -> MessagingChannel {
        match self {
            UserKeys::Whatsapp { .. } => MessagingChannel::Whatsapp,
            UserKeys::Messenger { .. } => MessagingChannel::Messenger,
            UserKeys::Instagram { .. } => MessagingChannel::Instagram,
        }
    }
    /// The click id (WhatsApp only; empty while a conversion waits for its click).
    pub fn ctwa_clid(&self) -> &str {
        match self {
            UserKeys::Whatsapp { ctwa_clid, .. } => ctwa_clid,
            _ => "",
        }
    }
    fn user_data(&self) -> serde_json::Map<String, Value> {
        let pairs = match self {
            UserKeys::Whatsapp { waba_id, ctwa_clid } => [
                ("whatsapp_business_account_id", waba_id),
                ("ctwa_clid", ctwa_clid),
            ],
            UserKeys::Messenger { page_id, psid } => {
                [("page_id", page_id), ("page_scoped_user_id", psid)]
            }
            UserKeys::Instagram {
                ig_account_id,
                igsid,
            } => [(INSTAGRAM_ACCOUNT_KEY, ig_account_id), ("ig_sid", igsid)],
        };
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    }
}

/// A validated conversion, ready to be sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversion {
    pub event_name: EventName,
    pub event_id: String,
    pub event_time: i64,
    pub keys: UserKeys,
    pub currency: Option<Currency>,
    pub value: Option<f64>,
    /// SHA-256 hex of the normalised phone / email.
    pub ph: Option<String>,
    pub em: Option<String>,
    pub custom_data: Option<serde_json::Map<String, Value>>,
}

impl Conversion {
    /// One entry of `data[]` exactly as Meta's Conversions API for Business Messaging
    /// takes it.
    pub fn payload(&self) -> Value {
        let mut user_data = Value::Object(self.keys.user_data());
        if let Some(ph) = &self.ph {
            user_data["ph"] = json!([ph]);
        }
        if let Some(em) = &self.em {
            user_data["em"] = json!([em]);
        }
        let mut event = json!({
            "event_name": self.event_name.as_str(),
            "event_time": self.event_time,
            "event_id": self.event_id,
            "action_source": "business_messaging",
            "messaging_channel": self.keys.channel().as_str(),
            "user_data": user_data,
        });
        let mut custom = self.custom_data.clone().unwrap_or_default();
        if let Some(c) = &self.currency {
            custom.insert("currency".into(), json!(c.as_str()));
        }
        if let Some(v) = self.value {
            custom.insert("value".into(), json!(v));
        }
        if !custom.is_empty() {
            event["custom_data"] = Value::Object(custom);
        }
        event
    }
}

/// A new event id when the caller gives none: `ctwa_` + 32 random hex characters.
pub fn new_event_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    format!("ctwa_{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_refusals() {
        assert_eq!(EventName::parse("Purchase").unwrap().as_str(), "Purchase");
        assert_eq!(
            EventName::parse("leadsubmitted").unwrap().as_str(),
            "LeadSubmitted"
        );
        assert_eq!(EventName::parse("Lead").unwrap().as_str(), "LeadSubmitted");
        assert_eq!(EventName::parse("purchase").unwrap().as_str(), "Purchase");
        for bad in [
            "Contact",
            "Schedule",
            "CompleteRegistration",
            "SubmitApplication",
            "Subscribe",
            "MyCustom",
            "",
        ] {
            let e = EventName::parse(bad).unwrap_err();
            assert!(
                e.contains("LeadSubmitted") && e.contains("ReviewProvided"),
                "{e}"
            );
        }
        assert!(EventName::parse("Purchase").unwrap().requires_value());
    }

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse(" inr ").unwrap().as_str(), "INR");
        for bad in ["", "RUPEE", "XXX", "US", "usd1"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_shape() {
        let c = Conversion {
            event_name: EventName::parse("Purchase").unwrap(),
            event_id: "e1".into(),
            event_time: 100,
            keys: UserKeys::Whatsapp {
                waba_id: "W".into(),
                ctwa_clid: "CLID".into(),
            },
            currency: Some(Currency::parse("INR").unwrap()),
            value: Some(1499.0),
            ph: Some("h".into()),
            em: None,
            custom_data: None,
        };
        let p = c.payload();
        assert_eq!(p["action_source"], "business_messaging");
        assert_eq!(p["messaging_channel"], "whatsapp");
        assert_eq!(p["user_data"]["whatsapp_business_account_id"], "W");
        assert_eq!(p["user_data"]["ctwa_clid"], "CLID");
        assert_eq!(p["user_data"]["ph"], json!(["h"]));
        assert_eq!(
            p["custom_data"],
            json!({"currency": "INR", "value": 1499.0})
        );
    }

    /// The samples of Meta's onboarding guide for Messenger and Instagram.
    #[test]
    fn messenger_and_instagram_payloads_carry_their_channel_keys() {
        let mut c = Conversion {
            event_name: EventName::parse("Purchase").unwrap(),
            event_id: "e1".into(),
            event_time: 1_675_999_999,
            keys: UserKeys::Messenger {
                page_id: "PAGE".into(),
                psid: "PSID".into(),
            },
            currency: Some(Currency::parse("USD").unwrap()),
            value: Some(123.0),
            ph: None,
            em: None,
            custom_data: None,
        };
        let p = c.payload();
        assert_eq!(p["messaging_channel"], "messenger");
        assert_eq!(
            p["user_data"],
            json!({"page_id": "PAGE", "page_scoped_user_id": "PSID"})
        );
        c.keys = UserKeys::Instagram {
            ig_account_id: "IG".into(),
            igsid: "IGSID".into(),
        };
        let p = c.payload();
        assert_eq!(p["messaging_channel"], "instagram");
        assert_eq!(
            p["user_data"],
            json!({"instagram_business_account_id": "IG", "ig_sid": "IGSID"})
        );
        assert_eq!(c.keys.ctwa_clid(), "");
    }
}
