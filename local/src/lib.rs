//! The local run: the very handlers that run in Lambda, behind ONE HTTP port with the
//! routes of template.yaml, against DynamoDB Local and a Secrets Manager emulator; the
//! capture handler is fed from the inbox table's real stream (DynamoDB Streams API),
//! with records shaped exactly like Lambda's event and Lambda's partial-batch retries.

pub mod lambda;
pub mod loadgen;
pub mod report_seed;
pub mod stream;

use ctwa_shared::ads::AdsDeps;
use ctwa_shared::capi::{CapiDeps, RetryPolicy};
use ctwa_shared::capture::CaptureDeps;
use ctwa_shared::config::{CapiConfig, ConnectConfig};
use ctwa_shared::handlers::connect;
use ctwa_shared::store::dynamo::DynamoData;
use ctwa_shared::tables;
use ctwa_shared::wiring;
use lambda::{LambdaOptions, LambdaStack, Resources};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The local deployment: the physical names of the template's resources and the
/// values of its parameters.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub bind: SocketAddr,
    /// `AWS::StackName`: token secrets are `<stack>/meta-token/<account>`, function names
    /// `<stack>-<LogicalId>`, the dead-letter queue `<stack>-<LogicalId>`.
    pub stack_name: String,
    pub inbox_table: String,
    pub data_table: String,
    /// The name of the template's `WebhookSecret` (its functions get its ARN).
    pub webhook_secret_id: String,
    /// Parameter MetaAppSecret.
    pub app_secret: String,
    /// Parameter WebhookVerifyToken.
    pub verify_token: String,
    /// Parameter SinchWebhookSecret.
    pub sinch_webhook_secret: String,
    /// Parameter InboxTtlDays.
    pub inbox_ttl_days: u64,
    /// Parameter MetaGraphUrl (the simulator, or a real Graph API).
    pub graph_url: String,
    /// Parameter MetaAppId.
    pub meta_app_id: String,
    /// Parameter LogLevel (`None`: the template's default).
    pub log_level: Option<String>,
    /// Parameter MetaPartnerAgent (`None`: the template's default, none sent).
    pub partner_agent: Option<String>,
    /// The retry policy of the in-process CAPI dependencies (tests' direct calls);
    /// the functions use their own.
    pub retry_policy: RetryPolicy,
    pub lambda: LambdaOptions,
}

impl LocalConfig {
    /// `!Sub ${AWS::StackName}/meta-token/`, as the template gives it to the functions.
    pub fn token_secret_prefix(&self) -> String {
        format!("{}/meta-token/", self.stack_name)
    }
}

#[derive(Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// SQS on the Secrets Manager emulator's endpoint (moto serves both).
    pub sqs: aws_sdk_sqs::Client,
}

impl Clients {
    /// From the standard AWS SDK environment. DynamoDB Local serves the Streams API on
    /// its own endpoint: when `AWS_ENDPOINT_URL_DYNAMODB_STREAMS` is unset, the DynamoDB
    /// endpoint is used for it.
    pub async fn from_env() -> Self {
        let sdk = ctwa_shared::config::aws_sdk_config().await;
        let mut streams = aws_sdk_dynamodbstreams::config::Builder::from(&sdk);
        if std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB_STREAMS").is_none()
            && let Ok(url) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        {
            streams = streams.endpoint_url(url);
        }
        let mut sqs = aws_sdk_sqs::config::Builder::from(&sdk);
        if std::env::var_os("AWS_ENDPOINT_URL_SQS").is_none()
            && let Ok(url) = std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        {
            sqs = sqs.endpoint_url(url);
        }
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            streams: aws_sdk_dynamodbstreams::Client::from_conf(streams.build()),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
        }
    }
}

pub struct Stack {
    pub addr: SocketAddr,
    pub lambda: LambdaStack,
    pub data: Arc<DynamoData>,
    pub capture: Arc<CaptureDeps>,
    pub connect: Arc<connect::ConnectDeps>,
    pub capi: Arc<CapiDeps>,
    pub ads: Arc<AdsDeps>,
}

impl Stack {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub async fn stop(self) {
        self.lambda.stop().await;
    }
}

#[derive(Debug)]
pub struct StartError(pub String);
impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for StartError {}

/// Creates (or gives a new version to) a secret of the template with its resolved
/// SecretString; its ARN.
async fn put_secret(clients: &Clients, name: &str, value: &str) -> Result<String, StartError> {
    let created = clients
        .secrets
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await;
    match created {
        Ok(out) => Ok(out.arn.unwrap_or_default()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception()) =>
        {
            clients
                .secrets
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .map(|o| o.arn.unwrap_or_default())
                .map_err(|e| {
                    StartError(format!(
                        "writing secret: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                    ))
                })
        }
        Err(e) => Err(StartError(format!(
            "creating secret (is the Secrets Manager emulator running at AWS_ENDPOINT_URL_SECRETS_MANAGER?): {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
        ))),
    }
}

/// "Deploys" template.yaml: creates its tables, secrets and queues with the local
/// names, then starts every function behind the HTTP API, the stream mapping and the
/// IAM gateway ([`LambdaStack`]), until [`Stack::stop`].
/// Keeps `secret` as the webhook secret of Sinch app `app_id` in the stack named
/// `stack_name`, where the template's `SINCH_SECRET_PREFIX` puts it (what
/// `PUT /v1/admin/accounts/{account_id}/sinch-webhook-secret` does for a linked app).
pub async fn set_sinch_app_secret(
    clients: &Clients,
    stack_name: &str,
    app_id: &str,
    secret: &str,
) -> Result<(), ctwa_shared::secrets::SecretError> {
    let aws = ctwa_shared::secrets::AwsSecrets::new(clients.secrets.clone());
    let id = ctwa_shared::secrets::SinchAppSecret::id(&format!("{stack_name}/sinch-app/"), app_id);
    ctwa_shared::secrets::SinchAppSecret::store(
        &aws,
        &aws,
        &id,
        secret,
        0,
        ctwa_shared::time::now_secs(),
    )
    .await
    .map(drop)
}

pub async fn start(clients: &Clients, cfg: LocalConfig) -> Result<Stack, StartError> {
    let text = std::fs::read_to_string(&cfg.lambda.template_path)
        .map_err(|e| StartError(format!("{}: {e}", cfg.lambda.template_path.display())))?;
    let raw = lambda::template::parse_raw(&text).map_err(|e| StartError(e.to_string()))?;
    let mut given = HashMap::from([
        ("MetaAppSecret".to_string(), cfg.app_secret.clone()),
        ("WebhookVerifyToken".to_string(), cfg.verify_token.clone()),
        (
            "SinchWebhookSecret".to_string(),
            cfg.sinch_webhook_secret.clone(),
        ),
        ("InboxTtlDays".to_string(), cfg.inbox_ttl_days.to_string()),
        ("MetaGraphUrl".to_string(), cfg.graph_url.clone()),
        ("MetaAppId".to_string(), cfg.meta_app_id.clone()),
    ]);
    if let Some(level) = &cfg.log_level {
        given.insert("LogLevel".into(), level.clone());
    }
    if let Some(agent) = &cfg.partner_agent {
        given.insert("MetaPartnerAgent".into(), agent.clone());
    }
    let parameters =
        lambda::template::parameters(&raw, &given).map_err(|e| StartError(e.to_string()))?;

    let mut resources = Resources {
        stack_name: cfg.stack_name.clone(),
        parameters: given,
        ..Default::default()
    };
    for id in lambda::template::resources_of_type(&raw, "AWS::DynamoDB::Table") {
        let name = match id.as_str() {
            "InboxTable" => {
                tables::create_inbox_table(&clients.dynamodb, &cfg.inbox_table)
                    .await
                    .map_err(|e| {
                        StartError(format!(
                            "{e} (is DynamoDB Local running at AWS_ENDPOINT_URL_DYNAMODB?)"
                        ))
                    })?;
                cfg.inbox_table.clone()
            }
            "DataTable" => {
                tables::create_data_table(&clients.dynamodb, &cfg.data_table)
                    .await
                    .map_err(|e| StartError(e.to_string()))?;
                cfg.data_table.clone()
            }
            other => {
                return Err(StartError(format!(
                    "template.yaml: table {other} has no local schema (shared/src/tables.rs)"
                )));
            }
        };
        resources.tables.insert(id, name);
    }
    let secret_bindings = lambda::template::Bindings {
        stack_name: cfg.stack_name.clone(),
        region: cfg.lambda.region.clone(),
        account: lambda::LOCAL_ACCOUNT.into(),
        parameters,
        ..Default::default()
    };
    for id in lambda::template::resources_of_type(&raw, "AWS::SecretsManager::Secret") {
        let name = if id == "WebhookSecret" {
            cfg.webhook_secret_id.clone()
        } else {
            format!("{}-{id}", cfg.stack_name)
        };
        let value = match raw["Resources"][id.as_str()]["Properties"].get("SecretString") {
            Some(v) => {
                lambda::template::resolve(v, &secret_bindings, &raw, &format!("{id}.SecretString"))
                    .map_err(|e| StartError(e.to_string()))?
            }
            None => "{}".to_string(),
        };
        let arn = put_secret(clients, &name, &value).await?;
        resources.secrets.insert(id, (name, arn));
    }
    for id in lambda::template::resources_of_type(&raw, "AWS::SQS::Queue") {
        let name = format!("{}-{id}", cfg.stack_name);
        let url = clients
            .sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| {
                StartError(format!(
                    "creating queue {name} (the emulator at AWS_ENDPOINT_URL_SECRETS_MANAGER serves SQS too): {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                ))
            })?
            .queue_url
            .unwrap_or_default();
        resources.queues.insert(id, (name, url));
    }

    let lambda = LambdaStack::start(
        cfg.bind,
        cfg.lambda.clone(),
        resources,
        clients.dynamodb.clone(),
    )
    .await
    .map_err(StartError)?;

    // The shared crate's dependencies, in process, on the same tables and secrets,
    // built by the same composition root as the functions'.
    let aws = wiring::Aws {
        dynamodb: clients.dynamodb.clone(),
        secrets: clients.secrets.clone(),
    };
    let connect_config = ConnectConfig {
        data_table: cfg.data_table.clone(),
        app_secret_id: cfg.webhook_secret_id.clone(),
        meta_app_id: cfg.meta_app_id.clone(),
        token_secret_prefix: cfg.token_secret_prefix(),
        // Tests change tokens under the in-process connection: read them soon.
        secrets_cache_ttl: Duration::from_secs(5),
        refresh_within_days: 10,
        graph_url: cfg.graph_url.clone(),
    };
    let graph_error = |e: ctwa_shared::graph::GraphError| StartError(format!("Graph client: {e}"));
    let data = Arc::new(DynamoData::new(clients.dynamodb.clone(), &cfg.data_table));
    let connect = Arc::new(wiring::connect(&aws, &connect_config).map_err(graph_error)?);
    let capi_config = CapiConfig {
        connect: ConnectConfig {
            secrets_cache_ttl: Duration::from_secs(300),
            ..connect_config.clone()
        },
        audit_ttl_days: None,
        resend_delay: cfg.retry_policy.resend_delay,
        click_wait: cfg.retry_policy.click_wait,
        partner_agent: cfg.partner_agent.clone(),
    };
    let mut capi = wiring::capi(&aws, &capi_config).map_err(graph_error)?;
    capi.policy = cfg.retry_policy.clone();
    let capi = Arc::new(capi);
    let ads = Arc::new(wiring::ads(&aws, &capi_config.connect).map_err(graph_error)?);
    let capture = Arc::new(wiring::capture_on(capi.clone(), None));
    Ok(Stack {
        addr: lambda.addr,
        lambda,
        data,
        capture,
        connect,
        capi,
        ads,
    })
}
