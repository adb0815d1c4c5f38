//! A conversion as the API receives it, parsed once: the rules of an event Meta will
//! take (name, value and currency, event id, time window, sizes), the account's
//! context (connection, WABA, dataset) and the click it is attributed to. Every entry
//! point (single, batch, trigger) goes through [`prepare`].

use super::event::{Conversion, Currency, EventName, new_event_id};
use super::pii::{hash_email, hash_phone};
use super::{
    Attribution, CapiDeps, CapiError, LastClick, MAX_EVENT_AGE_SECS, last_click_for_customer,
    last_click_in_conversation, no_click_reason, waba_for, window_warning,
};

/// The answer's reason when the customer's clicks all came after the conversion.
pub const NO_CLICK_BEFORE: &str = "no_ctwa_click_before_event_time";
use super::event::UserKeys;
use crate::domain::{
    Conversation, MessagingChannel, Phone, Route, igsid_key, is_conversation_id, psid_key,
    scoped_user_id,
};
use crate::store::CapiSettings;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A conversion as the API receives it (single, in a batch, or made by a trigger).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionBody {
    #[serde(default, alias = "accountId")]
    pub account_id: Option<String>,
    #[serde(default, alias = "conversationId")]
    pub conversation_id: Option<String>,
    #[serde(
        default,
        alias = "phone_number",
        alias = "phoneE164",
        alias = "phone_e164"
    )]
    pub phone: Option<String>,
    /// The customer's business-scoped user id (BSUID), when the phone is not known.
    #[serde(default, alias = "userId")]
    pub user_id: Option<String>,
    /// A Messenger customer: the Page-scoped user id of the webhooks' `sender.id`.
    #[serde(default, alias = "page_scoped_user_id")]
    pub psid: Option<String>,
    /// An Instagram customer: the Instagram-scoped user id of the webhooks' `sender.id`.
    #[serde(default, alias = "ig_sid")]
    pub igsid: Option<String>,
    /// `whatsapp`, `messenger` or `instagram`: checked against the customer's channel
    /// when given.
    #[serde(default)]
    pub messaging_channel: Option<String>,
    #[serde(alias = "eventName")]
    pub event_name: String,
    #[serde(default, alias = "eventId")]
    pub event_id: Option<String>,
    #[serde(default, alias = "eventTime")]
    pub event_time: Option<i64>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, alias = "testCode", alias = "testEventCode")]
    pub test_event_code: Option<String>,
    #[serde(default, alias = "customData")]
    pub custom_data: Option<Map<String, Value>>,
}

/// A conversion checked and resolved to its click, or the reason it has none.
pub enum Prepared {
    Ready(Box<Ready>),
    NoClick(&'static str),
    /// No click yet: the conversion waits for its customer's click.
    Wait(Box<Waiting>),
}

/// A conversion with no click yet (its `ctwa_clid` is filled in when the click lands).
pub struct Waiting {
    pub conversion: Conversion,
    pub dataset_id: String,
    /// The customer whose click it waits for.
    pub customer_key: String,
    /// When given by conversation: only that conversation's clicks count.
    pub conversation_id: Option<String>,
    pub test_event_code: Option<String>,
}

pub struct Ready {
    pub conversion: Conversion,
    pub dataset_id: String,
    pub attribution: Attribution,
    pub warnings: Vec<String>,
    pub test_event_code: Option<String>,
}

pub struct AccountContext {
    pub account_id: String,
    /// The WABA and its dataset (WhatsApp conversions), or why there are none.
    whatsapp: WhatsappTarget,
    /// The datasets of the account's Pages and Instagram accounts, by route key.
    channel_datasets: std::collections::BTreeMap<String, String>,
    /// What the stored token was granted (`debug_token`'s scopes).
    scopes: Vec<String>,
}

/// Where the account's WhatsApp conversions go, or why they cannot go anywhere.
enum WhatsappTarget {
    Ready {
        waba_id: String,
        dataset_id: String,
    },
    NoWaba,
    WabaNotGranted {
        waba_id: String,
        granted: Vec<String>,
    },
    NoDataset,
}

impl AccountContext {
    /// An account that sends WhatsApp conversions only, under `waba_id` to `dataset_id`
    /// (unit tests of the domain).
    #[cfg(any(test, feature = "test-support"))]
    pub fn whatsapp_only(account_id: &str, waba_id: &str, dataset_id: &str) -> Self {
        Self {
            account_id: account_id.into(),
            whatsapp: WhatsappTarget::Ready {
                waba_id: waba_id.into(),
                dataset_id: dataset_id.into(),
            },
            channel_datasets: Default::default(),
            scopes: Vec::new(),
        }
    }

    /// The WABA and the dataset of a WhatsApp conversion.
    fn whatsapp(&self) -> Result<(&str, &str), CapiError> {
        match &self.whatsapp {
            WhatsappTarget::Ready {
                waba_id,
                dataset_id,
            } => Ok((waba_id, dataset_id)),
            WhatsappTarget::NoWaba => Err(CapiError::NoWaba),
            WhatsappTarget::WabaNotGranted { waba_id, granted } => Err(CapiError::WabaNotGranted {
                waba_id: waba_id.clone(),
                granted: granted.clone(),
            }),
            WhatsappTarget::NoDataset => Err(CapiError::NoDataset),
        }
    }
    /// The dataset of a Messenger / Instagram conversion, once the token holds the
    /// channel's permission (checked here, before Meta is called).
    fn channel_target(&self, route: &Route) -> Result<&str, CapiError> {
        super::require_events_permission(route.messaging_channel(), &self.scopes)?;
        self.channel_datasets
            .get(&route.key())
            .map(String::as_str)
            .ok_or_else(|| CapiError::NoChannelDataset {
                route: route.clone(),
            })
    }
}

/// The account's Meta connection, WABA and datasets. An account that has no Page or
/// Instagram dataset is refused at once when its WhatsApp target is missing (nothing
/// else could be sent); otherwise that refusal is each WhatsApp conversion's.
pub async fn context(deps: &CapiDeps, account_id: &str) -> Result<AccountContext, CapiError> {
    let conn = deps.meta.live_connection(account_id).await?;
    let settings = deps
        .settings
        .get_capi(account_id)
        .await?
        .unwrap_or_default();
    let whatsapp = match waba_for(deps, account_id, Some(&conn)).await {
        Ok(waba_id) => match settings.dataset_id.clone() {
            Some(dataset_id) => WhatsappTarget::Ready {
                waba_id,
                dataset_id,
            },
            None => WhatsappTarget::NoDataset,
        },
        Err(CapiError::NoWaba) => WhatsappTarget::NoWaba,
        Err(CapiError::WabaNotGranted { waba_id, granted }) => {
            WhatsappTarget::WabaNotGranted { waba_id, granted }
        }
        Err(e) => return Err(e),
    };
    let ctx = AccountContext {
        account_id: account_id.to_string(),
        whatsapp,
        channel_datasets: settings.channel_datasets,
        scopes: conn.scopes,
    };
    if ctx.channel_datasets.is_empty() {
        ctx.whatsapp()?;
    }
    Ok(ctx)
}

/// A PSID / IGSID as given ([`scoped_user_id`]).
fn scoped_id<'a>(raw: &'a str, field: &str) -> Result<&'a str, CapiError> {
    scoped_user_id(raw).ok_or_else(|| {
        CapiError::invalid(format!(
            "{field} must be the id Meta's webhook gave as sender.id (1 to 128 letters, digits, _ - .)"
        ))
    })
}

pub fn valid_event_id(raw: Option<String>) -> Result<String, CapiError> {
    match raw {
        None => Ok(new_event_id()),
        Some(id) => {
            let id = id.trim().to_string();
            if id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
            {
                return Err(CapiError::invalid(
                    "event_id must be 1 to 128 characters: letters, digits, _ - . :",
                ));
            }
            Ok(id)
        }
    }
}

/// A `test_event_code` (an event's own, or a batch's): 1 to 64 characters.
pub fn valid_test_event_code(code: Option<&str>) -> Result<(), CapiError> {
    match code {
        Some(c) if c.is_empty() || c.len() > 64 => Err(CapiError::invalid(
            "test_event_code must be 1 to 64 characters",
        )),
        _ => Ok(()),
    }
}

pub async fn prepare(
    deps: &CapiDeps,
    ctx: &AccountContext,
    b: ConversionBody,
    now_ms: i64,
) -> Result<Prepared, CapiError> {
    if let Some(a) = &b.account_id
        && a != &ctx.account_id
    {
        return Err(CapiError::not_found(format!("account {a} not found")));
    }
    let event_name = EventName::parse(&b.event_name).map_err(CapiError::invalid)?;
    let currency = b
        .currency
        .as_deref()
        .map(Currency::parse)
        .transpose()
        .map_err(CapiError::invalid)?;
    if let Some(v) = b.value
        && (!v.is_finite() || v < 0.0)
    {
        return Err(CapiError::invalid("value must be a number >= 0"));
    }
    if event_name.requires_value() && (currency.is_none() || b.value.is_none()) {
        return Err(CapiError::invalid(format!(
            "currency (ISO 4217) and value are required for {}",
            event_name.as_str()
        )));
    }
    if b.value.is_some() != currency.is_some() {
        return Err(CapiError::invalid("value and currency go together"));
    }
    let event_id = valid_event_id(b.event_id)?;
    let now_s = now_ms / 1000;
    let event_time = b.event_time.unwrap_or(now_s);
    if event_time < now_s - MAX_EVENT_AGE_SECS {
        return Err(CapiError::invalid(
            "event_time is more than 7 days old: Meta refuses such events (and the whole request with them)",
        ));
    }
    if event_time > now_s + 300 {
        return Err(CapiError::invalid("event_time is in the future"));
    }
    valid_test_event_code(b.test_event_code.as_deref())?;
    // Keeps every record far below DynamoDB's 400 KB item limit.
    if b.custom_data
        .as_ref()
        .is_some_and(|c| Value::Object(c.clone()).to_string().len() > 8 * 1024)
    {
        return Err(CapiError::invalid(
            "custom_data must be at most 8 KB of JSON",
        ));
    }
    let ph = b
        .phone
        .as_deref()
        .map(hash_phone)
        .transpose()
        .map_err(|e| CapiError::invalid(e.to_string()))?;
    let em = b
        .email
        .as_deref()
        .map(hash_email)
        .transpose()
        .map_err(|e| CapiError::invalid(e.to_string()))?;
    let waits = !deps.policy.click_wait.is_zero();
    let hint = b
        .messaging_channel
        .as_deref()
        .map(|c| {
            MessagingChannel::parse(c).ok_or_else(|| {
                CapiError::invalid("messaging_channel must be whatsapp, messenger or instagram")
            })
        })
        .transpose()?;
    let scoped = match (&b.psid, &b.igsid) {
        (Some(_), Some(_)) => {
            return Err(CapiError::invalid(
                "give psid (Messenger) or igsid (Instagram), not both",
            ));
        }
        (Some(p), None) => Some((MessagingChannel::Messenger, psid_key(scoped_id(p, "psid")?))),
        (None, Some(i)) => Some((
            MessagingChannel::Instagram,
            igsid_key(scoped_id(i, "igsid")?),
        )),
        (None, None) => None,
    };
    if scoped.is_some() && (b.phone.is_some() || b.user_id.is_some()) {
        return Err(CapiError::invalid(
            "psid / igsid name a Messenger / Instagram customer: give them without phone or user_id",
        ));
    }
    let base = Base {
        event_name,
        event_id,
        event_time,
        currency,
        value: b.value,
        ph,
        em,
        custom_data: b.custom_data,
        test_event_code: b.test_event_code,
    };
    // The conversation named, read once.
    let named = match &b.conversation_id {
        Some(cid) => {
            if !is_conversation_id(cid) {
                return Err(CapiError::not_found(format!(
                    "conversation {cid} not found"
                )));
            }
            Some(
                deps.conversations
                    .get_conversation(cid)
                    .await?
                    .filter(|c| c.account_id == ctx.account_id)
                    .ok_or_else(|| CapiError::not_found(format!("conversation {cid} not found")))?,
            )
        }
        None => None,
    };
    let named_channel = named.as_ref().map(|c| c.channel.messaging_channel());
    let channel = scoped
        .as_ref()
        .map(|(c, _)| *c)
        .or(named_channel)
        .or(hint)
        .unwrap_or(MessagingChannel::Whatsapp);
    for other in [hint, named_channel].into_iter().flatten() {
        if other != channel {
            return Err(CapiError::invalid(format!(
                "messaging_channel {} does not match the customer's channel ({})",
                other.as_str(),
                channel.as_str()
            )));
        }
    }
    if channel != MessagingChannel::Whatsapp {
        let conv = match (named, scoped) {
            (Some(c), _) => Some(c),
            (None, Some((_, key))) => newest(
                deps.conversations
                    .conversations_for_customer(&ctx.account_id, &key)
                    .await?,
            ),
            (None, None) => {
                return Err(CapiError::invalid(format!(
                    "conversation_id or {} is required for a {} conversion",
                    if channel == MessagingChannel::Messenger {
                        "psid"
                    } else {
                        "igsid"
                    },
                    channel.as_str()
                )));
            }
        };
        return prepare_scoped(deps, ctx, base, channel, conv, waits).await;
    }
    let user_key = match b.user_id.as_deref().map(str::trim) {
        Some(u) if u.is_empty() || u.len() > 256 || u.chars().any(char::is_control) => {
            return Err(CapiError::invalid("user_id must be 1 to 256 characters"));
        }
        Some(u) => Some(format!("u:{u}")),
        None => None,
    };
    let by_customer = match (&b.phone, user_key) {
        (Some(p), _) => Some(
            Phone::parse(p)
                .map_err(|e| CapiError::invalid(e.to_string()))?
                .customer_key(),
        ),
        (None, k) => k,
    };
    let (waba_id, dataset_id) = ctx.whatsapp()?;
    // The click, or (no click at all yet, and waiting is on) the customer and the
    // conversation to wait for.
    let attribution: Result<Attribution, (String, Option<String>)> = match (named, by_customer) {
        (Some(conv), _) => {
            match last_click_in_conversation(deps, &conv.id, event_time * 1000).await? {
                LastClick::Found(a) => Ok(*a),
                LastClick::NoneBefore => return Ok(Prepared::NoClick(NO_CLICK_BEFORE)),
                LastClick::None if waits => Err((conv.customer_key, Some(conv.id))),
                LastClick::None => return Ok(Prepared::NoClick(no_click_reason(true))),
            }
        }
        (None, Some(key)) => {
            match last_click_for_customer(deps, &ctx.account_id, &key, event_time * 1000).await? {
                LastClick::Found(a) => Ok(*a),
                LastClick::NoneBefore => return Ok(Prepared::NoClick(NO_CLICK_BEFORE)),
                LastClick::None if waits => Err((key, None)),
                LastClick::None => return Ok(Prepared::NoClick(no_click_reason(false))),
            }
        }
        (None, None) => {
            return Err(CapiError::invalid(
                "conversation_id, phone, user_id, psid or igsid is required",
            ));
        }
    };
    let keys = |ctwa_clid: String| UserKeys::Whatsapp {
        waba_id: waba_id.to_string(),
        ctwa_clid,
    };
    let attribution = match attribution {
        Ok(a) => a,
        Err((customer_key, conversation_id)) => {
            let test_event_code = base.test_event_code.clone();
            return Ok(Prepared::Wait(Box::new(Waiting {
                conversion: base.conversion(keys(String::new())),
                dataset_id: dataset_id.to_string(),
                customer_key,
                conversation_id,
                test_event_code,
            })));
        }
    };
    let ctwa_clid = attribution
        .click
        .referral
        .ctwa_clid
        .clone()
        .unwrap_or_default();
    Ok(base.ready(keys(ctwa_clid), dataset_id.to_string(), attribution))
}

/// What a conversion is apart from who it is about and where it goes.
struct Base {
    event_name: EventName,
    event_id: String,
    event_time: i64,
    currency: Option<Currency>,
    value: Option<f64>,
    ph: Option<String>,
    em: Option<String>,
    custom_data: Option<Map<String, Value>>,
    test_event_code: Option<String>,
}

impl Base {
    fn conversion(&self, keys: UserKeys) -> Conversion {
        Conversion {
            event_name: self.event_name.clone(),
            event_id: self.event_id.clone(),
            event_time: self.event_time,
            keys,
            currency: self.currency.clone(),
            value: self.value,
            ph: self.ph.clone(),
            em: self.em.clone(),
            custom_data: self.custom_data.clone(),
        }
    }
    fn ready(self, keys: UserKeys, dataset_id: String, attribution: Attribution) -> Prepared {
        let warnings = window_warning(attribution.click.clicked_at_ms, self.event_time)
            .into_iter()
            .collect();
        Prepared::Ready(Box::new(Ready {
            conversion: self.conversion(keys),
            dataset_id,
            attribution,
            warnings,
            test_event_code: self.test_event_code,
        }))
    }
}

/// The most recently active of a customer's conversations.
fn newest(mut convs: Vec<Conversation>) -> Option<Conversation> {
    convs.sort_by_key(|c| c.updated_at_ms);
    convs.pop()
}

/// The no-op reason of a Messenger / Instagram conversion whose customer never wrote
/// to the business here.
pub const NO_CONVERSATION: &str = "no_conversation_for_customer";
/// The no-op reason of a Messenger / Instagram conversion whose conversation has no
/// ad click.
pub const NO_AD_CLICK: &str = "no_ad_click_for_conversation";

/// A Messenger / Instagram conversion: sent under the conversation's Page / Instagram
/// account and PSID / IGSID to that object's dataset, attributed to the conversation's
/// last ad click before `event_time` (no click: the same no-op or wait as WhatsApp's).
async fn prepare_scoped(
    deps: &CapiDeps,
    ctx: &AccountContext,
    base: Base,
    channel: MessagingChannel,
    conv: Option<Conversation>,
    waits: bool,
) -> Result<Prepared, CapiError> {
    let Some(conv) = conv else {
        return Ok(Prepared::NoClick(NO_CONVERSATION));
    };
    let (route, keys) = match channel {
        MessagingChannel::Messenger => (
            Route::Page(conv.business_id.clone()),
            UserKeys::Messenger {
                page_id: conv.business_id.clone(),
                psid: conv
                    .customer
                    .psid
                    .clone()
                    .unwrap_or_else(|| scoped_of(&conv.customer_key)),
            },
        ),
        _ => (
            Route::Instagram(conv.business_id.clone()),
            UserKeys::Instagram {
                ig_account_id: conv.business_id.clone(),
                igsid: conv
                    .customer
                    .igsid
                    .clone()
                    .unwrap_or_else(|| scoped_of(&conv.customer_key)),
            },
        ),
    };
    let dataset_id = ctx.channel_target(&route)?.to_string();
    match last_click_in_conversation(deps, &conv.id, base.event_time * 1000).await? {
        LastClick::Found(a) => Ok(base.ready(keys, dataset_id, *a)),
        LastClick::NoneBefore => Ok(Prepared::NoClick(NO_CLICK_BEFORE)),
        LastClick::None if waits => {
            let test_event_code = base.test_event_code.clone();
            Ok(Prepared::Wait(Box::new(Waiting {
                conversion: base.conversion(keys),
                dataset_id,
                customer_key: conv.customer_key,
                conversation_id: Some(conv.id),
                test_event_code,
            })))
        }
        LastClick::None => Ok(Prepared::NoClick(NO_AD_CLICK)),
    }
}

/// The id of a `psid:` / `igsid:` customer key.
fn scoped_of(key: &str) -> String {
    key.split_once(':')
        .map(|(_, v)| v)
        .unwrap_or(key)
        .to_string()
}

/// `POST /v1/triggers`: a trigger name (seed 001's `lead_event_trigger`,
/// `purchase_event_trigger`) and the customer it happened for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    pub trigger: String,
    #[serde(default, alias = "phone_number")]
    pub phone: Option<String>,
    #[serde(default, alias = "userId")]
    pub user_id: Option<String>,
    /// A Messenger customer (PSID) or an Instagram one (IGSID).
    #[serde(default, alias = "page_scoped_user_id")]
    pub psid: Option<String>,
    #[serde(default, alias = "ig_sid")]
    pub igsid: Option<String>,
    #[serde(default, alias = "conversationId")]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default, alias = "eventId")]
    pub event_id: Option<String>,
    #[serde(default, alias = "testEventCode")]
    pub test_event_code: Option<String>,
}

/// What a trigger name fires under an account's CAPI settings.
#[derive(Debug)]
pub enum TriggerMatch {
    /// No configured event has this trigger.
    Unknown,
    /// The event is configured but switched off.
    Disabled { event_name: &'static str },
    /// The conversion to send: the purchase takes the configured value and currency
    /// unless the trigger gives its own.
    Fire(Box<ConversionBody>),
}

impl TriggerBody {
    pub fn resolve(self, settings: &CapiSettings) -> TriggerMatch {
        let name = self.trigger.trim();
        let matches = |t: &Option<String>| t.as_deref().is_some_and(|t| t == name);
        let (event_name, enabled, value, currency) = if matches(&settings.purchase_event_trigger) {
            (
                "Purchase",
                settings.purchase_event_enabled,
                self.value.or(settings.purchase_event_value),
                self.currency.or(settings.purchase_event_currency.clone()),
            )
        } else if matches(&settings.lead_event_trigger) {
            (
                "LeadSubmitted",
                settings.lead_event_enabled,
                self.value,
                self.currency,
            )
        } else {
            return TriggerMatch::Unknown;
        };
        if !enabled {
            return TriggerMatch::Disabled { event_name };
        }
        TriggerMatch::Fire(Box::new(ConversionBody {
            psid: self.psid,
            igsid: self.igsid,
            messaging_channel: None,
            account_id: None,
            conversation_id: self.conversation_id,
            phone: self.phone,
            user_id: self.user_id,
            event_name: event_name.into(),
            event_id: self.event_id,
            event_time: None,
            value,
            currency,
            email: None,
            test_event_code: self.test_event_code,
            custom_data: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(name: &str) -> TriggerBody {
        serde_json::from_value(serde_json::json!({"trigger": name, "phone": "+919876543210"}))
            .unwrap()
    }

    #[test]
    fn triggers_fire_the_configured_event() {
        let settings = CapiSettings {
            purchase_event_enabled: true,
            purchase_event_trigger: Some("paid".into()),
            purchase_event_currency: Some("INR".into()),
            purchase_event_value: Some(1499.0),
            lead_event_enabled: false,
            lead_event_trigger: Some("qualified".into()),
            ..Default::default()
        };
        match trigger(" paid ").resolve(&settings) {
            TriggerMatch::Fire(b) => {
                assert_eq!(b.event_name, "Purchase");
                assert_eq!(
                    (b.value, b.currency.as_deref()),
                    (Some(1499.0), Some("INR"))
                );
                assert_eq!(b.phone.as_deref(), Some("+919876543210"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            trigger("qualified").resolve(&settings),
            TriggerMatch::Disabled {
                event_name: "LeadSubmitted"
            }
        ));
        assert!(matches!(
            trigger("nope").resolve(&settings),
            TriggerMatch::Unknown
        ));
    }
}
