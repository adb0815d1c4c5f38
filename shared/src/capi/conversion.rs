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
use crate::domain::Phone;
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
    /// The customer whose click it waits for.
    pub customer_key: String,
    /// When given by conversation: only that conversation's clicks count.
    pub conversation_id: Option<String>,
    pub test_event_code: Option<String>,
}

pub struct Ready {
    pub conversion: Conversion,
    pub attribution: Attribution,
    pub warnings: Vec<String>,
    pub test_event_code: Option<String>,
}

pub struct AccountContext {
    pub account_id: String,
    pub waba_id: String,
    pub dataset_id: String,
}

pub async fn context(deps: &CapiDeps, account_id: &str) -> Result<AccountContext, CapiError> {
    let conn = deps.meta.live_connection(account_id).await?;
    let waba_id = waba_for(deps, account_id, Some(&conn)).await?;
    let dataset_id = deps
        .settings
        .get_capi(account_id)
        .await?
        .and_then(|c| c.dataset_id)
        .ok_or(CapiError::NoDataset)?;
    Ok(AccountContext {
        account_id: account_id.to_string(),
        waba_id,
        dataset_id,
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
    // The click, or (no click at all yet, and waiting is on) the customer and the
    // conversation to wait for.
    let attribution: Result<Attribution, (String, Option<String>)> =
        match (&b.conversation_id, by_customer) {
            (Some(cid), _) => {
                if cid.is_empty()
                    || cid.len() > 64
                    || !cid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(CapiError::not_found(format!(
                        "conversation {cid} not found"
                    )));
                }
                let conv = deps
                    .conversations
                    .get_conversation(cid)
                    .await?
                    .filter(|c| c.account_id == ctx.account_id)
                    .ok_or_else(|| CapiError::not_found(format!("conversation {cid} not found")))?;
                match last_click_in_conversation(deps, cid, event_time * 1000).await? {
                    LastClick::Found(a) => Ok(*a),
                    LastClick::NoneBefore => return Ok(Prepared::NoClick(NO_CLICK_BEFORE)),
                    LastClick::None if waits => Err((conv.customer_key, Some(cid.clone()))),
                    LastClick::None => return Ok(Prepared::NoClick(no_click_reason(true))),
                }
            }
            (None, Some(key)) => {
                match last_click_for_customer(deps, &ctx.account_id, &key, event_time * 1000)
                    .await?
                {
                    LastClick::Found(a) => Ok(*a),
                    LastClick::NoneBefore => return Ok(Prepared::NoClick(NO_CLICK_BEFORE)),
                    LastClick::None if waits => Err((key, None)),
                    LastClick::None => return Ok(Prepared::NoClick(no_click_reason(false))),
                }
            }
            (None, None) => {
                return Err(CapiError::invalid(
                    "conversation_id, phone or user_id is required",
                ));
            }
        };
    let conversion = |ctwa_clid: String| Conversion {
        event_name,
        event_id,
        event_time,
        waba_id: ctx.waba_id.clone(),
        ctwa_clid,
        currency,
        value: b.value,
        ph,
        em,
        custom_data: b.custom_data,
    };
    let attribution = match attribution {
        Ok(a) => a,
        Err((customer_key, conversation_id)) => {
            return Ok(Prepared::Wait(Box::new(Waiting {
                conversion: conversion(String::new()),
                customer_key,
                conversation_id,
                test_event_code: b.test_event_code,
            })));
        }
    };
    let warnings = window_warning(attribution.click.clicked_at_ms, event_time)
        .into_iter()
        .collect();
    let ctwa_clid = attribution
        .click
        .referral
        .ctwa_clid
        .clone()
        .unwrap_or_default();
    Ok(Prepared::Ready(Box::new(Ready {
        conversion: conversion(ctwa_clid),
        attribution,
        warnings,
        test_event_code: b.test_event_code,
    })))
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
