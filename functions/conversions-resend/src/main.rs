//! Resend Lambda (EventBridge schedule): wiring only. Sends pending conversions (and
//! those whose sender died mid-call) again with the same event id; reports the run as
//! a CloudWatch Embedded Metric Format line.
use ctwa_shared::capi::{capi_deps, resend_due};
use ctwa_shared::config::{CapiSettings, aws_sdk_config};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let settings = CapiSettings::from_env()?;
    let sdk = aws_sdk_config().await;
    let deps = Arc::new(capi_deps(&settings, &sdk)?);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move {
            let now = ctwa_shared::time::now_millis();
            // Stop sending in time: the invocation's own deadline (epoch millis).
            let left_ms = (ev.context.deadline as i64 - now).max(0) as u64;
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(left_ms);
            let report = resend_due(&deps, now, 500, deadline).await?;
            println!(
                "{}",
                serde_json::json!({
                    "_aws": {"Timestamp": now, "CloudWatchMetrics": [{"Namespace": "ctwa", "Dimensions": [[]],
                        "Metrics": [{"Name": "ConversionsResent", "Unit": "Count"}, {"Name": "ConversionsFailed", "Unit": "Count"}, {"Name": "ConversionsPending", "Unit": "Count"}]}]},
                    "ConversionsResent": report.delivered,
                    "ConversionsFailed": report.failed,
                    "ConversionsPending": report.pending,
                    "report": report,
                })
            );
            Ok::<_, Error>(report)
        }
    }))
    .await
}
