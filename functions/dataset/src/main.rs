//! Dataset Lambda: wiring only. Clients are built once per cold start.
use ctwa_shared::config::CapiSettings;
use ctwa_shared::handlers::capi::handle_dataset;
use ctwa_shared::wiring::{self, Aws, run_http};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    ctwa_shared::telemetry::init();
    let deps = wiring::capi(&Aws::from_env().await, &CapiSettings::from_env()?)?;
    run_http(deps, |d, r| Box::pin(handle_dataset(d, r))).await
}
