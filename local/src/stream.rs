//! Lambda's event source mapping for a DynamoDB stream: reads every shard in order, and
//! delivers batches (the template's `BatchSize` and `MaximumBatchingWindowInSeconds`)
//! as the same JSON event Lambda sends, to a target: the capture function's bootstrap
//! (the local stack) or the capture handler in process (a fault test's consumer).
//! Up to `ParallelizationFactor` batches of one shard are in flight at once, as Lambda
//! runs them: each item key (the record's `Keys`) belongs to one of the shard's lanes
//! (a hash of the key), a lane has one batch in flight at a time, so one item's records
//! are delivered in stream order and never in two batches at once.
//! Records the filter does not match are skipped. With `ReportBatchItemFailures` a
//! batch is retried from the earliest failed record; a function error, timeout or
//! crash fails the whole batch, which is bisected when `BisectBatchOnFunctionError` is
//! set; after `MaximumRetryAttempts` retries, or once older than
//! `MaximumRecordAgeInSeconds`, the batch is dropped to the on-failure destination with
//! Lambda's invocation record (shard and sequence numbers), and the shard moves on.

use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use bytes::Bytes;
use ctwa_shared::capture::{CaptureDeps, handle_stream_event};
use ctwa_shared::stream::StreamEvent;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often an idle shard is read again (Lambda: four times a second).
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Where batches go: the function's answer (JSON), or why the invocation failed.
#[async_trait::async_trait]
pub trait BatchTarget: Send + Sync {
    async fn invoke(&self, event: Bytes) -> Result<Bytes, String>;
}

/// The capture handler in this process.
pub struct InProcessCapture(pub Arc<CaptureDeps>);

#[async_trait::async_trait]
impl BatchTarget for InProcessCapture {
    async fn invoke(&self, event: Bytes) -> Result<Bytes, String> {
        let event: StreamEvent = serde_json::from_slice(&event).map_err(|e| e.to_string())?;
        let resp = handle_stream_event(&self.0, event).await;
        serde_json::to_vec(&resp)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }
}

/// Where batches that could not be processed go (SQS in AWS).
#[async_trait::async_trait]
pub trait FailureDestination: Send + Sync {
    async fn send(&self, record: Value) -> Result<(), String>;
}

/// The event source mapping's settings (the template's DynamoDB event).
#[derive(Debug, Clone)]
pub struct MappingConfig {
    pub batch_size: usize,
    pub batching_window: Duration,
    /// Batches of one shard in flight at once (1-10).
    pub parallelization_factor: usize,
    pub report_batch_item_failures: bool,
    pub bisect_on_error: bool,
    /// -1: retried until the record expires.
    pub maximum_retry_attempts: i64,
    pub maximum_record_age: Option<Duration>,
    pub event_names: Option<Vec<String>>,
    pub function_arn: String,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            batching_window: Duration::ZERO,
            parallelization_factor: 1,
            report_batch_item_failures: true,
            bisect_on_error: true,
            maximum_retry_attempts: 10,
            maximum_record_age: None,
            event_names: Some(vec!["INSERT".into()]),
            function_arn: String::new(),
        }
    }
}

pub struct StreamFeeder {
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    target: Arc<dyn BatchTarget>,
    config: MappingConfig,
    on_failure: Option<Arc<dyn FailureDestination>>,
}

use ctwa_shared::replay::seq_cmp;

struct Pending {
    records: Vec<Value>,
    /// Retries so far (the first invocation is not a retry).
    retries: i64,
}

fn err<E: std::error::Error + Send + Sync + 'static>(
    e: aws_sdk_dynamodbstreams::error::SdkError<
        E,
        aws_sdk_dynamodbstreams::config::http::HttpResponse,
    >,
) -> String {
    match e.as_service_error() {
        Some(se) => se.to_string(),
        None => aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e).to_string(),
    }
}

pub use ctwa_shared::replay::aws::{attr_json, record_json};

impl StreamFeeder {
    /// The feeder of `table`'s stream (its ARN read with `dynamodb`, the deployer's
    /// client; the stream itself is read with `streams`, the function's role).
    pub async fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: String,
        target: Arc<dyn BatchTarget>,
        config: MappingConfig,
        on_failure: Option<Arc<dyn FailureDestination>>,
    ) -> Result<Self, String> {
        let t = dynamodb
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())?;
        let stream_arn = t
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| format!("table {table} has no stream"))?;
        Ok(Self {
            streams,
            stream_arn,
            target,
            config,
            on_failure,
        })
    }

    /// The in-process capture with Lambda's settings of the template's defaults.
    pub async fn in_process(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: String,
        deps: Arc<CaptureDeps>,
    ) -> Result<Self, String> {
        Self::new(
            dynamodb,
            streams,
            table,
            Arc::new(InProcessCapture(deps)),
            MappingConfig::default(),
            None,
        )
        .await
    }

    async fn shards(&self) -> Result<Vec<String>, String> {
        let mut ids = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let out = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(err)?;
            let Some(desc) = out.stream_description else {
                break;
            };
            ids.extend(
                desc.shards
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| s.shard_id),
            );
            match desc.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => break,
            }
        }
        Ok(ids)
    }

    fn too_old(&self, r: &Value) -> bool {
        let (Some(max), Some(created)) = (
            self.config.maximum_record_age,
            r["dynamodb"]["ApproximateCreationDateTime"].as_f64(),
        ) else {
            return false;
        };
        let now = ctwa_shared::time::now_millis() as f64 / 1000.0;
        now - created > max.as_secs_f64()
    }

    /// Lambda's on-failure invocation record for the batch (no record contents: shard
    /// and sequence numbers, as AWS sends).
    async fn dead_letter(&self, shard: &str, batch: &[Value], condition: &str, invokes: i64) {
        let seq = |r: &Value| {
            r["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let arrival = |r: &Value| {
            r["dynamodb"]["ApproximateCreationDateTime"]
                .as_f64()
                .and_then(|s| {
                    chrono::DateTime::<chrono::Utc>::from_timestamp_millis((s * 1000.0) as i64)
                })
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        };
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return;
        };
        let record = json!({
            "requestContext": {
                "requestId": format!("{:032x}", ctwa_shared::time::now_millis()),
                "functionArn": self.config.function_arn,
                "condition": condition,
                "approximateInvokeCount": invokes,
            },
            "responseContext": { "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled" },
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": seq(first),
                "endSequenceNumber": seq(last),
                "approximateArrivalOfFirstRecord": arrival(first),
                "approximateArrivalOfLastRecord": arrival(last),
                "batchSize": batch.len(),
                "streamArn": self.stream_arn,
            }
        });
        tracing::error!(
            %shard,
            condition,
            records = batch.len(),
            start = %seq(first),
            end = %seq(last),
            "capture batch given up ({condition}); sent to the on-failure destination"
        );
        match &self.on_failure {
            Some(d) => {
                if let Err(e) = d.send(record).await {
                    tracing::error!(error = %e, "the on-failure destination refused the record; the batch is lost");
                }
            }
            None => tracing::error!("no on-failure destination: the batch is dropped"),
        }
    }

    /// Delivers one shard's batch with Lambda's retry rules.
    async fn deliver(&self, shard: &str, records: Vec<Value>) {
        let mut queue = vec![Pending {
            records,
            retries: 0,
        }];
        let mut backoff = Duration::from_millis(100);
        while let Some(mut p) = queue.pop() {
            // Records past the maximum age are given up before the invocation.
            let old = p.records.iter().take_while(|r| self.too_old(r)).count();
            if old > 0 {
                let stale: Vec<Value> = p.records.drain(..old).collect();
                self.dead_letter(shard, &stale, "RecordAgeExceeded", p.retries)
                    .await;
            }
            if p.records.is_empty() {
                continue;
            }
            let event = json!({ "Records": p.records }).to_string();
            let outcome = self.target.invoke(Bytes::from(event)).await;
            let retry_from = match outcome {
                Ok(body) if self.config.report_batch_item_failures => {
                    match failed_from(&body, &p.records) {
                        Ok(None) => None,
                        Ok(Some(i)) => Some((i, false)),
                        // An invalid answer fails the whole batch.
                        Err(why) => {
                            tracing::warn!(%why, "capture answered an invalid batchItemFailures; the whole batch is retried");
                            Some((0, false))
                        }
                    }
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, records = p.records.len(), "capture invocation failed");
                    Some((0, true))
                }
            };
            let Some((from, function_error)) = retry_from else {
                backoff = Duration::from_millis(100);
                continue;
            };
            p.records.drain(..from);
            p.retries += 1;
            let max = self.config.maximum_retry_attempts;
            if max >= 0 && p.retries > max {
                self.dead_letter(shard, &p.records, "RetryAttemptsExhausted", p.retries)
                    .await;
                continue;
            }
            tracing::warn!(
                retry = p.retries,
                remaining = p.records.len(),
                "capture batch failed; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if function_error && self.config.bisect_on_error && p.records.len() > 1 {
                let second = p.records.split_off(p.records.len() / 2);
                queue.push(Pending {
                    records: second,
                    retries: p.retries,
                });
                queue.push(p);
            } else {
                queue.push(p);
            }
        }
    }

    /// Reads one shard once (from after the last record read), and puts the records
    /// the filter passes in their lanes. `true` when records were read.
    async fn read(&self, shard: &str, st: &mut ShardState, limit: usize) -> bool {
        if st.iter.is_none() {
            let (kind, seq) = match &st.last_seq {
                Some(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone())),
                None => (ShardIteratorType::TrimHorizon, None),
            };
            match self
                .streams
                .get_shard_iterator()
                .stream_arn(&self.stream_arn)
                .shard_id(shard)
                .shard_iterator_type(kind)
                .set_sequence_number(seq)
                .send()
                .await
            {
                Ok(o) => st.iter = o.shard_iterator,
                Err(e) => {
                    // The last record read may have been trimmed away: read the shard
                    // again from its start (capture is idempotent). What the lanes hold
                    // is read again too.
                    tracing::warn!(%shard, error = %err(e), "shard iterator; re-reading the shard from its start");
                    st.last_seq = None;
                    for lane in &mut st.lanes {
                        lane.buffer.clear();
                    }
                    return false;
                }
            }
        }
        let Some(it) = st.iter.clone() else {
            return false;
        };
        match self
            .streams
            .get_records()
            .shard_iterator(it)
            .limit(limit.min(1000) as i32)
            .send()
            .await
        {
            Ok(out) => {
                let records = out.records.unwrap_or_default();
                let mut got = false;
                if let Some(last) = records
                    .last()
                    .and_then(|r| r.dynamodb.as_ref())
                    .and_then(|d| d.sequence_number.clone())
                {
                    got = true;
                    let lanes = st.lanes.len();
                    for r in &records {
                        let name = r.event_name.as_ref().map(|e| e.as_str()).unwrap_or("");
                        let pass = self
                            .config
                            .event_names
                            .as_ref()
                            .is_none_or(|names| names.iter().any(|n| n == name));
                        if pass {
                            let rec = record_json(r, &self.stream_arn);
                            let lane = &mut st.lanes[lane_of(&rec, lanes)];
                            if lane.buffer.is_empty() {
                                lane.since = Instant::now();
                            }
                            lane.buffer.push(rec);
                        }
                    }
                    st.last_seq = Some(last);
                }
                st.iter = out.next_shard_iterator;
                st.closed = st.iter.is_none();
                got
            }
            Err(e) => {
                // An expired iterator, a shard DynamoDB Local has not filled yet
                // (TrimmedDataAccessException), or a passing failure: re-open after the
                // last record read.
                if e.as_service_error().is_some_and(|se| {
                    se.is_trimmed_data_access_exception() || se.is_expired_iterator_exception()
                }) {
                    tracing::debug!(%shard, error = %err(e), "get records; re-opening the shard");
                } else {
                    tracing::warn!(%shard, error = %err(e), "get records; re-opening the shard");
                }
                st.iter = None;
                false
            }
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut shards: HashMap<String, ShardState> = HashMap::new();
        let mut last_describe = Instant::now() - Duration::from_secs(60);
        let limit = this.config.batch_size.clamp(1, 10_000);
        let lanes = this.config.parallelization_factor.clamp(1, 10);
        // The batches in flight (dropped, so aborted, when the feeder stops), and the
        // shard lane each one holds.
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut holds: HashMap<tokio::task::Id, (String, usize)> = HashMap::new();
        let free = |shards: &mut HashMap<String, ShardState>,
                    holds: &mut HashMap<tokio::task::Id, (String, usize)>,
                    id: tokio::task::Id| {
            if let Some((shard, lane)) = holds.remove(&id)
                && let Some(st) = shards.get_mut(&shard)
            {
                st.lanes[lane].busy = false;
            }
        };
        loop {
            if *shutdown.borrow() {
                return;
            }
            while let Some(done) = in_flight.try_join_next_with_id() {
                let id = done.map(|(id, _)| id).unwrap_or_else(|e| e.id());
                free(&mut shards, &mut holds, id);
            }
            if last_describe.elapsed() > Duration::from_secs(1) {
                last_describe = Instant::now();
                match this.shards().await {
                    Ok(ids) => {
                        for id in ids {
                            shards.entry(id).or_insert_with(|| ShardState::new(lanes));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "describe stream"),
                }
            }
            let mut got_any = false;
            for (shard, st) in shards.iter_mut() {
                // Read on unless a lane already holds a full batch it cannot send yet
                // (its batch in flight): what is read waits in memory, bounded.
                let backed_up = st.lanes.iter().any(|l| l.buffer.len() >= limit);
                if !st.closed && !backed_up {
                    got_any |= this.read(shard, st, limit).await;
                }
                // Each free lane with a full batch, a batching window over, or a closed
                // shard: invoke.
                let closed = st.closed;
                for (i, lane) in st.lanes.iter_mut().enumerate() {
                    if lane.busy
                        || lane.buffer.is_empty()
                        || !(lane.buffer.len() >= limit
                            || lane.since.elapsed() >= this.config.batching_window
                            || closed)
                    {
                        continue;
                    }
                    let n = lane.buffer.len().min(limit);
                    let batch: Vec<Value> = lane.buffer.drain(..n).collect();
                    lane.busy = true;
                    let (feeder, at) = (this.clone(), shard.clone());
                    let task = in_flight.spawn(async move { feeder.deliver(&at, batch).await });
                    holds.insert(task.id(), (shard.clone(), i));
                }
            }
            if !got_any {
                // Lambda polls each shard four times a second when it is idle; a batch
                // that ends frees its lane at once.
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    Some(done) = in_flight.join_next_with_id() => {
                        let id = done.map(|(id, _)| id).unwrap_or_else(|e| e.id());
                        free(&mut shards, &mut holds, id);
                    }
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// The lane of a shard an item's records go to: a stable hash (FNV-1a) of the record's
/// `Keys`, so one item's records always share a lane. (Lambda's hash is its own; only
/// the rule matters: one key, one lane.)
fn lane_of(record: &Value, lanes: usize) -> usize {
    let key = record["dynamodb"]["Keys"].to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % lanes.max(1) as u64) as usize
}

/// The index of the earliest record named in `batchItemFailures` (`None`: all
/// succeeded); an identifier that is empty or not in the batch makes the answer invalid.
fn failed_from(body: &[u8], records: &[Value]) -> Result<Option<usize>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let failures = match v.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err("batchItemFailures is not a list".into()),
    };
    let mut earliest: Option<String> = None;
    for f in failures {
        let id = f["itemIdentifier"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("an empty itemIdentifier")?
            .to_string();
        if earliest.as_deref().is_none_or(|e| seq_cmp(&id, e).is_lt()) {
            earliest = Some(id);
        }
    }
    let Some(earliest) = earliest else {
        return Ok(None);
    };
    records
        .iter()
        .position(|r| r["dynamodb"]["SequenceNumber"].as_str() == Some(earliest.as_str()))
        .map(Some)
        .ok_or_else(|| format!("itemIdentifier {earliest} is not in the batch"))
}

struct ShardState {
    iter: Option<String>,
    last_seq: Option<String>,
    closed: bool,
    lanes: Vec<Lane>,
}

impl ShardState {
    fn new(lanes: usize) -> Self {
        Self {
            iter: None,
            last_seq: None,
            closed: false,
            lanes: (0..lanes.max(1)).map(|_| Lane::default()).collect(),
        }
    }
}

/// One of a shard's concurrent batches: the records of the item keys that hash to it, in
/// stream order, waiting for the batch in flight (if any) to end.
struct Lane {
    buffer: Vec<Value>,
    /// When the oldest record buffered came (the batching window's start).
    since: Instant,
    busy: bool,
}

impl Default for Lane {
    fn default() -> Self {
        Self {
            buffer: Vec::new(),
            since: Instant::now(),
            busy: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: &str) -> Value {
        json!({"dynamodb": {"SequenceNumber": seq}})
    }

    #[test]
    fn earliest_failure() {
        let records = vec![rec("9"), rec("10"), rec("11")];
        assert_eq!(
            failed_from(br#"{"batchItemFailures":[]}"#, &records),
            Ok(None)
        );
        assert_eq!(failed_from(br#"{}"#, &records), Ok(None));
        assert_eq!(
            failed_from(
                br#"{"batchItemFailures":[{"itemIdentifier":"11"},{"itemIdentifier":"10"}]}"#,
                &records
            ),
            Ok(Some(1))
        );
        assert!(
            failed_from(
                br#"{"batchItemFailures":[{"itemIdentifier":"12"}]}"#,
                &records
            )
            .is_err()
        );
        assert!(
            failed_from(
                br#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
                &records
            )
            .is_err()
        );
    }
}
