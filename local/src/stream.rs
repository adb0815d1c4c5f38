//! Feeds the capture handler from the inbox table's stream, the way Lambda's event
//! source mapping does: batches of up to 100 records per shard, in order, as the same
//! JSON event Lambda sends; on reported failures the batch is retried from the earliest
//! failed record (with backoff), up to `MAX_ATTEMPTS` times, then dropped with an error
//! log (where AWS would send it to the dead-letter queue).

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use ctwa_shared::capture::{CaptureDeps, handle_stream_event};
use ctwa_shared::stream::StreamEvent;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const MAX_ATTEMPTS: u32 = 10;
const BATCH: i32 = 100;

pub struct StreamFeeder {
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    deps: Arc<CaptureDeps>,
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

/// DynamoDB JSON of one attribute, as in Lambda's stream event.
pub fn attr_json(v: &AttributeValue) -> Value {
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        base64::engine::general_purpose::STANDARD.encode(b.as_ref())
    };
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::B(b) => json!({ "B": b64(b) }),
        AttributeValue::Ss(v) => json!({ "SS": v }),
        AttributeValue::Ns(v) => json!({ "NS": v }),
        AttributeValue::Bs(v) => json!({ "BS": v.iter().map(b64).collect::<Vec<_>>() }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attr_json).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": image_json(m) }),
        _ => json!({ "NULL": true }),
    }
}

fn image_json(m: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    m.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect()
}

/// One stream record in Lambda's event shape.
pub fn record_json(r: &Record, stream_arn: &str) -> Value {
    let d = r.dynamodb.as_ref();
    let mut ddb = Map::new();
    if let Some(d) = d {
        if let Some(k) = &d.keys {
            ddb.insert("Keys".into(), Value::Object(image_json(k)));
        }
        if let Some(img) = &d.new_image {
            ddb.insert("NewImage".into(), Value::Object(image_json(img)));
        }
        ddb.insert(
            "SequenceNumber".into(),
            json!(d.sequence_number.clone().unwrap_or_default()),
        );
        if let Some(t) = &d.stream_view_type {
            ddb.insert("StreamViewType".into(), json!(t.as_str()));
        }
        if let Some(sz) = d.size_bytes {
            ddb.insert("SizeBytes".into(), json!(sz));
        }
    }
    json!({
        "eventID": r.event_id.clone().unwrap_or_default(),
        "eventName": r.event_name.as_ref().map(|e| e.as_str().to_string()).unwrap_or_default(),
        "eventVersion": r.event_version.clone().unwrap_or_else(|| "1.1".into()),
        "eventSource": "aws:dynamodb",
        "awsRegion": r.aws_region.clone().unwrap_or_default(),
        "eventSourceARN": stream_arn,
        "dynamodb": ddb,
    })
}

impl StreamFeeder {
    pub async fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: String,
        deps: Arc<CaptureDeps>,
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
            deps,
        })
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

    /// Delivers one batch like Lambda with ReportBatchItemFailures.
    async fn deliver(&self, records: &[Record]) {
        let mut pending: Vec<Value> = records
            .iter()
            .map(|r| record_json(r, &self.stream_arn))
            .collect();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=MAX_ATTEMPTS {
            let event: StreamEvent = match serde_json::from_value(json!({ "Records": pending })) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "stream event could not be built");
                    return;
                }
            };
            let resp = handle_stream_event(&self.deps, event).await;
            let failed: HashSet<&str> = resp
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            let first_failed = pending.iter().position(|r| {
                r["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .is_some_and(|s| failed.contains(s))
            });
            let Some(i) = first_failed else { return };
            tracing::warn!(
                attempt,
                remaining = pending.len() - i,
                "capture reported failures; retrying from the earliest"
            );
            pending.drain(..i);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        tracing::error!(
            records = pending.len(),
            "capture still failing after {MAX_ATTEMPTS} attempts; records dropped (in AWS: sent to the dead-letter queue)"
        );
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut shards: HashMap<String, ShardState> = HashMap::new();
        let mut last_describe = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if last_describe.elapsed() > Duration::from_secs(1) {
                last_describe = std::time::Instant::now();
                match self.shards().await {
                    Ok(ids) => {
                        for id in ids {
                            shards.entry(id).or_default();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "describe stream"),
                }
            }
            let mut got_any = false;
            for (shard, st) in shards.iter_mut().filter(|(_, st)| !st.closed) {
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
                            // The last record read may have been trimmed away: read the
                            // shard again from its start (capture is idempotent).
                            tracing::warn!(%shard, error = %err(e), "shard iterator; re-reading the shard from its start");
                            st.last_seq = None;
                            continue;
                        }
                    }
                }
                let Some(it) = st.iter.clone() else { continue };
                match self
                    .streams
                    .get_records()
                    .shard_iterator(it)
                    .limit(BATCH)
                    .send()
                    .await
                {
                    Ok(out) => {
                        let records = out.records.unwrap_or_default();
                        if let Some(last) = records
                            .last()
                            .and_then(|r| r.dynamodb.as_ref())
                            .and_then(|d| d.sequence_number.clone())
                        {
                            got_any = true;
                            self.deliver(&records).await;
                            st.last_seq = Some(last);
                        }
                        st.iter = out.next_shard_iterator;
                        st.closed = st.iter.is_none();
                    }
                    Err(e) => {
                        // An expired iterator, a shard DynamoDB Local has not filled yet
                        // (TrimmedDataAccessException), or a passing failure: re-open after
                        // the last record delivered.
                        if e.as_service_error().is_some_and(|se| {
                            se.is_trimmed_data_access_exception()
                                || se.is_expired_iterator_exception()
                        }) {
                            tracing::debug!(%shard, error = %err(e), "get records; re-opening the shard");
                        } else {
                            tracing::warn!(%shard, error = %err(e), "get records; re-opening the shard");
                        }
                        st.iter = None;
                    }
                }
            }
            if !got_any {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

#[derive(Default)]
struct ShardState {
    iter: Option<String>,
    last_seq: Option<String>,
    closed: bool,
}
