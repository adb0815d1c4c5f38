//! Capture Lambda (DynamoDB stream of the inbox, ReportBatchItemFailures): wiring only.
use ctwa_shared::capture::handle_stream_event;
use ctwa_shared::config::CapiConfig;
use ctwa_shared::stream::{BatchResponse, StreamEvent};
use ctwa_shared::wiring::{self, Aws};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let deps = Arc::new(wiring::capture(
        &Aws::from_env().await,
        &CapiConfig::from_env()?,
    )?);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<StreamEvent>| {
        let deps = deps.clone();
        async move { Ok::<BatchResponse, Error>(handle_stream_event(&deps, ev.payload).await) }
    }))
    .await
}
