//! Admin Lambda: wiring only (onboarding accounts, phone number routes, Sinch app secrets, API keys).
use ctwa_shared::config::AdminConfig;
use ctwa_shared::handlers::admin::handle;
use ctwa_shared::wiring::{self, Aws, run_http};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    ctwa_shared::telemetry::init();
    let deps = wiring::admin(&Aws::from_env().await, &AdminConfig::from_env()?)?;
    run_http(deps, |d, r| Box::pin(handle(d, r))).await
}
