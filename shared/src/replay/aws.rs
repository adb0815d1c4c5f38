//! The replay's AWS adapters: the capture's on-failure queue (SQS) and the inbox stream
//! read back (DynamoDB Streams), and the one conversion of a stream record from the
//! Streams API into Lambda's event shape (the local run's stream feeder uses it too).

use super::{
    BatchInfo, DeadLetter, DeadLetters, ReplayError, StreamReadError, StreamReader, seq_cmp,
};
use crate::stream::StreamRecord;
use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::Duration;

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

pub fn image_json(m: &HashMap<String, AttributeValue>) -> Map<String, Value> {
    m.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect()
}

/// One stream record in Lambda's event shape.
pub fn record_json(r: &Record, stream_arn: &str) -> Value {
    let d = r.dynamodb.as_ref();
    let mut ddb = Map::new();
    if let Some(d) = d {
        if let Some(t) = &d.approximate_creation_date_time {
            ddb.insert("ApproximateCreationDateTime".into(), json!(t.secs()));
        }
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

fn sdk_err<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    e: &aws_sdk_dynamodbstreams::error::SdkError<E, R>,
) -> String {
    aws_sdk_dynamodbstreams::error::DisplayErrorContext(e).to_string()
}

/// A failed stream read: `Gone` when the records are past the stream's retention
/// (trimmed, or the stream itself is gone), the same for either call.
fn read_error<E, R>(e: &aws_sdk_dynamodbstreams::error::SdkError<E, R>) -> StreamReadError
where
    E: aws_sdk_dynamodbstreams::error::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
    R: std::fmt::Debug,
{
    let code = e.as_service_error().and_then(|se| se.code());
    if matches!(
        code,
        Some("TrimmedDataAccessException" | "ResourceNotFoundException")
    ) {
        StreamReadError::Gone(sdk_err(e))
    } else {
        StreamReadError::Failed(sdk_err(e))
    }
}

/// The inbox stream through the Streams API.
pub struct DynamoStream {
    client: aws_sdk_dynamodbstreams::Client,
}

impl DynamoStream {
    pub fn new(client: aws_sdk_dynamodbstreams::Client) -> Self {
        Self { client }
    }
}

/// Reads past at most this many empty pages of an open shard before giving up on
/// reaching the batch's last record.
const MAX_EMPTY_PAGES: usize = 20;

#[async_trait]
impl StreamReader for DynamoStream {
    async fn records(&self, batch: &BatchInfo) -> Result<Vec<StreamRecord>, StreamReadError> {
        let it = self
            .client
            .get_shard_iterator()
            .stream_arn(&batch.stream_arn)
            .shard_id(&batch.shard_id)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(&batch.start_sequence_number)
            .send()
            .await
            .map_err(|e| read_error(&e))?;
        let mut iterator = it.shard_iterator;
        let mut out = Vec::new();
        let mut empty = 0;
        while let Some(it) = iterator.take() {
            let page = self
                .client
                .get_records()
                .shard_iterator(it)
                .limit(1000)
                .send()
                .await
                .map_err(|e| read_error(&e))?;
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                empty += 1;
                if empty > MAX_EMPTY_PAGES {
                    break;
                }
            }
            for r in &records {
                let seq = r
                    .dynamodb
                    .as_ref()
                    .and_then(|d| d.sequence_number.as_deref())
                    .unwrap_or("");
                if seq_cmp(seq, &batch.end_sequence_number).is_gt() {
                    return Ok(out);
                }
                let rec: StreamRecord =
                    serde_json::from_value(record_json(r, &batch.stream_arn))
                        .map_err(|e| StreamReadError::Failed(format!("stream record: {e}")))?;
                let last = seq_cmp(seq, &batch.end_sequence_number).is_eq();
                out.push(rec);
                if last {
                    return Ok(out);
                }
            }
            iterator = page.next_shard_iterator;
        }
        if out.is_empty() {
            return Err(StreamReadError::Gone(format!(
                "no record from {} in shard {}",
                batch.start_sequence_number, batch.shard_id
            )));
        }
        Ok(out)
    }
}

/// The capture's on-failure queue (SQS).
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

fn sqs_err<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    what: &str,
    e: &aws_sdk_sqs::error::SdkError<E, R>,
) -> ReplayError {
    ReplayError::Backend(format!(
        "dead-letter queue {what}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    ))
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn receive_one(&self, visibility: Duration) -> Result<Option<DeadLetter>, ReplayError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(1)
            .visibility_timeout(visibility.as_secs() as i32)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| sqs_err("receive", &e))?;
        Ok(out.messages.unwrap_or_default().into_iter().find_map(|m| {
            Some(DeadLetter {
                message_id: m.message_id.unwrap_or_default(),
                receipt: m.receipt_handle?,
                body: m.body.unwrap_or_default(),
            })
        }))
    }

    async fn delete(&self, receipt: &str) -> Result<(), ReplayError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(drop)
            .map_err(|e| sqs_err("delete", &e))
    }

    async fn waiting(&self) -> Result<Option<u64>, ReplayError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| sqs_err("attributes", &e))?;
        Ok(out
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                    .cloned()
            })
            .and_then(|n| n.parse().ok()))
    }
}
