//! Automatic events: the purchases and leads Meta itself detects in a Click-to-WhatsApp
//! chat (`automatic_events` webhook field), as the API shows them and, when an account's
//! CAPI settings ask for it (`forward_automatic_events`), forwarded as conversions
//! through the normal path.
//!
//! Meta's amount: `custom_data.value` is the price multiplied by 1000 (a string or a
//! number; Meta's `automatic_events` webhook reference: "Purchase amount, calculated as
//! product price multiplied by 1000", e.g. `25000` for 25.00). The API answers both the
//! raw value and the amount in currency units.
//!
//! Forwarding: capture never calls Meta (it holds no token and no Graph access). It
//! writes the conversion's record, deduplicated by Meta's event id with the same
//! conditional write as every conversion, `pending` and due at once; the resend job
//! (every 5 minutes) sends it with the account's token, retries it and keeps its audit
//! row like any other conversion. A redelivered webhook or stream batch finds the record
//! and adds nothing.

use super::event::{Conversion, Currency, EventName};
use super::{MAX_EVENT_AGE_SECS, lease_id};
use crate::domain::AutomaticEvent;
use crate::store::{
    Accounts, CapiSettingsStore, ConversionEvents, EventRecord, EventStatus, InboxItem, StoreError,
};
use crate::time::rfc3339_millis;
use serde_json::{Value, json};
use std::sync::Arc;

/// Meta's `custom_data.value` of an automatic event is the amount times this.
pub const META_AMOUNT_FACTOR: f64 = 1000.0;
/// The longest event id kept as a conversion's id.
const MAX_EVENT_ID_LEN: usize = 256;

/// The amount of an automatic event: its currency, Meta's raw value and the value in
/// currency units (`None` when Meta sent none, or one that is not a number >= 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Amount {
    pub currency: Option<String>,
    pub raw: Option<Value>,
    pub value: Option<f64>,
}

pub fn amount(ev: &AutomaticEvent) -> Amount {
    let data = ev.custom_data.as_ref();
    let raw = data.and_then(|d| d.get("value")).cloned();
    let value = match &raw {
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(Value::Number(n)) => n.as_f64(),
        _ => None,
    }
    .filter(|v| v.is_finite() && *v >= 0.0)
    .map(|v| v / META_AMOUNT_FACTOR);
    let currency = data
        .and_then(|d| d.get("currency"))
        .and_then(Value::as_str)
        .and_then(|c| Currency::parse(c).ok())
        .map(|c| c.as_str().to_string());
    Amount {
        currency,
        raw,
        value,
    }
}

/// The public shape of an automatic event (`GET /v1/automatic-events`).
pub fn view(ev: &AutomaticEvent) -> Value {
    let a = amount(ev);
    json!({
        "id": ev.id,
        "event_name": ev.event_name,
        "occurred_at": rfc3339_millis(ev.occurred_at_ms),
        "timestamp": ev.occurred_at_ms / 1000,
        "ctwa_clid": ev.ctwa_clid,
        "currency": a.currency,
        "value": a.value,
        "value_raw": a.raw,
        "custom_data": ev.custom_data,
    })
}

/// What forwarding needs: the account (its WABA), its CAPI settings (the policy and the
/// dataset) and the conversion records.
pub struct Forwarding {
    pub accounts: Arc<dyn Accounts>,
    pub settings: Arc<dyn CapiSettingsStore>,
    pub events: Arc<dyn ConversionEvents>,
    /// Audit rows expire after this many days; `None` keeps them forever.
    pub audit_ttl_days: Option<i64>,
}

/// What became of one automatic event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// The account does not forward automatic events (or capture has no forwarding).
    Off,
    /// Queued as a conversion: the resend job sends it.
    Queued,
    /// Already queued or sent (a redelivery): nothing added.
    Duplicate,
    /// It cannot be sent as a conversion; the reason is logged.
    Skipped(String),
}

/// Capture's step after storing an automatic event: [`forward_with`] its forwarding.
pub async fn forward(
    deps: &crate::capture::CaptureDeps,
    account_id: &str,
    item: &InboxItem,
    ev: &AutomaticEvent,
) -> Result<Forwarded, StoreError> {
    forward_with(deps.forward.as_ref(), account_id, item, ev).await
}

/// Forwards `ev` (stored for `account_id` from inbox `item`) as a conversion when the
/// account's policy says so. `Err` only for storage failures (worth a redelivery).
pub async fn forward_with(
    f: Option<&Forwarding>,
    account_id: &str,
    item: &InboxItem,
    ev: &AutomaticEvent,
) -> Result<Forwarded, StoreError> {
    let Some(f) = f else {
        return Ok(Forwarded::Off);
    };
    let settings = f.settings.get_capi_or_default(account_id).await?;
    if !settings.forward_automatic_events {
        return Ok(Forwarded::Off);
    }
    let now_ms = crate::time::now_millis();
    let waba = f
        .accounts
        .get_account(account_id)
        .await?
        .and_then(|a| a.waba_id);
    let record = match conversion_record(
        account_id,
        ev,
        settings.dataset_id.as_deref(),
        waba.as_deref(),
        item.waba_id.as_deref(),
        now_ms,
        f.audit_ttl_days,
    ) {
        Ok(r) => r,
        Err(reason) => {
            tracing::warn!(account_id, event_id = %ev.id, %reason, "automatic event not forwarded");
            return Ok(Forwarded::Skipped(reason));
        }
    };
    if f.events.claim_event(&record).await? {
        tracing::info!(account_id, event_id = %ev.id, event_name = %record.event_name, "automatic event queued as a conversion");
        Ok(Forwarded::Queued)
    } else {
        Ok(Forwarded::Duplicate)
    }
}

/// The conversion record of an automatic event: `pending` and due now, keyed by Meta's
/// event id; or why it cannot be one.
pub fn conversion_record(
    account_id: &str,
    ev: &AutomaticEvent,
    dataset_id: Option<&str>,
    account_waba: Option<&str>,
    webhook_waba: Option<&str>,
    now_ms: i64,
    audit_ttl_days: Option<i64>,
) -> Result<EventRecord, String> {
    let dataset_id = dataset_id.ok_or("no dataset: provision one with POST /v1/dataset")?;
    // The account's own WABA; the webhook's when the account names none. Never another
    // business's: two that differ is a refusal.
    let waba = match (account_waba, webhook_waba) {
        (Some(a), Some(w)) if a != w => {
            return Err(format!(
                "the webhook's WABA {w} is not the account's WABA {a}"
            ));
        }
        (Some(a), _) => a,
        (None, Some(w)) => w,
        (None, None) => return Err("no WhatsApp Business Account id is known".into()),
    };
    let clid = ev
        .ctwa_clid
        .clone()
        .ok_or("no ctwa_clid (a WhatsApp Status placement): nothing to attribute")?;
    if ev.id.is_empty() || ev.id.len() > MAX_EVENT_ID_LEN {
        return Err(format!(
            "event id must be 1 to {MAX_EVENT_ID_LEN} characters"
        ));
    }
    let event_name = EventName::parse(&ev.event_name)?;
    let event_time = ev.occurred_at_ms / 1000;
    if event_time < now_ms / 1000 - MAX_EVENT_AGE_SECS {
        return Err("older than 7 days: Meta would refuse it".into());
    }
    let a = amount(ev);
    let (currency, value) = match (a.currency, a.value) {
        (Some(c), Some(v)) => (Some(Currency::parse(&c)?), Some(v)),
        _ if event_name.requires_value() => {
            return Err(format!(
                "{} without a currency and an amount Meta would take",
                event_name.as_str()
            ));
        }
        _ => (None, None),
    };
    let conversion = Conversion {
        event_name,
        event_id: ev.id.clone(),
        event_time,
        keys: super::event::UserKeys::Whatsapp {
            waba_id: waba.to_string(),
            ctwa_clid: clid,
        },
        currency,
        value,
        ph: None,
        em: None,
        custom_data: None,
    };
    Ok(EventRecord {
        account_id: account_id.to_string(),
        event_id: conversion.event_id.clone(),
        event_name: conversion.event_name.as_str().to_string(),
        conversation_id: None,
        ctwa_clid: conversion.keys.ctwa_clid().to_string(),
        dataset_id: dataset_id.to_string(),
        status: EventStatus::Pending,
        attempts: 0,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        event_time,
        events_received: None,
        fbtrace_id: None,
        duration_ms: None,
        error: None,
        payload: conversion.payload().to_string(),
        test_event_code: None,
        next_attempt_at_ms: Some(now_ms),
        lease_id: lease_id(),
        warnings: vec![
            "automatic event detected by Meta, forwarded by the account's policy".into(),
        ],
        expires_at: audit_ttl_days.map(|d| now_ms / 1000 + d * 86_400),
        ad_id: None,
        waiting_for: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Account, Channel, Route};
    use crate::store::memory::MemoryStore;
    use crate::store::{CapiSettings, InboxKind};

    fn ev(name: &str, custom: Option<Value>, at_ms: i64) -> AutomaticEvent {
        AutomaticEvent {
            id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=".into(),
            event_name: name.into(),
            occurred_at_ms: at_ms,
            ctwa_clid: Some("ARAkLkA8rm".into()),
            custom_data: custom,
        }
    }

    #[test]
    fn meta_amounts_are_thousandths() {
        let now = crate::time::now_millis();
        for (raw, want) in [
            (json!("25000"), Some(25.0)),
            (json!(1_499_000), Some(1499.0)),
            (json!("12345"), Some(12.345)),
            (json!(0), Some(0.0)),
            (json!("-5"), None),
            (json!("abc"), None),
            (json!({"x": 1}), None),
        ] {
            let e = ev(
                "Purchase",
                Some(json!({"currency": "usd", "value": raw})),
                now,
            );
            let a = amount(&e);
            assert_eq!(a.value, want, "{raw}");
            assert_eq!(a.raw, Some(raw));
            assert_eq!(a.currency.as_deref(), Some("USD"));
        }
        let v = view(&ev("LeadSubmitted", None, 1_739_321_024_000));
        assert_eq!(v["timestamp"], 1_739_321_024);
        assert_eq!(v["occurred_at"], "2025-02-12T00:43:44.000Z");
        assert_eq!(v["value"], Value::Null);
        assert_eq!(v["currency"], Value::Null);
    }

    #[test]
    fn a_purchase_becomes_meta_s_conversion() {
        let now = crate::time::now_millis();
        let e = ev(
            "Purchase",
            Some(json!({"currency": "USD", "value": "25000"})),
            now - 60_000,
        );
        let r = conversion_record("a1", &e, Some("D1"), Some("W1"), Some("W1"), now, None).unwrap();
        assert_eq!(r.event_id, e.id, "deduplicated by Meta's event id");
        assert_eq!(r.status, EventStatus::Pending);
        assert_eq!(r.next_attempt_at_ms, Some(now), "due at once");
        let p: Value = serde_json::from_str(&r.payload).unwrap();
        assert_eq!(p["event_name"], "Purchase");
        assert_eq!(p["event_time"], (now - 60_000) / 1000);
        assert_eq!(p["action_source"], "business_messaging");
        assert_eq!(p["user_data"]["ctwa_clid"], "ARAkLkA8rm");
        assert_eq!(p["user_data"]["whatsapp_business_account_id"], "W1");
        assert_eq!(p["custom_data"], json!({"currency": "USD", "value": 25.0}));
        // A lead carries no amount.
        let r = conversion_record(
            "a1",
            &ev("LeadSubmitted", None, now),
            Some("D1"),
            None,
            Some("W2"),
            now,
            Some(30),
        )
        .unwrap();
        assert_eq!(r.expires_at, Some(now / 1000 + 30 * 86_400));
        let p: Value = serde_json::from_str(&r.payload).unwrap();
        assert_eq!(p["user_data"]["whatsapp_business_account_id"], "W2");
        assert!(p.get("custom_data").is_none());
    }

    #[test]
    fn what_cannot_be_sent_is_skipped_with_a_reason() {
        let now = crate::time::now_millis();
        let buy = |v: Value| {
            ev(
                "Purchase",
                Some(json!({"currency": "USD", "value": v})),
                now,
            )
        };
        let ok = buy(json!("100"));
        let no_clid = AutomaticEvent {
            ctwa_clid: None,
            ..ok.clone()
        };
        for (e, dataset, waba, hook, why) in [
            (ok.clone(), None, Some("W"), None, "no dataset"),
            (ok.clone(), Some("D"), None, None, "no WhatsApp Business"),
            (
                ok.clone(),
                Some("D"),
                Some("W1"),
                Some("W2"),
                "is not the account's",
            ),
            (no_clid, Some("D"), Some("W"), None, "no ctwa_clid"),
            (
                buy(json!("abc")),
                Some("D"),
                Some("W"),
                None,
                "without a currency",
            ),
            (
                ev("Purchase", None, now),
                Some("D"),
                Some("W"),
                None,
                "without a currency",
            ),
            (
                ev("Contact", None, now),
                Some("D"),
                Some("W"),
                None,
                "not accepted by Meta",
            ),
            (
                ev("LeadSubmitted", None, now - 8 * 86_400_000),
                Some("D"),
                Some("W"),
                None,
                "older than 7 days",
            ),
        ] {
            let err = conversion_record("a1", &e, dataset, waba, hook, now, None).unwrap_err();
            assert!(err.contains(why), "{err} / {why}");
        }
    }

    #[tokio::test]
    async fn forwarding_follows_the_policy_and_dedups_by_meta_s_id() {
        let store = Arc::new(MemoryStore::default());
        store
            .create_account(&Account {
                id: "a1".into(),
                name: "A".into(),
                waba_id: Some("W1".into()),
                phone_number_ids: vec!["P1".into()],
                sinch_app_id: None,
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: 0,
            })
            .await
            .unwrap();
        let f = Forwarding {
            accounts: store.clone(),
            settings: store.clone(),
            events: store.clone(),
            audit_ttl_days: None,
        };
        let now = crate::time::now_millis();
        let e = ev("LeadSubmitted", None, now);
        let item = InboxItem {
            id: format!("wa-ae:{}", e.id),
            kind: InboxKind::AutomaticEvent,
            channel: Channel::Cloud,
            route: Route::PhoneNumberId("P1".into()),
            waba_id: Some("W1".into()),
            payload: "{}".into(),
            contact: None,
            received_at_ms: now,
            expires_at: 0,
        };
        assert_eq!(
            forward_with(None, "a1", &item, &e).await.unwrap(),
            Forwarded::Off
        );
        assert_eq!(
            forward_with(Some(&f), "a1", &item, &e).await.unwrap(),
            Forwarded::Off
        );
        store
            .put_capi(
                "a1",
                &CapiSettings {
                    dataset_id: Some("D1".into()),
                    forward_automatic_events: true,
                    ..CapiSettings::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            forward_with(Some(&f), "a1", &item, &e).await.unwrap(),
            Forwarded::Queued
        );
        assert_eq!(
            forward_with(Some(&f), "a1", &item, &e).await.unwrap(),
            Forwarded::Duplicate
        );
        // Queued at the clock of the forward call, which a loaded machine may read well
        // after `now`.
        let due = store
            .due_events(crate::time::now_millis() + 1_000, 10, 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event_id, e.id);
    }
}
