use super::*;
use crate::domain::{Account, Channel, Route};
use crate::store::memory::MemoryStore;
use crate::store::{Accounts, Conversations, InboxKind};
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

const PNID: &str = "1204727649384372";
const OTHER_PNID: &str = "1204727649384999";

fn message(wamid: &str, pnid: &str, wa_id: &str, at_ms: i64) -> InboxItem {
    let m = json!({"id": wamid, "from": wa_id, "timestamp": (at_ms / 1000).to_string(),
        "type": "text", "text": {"body": "hi"},
        "referral": {"source_url": "https://fb.me/x", "source_id": "AD1", "source_type": "ad",
                     "ctwa_clid": format!("clid-{wamid}")}});
    InboxItem {
        id: format!("wa:{wamid}"),
        kind: InboxKind::Message,
        channel: Channel::Cloud,
        route: Route::PhoneNumberId(pnid.into()),
        waba_id: None,
        payload: m.to_string(),
        contact: None,
        received_at_ms: at_ms,
        expires_at: at_ms / 1000 + 86_400,
    }
}

/// The inbox as a list, scanned in its order, `page` items at a time.
struct ListInbox(Vec<InboxItem>);

#[async_trait]
impl InboxReader for ListInbox {
    async fn get(&self, id: &str) -> Result<Option<InboxItem>, StoreError> {
        Ok(self.0.iter().find(|i| i.id == id).cloned())
    }
    async fn received_between(
        &self,
        since_ms: i64,
        until_ms: i64,
        cursor: Option<&str>,
        page: u32,
    ) -> Result<InboxPage, StoreError> {
        let start = match cursor {
            Some(c) => self.0.iter().position(|i| i.id == c).unwrap() + 1,
            None => 0,
        };
        let end = (start + page as usize).min(self.0.len());
        let slice = &self.0[start..end];
        Ok(InboxPage {
            items: slice
                .iter()
                .filter(|i| (since_ms..=until_ms).contains(&i.received_at_ms))
                .cloned()
                .collect(),
            scanned: slice.len() as u64,
            next: (end < self.0.len()).then(|| self.0[end - 1].id.clone()),
        })
    }
}

#[derive(Default)]
struct Queue {
    messages: Mutex<Vec<DeadLetter>>,
    deleted: Mutex<Vec<String>>,
}

#[async_trait]
impl DeadLetters for Queue {
    async fn receive_one(&self, _: Duration) -> Result<Option<DeadLetter>, ReplayError> {
        let mut m = self.messages.lock().unwrap();
        Ok((!m.is_empty()).then(|| m.remove(0)))
    }
    async fn delete(&self, receipt: &str) -> Result<(), ReplayError> {
        self.deleted.lock().unwrap().push(receipt.into());
        Ok(())
    }
    async fn waiting(&self) -> Result<Option<u64>, ReplayError> {
        Ok(Some(self.messages.lock().unwrap().len() as u64))
    }
}

/// The stream: the records of the given items, numbered 100, 101, ...; `gone` answers
/// as a trimmed stream.
struct Stream {
    items: Vec<InboxItem>,
    gone: bool,
}

#[async_trait]
impl StreamReader for Stream {
    async fn records(&self, b: &BatchInfo) -> Result<Vec<StreamRecord>, StreamReadError> {
        if self.gone {
            return Err(StreamReadError::Gone("TrimmedDataAccessException".into()));
        }
        Ok(self
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| (format!("{}", 100 + i), it))
            .filter(|(s, _)| {
                seq_cmp(s, &b.start_sequence_number).is_ge()
                    && seq_cmp(s, &b.end_sequence_number).is_le()
            })
            .map(|(s, it)| {
                serde_json::from_value(json!({"eventName": "INSERT",
                    "dynamodb": {"NewImage": crate::stream::image_of(it), "SequenceNumber": s}}))
                .unwrap()
            })
            .collect())
    }
}

/// Conversations whose writes fail while `down` is set.
struct Flaky {
    inner: Arc<MemoryStore>,
    down: AtomicBool,
}

#[async_trait]
impl Conversations for Flaky {
    async fn record_click(&self, c: &crate::store::ClickRecord) -> Result<bool, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("throttled".into()));
        }
        self.inner.record_click(c).await
    }
    async fn upsert_conversation(
        &self,
        c: &crate::store::ConversationUpsert,
        f: Option<&crate::domain::FirstTouch>,
    ) -> Result<FirstTouchOutcome, StoreError> {
        self.inner.upsert_conversation(c, f).await
    }
    async fn get_conversation(
        &self,
        id: &str,
    ) -> Result<Option<crate::domain::Conversation>, StoreError> {
        self.inner.get_conversation(id).await
    }
    async fn link_customer(&self, a: &str, u: &str, p: &str) -> Result<(), StoreError> {
        self.inner.link_customer(a, u, p).await
    }
    async fn linked_customer(&self, a: &str, u: &str) -> Result<Option<String>, StoreError> {
        self.inner.linked_customer(a, u).await
    }
    async fn conversations_for_customer(
        &self,
        a: &str,
        k: &str,
    ) -> Result<Vec<crate::domain::Conversation>, StoreError> {
        self.inner.conversations_for_customer(a, k).await
    }
    async fn clicks_for_conversation(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<crate::domain::Click>, StoreError> {
        self.inner.clicks_for_conversation(id, limit).await
    }
    async fn clicks_for_customer(
        &self,
        a: &str,
        k: &str,
        limit: usize,
    ) -> Result<Vec<crate::domain::Click>, StoreError> {
        self.inner.clicks_for_customer(a, k, limit).await
    }
    async fn record_unrouted(&self, item: &InboxItem) -> Result<bool, StoreError> {
        self.inner.record_unrouted(item).await
    }
    async fn record_quarantined(&self, q: &crate::store::Quarantined) -> Result<(), StoreError> {
        self.inner.record_quarantined(q).await
    }
    async fn record_automatic_event(
        &self,
        a: &str,
        e: &crate::domain::AutomaticEvent,
    ) -> Result<bool, StoreError> {
        self.inner.record_automatic_event(a, e).await
    }
    async fn automatic_events(
        &self,
        a: &str,
        q: &crate::store::AutomaticEventQuery,
    ) -> Result<(Vec<crate::domain::AutomaticEvent>, Option<String>), StoreError> {
        self.inner.automatic_events(a, q).await
    }
}

struct World {
    deps: ReplayDeps,
    queue: Arc<Queue>,
    flaky: Arc<Flaky>,
}

async fn world(inbox: Vec<InboxItem>, gone: bool) -> World {
    let store = Arc::new(MemoryStore::new());
    for (id, pnid) in [("acct1", PNID), ("acct2", OTHER_PNID)] {
        store
            .create_account(&Account {
                id: id.into(),
                name: id.into(),
                waba_id: None,
                phone_number_ids: vec![pnid.into()],
                sinch_app_id: None,
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: 0,
            })
            .await
            .unwrap();
    }
    let flaky = Arc::new(Flaky {
        inner: store.clone(),
        down: AtomicBool::new(false),
    });
    let queue = Arc::new(Queue::default());
    let accounts: Arc<dyn Accounts> = store.clone();
    World {
        deps: ReplayDeps {
            capture: Arc::new(CaptureDeps::new(accounts, flaky.clone())),
            stream: Arc::new(Stream {
                items: inbox.clone(),
                gone,
            }),
            inbox: Arc::new(ListInbox(inbox)),
            dead_letters: Some(queue.clone()),
        },
        queue,
        flaky,
    }
}

fn letter(id: &str, start: &str, end: &str) -> DeadLetter {
    DeadLetter {
        message_id: id.into(),
        receipt: format!("r-{id}"),
        body: json!({"requestContext": {"condition": "RetryAttemptsExhausted"},
            "DDBStreamBatchInfo": {"shardId": "shardId-1", "startSequenceNumber": start,
            "endSequenceNumber": end, "streamArn": "arn:aws:dynamodb:us-east-1:1:table/i/stream/x",
            "approximateArrivalOfFirstRecord": "2026-12-02T01:00:00.000Z",
            "approximateArrivalOfLastRecord": "2026-12-02T01:00:01.000Z", "batchSize": 2}})
        .to_string(),
    }
}

fn req(v: serde_json::Value) -> ReplayRequest {
    serde_json::from_value(v).unwrap()
}

fn outcomes(r: &ReplayReport) -> Vec<(&str, &str)> {
    r.items
        .iter()
        .map(|i| (i.inbox_id.as_str(), i.outcome))
        .collect()
}

#[tokio::test]
async fn a_dead_letter_is_captured_then_deleted_and_a_second_replay_changes_nothing() {
    let now = crate::time::now_millis();
    let inbox = vec![
        message("m1", PNID, "15550000001", now - 3000),
        message("m2", PNID, "15550000002", now - 2000),
        message("m3", PNID, "15550000003", now - 1000),
    ];
    let w = world(inbox, false).await;
    // The batch of records 101..=102 failed: capture never saw m2 and m3.
    w.queue
        .messages
        .lock()
        .unwrap()
        .push(letter("d1", "101", "102"));
    let r = replay(&w.deps, req(json!({"dead_letters": true})), None)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&r),
        [
            ("wa:m2", "first_touch_captured"),
            ("wa:m3", "first_touch_captured")
        ]
    );
    assert_eq!((r.replayed, r.changed, r.failed), (2, 2, 0));
    let dl = r.dead_letters.as_ref().unwrap();
    assert_eq!((dl.received, dl.deleted, dl.waiting), (1, 1, Some(0)));
    assert!(r.done);
    assert_eq!(*w.queue.deleted.lock().unwrap(), ["r-d1"]);

    // The same message again (a redelivery), and the same items by id: nothing changes.
    w.queue
        .messages
        .lock()
        .unwrap()
        .push(letter("d1", "101", "102"));
    let again = replay(&w.deps, req(json!({"dead_letters": true})), None)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&again),
        [("wa:m2", "already_captured"), ("wa:m3", "already_captured")]
    );
    assert_eq!(again.changed, 0);
    let by_id = replay(
        &w.deps,
        req(json!({"message_ids": ["m2", "wa:m3", "nope"]})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(by_id.changed, 0);
    assert_eq!(by_id.not_found, ["nope"]);
    assert_eq!(by_id.replayed, 2);
}

#[tokio::test]
async fn a_letter_whose_items_fail_again_or_whose_records_are_gone_is_kept() {
    let now = crate::time::now_millis();
    let w = world(vec![message("m1", PNID, "15550000001", now)], false).await;
    w.flaky.down.store(true, Ordering::SeqCst);
    w.queue
        .messages
        .lock()
        .unwrap()
        .push(letter("d1", "100", "100"));
    let r = replay(&w.deps, req(json!({"dead_letters": true})), None)
        .await
        .unwrap();
    let dl = r.dead_letters.as_ref().unwrap();
    assert_eq!((dl.received, dl.deleted), (1, 0));
    assert_eq!(dl.kept[0].reason, "capture_failed");
    assert_eq!(outcomes(&r), [("wa:m1", "failed")]);
    assert!(w.queue.deleted.lock().unwrap().is_empty());

    let w = world(vec![message("m1", PNID, "15550000001", now)], true).await;
    w.queue
        .messages
        .lock()
        .unwrap()
        .push(letter("d2", "100", "100"));
    let r = replay(&w.deps, req(json!({"dead_letters": true})), None)
        .await
        .unwrap();
    let kept = &r.dead_letters.unwrap().kept[0];
    assert_eq!(kept.reason, "stream_records_gone");
    assert!(
        kept.detail.contains("since 2026-12-02T01:00:00.000Z"),
        "{}",
        kept.detail
    );
}

#[tokio::test]
async fn a_time_range_pages_through_the_inbox_for_one_account() {
    let now = crate::time::now_millis();
    let inbox: Vec<InboxItem> = (0..7)
        .map(|i| {
            let pnid = if i % 2 == 0 { PNID } else { OTHER_PNID };
            message(
                &format!("m{i}"),
                pnid,
                &format!("1555000000{i}"),
                now - 10_000 + i,
            )
        })
        .chain([message("old", PNID, "15550000009", now - 90_000_000)])
        .collect();
    let w = world(inbox, false).await;
    let since = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now - 60_000)
        .unwrap()
        .to_rfc3339();
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = replay(
            &w.deps,
            req(json!({"since": since, "account_id": "acct1", "limit": 3, "cursor": cursor})),
            None,
        )
        .await
        .unwrap();
        pages += 1;
        seen.extend(r.items.iter().map(|i| i.inbox_id.clone()));
        assert_eq!(r.done, r.next_cursor.is_none());
        match r.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["wa:m0", "wa:m2", "wa:m4", "wa:m6"]);
}

#[tokio::test]
async fn bad_requests_are_named() {
    let w = world(vec![], false).await;
    for (body, needle) in [
        (json!({}), "exactly one"),
        (
            json!({"message_ids": ["a"], "dead_letters": true}),
            "exactly one",
        ),
        (json!({"message_ids": []}), "1 to 100"),
        (json!({"message_ids": ["a b"]}), "not a message id"),
        (
            json!({"dead_letters": true, "account_id": "acct1"}),
            "account_id",
        ),
        (json!({"dead_letters": true, "limit": 11}), "1 to 10"),
        (json!({"since": "yesterday"}), "RFC 3339"),
        (
            json!({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}),
            "before since",
        ),
        (
            json!({"since": "2026-12-02T00:00:00Z", "limit": 0}),
            "1 to 1000",
        ),
        (
            json!({"since": "2026-12-02T00:00:00Z", "cursor": "abc"}),
            "cursor",
        ),
        (
            json!({"since": "2026-12-02T00:00:00Z", "account_id": "NO SPACES"}),
            "account",
        ),
    ] {
        match replay(&w.deps, req(body.clone()), None).await {
            Err(ReplayError::BadRequest(m)) => assert!(m.contains(needle), "{body}: {m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    let unknown: Result<ReplayRequest, _> = serde_json::from_value(json!({"sinse": "x"}));
    assert!(unknown.is_err());
}

#[test]
fn sequence_numbers_compare_as_numbers() {
    assert!(seq_cmp("9", "10").is_lt());
    assert!(seq_cmp("100000000000000000001", "99999999999999999999").is_gt());
    assert!(seq_cmp("0042", "42").is_eq());
}

#[test]
fn the_on_failure_record_of_lambda_is_read() {
    let b = BatchInfo::of_message(&letter("x", "1", "2").body).unwrap();
    assert_eq!(b.shard_id, "shardId-1");
    assert_eq!(b.end_sequence_number, "2");
    assert!(BatchInfo::of_message("{}").is_err());
}

#[tokio::test]
async fn a_page_short_of_time_stops_between_chunks_and_resumes_after_the_last_item_captured() {
    let now = crate::time::now_millis();
    let inbox: Vec<InboxItem> = (0..150)
        .map(|i| {
            message(
                &format!("m{i:03}"),
                PNID,
                &format!("1555{i:07}"),
                now - 10_000 + i,
            )
        })
        .collect();
    let w = world(inbox, false).await;
    let since = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now - 60_000)
        .unwrap()
        .to_rfc3339();
    // No time left: the first chunk runs, the rest is for the next request.
    let first = replay(
        &w.deps,
        req(json!({"since": since, "limit": 1000})),
        Some(Instant::now()),
    )
    .await
    .unwrap();
    assert_eq!(first.replayed, RANGE_CHUNK as u64);
    assert!(!first.done);
    let rest = replay(
        &w.deps,
        req(json!({"since": since, "limit": 1000, "cursor": first.next_cursor})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(rest.replayed, 50);
    assert!(rest.done);
    let mut all: Vec<&str> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|i| i.inbox_id.as_str())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 150, "each item once");
}
