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

    async fn route_for(&self, route: &Route) -> Result<Option<RouteRecord>, StoreError> {
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
    let parsed = match item.channel {
        crate::domain::Channel::Cloud => cloud_inbound(item),
        crate::domain::Channel::Sinch => sinch_inbound(item),
    };
    let msg = match parsed {
        Ok(m) => m,
        Err(e) => return Ok(skip(item, e.to_string())),
    };
    let Some(customer_key) = msg.customer.key() else {
        return Ok(skip(
            item,
            "message names no customer (no wa_id, no user_id)".into(),
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

/// Handles one stream batch. Records that fail for a retryable reason are reported in
/// `batchItemFailures`, so the stream redelivers from the earliest of them; the others
/// are done (and harmless to redo).
pub async fn handle_stream_event(deps: &CaptureDeps, event: StreamEvent) -> BatchResponse {
    let now_ms = crate::time::now_millis();
    let work = event.records.into_iter().map(|rec| async move {
            let seq = rec.dynamodb.sequence_number.clone();
            if rec.event_name != "INSERT" {
                return (seq, Ok(Outcome::Skipped(format!("{} record", rec.event_name))));
            }
            let Some(img) = rec.dynamodb.new_image.as_ref() else {
                tracing::error!(sequence_number = %seq, "stream record without NewImage (is the stream view type NEW_IMAGE?)");
                return (seq, Ok(Outcome::Skipped("no NewImage".into())));
            };
            match inbox_item_from_image(img) {
                Ok(item) => {
                    let r = process_item(deps, &item, now_ms).await;
                    (seq, r)
                }
                Err(e) => {
                    tracing::error!(sequence_number = %seq, error = %e, "unreadable stream record skipped");
                    (seq, Ok(Outcome::Skipped(e.to_string())))
                }
            }
    });
    let results: Vec<(String, Result<Outcome, StoreError>)> =
        crate::run_bounded(work, deps.concurrency).await;
    let mut failures = Vec::new();
    let (mut clicks, mut captured, mut held) = (0usize, 0usize, 0usize);
    for (seq, r) in results {
        match r {
            Ok(Outcome::Message {
                click_recorded,
                first_touch,
                ..
            }) => {
                clicks += usize::from(click_recorded);
                captured += usize::from(first_touch == FirstTouchOutcome::Captured);
            }
            Ok(Outcome::Quarantined(_)) => held += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(sequence_number = %seq, error = %e, "record failed; the stream will redeliver it");
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
