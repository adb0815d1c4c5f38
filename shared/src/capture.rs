//! The capture step, fed by the inbox stream: route each stored item to its account,
//! append every click to the customer's history, and capture the conversation's first
//! touch one-shot. Every step is idempotent, so a redelivered batch changes nothing.

use crate::domain::{Click, Route, conversation_id};
use crate::meta::webhook::{cloud_automatic_event, cloud_inbound};
use crate::sinch::sinch_inbound;
use crate::store::{
    Accounts, ClickRecord, ConversationUpsert, Conversations, FirstTouchOutcome, InboxItem,
    InboxKind, StoreError, first_touch_of,
};
use crate::stream::{BatchItemFailure, BatchResponse, StreamEvent, inbox_item_from_image};
use std::collections::HashMap;
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
    /// It can never be processed (unreadable, no customer id): logged, raw kept in the inbox.
    Skipped(String),
}

pub struct CaptureDeps {
    pub accounts: Arc<dyn Accounts>,
    pub conversations: Arc<dyn Conversations>,
    routes: Mutex<HashMap<Route, (Instant, Option<String>)>>,
    /// How long a route -> account answer is reused (an unknown route: a tenth of it).
    pub route_ttl: Duration,
    /// How many records of a batch are processed at once.
    pub concurrency: usize,
}

impl CaptureDeps {
    pub fn new(accounts: Arc<dyn Accounts>, conversations: Arc<dyn Conversations>) -> Self {
        Self {
            accounts,
            conversations,
            routes: Mutex::new(HashMap::new()),
            route_ttl: Duration::from_secs(60),
            concurrency: 16,
        }
    }

    async fn account_for(&self, route: &Route) -> Result<Option<String>, StoreError> {
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
        self.account_for_now(route).await
    }

    /// The route's account read now (not from the cache), which is cached after.
    pub(crate) async fn account_for_now(
        &self,
        route: &Route,
    ) -> Result<Option<String>, StoreError> {
        let acct = self.accounts.account_for_route(route).await?;
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
    let account_id = match deps.account_for(&item.route).await? {
        Some(a) => a,
        None => match crate::unrouted::keep_unless_routed(deps, item).await? {
            Some(a) => a,
            None => return Ok(Outcome::Unrouted),
        },
    };
    if item.kind == InboxKind::AutomaticEvent {
        return match cloud_automatic_event(item) {
            Ok(ev) => {
                let new = deps
                    .conversations
                    .record_automatic_event(&account_id, &ev)
                    .await?;
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
    let conv_id = conversation_id(&account_id, msg.route.business_id(), &customer_key);
    let mut click_recorded = false;
    let mut first_touch = None;
    if let Some(referral) = msg.referral {
        let click = Click {
            conversation_id: conv_id.clone(),
            message_id: msg.message_id.clone(),
            channel: msg.channel,
            clicked_at_ms: msg.sent_at_ms,
            referral,
        };
        first_touch = first_touch_of(&click, now_ms);
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
                account_id,
                channel: msg.channel,
                business_id: msg.route.business_id().to_string(),
                customer_key,
                customer: msg.customer,
                now_ms,
            },
            first_touch.as_ref(),
        )
        .await?;
    Ok(Outcome::Message {
        conversation_id: conv_id,
        click_recorded,
        first_touch: outcome,
    })
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
    let (mut clicks, mut captured) = (0usize, 0usize);
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
        failures = failures.len(),
        "capture batch done"
    );
    BatchResponse {
        batch_item_failures: failures,
    }
}
