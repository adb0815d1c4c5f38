//! Webhook Lambda: wiring only. Clients are built once per cold start.
use ctwa_shared::config::{WebhookConfig, aws_sdk_config};
use ctwa_shared::handlers::webhook::{WebhookDeps, handle};
use ctwa_shared::http::lambda::{from_lambda, into_lambda};
use ctwa_shared::secrets::{AwsSecrets, CachedSecrets};
use ctwa_shared::store::dynamo::DynamoInbox;
use lambda_http::{Error, Request, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    ctwa_shared::telemetry::init();
    let config = WebhookConfig::from_env()?;
    let sdk = aws_sdk_config().await;
    let secrets = AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk));
    let deps = Arc::new(WebhookDeps {
        inbox: Arc::new(DynamoInbox::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &config.inbox_table,
        )),
        secrets: Arc::new(CachedSecrets::new(
            Arc::new(secrets),
            config.secrets_cache_ttl,
        )),
        config,
    });
    lambda_http::run(service_fn(move |req: Request| {
        let deps = deps.clone();
        async move { Ok::<_, Error>(into_lambda(handle(&deps, from_lambda(req)).await)) }
    }))
    .await
}
