//! Ads Lambda: wiring only. Clients (and the usage governor, which learns Meta's rate
//! limits from its answers) are built once per cold start.
use ctwa_shared::config::ConnectConfig;
use ctwa_shared::handlers::ads::handle;
use ctwa_shared::wiring::{self, Aws, run_http};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    ctwa_shared::telemetry::init();
    let deps = wiring::ads(&Aws::from_env().await, &ConnectConfig::from_env()?)?;
    run_http(deps, |d, r| Box::pin(handle(d, r))).await
}
