//! The DynamoDB stream event Lambda hands the capture function (and the local run
//! builds from real stream records), the partial-batch-failure answer, and the decoding
//! of an inbox item from a stream `NewImage` (DynamoDB JSON: `{"S": "..."}`, `{"N": "..."}`).

use crate::store::InboxItem;
use crate::store::dynamo::inbox;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct StreamRecord {
    #[serde(rename = "eventID", default)]
    pub event_id: String,
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    #[serde(
        rename = "eventSource",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_source: Option<String>,
    #[serde(
        rename = "eventSourceARN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub event_source_arn: Option<String>,
    #[serde(default)]
    pub dynamodb: StreamData,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct StreamData {
    #[serde(rename = "Keys", default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Map<String, Value>>,
    #[serde(rename = "NewImage", default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<Map<String, Value>>,
    #[serde(rename = "SequenceNumber", default)]
    pub sequence_number: String,
    #[serde(
        rename = "StreamViewType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_view_type: Option<String>,
}

/// `{"batchItemFailures":[{"itemIdentifier":"<sequence number>"}]}`
#[derive(Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream image is not an inbox item: {0}")]
pub struct ImageError(pub String);

/// The inbox item of a stream image (the schema is `store::dynamo::inbox`'s).
pub fn inbox_item_from_image(img: &Map<String, Value>) -> Result<InboxItem, ImageError> {
    inbox::inbox_item_from_image(img).map_err(ImageError)
}

/// The stream image of an inbox item, as DynamoDB would write it (for tests and fixtures).
#[cfg(any(test, feature = "test-support"))]
pub fn image_of(item: &InboxItem) -> Map<String, Value> {
    inbox::inbox_item_to_image(item)
}
