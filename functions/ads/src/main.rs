//! Ads Lambda: wiring only. Clients (and the usage governor, which learns Meta's rate
//! limits from its answers) are built once per cold start.
use ctwa_shared::ads::usage::Governor;
use ctwa_shared::ads::{AdsDeps, AdsPolicy};
use ctwa_shared::config::{ConnectConfig, aws_sdk_config};
use ctwa_shared::handlers::ads::handle;
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
    let deps = Arc::new(AdsDeps {
        accounts: data.clone(),
        ads: data.clone(),
        meta: Arc::new(meta_deps(&config, &sdk, data)?),
        governor: Governor::new(),
        policy: AdsPolicy::default(),
    });
    lambda_http::run(service_fn(move |req: Request| {
        let deps = deps.clone();
        async move { Ok::<_, Error>(into_lambda(handle(&deps, from_lambda(req)).await)) }
    }))
    .await
}
