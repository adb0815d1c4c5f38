//! Webhook Lambda: wiring only. Clients are built once per cold start.
use ctwa_shared::config::WebhookConfig;
use ctwa_shared::handlers::webhook::handle;
use ctwa_shared::wiring::{self, Aws, run_http};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    ctwa_shared::telemetry::init();
    let deps = wiring::webhook(&Aws::from_env().await, WebhookConfig::from_env()?);
    run_http(deps, |d, r| Box::pin(handle(d, r))).await
}
