//! Capture-backlog Lambda (EventBridge schedule): wiring only. Captures the unrouted
//! items of routes linked since they arrived, oldest first, within the invocation's
//! deadline and an item budget (`BACKLOG_ITEMS_PER_RUN`); the next invocation goes on
//! where this one stopped.
use ctwa_shared::config::BacklogConfig;
use ctwa_shared::unrouted::{Budget, drain_backlog};
use ctwa_shared::wiring::{self, Aws};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time kept back from the deadline for the item in progress.
const MARGIN: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let config = BacklogConfig::from_env()?;
    let deps = Arc::new(wiring::capture_backlog(
        &Aws::from_env().await,
        &config.data,
    ));
    let items_per_run = config.items_per_run;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<serde_json::Value>| {
        let deps = deps.clone();
        async move {
            let now = ctwa_shared::time::now_millis();
            let left_ms = (ev.context.deadline as i64 - now).max(0) as u64;
            let deadline = (Instant::now() + Duration::from_millis(left_ms))
                .checked_sub(MARGIN)
                .unwrap_or_else(Instant::now);
            let budget = Budget {
                items: items_per_run,
                deadline,
            };
            let report = drain_backlog(&deps, now, budget).await?;
            Ok::<_, Error>(report)
        }
    }))
    .await
}
