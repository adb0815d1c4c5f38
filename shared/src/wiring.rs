//! The composition root: every function's dependencies built from its typed config,
//! once per cold start. The ten binaries under `functions/` and the local stack
//! (`local/`, which keeps the domain in process beside the real functions) build their
//! dependencies here and nowhere else: the only place where adapters (DynamoDB, Secrets
//! Manager, the Graph API over HTTP) are chosen for the ports.

use crate::ads::usage::Governor;
use crate::ads::{AdsDeps, AdsPolicy};
use crate::capi::{CapiDeps, RetryPolicy};
use crate::capture::CaptureDeps;
use crate::config::{AdminConfig, CapiConfig, ConnectConfig, DataConfig, WebhookConfig};
use crate::graph::{Graph, GraphClient, GraphError};
use crate::handlers::admin::{AdminDeps, SinchSecretStore};
use crate::handlers::api::ApiDeps;
use crate::handlers::connect::ConnectDeps;
use crate::handlers::webhook::WebhookDeps;
use crate::http::{ApiRequest, ApiResponse};
use crate::meta::connection::MetaDeps;
use crate::secrets::{AwsSecrets, CachedSecrets};
use crate::store::dynamo::{DynamoData, DynamoInbox};
use crate::unrouted::BacklogDeps;
use std::sync::Arc;
use std::time::Duration;

/// How long one Graph API call may take (a Lambda's budget is larger).
pub const GRAPH_TIMEOUT: Duration = Duration::from_secs(10);

/// The AWS clients a function uses, from one SDK configuration.
#[derive(Clone)]
pub struct Aws {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Aws {
    /// From the standard SDK environment (the Lambda's role, region and endpoints).
    pub async fn from_env() -> Self {
        Self::new(&crate::config::aws_sdk_config().await)
    }

    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    fn data(&self, table: &str) -> Arc<DynamoData> {
        Arc::new(DynamoData::new(self.dynamodb.clone(), table))
    }
}

/// The clients only a replay uses (the admin function): the capture's on-failure queue
/// and the inbox stream, read back.
#[derive(Clone)]
pub struct ReplayClients {
    pub sqs: aws_sdk_sqs::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
}

impl ReplayClients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(sdk),
            streams: aws_sdk_dynamodbstreams::Client::new(sdk),
        }
    }
}

/// The Graph API adapter (reqwest) behind the port.
pub fn graph(base_url: &str) -> Result<Arc<dyn Graph>, GraphError> {
    Ok(Arc::new(GraphClient::new(base_url, GRAPH_TIMEOUT)?))
}

pub fn webhook(aws: &Aws, config: WebhookConfig) -> WebhookDeps {
    let source = Arc::new(AwsSecrets::new(aws.secrets.clone()));
    WebhookDeps {
        inbox: Arc::new(DynamoInbox::new(aws.dynamodb.clone(), &config.inbox_table)),
        secrets: Arc::new(
            CachedSecrets::new(source, config.secrets_cache_ttl).remembering_missing(),
        ),
        config,
    }
}

/// Capture, which also sends the conversions that waited for the clicks it records and
/// forwards automatic events as conversions when the account's policy says so.
pub fn capture(aws: &Aws, config: &CapiConfig) -> Result<CaptureDeps, GraphError> {
    Ok(capture_on(
        Arc::new(capi(aws, config)?),
        config.audit_ttl_days,
    ))
}

/// [`capture`] over the conversions' dependencies.
pub fn capture_on(conversions: Arc<CapiDeps>, audit_ttl_days: Option<i64>) -> CaptureDeps {
    let mut deps = CaptureDeps::new(
        conversions.accounts.clone(),
        conversions.conversations.clone(),
    );
    deps.forward = Some(crate::capi::automatic::Forwarding {
        accounts: conversions.accounts.clone(),
        settings: conversions.settings.clone(),
        events: conversions.events.clone(),
        audit_ttl_days,
    });
    deps.with_conversions(conversions)
}

pub fn capture_backlog(aws: &Aws, config: &DataConfig) -> BacklogDeps {
    let data = aws.data(&config.data_table);
    BacklogDeps {
        capture: Arc::new(CaptureDeps::new(data.clone(), data.clone())),
        backlog: data,
    }
}

pub fn api(aws: &Aws, config: &DataConfig) -> ApiDeps {
    let data = aws.data(&config.data_table);
    ApiDeps {
        accounts: data.clone(),
        conversations: data,
    }
}

/// Onboarding, keys and routes: the account's Meta token checks the phone numbers it
/// links; the Sinch apps' webhook secrets are written here.
pub fn admin(
    aws: &Aws,
    replay: &ReplayClients,
    config: &AdminConfig,
) -> Result<AdminDeps, GraphError> {
    let data = aws.data(&config.connect.data_table);
    let secrets = Arc::new(AwsSecrets::new(aws.secrets.clone()));
    let r = &config.replay;
    let replay = crate::replay::ReplayDeps {
        capture: Arc::new(capture(aws, &r.capi)?),
        inbox: Arc::new(DynamoInbox::new(aws.dynamodb.clone(), &r.inbox_table)),
        dead_letters: r.dead_letter_queue_url.as_ref().map(|url| {
            Arc::new(crate::replay::aws::SqsDeadLetters::new(
                replay.sqs.clone(),
                url,
            )) as Arc<dyn crate::replay::DeadLetters>
        }),
        stream: Arc::new(crate::replay::aws::DynamoStream::new(
            replay.streams.clone(),
        )),
    };
    Ok(AdminDeps {
        replay: Arc::new(replay),
        meta: Arc::new(meta_on(aws, &config.connect, data.clone())?),
        accounts: data.clone(),
        ads: data.clone(),
        routes: data.clone(),
        audit: data,
        sinch_secrets: SinchSecretStore {
            source: secrets.clone(),
            writer: secrets,
            prefix: config.sinch_secret_prefix.clone(),
        },
    })
}

/// An account's Meta connection: the Graph API, the connection records, the token
/// secrets (read through a cache), the app's credentials.
pub fn meta(aws: &Aws, config: &ConnectConfig) -> Result<MetaDeps, GraphError> {
    meta_on(aws, config, aws.data(&config.data_table))
}

/// [`meta`] over the function's own table client.
fn meta_on(
    aws: &Aws,
    config: &ConnectConfig,
    data: Arc<DynamoData>,
) -> Result<MetaDeps, GraphError> {
    let secrets = Arc::new(AwsSecrets::new(aws.secrets.clone()));
    Ok(MetaDeps {
        graph: graph(&config.graph_url)?,
        connections: data,
        secrets: Arc::new(CachedSecrets::new(
            secrets.clone(),
            config.secrets_cache_ttl,
        )),
        secret_writer: secrets,
        app_secret_id: config.app_secret_id.clone(),
        app_id: config.meta_app_id.clone(),
        token_secret_prefix: config.token_secret_prefix.clone(),
    })
}

pub fn connect(aws: &Aws, config: &ConnectConfig) -> Result<ConnectDeps, GraphError> {
    let data = aws.data(&config.data_table);
    Ok(ConnectDeps {
        meta: Arc::new(meta_on(aws, config, data.clone())?),
        routes: data.clone(),
        accounts: data.clone(),
        capi: data,
    })
}

pub fn ads(aws: &Aws, config: &ConnectConfig) -> Result<AdsDeps, GraphError> {
    let data = aws.data(&config.data_table);
    Ok(AdsDeps {
        meta: Arc::new(meta_on(aws, config, data.clone())?),
        accounts: data.clone(),
        ads: data,
        governor: Governor::new(),
        policy: AdsPolicy::default(),
    })
}

/// The dataset, conversions and resend functions.
pub fn capi(aws: &Aws, config: &CapiConfig) -> Result<CapiDeps, GraphError> {
    let data = aws.data(&config.connect.data_table);
    Ok(CapiDeps {
        meta: Arc::new(meta_on(aws, &config.connect, data.clone())?),
        accounts: data.clone(),
        conversations: data.clone(),
        settings: data.clone(),
        events: data,
        policy: RetryPolicy {
            resend_delay: config.resend_delay,
            click_wait: config.click_wait,
            ..RetryPolicy::default()
        },
        audit_ttl_days: config.audit_ttl_days,
        partner_agent: config.partner_agent.clone(),
    })
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A route handler: the function's dependencies and the request, to the answer.
pub type HttpHandler<D> = for<'a> fn(&'a D, ApiRequest) -> BoxFuture<'a, ApiResponse>;

/// Serves API Gateway (HTTP API, payload 2.0) requests with `handler` until the runtime
/// stops: the request in, the answer out; the handler never fails (errors are answers).
/// Each answer leaves one EMF line ([`crate::metrics::http_answer`]).
pub async fn run_http<D: Send + Sync + 'static>(
    deps: D,
    handler: HttpHandler<D>,
) -> Result<(), lambda_http::Error> {
    use crate::http::lambda::{from_lambda, into_lambda};
    let deps = Arc::new(deps);
    lambda_http::run(lambda_http::service_fn(move |req: lambda_http::Request| {
        let deps = deps.clone();
        async move {
            let answer = handler(&deps, from_lambda(req)).await;
            // Every answer counted by status class: a handled failure (a 500 the
            // handler answered) is a successful invocation to Lambda, so its `Errors`
            // metric never sees it; the `Http5xx` alarms do.
            crate::metrics::http_answer("http", answer.status.as_u16()).emit();
            Ok::<_, lambda_http::Error>(into_lambda(answer))
        }
    }))
    .await
}
