//! Dataset Lambda: wiring only. Clients are built once per cold start.
use ctwa_shared::capi::capi_deps;
use ctwa_shared::config::{CapiSettings, aws_sdk_config};
use ctwa_shared::handlers::capi::handle_dataset;
use ctwa_shared::http::lambda::{from_lambda, into_lambda};
use lambda_http::{Error, Request, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let settings = CapiSettings::from_env()?;
    let sdk = aws_sdk_config().await;
    let deps = Arc::new(capi_deps(&settings, &sdk)?);
    lambda_http::run(service_fn(move |req: Request| {
        let deps = deps.clone();
        async move { Ok::<_, Error>(into_lambda(handle_dataset(&deps, from_lambda(req)).await)) }
    }))
    .await
}
