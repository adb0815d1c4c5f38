//! Token-refresh Lambda (EventBridge schedule): wiring only. Refreshes every Meta token
//! expiring within REFRESH_WITHIN_DAYS, carries on past failures, and reports the run as
//! a CloudWatch Embedded Metric Format line (the failures alarm reads it).
use ctwa_shared::config::ConnectConfig;
use ctwa_shared::meta::connection::{refresh_due, refresh_metrics_line};
use ctwa_shared::wiring::{self, Aws};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let config = ConnectConfig::from_env()?;
    let deps = Arc::new(wiring::meta(&Aws::from_env().await, &config)?);
    let within = config.refresh_within_days * 86_400;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move {
            let now = ctwa_shared::time::now_millis();
            // The invocation's own deadline (the template's Timeout), less a margin.
            let left = ev
                .context
                .deadline
                .saturating_sub(u64::try_from(now).unwrap_or(0));
            let deadline = std::time::Instant::now()
                + std::time::Duration::from_millis(left.saturating_sub(5_000));
            let report = refresh_due(&deps, within, now, deadline).await?;
            println!("{}", refresh_metrics_line(&report, now));
            Ok::<_, Error>(report)
        }
    }))
    .await
}
