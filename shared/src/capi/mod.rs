//! Conversions API for Business Messaging: the dataset of a WABA, resolving the click
//! of a conversion, and delivery that loses nothing and sends nothing twice.
//!
//! Delivery: the event id is claimed in the table by a conditional write BEFORE Meta is
//! called (Meta does not deduplicate these events), so concurrent duplicates make one
//! Meta call. Transient failures are retried with backoff and jitter within the call's
//! budget; still failing, the event stays `pending` and the resend job sends it again
//! with the same event id until it lands or is too old. A sender that dies holds only a
//! lease: the resend job takes the event over when the lease ends.
//!
//! A request Meta may have taken without our knowing (it timed out, or its connection
//! dropped after it was written) ends `unknown` and is never sent again, by anyone: see
//! [`Outcome::Unknown`]. No delivery outlives its function: every request is given up
//! in time to save the outcomes before the invocation's deadline ([`delivery_end`]).

pub mod automatic;
pub mod conversion;
pub mod event;
pub mod pii;
#[cfg(test)]
mod tests;

use crate::domain::Click;
use crate::graph::{EventsResponse, GraphError, Token};
use crate::meta::connection::{ConnectError, MetaDeps};
use crate::store::{
    Accounts, CapiSettings, CapiSettingsStore, Conversations, ConversionEvents, EventRecord,
    EventStatus, MetaConnection, StoreError, customer_keys,
};
use event::Conversion;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// DynamoDB calls in flight at once for one batch: resolving the clicks, claiming the
/// event ids, saving the outcomes (up to 1000 each). The order of the answer is kept.
pub const BATCH_CONCURRENCY: usize = 32;

/// Kept free at the end of a delivery to save the outcomes of its last request (up to
/// 1000 conditional writes, [`BATCH_CONCURRENCY`] at a time): a request to Meta is
/// given up this long before the delivery's end.
pub const SETTLE_RESERVE: Duration = Duration::from_secs(2);

/// A request to Meta is not started with less time than this before it would have to be
/// given up: it would most likely time out and leave its events `unknown`, where not
/// sending them leaves them `pending` (known not sent) for the resend job.
pub const MIN_SEND_TIME: Duration = Duration::from_secs(1);

/// When a delivery starting now must be done: its requests get twice the retry budget
/// and the outcomes [`SETTLE_RESERVE`] after them, never past the invocation's deadline
/// less [`crate::http::INVOCATION_MARGIN`] (kept for the answer).
pub fn delivery_end(policy: &RetryPolicy, invocation_deadline: Option<Instant>) -> Instant {
    let wanted = Instant::now() + policy.budget * 2 + SETTLE_RESERVE;
    crate::http::within_invocation(wanted, invocation_deadline)
}

/// Meta refuses events older than this (the whole request).
pub const MAX_EVENT_AGE_SECS: i64 = 7 * 86_400;
/// Clicks older than this may not be attributed (vendor documentation).
pub const ATTRIBUTION_WINDOW_MS: i64 = 7 * 86_400_000;
/// How long a conversion with no click waits for it by default (`CLICK_WAIT_SECONDS`).
pub const DEFAULT_CLICK_WAIT: Duration = Duration::from_secs(15 * 60);

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
    /// How long a conversion with no click waits for its customer's click (capture is
    /// asynchronous: a lead fired on the first message may come before its click is
    /// captured). Zero answers the no-op at once.
    pub click_wait: Duration,
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
            click_wait: DEFAULT_CLICK_WAIT,
        }
    }
}

pub struct CapiDeps {
    pub accounts: Arc<dyn Accounts>,
    pub conversations: Arc<dyn Conversations>,
    pub settings: Arc<dyn CapiSettingsStore>,
    pub events: Arc<dyn ConversionEvents>,
    pub meta: Arc<MetaDeps>,
    pub policy: RetryPolicy,
    /// Audit rows expire after this many days; `None` keeps them forever.
    pub audit_ttl_days: Option<i64>,
    /// Sent once at the top of every events request (`META_PARTNER_AGENT`).
    pub partner_agent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no WhatsApp Business Account id is known for this account (connect Meta first)")]
    NoWaba,
    /// The account's WABA is not one the stored token reaches: sending under the
    /// token's WABA would credit another business.
    #[error(
        "the Meta token does not reach this account's WhatsApp Business Account {waba_id} (it reaches {}): reconnect with a token of that business (exchange-code)",
        if granted.is_empty() { "none".to_string() } else { granted.join(", ") }
    )]
    WabaNotGranted {
        waba_id: String,
        granted: Vec<String>,
    },
    #[error("no dataset: provision one with POST /v1/dataset (or set dataset_id)")]
    NoDataset,
    /// A Messenger / Instagram conversion, and the token lacks the channel's events
    /// permission: refused before Meta is called.
    #[error(
        "the Meta token lacks the {permission} permission that {} conversions need: reconnect with a token granted it (exchange-code); nothing was sent",
        channel.as_str()
    )]
    MissingPermission {
        channel: crate::domain::MessagingChannel,
        permission: &'static str,
    },
    /// No dataset for the conversion's Page / Instagram account.
    #[error(
        "no dataset for {} {}: provision it with POST /v1/dataset {{\"{}\": \"{}\"}}",
        route.noun(),
        route.business_id(),
        route.field(),
        route.business_id()
    )]
    NoChannelDataset { route: crate::domain::Route },
    #[error("Meta refused the dataset call: {0}")]
    DatasetRefused(GraphError),
    /// The conversion breaks a rule (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// What the conversion names (a conversation, another account) is not this
    /// account's.
    #[error("{0}")]
    NotFound(String),
}

/// The channel's events permission in the token's `scopes`, or the refusal that is
/// answered before Meta is called.
pub(crate) fn require_events_permission(
    channel: crate::domain::MessagingChannel,
    scopes: &[String],
) -> Result<(), CapiError> {
    if channel.permission_granted(scopes) {
        Ok(())
    } else {
        Err(CapiError::MissingPermission {
            channel,
            permission: channel.events_permission(),
        })
    }
}

impl CapiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
}

/// Why an event ended `failed`, kept in its audit row (`error.reason`) so that the
/// answer to a duplicate is the same as to the first send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Meta refused the event (or the request) for good.
    MetaRefused,
    /// Meta refused the stored token (190): the business must reconnect.
    MetaTokenInvalid,
    /// No usable Meta connection when it was to be sent.
    MetaNotConnected,
    /// Older than Meta's 7 days before it could be sent.
    TooOld,
    /// The claim could not be written, so it was not sent.
    NotRecorded,
    /// The stored payload cannot be read back: it is never sent as something else.
    CorruptPayload,
}

impl FailureReason {
    /// The reason a failed record carries (`None` for other states, or rows written
    /// before reasons were kept).
    pub fn of(rec: &EventRecord) -> Option<Self> {
        if rec.status != EventStatus::Failed {
            return None;
        }
        rec.error
            .as_ref()
            .and_then(|e| e.get("reason"))
            .and_then(|r| serde_json::from_value(r.clone()).ok())
    }

    /// The caller must reconnect Meta before this can work.
    pub fn needs_reconnect(self) -> bool {
        matches!(self, Self::MetaTokenInvalid | Self::MetaNotConnected)
    }

    /// The audit row's error: the reason, a message and any detail.
    pub fn error(self, message: &str, details: serde_json::Map<String, Value>) -> Value {
        let mut e = serde_json::Map::new();
        e.insert("reason".into(), json!(self));
        e.insert("message".into(), json!(message));
        e.extend(details);
        Value::Object(e)
    }
}

/// "Equal jitter": half of `max` fixed, half random.
pub fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    let r = u32::from_le_bytes(b) as f64 / u32::MAX as f64;
    max / 2 + max.mul_f64(r / 2.0)
}

pub(crate) fn lease_id() -> String {
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

/// The WABA of the account's conversions and dataset: the one the account was onboarded
/// with, if the token reaches it ([`waba_of_send`]).
pub(crate) async fn waba_for(
    deps: &CapiDeps,
    account_id: &str,
    conn: Option<&MetaConnection>,
) -> Result<String, CapiError> {
    let account_waba = deps
        .accounts
        .get_account(account_id)
        .await?
        .and_then(|a| a.waba_id);
    waba_of_send(account_waba.as_deref(), conn)
}

/// The WABA a send goes under: the account's own, when the token reaches it (or what
/// the token reaches is not known: a connection recorded before that was kept); an
/// account with none takes the token's WABA if it reaches exactly one. Never a WABA of
/// the token's that is not the account's.
pub fn waba_of_send(
    account_waba: Option<&str>,
    conn: Option<&MetaConnection>,
) -> Result<String, CapiError> {
    let granted = conn.map(|c| c.waba_ids.as_slice()).unwrap_or_default();
    match account_waba {
        Some(w) if granted.is_empty() || granted.iter().any(|g| g == w) => Ok(w.to_string()),
        Some(w) => Err(CapiError::WabaNotGranted {
            waba_id: w.to_string(),
            granted: granted.to_vec(),
        }),
        None if granted.len() == 1 => Ok(granted[0].clone()),
        None if granted.is_empty() => conn
            .and_then(|c| c.waba_id.clone())
            .ok_or(CapiError::NoWaba),
        None => Err(CapiError::NoWaba),
    }
}

/// GET-first idempotent: the stored id, else Meta's `GET /{waba}/dataset`, else
/// `POST /{waba}/dataset`. The id is stored on the account's CAPI config.
pub async fn provision_dataset(
    deps: &CapiDeps,
    account_id: &str,
) -> Result<DatasetOutcome, CapiError> {
    let config = deps.settings.get_capi_or_default(account_id).await?;
    if let Some(id) = &config.dataset_id {
        return Ok(DatasetOutcome {
            dataset_id: id.clone(),
            created: false,
        });
    }
    let connection = deps.meta.connections.get_connection(account_id).await?;
    let waba = waba_for(deps, account_id, connection.as_ref()).await?;
    let token = deps.meta.token(account_id).await?;
    let found = match deps.meta.graph.get_dataset(&waba, &token).await {
        Ok(Some(id)) => Ok((id, false)),
        Ok(None) => deps
            .meta
            .graph
            .create_dataset(&waba, &token)
            .await
            .map(|id| (id, true)),
        Err(e) => Err(e),
    };
    let (dataset_id, created) = match found {
        Ok(v) => v,
        Err(e) => {
            dataset_token_refused(deps, account_id, &token, &e).await;
            return Err(dataset_error(deps, account_id, e));
        }
    };
    // Only the dataset id is written: a config saved meanwhile is kept.
    let dataset_id = deps
        .settings
        .set_dataset_if_absent(account_id, &dataset_id)
        .await?;
    tracing::info!(account_id, %dataset_id, created, "dataset provisioned");
    Ok(DatasetOutcome {
        dataset_id,
        created,
    })
}

/// The dataset of one of the account's Pages / Instagram accounts (`route`), idempotent:
/// the stored id, else Meta's `POST /{PAGE_ID}/dataset` / `POST /{IG_USER_ID}/dataset`,
/// which Meta documents as answering the existing dataset when the object has one
/// (the guide shows no GET for them). Refused before Meta is called when the route is
/// not this account's or the token lacks the channel's events permission.
pub async fn provision_channel_dataset(
    deps: &CapiDeps,
    account_id: &str,
    route: &crate::domain::Route,
) -> Result<DatasetOutcome, CapiError> {
    use crate::domain::Route;
    if !matches!(route, Route::Page(_) | Route::Instagram(_)) {
        return Err(CapiError::invalid(
            "page_id or instagram_account_id is required",
        ));
    }
    let linked = deps
        .accounts
        .route_record(route)
        .await?
        .is_some_and(|r| r.account_id == account_id);
    if !linked {
        return Err(CapiError::not_found(format!(
            "{} {} is not linked to this account (an operator links it: POST /v1/admin/accounts/{{account_id}}/{})",
            route.noun(),
            route.business_id(),
            if matches!(route, Route::Page(_)) {
                "pages"
            } else {
                "instagram-accounts"
            }
        )));
    }
    let config = deps.settings.get_capi_or_default(account_id).await?;
    if let Some(id) = config.channel_datasets.get(&route.key()) {
        return Ok(DatasetOutcome {
            dataset_id: id.clone(),
            created: false,
        });
    }
    let conn = deps.meta.live_connection(account_id).await?;
    require_events_permission(route.messaging_channel(), &conn.scopes)?;
    let token = deps.meta.token(account_id).await?;
    let dataset_id = match deps
        .meta
        .graph
        .create_dataset(route.business_id(), &token)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            dataset_token_refused(deps, account_id, &token, &e).await;
            return Err(dataset_error(deps, account_id, e));
        }
    };
    let stored = deps
        .settings
        .set_channel_dataset_if_absent(account_id, &route.key(), &dataset_id)
        .await?;
    tracing::info!(account_id, route = %route.key(), dataset_id = %stored, "channel dataset provisioned");
    Ok(DatasetOutcome {
        created: stored == dataset_id,
        dataset_id: stored,
    })
}

fn dataset_error(deps: &CapiDeps, account_id: &str, e: GraphError) -> CapiError {
    if e.is_token_error() {
        deps.meta.forget_token(account_id);
    }
    CapiError::DatasetRefused(e)
}

/// After Meta refused the token during provisioning: the connection is broken.
async fn dataset_token_refused(deps: &CapiDeps, account_id: &str, token: &Token, e: &GraphError) {
    if e.is_token_error() {
        deps.meta.mark_broken(account_id, token, e).await;
    }
}

// ------------------------------------------------------------------ the click

/// The click a conversion is attributed to (last click).
#[derive(Debug, Clone)]
pub struct Attribution {
    pub click: Click,
    pub model: &'static str,
}

/// How far a click may lie after the conversion's `event_time` and still count as
/// before it: the two clocks (Meta's message timestamp, the business's event time) are
/// not the same clock. One minute.
pub const CLICK_CLOCK_SKEW_MS: i64 = 60_000;

/// The last click of a conversion: the newest click with a click id at or before the
/// conversion's `event_time` (within [`CLICK_CLOCK_SKEW_MS`]).
#[derive(Debug, Clone)]
pub enum LastClick {
    Found(Box<Attribution>),
    /// Clicks with an id exist, but all of them after the conversion: crediting one
    /// would credit an ad the customer had not seen yet.
    NoneBefore,
    /// No click with an id at all (organic, or a Status placement).
    None,
}

/// `clicks` newest first; a Status click (no id) cannot be attributed, nor a click whose
/// time could not be vouched for ([`Click::time_unverified`]).
pub fn last_click_before(clicks: Vec<Click>, event_ms: i64) -> LastClick {
    let mut any = false;
    for click in clicks {
        if !click.is_attributable() {
            continue;
        }
        any = true;
        if click.clicked_at_ms <= event_ms + CLICK_CLOCK_SKEW_MS {
            return LastClick::Found(Box::new(Attribution {
                click,
                model: "last_click",
            }));
        }
    }
    if any {
        LastClick::NoneBefore
    } else {
        LastClick::None
    }
}

/// The customer's last click in this account before `event_ms`, under every key of the
/// customer ([`customer_keys`]: each WhatsApp spelling of the number, the linked
/// user id).
pub async fn last_click_for_customer(
    deps: &CapiDeps,
    account_id: &str,
    customer_key: &str,
    event_ms: i64,
) -> Result<LastClick, StoreError> {
    let mut clicks = Vec::new();
    for key in customer_keys(deps.conversations.as_ref(), account_id, customer_key).await? {
        clicks.extend(
            deps.conversations
                .clicks_for_customer(account_id, &key, 100)
                .await?,
        );
    }
    // Newest first across the spellings; the same instant: the larger message id first
    // (the store's own order within one customer).
    clicks.sort_by(|a, b| (b.clicked_at_ms, &b.message_id).cmp(&(a.clicked_at_ms, &a.message_id)));
    Ok(last_click_before(clicks, event_ms))
}

/// The conversation's last click before `event_ms`.
pub async fn last_click_in_conversation(
    deps: &CapiDeps,
    conversation_id: &str,
    event_ms: i64,
) -> Result<LastClick, StoreError> {
    let clicks = deps
        .conversations
        .clicks_for_conversation(conversation_id, 100)
        .await?;
    Ok(last_click_before(clicks, event_ms))
}

/// The warning of a click more than 7 days before the conversion's `event_time` (the
/// window runs from the click to the conversion, not to the moment it is sent).
pub fn window_warning(click_ms: i64, event_time: i64) -> Option<String> {
    (click_ms < event_time * 1000 - ATTRIBUTION_WINDOW_MS).then(|| {
        format!(
            "the click ({}) is more than 7 days before event_time, outside the 7-day attribution window: sent, but Meta may not attribute it",
            crate::time::rfc3339_millis(click_ms)
        )
    })
}

// ------------------------------------------------------------------ waiting for the click

/// The no-op reason of a conversion that has no click: by conversation or by customer.
pub fn no_click_reason(by_conversation: bool) -> &'static str {
    if by_conversation {
        "no_ctwa_click_id_for_conversation"
    } else {
        "no_ctwa_click_id_for_phone"
    }
}

/// A conversion waiting for its click: sent (through the normal delivery, under its own
/// event id) when its customer's click before `event_time` is there; ended `no_click`
/// when `final_pass` (its wait is over) and there is still none. `None` when it keeps
/// waiting, or another taker (capture, the resend job) had it first.
pub async fn fulfil_waiting(
    deps: &CapiDeps,
    rec: EventRecord,
    final_pass: bool,
    end: Instant,
) -> Result<Option<EventRecord>, CapiError> {
    let event_ms = rec.event_time * 1000;
    let found = match (&rec.conversation_id, &rec.waiting_for) {
        (Some(cid), _) => last_click_in_conversation(deps, cid, event_ms).await?,
        (None, Some(key)) => last_click_for_customer(deps, &rec.account_id, key, event_ms).await?,
        (None, None) => LastClick::None,
    };
    let old_lease = rec.lease_id.clone();
    let now_ms = crate::time::now_millis();
    match found {
        LastClick::Found(a) => {
            let click = a.click;
            let clid = click.referral.ctwa_clid.clone().unwrap_or_default();
            let mut payload = rec.payload.clone();
            // WhatsApp: the click id goes in now. A Messenger / Instagram conversion
            // already names its customer (PSID / IGSID) and has nothing to fill in.
            if click.referral.ctwa_clid.is_some()
                && let Ok(mut p) = serde_json::from_str::<Value>(&rec.payload)
                && let Some(user_data) = p.get_mut("user_data").and_then(Value::as_object_mut)
            {
                user_data.insert("ctwa_clid".into(), json!(clid));
                payload = p.to_string();
            }
            let until = now_ms + deps.policy.lease.as_millis() as i64;
            let mut warnings = rec.warnings.clone();
            warnings.extend(window_warning(click.clicked_at_ms, rec.event_time));
            let taken = EventRecord {
                ctwa_clid: clid,
                conversation_id: Some(click.conversation_id.clone()),
                ad_id: click.referral.source_id.clone(),
                payload,
                warnings,
                status: EventStatus::InFlight,
                lease_id: lease_id(),
                next_attempt_at_ms: Some(until),
                waiting_for: None,
                updated_at_ms: now_ms,
                ..rec
            };
            if !deps.events.take_waiting(&taken, &old_lease).await? {
                return Ok(None);
            }
            tracing::info!(account_id = %taken.account_id, event_id = %taken.event_id, "the click of a waiting conversion landed; sending it");
            send_leased(deps, taken, end).await
        }
        _ if !final_pass => Ok(None),
        other => {
            let reason = match other {
                LastClick::NoneBefore => conversion::NO_CLICK_BEFORE,
                _ => no_click_reason(rec.conversation_id.is_some()),
            };
            let ended = EventRecord {
                status: EventStatus::NoClick,
                next_attempt_at_ms: None,
                waiting_for: None,
                updated_at_ms: now_ms,
                error: Some(json!({
                    "reason": reason,
                    "message": "no click of this customer before event_time came within the wait: nothing was sent to Meta",
                })),
                ..rec
            };
            if !deps.events.take_waiting(&ended, &old_lease).await? {
                return Ok(None);
            }
            tracing::info!(account_id = %ended.account_id, event_id = %ended.event_id, reason, "a waiting conversion's wait is over with no click; not sent");
            Ok(Some(ended))
        }
    }
}

/// After capture recorded a click of `customer_key` (with a click id): sends the
/// account's conversions that were waiting for it. Answers how many it settled.
pub async fn click_captured(
    deps: &CapiDeps,
    account_id: &str,
    customer_key: &str,
) -> Result<usize, CapiError> {
    let mut waiting = Vec::new();
    for key in customer_keys(deps.conversations.as_ref(), account_id, customer_key).await? {
        waiting.extend(deps.events.waiting_for_customer(account_id, &key).await?);
    }
    let mut settled = 0;
    let end = delivery_end(&deps.policy, None);
    for rec in waiting {
        if fulfil_waiting(deps, rec, false, end).await?.is_some() {
            settled += 1;
        }
    }
    Ok(settled)
}

// ------------------------------------------------------------------ delivery

/// How one send ended, as the API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SendResult {
    pub record: EventRecord,
    /// The event id was already claimed: this is the first send's outcome.
    pub duplicate: bool,
}

#[derive(Clone)]
enum Attempt {
    Delivered(EventsResponse),
    Failed(GraphError),
    /// Sent, and no answer came: Meta may have taken the events.
    Unknown(GraphError),
    /// Not (or no longer) started: too little time was left before `send_by`.
    NotSent,
}

/// One request to `POST /{dataset}/events`.
struct Outgoing<'a> {
    account_id: &'a str,
    dataset_id: &'a str,
    events: &'a [Value],
    test_event_code: Option<&'a str>,
    token: Token,
    /// No request runs past this (it is given up: its outcome is then unknown), and
    /// none starts with less than [`MIN_SEND_TIME`] before it.
    send_by: Instant,
}

/// Sends with retries inside the call's budget and before `send_by`; answers the
/// outcome and the attempts made. A request that went out and got no answer is never
/// retried ([`Attempt::Unknown`]).
async fn send_with_retries(deps: &CapiDeps, out: Outgoing<'_>) -> (Attempt, u32) {
    let started = Instant::now();
    let mut backoff = deps.policy.base_backoff;
    let Outgoing {
        account_id,
        dataset_id,
        events,
        test_event_code,
        mut token,
        send_by,
    } = out;
    let mut refetched = false;
    let mut attempts = 0u32;
    loop {
        let left = send_by.saturating_duration_since(Instant::now());
        if left < MIN_SEND_TIME {
            // Nothing went out in this attempt: with a previous failure that failure
            // stands (the events stay pending), without one the events were not sent.
            return (Attempt::NotSent, attempts);
        }
        attempts += 1;
        let timeout = crate::wiring::GRAPH_TIMEOUT.min(left);
        match deps
            .meta
            .graph
            .send_events(
                dataset_id,
                events,
                test_event_code,
                deps.partner_agent.as_deref(),
                &token,
                Some(timeout),
            )
            .await
        {
            Ok(r) => return (Attempt::Delivered(r), attempts),
            // Sent and unanswered: Meta may have the events. Sending them again (now, or
            // later under the same event id) could count each conversion twice, since
            // Meta does not deduplicate business-messaging events (meta-api.md section
            // 2): their outcome is recorded as unknown instead.
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(account_id, error = %e, events = events.len(), "Meta did not answer; the outcome is unknown and the events are not sent again");
                return (Attempt::Unknown(e), attempts);
            }
            // Meta answered 2xx with a body we cannot read: it took the events. Sending
            // them again would duplicate them.
            Err(GraphError::Decode(why)) => {
                tracing::warn!(account_id, %why, "Meta accepted the events with an unreadable answer");
                let r = EventsResponse {
                    events_received: events.len() as i64,
                    ..Default::default()
                };
                return (Attempt::Delivered(r), attempts);
            }
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
                    || Instant::now() + wait + MIN_SEND_TIME > send_by
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

/// How one request to Meta ended for its events, or why it was not made.
#[derive(Clone, Copy)]
enum Outcome<'a> {
    Delivered(&'a EventsResponse),
    Refused(&'a GraphError),
    /// The call's time ran out before the request: left for the resend job.
    NotSentInTime,
    /// The request went out and no answer came: see [`OUTCOME_UNKNOWN`].
    Unknown(&'a GraphError),
    /// No usable Meta connection (not connected, or the token was refused before).
    NotConnected,
    /// The stored payload could not be read back.
    CorruptPayload,
}

const RECONNECT: &str = "Meta is not connected or the token is invalid: reconnect (exchange-code)";

/// The audit row's (and the answer's) `error.reason` of an event whose request got no
/// answer.
///
/// Why such an event is never sent again, neither by the resend job nor on a client's
/// retry with the same event id (the retry answers this record, `duplicate: true`):
/// Meta does not deduplicate Conversions API events for business messaging ("perform
/// deduplication before sending"; duplicates are penalised: meta-api.md section 2), so
/// the deduplication Meta documents on `event_id` + `event_name` within 48 h (between a
/// website's pixel and server events) cannot be counted on here. Re-sending with the
/// same event id would be safe only if Meta dropped the second copy; as it does not, a
/// re-send of an event Meta already took counts the conversion twice, and no Graph API
/// call tells whether it took it. So the
/// event stays `unknown` in the audit trail (`GET /v1/conversions?status=unknown`): the
/// business checks the dataset in Events Manager and, only if the event is missing
/// there, sends it again under a new event id. A request that never left (the
/// connection could not be made) or that Meta answered with an error is known not to
/// have been taken: those stay `pending` and are re-sent as before.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// Applies an outcome to a record: delivered, pending (sent again later), failed.
fn settle(deps: &CapiDeps, rec: &mut EventRecord, outcome: Outcome, duration_ms: i64, now_ms: i64) {
    rec.updated_at_ms = now_ms;
    rec.duration_ms = Some(duration_ms);
    let too_old = rec.event_time < now_ms / 1000 - MAX_EVENT_AGE_SECS;
    let retry_later = |rec: &mut EventRecord, error: Value| {
        let exp = rec.attempts.saturating_sub(deps.policy.attempts).min(16);
        let delay = (deps.policy.resend_delay
            * 2u32.saturating_pow(exp / deps.policy.attempts.max(1)))
        .min(deps.policy.max_resend_delay);
        rec.status = EventStatus::Pending;
        rec.next_attempt_at_ms = Some(now_ms + delay.as_millis() as i64);
        rec.error = Some(error);
    };
    let fail = |rec: &mut EventRecord, error: Value| {
        rec.status = EventStatus::Failed;
        rec.next_attempt_at_ms = None;
        rec.error = Some(error);
    };
    match outcome {
        Outcome::Delivered(r) => {
            rec.status = EventStatus::Delivered;
            rec.events_received = Some(r.events_received);
            rec.fbtrace_id = r.fbtrace_id.clone();
            rec.error = None;
            rec.next_attempt_at_ms = None;
        }
        Outcome::Refused(e) => {
            if let GraphError::Api { error, .. } = e {
                rec.fbtrace_id = error.fbtrace_id.clone();
            }
            let mut details = e.details();
            details.insert("message".into(), json!(e.to_string()));
            if e.is_retryable() && !too_old {
                retry_later(rec, Value::Object(details));
            } else if e.is_retryable() {
                let mut last = serde_json::Map::new();
                last.insert("last_error".into(), Value::Object(details));
                fail(
                    rec,
                    FailureReason::TooOld.error(
                        "event_time is now older than 7 days: Meta would refuse it",
                        last,
                    ),
                );
            } else {
                let reason = if e.is_token_error() {
                    FailureReason::MetaTokenInvalid
                } else {
                    FailureReason::MetaRefused
                };
                fail(rec, reason.error(&e.to_string(), details));
            }
        }
        Outcome::Unknown(e) => {
            let mut details = e.details();
            details.insert("reason".into(), json!(OUTCOME_UNKNOWN));
            details.insert(
                "message".into(),
                json!(
                    "Meta did not answer (the request timed out or its connection dropped after it was sent): Meta may have received this event. It is not sent again, by the resend job or on a retry with this event_id, because Meta does not deduplicate business-messaging events and a second send could count the conversion twice. Check the dataset in Events Manager; only if the event is missing there, send it again with a new event_id."
                ),
            );
            rec.status = EventStatus::Unknown;
            rec.next_attempt_at_ms = None;
            rec.error = Some(Value::Object(details));
        }
        Outcome::NotSentInTime if !too_old => retry_later(
            rec,
            json!({"message": "not sent before the call's deadline: the resend job sends it"}),
        ),
        Outcome::NotSentInTime => fail(
            rec,
            FailureReason::TooOld.error(
                "event_time is now older than 7 days: Meta would refuse it",
                Default::default(),
            ),
        ),
        Outcome::NotConnected => fail(
            rec,
            FailureReason::MetaNotConnected.error(RECONNECT, Default::default()),
        ),
        Outcome::CorruptPayload => fail(
            rec,
            FailureReason::CorruptPayload.error(
                "the stored event cannot be read back; not sent",
                Default::default(),
            ),
        ),
    }
}

/// Where a conversion goes and what the audit row says beside it.
pub struct RecordContext {
    pub account_id: String,
    pub dataset_id: String,
    pub conversation_id: Option<String>,
    pub test_event_code: Option<String>,
    pub warnings: Vec<String>,
    /// The ad of the attributed click.
    pub ad_id: Option<String>,
}

/// A new record for a conversion about to be sent.
pub fn new_record(deps: &CapiDeps, c: &Conversion, ctx: RecordContext, now_ms: i64) -> EventRecord {
    let RecordContext {
        account_id,
        dataset_id,
        conversation_id,
        test_event_code,
        warnings,
        ad_id,
    } = ctx;
    EventRecord {
        account_id,
        event_id: c.event_id.clone(),
        event_name: c.event_name.as_str().to_string(),
        conversation_id,
        ctwa_clid: c.keys.ctwa_clid().to_string(),
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
        ad_id,
        waiting_for: None,
    }
}

/// A new record for a conversion that waits for its customer's click (`customer_key`)
/// until `now + click_wait`.
pub fn new_waiting_record(
    deps: &CapiDeps,
    c: &Conversion,
    ctx: RecordContext,
    customer_key: String,
    now_ms: i64,
) -> EventRecord {
    EventRecord {
        status: EventStatus::WaitingForClick,
        next_attempt_at_ms: Some(now_ms + deps.policy.click_wait.as_millis() as i64),
        waiting_for: Some(customer_key),
        ..new_record(deps, c, ctx, now_ms)
    }
}

/// Waits a little for an in-flight duplicate to settle, then answers what is known.
async fn first_outcome(
    deps: &CapiDeps,
    account_id: &str,
    event_id: &str,
    end: Instant,
) -> Result<EventRecord, CapiError> {
    let deadline = (Instant::now() + deps.policy.budget).min(end);
    loop {
        let rec = deps.events.get_event(account_id, event_id).await?;
        match rec {
            Some(r) if r.status != EventStatus::InFlight => return Ok(r),
            Some(r) if std::time::Instant::now() >= deadline => return Ok(r),
            None if std::time::Instant::now() >= deadline => {
                return Err(StoreError::Corrupt(format!(
                    "event {event_id} was claimed but cannot be read"
                ))
                .into());
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Saves a settled record, retrying passing storage errors: the send already happened,
/// so giving up here would let the resend job send it again.
async fn save_settled(deps: &CapiDeps, rec: &EventRecord, lease: &str) -> Result<(), StoreError> {
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=5 {
        match deps.events.save_event(rec, lease).await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                tracing::warn!(event_id = %rec.event_id, "event was taken over by the resend job before this send settled");
                return Ok(());
            }
            Err(e) if attempt < 5 => {
                tracing::warn!(event_id = %rec.event_id, error = %e, "saving the outcome failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends one group (same dataset and test code). A permanent refusal of a request with
/// several events is split in halves and re-sent, so that one bad event does not fail
/// the others (Meta rejects a whole request for one invalid event).
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A permanent refusal that names an event (code 100 with an event subcode such as
/// 2804087 invalid click id or 2804066 invalid event type), as opposed to one about the
/// whole request (permissions, the dataset, the token): only those are worth splitting.
fn names_an_event(e: &GraphError) -> bool {
    match e {
        GraphError::Api { error, .. } => {
            error.code == 100 && error.error_subcode.is_some_and(|s| s >= 2_804_000)
        }
        _ => false,
    }
}

/// Sends one group (same dataset and test code) and saves each record as soon as its
/// outcome is known. A refusal that names an event, of a request with several events,
/// splits the request in halves (Meta rejects a whole request for one invalid event),
/// until `deadline`: what is not sent by then stays pending for the resend job.
fn send_group<'a>(
    deps: &'a CapiDeps,
    account_id: &'a str,
    token: &'a Token,
    group: Vec<EventRecord>,
    prior_attempts: u32,
    end: Instant,
) -> BoxFuture<'a, Result<Vec<EventRecord>, CapiError>> {
    Box::pin(async move {
        let send_by = end.checked_sub(SETTLE_RESERVE).unwrap_or(end);
        if Instant::now() + MIN_SEND_TIME > send_by {
            let out = Outcome::NotSentInTime;
            return settle_all(deps, account_id, group, out, prior_attempts, 0).await;
        }
        // A payload that does not read back is never sent (as `null` or otherwise): that
        // record fails alone, the others go.
        let mut payloads = Vec::with_capacity(group.len());
        let mut sendable = Vec::with_capacity(group.len());
        let mut done = Vec::new();
        for rec in group {
            match serde_json::from_str::<Value>(&rec.payload) {
                Ok(p) if p.is_object() => {
                    payloads.push(p);
                    sendable.push(rec);
                }
                _ => {
                    tracing::error!(event_id = %rec.event_id, "stored payload is not a JSON object; not sent");
                    let out = Outcome::CorruptPayload;
                    done.extend(
                        settle_all(deps, account_id, vec![rec], out, prior_attempts, 0).await?,
                    );
                }
            }
        }
        let group = sendable;
        if group.is_empty() {
            return Ok(done);
        }
        let started = Instant::now();
        let out = Outgoing {
            account_id,
            dataset_id: &group[0].dataset_id,
            events: &payloads,
            test_event_code: group[0].test_event_code.as_deref(),
            token: token.clone(),
            send_by,
        };
        let (attempt, attempts) = send_with_retries(deps, out).await;
        let ms = started.elapsed().as_millis() as i64;
        let spent = prior_attempts + attempts;
        let settled = match attempt {
            Attempt::Failed(e) if group.len() > 1 && names_an_event(&e) => {
                let mut left = group;
                let right = left.split_off(left.len() / 2);
                let mut both = send_group(deps, account_id, token, left, spent, end).await?;
                both.extend(send_group(deps, account_id, token, right, spent, end).await?);
                both
            }
            Attempt::Delivered(r) => {
                settle_all(deps, account_id, group, Outcome::Delivered(&r), spent, ms).await?
            }
            Attempt::Unknown(e) => {
                settle_all(deps, account_id, group, Outcome::Unknown(&e), spent, ms).await?
            }
            Attempt::NotSent => {
                let out = Outcome::NotSentInTime;
                settle_all(deps, account_id, group, out, spent, ms).await?
            }
            Attempt::Failed(e) => {
                if e.is_token_error() {
                    deps.meta.mark_broken(account_id, token, &e).await;
                }
                settle_all(deps, account_id, group, Outcome::Refused(&e), spent, ms).await?
            }
        };
        done.extend(settled);
        Ok(done)
    })
}

/// Settles and saves every record of a request with the same outcome.
async fn settle_all(
    deps: &CapiDeps,
    account_id: &str,
    group: Vec<EventRecord>,
    outcome: Outcome<'_>,
    attempts: u32,
    ms: i64,
) -> Result<Vec<EventRecord>, CapiError> {
    let now_ms = crate::time::now_millis();
    let saves: Vec<_> = group
        .into_iter()
        .map(|rec| settle_one(deps, account_id, rec, outcome, attempts, (ms, now_ms)))
        .collect();
    // Every outcome is saved (or tried) before an error is answered.
    let saved = crate::run_bounded_in_order(saves, BATCH_CONCURRENCY).await;
    Ok(saved.into_iter().collect::<Result<Vec<_>, _>>()?)
}

/// Settles one record of a request and saves it.
async fn settle_one(
    deps: &CapiDeps,
    account_id: &str,
    mut rec: EventRecord,
    outcome: Outcome<'_>,
    attempts: u32,
    (ms, now_ms): (i64, i64),
) -> Result<EventRecord, StoreError> {
    let lease = rec.lease_id.clone();
    rec.attempts += attempts;
    settle(deps, &mut rec, outcome, ms, now_ms);
    save_settled(deps, &rec, &lease).await?;
    tracing::info!(
        account_id,
        event_id = %rec.event_id,
        event_name = %rec.event_name,
        status = rec.status.as_str(),
        attempts = rec.attempts,
        duration_ms = ms,
        "conversion settled"
    );
    Ok(rec)
}

/// [`deliver_by`] with the default end ([`delivery_end`] outside any invocation).
pub async fn deliver(
    deps: &CapiDeps,
    records: Vec<EventRecord>,
) -> Result<Vec<SendResult>, CapiError> {
    deliver_by(deps, records, delivery_end(&deps.policy, None)).await
}

/// Claims the records (dedup), sends the new ones (one request per dataset and test
/// code, up to 1000 events each), and settles every record, all before `end`. Results
/// are in the order of `records`. Duplicates wait for their first outcome together,
/// after the sends.
pub async fn deliver_by(
    deps: &CapiDeps,
    records: Vec<EventRecord>,
    end: Instant,
) -> Result<Vec<SendResult>, CapiError> {
    let n = records.len();
    let claims = records.iter().map(|rec| deps.events.claim_event(rec));
    let claimed_flags: Vec<Result<bool, StoreError>> =
        crate::run_bounded_in_order(claims, BATCH_CONCURRENCY).await;
    let mut results: Vec<Option<SendResult>> = vec![None; n];
    let mut duplicates: Vec<(usize, EventRecord)> = Vec::new();
    let mut waiting: Vec<(usize, EventRecord)> = Vec::new();
    // Grouped by (dataset, test event code): those never share a request.
    type GroupKey = (String, Option<String>);
    let mut groups: Vec<(GroupKey, Vec<(usize, EventRecord)>)> = Vec::new();
    for (i, (rec, claimed)) in records.into_iter().zip(claimed_flags).enumerate() {
        match claimed {
            Ok(true) if rec.status == EventStatus::WaitingForClick => waiting.push((i, rec)),
            Ok(true) => {
                let k = (rec.dataset_id.clone(), rec.test_event_code.clone());
                match groups.iter_mut().find(|(gk, _)| *gk == k) {
                    Some((_, g)) => g.push((i, rec)),
                    None => groups.push((k, vec![(i, rec)])),
                }
            }
            Ok(false) => duplicates.push((i, rec)),
            Err(e) => {
                // Not recorded, so not sent: this one event fails, the others go on.
                tracing::error!(event_id = %rec.event_id, error = %e, "could not record the event; not sent");
                let mut failed = rec;
                failed.status = EventStatus::Failed;
                failed.next_attempt_at_ms = None;
                failed.error = Some(FailureReason::NotRecorded.error(
                    "the event could not be recorded, so it was not sent; retry with the same event_id",
                    Default::default(),
                ));
                results[i] = Some(SendResult {
                    record: failed,
                    duplicate: false,
                });
            }
        }
    }
    for (_, group) in groups {
        let account_id = group[0].1.account_id.clone();
        let indexes: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
        let recs: Vec<EventRecord> = group.into_iter().map(|(_, r)| r).collect();
        let settled = match deps.meta.token(&account_id).await {
            Ok(t) => send_group(deps, &account_id, &t, recs, 0, end).await?,
            Err(ConnectError::TokenInvalid(_)) | Err(ConnectError::NotConnected) => {
                settle_all(deps, &account_id, recs, Outcome::NotConnected, 0, 0).await?
            }
            Err(e) => return Err(e.into()),
        };
        // `send_group` keeps the order of the records it was given.
        for (i, rec) in indexes.into_iter().zip(settled) {
            results[i] = Some(SendResult {
                record: rec,
                duplicate: false,
            });
        }
    }
    // A click captured between the lookup and the claim found nothing waiting yet: look
    // once more now that the claim is visible to capture.
    let looks = waiting.iter().map(|(_, rec)| async move {
        Ok::<_, CapiError>(match fulfil_waiting(deps, rec.clone(), false, end).await? {
            Some(settled) => settled,
            None => rec.clone(),
        })
    });
    let looked = crate::run_bounded_in_order(looks, BATCH_CONCURRENCY).await;
    for ((i, _), record) in waiting.iter().zip(looked) {
        results[*i] = Some(SendResult {
            record: record?,
            duplicate: false,
        });
    }
    let keys: Vec<(String, String)> = duplicates
        .iter()
        .map(|(_, r)| (r.account_id.clone(), r.dedup_key()))
        .collect();
    let waits = keys
        .iter()
        .map(|(account, key)| first_outcome(deps, account, key, end));
    let firsts = crate::run_bounded_in_order(waits, BATCH_CONCURRENCY).await;
    for ((i, _), first) in duplicates.into_iter().zip(firsts) {
        results[i] = Some(SendResult {
            record: first?,
            duplicate: true,
        });
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
    /// Conversions whose wait for a click ended with none: nothing sent.
    pub no_click: usize,
    /// Sent without an answer ([`OUTCOME_UNKNOWN`]): not sent again.
    pub unknown: usize,
    pub skipped: usize,
    /// Records left for the next run (deadline reached, or Meta kept failing).
    pub deferred: usize,
    /// Of those, the ones moved behind their account's other due records.
    pub rescheduled: usize,
    pub errors: usize,
    /// How long the oldest due conversion has waited since it was first sent (seconds;
    /// 0 when none is due): the `ResendBacklogAge` alarm's metric.
    pub oldest_due_age_secs: i64,
}

/// At most this many of one account's due records per resend run: one business with a
/// large backlog (its token broken, Meta refusing it) never holds back another's.
pub const RESEND_PER_ACCOUNT: usize = 50;

/// Stop sending for an account after this many transient failures in a row in one run
/// (Meta is down, or that business hit its rate limit); other accounts go on.
const RESEND_BREAKER: usize = 3;

/// Sends every due event again (pending ones, and in-flight ones whose sender died),
/// one at a time, with the same event id, until `deadline`. One event's failure never
/// stops the run.
pub async fn resend_due(
    deps: &CapiDeps,
    now_ms: i64,
    limit: usize,
    deadline: std::time::Instant,
) -> Result<ResendReport, CapiError> {
    let due = deps
        .events
        .due_events(now_ms, limit, RESEND_PER_ACCOUNT)
        .await?;
    let mut report = ResendReport {
        due: due.len(),
        oldest_due_age_secs: due
            .iter()
            .map(|e| (now_ms - e.created_at_ms).max(0) / 1000)
            .max()
            .unwrap_or(0),
        ..Default::default()
    };
    let mut transient: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for candidate in due {
        // Each send may take the whole budget: stop in time.
        if std::time::Instant::now() + deps.policy.budget + Duration::from_secs(2) > deadline {
            report.deferred += 1;
            continue;
        }
        if transient
            .get(&candidate.account_id)
            .is_some_and(|n| *n >= RESEND_BREAKER)
        {
            // Meta keeps failing for this account: its record waits for a later run,
            // behind the account's other due records (they get their turn then).
            report.deferred += 1;
            if candidate.status == EventStatus::Pending {
                let later = EventRecord {
                    next_attempt_at_ms: Some(
                        now_ms
                            + i64::try_from(deps.policy.resend_delay.as_millis()).unwrap_or(60_000),
                    ),
                    ..candidate.clone()
                };
                match deps.events.save_event(&later, &candidate.lease_id).await {
                    Ok(true) => report.rescheduled += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "a deferred event could not be rescheduled; it is retried next run")
                    }
                }
            }
            continue;
        }
        let account = candidate.account_id.clone();
        match resend_one(deps, candidate, now_ms, deadline).await {
            Ok(Some(EventStatus::Delivered)) => {
                report.delivered += 1;
                transient.remove(&account);
            }
            Ok(Some(EventStatus::Pending)) => {
                report.pending += 1;
                *transient.entry(account).or_default() += 1;
            }
            Ok(Some(EventStatus::NoClick)) => report.no_click += 1,
            Ok(Some(EventStatus::Unknown)) => report.unknown += 1,
            Ok(Some(_)) => report.failed += 1,
            Ok(None) => report.skipped += 1,
            Err(e) => {
                report.errors += 1;
                tracing::error!(error = %e, "resending one event failed; carrying on");
            }
        }
    }
    Ok(report)
}

/// The resend run's report as a CloudWatch Embedded Metric Format line (namespace
/// `ctwa`: `ConversionsResent`, `ConversionsFailed`, `ConversionsPending`).
pub fn resend_metrics_line(report: &ResendReport, now_ms: i64) -> String {
    crate::metrics::MetricLine::new()
        .count(
            crate::metrics::Metric::ConversionsResent,
            report.delivered as u64,
        )
        .count(
            crate::metrics::Metric::ConversionsFailed,
            report.failed as u64,
        )
        .count(
            crate::metrics::Metric::ConversionsPending,
            report.pending as u64,
        )
        .metric(
            crate::metrics::Metric::ResendBacklogAgeSeconds,
            report.oldest_due_age_secs as f64,
            crate::metrics::Unit::Seconds,
        )
        .field("report", report)
        .to_line(now_ms)
}

/// Resends one due event; `None` when it was not (or no longer) due.
async fn resend_one(
    deps: &CapiDeps,
    candidate: EventRecord,
    now_ms: i64,
    run_deadline: Instant,
) -> Result<Option<EventStatus>, CapiError> {
    // The index copy may lag: take over the record as it is now.
    let Some(rec) = deps
        .events
        .get_event(&candidate.account_id, &candidate.dedup_key())
        .await?
    else {
        return Ok(None);
    };
    if rec.status.is_final() || rec.next_attempt_at_ms.is_none_or(|t| t > now_ms) {
        return Ok(None);
    }
    if rec.status == EventStatus::WaitingForClick {
        // Its wait is over: sent if the click is there now, else ended `no_click`.
        let end = delivery_end(&deps.policy, Some(run_deadline));
        return Ok(fulfil_waiting(deps, rec, true, end)
            .await?
            .map(|r| r.status));
    }
    let lease = lease_id();
    // The lease runs from now, not from the start of the run.
    let until = crate::time::now_millis() + deps.policy.lease.as_millis() as i64;
    if !deps.events.lease_event(&rec, &lease, until).await? {
        return Ok(None);
    }
    let mut rec = EventRecord {
        lease_id: lease.clone(),
        status: EventStatus::InFlight,
        next_attempt_at_ms: Some(until),
        ..rec
    };
    if rec.event_time < crate::time::now_secs() - MAX_EVENT_AGE_SECS {
        let message = "event_time is older than 7 days: Meta would refuse it; not sent";
        fail_for_good(&mut rec, FailureReason::TooOld, message);
        save_settled(deps, &rec, &lease).await?;
        return Ok(Some(rec.status));
    }
    let end = delivery_end(&deps.policy, Some(run_deadline));
    Ok(send_leased(deps, rec, end).await?.map(|r| r.status))
}

/// Ends a record `failed` for `reason`, keeping its previous error as `last_error`.
fn fail_for_good(rec: &mut EventRecord, reason: FailureReason, message: &str) {
    let mut last = serde_json::Map::new();
    if let Some(e) = rec.error.take() {
        last.insert("last_error".into(), e);
    }
    rec.status = EventStatus::Failed;
    rec.next_attempt_at_ms = None;
    rec.updated_at_ms = crate::time::now_millis();
    rec.error = Some(reason.error(message, last));
}

/// Sends one record this caller holds the lease of, and saves its outcome.
async fn send_leased(
    deps: &CapiDeps,
    mut rec: EventRecord,
    end: Instant,
) -> Result<Option<EventRecord>, CapiError> {
    let token = match deps.meta.token(&rec.account_id).await {
        Ok(t) => t,
        Err(ConnectError::TokenInvalid(_)) | Err(ConnectError::NotConnected) => {
            let lease = rec.lease_id.clone();
            fail_for_good(&mut rec, FailureReason::MetaNotConnected, RECONNECT);
            save_settled(deps, &rec, &lease).await?;
            return Ok(Some(rec));
        }
        // Left due again after the lease; the error is reported.
        Err(e) => return Err(e.into()),
    };
    let account_id = rec.account_id.clone();
    let mut done = send_group(deps, &account_id, &token, vec![rec], 0, end).await?;
    Ok(done.pop())
}

/// The CAPI config as the API shows it (seed 001's `capi` object).
pub fn capi_view(config: &CapiSettings, connected: bool) -> Value {
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
        "forward_automatic_events": config.forward_automatic_events,
        "connected": connected,
    })
}
