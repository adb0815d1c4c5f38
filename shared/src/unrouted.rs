//! Clicks that arrive before onboarding. A message for a phone number id or Sinch app
//! that belongs to no account is kept as an unrouted item (until the inbox TTL). When an
//! account claims that route, the same transaction records a drain; the capture-backlog
//! function (every minute) captures the route's unrouted items into the account, oldest
//! first, through the very capture step of the inbox stream, and removes each once it
//! is captured. Its work per invocation is bounded (items and the invocation's
//! deadline): a route with thousands of items is drained over several invocations, each
//! starting where the last one stopped (the oldest item still kept).
//!
//! Nothing is kept after its route's drain: an item is kept unrouted only while its
//! route is unclaimed (one transaction: the route's absence checked, the item written),
//! so once the route exists, a late message (or a redelivered one) is captured at once.
//! Every step is idempotent (the capture's conditional writes; removing an item twice is
//! harmless), so an invocation that stops anywhere, or two that overlap, lose nothing
//! and count nothing twice.

use crate::capture::{CaptureDeps, Outcome, process_item};
use crate::store::{InboxItem, RouteRecord, StoreError, UnroutedBacklog};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Routes one invocation looks at.
pub const ROUTES_PER_RUN: usize = 25;
/// Items read at once from one route's backlog.
pub const PAGE: usize = 50;

/// Keeps `item` as unrouted, unless its route was claimed meanwhile (the capture's
/// cache may be behind): then the route's account, read now, so the item is captured
/// into it at once. `None`: kept.
pub(crate) async fn keep_unless_routed(
    deps: &CaptureDeps,
    item: &InboxItem,
) -> Result<Option<RouteRecord>, StoreError> {
    if deps.conversations.record_unrouted(item).await? {
        tracing::warn!(inbox_id = %item.id, route = %item.route.key(), "webhook for a phone number id / Sinch app that belongs to no account; kept as unrouted until the route is linked or the inbox TTL");
        return Ok(None);
    }
    match deps.route_for_now(&item.route).await? {
        Some(route) => Ok(Some(route)),
        // The write was refused for another reason (a concurrent transaction on the
        // route): retried by the stream.
        None => Err(StoreError::Backend(format!(
            "unrouted item {} was not kept and route {} has no account yet",
            item.id,
            item.route.key()
        ))),
    }
}

/// What the capture step and the backlog need.
pub struct BacklogDeps {
    pub capture: Arc<CaptureDeps>,
    pub backlog: Arc<dyn UnroutedBacklog>,
}

/// What one drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Linked routes looked at.
    pub routes: usize,
    /// Routes whose backlog is now empty (their drain is done).
    pub routes_done: usize,
    /// Items captured into their account (and removed from the backlog).
    pub captured: usize,
    /// Items the route's account may not have (another WABA's): quarantined, removed
    /// from the backlog ([`crate::routes::admit`]).
    pub quarantined: usize,
    /// Items past the inbox TTL (DynamoDB's TTL deletes late): removed, not captured.
    pub expired: usize,
    /// Work is left for the next invocation.
    pub more: bool,
}

/// How much one invocation may do.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub items: usize,
    /// No item is started after it.
    pub deadline: Instant,
}

impl Budget {
    fn spent(&self) -> bool {
        self.items == 0 || Instant::now() >= self.deadline
    }
}

/// Captures the backlog of every linked route, oldest item first, within `budget`.
/// `Err` on a storage failure: what was captured stays captured, the rest is retried by
/// the next invocation.
pub async fn drain_backlog(
    deps: &BacklogDeps,
    now_ms: i64,
    mut budget: Budget,
) -> Result<DrainReport, StoreError> {
    let mut report = DrainReport::default();
    let drains = deps.backlog.pending_drains(ROUTES_PER_RUN).await?;
    report.more = drains.len() == ROUTES_PER_RUN;
    'routes: for drain in drains {
        report.routes += 1;
        let route = &drain.route;
        if deps.capture.route_for_now(route).await?.is_none() {
            tracing::error!(route = %route.key(), account_id = %drain.account_id, "a drain names a route that belongs to no account; left for an operator");
            continue;
        }
        loop {
            if budget.spent() {
                report.more = true;
                break 'routes;
            }
            let page = deps
                .backlog
                .unrouted_items(route, PAGE.min(budget.items))
                .await?;
            if page.is_empty() {
                deps.backlog.finish_drain(route).await?;
                report.routes_done += 1;
                tracing::info!(route = %route.key(), account_id = %drain.account_id, "unrouted backlog drained");
                break;
            }
            for item in &page {
                if budget.spent() {
                    report.more = true;
                    break 'routes;
                }
                budget.items -= 1;
                if item.expires_at > 0 && item.expires_at.saturating_mul(1000) <= now_ms {
                    report.expired += 1;
                } else {
                    match process_item(&deps.capture, item, now_ms).await? {
                        Outcome::Unrouted => {
                            tracing::error!(route = %route.key(), inbox_id = %item.id, "a linked route's item came out unrouted; left in the backlog");
                            continue 'routes;
                        }
                        Outcome::Quarantined(_) => report.quarantined += 1,
                        _ => report.captured += 1,
                    }
                }
                deps.backlog.remove_unrouted(item).await?;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureDeps;
    use crate::domain::{Account, Channel, Route};
    use crate::store::memory::MemoryStore;
    use crate::store::{Accounts, Conversations, InboxKind};
    use std::time::Duration;

    const PNID: &str = "1204727649384372";

    fn item(i: i64, wa_id: &str, clid: Option<&str>) -> InboxItem {
        let referral = clid
            .map(|c| format!(r#","referral":{{"source_id":"ad{i}","ctwa_clid":"{c}"}}"#))
            .unwrap_or_default();
        InboxItem {
            id: format!("wa:wamid.{i:05}"),
            kind: InboxKind::Message,
            channel: Channel::Cloud,
            route: Route::PhoneNumberId(PNID.into()),
            waba_id: None,
            payload: format!(
                r#"{{"id":"wamid.{i:05}","from":"{wa_id}","timestamp":"{}","type":"text"{referral}}}"#,
                1_750_000_000 + i
            ),
            contact: None,
            received_at_ms: 1_750_000_000_000 + i * 1000,
            expires_at: 4_000_000_000,
        }
    }

    fn deps(store: &Arc<MemoryStore>) -> BacklogDeps {
        BacklogDeps {
            capture: Arc::new(CaptureDeps::new(store.clone(), store.clone())),
            backlog: store.clone(),
        }
    }

    fn budget(items: usize) -> Budget {
        Budget {
            items,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    async fn link(store: &MemoryStore) {
        store
            .create_account(&Account {
                id: "acme".into(),
                name: "Acme".into(),
                waba_id: None,
                phone_number_ids: vec![PNID.into()],
                sinch_app_id: None,
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: 0,
            })
            .await
            .unwrap();
    }

    async fn capture_now(d: &BacklogDeps, it: &InboxItem) -> Outcome {
        process_item(&d.capture, it, 5).await.unwrap()
    }

    /// 250 clicks before onboarding: kept, then captured over three bounded runs, in
    /// order, each once; a fourth run finds nothing and a repeat changes nothing.
    #[tokio::test]
    async fn a_backlog_is_drained_in_order_over_bounded_runs() {
        let store = Arc::new(MemoryStore::new());
        let d = deps(&store);
        for i in 0..250 {
            let it = item(i, &format!("1650555{:04}", i % 100), Some(&format!("C{i}")));
            assert_eq!(capture_now(&d, &it).await, Outcome::Unrouted);
        }
        assert_eq!(store.unrouted.lock().unwrap().len(), 250);
        // Nothing to drain before the route is linked.
        let r = drain_backlog(&d, 5, budget(100)).await.unwrap();
        assert_eq!(r, DrainReport::default());
        link(&store).await;
        let mut runs = Vec::new();
        loop {
            let r = drain_backlog(&d, 5, budget(100)).await.unwrap();
            runs.push(r.clone());
            if !r.more {
                break;
            }
        }
        let captured: Vec<usize> = runs.iter().map(|r| r.captured).collect();
        assert_eq!(captured, [100, 100, 50]);
        assert_eq!(runs.last().unwrap().routes_done, 1);
        assert_eq!(store.click_count(), 250);
        assert!(store.unrouted.lock().unwrap().is_empty());
        // The first touch of each customer is their earliest click (message order).
        let conv = store
            .conversations_for_customer("acme", "wa:16505550007")
            .await
            .unwrap();
        assert_eq!(
            conv[0].first_touch.as_ref().unwrap().ctwa_clid.as_deref(),
            Some("C7")
        );
        let again = drain_backlog(&d, 5, budget(100)).await.unwrap();
        assert_eq!(again, DrainReport::default());
        assert_eq!(store.click_count(), 250);
    }

    /// Once the route is claimed, an item the capture still took for unrouted (a stale
    /// cache) is captured into the account at once, never kept.
    #[tokio::test]
    async fn nothing_is_kept_unrouted_once_the_route_is_claimed() {
        let store = Arc::new(MemoryStore::new());
        let d = deps(&store);
        assert_eq!(
            capture_now(&d, &item(1, "16505550001", Some("A"))).await,
            Outcome::Unrouted
        );
        link(&store).await;
        // The capture's cache still says "no account" for this route.
        let out = capture_now(&d, &item(2, "16505550002", Some("B"))).await;
        assert!(matches!(out, Outcome::Message { .. }), "{out:?}");
        assert_eq!(store.unrouted.lock().unwrap().len(), 1);
        let r = drain_backlog(&d, 5, budget(10)).await.unwrap();
        assert_eq!((r.captured, r.routes_done, r.more), (1, 1, false));
        assert_eq!(store.click_count(), 2);
    }

    #[tokio::test]
    async fn expired_items_are_removed_not_captured_and_the_deadline_stops_a_run() {
        let store = Arc::new(MemoryStore::new());
        let d = deps(&store);
        let mut old = item(1, "16505550001", Some("OLD"));
        old.expires_at = 1_000;
        capture_now(&d, &old).await;
        capture_now(&d, &item(2, "16505550002", Some("NEW"))).await;
        link(&store).await;
        let past = Budget {
            items: 10,
            deadline: Instant::now(),
        };
        let r = drain_backlog(&d, 2_000_000, past).await.unwrap();
        assert_eq!((r.captured, r.more), (0, true));
        let r = drain_backlog(&d, 2_000_000, budget(10)).await.unwrap();
        assert_eq!((r.captured, r.expired, r.routes_done), (1, 1, 1));
        assert_eq!(store.click_count(), 1);
        assert!(store.unrouted.lock().unwrap().is_empty());
    }
}
