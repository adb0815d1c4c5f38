//! Admin Lambda: wiring only (onboarding accounts, phone number routes, API keys).
use ctwa_shared::config::ConnectConfig;
use ctwa_shared::handlers::admin::handle;
use ctwa_shared::wiring::{self, Aws, run_http};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    ctwa_shared::telemetry::init();
    let deps = wiring::admin(&Aws::from_env().await, &ConnectConfig::from_env()?)?;
    run_http(deps, |d, r| Box::pin(handle(d, r))).await
}
