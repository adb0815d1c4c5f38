//! The template-faithful local stack: every function of `template.yaml` run as its
//! shipped bootstrap binary behind a local Lambda Runtime API ([`runtime`]), reached
//! through API Gateway's HTTP API mapping ([`apigw`]), the inbox stream's event source
//! mapping ([`crate::stream`]) or EventBridge's scheduled event, each calling DynamoDB,
//! DynamoDB Streams, Secrets Manager and SQS through a gateway that enforces the
//! function's IAM statements ([`iam`]). Configuration comes from the template
//! ([`template`]): routes, environment, timeouts, log levels, policies, schedules.

pub mod apigw;
pub mod iam;
pub mod runtime;
pub mod template;

use crate::stream::{BatchTarget, FailureDestination, MappingConfig, StreamFeeder};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use runtime::{FunctionPool, InvokeError, LaunchSpec, LogSink};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The account and API id the local stack plays (moto's default account).
pub const LOCAL_ACCOUNT: &str = "123456789012";
pub const LOCAL_API_ID: &str = "local";

/// Where the functions' bootstraps are.
#[derive(Debug, Clone)]
pub struct Bootstraps {
    pub dir: PathBuf,
    /// `sam build`'s layout (`<dir>/<LogicalId>/bootstrap`) instead of cargo's
    /// (`<dir>/<binary>`).
    pub sam_layout: bool,
    /// A command put before each bootstrap (`qemu-aarch64 -L /usr/aarch64-linux-gnu`).
    pub launcher: Vec<String>,
}

impl Bootstraps {
    /// `CTWA_BOOTSTRAP_DIR` (default: the workspace's release directory, honouring
    /// `CARGO_TARGET_DIR`), `CTWA_BOOTSTRAP_LAYOUT=sam`, `CTWA_BOOTSTRAP_LAUNCHER`.
    pub fn from_env() -> Self {
        let dir = match std::env::var_os("CTWA_BOOTSTRAP_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => release_dir(),
        };
        Self {
            dir,
            sam_layout: std::env::var("CTWA_BOOTSTRAP_LAYOUT").as_deref() == Ok("sam"),
            launcher: std::env::var("CTWA_BOOTSTRAP_LAUNCHER")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    pub fn program(&self, f: &template::FunctionDef) -> PathBuf {
        if self.sam_layout {
            self.dir.join(&f.logical_id).join("bootstrap")
        } else {
            self.dir.join(&f.binary)
        }
    }
}

/// The workspace root (where template.yaml is).
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `$CARGO_TARGET_DIR/release`, or the workspace's `target/release`.
pub fn release_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d.join("release")
            } else {
                workspace_dir().join(d).join("release")
            }
        }
        _ => workspace_dir().join("target").join("release"),
    }
}

/// The template's routes (method, path), for the contract checks.
pub fn template_routes() -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(workspace_dir().join("template.yaml"))
        .map_err(|e| e.to_string())?;
    let raw = template::parse_raw(&text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for id in template::resources_of_type(&raw, "AWS::Serverless::Function") {
        let events = raw["Resources"][id.as_str()]["Properties"]["Events"]
            .as_mapping()
            .cloned();
        for (_, ev) in events.into_iter().flatten() {
            if ev.get("Type").and_then(|t| t.as_str()) == Some("HttpApi") {
                let p = &ev["Properties"];
                out.push((
                    p["Method"].as_str().unwrap_or("").to_uppercase(),
                    p["Path"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct LambdaOptions {
    pub template_path: PathBuf,
    pub bootstraps: Bootstraps,
    /// Instances per function at most (Lambda's concurrency; the template's
    /// ReservedConcurrentExecutions wins when lower).
    pub max_instances: usize,
    /// Every function's log lines, prefixed with its logical id.
    pub log_file: Option<PathBuf>,
    /// Keep the log lines in memory too ([`LambdaStack::log_lines`]).
    pub keep_logs: bool,
    /// Run the template's schedules on their rates (the local run); tests invoke them.
    pub run_schedules: bool,
    /// Write the gateway's allowed grants and denials into this directory at the end
    /// (`<stack>.jsonl`), for the least-privilege report (`ctwa-iam-report`).
    pub usage_dir: Option<PathBuf>,
    /// Panic when the stack stops (or is dropped) after any AccessDenied, naming each:
    /// a test then fails with the denied action in its output, even when the denied
    /// call's failure was tolerated on the way.
    pub fail_on_access_denied: bool,
    pub dynamodb_upstream: String,
    pub secrets_upstream: String,
    /// The access key id the upstream servers see (DynamoDB Local keeps one database
    /// per key id and region).
    pub upstream_access_key: String,
    pub region: String,
    /// How long Lambda waits before the first and the second retry of a failed
    /// asynchronous invocation (1 and 2 minutes in AWS; tests shorten them).
    pub async_retry_delays: [Duration; 2],
}

impl LambdaOptions {
    /// From the standard environment that `scripts/services.sh` writes.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let ddb = env("AWS_ENDPOINT_URL_DYNAMODB")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| "http://127.0.0.1:18000".into());
        let sm = env("AWS_ENDPOINT_URL_SECRETS_MANAGER")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| "http://127.0.0.1:15000".into());
        Self {
            template_path: env("CTWA_TEMPLATE")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_dir().join("template.yaml")),
            bootstraps: Bootstraps::from_env(),
            max_instances: env("CTWA_LOCAL_MAX_INSTANCES")
                .and_then(|v| v.parse().ok())
                .unwrap_or(16),
            log_file: None,
            keep_logs: false,
            run_schedules: false,
            usage_dir: env("CTWA_IAM_USAGE_DIR").map(PathBuf::from),
            fail_on_access_denied: false,
            dynamodb_upstream: ddb,
            secrets_upstream: sm,
            upstream_access_key: env("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "local".into()),
            region: env("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            async_retry_delays: [Duration::from_secs(60), Duration::from_secs(120)],
        }
    }
}

/// What the deployment gave each resource (the local stack's "physical ids").
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub stack_name: String,
    pub tables: HashMap<String, String>,
    /// Logical id -> (name, ARN).
    pub secrets: HashMap<String, (String, String)>,
    /// Logical id -> (name, URL).
    pub queues: HashMap<String, (String, String)>,
    pub parameters: HashMap<String, String>,
}

/// The on-failure destination: SQS through the gateway, with the function's role.
struct SqsDestination {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDestination {
    /// The on-failure queue (a logical id) of `at` (a function, or one of its events),
    /// written to with the role of `sdk`; `None` when there is none.
    fn of(
        resources: &Resources,
        queue: Option<&str>,
        sdk: &aws_config::SdkConfig,
        at: &str,
    ) -> Result<Option<Arc<dyn FailureDestination>>, String> {
        let Some(q) = queue else {
            return Ok(None);
        };
        let (_, url) = resources
            .queues
            .get(q)
            .ok_or_else(|| format!("{at}: queue {q} has no local queue"))?;
        Ok(Some(Arc::new(SqsDestination {
            client: aws_sdk_sqs::Client::new(sdk),
            queue_url: url.clone(),
        })))
    }
}

#[async_trait::async_trait]
impl FailureDestination for SqsDestination {
    async fn send(&self, record: Value) -> Result<(), String> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(record.to_string())
            .send()
            .await
            .map(drop)
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
    }
}

/// Batches to the function's pool.
struct PoolTarget(Arc<FunctionPool>);

#[async_trait::async_trait]
impl BatchTarget for PoolTarget {
    async fn invoke(&self, event: Bytes) -> Result<Bytes, String> {
        self.0.invoke(event).await.map_err(|e| e.to_string())
    }
}

/// With a template variant: per function, whether its whole policy is template.yaml's,
/// and which of its statements are.
type UsageKeep = HashMap<String, (bool, std::collections::HashSet<usize>)>;

pub struct LambdaStack {
    pub addr: SocketAddr,
    pub template: template::Template,
    pub resources: Resources,
    pub gateway_url: String,
    pub usage: Arc<iam::Usage>,
    pools: HashMap<String, Arc<FunctionPool>>,
    logs: Arc<LogSink>,
    usage_dir: Option<PathBuf>,
    usage_functions: Option<UsageKeep>,
    fail_on_access_denied: bool,
    region: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    gateway: Option<iam::Gateway>,
    /// The scheduled functions' asynchronous invocations.
    invokers: HashMap<String, Arc<AsyncInvoker>>,
}

/// What an asynchronous invocation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsyncOutcome {
    /// Succeeded at this attempt (1: the first).
    Succeeded { attempts: u32 },
    /// Failed every attempt; the invocation record went to the on-failure destination
    /// (`sent`), or was dropped (none, or it refused).
    Failed {
        attempts: u32,
        sent: bool,
        condition: &'static str,
    },
}

/// Lambda's asynchronous invocation (EventBridge's schedules), with the function's
/// `EventInvokeConfig`: a failed invocation (an error, a crash, a timeout) is tried
/// again up to `MaximumRetryAttempts` times (after 1, then 2 minutes in AWS), unless the
/// event is older than `MaximumEventAgeInSeconds`; then Lambda's invocation record
/// (`requestContext`, `requestPayload`, `responseContext`, `responsePayload`) goes to
/// the on-failure destination, with the function's role.
pub struct AsyncInvoker {
    pool: Arc<FunctionPool>,
    config: template::AsyncInvokeConfig,
    destination: Option<Arc<dyn FailureDestination>>,
    delays: [Duration; 2],
}

impl AsyncInvoker {
    pub async fn invoke(&self, event: Value) -> AsyncOutcome {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match self.pool.invoke(Bytes::from(event.to_string())).await {
                Ok(_) => return AsyncOutcome::Succeeded { attempts },
                Err(e) => e,
            };
            let delay = self.delays[(attempts as usize - 1).min(1)];
            let condition = if attempts > self.config.maximum_retry_attempts {
                Some("RetriesExhausted")
            } else if started.elapsed() + delay > self.config.maximum_event_age {
                Some("EventAgeExceeded")
            } else {
                None
            };
            let Some(condition) = condition else {
                tracing::warn!(function = %self.pool.name(), attempt = attempts, error = %err, "{}: asynchronous invocation failed; retried in {:?}", self.pool.name(), delay);
                tokio::time::sleep(delay).await;
                continue;
            };
            let (error_type, message) = match &err {
                InvokeError::Function {
                    error_type,
                    message,
                } => (error_type.clone(), message.clone()),
                InvokeError::Timeout(_) => ("Sandbox.Timedout".to_string(), err.to_string()),
                InvokeError::Crashed(m) => ("Runtime.ExitError".to_string(), m.clone()),
            };
            let record = json!({
                "version": "1.0",
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "requestContext": {
                    "requestId": format!("{:032x}", ctwa_shared::time::now_millis()),
                    "functionArn": format!("{}:$LATEST", self.pool.function_arn()),
                    "condition": condition,
                    "approximateInvokeCount": attempts,
                },
                "requestPayload": event,
                "responseContext": { "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled" },
                "responsePayload": { "errorType": error_type, "errorMessage": message },
            });
            tracing::error!(function = %self.pool.name(), attempts, condition, error = %err, "{}: asynchronous invocation given up ({condition})", self.pool.name());
            let sent = match &self.destination {
                Some(d) => match d.send(record).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(function = %self.pool.name(), error = %e, "the on-failure destination refused the invocation record; it is lost");
                        false
                    }
                },
                None => false,
            };
            return AsyncOutcome::Failed {
                attempts,
                sent,
                condition,
            };
        }
    }
}

/// A function's credentials: its access key id identifies it at the gateway.
pub fn access_key_of(logical_id: &str) -> String {
    format!("LOCAL{}", logical_id.to_ascii_uppercase())
}

fn sdk_config_for(key: &str, endpoint: &str, region: &str) -> aws_config::SdkConfig {
    let creds =
        aws_credential_types::Credentials::new(key, "local-secret", None, None, "local-function");
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
        .endpoint_url(endpoint)
        .build()
}

impl LambdaStack {
    /// Loads the template against `resources`, checks every function (its bootstrap
    /// exists, the variables its code requires are set), starts the IAM gateway, the
    /// HTTP API on `bind`, the stream mappings and (optionally) the schedules.
    pub async fn start(
        bind: SocketAddr,
        opts: LambdaOptions,
        resources: Resources,
        admin_dynamodb: aws_sdk_dynamodb::Client,
    ) -> Result<Self, String> {
        let text = std::fs::read_to_string(&opts.template_path)
            .map_err(|e| format!("{}: {e}", opts.template_path.display()))?;
        let raw = template::parse_raw(&text).map_err(|e| e.to_string())?;
        let parameters =
            template::parameters(&raw, &resources.parameters).map_err(|e| e.to_string())?;
        let mut b = template::Bindings {
            stack_name: resources.stack_name.clone(),
            region: opts.region.clone(),
            account: LOCAL_ACCOUNT.into(),
            parameters,
            ..Default::default()
        };
        let arn_prefix = |svc: &str| format!("arn:aws:{svc}:{}:{LOCAL_ACCOUNT}", opts.region);
        for (id, name) in &resources.tables {
            b.refs.insert(id.clone(), name.clone());
            let arn = format!("{}:table/{name}", arn_prefix("dynamodb"));
            b.attrs.insert((id.clone(), "Arn".into()), arn.clone());
            b.attrs
                .insert((id.clone(), "StreamArn".into()), format!("{arn}/stream/*"));
        }
        for (id, (_name, arn)) in &resources.secrets {
            b.refs.insert(id.clone(), arn.clone());
        }
        for (id, (name, url)) in &resources.queues {
            b.refs.insert(id.clone(), url.clone());
            b.attrs.insert(
                (id.clone(), "Arn".into()),
                format!("{}:{name}", arn_prefix("sqs")),
            );
            b.attrs
                .insert((id.clone(), "QueueName".into()), name.clone());
        }
        for id in template::resources_of_type(&raw, "AWS::Serverless::Function") {
            let name = format!("{}-{id}", resources.stack_name);
            b.attrs.insert(
                (id.clone(), "Arn".into()),
                format!("{}:function:{name}", arn_prefix("lambda")),
            );
            b.refs.insert(id, name);
        }
        for id in template::resources_of_type(&raw, "AWS::Serverless::HttpApi") {
            b.refs.insert(id, LOCAL_API_ID.into());
        }
        let tpl = template::load(&raw, &b).map_err(|e| e.to_string())?;
        // With another template (a test's variant), only the functions whose policies are
        // template.yaml's count for the least-privilege report.
        let canonical = workspace_dir().join("template.yaml");
        // function -> (its policy is template.yaml's, the statements that are).
        let usage_functions: Option<UsageKeep> = if opts.template_path == canonical {
            None
        } else {
            let canon = std::fs::read_to_string(&canonical)
                .ok()
                .and_then(|t| template::parse_raw(&t).ok())
                .and_then(|r| template::load(&r, &b).ok());
            Some(
                tpl.functions
                    .iter()
                    .filter_map(|f| {
                        let cf = canon.as_ref()?.function(&f.logical_id)?;
                        let same: std::collections::HashSet<usize> = f
                            .statements
                            .iter()
                            .enumerate()
                            .filter(|(i, s)| cf.statements.get(*i) == Some(*s))
                            .map(|(i, _)| i)
                            .collect();
                        Some((f.logical_id.clone(), (cf.statements == f.statements, same)))
                    })
                    .collect(),
            )
        };

        // Every function can start: its bootstrap is there, its code's required
        // variables are set by the template.
        for f in &tpl.functions {
            let program = opts.bootstraps.program(f);
            if !program.is_file() {
                return Err(format!(
                    "{}: bootstrap {} not found (build it: cargo build --release -p {}, or scripts/local.sh)",
                    f.logical_id,
                    program.display(),
                    f.binary
                ));
            }
            let lookup = |k: &str| f.env.get(k).cloned();
            ctwa_shared::config::check_function(&f.binary, &lookup).map_err(|e| {
                format!(
                    "{}: {e}, but template.yaml does not set it for this function",
                    f.logical_id
                )
            })?;
        }

        let usage = Arc::new(iam::Usage::default());
        let identities = tpl
            .functions
            .iter()
            .map(|f| {
                (
                    access_key_of(&f.logical_id),
                    iam::Identity {
                        function: f.logical_id.clone(),
                        statements: f.statements.clone(),
                    },
                )
            })
            .collect();
        let gateway = iam::Gateway::start(iam::GatewayConfig {
            bind: ([127, 0, 0, 1], 0).into(),
            region: opts.region.clone(),
            account: LOCAL_ACCOUNT.into(),
            identities,
            dynamodb_upstream: opts.dynamodb_upstream.clone(),
            secrets_upstream: opts.secrets_upstream.clone(),
            sqs_upstream: opts.secrets_upstream.clone(),
            upstream_access_key: opts.upstream_access_key.clone(),
            usage: usage.clone(),
        })
        .await
        .map_err(|e| format!("IAM gateway: {e}"))?;
        let gateway_url = gateway.url();

        let logs = Arc::new(
            LogSink::new(opts.log_file.clone(), opts.keep_logs)
                .map_err(|e| format!("function log file: {e}"))?,
        );
        let mut pools = HashMap::new();
        for f in &tpl.functions {
            let name = format!("{}-{}", resources.stack_name, f.logical_id);
            let mut env: Vec<(String, String)> =
                f.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            env.extend(
                [
                    ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
                    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
                    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", f.memory_mb.to_string()),
                    ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
                    (
                        "AWS_LAMBDA_LOG_STREAM_NAME",
                        "2026/01/01/[$LATEST]local".into(),
                    ),
                    ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
                    ("_HANDLER", "bootstrap".into()),
                    ("AWS_REGION", opts.region.clone()),
                    ("AWS_DEFAULT_REGION", opts.region.clone()),
                    ("AWS_ACCESS_KEY_ID", access_key_of(&f.logical_id)),
                    ("AWS_SECRET_ACCESS_KEY", "local-secret".into()),
                    ("AWS_SESSION_TOKEN", "local-session".into()),
                    // The only deviation from AWS: every AWS call goes to the gateway.
                    ("AWS_ENDPOINT_URL", gateway_url.clone()),
                    ("AWS_EC2_METADATA_DISABLED", "true".into()),
                    ("TZ", ":UTC".into()),
                    ("LANG", "en_US.UTF-8".into()),
                    ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v)),
            );
            // Lambda sets these from LoggingConfig (the level only with JSON logs).
            env.push(("AWS_LAMBDA_LOG_FORMAT".into(), f.log_format.clone()));
            if f.log_format.eq_ignore_ascii_case("json") {
                env.push((
                    "AWS_LAMBDA_LOG_LEVEL".into(),
                    f.application_log_level.clone(),
                ));
            }
            let max = f
                .reserved_concurrency
                .map_or(opts.max_instances, |r| r.min(opts.max_instances));
            let spec = LaunchSpec {
                function: f.logical_id.clone(),
                program: opts.bootstraps.program(f),
                launcher: opts.bootstraps.launcher.clone(),
                env,
                timeout: f.timeout,
                max_instances: max,
                function_arn: format!("{}:function:{name}", arn_prefix("lambda")),
            };
            pools.insert(
                f.logical_id.clone(),
                Arc::new(FunctionPool::new(spec, logs.clone())),
            );
        }

        let (tx, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // The stream mappings, each reading with its function's role.
        for f in &tpl.functions {
            for s in &f.streams {
                let table = resources.tables.get(&s.table).ok_or_else(|| {
                    format!(
                        "{} event {}: table {} has no local table",
                        f.logical_id, s.name, s.table
                    )
                })?;
                let sdk = sdk_config_for(&access_key_of(&f.logical_id), &gateway_url, &opts.region);
                let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
                let on_failure = SqsDestination::of(
                    &resources,
                    s.on_failure_queue.as_deref(),
                    &sdk,
                    &format!("{} event {}", f.logical_id, s.name),
                )?;
                let pool = pools[&f.logical_id].clone();
                let config = MappingConfig {
                    function_arn: pools[&f.logical_id].function_arn().to_string(),
                    ..s.mapping.clone()
                };
                let feeder = StreamFeeder::new(
                    admin_dynamodb.clone(),
                    streams,
                    table.clone(),
                    Arc::new(PoolTarget(pool)),
                    config,
                    on_failure,
                )
                .await
                .map_err(|e| format!("{} stream: {e}", f.logical_id))?;
                tasks.push(tokio::spawn(feeder.run(rx.clone())));
            }
        }
        // The scheduled functions' asynchronous invocations, each with its role.
        let mut invokers = HashMap::new();
        for f in tpl.functions.iter().filter(|f| !f.schedules.is_empty()) {
            let sdk = sdk_config_for(&access_key_of(&f.logical_id), &gateway_url, &opts.region);
            let destination = SqsDestination::of(
                &resources,
                f.async_invoke.on_failure_queue.as_deref(),
                &sdk,
                &f.logical_id,
            )?;
            invokers.insert(
                f.logical_id.clone(),
                Arc::new(AsyncInvoker {
                    pool: pools[&f.logical_id].clone(),
                    config: f.async_invoke.clone(),
                    destination,
                    delays: opts.async_retry_delays,
                }),
            );
        }
        if opts.run_schedules {
            for f in &tpl.functions {
                for s in &f.schedules {
                    let invoker = invokers[&f.logical_id].clone();
                    let every = s.every;
                    let rule = rule_arn(&opts.region, &resources.stack_name, &s.name);
                    let region = opts.region.clone();
                    let mut shutdown = rx.clone();
                    tasks.push(tokio::spawn(async move {
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep(every) => {}
                                _ = shutdown.changed() => return,
                            }
                            // EventBridge invokes asynchronously: the next run does not
                            // wait for this one's retries.
                            let invoker = invoker.clone();
                            let ev = scheduled_event(&rule, &region);
                            tokio::spawn(async move { invoker.invoke(ev).await });
                        }
                    }));
                }
            }
        }

        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| format!("binding {bind}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let front = Arc::new(Front {
            throttle: tpl.throttle.map(apigw::Throttle::new),
            routes: tpl.routes(),
            pools: pools.clone(),
            region: opts.region.clone(),
            next: AtomicU64::new(1),
            stack_name: resources.stack_name.clone(),
        });
        tasks.push(tokio::spawn(serve(listener, front, rx)));
        Ok(Self {
            addr,
            template: tpl,
            resources,
            gateway_url,
            usage,
            pools,
            logs,
            usage_dir: opts.usage_dir,
            usage_functions,
            fail_on_access_denied: opts.fail_on_access_denied,
            region: opts.region,
            shutdown: tx,
            tasks,
            gateway: Some(gateway),
            invokers,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pool(&self, logical_id: &str) -> Option<&Arc<FunctionPool>> {
        self.pools.get(logical_id)
    }

    /// A direct (synchronous) invocation of a function with `payload`.
    pub async fn invoke(&self, logical_id: &str, payload: Value) -> Result<Value, InvokeError> {
        let pool = self
            .pools
            .get(logical_id)
            .ok_or_else(|| InvokeError::Crashed(format!("no function {logical_id}")))?;
        let out = pool.invoke(Bytes::from(payload.to_string())).await?;
        Ok(serde_json::from_slice(&out).unwrap_or(Value::Null))
    }

    /// Runs a scheduled function's first schedule as EventBridge does: asynchronously,
    /// with the function's retries and on-failure destination ([`AsyncInvoker`]).
    pub async fn invoke_scheduled_async(&self, logical_id: &str) -> Option<AsyncOutcome> {
        let rule = self
            .template
            .function(logical_id)
            .and_then(|f| f.schedules.first())
            .map(|s| rule_arn(&self.region, &self.resources.stack_name, &s.name))?;
        let invoker = self.invokers.get(logical_id)?;
        Some(invoker.invoke(scheduled_event(&rule, &self.region)).await)
    }

    /// Invokes a scheduled function as EventBridge does for its first schedule.
    pub async fn invoke_scheduled(&self, logical_id: &str) -> Result<Value, InvokeError> {
        let rule = self
            .template
            .function(logical_id)
            .and_then(|f| f.schedules.first())
            .map(|s| rule_arn(&self.region, &self.resources.stack_name, &s.name))
            .unwrap_or_default();
        self.invoke(logical_id, scheduled_event(&rule, &self.region))
            .await
    }

    /// Every function log line so far (when kept), each prefixed with its logical id.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lines().unwrap_or_default()
    }

    /// Stops the servers, the mappings, the schedules and every instance.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
        for p in self.pools.values() {
            p.shutdown();
        }
        if let Some(g) = self.gateway.take() {
            g.stop().await;
        }
        self.finish();
    }

    /// Every AccessDenied so far, one line each.
    pub fn access_denied(&self) -> Vec<String> {
        self.usage
            .denied()
            .iter()
            .map(|d| {
                format!(
                    "{} AccessDenied: {} on {}",
                    d.function, d.action, d.resource
                )
            })
            .collect()
    }

    fn finish(&mut self) {
        if let Some(dir) = self.usage_dir.take() {
            let path = dir.join(format!("{}.jsonl", self.resources.stack_name));
            // A grant counts when its statement is template.yaml's; a refusal when the
            // function's whole policy is.
            let keep = |f: &str, statement: Option<&str>| match &self.usage_functions {
                None => true,
                Some(k) => k.get(f).is_some_and(|(whole, same)| match statement {
                    None => *whole,
                    Some(st) => st
                        .split_once('/')
                        .and_then(|(si, _)| si.parse::<usize>().ok())
                        .is_some_and(|si| same.contains(&si)),
                }),
            };
            if let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|_| self.usage.append_jsonl_filtered(&path, &keep))
            {
                tracing::warn!(error = %e, "could not write the IAM usage file");
            }
        }
        if std::mem::take(&mut self.fail_on_access_denied) {
            let denied = self.access_denied();
            if !denied.is_empty() {
                let text = format!(
                    "the functions were refused by their IAM policy in template.yaml:\n{}",
                    denied.join("\n")
                );
                // A test already failing (say, on the 500 a refused call made) still
                // names the refusal in its output.
                if std::thread::panicking() {
                    eprintln!("{text}");
                } else {
                    panic!("{text}");
                }
            }
        }
    }
}

impl Drop for LambdaStack {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
        for p in self.pools.values() {
            p.shutdown();
        }
        self.finish();
    }
}

/// The ARN of a schedule's EventBridge rule (`<stack>-<event name>`).
fn rule_arn(region: &str, stack_name: &str, event: &str) -> String {
    format!("arn:aws:events:{region}:{LOCAL_ACCOUNT}:rule/{stack_name}-{event}")
}

/// EventBridge's scheduled event (the shape `sam local generate-event cloudwatch
/// scheduled-event` gives).
pub fn scheduled_event(rule_arn: &str, region: &str) -> Value {
    json!({
        "version": "0",
        "id": format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), ctwa_shared::time::now_millis()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": LOCAL_ACCOUNT,
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": region,
        "resources": [rule_arn],
        "detail": {}
    })
}

struct Front {
    throttle: Option<apigw::Throttle>,
    routes: Vec<template::Route>,
    pools: HashMap<String, Arc<FunctionPool>>,
    region: String,
    next: AtomicU64,
    stack_name: String,
}

async fn serve(listener: TcpListener, front: Arc<Front>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => {
                    let _ = c.0.set_nodelay(true);
                    c
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let front = front.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let front = front.clone();
                async move { Ok::<_, std::convert::Infallible>(front.handle(req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn to_hyper(a: apigw::HttpAnswer) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder().status(a.status);
    for (k, v) in &a.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.header("apigw-requestid", "local")
        .body(Full::new(a.body))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

impl Front {
    async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let method = parts.method.as_str().to_string();
        let path = parts.uri.path().to_string();
        // The local stack's own counters: per function, invocations, cold starts (and
        // their process start -> first answer times), timeouts, crashes.
        if path == "/_local/stats" {
            let stats: serde_json::Map<String, Value> = self
                .pools
                .iter()
                .map(|(name, p)| {
                    let s = p.stats();
                    (
                        name.clone(),
                        json!({
                            "invocations": s.invocations,
                            "cold_starts": s.cold_starts,
                            "timeouts": s.timeouts,
                            "crashes": s.crashes,
                            "cold_start_ms": p.cold_starts_ms(),
                        }),
                    )
                })
                .collect();
            return to_hyper(apigw::HttpAnswer {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: Bytes::from(Value::Object(stats).to_string()),
            });
        }
        // The local stack's own door: invoke a function directly (e.g. a scheduled one,
        // `POST /_local/invoke/ConversionsResendFunction`); not part of the HTTP API.
        if let Some(function) = path.strip_prefix("/_local/invoke/") {
            let Some(pool) = self.pools.get(function) else {
                return to_hyper(apigw::HttpAnswer::message(404, "no such function"));
            };
            let payload = match Limited::new(body, apigw::MAX_EVENT_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
            {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => Bytes::from(
                    scheduled_event(
                        &rule_arn(&self.region, &self.stack_name, "manual"),
                        &self.region,
                    )
                    .to_string(),
                ),
                Err(_) => {
                    return to_hyper(apigw::HttpAnswer::message(413, "Request Entity Too Large"));
                }
            };
            return match pool.invoke(payload).await {
                Ok(out) => to_hyper(apigw::HttpAnswer {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: out,
                }),
                Err(e) => to_hyper(apigw::HttpAnswer {
                    status: 502,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: Bytes::from(json!({"errorMessage": e.to_string()}).to_string()),
                }),
            };
        }
        let Some((route, params)) = apigw::match_route(&self.routes, &method, &path) else {
            return to_hyper(apigw::HttpAnswer::message(404, "Not Found"));
        };
        if let Some(t) = &self.throttle
            && !t.admit(&route.key())
        {
            return to_hyper(apigw::HttpAnswer::message(429, "Too Many Requests"));
        }
        let Some(pool) = self.pools.get(&route.function) else {
            return to_hyper(apigw::HttpAnswer::message(500, "Internal Server Error"));
        };
        let body = match Limited::new(body, apigw::MAX_REQUEST_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return to_hyper(apigw::HttpAnswer::message(413, "Request Entity Too Large")),
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let event = apigw::build_event(&apigw::EventInput {
            route,
            path_params: params,
            method: &method,
            raw_path: &path,
            raw_query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body: &body,
            source_ip: peer.ip().to_string(),
            request_id: format!("L{n:015}="),
            account: LOCAL_ACCOUNT,
            api_id: LOCAL_API_ID,
            region: &self.region,
            now_ms: ctwa_shared::time::now_millis() as u64,
        });
        let event = Bytes::from(event.to_string());
        if event.len() > apigw::MAX_EVENT_BYTES {
            return to_hyper(apigw::HttpAnswer::message(413, "Request Entity Too Large"));
        }
        // Like Lambda behind API Gateway, the invocation runs to its end even when the
        // client goes away (an ad creation must finish its clean-up).
        let pool = pool.clone();
        let answer = tokio::spawn(async move { pool.invoke(event).await }).await;
        let answer = match answer {
            Ok(Ok(out)) => apigw::map_response(&out),
            Ok(Err(e)) => {
                tracing::warn!(function = %route.function, route = %route.key(), error = %e, "{}: {} answered as API Gateway does: {e}", route.function, route.key());
                apigw::failure_answer(&e)
            }
            Err(_) => apigw::HttpAnswer::message(500, "Internal Server Error"),
        };
        to_hyper(answer)
    }
}
