//! Connect Lambda: wiring only. Clients are built once per cold start.
use ctwa_shared::config::{ConnectConfig, aws_sdk_config};
use ctwa_shared::handlers::connect::{ConnectDeps, handle};
use ctwa_shared::http::lambda::{from_lambda, into_lambda};
use ctwa_shared::meta::connection::meta_deps;
use ctwa_shared::store::dynamo::DynamoData;
use lambda_http::{Error, Request, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let config = ConnectConfig::from_env()?;
    let sdk = aws_sdk_config().await;
    let data = Arc::new(DynamoData::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &config.data_table,
    ));
    let deps = Arc::new(ConnectDeps {
        accounts: data.clone(),
        capi: data.clone(),
        meta: Arc::new(meta_deps(&config, &sdk, data)?),
    });
    lambda_http::run(service_fn(move |req: Request| {
        let deps = deps.clone();
        async move { Ok::<_, Error>(into_lambda(handle(&deps, from_lambda(req)).await)) }
    }))
    .await
}
