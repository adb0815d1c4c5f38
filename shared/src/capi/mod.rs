//! Conversions API for Business Messaging: the dataset of a WABA, resolving the click
//! of a conversion, and delivery that loses nothing and sends nothing twice.
//!
//! Delivery: the event id is claimed in the table by a conditional write BEFORE Meta is
//! called (Meta does not deduplicate these events), so concurrent duplicates make one
//! Meta call. Transient failures are retried with backoff and jitter within the call's
//! budget; still failing, the event stays `pending` and the resend job sends it again
//! with the same event id until it lands or is too old. A sender that dies holds only a
//! lease: the resend job takes the event over when the lease ends.

pub mod event;
pub mod pii;

use crate::domain::Click;
use crate::graph::{EventsResponse, GraphError, Token};
use crate::meta::connection::{ConnectError, MetaDeps};
use crate::store::{
    Accounts, CapiConfig, CapiStore, ConnectionStatus, Conversations, EventRecord, EventStatus,
    StoreError,
};
use event::Conversion;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Meta refuses events older than this (the whole request).
pub const MAX_EVENT_AGE_SECS: i64 = 7 * 86_400;
/// Clicks older than this may not be attributed (vendor documentation).
pub const ATTRIBUTION_WINDOW_MS: i64 = 7 * 86_400_000;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts inside one API call.
    pub attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// The call gives up retrying (and leaves the event pending) past this.
    pub budget: Duration,
    /// How long a claim holds an event before the resend job may take it over.
    pub lease: Duration,
    /// First delay before the resend job tries a pending event (doubles per attempt).
    pub resend_delay: Duration,
    pub max_resend_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            budget: Duration::from_secs(8),
            lease: Duration::from_secs(60),
            resend_delay: Duration::from_secs(60),
            max_resend_delay: Duration::from_secs(3600),
        }
    }
}

pub struct CapiDeps {
    pub accounts: Arc<dyn Accounts>,
    pub conversations: Arc<dyn Conversations>,
    pub store: Arc<dyn CapiStore>,
    pub meta: Arc<MetaDeps>,
    pub policy: RetryPolicy,
    /// Audit rows expire after this many days; `None` keeps them forever.
    pub audit_ttl_days: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no WhatsApp Business Account id is known for this account (connect Meta first)")]
    NoWaba,
    #[error("no dataset: provision one with POST /v1/dataset (or set dataset_id)")]
    NoDataset,
    #[error("Meta refused the dataset call: {0}")]
    DatasetRefused(GraphError),
}

fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    let r = u32::from_le_bytes(b) as f64 / u32::MAX as f64;
    // "Equal jitter": half fixed, half random.
    max / 2 + max.mul_f64(r / 2.0)
}

fn lease_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

// ------------------------------------------------------------------ dataset

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatasetOutcome {
    pub dataset_id: String,
    pub created: bool,
}

async fn waba_for(deps: &CapiDeps, account_id: &str) -> Result<String, CapiError> {
    if let Some(w) = deps
        .meta
        .connections
        .get_connection(account_id)
        .await?
        .and_then(|c| c.waba_id)
    {
        return Ok(w);
    }
    deps.accounts
        .get_account(account_id)
        .await?
        .and_then(|a| a.waba_id)
        .ok_or(CapiError::NoWaba)
}

/// GET-first idempotent: the stored id, else Meta's `GET /{waba}/dataset`, else
/// `POST /{waba}/dataset`. The id is stored on the account's CAPI config.
pub async fn provision_dataset(
    deps: &CapiDeps,
    account_id: &str,
) -> Result<DatasetOutcome, CapiError> {
    let mut config = deps.store.get_capi(account_id).await?.unwrap_or_default();
    if let Some(id) = &config.dataset_id {
        return Ok(DatasetOutcome {
            dataset_id: id.clone(),
            created: false,
        });
    }
    let waba = waba_for(deps, account_id).await?;
    let token = deps.meta.token(account_id).await?;
    let (dataset_id, created) = match deps.meta.graph.get_dataset(&waba, &token).await {
        Ok(Some(id)) => (id, false),
        Ok(None) => (
            deps.meta
                .graph
                .create_dataset(&waba, &token)
                .await
                .map_err(|e| dataset_error(deps, account_id, e))?,
            true,
        ),
        Err(e) => return Err(dataset_error(deps, account_id, e)),
    };
    config.dataset_id = Some(dataset_id.clone());
    deps.store.put_capi(account_id, &config).await?;
    tracing::info!(account_id, %dataset_id, created, "dataset provisioned");
    Ok(DatasetOutcome {
        dataset_id,
        created,
    })
}

fn dataset_error(deps: &CapiDeps, account_id: &str, e: GraphError) -> CapiError {
    if e.is_token_error() {
        deps.meta.forget_token(account_id);
    }
    CapiError::DatasetRefused(e)
}

// ------------------------------------------------------------------ the click

/// The click a conversion is attributed to (last click).
#[derive(Debug, Clone)]
pub struct Attribution {
    pub click: Click,
    pub model: &'static str,
}

/// The customer's most recent click that carries a click id, in this account.
pub async fn last_click_for_customer(
    deps: &CapiDeps,
    account_id: &str,
    customer_key: &str,
) -> Result<Option<Attribution>, StoreError> {
    let clicks = deps
        .conversations
        .clicks_for_customer(account_id, customer_key, 100)
        .await?;
    Ok(clicks
        .into_iter()
        .find(|c| c.referral.ctwa_clid.is_some())
        .map(|click| Attribution {
            click,
            model: "last_click",
        }))
}

/// The conversation's most recent click with a click id.
pub async fn last_click_in_conversation(
    deps: &CapiDeps,
    conversation_id: &str,
) -> Result<Option<Attribution>, StoreError> {
    let clicks = deps
        .conversations
        .clicks_for_conversation(conversation_id, 100)
        .await?;
    Ok(clicks
        .into_iter()
        .find(|c| c.referral.ctwa_clid.is_some())
        .map(|click| Attribution {
            click,
            model: "last_click",
        }))
}

// ------------------------------------------------------------------ delivery

/// How one send ended, as the API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SendResult {
    pub record: EventRecord,
    /// The event id was already claimed: this is the first send's outcome.
    pub duplicate: bool,
}

enum Attempt {
    Delivered(EventsResponse),
    Failed(GraphError),
}

/// One request to `POST /{dataset}/events`.
struct Outgoing<'a> {
    account_id: &'a str,
    dataset_id: &'a str,
    events: &'a [Value],
    test_event_code: Option<&'a str>,
    token: Token,
}

/// Sends with retries inside the call's budget; answers the outcome and the attempts made.
async fn send_with_retries(deps: &CapiDeps, out: Outgoing<'_>) -> (Attempt, u32) {
    let started = std::time::Instant::now();
    let mut backoff = deps.policy.base_backoff;
    let Outgoing {
        account_id,
        dataset_id,
        events,
        test_event_code,
        mut token,
    } = out;
    let mut refetched = false;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match deps
            .meta
            .graph
            .send_events(dataset_id, events, test_event_code, &token)
            .await
        {
            Ok(r) => return (Attempt::Delivered(r), attempts),
            Err(e) if e.is_token_error() && !refetched => {
                // The cached token may be older than a refresh made elsewhere: re-read once.
                refetched = true;
                deps.meta.forget_token(account_id);
                match deps.meta.token(account_id).await {
                    Ok(t) if t != token => token = t,
                    _ => return (Attempt::Failed(e), attempts),
                }
            }
            Err(e) => {
                let wait = jitter(backoff);
                let attempts_left = attempts < deps.policy.attempts.max(1);
                if !e.is_retryable()
                    || !attempts_left
                    || started.elapsed() + wait > deps.policy.budget
                {
                    return (Attempt::Failed(e), attempts);
                }
                tracing::info!(account_id, error = %e, backoff_ms = wait.as_millis() as u64, "Meta send failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(deps.policy.max_backoff);
            }
        }
    }
}

fn graph_error_json(e: &GraphError) -> Value {
    match e {
        GraphError::Api { status, error } => json!({"meta_status": status, "meta_error": error}),
        other => json!({"message": other.to_string()}),
    }
}

/// Applies a Meta outcome to a record: delivered, pending (retryable), failed.
fn settle(
    deps: &CapiDeps,
    rec: &mut EventRecord,
    attempt: Result<&EventsResponse, &GraphError>,
    duration_ms: i64,
    now_ms: i64,
) {
    rec.updated_at_ms = now_ms;
    rec.duration_ms = Some(duration_ms);
    match attempt {
        Ok(r) => {
            rec.status = EventStatus::Delivered;
            rec.events_received = Some(r.events_received);
            rec.fbtrace_id = r.fbtrace_id.clone();
            rec.error = None;
            rec.next_attempt_at_ms = None;
        }
        Err(e) => {
            rec.error = Some(graph_error_json(e));
            if let GraphError::Api { error, .. } = e {
                rec.fbtrace_id = error.fbtrace_id.clone();
            }
            let too_old = rec.event_time < now_ms / 1000 - MAX_EVENT_AGE_SECS;
            if e.is_retryable() && !too_old {
                rec.status = EventStatus::Pending;
                let exp = rec.attempts.saturating_sub(deps.policy.attempts).min(16);
                let delay = (deps.policy.resend_delay
                    * 2u32.saturating_pow(exp / deps.policy.attempts.max(1)))
                .min(deps.policy.max_resend_delay);
                rec.next_attempt_at_ms = Some(now_ms + delay.as_millis() as i64);
            } else {
                rec.status = EventStatus::Failed;
                rec.next_attempt_at_ms = None;
                if too_old && e.is_retryable() {
                    rec.error = Some(
                        json!({"message": "event_time is now older than 7 days: Meta would refuse it", "last_error": graph_error_json(e)}),
                    );
                }
            }
        }
    }
}

async fn mark_broken(deps: &CapiDeps, account_id: &str, e: &GraphError) {
    if let Ok(Some(mut conn)) = deps.meta.connections.get_connection(account_id).await {
        conn.status = ConnectionStatus::Broken;
        conn.last_error = Some(e.to_string());
        if let Err(err) = deps.meta.connections.put_connection(&conn).await {
            tracing::error!(account_id, error = %err, "could not mark the Meta connection broken");
        }
    }
    deps.meta.forget_token(account_id);
    tracing::warn!(
        account_id,
        "Meta refused the token (190): connection marked broken"
    );
}

/// Where a conversion goes and what the audit row says beside it.
pub struct RecordContext {
    pub account_id: String,
    pub dataset_id: String,
    pub conversation_id: Option<String>,
    pub test_event_code: Option<String>,
    pub warnings: Vec<String>,
}

/// A new record for a conversion about to be sent.
pub fn new_record(deps: &CapiDeps, c: &Conversion, ctx: RecordContext, now_ms: i64) -> EventRecord {
    let RecordContext {
        account_id,
        dataset_id,
        conversation_id,
        test_event_code,
        warnings,
    } = ctx;
    EventRecord {
        account_id,
        event_id: c.event_id.clone(),
        event_name: c.event_name.as_str().to_string(),
        conversation_id,
        ctwa_clid: c.ctwa_clid.clone(),
        dataset_id,
        status: EventStatus::InFlight,
        attempts: 0,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        event_time: c.event_time,
        events_received: None,
        fbtrace_id: None,
        duration_ms: None,
        error: None,
        payload: c.payload().to_string(),
        test_event_code,
        next_attempt_at_ms: Some(now_ms + deps.policy.lease.as_millis() as i64),
        lease_id: lease_id(),
        warnings,
        expires_at: deps.audit_ttl_days.map(|d| now_ms / 1000 + d * 86_400),
    }
}

/// Waits a little for an in-flight duplicate to settle, then answers what is known.
async fn first_outcome(
    deps: &CapiDeps,
    account_id: &str,
    event_id: &str,
) -> Result<EventRecord, CapiError> {
    let deadline = std::time::Instant::now() + deps.policy.budget;
    loop {
        let rec = deps
            .store
            .get_event(account_id, event_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("event {event_id} vanished")))?;
        if rec.status != EventStatus::InFlight || std::time::Instant::now() >= deadline {
            return Ok(rec);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Claims the records (dedup), sends the new ones in one request (up to 1000), and
/// settles every record. Results are in the order of `records`.
pub async fn deliver(
    deps: &CapiDeps,
    records: Vec<EventRecord>,
) -> Result<Vec<SendResult>, CapiError> {
    let mut results: Vec<Option<SendResult>> = vec![None; records.len()];
    let mut claimed: Vec<(usize, EventRecord)> = Vec::new();
    for (i, rec) in records.into_iter().enumerate() {
        if deps.store.claim_event(&rec).await? {
            claimed.push((i, rec));
        } else {
            let first = first_outcome(deps, &rec.account_id, &rec.event_id).await?;
            results[i] = Some(SendResult {
                record: first,
                duplicate: true,
            });
        }
    }
    if let Some((_, first)) = claimed.first() {
        let account_id = first.account_id.clone();
        let dataset_id = first.dataset_id.clone();
        let test_code = first.test_event_code.clone();
        let token = match deps.meta.token(&account_id).await {
            Ok(t) => Some(t),
            Err(ConnectError::TokenInvalid(_)) | Err(ConnectError::NotConnected) => None,
            Err(e) => return Err(e.into()),
        };
        let payloads: Vec<Value> = claimed
            .iter()
            .map(|(_, r)| serde_json::from_str(&r.payload).unwrap_or(Value::Null))
            .collect();
        let started = std::time::Instant::now();
        let (attempt, attempts) = match &token {
            Some(t) => {
                let out = Outgoing {
                    account_id: &account_id,
                    dataset_id: &dataset_id,
                    events: &payloads,
                    test_event_code: test_code.as_deref(),
                    token: t.clone(),
                };
                send_with_retries(deps, out).await
            }
            None => {
                let error = crate::graph::GraphErrorBody {
                    message:
                        "Meta is not connected or the token is invalid: reconnect (exchange-code)"
                            .into(),
                    code: 190,
                    ..Default::default()
                };
                (
                    Attempt::Failed(GraphError::Api {
                        status: 401,
                        error: Box::new(error),
                    }),
                    0,
                )
            }
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let now_ms = crate::time::now_millis();
        if let Attempt::Failed(e) = &attempt
            && e.is_token_error()
            && token.is_some()
        {
            mark_broken(deps, &account_id, e).await;
        }
        for (i, mut rec) in claimed {
            let lease = rec.lease_id.clone();
            rec.attempts += attempts;
            match &attempt {
                Attempt::Delivered(r) => settle(deps, &mut rec, Ok(r), duration_ms, now_ms),
                Attempt::Failed(e) => settle(deps, &mut rec, Err(e), duration_ms, now_ms),
            }
            if !deps.store.save_event(&rec, &lease).await? {
                tracing::warn!(event_id = %rec.event_id, "event was taken over by the resend job before this send settled");
            }
            tracing::info!(
                account_id = %rec.account_id,
                event_id = %rec.event_id,
                event_name = %rec.event_name,
                status = rec.status.as_str(),
                attempts = rec.attempts,
                duration_ms,
                "conversion settled"
            );
            results[i] = Some(SendResult {
                record: rec,
                duplicate: false,
            });
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// What one resend run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResendReport {
    pub due: usize,
    pub delivered: usize,
    pub pending: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Sends every due event again (pending ones, and in-flight ones whose sender died),
/// one at a time, with the same event id.
pub async fn resend_due(
    deps: &CapiDeps,
    now_ms: i64,
    limit: usize,
) -> Result<ResendReport, CapiError> {
    let due = deps.store.due_events(now_ms, limit).await?;
    let mut report = ResendReport {
        due: due.len(),
        ..Default::default()
    };
    for rec in due {
        let lease = lease_id();
        let until = now_ms + deps.policy.lease.as_millis() as i64;
        if !deps.store.lease_event(&rec, &lease, until).await? {
            report.skipped += 1;
            continue;
        }
        let mut rec = EventRecord {
            lease_id: lease.clone(),
            status: EventStatus::InFlight,
            next_attempt_at_ms: Some(until),
            ..rec
        };
        let now_s = crate::time::now_secs();
        if rec.event_time < now_s - MAX_EVENT_AGE_SECS {
            rec.status = EventStatus::Failed;
            rec.next_attempt_at_ms = None;
            rec.updated_at_ms = crate::time::now_millis();
            rec.error = Some(
                json!({"message": "event_time is older than 7 days: Meta would refuse it; not sent", "last_error": rec.error}),
            );
            deps.store.save_event(&rec, &lease).await?;
            report.failed += 1;
            continue;
        }
        let token = match deps.meta.token(&rec.account_id).await {
            Ok(t) => t,
            Err(ConnectError::TokenInvalid(_)) | Err(ConnectError::NotConnected) => {
                rec.status = EventStatus::Failed;
                rec.next_attempt_at_ms = None;
                rec.updated_at_ms = crate::time::now_millis();
                rec.error = Some(
                    json!({"message": "Meta is not connected or the token is invalid: reconnect (exchange-code)"}),
                );
                deps.store.save_event(&rec, &lease).await?;
                report.failed += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let payload: Value = serde_json::from_str(&rec.payload).unwrap_or(Value::Null);
        let started = std::time::Instant::now();
        let out = Outgoing {
            account_id: &rec.account_id,
            dataset_id: &rec.dataset_id,
            events: std::slice::from_ref(&payload),
            test_event_code: rec.test_event_code.as_deref(),
            token,
        };
        let (attempt, attempts) = send_with_retries(deps, out).await;
        rec.attempts += attempts;
        let now = crate::time::now_millis();
        match &attempt {
            Attempt::Delivered(r) => settle(
                deps,
                &mut rec,
                Ok(r),
                started.elapsed().as_millis() as i64,
                now,
            ),
            Attempt::Failed(e) => {
                if e.is_token_error() {
                    mark_broken(deps, &rec.account_id, e).await;
                }
                settle(
                    deps,
                    &mut rec,
                    Err(e),
                    started.elapsed().as_millis() as i64,
                    now,
                )
            }
        }
        deps.store.save_event(&rec, &lease).await?;
        match rec.status {
            EventStatus::Delivered => report.delivered += 1,
            EventStatus::Pending => report.pending += 1,
            _ => report.failed += 1,
        }
    }
    Ok(report)
}

/// The CAPI config as the API shows it (seed 001's `capi` object).
pub fn capi_view(config: &CapiConfig, connected: bool) -> Value {
    json!({
        "dataset_id": config.dataset_id,
        "lead_event_enabled": config.lead_event_enabled,
        "lead_event_trigger": config.lead_event_trigger,
        "lead_event_tag": config.lead_event_tag,
        "purchase_event_enabled": config.purchase_event_enabled,
        "purchase_event_trigger": config.purchase_event_trigger,
        "purchase_event_tag": config.purchase_event_tag,
        "purchase_event_currency": config.purchase_event_currency,
        "purchase_event_value": config.purchase_event_value.unwrap_or(0.0),
        "connected": connected,
    })
}

/// Builds the CAPI dependencies once per cold start (dataset, conversions and resend
/// functions).
pub fn capi_deps(
    settings: &crate::config::CapiSettings,
    sdk: &aws_config::SdkConfig,
) -> Result<CapiDeps, GraphError> {
    let data = Arc::new(crate::store::dynamo::DynamoData::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &settings.connect.data_table,
    ));
    let meta = crate::meta::connection::meta_deps(&settings.connect, sdk, data.clone())?;
    Ok(CapiDeps {
        accounts: data.clone(),
        conversations: data.clone(),
        store: data,
        meta: Arc::new(meta),
        policy: RetryPolicy::default(),
        audit_ttl_days: settings.audit_ttl_days,
    })
}
