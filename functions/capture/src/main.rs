//! Capture Lambda (DynamoDB stream of the inbox, ReportBatchItemFailures): wiring only.
use ctwa_shared::capture::handle_stream_event;
use ctwa_shared::config::CapiConfig;
use ctwa_shared::metrics::{Metric, MetricLine};
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
        async move {
            let records = ev.payload.records.len() as u64;
            let answer = handle_stream_event(&deps, ev.payload).await;
            // Failed items are retried by the stream, not errors of the invocation:
            // counted here so the alarms see them.
            let failed = answer.batch_item_failures.len() as u64;
            MetricLine::for_function("capture")
                .count(Metric::Records, records)
                .count(Metric::RecordsFailed, failed)
                .emit();
            Ok::<BatchResponse, Error>(answer)
        }
    }))
    .await
}
