//! Capture Lambda (DynamoDB stream of the inbox, ReportBatchItemFailures): wiring only.
use ctwa_shared::capture::{CaptureDeps, handle_stream_event};
use ctwa_shared::config::{DataConfig, aws_sdk_config};
use ctwa_shared::store::dynamo::DynamoData;
use ctwa_shared::stream::{BatchResponse, StreamEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let config = DataConfig::from_env()?;
    let sdk = aws_sdk_config().await;
    let data = Arc::new(DynamoData::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &config.data_table,
    ));
    let deps = Arc::new(CaptureDeps::new(data.clone(), data));
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<StreamEvent>| {
        let deps = deps.clone();
        async move { Ok::<BatchResponse, Error>(handle_stream_event(&deps, ev.payload).await) }
    }))
    .await
}
