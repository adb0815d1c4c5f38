//! Replay: capture run again over what it did not finish (issue 15, item 2).
//!
//! Three ways to choose the inbox items, one per request (`POST /v1/admin/replay`,
//! `ctwa admin replay`):
//! - **by message id**: the given inbox items (`wamid...` or a Sinch message id, with or
//!   without the inbox's channel prefix);
//! - **by time range** (and optionally one account): the inbox items received in the
//!   range, one scan page per request, resumed from the answer's `next_cursor`;
//! - **the dead-letter queue**: each on-failure message of the capture's stream mapping
//!   (Lambda's invocation record: stream, shard, first and last sequence numbers) is read
//!   back from the stream (the records are kept 24 h; the mapping gives up on a record
//!   at 6 h), its inbox items are captured, and the message is deleted only when all of
//!   them were.
//!
//! Capture is idempotent (conditional writes: a click is recorded once per message, the
//! first touch only moves to a strictly earlier click), so replaying an item twice, or
//! an item the stream did capture, changes nothing: its outcome says `already_captured`.
//! A request is bounded (a page of the inbox, a few queue messages, and never past the
//! invocation's deadline); the answer says what each item came to and whether there is
//! more.

pub mod aws;

use crate::capture::{CaptureDeps, ItemResult, Outcome, capture_in_order};
use crate::store::{FirstTouchOutcome, InboxItem, StoreError};
use crate::stream::StreamRecord;
use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Message ids per request.
pub const MAX_MESSAGE_IDS: usize = 100;
/// Inbox items read per time-range request (one scan page).
pub const DEFAULT_PAGE: u32 = 200;
pub const MAX_PAGE: u32 = 1000;
/// Dead-letter messages per request (each holds up to the mapping's `BatchSize` records).
pub const DEFAULT_DEAD_LETTERS: u32 = 5;
pub const MAX_DEAD_LETTERS: u32 = 10;
/// How long a dead-letter message stays hidden while it is replayed: one that is kept
/// (its items failed again) is seen again by a later request after this.
pub const DEAD_LETTER_VISIBILITY: Duration = Duration::from_secs(120);
/// Inbox items of a time-range page captured between two deadline checks.
const RANGE_CHUNK: usize = 100;
/// No new work starts when less than this is left before the request's deadline.
const WORK_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dead-letter queue or the stream failed (not the caller's mistake).
    #[error("{0}")]
    Backend(String),
}

/// The inbox, read: the port of [`crate::store::dynamo::inbox`].
#[async_trait]
pub trait InboxReader: Send + Sync {
    async fn get(&self, id: &str) -> Result<Option<InboxItem>, StoreError>;
    /// One page of the inbox (at most `page` items read): the items received in
    /// `[since_ms, until_ms]`, from after `cursor` (an inbox id), and the cursor of the
    /// next page (`None`: the scan is over).
    async fn received_between(
        &self,
        since_ms: i64,
        until_ms: i64,
        cursor: Option<&str>,
        page: u32,
    ) -> Result<InboxPage, StoreError>;
}

#[derive(Debug, Default)]
pub struct InboxPage {
    pub items: Vec<InboxItem>,
    /// Items read (before the time filter).
    pub scanned: u64,
    pub next: Option<String>,
}

/// The capture's on-failure queue.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// At most one message, hidden from others for `visibility`.
    async fn receive_one(&self, visibility: Duration) -> Result<Option<DeadLetter>, ReplayError>;
    async fn delete(&self, receipt: &str) -> Result<(), ReplayError>;
    /// Messages waiting (visible), as the queue estimates them.
    async fn waiting(&self) -> Result<Option<u64>, ReplayError>;
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
}

/// Where a failed batch was in the stream: Lambda's `DDBStreamBatchInfo`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub stream_arn: String,
    #[serde(default)]
    pub approximate_arrival_of_first_record: Option<String>,
    #[serde(default)]
    pub approximate_arrival_of_last_record: Option<String>,
    #[serde(default)]
    pub batch_size: Option<u64>,
}

impl BatchInfo {
    /// The batch of an on-failure message (Lambda's invocation record).
    pub fn of_message(body: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Record {
            #[serde(rename = "DDBStreamBatchInfo")]
            info: BatchInfo,
        }
        serde_json::from_str::<Record>(body)
            .map(|r| r.info)
            .map_err(|e| format!("not a stream on-failure record: {e}"))
    }
}

/// The stream, read back.
#[async_trait]
pub trait StreamReader: Send + Sync {
    /// The records `start..=end` of the batch's shard, in order.
    async fn records(&self, batch: &BatchInfo) -> Result<Vec<StreamRecord>, StreamReadError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StreamReadError {
    /// The records are no longer in the stream (past its 24 h retention).
    #[error("the stream no longer holds these records: {0}")]
    Gone(String),
    #[error("reading the stream: {0}")]
    Failed(String),
}

pub struct ReplayDeps {
    pub capture: Arc<CaptureDeps>,
    pub inbox: Arc<dyn InboxReader>,
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    pub stream: Arc<dyn StreamReader>,
}

/// What to replay: exactly one of `message_ids`, `since` (with `until`), `dead_letters`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default)]
    pub message_ids: Option<Vec<String>>,
    /// RFC 3339.
    #[serde(default)]
    pub since: Option<String>,
    /// RFC 3339; default now.
    #[serde(default)]
    pub until: Option<String>,
    /// With a time range: only the items routed to this account.
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub dead_letters: Option<bool>,
    /// Inbox items read (time range) or queue messages taken (dead letters) by this request.
    #[serde(default)]
    pub limit: Option<u32>,
    /// A time range's `next_cursor` from the previous answer.
    #[serde(default)]
    pub cursor: Option<String>,
}

enum Selection {
    Ids(Vec<String>),
    Range {
        since_ms: i64,
        until_ms: i64,
        account: Option<String>,
        cursor: Option<String>,
        page: u32,
    },
    DeadLetters {
        max: u32,
    },
}

fn bad(msg: impl Into<String>) -> ReplayError {
    ReplayError::BadRequest(msg.into())
}

fn parse_time(field: &str, v: &str) -> Result<i64, ReplayError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|e| bad(format!("{field} must be an RFC 3339 time ({e}): {v:?}")))
}

const CURSOR_PREFIX: &str = "inbox1.";

fn encode_cursor(id: &str) -> String {
    format!(
        "{CURSOR_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
    )
}

fn decode_cursor(c: &str) -> Result<String, ReplayError> {
    c.strip_prefix(CURSOR_PREFIX)
        .and_then(|b| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b)
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|id| inbox_id_ok(id))
        .ok_or_else(|| bad("cursor is not a next_cursor of this API"))
}

/// An inbox id as stored: a known channel prefix and a printable id.
fn inbox_id_ok(id: &str) -> bool {
    INBOX_PREFIXES
        .iter()
        .any(|p| id.strip_prefix(p).is_some_and(id_chars_ok))
}

/// The inbox's channel prefixes (`store::InboxItem::id`).
const INBOX_PREFIXES: [&str; 3] = ["wa:", "wa-ae:", "sinch:"];

fn id_chars_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}

impl ReplayRequest {
    fn selection(self, now_ms: i64) -> Result<Selection, ReplayError> {
        let range = self.since.is_some() || self.until.is_some() || self.cursor.is_some();
        let chosen = [
            self.message_ids.is_some(),
            range,
            self.dead_letters == Some(true),
        ];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return Err(bad(
                "give exactly one of: message_ids, since (with until), dead_letters: true",
            ));
        }
        if self.account_id.is_some() && !range {
            return Err(bad("account_id filters a time range (since/until) only"));
        }
        if let Some(ids) = self.message_ids {
            if self.limit.is_some() {
                return Err(bad("limit applies to a time range or the dead letters"));
            }
            if ids.is_empty() || ids.len() > MAX_MESSAGE_IDS {
                return Err(bad(format!("message_ids takes 1 to {MAX_MESSAGE_IDS} ids")));
            }
            for id in &ids {
                if !id_chars_ok(id) {
                    return Err(bad(format!("not a message id: {id:?}")));
                }
            }
            let mut seen = std::collections::HashSet::new();
            let ids = ids.into_iter().filter(|i| seen.insert(i.clone())).collect();
            return Ok(Selection::Ids(ids));
        }
        if self.dead_letters == Some(true) {
            let max = self.limit.unwrap_or(DEFAULT_DEAD_LETTERS);
            if !(1..=MAX_DEAD_LETTERS).contains(&max) {
                return Err(bad(format!(
                    "limit for dead letters is 1 to {MAX_DEAD_LETTERS} messages"
                )));
            }
            return Ok(Selection::DeadLetters { max });
        }
        let since = self
            .since
            .as_deref()
            .ok_or_else(|| bad("a time range needs since"))?;
        let since_ms = parse_time("since", since)?;
        let until_ms = match self.until.as_deref() {
            Some(u) => parse_time("until", u)?,
            None => now_ms,
        };
        if until_ms < since_ms {
            return Err(bad("until is before since"));
        }
        let page = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(bad(format!(
                "limit for a time range is 1 to {MAX_PAGE} inbox items"
            )));
        }
        let account = match self.account_id {
            Some(a) => Some(crate::ids::AccountId::parse(&a)?.into_string()),
            None => None,
        };
        let cursor = self.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(Selection::Range {
            since_ms,
            until_ms,
            account,
            cursor,
            page,
        })
    }
}

impl From<crate::ids::IdError> for ReplayError {
    fn from(e: crate::ids::IdError) -> Self {
        ReplayError::BadRequest(e.to_string())
    }
}

/// What one replayed item came to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemReport {
    pub inbox_id: String,
    /// `first_touch_captured`, `click_recorded`, `already_captured`, `recorded` (a message
    /// without a click id), `automatic_event_recorded`, `unchanged`, `unrouted`,
    /// `quarantined`, `skipped`, `failed`, `held` (not tried: an earlier item of the
    /// same customer failed).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ItemReport {
    fn of(item: &InboxItem, r: ItemResult) -> Self {
        let (outcome, conversation_id, detail) = match r {
            ItemResult::Done(Outcome::Message {
                conversation_id,
                click_recorded,
                first_touch,
            }) => {
                let o = match (first_touch, click_recorded) {
                    (FirstTouchOutcome::Captured, _) => "first_touch_captured",
                    (FirstTouchOutcome::Kept, true) => "click_recorded",
                    (FirstTouchOutcome::Kept, false) => "already_captured",
                    (FirstTouchOutcome::NoClick, _) => "recorded",
                };
                (o, Some(conversation_id), None)
            }
            ItemResult::Done(Outcome::AutomaticEvent { new }) => (
                if new {
                    "automatic_event_recorded"
                } else {
                    "unchanged"
                },
                None,
                None,
            ),
            ItemResult::Done(Outcome::Unrouted) => ("unrouted", None, None),
            ItemResult::Done(Outcome::Quarantined(r)) => ("quarantined", None, Some(r.into())),
            ItemResult::Done(Outcome::Skipped(r)) => ("skipped", None, Some(r)),
            ItemResult::Failed(e) => ("failed", None, Some(e.to_string())),
            ItemResult::Held => ("held", None, None),
        };
        Self {
            inbox_id: item.id.clone(),
            outcome,
            conversation_id,
            detail,
        }
    }

    fn failed(&self) -> bool {
        matches!(self.outcome, "failed" | "held")
    }

    /// Whether capture wrote something it had not (a replay of a captured item: no).
    fn changed(&self) -> bool {
        matches!(
            self.outcome,
            "first_touch_captured" | "click_recorded" | "recorded" | "automatic_event_recorded"
        )
    }
}

/// A dead-letter message left in the queue, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeptLetter {
    pub message_id: String,
    /// `capture_failed` (seen again after the visibility timeout), `stream_records_gone`
    /// (replay the arrival window by time range, then delete the message),
    /// `unreadable`, `stream_read_failed`.
    pub reason: &'static str,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchInfo>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeadLetterReport {
    pub received: u64,
    pub deleted: u64,
    pub kept: Vec<KeptLetter>,
    /// Messages still waiting in the queue (the queue's estimate), after this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<u64>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// `message_ids`, `time_range` or `dead_letters`.
    pub mode: &'static str,
    /// Inbox items (or stream records) read.
    pub scanned: u64,
    /// Items run through capture.
    pub replayed: u64,
    /// Of those, items capture wrote something for (0 on a second replay).
    pub changed: u64,
    pub failed: u64,
    pub items: Vec<ItemReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<DeadLetterReport>,
    /// Give it back as `cursor` for the next page of a time range.
    pub next_cursor: Option<String>,
    /// Nothing more to replay for this request (no next page, no more queue messages).
    pub done: bool,
}

impl ReplayReport {
    fn add(&mut self, r: ItemReport) {
        self.replayed += 1;
        self.changed += u64::from(r.changed());
        self.failed += u64::from(r.failed());
        self.items.push(r);
    }
}

/// Captures `items` (sorted by when they were received, so one customer's go in order).
async fn capture(deps: &ReplayDeps, mut items: Vec<InboxItem>, report: &mut ReplayReport) -> bool {
    items.sort_by(|a, b| {
        a.received_at_ms
            .cmp(&b.received_at_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    let results = capture_in_order(&deps.capture, &items, crate::time::now_millis()).await;
    let mut all_done = true;
    for (item, r) in items.iter().zip(results) {
        let r = ItemReport::of(item, r);
        all_done &= !r.failed();
        report.add(r);
    }
    all_done
}

/// Runs one replay request. `deadline`: when the invocation ends (no new work is started
/// within a few seconds of it).
pub async fn replay(
    deps: &ReplayDeps,
    req: ReplayRequest,
    deadline: Option<Instant>,
) -> Result<ReplayReport, ReplayError> {
    let selection = req.selection(crate::time::now_millis())?;
    let time_left =
        || deadline.is_none_or(|d| d.saturating_duration_since(Instant::now()) > WORK_MARGIN);
    let mut report = ReplayReport::default();
    match selection {
        Selection::Ids(ids) => {
            report.mode = "message_ids";
            let mut items = Vec::new();
            for id in ids {
                let found = find_by_message_id(deps, &id).await?;
                report.scanned += 1;
                match found {
                    Some(item) => items.push(item),
                    None => report.not_found.push(id),
                }
            }
            capture(deps, items, &mut report).await;
            report.done = true;
        }
        Selection::Range {
            since_ms,
            until_ms,
            account,
            cursor,
            page,
        } => {
            report.mode = "time_range";
            let got = deps
                .inbox
                .received_between(since_ms, until_ms, cursor.as_deref(), page)
                .await?;
            report.scanned = got.scanned;
            let mut items = Vec::with_capacity(got.items.len());
            for item in got.items {
                if let Some(a) = &account {
                    // The account capture would file it under: its route's.
                    match deps.capture.route_for(&item.route).await? {
                        Some(r) if &r.account_id == a => {}
                        _ => continue,
                    }
                }
                items.push(item);
            }
            // In chunks, in the scan's order, so a request short of time stops between
            // two and the cursor resumes after the last item captured.
            // The first chunk always runs, so a request makes progress.
            let mut next = got.next;
            let mut rest = items.as_slice();
            let mut last_id: Option<String> = None;
            while !rest.is_empty() {
                if last_id.is_some() && !time_left() {
                    next = last_id;
                    break;
                }
                let (chunk, tail) = rest.split_at(rest.len().min(RANGE_CHUNK));
                capture(deps, chunk.to_vec(), &mut report).await;
                last_id = chunk.last().map(|i| i.id.clone());
                rest = tail;
            }
            report.next_cursor = next.as_deref().map(encode_cursor);
            report.done = report.next_cursor.is_none();
        }
        Selection::DeadLetters { max } => {
            report.mode = "dead_letters";
            let queue = deps.dead_letters.as_ref().ok_or_else(|| {
                ReplayError::BadRequest(
                    "this deployment has no capture dead-letter queue (CAPTURE_DLQ_URL)".into(),
                )
            })?;
            let mut letters = DeadLetterReport::default();
            let mut exhausted = false;
            while letters.received < u64::from(max) && time_left() {
                let Some(msg) = queue.receive_one(DEAD_LETTER_VISIBILITY).await? else {
                    exhausted = true;
                    break;
                };
                letters.received += 1;
                match replay_letter(deps, &msg, &mut report).await {
                    None => {
                        queue.delete(&msg.receipt).await?;
                        letters.deleted += 1;
                    }
                    Some(kept) => {
                        tracing::warn!(message_id = %kept.message_id, reason = kept.reason, detail = %kept.detail, "dead-letter message kept");
                        letters.kept.push(kept);
                    }
                }
            }
            letters.waiting = queue.waiting().await.unwrap_or(None);
            report.done = exhausted || letters.waiting == Some(0);
            report.dead_letters = Some(letters);
        }
    }
    tracing::info!(
        mode = report.mode,
        scanned = report.scanned,
        replayed = report.replayed,
        changed = report.changed,
        failed = report.failed,
        done = report.done,
        "replay done"
    );
    Ok(report)
}

/// The inbox item of a message id given with or without its channel prefix.
async fn find_by_message_id(deps: &ReplayDeps, id: &str) -> Result<Option<InboxItem>, StoreError> {
    if inbox_id_ok(id) {
        return deps.inbox.get(id).await;
    }
    for p in INBOX_PREFIXES {
        if let Some(item) = deps.inbox.get(&format!("{p}{id}")).await? {
            return Ok(Some(item));
        }
    }
    Ok(None)
}

/// Replays one on-failure message: `None` when all its items were captured (the message
/// can go), else why it stays.
async fn replay_letter(
    deps: &ReplayDeps,
    msg: &DeadLetter,
    report: &mut ReplayReport,
) -> Option<KeptLetter> {
    let kept = |reason, detail: String, batch: Option<BatchInfo>| {
        Some(KeptLetter {
            message_id: msg.message_id.clone(),
            reason,
            detail,
            batch,
        })
    };
    let batch = match BatchInfo::of_message(&msg.body) {
        Ok(b) => b,
        Err(e) => return kept("unreadable", e, None),
    };
    let records = match deps.stream.records(&batch).await {
        Ok(r) => r,
        Err(StreamReadError::Gone(e)) => {
            return kept(
                "stream_records_gone",
                format!(
                    "{e}; replay the batch's arrival window by time range (since {} until {}), then delete the message",
                    batch
                        .approximate_arrival_of_first_record
                        .as_deref()
                        .unwrap_or("?"),
                    batch
                        .approximate_arrival_of_last_record
                        .as_deref()
                        .unwrap_or("?")
                ),
                Some(batch),
            );
        }
        Err(e @ StreamReadError::Failed(_)) => {
            return kept("stream_read_failed", e.to_string(), Some(batch));
        }
    };
    report.scanned += records.len() as u64;
    let mut items = Vec::new();
    for rec in records {
        if rec.event_name != "INSERT" {
            continue;
        }
        match rec
            .dynamodb
            .new_image
            .as_ref()
            .map(crate::stream::inbox_item_from_image)
        {
            Some(Ok(item)) => items.push(item),
            Some(Err(e)) => report.add(ItemReport {
                inbox_id: rec.dynamodb.sequence_number.clone(),
                outcome: "skipped",
                conversation_id: None,
                detail: Some(e.to_string()),
            }),
            None => {}
        }
    }
    if capture(deps, items, report).await {
        None
    } else {
        kept(
            "capture_failed",
            format!(
                "some items failed again; the message is seen again after {} s",
                DEAD_LETTER_VISIBILITY.as_secs()
            ),
            Some(batch),
        )
    }
}

/// Stream sequence numbers are decimal strings of any length: compared as numbers.
pub fn seq_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests;
