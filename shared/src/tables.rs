//! Table definitions for the local run and the tests, the same keys, indexes, stream and
//! TTL as template.yaml (a test compares the two). Behind the `test-support` feature: no
//! function creates tables.
#![cfg(any(test, feature = "test-support"))]

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};

pub const TTL_ATTRIBUTE: &str = "expires_at";

/// `(index name, partition key, sort key)` of the data table's global secondary indexes.
pub const DATA_INDEXES: [(&str, &str, &str); 3] = [
    ("gsi1", "gsi1pk", "gsi1sk"),
    ("gsi2", "gsi2pk", "gsi2sk"),
    ("gsi3", "gsi3pk", "gsi3sk"),
];

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("name and type are set")
}

fn key(name: &str, t: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .expect("name and type are set")
}

#[derive(Debug, thiserror::Error)]
#[error("creating table {table}: {reason}")]
pub struct TableError {
    pub table: String,
    pub reason: String,
}

/// Creates the inbox table (stream NEW_IMAGE, TTL). An existing table is left as it is.
pub async fn create_inbox_table(client: &Client, name: &str) -> Result<(), TableError> {
    let req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .key_schema(key("pk", KeyType::Hash))
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .expect("stream_enabled is set"),
        );
    finish(client, name, req).await
}

/// Creates the data table with its indexes and TTL.
pub async fn create_data_table(client: &Client, name: &str) -> Result<(), TableError> {
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range));
    for (index, pk, sk) in DATA_INDEXES {
        req = req
            .attribute_definitions(attr(pk))
            .attribute_definitions(attr(sk))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(pk, KeyType::Hash))
                    .key_schema(key(sk, KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .expect("name, keys and projection are set"),
            );
    }
    finish(client, name, req).await
}

/// Sends the table's creation (an existing table is kept: `(true, _)`), then turns on
/// its TTL.
async fn finish(
    client: &Client,
    name: &str,
    req: aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder,
) -> Result<(), TableError> {
    let created = req.send().await.map(|_| ()).map_err(|e| {
        (
            e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()),
            DisplayErrorContext(&e).to_string(),
        )
    });
    let err = |reason: String| TableError {
        table: name.into(),
        reason,
    };
    match created {
        Ok(()) => {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(TTL_ATTRIBUTE)
                        .build()
                        .expect("enabled and name are set"),
                )
                .send()
                .await
                .map_err(|e| err(DisplayErrorContext(&e).to_string()))?;
            Ok(())
        }
        Err((true, _)) => Ok(()),
        Err((false, reason)) => Err(err(reason)),
    }
}
