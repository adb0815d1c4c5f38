//! The capture step, fed by the inbox stream: route each stored item to its account,
//! append every click to the customer's history, and capture the conversation's first
//! touch one-shot. Every step is idempotent, so a redelivered batch changes nothing.

use crate::capi::{CapiDeps, CapiError};
use crate::domain::{Click, Customer, Route, conversation_id};
use crate::meta::webhook::{cloud_automatic_event, cloud_inbound};
use crate::routes::{Admission, admit, quarantined};
use crate::sinch::sinch_inbound;
use crate::store::{
    Accounts, ClickRecord, ConversationUpsert, Conversations, FirstTouchOutcome, InboxItem,
    InboxKind, RouteRecord, StoreError, first_touch_of,
};
use crate::stream::{BatchItemFailure, BatchResponse, StreamEvent, inbox_item_from_image};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened to one inbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A customer message: its click (if any) and the conversation were written.
    Message {
        conversation_id: String,
        click_recorded: bool,
        first_touch: FirstTouchOutcome,
    },
    AutomaticEvent {
        new: bool,
    },
    /// Its phone number id / Sinch app belongs to no account: kept until the route is
    /// linked (then captured: [`crate::unrouted`]) or the inbox TTL.
    Unrouted,
    /// Its route's account may not have it (the webhook's WABA is not the account's, or
    /// the route was rejected): kept for the operator, never attributed
    /// ([`crate::routes::admit`]).
    Quarantined(&'static str),
    /// It can never be processed (unreadable, no customer id): logged, raw kept in the inbox.
    Skipped(String),
}

pub struct CaptureDeps {
    pub accounts: Arc<dyn Accounts>,
    pub conversations: Arc<dyn Conversations>,
    routes: Mutex<HashMap<Route, (Instant, Option<RouteRecord>)>>,
    /// Identity links (account, user key, phone key) written by this instance.
    links: Mutex<HashSet<(String, String, String)>>,
    /// How long a route -> account answer is reused (an unknown route: a tenth of it).
    pub route_ttl: Duration,
    /// How many records of a batch are processed at once.
    pub concurrency: usize,
    /// Sends the conversions that wait for a click when it is captured (`None`: the
    /// resend job ends them when their wait is over).
    pub conversions: Option<Arc<CapiDeps>>,
    /// Automatic events forwarded as conversions (the account's CAPI policy).
    pub forward: Option<crate::capi::automatic::Forwarding>,
}

impl CaptureDeps {
    pub fn new(accounts: Arc<dyn Accounts>, conversations: Arc<dyn Conversations>) -> Self {
        Self {
            accounts,
            conversations,
            routes: Mutex::new(HashMap::new()),
            links: Mutex::new(HashSet::new()),
            route_ttl: Duration::from_secs(60),
            concurrency: 16,
            conversions: None,
            forward: None,
        }
    }

    /// Capture that also sends the conversions waiting for the clicks it records.
    pub fn with_conversions(mut self, conversions: Arc<CapiDeps>) -> Self {
        self.conversions = Some(conversions);
        self
    }

    /// One customer, one key: a message that carries both the phone and the
    /// business-scoped user id links the two (once per warm instance); a message with
    /// only the user id goes under the phone key it was linked to, if any.
    async fn one_identity(
        &self,
        account_id: &str,
        customer: &Customer,
        key: String,
    ) -> Result<String, StoreError> {
        let user_key = customer
            .user_id
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| format!("u:{u}"));
        let Some(user_key) = user_key else {
            return Ok(key);
        };
        if key.starts_with("wa:") {
            let link = (account_id.to_string(), user_key.clone(), key.clone());
            let known = self
                .links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&link);
            if !known {
                self.conversations
                    .link_customer(account_id, &user_key, &key)
                    .await?;
                let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
                if links.len() > 10_000 {
                    links.clear();
                }
                links.insert(link);
            }
            return Ok(key);
        }
        Ok(self
            .conversations
            .linked_customer(account_id, &user_key)
            .await?
            .filter(|k| k.starts_with("wa:"))
            .unwrap_or(key))
    }

    /// The route's record, reused for [`CaptureDeps::route_ttl`].
    pub(crate) async fn route_for(&self, route: &Route) -> Result<Option<RouteRecord>, StoreError> {
        {
            let cache = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, acct)) = cache.get(route) {
                let ttl = if acct.is_some() {
                    self.route_ttl
                } else {
                    self.route_ttl / 10
                };
                if at.elapsed() < ttl {
                    return Ok(acct.clone());
                }
            }
        }
        self.route_for_now(route).await
    }

    /// The route read now (not from the cache), which is cached after.
    pub(crate) async fn route_for_now(
        &self,
        route: &Route,
    ) -> Result<Option<RouteRecord>, StoreError> {
        let acct = self.accounts.route_record(route).await?;
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(route.clone(), (Instant::now(), acct.clone()));
        Ok(acct)
    }
}

/// A stored message of any channel as the domain sees it.
pub fn inbound(
    item: &InboxItem,
) -> Result<crate::domain::InboundMessage, crate::meta::webhook::StoredMessageError> {
    use crate::domain::Channel;
    match item.channel {
        Channel::Cloud => cloud_inbound(item),
        Channel::Sinch => sinch_inbound(item),
        Channel::Messenger | Channel::Instagram => crate::meta::messaging::messaging_inbound(item),
    }
}

/// Processes one inbox item. `Err` only for failures worth retrying (storage errors).
pub async fn process_item(
    deps: &CaptureDeps,
    item: &InboxItem,
    now_ms: i64,
) -> Result<Outcome, StoreError> {
    let route = match deps.route_for(&item.route).await? {
        Some(r) => r,
        None => match crate::unrouted::keep_unless_routed(deps, item).await? {
            Some(r) => r,
            None => return Ok(Outcome::Unrouted),
        },
    };
    if let Admission::Quarantine(reason) = admit(&route, item) {
        deps.conversations
            .record_quarantined(&quarantined(&route, item, reason))
            .await?;
        tracing::warn!(inbox_id = %item.id, route = %item.route.key(), account_id = %route.account_id, webhook_waba_id = ?item.waba_id, route_waba_id = ?route.waba_id, reason, "webhook quarantined: not captured into the route's account (an operator sees it at GET /v1/admin/phone-numbers/{{phone_number_id}})");
        return Ok(Outcome::Quarantined(reason));
    }
    let account_id = route.account_id;
    if item.kind == InboxKind::AutomaticEvent {
        return match cloud_automatic_event(item) {
            Ok(ev) => {
                let new = deps
                    .conversations
                    .record_automatic_event(&account_id, &ev)
                    .await?;
                crate::capi::automatic::forward(deps, &account_id, item, &ev).await?;
                Ok(Outcome::AutomaticEvent { new })
            }
            Err(e) => Ok(skip(item, e.to_string())),
        };
    }
    let msg = match inbound(item) {
        Ok(m) => m,
        Err(e) => return Ok(skip(item, e.to_string())),
    };
    let Some(customer_key) = msg.customer.key() else {
        return Ok(skip(
            item,
            "message names no customer (no wa_id, user_id, PSID or IGSID)".into(),
        ));
    };
    let customer_key = deps
        .one_identity(&account_id, &msg.customer, customer_key)
        .await?;
    let conv_id = conversation_id(&account_id, msg.route.business_id(), &customer_key);
    let mut click_recorded = false;
    let mut first_touch = None;
    if let Some(referral) = msg.referral {
        let click = Click {
            conversation_id: conv_id.clone(),
            message_id: msg.message_id.clone(),
            channel: msg.channel,
            clicked_at_ms: msg.sent_at_ms,
            time_unverified: msg.time_unverified,
            referral,
        };
        // A click dated outside its callback's window is history, never a touch.
        if !click.time_unverified {
            first_touch = first_touch_of(&click, now_ms);
        } else {
            tracing::warn!(message = %msg.message_id, "click dated outside the window of its signed callback: kept in the history, never a first or last touch");
        }
        click_recorded = deps
            .conversations
            .record_click(&ClickRecord {
                account_id: account_id.clone(),
                customer_key: customer_key.clone(),
                click,
            })
            .await?;
    }
    let outcome = deps
        .conversations
        .upsert_conversation(
            &ConversationUpsert {
                id: conv_id.clone(),
                account_id: account_id.clone(),
                channel: msg.channel,
                business_id: msg.route.business_id().to_string(),
                customer_key: customer_key.clone(),
                customer: msg.customer,
                now_ms,
            },
            first_touch.as_ref(),
        )
        .await?;
    // A click with an id (the one that can be a first touch) may be awaited.
    if first_touch.is_some()
        && let Some(capi) = &deps.conversions
    {
        send_waiting(capi, item, &account_id, &customer_key).await?;
    }
    Ok(Outcome::Message {
        conversation_id: conv_id,
        click_recorded,
        first_touch: outcome,
    })
}

/// The conversions that waited for this click go out now. A storage error is retried
/// with the record; any other failure leaves them to the resend job (in flight under a
/// lease, or waiting until their wait is over).
async fn send_waiting(
    capi: &CapiDeps,
    item: &InboxItem,
    account_id: &str,
    customer_key: &str,
) -> Result<(), StoreError> {
    match crate::capi::click_captured(capi, account_id, customer_key).await {
        Ok(0) => Ok(()),
        Ok(sent) => {
            tracing::info!(inbox_id = %item.id, account_id, sent, "conversions that waited for this click were sent");
            Ok(())
        }
        Err(CapiError::Store(e)) => Err(e),
        Err(e) => {
            tracing::warn!(inbox_id = %item.id, account_id, error = %e, "sending the conversions that waited for this click failed; the resend job takes them");
            Ok(())
        }
    }
}

fn skip(item: &InboxItem, reason: String) -> Outcome {
    tracing::error!(inbox_id = %item.id, %reason, "inbox item cannot be processed; skipped (raw kept in the inbox)");
    Outcome::Skipped(reason)
}

/// What one item of a batch (a stream batch, or a replay's page) came to.
#[derive(Debug)]
pub enum ItemResult {
    Done(Outcome),
    /// A retryable failure: reported in `batchItemFailures`.
    Failed(StoreError),
    /// Not tried, because an earlier item of the same customer in this batch failed:
    /// reported too, and tried again after it when the stream redelivers.
    Held,
}

/// The identities that order a batch's records: a customer's phone (every spelling
/// WhatsApp may use for it, [`crate::domain::Phone::whatsapp_forms`]) and business-scoped
/// user id, whatever route the item came through. Records sharing any of them are one
/// customer's: their clicks, first touch and identity link (a message with the phone
/// and the user id links them; a later one with the user id alone is filed under the
/// phone it was linked to) are applied in the stream's order. Keyed by the customer, not
/// the conversation: the conversation is known only after the route is read, and an
/// account's identity links span all its routes. An automatic event or an unreadable
/// item names none: it is ordered with nothing.
fn order_keys(item: &InboxItem) -> Vec<String> {
    if item.kind != InboxKind::Message {
        return Vec::new();
    }
    let Ok(msg) = inbound(item) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = msg
        .customer
        .wa_id
        .as_deref()
        .and_then(|w| crate::domain::Phone::parse(w).ok())
        .map(|p| {
            p.whatsapp_forms()
                .iter()
                .map(|f| f.customer_key())
                .collect()
        })
        .unwrap_or_default();
    if let Some(u) = msg
        .customer
        .user_id
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        keys.push(format!("u:{u}"));
    }
    // A PSID / IGSID names one customer of one Page / Instagram account.
    if matches!(
        item.route,
        crate::domain::Route::Page(_) | crate::domain::Route::Instagram(_)
    ) && let Some(k) = msg.customer.key()
    {
        keys.push(format!("{}#{k}", item.route.key()));
    }
    keys
}

/// The batch's records (their indexes) as chains, one per customer: records that share
/// an identity ([`order_keys`]), directly or through another record, are one chain, in
/// the batch's order. Chains come ordered by their first record.
fn chains(keys: &[Vec<String>]) -> Vec<Vec<usize>> {
    // Union-find over the records; each identity joins the records that name it.
    let mut parent: Vec<usize> = (0..keys.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_with: HashMap<&str, usize> = HashMap::new();
    for (i, ks) in keys.iter().enumerate() {
        for k in ks {
            match first_with.get(k.as_str()) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    // The lower index stays the root: a chain is named by its first record.
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    first_with.insert(k, i);
                }
            }
        }
    }
    let mut by_root: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in 0..keys.len() {
        let r = root(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    let mut roots: Vec<usize> = by_root.keys().copied().collect();
    roots.sort_unstable();
    for r in roots {
        out.extend(by_root.remove(&r));
    }
    out
}

/// Captures `items` (in the order they were stored): different customers' items at once
/// (at most [`CaptureDeps::concurrency`] in flight), one customer's ([`chains`]) one after
/// the other. Once an item fails, the later items of its customer are [`ItemResult::Held`].
/// One result per item, in the order given. The stream batch and a replay both use it.
pub async fn capture_in_order(
    deps: &CaptureDeps,
    items: &[InboxItem],
    now_ms: i64,
) -> Vec<ItemResult> {
    let keys: Vec<Vec<String>> = items.iter().map(order_keys).collect();
    let work = chains(&keys).into_iter().map(|chain| async move {
        let mut done = Vec::with_capacity(chain.len());
        let mut failed = false;
        for k in chain {
            let r = if failed {
                ItemResult::Held
            } else {
                match process_item(deps, &items[k], now_ms).await {
                    Ok(o) => ItemResult::Done(o),
                    Err(e) => {
                        failed = true;
                        ItemResult::Failed(e)
                    }
                }
            };
            done.push((k, r));
        }
        done
    });
    let mut out: Vec<Option<ItemResult>> = items.iter().map(|_| None).collect();
    for (k, r) in crate::run_bounded(work, deps.concurrency)
        .await
        .into_iter()
        .flatten()
    {
        out[k] = Some(r);
    }
    out.into_iter()
        .map(|r| r.unwrap_or(ItemResult::Held))
        .collect()
}

/// Handles one stream batch. Different customers' records run at once (at most
/// [`CaptureDeps::concurrency`], 16, in flight); one customer's records ([`chains`]) run
/// one after the other in the stream's order. Records that fail for a retryable reason
/// are reported in `batchItemFailures` (their sequence numbers, in the batch's order), so
/// the stream redelivers from the earliest of them; once a record fails, the later
/// records of its customer are not tried and are reported too, so they are never applied
/// before it. The other records are done (and harmless to redo when redelivered after the
/// earliest failure).
pub async fn handle_stream_event(deps: &CaptureDeps, event: StreamEvent) -> BatchResponse {
    let now_ms = crate::time::now_millis();
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(event.records.len());
    let mut seqs = Vec::with_capacity(event.records.len());
    // The records to capture: (index in the batch, item).
    let mut items: Vec<(usize, InboxItem)> = Vec::new();
    for (i, rec) in event.records.into_iter().enumerate() {
        let seq = rec.dynamodb.sequence_number;
        let skipped = if rec.event_name != "INSERT" {
            Some(format!("{} record", rec.event_name))
        } else {
            match rec.dynamodb.new_image.as_ref().map(inbox_item_from_image) {
                None => {
                    tracing::error!(sequence_number = %seq, "stream record without NewImage (is the stream view type NEW_IMAGE?)");
                    Some("no NewImage".into())
                }
                Some(Err(e)) => {
                    tracing::error!(sequence_number = %seq, error = %e, "unreadable stream record skipped");
                    Some(e.to_string())
                }
                Some(Ok(item)) => {
                    items.push((i, item));
                    None
                }
            }
        };
        results.push(skipped.map(|why| ItemResult::Done(Outcome::Skipped(why))));
        seqs.push(seq);
    }
    let (at, items): (Vec<usize>, Vec<InboxItem>) = items.into_iter().unzip();
    for (i, r) in at
        .into_iter()
        .zip(capture_in_order(deps, &items, now_ms).await)
    {
        results[i] = Some(r);
    }
    let mut failures = Vec::new();
    let (mut clicks, mut captured, mut held) = (0usize, 0usize, 0usize);
    for (seq, r) in seqs.into_iter().zip(results) {
        match r {
            Some(ItemResult::Done(Outcome::Message {
                click_recorded,
                first_touch,
                ..
            })) => {
                clicks += usize::from(click_recorded);
                captured += usize::from(first_touch == FirstTouchOutcome::Captured);
            }
            Some(ItemResult::Done(Outcome::Quarantined(_))) => held += 1,
            Some(ItemResult::Done(_)) => {}
            Some(ItemResult::Failed(e)) => {
                tracing::warn!(sequence_number = %seq, error = %e, "record failed; the stream will redeliver it");
                failures.push(BatchItemFailure {
                    item_identifier: seq,
                });
            }
            // Every record has a result; a missing one is retried rather than lost.
            Some(ItemResult::Held) | None => {
                tracing::warn!(sequence_number = %seq, "record not tried: an earlier record of the same customer failed; the stream will redeliver it after that one");
                failures.push(BatchItemFailure {
                    item_identifier: seq,
                });
            }
        }
    }
    tracing::info!(
        clicks,
        first_touches = captured,
        quarantined = held,
        failures = failures.len(),
        "capture batch done"
    );
    BatchResponse {
        batch_item_failures: failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Account, AutomaticEvent, Channel, Click, Conversation};
    use crate::store::memory::MemoryStore;
    use crate::store::{AutomaticEventQuery, Quarantined};
    use serde_json::json;

    const PNID: &str = "1204727649384372";

    /// The in-memory store, where each click's write takes the time its message asks
    /// for (and `fail`'s click fails), and linking two identities takes 15 ms; it keeps
    /// the clicks in the order they landed, with the customer key they were filed under.
    struct Recording {
        inner: Arc<MemoryStore>,
        delays: HashMap<String, u64>,
        fail: HashSet<String>,
        landed: Mutex<Vec<(String, String)>>,
    }

    #[async_trait::async_trait]
    impl Conversations for Recording {
        async fn record_click(&self, c: &ClickRecord) -> Result<bool, StoreError> {
            let id = &c.click.message_id;
            let ms = self.delays.get(id).copied().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if self.fail.contains(id) {
                return Err(StoreError::Backend(format!("throttled writing {id}")));
            }
            let r = self.inner.record_click(c).await;
            self.landed
                .lock()
                .unwrap()
                .push((id.clone(), c.customer_key.clone()));
            r
        }
        async fn upsert_conversation(
            &self,
            conv: &ConversationUpsert,
            first_touch: Option<&crate::domain::FirstTouch>,
        ) -> Result<FirstTouchOutcome, StoreError> {
            self.inner.upsert_conversation(conv, first_touch).await
        }
        async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
            self.inner.get_conversation(id).await
        }
        async fn link_customer(&self, a: &str, u: &str, p: &str) -> Result<(), StoreError> {
            tokio::time::sleep(Duration::from_millis(15)).await;
            self.inner.link_customer(a, u, p).await
        }
        async fn linked_customer(&self, a: &str, k: &str) -> Result<Option<String>, StoreError> {
            self.inner.linked_customer(a, k).await
        }
        async fn conversations_for_customer(
            &self,
            a: &str,
            k: &str,
        ) -> Result<Vec<Conversation>, StoreError> {
            self.inner.conversations_for_customer(a, k).await
        }
        async fn clicks_for_conversation(
            &self,
            id: &str,
            limit: usize,
        ) -> Result<Vec<Click>, StoreError> {
            self.inner.clicks_for_conversation(id, limit).await
        }
        async fn clicks_for_customer(
            &self,
            a: &str,
            k: &str,
            limit: usize,
        ) -> Result<Vec<Click>, StoreError> {
            self.inner.clicks_for_customer(a, k, limit).await
        }
        async fn record_unrouted(&self, item: &InboxItem) -> Result<bool, StoreError> {
            self.inner.record_unrouted(item).await
        }
        async fn record_quarantined(&self, q: &Quarantined) -> Result<(), StoreError> {
            self.inner.record_quarantined(q).await
        }
        async fn record_automatic_event(
            &self,
            a: &str,
            e: &AutomaticEvent,
        ) -> Result<bool, StoreError> {
            self.inner.record_automatic_event(a, e).await
        }
        async fn automatic_events(
            &self,
            a: &str,
            q: &AutomaticEventQuery,
        ) -> Result<(Vec<AutomaticEvent>, Option<String>), StoreError> {
            self.inner.automatic_events(a, q).await
        }
    }

    /// A Cloud API message with a CTWA click, from a phone, a user id, or both.
    fn message(wamid: &str, wa_id: Option<&str>, user_id: Option<&str>) -> InboxItem {
        let now_s = crate::time::now_millis() / 1000;
        let mut m = json!({"id": wamid, "timestamp": now_s.to_string(), "type": "text",
            "text": {"body": "hi"},
            "referral": {"source_url": "https://fb.me/x", "source_id": "AD1", "source_type": "ad",
                         "ctwa_clid": format!("clid-{wamid}")}});
        if let Some(w) = wa_id {
            m["from"] = json!(w);
        }
        if let Some(u) = user_id {
            m["from_user_id"] = json!(u);
        }
        InboxItem {
            id: format!("wa:{wamid}"),
            kind: InboxKind::Message,
            channel: Channel::Cloud,
            route: Route::PhoneNumberId(PNID.into()),
            waba_id: None,
            payload: m.to_string(),
            contact: None,
            received_at_ms: now_s * 1000,
            expires_at: now_s + 86_400,
        }
    }

    /// Sequence numbers of different lengths, as DynamoDB's are.
    fn seq(i: usize) -> String {
        format!("{}", 9 * 10usize.pow(i as u32 / 3) + i)
    }

    fn batch(items: &[InboxItem]) -> StreamEvent {
        let records: Vec<serde_json::Value> = items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                json!({"eventID": i.to_string(), "eventName": "INSERT",
                "dynamodb": {"NewImage": crate::stream::image_of(it), "SequenceNumber": seq(i)}})
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    async fn recording(delays: &[(&str, u64)], fail: &[&str]) -> (CaptureDeps, Arc<Recording>) {
        let store = Arc::new(MemoryStore::new());
        store
            .create_account(&Account {
                id: "acct1".into(),
                name: "One".into(),
                waba_id: None,
                phone_number_ids: vec![PNID.into()],
                sinch_app_id: None,
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: 0,
            })
            .await
            .unwrap();
        let rec = Arc::new(Recording {
            inner: store.clone(),
            delays: delays.iter().map(|(m, d)| (m.to_string(), *d)).collect(),
            fail: fail.iter().map(|m| m.to_string()).collect(),
            landed: Mutex::new(Vec::new()),
        });
        (CaptureDeps::new(store, rec.clone()), rec)
    }

    #[tokio::test(start_paused = true)]
    async fn one_customer_in_order_customers_at_once_a_failure_holds_the_rest_of_its_customer() {
        // Earlier records of a customer take longer than its later ones: run at once,
        // they would land out of order.
        let (deps, rec) = recording(
            &[("a1", 30), ("b1", 10), ("a2", 20), ("c1", 5), ("d1", 25)],
            &["b1"],
        )
        .await;
        let items = [
            message("a1", Some("15550000001"), None),
            message("b1", Some("15550000002"), None),
            message("a2", Some("+1 555 000 0001"), None),
            message("c1", None, Some("US.C")),
            message("b2", Some("15550000002"), None),
            message("a3", Some("15550000001"), None),
            // d1 links the phone and the user id; d2 names the user id only, and is
            // filed under the phone only if d1's link was written before it ran.
            message("d1", Some("15550000004"), Some("US.D")),
            message("d2", None, Some("US.D")),
        ];
        let started = tokio::time::Instant::now();
        let resp = handle_stream_event(&deps, batch(&items)).await;
        let took = started.elapsed();

        // b1 failed: it and b2 (not tried) are reported, in the batch's order, so the
        // stream redelivers from b1, the earliest; nothing of b's was applied.
        let reported: Vec<&str> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(reported, [seq(1), seq(4)]);
        let landed = rec.landed.lock().unwrap().clone();
        let of = |prefix: char| -> Vec<(String, String)> {
            landed
                .iter()
                .filter(|(m, _)| m.starts_with(prefix))
                .cloned()
                .collect()
        };
        let a: Vec<String> = of('a').into_iter().map(|(m, _)| m).collect();
        assert_eq!(
            a,
            ["a1", "a2", "a3"],
            "one customer's clicks in stream order"
        );
        assert!(
            of('b').is_empty(),
            "nothing of the failed customer after its failure"
        );
        assert_eq!(of('c').len(), 1);
        assert_eq!(
            of('d'),
            [
                ("d1".to_string(), "wa:15550000004".to_string()),
                ("d2".to_string(), "wa:15550000004".to_string())
            ],
            "the user-id-only message comes after the link and is filed under the phone"
        );
        // The customers ran at once: the longest chain (a: 30 + 20 ms), not the sum of
        // every write (130 ms).
        assert!(took < Duration::from_millis(60), "took {took:?}");

        // The redelivery from b1 (what Lambda sends) applies b1 then b2, and redoes
        // a3, d1 and d2 harmlessly.
        let (deps2, rec2) = recording(&[], &[]).await;
        let resp = handle_stream_event(&deps2, batch(&items[1..])).await;
        assert!(resp.batch_item_failures.is_empty());
        let b: Vec<String> = rec2
            .landed
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m.starts_with('b'))
            .map(|(m, _)| m.clone())
            .collect();
        assert_eq!(b, ["b1", "b2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn customers_run_at_once_up_to_the_limit() {
        let ids = ["e1", "e2", "e3", "e4", "e5"];
        let (mut deps, rec) = recording(&ids.map(|m| (m, 10)), &[]).await;
        deps.concurrency = 2;
        let items: Vec<InboxItem> = ids
            .iter()
            .enumerate()
            .map(|(i, m)| message(m, Some(&format!("1555000010{i}")), None))
            .collect();
        let started = tokio::time::Instant::now();
        let resp = handle_stream_event(&deps, batch(&items)).await;
        assert!(resp.batch_item_failures.is_empty());
        assert_eq!(rec.landed.lock().unwrap().len(), 5);
        // Five 10 ms writes, two at a time: three rounds.
        assert_eq!(started.elapsed(), Duration::from_millis(30));
    }

    #[test]
    fn records_sharing_an_identity_are_one_chain_in_batch_order() {
        let keys = |v: &[&str]| v.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        // 1 names only the user id; 2 links it to 0's phone: 0, 1, 2 are one customer.
        let got = chains(&[
            keys(&["wa:1"]),
            keys(&["u:x"]),
            keys(&["wa:1", "u:x"]),
            keys(&[]),
            keys(&["wa:2"]),
            keys(&["u:x"]),
        ]);
        assert_eq!(got, vec![vec![0, 1, 2, 5], vec![3], vec![4]]);
        // Every WhatsApp spelling of one number is one customer.
        let forms = order_keys(&message("m", Some("5215512345678"), None));
        assert!(forms.contains(&"wa:5215512345678".to_string()));
        assert!(forms.contains(&"wa:525512345678".to_string()));
    }
}
