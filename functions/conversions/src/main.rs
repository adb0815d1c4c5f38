//! Conversions Lambda: wiring only. Clients are built once per cold start.
use ctwa_shared::config::CapiConfig;
use ctwa_shared::handlers::conversions::handle;
use ctwa_shared::wiring::{self, Aws, run_http};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    ctwa_shared::telemetry::init();
    let deps = wiring::capi(&Aws::from_env().await, &CapiConfig::from_env()?)?;
    run_http(deps, |d, r| Box::pin(handle(d, r))).await
}
