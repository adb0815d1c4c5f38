//! Admin Lambda: wiring only (onboarding accounts, phone number routes, Sinch app secrets, API keys, replay).
use ctwa_shared::config::AdminConfig;
use ctwa_shared::handlers::admin::handle;
use ctwa_shared::wiring::{self, Aws, run_http};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    ctwa_shared::telemetry::init();
    let sdk = ctwa_shared::config::aws_sdk_config().await;
    let deps = wiring::admin(
        &Aws::new(&sdk),
        &wiring::ReplayClients::new(&sdk),
        &AdminConfig::from_env()?,
    )?;
    run_http(deps, |d, r| Box::pin(handle(d, r))).await
}
