//! Storage ports (narrow traits the handlers depend on) and their adapters:
//! [`dynamo`] for DynamoDB, [`memory`] for unit tests of domain logic.
//!
//! Every write that can be repeated (Meta retries webhooks for 36 hours; the stream
//! redelivers batches) is a conditional write, so a repeat is a no-op, not a duplicate.

pub mod dynamo;
/// In-memory adapters of every port, for unit tests of the domain.
#[cfg(any(test, feature = "test-support"))]
pub mod memory;

use crate::domain::{
    Account, AutomaticEvent, Channel, Click, Conversation, Customer, FirstTouch, Route,
};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was hit (an id or a route that already exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored item could not be read back into the domain.
    #[error("corrupt item: {0}")]
    Corrupt(String),
    /// The database failed (throttling, network, service error).
    #[error("storage backend: {0}")]
    Backend(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxKind {
    Message,
    AutomaticEvent,
}

impl InboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxKind::Message => "message",
            InboxKind::AutomaticEvent => "automatic_event",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "message" => Some(Self::Message),
            "automatic_event" => Some(Self::AutomaticEvent),
            _ => None,
        }
    }
}

/// One inbound item exactly as received, keyed by its channel-prefixed id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// `wa:<wamid>`, `wa-ae:<event id>` or `sinch:<message id>`.
    pub id: String,
    pub kind: InboxKind,
    pub channel: Channel,
    pub route: Route,
    /// The WhatsApp Business Account id of the webhook entry (Cloud API).
    pub waba_id: Option<String>,
    /// The raw message (Cloud API) or the whole callback (Sinch), as sent.
    pub payload: String,
    /// The raw `contacts[]` entry of the sender (Cloud API).
    pub contact: Option<String>,
    pub received_at_ms: i64,
    /// TTL, unix seconds.
    pub expires_at: i64,
}

#[async_trait]
pub trait Inbox: Send + Sync {
    /// Stores the item unless an item with its id exists. `true` when newly stored.
    async fn put_once(&self, item: &InboxItem) -> Result<bool, StoreError>;
}

/// An API key as stored: only its SHA-256 hash and a short display prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub hash: String,
    pub prefix: String,
    /// The account it is bound to (empty for an operator key).
    pub account_id: String,
    pub created_at_ms: i64,
    pub revoked: bool,
    /// Public id (`key_` + 16 hex of the hash): what list, rotate and revoke name.
    pub key_id: String,
    pub name: Option<String>,
    /// An operator key manages accounts and keys; it reads no account's data.
    pub operator: bool,
    /// Set by a rotation with a grace period: the key stops working then.
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// What an account key may do; `None` for a key stored before keys had scopes
    /// (it holds [`crate::auth::LEGACY_SCOPES`]) and for operator keys.
    pub scopes: Option<Vec<crate::auth::Scope>>,
    /// Holds one of its account's live-key places ([`Accounts::create_api_key`]); given
    /// back when the key is revoked or rotated away.
    pub counted: bool,
    /// Who made it: `operator`, `ctwa-admin`, or the key id of the account key that did.
    pub created_by: Option<String>,
}

impl ApiKeyRecord {
    /// The public id of a key: `key_` + the first 16 hex digits of its hash.
    pub fn key_id_for_hash(hash: &str) -> String {
        format!("key_{}", &hash[..hash.len().min(16)])
    }

    /// Usable now: not revoked, not past a rotation's grace period.
    pub fn is_active(&self, now_ms: i64) -> bool {
        !self.revoked && self.expires_at_ms.is_none_or(|e| e > now_ms)
    }

    /// The scopes the key holds (none for an operator key, which holds a role instead).
    pub fn effective_scopes(&self) -> Vec<crate::auth::Scope> {
        match (&self.scopes, self.operator) {
            (_, true) => Vec::new(),
            (Some(s), false) => s.clone(),
            (None, false) => crate::auth::LEGACY_SCOPES.to_vec(),
        }
    }
}

/// The most live (neither revoked nor rotated away) API keys an account may hold.
pub const MAX_LIVE_KEYS: u32 = 20;

/// The outcome of a key write that is conditional on what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrite {
    Done,
    /// The account holds [`MAX_LIVE_KEYS`] live keys: nothing was written.
    LimitReached,
    /// The key changed since it was read (revoked or rotated meanwhile): nothing was
    /// written.
    Changed,
}

/// How a rotated key ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEnd {
    /// Revoked at this time (millis).
    RevokedAt(i64),
    /// Keeps working until this time (millis): a grace period.
    ExpiresAt(i64),
}

/// One key or admin action, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// 16 random hex digits.
    pub id: String,
    pub at_ms: i64,
    /// The account acted on; `None` for deployment-wide actions (operator keys).
    pub account_id: Option<String>,
    /// `operator`, `account_key`, `ctwa-admin` or `connect` (routes checked with Meta
    /// when the account connected).
    pub actor_kind: String,
    /// The key that acted (none for `ctwa-admin`, which acts with AWS credentials).
    pub actor_key_id: Option<String>,
    /// `account.create`, `ad_account.link`, `api_key.create`, `api_key.rotate`,
    /// `api_key.revoke`, `operator_key.create`, `sinch_secret.set`, `route.link`,
    /// `route.move`, `route.remove`, `route.verify`.
    pub action: String,
    /// What was acted on: an account, ad account or key id, a route (`pnid:<id>`).
    pub target: String,
    /// The action's details (scopes given, grace period, ...); never a secret.
    pub detail: serde_json::Value,
}

impl AuditRecord {
    /// A record made now with a fresh random id.
    pub fn new(
        account_id: Option<&str>,
        actor_kind: &str,
        actor_key_id: Option<&str>,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b)?;
        Ok(Self {
            id: hex::encode(b),
            at_ms: crate::time::now_millis(),
            account_id: account_id.map(str::to_string),
            actor_kind: actor_kind.to_string(),
            actor_key_id: actor_key_id.map(str::to_string),
            action: action.to_string(),
            target: target.to_string(),
            detail,
        })
    }

    /// A record of `actor`'s action on `account_id`'s `target`, at `at_ms`.
    pub fn by(
        actor: &Actor,
        account_id: Option<&str>,
        action: &str,
        target: &str,
        detail: serde_json::Value,
        at_ms: i64,
    ) -> Result<Self, getrandom::Error> {
        let mut rec = Self::new(
            account_id,
            &actor.kind,
            actor.key_id.as_deref(),
            action,
            target,
            detail,
        )?;
        rec.at_ms = at_ms;
        Ok(rec)
    }

    /// Its place in its list (and the list's cursor): 15 digits of millis, `#`, the id.
    pub fn cursor(&self) -> String {
        format!("{}#{}", crate::time::sortable_millis(self.at_ms), self.id)
    }

    /// The answer's shape (the audit route and a route's own trail).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "at": crate::time::rfc3339_millis(self.at_ms),
            "account_id": self.account_id,
            "actor": {"kind": self.actor_kind, "key_id": self.actor_key_id},
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        })
    }
}

/// Who acted, as an audit record names it: a kind and the key that acted, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: String,
    pub key_id: Option<String>,
}

/// Whether `cursor` is one [`AuditRecord::cursor`] makes.
pub fn is_audit_cursor(cursor: &str) -> bool {
    cursor.split_once('#').is_some_and(|(ms, id)| {
        ms.len() == 15
            && ms.bytes().all(|b| b.is_ascii_digit())
            && id.len() == 16
            && id.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The audit trail of key and admin actions.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record_audit(&self, rec: &AuditRecord) -> Result<(), StoreError>;
    /// One page of an account's records (or the deployment-wide ones, for `None`),
    /// newest first, and the cursor of the next page.
    async fn audit_records(
        &self,
        account_id: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<AuditRecord>, Option<String>), StoreError>;
    /// The newest records about one target (a route's own trail), up to `limit`.
    async fn target_audit_records(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

#[async_trait]
pub trait Accounts: Send + Sync {
    /// Creates the account and claims its routes; `Conflict` when the id exists or a
    /// phone number id / Sinch app is already claimed by another account.
    async fn create_account(&self, account: &Account) -> Result<(), StoreError>;
    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    async fn account_for_route(&self, route: &Route) -> Result<Option<String>, StoreError>;
    /// The route with its state ([`RouteRecord`]): what capture admits by.
    async fn route_record(&self, route: &Route) -> Result<Option<RouteRecord>, StoreError>;
    /// Stores a key as given, outside the live-key count and the audit trail: operator
    /// keys and seeded keys. `Conflict` when it exists.
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    /// Creates an account's key in one transaction with its audit record, taking one of
    /// the account's `max_live` live-key places (a conditional counter: no race lets a
    /// 21st key in). The record is stored with `counted` set.
    async fn create_api_key(
        &self,
        key: &ApiKeyRecord,
        max_live: u32,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError>;
    /// Replaces `old` (as it was read) by `new` in one transaction with the audit
    /// record: `new` takes a live-key place, `old` ends as `end` and gives its place
    /// back. `Changed` when `old` is no longer as read.
    async fn rotate_api_key(
        &self,
        old: &ApiKeyRecord,
        new: &ApiKeyRecord,
        end: KeyEnd,
        max_live: u32,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError>;
    /// Revokes `key` (as it was read) in one transaction with the audit record, giving
    /// its live-key place back. `Changed` when it is no longer as read.
    async fn revoke_api_key(
        &self,
        key: &ApiKeyRecord,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError>;
    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// The keys of an account (or the operator keys, for `None`), oldest first.
    async fn api_keys(&self, account_id: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError>;
    async fn api_key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
}

/// The conversation fields every message refreshes (never the first touch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationUpsert {
    pub id: String,
    pub account_id: String,
    pub channel: Channel,
    pub business_id: String,
    pub customer_key: String,
    pub customer: Customer,
    pub now_ms: i64,
}

/// A click to append to the history (idempotent on conversation + message id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickRecord {
    pub account_id: String,
    pub customer_key: String,
    pub click: Click,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstTouchOutcome {
    /// This click is now the conversation's first touch.
    Captured,
    /// The conversation already holds an earlier click; nothing about it changed.
    Kept,
    /// No click id to capture (plain message, or a Status referral without `ctwa_clid`).
    NoClick,
}

#[async_trait]
pub trait Conversations: Send + Sync {
    /// Appends a click; `false` when that message's click was already recorded.
    async fn record_click(&self, click: &ClickRecord) -> Result<bool, StoreError>;
    /// Creates or refreshes the conversation and, when `first_touch` is given, captures
    /// it one-shot: it is written only if the conversation has no click id yet, or holds
    /// one from a strictly later click (messages may be processed out of order; the
    /// earliest click wins; on an exact tie the stored one stays). `captured_at_ms` is
    /// when the first touch was first captured and never moves. Later clicks never
    /// replace it.
    async fn upsert_conversation(
        &self,
        conv: &ConversationUpsert,
        first_touch: Option<&FirstTouch>,
    ) -> Result<FirstTouchOutcome, StoreError>;
    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError>;
    /// Links one customer's two identities in an account both ways: the business-scoped
    /// user id key (`u:...`) and the phone key (`wa:...`). A later link of the user id
    /// to another number replaces the earlier one (the customer changed number).
    async fn link_customer(
        &self,
        account_id: &str,
        user_key: &str,
        phone_key: &str,
    ) -> Result<(), StoreError>;
    /// The customer key linked to `key` (phone key for a user id key, and the reverse).
    async fn linked_customer(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError>;
    async fn conversations_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
    ) -> Result<Vec<Conversation>, StoreError>;
    /// The conversation's clicks, newest first.
    async fn clicks_for_conversation(
        &self,
        conversation_id: &str,
        limit: usize,
    ) -> Result<Vec<Click>, StoreError>;
    /// All clicks of a customer across the account's business lines, newest first
    /// (last-click attribution).
    async fn clicks_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
        limit: usize,
    ) -> Result<Vec<Click>, StoreError>;
    /// Keeps an inbound item whose route belongs to no account (until the inbox TTL:
    /// `item.expires_at`), to be captured when the route is linked ([`UnroutedBacklog`]).
    /// Atomic with the route's absence: `false` (nothing kept) when the route belongs
    /// to an account by now, so no item is kept after its route's backlog was drained.
    async fn record_unrouted(&self, item: &InboxItem) -> Result<bool, StoreError>;
    /// Keeps an inbound item that its route's account may not have (its webhook's WABA
    /// is not the account's, or the route was rejected), for the operator to see
    /// ([`RouteStore::quarantined`]), until the inbox TTL (`item.expires_at`). Never
    /// captured; a repeat writes the same item again.
    async fn record_quarantined(&self, q: &Quarantined) -> Result<(), StoreError>;
    async fn record_automatic_event(
        &self,
        account_id: &str,
        event: &AutomaticEvent,
    ) -> Result<bool, StoreError>;
    /// One page of the account's automatic events, newest first (by Meta's timestamp,
    /// then event id), and the cursor of the next page.
    async fn automatic_events(
        &self,
        account_id: &str,
        query: &AutomaticEventQuery,
    ) -> Result<(Vec<AutomaticEvent>, Option<String>), StoreError>;
}

/// What `GET /v1/automatic-events` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutomaticEventQuery {
    /// Events at or after this time (millis).
    pub since_ms: Option<i64>,
    /// Events at or before this time (millis).
    pub until_ms: Option<i64>,
    /// Only this event name (`Purchase`, `LeadSubmitted`), exact.
    pub event_name: Option<String>,
    pub limit: usize,
    /// The `next_cursor` of the previous page: [`automatic_event_cursor`] of its last event.
    pub cursor: Option<String>,
}

/// An automatic event's place in its account's list (and the list's cursor): Meta's
/// timestamp (15 digits of millis), `#`, the event id.
pub fn automatic_event_cursor(ev: &AutomaticEvent) -> String {
    format!(
        "{}#{}",
        crate::time::sortable_millis(ev.occurred_at_ms),
        ev.id
    )
}

/// Whether `cursor` is one [`automatic_event_cursor`] makes (and so is safe as a key).
pub fn is_automatic_event_cursor(cursor: &str) -> bool {
    cursor.len() <= 300
        && cursor.split_once('#').is_some_and(|(ms, id)| {
            ms.len() == 15 && ms.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty()
        })
}

/// A route whose unrouted items are still to be captured: written with the route
/// itself when an account claims it (one transaction), removed when its backlog is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogDrain {
    pub route: Route,
    pub account_id: String,
}

/// The items kept for routes that belonged to no account when they arrived, and the
/// drains owed once a route is linked. Items are read oldest first (received order).
#[async_trait]
pub trait UnroutedBacklog: Send + Sync {
    /// Routes linked to an account whose backlog may hold items, up to `limit`.
    async fn pending_drains(&self, limit: usize) -> Result<Vec<BacklogDrain>, StoreError>;
    /// The route's oldest unrouted items, in the order they were received, up to `limit`.
    async fn unrouted_items(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError>;
    /// Removes one unrouted item (it was captured; the raw stays in the inbox until its TTL).
    async fn remove_unrouted(&self, item: &InboxItem) -> Result<(), StoreError>;
    /// The route's backlog is empty: its drain is done.
    async fn finish_drain(&self, route: &Route) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Connected,
    /// The token is expired or revoked: the business must reconnect (exchange a new code).
    Broken,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Broken => "broken",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connected" => Some(Self::Connected),
            "broken" => Some(Self::Broken),
            _ => None,
        }
    }
}

/// An account's Meta connection: metadata only. The token itself lives in Secrets
/// Manager under `secret_id`, never in the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetaConnection {
    pub account_id: String,
    pub status: ConnectionStatus,
    /// `USER`, `SYSTEM_USER`, ... as `debug_token` says.
    pub token_type: Option<String>,
    pub scopes: Vec<String>,
    pub waba_id: Option<String>,
    /// Every WABA the token reaches (`debug_token`'s granular scopes); empty when not
    /// known (a connection recorded before they were kept).
    #[serde(default)]
    pub waba_ids: Vec<String>,
    /// Unix seconds; `None` for a token that never expires.
    pub expires_at: Option<i64>,
    pub connected_at_ms: i64,
    pub refreshed_at_ms: Option<i64>,
    /// The last refresh failure (Meta's message), if any.
    pub last_error: Option<String>,
    pub secret_id: String,
    /// When the current token was stored (millis); the secret carries the same number,
    /// so every function sees a refresh made by another one at its next read.
    #[serde(default)]
    pub token_version: i64,
}

#[async_trait]
pub trait Connections: Send + Sync {
    async fn put_connection(&self, c: &MetaConnection) -> Result<(), StoreError>;
    /// Writes `c` only if the stored connection still has `expected_token_version`
    /// (no reconnect or refresh happened meanwhile); `false` otherwise.
    async fn update_connection(
        &self,
        c: &MetaConnection,
        expected_token_version: i64,
    ) -> Result<bool, StoreError>;
    async fn get_connection(&self, account_id: &str) -> Result<Option<MetaConnection>, StoreError>;
    /// Connections whose token expires before `before` (unix seconds), soonest first.
    /// Never-expiring tokens are not listed.
    async fn connections_expiring_before(
        &self,
        before: i64,
    ) -> Result<Vec<MetaConnection>, StoreError>;
}

/// The CAPI settings an account stores (seed 001's `capi` object: dataset, triggers).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CapiSettings {
    /// The WhatsApp Business Account's dataset.
    pub dataset_id: Option<String>,
    /// The datasets of the account's Pages (Messenger) and Instagram accounts, by route
    /// key (`page:<id>`, `ig:<id>`). Each is its own attribute in the table, written once
    /// (like `dataset_id`), never in the saved config.
    #[serde(skip)]
    pub channel_datasets: std::collections::BTreeMap<String, String>,
    pub lead_event_enabled: bool,
    pub lead_event_trigger: Option<String>,
    pub lead_event_tag: Option<String>,
    pub purchase_event_enabled: bool,
    pub purchase_event_trigger: Option<String>,
    pub purchase_event_tag: Option<String>,
    pub purchase_event_currency: Option<String>,
    pub purchase_event_value: Option<f64>,
    /// Send Meta-detected purchases and leads (`automatic_events`) as conversions.
    #[serde(default)]
    pub forward_automatic_events: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Claimed and being sent now (a lease: if the sender dies, the resend job takes over).
    InFlight,
    Delivered,
    /// Meta was unavailable: the resend job sends it again with the same event id.
    Pending,
    Failed,
    /// No click yet for its customer: capture sends it when the click lands, or it
    /// ends `no_click` when the wait is over.
    WaitingForClick,
    /// No click came within the wait: nothing was sent (the seed 003 no-op).
    NoClick,
    /// Sent, but Meta's answer never came (a timeout, a dropped connection): Meta may
    /// have taken it. Never sent again (Meta does not deduplicate these events).
    Unknown,
}

impl EventStatus {
    /// Every status, as the audit trail and the answers name them.
    pub const ALL: [EventStatus; 7] = [
        Self::InFlight,
        Self::Delivered,
        Self::Pending,
        Self::Failed,
        Self::WaitingForClick,
        Self::NoClick,
        Self::Unknown,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::Delivered => "delivered",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::WaitingForClick => "waiting_for_click",
            Self::NoClick => "no_click",
            Self::Unknown => "unknown",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "in_flight" => Some(Self::InFlight),
            "delivered" => Some(Self::Delivered),
            "pending" => Some(Self::Pending),
            "failed" => Some(Self::Failed),
            "waiting_for_click" => Some(Self::WaitingForClick),
            "no_click" => Some(Self::NoClick),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Failed | Self::NoClick | Self::Unknown
        )
    }
}

/// One conversion send: the dedup record (keyed by account + event id) and the audit row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    pub account_id: String,
    pub event_id: String,
    pub event_name: String,
    pub conversation_id: Option<String>,
    pub ctwa_clid: String,
    pub dataset_id: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Unix seconds, as sent to Meta.
    pub event_time: i64,
    pub events_received: Option<i64>,
    pub fbtrace_id: Option<String>,
    pub duration_ms: Option<i64>,
    pub error: Option<serde_json::Value>,
    /// The `data[]` entry sent to Meta (hashed PII only), kept for resends.
    pub payload: String,
    pub test_event_code: Option<String>,
    /// When the resend job may take it (in flight: the lease's end; pending: the next try).
    pub next_attempt_at_ms: Option<i64>,
    /// Who holds the record now; writes are conditional on it.
    pub lease_id: String,
    pub warnings: Vec<String>,
    /// TTL (unix seconds) when audit rows are not kept forever.
    pub expires_at: Option<i64>,
    /// The ad of the attributed click (its referral `source_id`), for per-ad counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_id: Option<String>,
    /// While `waiting_for_click`: the customer key whose click it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

impl EventRecord {
    /// The dedup key: the event id, kept apart for test events (a `test_event_code`
    /// send does not block the production send of the same id, nor the reverse).
    pub fn dedup_key(&self) -> String {
        dedup_key(&self.event_id, self.test_event_code.as_deref())
    }
}

/// The dedup key of an event id sent with or without a `test_event_code`.
pub fn dedup_key(event_id: &str, test_event_code: Option<&str>) -> String {
    match test_event_code {
        Some(code) => format!("{event_id}|test:{code}"),
        None => event_id.to_string(),
    }
}

/// Each account's CAPI settings (seed 001's `capi` object).
#[async_trait]
pub trait CapiSettingsStore: Send + Sync {
    async fn get_capi(&self, account_id: &str) -> Result<Option<CapiSettings>, StoreError>;
    /// The account's settings, or the defaults when it saved none.
    async fn get_capi_or_default(&self, account_id: &str) -> Result<CapiSettings, StoreError> {
        Ok(self.get_capi(account_id).await?.unwrap_or_default())
    }
    /// Saves the config; `dataset_id` is written only when set (never removed).
    async fn put_capi(&self, account_id: &str, config: &CapiSettings) -> Result<(), StoreError>;
    /// Stores the dataset id unless one is stored already; answers the stored one.
    async fn set_dataset_if_absent(
        &self,
        account_id: &str,
        dataset_id: &str,
    ) -> Result<String, StoreError>;
    /// Stores the dataset of a Page or Instagram account (`route_key`) unless one is
    /// stored already; answers the stored one.
    async fn set_channel_dataset_if_absent(
        &self,
        account_id: &str,
        route_key: &str,
        dataset_id: &str,
    ) -> Result<String, StoreError>;
}

/// The conversion events: one record per event id, the dedup claim, the send's lease,
/// the resend queue and the audit trail.
#[async_trait]
pub trait ConversionEvents: Send + Sync {
    /// Creates the record unless the account already has one with this event id
    /// (`false`): the dedup gate before any Meta call.
    async fn claim_event(&self, rec: &EventRecord) -> Result<bool, StoreError>;
    /// The record of a dedup key ([`EventRecord::dedup_key`]).
    async fn get_event(
        &self,
        account_id: &str,
        dedup_key: &str,
    ) -> Result<Option<EventRecord>, StoreError>;
    /// Writes the record if `lease_id` still holds it; `false` when another sender took it over.
    async fn save_event(&self, rec: &EventRecord, lease_id: &str) -> Result<bool, StoreError>;
    /// Takes over a due record (pending, or in flight past its lease) with a new lease.
    async fn lease_event(
        &self,
        rec: &EventRecord,
        new_lease_id: &str,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Replaces a `waiting_for_click` record with `rec` (its click found, or its wait
    /// over) if `old_lease_id` still holds it: `false` when another taker was first.
    async fn take_waiting(&self, rec: &EventRecord, old_lease_id: &str)
    -> Result<bool, StoreError>;
    /// The account's conversions waiting for a click of this customer (at most 100).
    async fn waiting_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// Records due for a (re)send: at most `per_account` of each account (its oldest
    /// first), the accounts served in turn ([`round_robin`]), `limit` in all. One
    /// account's backlog never hides another's due records.
    async fn due_events(
        &self,
        now_ms: i64,
        limit: usize,
        per_account: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// The audit trail, newest first; `cursor` continues a previous page.
    async fn list_events(
        &self,
        account_id: &str,
        limit: usize,
        cursor: Option<&str>,
        status: Option<EventStatus>,
    ) -> Result<(Vec<EventRecord>, Option<String>), StoreError>;
}

/// Every key one customer's records may be under in an account: each WhatsApp spelling
/// of the number ([`crate::domain::equivalent_customer_keys`]) and the identity linked
/// to it (phone <-> business-scoped user id), `key` first.
pub async fn customer_keys(
    conversations: &dyn Conversations,
    account_id: &str,
    key: &str,
) -> Result<Vec<String>, StoreError> {
    let mut keys = crate::domain::equivalent_customer_keys(key);
    for k in keys.clone() {
        if let Some(other) = conversations.linked_customer(account_id, &k).await? {
            for e in crate::domain::equivalent_customer_keys(&other) {
                if !keys.contains(&e) {
                    keys.push(e);
                }
            }
        }
    }
    Ok(keys)
}

/// Whether a click at `a_ms` replaces a first touch clicked at `b_ms`: strictly earlier
/// only, so on an exact tie the stored click stays.
pub fn click_precedes(a_ms: i64, b_ms: i64) -> bool {
    a_ms < b_ms
}

/// First touch of a conversation from a click a conversion can be attributed to
/// ([`crate::domain::attributable`]: a click id on WhatsApp, an ad on Messenger and
/// Instagram).
pub fn first_touch_of(click: &Click, now_ms: i64) -> Option<FirstTouch> {
    if !crate::domain::attributable(click.channel, &click.referral) {
        return None;
    }
    Some(FirstTouch {
        ctwa_clid: click.referral.ctwa_clid.clone(),
        captured_at_ms: now_ms,
        clicked_at_ms: click.clicked_at_ms,
        message_id: click.message_id.clone(),
        referral: click.referral.clone(),
    })
}

/// An ad account linked to an account. A link is exclusive: an ad account belongs to at
/// most one account, so no key can reach another business's ads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdAccountLink {
    /// `act_<digits>`.
    pub ad_account_id: String,
    pub account_id: String,
    /// The Facebook Page the ads of this ad account run for, when known.
    pub page_id: Option<String>,
    pub linked_at_ms: i64,
}

/// A Marketing API object made through this deployment: its owner is known without
/// asking Meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdObject {
    pub id: String,
    /// campaign, adset, adcreative, ad, adimage.
    pub kind: String,
    pub account_id: String,
    pub ad_account_id: String,
    pub created_at_ms: i64,
}

/// What this deployment saw of one ad: captured clicks and the conversions sent for
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdStats {
    pub clicks: u64,
    pub conversions: u64,
    pub conversions_delivered: u64,
}

/// One ad's activity in this deployment's own data over a window, for the per-ad
/// report: the clicks captured on it, the conversations it was the first touch of, and
/// the production conversions credited to its clicks that Meta accepted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdActivity {
    pub clicks: Vec<ActivityClick>,
    /// The first touch's click time of each conversation first-touched by this ad.
    pub conversations: Vec<i64>,
    pub conversions: Vec<ActivityConversion>,
    /// A read stopped at its limit: the counts are a lower bound.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityClick {
    pub clicked_at_ms: i64,
    pub has_clid: bool,
}

/// A delivered conversion as the report needs it; `value` is the number as sent to Meta
/// (its JSON text, so no float rounding is added).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityConversion {
    pub event_name: String,
    pub event_time_ms: i64,
    pub value: Option<serde_json::Number>,
    pub currency: Option<String>,
}

impl ActivityConversion {
    /// From a stored record: its `custom_data.value` and `currency` as sent.
    pub fn from_record(r: &EventRecord) -> Self {
        let payload: serde_json::Value = serde_json::from_str(&r.payload).unwrap_or_default();
        let cd = &payload["custom_data"];
        let value = match &cd["value"] {
            serde_json::Value::Number(n) => Some(n.clone()),
            // A numeric string is how some clients send it; Meta accepts both.
            serde_json::Value::String(s) => s.trim().parse::<serde_json::Number>().ok(),
            _ => None,
        };
        Self {
            event_name: r.event_name.clone(),
            event_time_ms: r.event_time.saturating_mul(1000),
            value,
            currency: cd["currency"]
                .as_str()
                .map(|c| c.trim().to_ascii_uppercase()),
        }
    }
}

/// The window of an [`AdInventory::ad_activity`] read, in Unix milliseconds: clicks and
/// first touches by click time in `[from_ms, to_ms)`; conversions by the time they were
/// recorded in `[conversions_from_ms, conversions_to_ms)` (a conversion is recorded up
/// to 7 days after its `event_time`; the caller filters by `event_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityWindow {
    pub from_ms: i64,
    pub to_ms: i64,
    pub conversions_from_ms: i64,
    pub conversions_to_ms: i64,
    /// At most this many items of each kind are read.
    pub limit: usize,
}

/// The state of an idempotent request (`Idempotency-Key`).
#[derive(Debug, Clone, PartialEq)]
pub enum RequestClaim {
    /// This call owns the key: do the work, then `finish_request`.
    New,
    /// Another call with the key is still running (or died within the lease).
    InProgress,
    /// The key was used with another request body.
    Mismatch,
    /// Done before: the stored answer (status and body).
    Done {
        status: u16,
        body: serde_json::Value,
    },
}

/// What the ads function keeps: linked ad accounts, the objects it made, per-ad
/// counts, and the Idempotency-Key claims of its creations.
#[async_trait]
pub trait AdInventory: Send + Sync {
    /// Creates the account with its routes and ad accounts, all or nothing; `Conflict`
    /// when the id, a route or an ad account is taken.
    async fn create_account_with_ad_accounts(
        &self,
        account: &Account,
        links: &[AdAccountLink],
    ) -> Result<(), StoreError>;
    /// Links the ad account; repeating a link is a no-op; `Conflict` when another account
    /// holds it.
    async fn link_ad_account(&self, link: &AdAccountLink) -> Result<(), StoreError>;
    async fn ad_account(&self, ad_account_id: &str) -> Result<Option<AdAccountLink>, StoreError>;
    async fn ad_accounts(&self, account_id: &str) -> Result<Vec<AdAccountLink>, StoreError>;
    /// Records an object (a repeat is a no-op).
    async fn put_ad_object(&self, object: &AdObject) -> Result<(), StoreError>;
    async fn ad_object(&self, id: &str) -> Result<Option<AdObject>, StoreError>;
    async fn ad_stats(&self, account_id: &str, ad_id: &str) -> Result<AdStats, StoreError>;
    /// One ad's clicks, first touches and delivered production conversions in `window`
    /// (the ad's index partitions, `gsi2` and `gsi3`, read by key range).
    async fn ad_activity(
        &self,
        account_id: &str,
        ad_id: &str,
        window: ActivityWindow,
    ) -> Result<AdActivity, StoreError>;
    /// Meta's insights rows kept for days that are over: `(day, rows as JSON)` for the
    /// days from `since` to `until` (`YYYY-MM-DD`) that have them.
    async fn cached_insights(
        &self,
        ad_account_id: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Keeps one day's insights rows (a day that is over: they no longer change).
    async fn cache_insights(
        &self,
        ad_account_id: &str,
        day: &str,
        rows_json: &str,
    ) -> Result<(), StoreError>;
    /// Claims an idempotency key for a request whose body hashes to `request_hash`.
    /// A claim older than `lease_ms` that never finished is taken over.
    async fn claim_request(
        &self,
        account_id: &str,
        key: &str,
        request_hash: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<RequestClaim, StoreError>;
    async fn finish_request(
        &self,
        account_id: &str,
        key: &str,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), StoreError>;
    /// Gives the key back (the request made nothing): the next claim takes it over.
    async fn release_request(&self, account_id: &str, key: &str) -> Result<(), StoreError>;
}

/// Where a route stands. Routes are linked `pending` when the account's Meta token
/// cannot be asked yet (not connected; an account is always created before it
/// connects), `verified` once Meta listed the phone number under the account's WABA
/// (`GET /{waba_id}/phone_numbers` with the account's token), `rejected` when Meta's
/// list of that WABA does not hold it. Pending routes are captured, so a new business
/// loses no click before it connects; every Cloud API webhook is also checked against
/// the route's WABA at capture (a foreign `entry.id` is quarantined). Rejected routes
/// capture nothing: their messages are quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteStatus {
    Pending,
    Verified,
    Rejected,
}

impl RouteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verified => "verified",
            Self::Rejected => "rejected",
        }
    }
    /// A stored status; routes stored before statuses existed read as `pending`.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("verified") => Self::Verified,
            Some("rejected") => Self::Rejected,
            _ => Self::Pending,
        }
    }
}

/// A route as stored: its account, the WABA its webhooks must come from, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    pub route: Route,
    pub account_id: String,
    /// The account's WABA when the route was linked (or moved): a Cloud API webhook for
    /// the route whose `entry.id` is another WABA is quarantined. `None`: the account
    /// has no WABA, nothing to compare with.
    pub waba_id: Option<String>,
    pub status: RouteStatus,
    pub linked_at_ms: i64,
    /// When Meta was last asked about it.
    pub checked_at_ms: Option<i64>,
    /// Why it is pending or rejected (the last check's outcome).
    pub note: Option<String>,
}

impl RouteRecord {
    /// A route just linked to `account`, not checked with Meta.
    pub fn pending(route: Route, account: &Account, now_ms: i64) -> Self {
        Self {
            route,
            account_id: account.id.clone(),
            waba_id: account.waba_id.clone(),
            status: RouteStatus::Pending,
            linked_at_ms: now_ms,
            checked_at_ms: None,
            note: None,
        }
    }
}

/// An inbound item kept out of its route's account (never captured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub item: InboxItem,
    /// The account the route named when the item was held back.
    pub account_id: String,
    /// The WABA the route expects (the account's).
    pub expected_waba_id: Option<String>,
    /// `waba_mismatch` or `route_rejected`.
    pub reason: String,
}

/// Routes as the operator manages them. Every change is one transaction with its audit
/// record, conditional on what the caller read (no read-then-write race): a move or a
/// removal of a route that changed meanwhile writes nothing and answers `false`.
#[async_trait]
pub trait RouteStore: Send + Sync {
    /// Links a new route: the route item, the phone number id on the account, the drain
    /// of the route's unrouted items and the audit record. `Conflict` when the route is
    /// taken or the account does not exist.
    async fn link_route(&self, rec: &RouteRecord, audit: &AuditRecord) -> Result<(), StoreError>;
    /// Gives the route `from` holds to `to.account_id` (the accounts' lists follow), if
    /// it still is `from` (same account and link time); `audits` are the records of
    /// both accounts' trails.
    async fn move_route(
        &self,
        from: &RouteRecord,
        to: &RouteRecord,
        audits: &[AuditRecord],
    ) -> Result<bool, StoreError>;
    /// Removes the route (and the phone number id from its account) if it still is `current`.
    async fn remove_route(
        &self,
        current: &RouteRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Writes `rec`'s status, check time and note if the route still belongs to
    /// `rec.account_id` with `rec.linked_at_ms`.
    async fn set_route_status(
        &self,
        rec: &RouteRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// The route's quarantined items, newest first, up to `limit`.
    async fn quarantined(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<Quarantined>, StoreError>;
}

/// Each account's due records (each list oldest first) taken in turn: the first of
/// every account, then the second, ..., up to `limit`; the account whose oldest record
/// is the most overdue goes first in each turn.
pub fn round_robin(mut per_account: Vec<Vec<EventRecord>>, limit: usize) -> Vec<EventRecord> {
    per_account.retain(|l| !l.is_empty());
    per_account.sort_by_key(|l| {
        let first = &l[0];
        (
            first.next_attempt_at_ms.unwrap_or(i64::MAX),
            first.account_id.clone(),
        )
    });
    let mut lists: Vec<std::vec::IntoIter<EventRecord>> =
        per_account.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    while out.len() < limit && !lists.is_empty() {
        lists.retain_mut(|l| match l.next() {
            Some(r) if out.len() < limit => {
                out.push(r);
                true
            }
            _ => false,
        });
    }
    out
}
