//! Resend Lambda (EventBridge schedule): wiring only. Sends pending conversions (and
//! those whose sender died mid-call) again with the same event id; reports the run as
//! a CloudWatch Embedded Metric Format line.
use ctwa_shared::capi::{resend_due, resend_metrics_line};
use ctwa_shared::config::CapiConfig;
use ctwa_shared::wiring::{self, Aws};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let deps = Arc::new(wiring::capi(
        &Aws::from_env().await,
        &CapiConfig::from_env()?,
    )?);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move {
            let now = ctwa_shared::time::now_millis();
            // Stop sending in time: the invocation's own deadline (epoch millis).
            let left_ms = (ev.context.deadline as i64 - now).max(0) as u64;
            let deadline = Instant::now() + Duration::from_millis(left_ms);
            let report = resend_due(&deps, now, 500, deadline).await?;
            println!("{}", resend_metrics_line(&report, now));
            Ok::<_, Error>(report)
        }
    }))
    .await
}
