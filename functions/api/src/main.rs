//! Read API Lambda: wiring only. Clients are built once per cold start.
use ctwa_shared::config::{DataConfig, aws_sdk_config};
use ctwa_shared::handlers::api::{ApiDeps, handle};
use ctwa_shared::http::lambda::{from_lambda, into_lambda};
use ctwa_shared::store::dynamo::DynamoData;
use lambda_http::{Error, Request, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let config = DataConfig::from_env()?;
    let sdk = aws_sdk_config().await;
    let data = Arc::new(DynamoData::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &config.data_table,
    ));
    let deps = Arc::new(ApiDeps {
        accounts: data.clone(),
        conversations: data,
    });
    lambda_http::run(service_fn(move |req: Request| {
        let deps = deps.clone();
        async move { Ok::<_, Error>(into_lambda(handle(&deps, from_lambda(req)).await)) }
    }))
    .await
}
