//! The DynamoDB stream event Lambda hands the capture function (and the local run
//! builds from real stream records), the partial-batch-failure answer, and the decoding
//! of an inbox item from a stream `NewImage` (DynamoDB JSON: `{"S": "..."}`, `{"N": "..."}`).

use crate::domain::{Channel, Route};
use crate::store::{InboxItem, InboxKind};
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

fn image_s<'a>(img: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    img.get(k)?.get("S")?.as_str()
}
fn image_n(img: &Map<String, Value>, k: &str) -> Option<i64> {
    img.get(k)?.get("N")?.as_str()?.parse().ok()
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream image is not an inbox item: {0}")]
pub struct ImageError(pub String);

pub fn inbox_item_from_image(img: &Map<String, Value>) -> Result<InboxItem, ImageError> {
    let req = |k: &str| image_s(img, k).ok_or_else(|| ImageError(format!("missing {k}")));
    let kind = req("kind")?;
    let channel = req("channel")?;
    let route = req("route")?;
    Ok(InboxItem {
        id: req("pk")?.to_string(),
        kind: InboxKind::parse(kind).ok_or_else(|| ImageError(format!("kind {kind}")))?,
        channel: Channel::parse(channel).ok_or_else(|| ImageError(format!("channel {channel}")))?,
        route: Route::parse(route).ok_or_else(|| ImageError(format!("route {route}")))?,
        waba_id: image_s(img, "waba_id").map(str::to_string),
        payload: req("payload")?.to_string(),
        contact: image_s(img, "contact").map(str::to_string),
        received_at_ms: image_n(img, "received_at").unwrap_or_default(),
        expires_at: image_n(img, "expires_at").unwrap_or_default(),
    })
}

/// The stream image of an inbox item, as DynamoDB would write it (for tests and fixtures).
pub fn image_of(item: &InboxItem) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put_s = |k: &str, v: &str| {
        m.insert(k.into(), serde_json::json!({ "S": v }));
    };
    put_s("pk", &item.id);
    put_s("kind", item.kind.as_str());
    put_s("channel", item.channel.as_str());
    put_s("route", &item.route.key());
    if let Some(w) = &item.waba_id {
        put_s("waba_id", w);
    }
    put_s("payload", &item.payload);
    if let Some(c) = &item.contact {
        put_s("contact", c);
    }
    m.insert(
        "received_at".into(),
        serde_json::json!({"N": item.received_at_ms.to_string()}),
    );
    m.insert(
        "expires_at".into(),
        serde_json::json!({"N": item.expires_at.to_string()}),
    );
    m
}
