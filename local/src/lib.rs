//! The local run: the very handlers that run in Lambda, behind ONE HTTP port with the
//! routes of template.yaml, against DynamoDB Local and a Secrets Manager emulator; the
//! capture handler is fed from the inbox table's real stream (DynamoDB Streams API),
//! with records shaped exactly like Lambda's event and Lambda's partial-batch retries.

pub mod stream;

use bytes::Bytes;
use ctwa_shared::ads::usage::Governor;
use ctwa_shared::ads::{AdsDeps, AdsPolicy};
use ctwa_shared::capi::{CapiDeps, RetryPolicy};
use ctwa_shared::capture::CaptureDeps;
use ctwa_shared::config::WebhookConfig;
use ctwa_shared::error::ApiError;
use ctwa_shared::handlers::{admin, ads as ads_handler, api, capi, connect, webhook};
use ctwa_shared::http::{ApiRequest, ApiResponse, parse_query};
use ctwa_shared::meta::connection::MetaDeps;
use ctwa_shared::secrets::{AwsSecrets, CachedSecrets};
use ctwa_shared::store::dynamo::{DynamoData, DynamoInbox};
use ctwa_shared::tables;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Which function serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Webhook,
    Api,
    Connect,
    Dataset,
    Conversions,
    Ads,
    Admin,
}

/// The HTTP API routes, exactly those of template.yaml (a test compares them).
pub const ROUTES: &[(&str, &str, Function)] = &[
    ("GET", "/webhook", Function::Webhook),
    ("POST", "/webhook", Function::Webhook),
    ("POST", "/webhook/sinch", Function::Webhook),
    ("GET", "/v1/conversations", Function::Api),
    ("GET", "/v1/conversations/{id}", Function::Api),
    ("POST", "/v1/oauth/exchange-code", Function::Connect),
    ("POST", "/v1/oauth/refresh-token", Function::Connect),
    ("GET", "/v1/status", Function::Connect),
    ("GET", "/v1/dataset", Function::Dataset),
    ("POST", "/v1/dataset", Function::Dataset),
    ("GET", "/v1/capi", Function::Dataset),
    ("POST", "/v1/capi", Function::Dataset),
    ("POST", "/v1/conversions", Function::Conversions),
    ("POST", "/v1/conversions/batch", Function::Conversions),
    ("GET", "/v1/conversions", Function::Conversions),
    ("POST", "/v1/triggers", Function::Conversions),
    ("POST", "/v1/ads/ctwa", Function::Ads),
    ("GET", "/v1/ads", Function::Ads),
    ("GET", "/v1/ads/{ad_id}", Function::Ads),
    ("GET", "/v25.0/{ad_account_id}/{edge}", Function::Ads),
    ("POST", "/v25.0/{ad_account_id}/{edge}", Function::Ads),
    ("GET", "/v25.0/{object_id}", Function::Ads),
    ("POST", "/v25.0/{object_id}", Function::Ads),
    ("DELETE", "/v25.0/{object_id}", Function::Ads),
    ("POST", "/v1/admin/accounts", Function::Admin),
    ("GET", "/v1/admin/accounts/{account_id}", Function::Admin),
    (
        "POST",
        "/v1/admin/accounts/{account_id}/ad-accounts",
        Function::Admin,
    ),
    ("GET", "/v1/api-keys", Function::Admin),
    ("POST", "/v1/api-keys", Function::Admin),
    ("POST", "/v1/api-keys/{key_id}/rotate", Function::Admin),
    ("DELETE", "/v1/api-keys/{key_id}", Function::Admin),
];

fn path_matches(pattern: &str, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') => {
                if b.is_empty() {
                    return false;
                }
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Like API Gateway: the function of the matching route, 405 for a known path with
/// another method, 404 otherwise.
pub fn route(method: &str, path: &str) -> Result<Function, ApiError> {
    let mut path_known = false;
    for (m, pattern, f) in ROUTES {
        if path_matches(pattern, path) {
            if *m == method {
                return Ok(*f);
            }
            path_known = true;
        }
    }
    if path_known {
        Err(ApiError::MethodNotAllowed)
    } else {
        Err(ApiError::not_found(format!("no route for {method} {path}")))
    }
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub bind: SocketAddr,
    pub inbox_table: String,
    pub data_table: String,
    pub webhook_secret_id: String,
    /// Written into the emulator's secret at start.
    pub app_secret: String,
    pub verify_token: String,
    pub sinch_webhook_secret: String,
    pub max_body_bytes: usize,
    pub inbox_ttl_days: u64,
    /// `META_GRAPH_URL` for the functions (the simulator, or a real Graph API).
    pub graph_url: String,
    pub meta_app_id: String,
    pub token_secret_prefix: String,
    pub retry_policy: RetryPolicy,
    /// How often the resend job runs (`None`: never; tests call it directly).
    pub resend_every: Option<Duration>,
}

#[derive(Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
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
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            streams: aws_sdk_dynamodbstreams::Client::from_conf(streams.build()),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
        }
    }
}

pub struct Stack {
    pub addr: SocketAddr,
    pub data: Arc<DynamoData>,
    pub capture: Arc<CaptureDeps>,
    pub connect: Arc<connect::ConnectDeps>,
    pub capi: Arc<CapiDeps>,
    pub ads: Arc<AdsDeps>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
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

/// Writes the deployment's webhook secret into the emulator (create, or a new version).
pub async fn put_webhook_secret(clients: &Clients, cfg: &LocalConfig) -> Result<(), StartError> {
    let value = serde_json::json!({
        "app_secret": cfg.app_secret,
        "verify_token": cfg.verify_token,
        "sinch_webhook_secret": cfg.sinch_webhook_secret,
    })
    .to_string();
    let created = clients
        .secrets
        .create_secret()
        .name(&cfg.webhook_secret_id)
        .secret_string(&value)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception()) =>
        {
            clients
                .secrets
                .put_secret_value()
                .secret_id(&cfg.webhook_secret_id)
                .secret_string(&value)
                .send()
                .await
                .map(|_| ())
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

/// Creates the tables and the secret, then serves every function on `cfg.bind` and
/// runs the stream feeder, until [`Stack::stop`].
pub async fn start(clients: &Clients, cfg: LocalConfig) -> Result<Stack, StartError> {
    tables::create_inbox_table(&clients.dynamodb, &cfg.inbox_table)
        .await
        .map_err(|e| {
            StartError(format!(
                "{e} (is DynamoDB Local running at AWS_ENDPOINT_URL_DYNAMODB?)"
            ))
        })?;
    tables::create_data_table(&clients.dynamodb, &cfg.data_table)
        .await
        .map_err(|e| StartError(e.to_string()))?;
    put_webhook_secret(clients, &cfg).await?;

    let data = Arc::new(DynamoData::new(clients.dynamodb.clone(), &cfg.data_table));
    let webhook_config = WebhookConfig {
        inbox_table: cfg.inbox_table.clone(),
        webhook_secret_id: cfg.webhook_secret_id.clone(),
        inbox_ttl: Duration::from_secs(cfg.inbox_ttl_days * 86_400),
        max_body_bytes: cfg.max_body_bytes,
        sinch_max_skew: Duration::from_secs(300),
        secrets_cache_ttl: Duration::from_secs(5),
    };
    let webhook_deps = Arc::new(webhook::WebhookDeps {
        inbox: Arc::new(DynamoInbox::new(clients.dynamodb.clone(), &cfg.inbox_table)),
        secrets: Arc::new(CachedSecrets::new(
            Arc::new(AwsSecrets::new(clients.secrets.clone())),
            webhook_config.secrets_cache_ttl,
        )),
        config: webhook_config,
    });
    let api_deps = Arc::new(api::ApiDeps {
        accounts: data.clone(),
        conversations: data.clone(),
    });
    let aws_secrets = Arc::new(AwsSecrets::new(clients.secrets.clone()));
    let connect_deps = Arc::new(connect::ConnectDeps {
        accounts: data.clone(),
        capi: data.clone(),
        meta: Arc::new(MetaDeps {
            graph: ctwa_shared::graph::GraphClient::new(&cfg.graph_url, Duration::from_secs(10))
                .map_err(|e| StartError(format!("Graph client: {e}")))?,
            connections: data.clone(),
            secrets: Arc::new(CachedSecrets::new(
                aws_secrets.clone(),
                Duration::from_secs(5),
            )),
            secret_writer: aws_secrets,
            app_secret_id: cfg.webhook_secret_id.clone(),
            app_id: cfg.meta_app_id.clone(),
            token_secret_prefix: cfg.token_secret_prefix.clone(),
        }),
    });
    // Like the separate Lambdas in AWS: the CAPI functions have their own secrets cache
    // (with the production TTL), so a refresh made by the connect function reaches them
    // through the connection's token version, not through a shared cache.
    let capi_secrets = Arc::new(AwsSecrets::new(clients.secrets.clone()));
    let capi_meta = Arc::new(MetaDeps {
        graph: ctwa_shared::graph::GraphClient::new(&cfg.graph_url, Duration::from_secs(10))
            .map_err(|e| StartError(format!("Graph client: {e}")))?,
        connections: data.clone(),
        secrets: Arc::new(CachedSecrets::new(
            capi_secrets.clone(),
            Duration::from_secs(300),
        )),
        secret_writer: capi_secrets,
        app_secret_id: cfg.webhook_secret_id.clone(),
        app_id: cfg.meta_app_id.clone(),
        token_secret_prefix: cfg.token_secret_prefix.clone(),
    });
    let capi_deps = Arc::new(CapiDeps {
        accounts: data.clone(),
        conversations: data.clone(),
        store: data.clone(),
        meta: capi_meta,
        policy: cfg.retry_policy.clone(),
        audit_ttl_days: None,
    });
    let ads_secrets = Arc::new(AwsSecrets::new(clients.secrets.clone()));
    let ads_deps = Arc::new(AdsDeps {
        accounts: data.clone(),
        ads: data.clone(),
        meta: Arc::new(MetaDeps {
            graph: ctwa_shared::graph::GraphClient::new(&cfg.graph_url, Duration::from_secs(10))
                .map_err(|e| StartError(format!("Graph client: {e}")))?,
            connections: data.clone(),
            secrets: Arc::new(CachedSecrets::new(
                ads_secrets.clone(),
                Duration::from_secs(300),
            )),
            secret_writer: ads_secrets,
            app_secret_id: cfg.webhook_secret_id.clone(),
            app_id: cfg.meta_app_id.clone(),
            token_secret_prefix: cfg.token_secret_prefix.clone(),
        }),
        governor: Governor::new(),
        policy: AdsPolicy::default(),
    });
    let capture = Arc::new(CaptureDeps::new(data.clone(), data.clone()));

    let listener = TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| StartError(format!("binding {}: {e}", cfg.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let (tx, rx) = watch::channel(false);

    let feeder = stream::StreamFeeder::new(
        clients.dynamodb.clone(),
        clients.streams.clone(),
        cfg.inbox_table.clone(),
        capture.clone(),
    )
    .await
    .map_err(|e| StartError(format!("inbox stream: {e}")))?;
    let feeder_task = tokio::spawn(feeder.run(rx.clone()));
    let functions = Arc::new(Functions {
        webhook: webhook_deps,
        api: api_deps,
        connect: connect_deps.clone(),
        capi: capi_deps.clone(),
        ads: ads_deps.clone(),
        admin: Arc::new(admin::AdminDeps {
            accounts: data.clone(),
            ads: data.clone(),
        }),
    });
    let resend_task = match cfg.resend_every {
        Some(every) => tokio::spawn(resend_loop(capi_deps.clone(), every, rx.clone())),
        None => tokio::spawn(async {}),
    };
    let server_task = tokio::spawn(serve(listener, functions, cfg.max_body_bytes, rx));
    Ok(Stack {
        addr,
        data,
        capture,
        connect: connect_deps,
        capi: capi_deps,
        ads: ads_deps,
        shutdown: tx,
        tasks: vec![server_task, feeder_task, resend_task],
    })
}

/// Every function's dependencies, built once like each Lambda's cold start.
struct Functions {
    webhook: Arc<webhook::WebhookDeps>,
    api: Arc<api::ApiDeps>,
    connect: Arc<connect::ConnectDeps>,
    capi: Arc<CapiDeps>,
    ads: Arc<AdsDeps>,
    admin: Arc<admin::AdminDeps>,
}

/// The resend schedule (EventBridge in AWS): pending conversions are sent again.
async fn resend_loop(deps: Arc<CapiDeps>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        match ctwa_shared::capi::resend_due(&deps, ctwa_shared::time::now_millis(), 500, deadline)
            .await
        {
            Ok(r) if r.due > 0 => tracing::info!(?r, "resend run"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "resend run failed"),
        }
    }
}

async fn serve(
    listener: TcpListener,
    functions: Arc<Functions>,
    max_body: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let functions = functions.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let functions = functions.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(dispatch(functions, max_body, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn dispatch(
    functions: Arc<Functions>,
    max_body: usize,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let resp = match route(parts.method.as_str(), parts.uri.path()) {
        Err(e) => e.into_response(),
        Ok(function) => {
            // Ad images travel in the body (as in Lambda, up to its 6 MB request limit).
            let max_body = match function {
                Function::Ads => max_body.max(ads_handler::MAX_IMAGE_BODY_BYTES),
                _ => max_body,
            };
            match Limited::new(body, max_body).collect().await {
                Err(_) => ApiError::PayloadTooLarge { limit: max_body }.into_response(),
                Ok(collected) => {
                    let req = ApiRequest {
                        method: parts.method.clone(),
                        path: parts.uri.path().to_string(),
                        query: parts.uri.query().map(parse_query).unwrap_or_default(),
                        headers: parts.headers,
                        body: collected.to_bytes(),
                    };
                    // Like Lambda behind API Gateway, a handler runs to its end even when
                    // the client goes away (an ad creation must finish its clean-up).
                    let handled = tokio::spawn(async move {
                        match function {
                            Function::Webhook => webhook::handle(&functions.webhook, req).await,
                            Function::Api => api::handle(&functions.api, req).await,
                            Function::Connect => connect::handle(&functions.connect, req).await,
                            Function::Dataset => capi::handle_dataset(&functions.capi, req).await,
                            Function::Conversions => {
                                capi::handle_conversions(&functions.capi, req).await
                            }
                            Function::Ads => ads_handler::handle(&functions.ads, req).await,
                            Function::Admin => admin::handle(&functions.admin, req).await,
                        }
                    })
                    .await;
                    handled.unwrap_or_else(|e| ApiError::internal(e).into_response())
                }
            }
        }
    };
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = resp.status.as_u16(), "request");
    to_hyper(resp)
}

fn to_hyper(resp: ApiResponse) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_api_gateway_like() {
        assert_eq!(route("GET", "/webhook").unwrap(), Function::Webhook);
        assert_eq!(route("POST", "/webhook/sinch").unwrap(), Function::Webhook);
        assert_eq!(
            route("GET", "/v1/conversations/c_1").unwrap(),
            Function::Api
        );
        assert_eq!(route("GET", "/v1/conversations/").unwrap(), Function::Api);
        assert!(matches!(
            route("DELETE", "/webhook"),
            Err(ApiError::MethodNotAllowed)
        ));
        assert!(matches!(
            route("GET", "/v1/conversations/a/b"),
            Err(ApiError::NotFound(_))
        ));
        assert!(matches!(route("GET", "/nope"), Err(ApiError::NotFound(_))));
    }
}
