//! The local IAM gateway: an HTTP reverse proxy on 127.0.0.1 that every local Lambda
//! function process uses as its AWS endpoint (`AWS_ENDPOINT_URL`). It knows the calling
//! function from the SigV4 `Authorization` header's access key id, checks the call's IAM
//! action and resource(s) against that function's policy statements (AWS's evaluation:
//! an explicit Deny wins, otherwise some Allow must match, otherwise implicit deny), and
//! either forwards the request to DynamoDB Local / moto or answers the service's own
//! `AccessDeniedException`.
//!
//! Services: DynamoDB (`DynamoDB_20120810.*`), DynamoDB Streams
//! (`DynamoDBStreams_20120810.*`), Secrets Manager (`secretsmanager.*`) and SQS (AWS JSON
//! protocol, `AmazonSQS.*`).

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request body the gateway accepts (DynamoDB's own limit is 16 MB).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How many stream shard iterators the gateway remembers.
const ITERATOR_CAP: usize = 10_000;
/// How many resolved secret ARNs the gateway remembers.
const SECRET_CACHE_CAP: usize = 10_000;
/// How many denials are kept (every one is logged anyway).
const DENIAL_CAP: usize = 100_000;

// ---------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------

/// One identity-based policy statement (Effect, Action, Resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    /// `true`: Effect Allow; `false`: Effect Deny.
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

impl Statement {
    /// An Allow statement without a Sid.
    pub fn allowing<A: Into<String>, R: Into<String>>(
        actions: impl IntoIterator<Item = A>,
        resources: impl IntoIterator<Item = R>,
    ) -> Self {
        Self {
            sid: None,
            allow: true,
            actions: actions.into_iter().map(Into::into).collect(),
            resources: resources.into_iter().map(Into::into).collect(),
        }
    }

    /// A Deny statement without a Sid.
    pub fn denying<A: Into<String>, R: Into<String>>(
        actions: impl IntoIterator<Item = A>,
        resources: impl IntoIterator<Item = R>,
    ) -> Self {
        Self {
            allow: false,
            ..Self::allowing(actions, resources)
        }
    }
}

/// A function's identity: its logical id and its role's statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The function's logical id, e.g. `WebhookFunction`.
    pub function: String,
    pub statements: Vec<Statement>,
}

/// The outcome of evaluating one (action, resource) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by `statements[statement]`, through its resource `pattern`.
    Allowed {
        statement: usize,
        pattern: String,
    },
    ExplicitDeny,
    ImplicitDeny,
}

/// IAM wildcard matching: `*` matches any run of characters (also `/` and `:`), `?` any
/// one character.
pub fn wildcard_match(pattern: &str, value: &str, case_insensitive: bool) -> bool {
    if pattern == "*" {
        return true;
    }
    if pattern.is_ascii() && value.is_ascii() {
        let eq = |a: u8, b: u8| {
            if case_insensitive {
                a.eq_ignore_ascii_case(&b)
            } else {
                a == b
            }
        };
        glob(pattern.as_bytes(), value.as_bytes(), b'*', b'?', eq)
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let v: Vec<char> = value.chars().collect();
        let eq = |a: char, b: char| {
            a == b || (case_insensitive && a.to_lowercase().eq(b.to_lowercase()))
        };
        glob(&p, &v, '*', '?', eq)
    }
}

/// Linear-time glob with single-star backtracking.
fn glob<T: Copy + PartialEq>(p: &[T], v: &[T], star: T, one: T, eq: impl Fn(T, T) -> bool) -> bool {
    let (mut pi, mut vi) = (0, 0);
    let mut last_star: Option<usize> = None;
    let mut mark = 0;
    while vi < v.len() {
        if pi < p.len() && p[pi] == star {
            last_star = Some(pi);
            mark = vi;
            pi += 1;
        } else if pi < p.len() && (p[pi] == one || eq(p[pi], v[vi])) {
            pi += 1;
            vi += 1;
        } else if let Some(s) = last_star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == star {
        pi += 1;
    }
    pi == p.len()
}

/// AWS's evaluation of identity-based statements for one (action, resource): any
/// matching Deny wins; otherwise the first matching Allow; otherwise implicit deny.
/// Actions compare case-insensitively, resources case-sensitively.
pub fn evaluate(statements: &[Statement], action: &str, resource: &str) -> Decision {
    let action_matches = |s: &Statement| s.actions.iter().any(|a| wildcard_match(a, action, true));
    fn resource_match<'s>(s: &'s Statement, resource: &str) -> Option<&'s String> {
        s.resources
            .iter()
            .find(|r| wildcard_match(r, resource, false))
    }
    if statements
        .iter()
        .any(|s| !s.allow && action_matches(s) && resource_match(s, resource).is_some())
    {
        return Decision::ExplicitDeny;
    }
    for (i, s) in statements.iter().enumerate() {
        if s.allow
            && action_matches(s)
            && let Some(pattern) = resource_match(s, resource)
        {
            return Decision::Allowed {
                statement: i,
                pattern: pattern.clone(),
            };
        }
    }
    Decision::ImplicitDeny
}

// ---------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    DynamoDb,
    Streams,
    Secrets,
    Sqs,
}

impl Service {
    /// From the `X-Amz-Target` prefix, else from the service name (the SigV4 signing
    /// service, or `dynamodbstreams` / `streams`).
    fn detect(service: &str, target: &str) -> Option<Service> {
        if target.starts_with("DynamoDBStreams_") {
            Some(Service::Streams)
        } else if target.starts_with("DynamoDB_") {
            Some(Service::DynamoDb)
        } else if target.starts_with("secretsmanager.") {
            Some(Service::Secrets)
        } else if target.starts_with("AmazonSQS.") {
            Some(Service::Sqs)
        } else {
            match service.to_ascii_lowercase().as_str() {
                "dynamodb" => Some(Service::DynamoDb),
                "dynamodbstreams" | "dynamodb-streams" | "streams" => Some(Service::Streams),
                "secretsmanager" => Some(Service::Secrets),
                "sqs" => Some(Service::Sqs),
                _ => None,
            }
        }
    }

    fn action_prefix(self) -> &'static str {
        match self {
            Service::DynamoDb | Service::Streams => "dynamodb",
            Service::Secrets => "secretsmanager",
            Service::Sqs => "sqs",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Service::Secrets => "application/x-amz-json-1.1",
            _ => "application/x-amz-json-1.0",
        }
    }
}

/// The operation name of an `X-Amz-Target` (`DynamoDB_20120810.PutItem` -> `PutItem`);
/// a bare operation name is returned as is.
fn operation(target: &str) -> &str {
    target.rsplit('.').next().unwrap_or(target)
}

/// The IAM (action, resource) pairs a request needs; `Err(message)` when it cannot be
/// classified. `service` is the SigV4 signing service (`dynamodb`, `secretsmanager`,
/// `sqs`; `dynamodbstreams` also accepted), `target` the `X-Amz-Target` header (its
/// prefix decides the service when it has one; a bare operation name is accepted too).
/// `secret_arn` turns a secret name into its ARN. A `GetRecords` is classified on
/// `table/*/stream/*` here (the gateway knows its iterators' streams).
pub fn classify(
    service: &str,
    target: &str,
    body: &[u8],
    region: &str,
    account: &str,
    secret_arn: &dyn Fn(&str) -> String,
) -> Result<Vec<(String, String)>, String> {
    let svc = Service::detect(service, target)
        .ok_or_else(|| format!("unknown service {service:?} / target {target:?}"))?;
    let body = parse_body(body)?;
    classify_parsed(
        svc,
        operation(target),
        &body,
        region,
        account,
        secret_arn,
        &|_| None,
    )
}

fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body).map_err(|e| format!("request body is not JSON: {e}"))
}

fn classify_parsed(
    svc: Service,
    op: &str,
    body: &Value,
    region: &str,
    account: &str,
    secret_arn: &dyn Fn(&str) -> String,
    iterator_stream: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    if op.is_empty() || !op.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("not an operation name: {op:?}"));
    }
    let action = format!("{}:{op}", svc.action_prefix());
    let mut pairs = match svc {
        Service::DynamoDb => classify_dynamodb(op, &action, body, region, account)?,
        Service::Streams => classify_streams(op, &action, body, region, account, iterator_stream)?,
        Service::Secrets => classify_secrets(op, &action, body, secret_arn)?,
        Service::Sqs => classify_sqs(op, &action, body, region, account)?,
    };
    let mut seen = std::collections::HashSet::new();
    pairs.retain(|p| seen.insert(p.clone()));
    if pairs.is_empty() {
        return Err(format!("{action}: the request names no resource"));
    }
    Ok(pairs)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `Name` or an ARN (`arn:aws:dynamodb:r:a:table/Name[/...]`) -> `Name`.
fn table_name(v: &str) -> &str {
    if v.starts_with("arn:")
        && let Some(i) = v.find(":table/")
    {
        let rest = &v[i + ":table/".len()..];
        return rest.split('/').next().unwrap_or(rest);
    }
    v
}

fn table_arn(region: &str, account: &str, table: &str) -> String {
    format!(
        "arn:aws:dynamodb:{region}:{account}:table/{}",
        table_name(table)
    )
}

/// Rewrites an ARN's region and account to the configured ones (DynamoDB Local's stream
/// ARNs say `ddblocal:000000000000`).
fn normalise_arn(arn: &str, region: &str, account: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() == 6 && parts[0] == "arn" {
        format!(
            "arn:{}:{}:{region}:{account}:{}",
            parts[1], parts[2], parts[5]
        )
    } else {
        arn.to_string()
    }
}

fn classify_dynamodb(
    op: &str,
    action: &str,
    body: &Value,
    region: &str,
    account: &str,
) -> Result<Vec<(String, String)>, String> {
    let table_of = |item: &Value, what: &str| {
        str_field(item, "TableName")
            .map(|t| table_arn(region, account, t))
            .ok_or_else(|| format!("dynamodb:{op}: {what} without TableName"))
    };
    match op {
        "TransactWriteItems" | "TransactGetItems" => {
            let kinds: &[(&str, &str)] = if op == "TransactWriteItems" {
                &[
                    ("Put", "dynamodb:PutItem"),
                    ("Update", "dynamodb:UpdateItem"),
                    ("Delete", "dynamodb:DeleteItem"),
                    ("ConditionCheck", "dynamodb:ConditionCheckItem"),
                ]
            } else {
                &[("Get", "dynamodb:GetItem")]
            };
            let items = body
                .get("TransactItems")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("dynamodb:{op} without TransactItems"))?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let (kind, act) = kinds
                    .iter()
                    .find(|(k, _)| item.get(*k).is_some())
                    .ok_or_else(|| format!("dynamodb:{op}: unknown item kind in {item}"))?;
                out.push((act.to_string(), table_of(&item[*kind], kind)?));
            }
            Ok(out)
        }
        "BatchWriteItem" | "BatchGetItem" => {
            let items = body
                .get("RequestItems")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("dynamodb:{op} without RequestItems"))?;
            Ok(items
                .keys()
                .map(|t| (action.to_string(), table_arn(region, account, t)))
                .collect())
        }
        "ListTables" => Ok(vec![(
            action.to_string(),
            format!("arn:aws:dynamodb:{region}:{account}:table/*"),
        )]),
        "DescribeLimits"
        | "DescribeEndpoints"
        | "ListBackups"
        | "ListGlobalTables"
        | "ListExports"
        | "ListImports"
        | "ListContributorInsights" => Ok(vec![(action.to_string(), "*".to_string())]),
        "ExecuteStatement" | "BatchExecuteStatement" | "ExecuteTransaction" => Err(format!(
            "dynamodb:{op}: PartiQL is not classified by the local IAM gateway"
        )),
        _ => {
            let table = if let Some(t) = str_field(body, "TableName") {
                table_arn(region, account, t)
            } else if let Some(arn) =
                str_field(body, "TableArn").or_else(|| str_field(body, "ResourceArn"))
            {
                normalise_arn(arn, region, account)
            } else {
                return Err(format!("dynamodb:{op} without TableName"));
            };
            let resource = match str_field(body, "IndexName") {
                Some(index) => format!("{table}/index/{index}"),
                None => table,
            };
            Ok(vec![(action.to_string(), resource)])
        }
    }
}

/// A stream ARN found in a shard iterator's text (real AWS iterators carry it), if any.
fn arn_in_iterator(iterator: &str) -> Option<&str> {
    let start = iterator.find("arn:")?;
    let arn = iterator[start..].split('|').next()?;
    (arn.contains(":table/") && arn.contains("/stream/")).then_some(arn)
}

fn classify_streams(
    op: &str,
    action: &str,
    body: &Value,
    region: &str,
    account: &str,
    iterator_stream: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let resource = match op {
        "ListStreams" => "*".to_string(),
        "GetRecords" => {
            let it = str_field(body, "ShardIterator")
                .ok_or_else(|| "dynamodb:GetRecords without ShardIterator".to_string())?;
            iterator_stream(it)
                .or_else(|| arn_in_iterator(it).map(|a| normalise_arn(a, region, account)))
                .unwrap_or_else(|| format!("arn:aws:dynamodb:{region}:{account}:table/*/stream/*"))
        }
        _ => {
            let arn = str_field(body, "StreamArn")
                .ok_or_else(|| format!("dynamodb:{op} without StreamArn"))?;
            normalise_arn(arn, region, account)
        }
    };
    Ok(vec![(action.to_string(), resource)])
}

/// The secret ids a Secrets Manager request names (`SecretId`, `SecretIdList`, or
/// `Name` for CreateSecret).
fn secret_ids<'a>(op: &str, body: &'a Value) -> Vec<&'a str> {
    if let Some(list) = body.get("SecretIdList").and_then(Value::as_array) {
        return list.iter().filter_map(Value::as_str).collect();
    }
    let id = if op == "CreateSecret" {
        str_field(body, "Name")
    } else {
        str_field(body, "SecretId")
    };
    id.into_iter().collect()
}

fn classify_secrets(
    op: &str,
    action: &str,
    body: &Value,
    secret_arn: &dyn Fn(&str) -> String,
) -> Result<Vec<(String, String)>, String> {
    let ids = secret_ids(op, body);
    if ids.is_empty() {
        return match op {
            "ListSecrets" | "GetRandomPassword" | "BatchGetSecretValue" => {
                Ok(vec![(action.to_string(), "*".to_string())])
            }
            _ => Err(format!("secretsmanager:{op} without SecretId")),
        };
    }
    Ok(ids
        .into_iter()
        .map(|id| {
            let arn = if id.starts_with("arn:") {
                id.to_string()
            } else {
                secret_arn(id)
            };
            (action.to_string(), arn)
        })
        .collect())
}

/// `http://host:port/123456789012/NAME` (or `/queue/...`) -> `NAME`.
fn queue_name_of_url(url: &str) -> Option<&str> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.split_once('/').map_or("", |(_, p)| p);
    path.split('/').rfind(|s| !s.is_empty())
}

fn classify_sqs(
    op: &str,
    action: &str,
    body: &Value,
    region: &str,
    account: &str,
) -> Result<Vec<(String, String)>, String> {
    let name = if let Some(url) = str_field(body, "QueueUrl") {
        queue_name_of_url(url).ok_or_else(|| format!("sqs:{op}: no queue in QueueUrl {url:?}"))?
    } else if let Some(name) = str_field(body, "QueueName") {
        name
    } else if op == "ListQueues" {
        return Ok(vec![(action.to_string(), "*".to_string())]);
    } else {
        return Err(format!("sqs:{op} without QueueUrl"));
    };
    Ok(vec![(
        action.to_string(),
        format!("arn:aws:sqs:{region}:{account}:{name}"),
    )])
}

// ---------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------

/// One distinct grant that let a request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedGrant {
    pub function: String,
    pub action: String,
    /// `<statement index>/<resource index>` in the function's statements.
    pub statement: String,
    /// The statement's resource pattern that matched.
    pub pattern: String,
    /// The first resource seen through this grant.
    pub resource: String,
}

/// One refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub function: String,
    pub action: String,
    pub resource: String,
    pub time: SystemTime,
    /// An explicit Deny matched (otherwise no Allow did).
    pub explicit: bool,
}

#[derive(Debug, Default)]
struct UsageInner {
    allowed: Vec<UsedGrant>,
    allowed_index: std::collections::HashSet<(String, String, String, String)>,
    denied: Vec<Denial>,
}

/// What passed and what was refused: for the least-privilege report and for tests.
#[derive(Debug, Default)]
pub struct Usage {
    inner: Mutex<UsageInner>,
}

impl Usage {
    fn lock(&self) -> MutexGuard<'_, UsageInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Distinct (function, action, statement, pattern), in first-use order.
    pub fn allowed(&self) -> Vec<UsedGrant> {
        self.lock().allowed.clone()
    }

    /// Every refusal, in order.
    pub fn denied(&self) -> Vec<Denial> {
        self.lock().denied.clone()
    }

    /// Records one allowed use (kept once per function, action, statement, pattern).
    pub fn record_allowed(
        &self,
        function: &str,
        action: &str,
        statement: &str,
        pattern: &str,
        resource: &str,
    ) {
        let key = (
            function.to_string(),
            action.to_string(),
            statement.to_string(),
            pattern.to_string(),
        );
        let mut inner = self.lock();
        if inner.allowed_index.contains(&key) {
            return;
        }
        let (function, action, statement, pattern) = key.clone();
        inner.allowed_index.insert(key);
        inner.allowed.push(UsedGrant {
            function,
            action,
            statement,
            pattern,
            resource: resource.to_string(),
        });
    }

    /// Records one refusal.
    pub fn record_denied(&self, function: &str, action: &str, resource: &str, explicit: bool) {
        let mut inner = self.lock();
        if inner.denied.len() >= DENIAL_CAP {
            inner.denied.remove(0);
        }
        inner.denied.push(Denial {
            function: function.to_string(),
            action: action.to_string(),
            resource: resource.to_string(),
            time: SystemTime::now(),
            explicit,
        });
    }

    /// Appends the distinct allowed grants and the denials as JSON lines:
    /// `{"kind":"allowed"|"denied","function":..,"action":..,"resource":..,"pattern":..}`
    /// (plus `statement` for grants, `explicit` and `time_ms` for denials).
    pub fn append_jsonl(&self, path: &Path) -> std::io::Result<()> {
        self.append_jsonl_filtered(path, &|_, _| true)
    }

    /// [`Self::append_jsonl`] for what `keep(function, statement)` accepts (a grant has
    /// its statement, a denial none).
    pub fn append_jsonl_filtered(
        &self,
        path: &Path,
        keep: &dyn Fn(&str, Option<&str>) -> bool,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = String::new();
        {
            let inner = self.lock();
            for g in inner
                .allowed
                .iter()
                .filter(|g| keep(&g.function, Some(&g.statement)))
            {
                out.push_str(
                    &json!({
                        "kind": "allowed",
                        "function": g.function,
                        "action": g.action,
                        "resource": g.resource,
                        "pattern": g.pattern,
                        "statement": g.statement,
                    })
                    .to_string(),
                );
                out.push('\n');
            }
            for d in inner.denied.iter().filter(|d| keep(&d.function, None)) {
                let ms = d
                    .time
                    .duration_since(UNIX_EPOCH)
                    .map(|t| t.as_millis() as u64)
                    .unwrap_or(0);
                out.push_str(
                    &json!({
                        "kind": "denied",
                        "function": d.function,
                        "action": d.action,
                        "resource": d.resource,
                        "pattern": Value::Null,
                        "explicit": d.explicit,
                        "time_ms": ms,
                    })
                    .to_string(),
                );
                out.push('\n');
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(out.as_bytes())
    }
}

// ---------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Usually `127.0.0.1:0`.
    pub bind: SocketAddr,
    pub region: String,
    pub account: String,
    /// Access key id -> the function that uses it.
    pub identities: HashMap<String, Identity>,
    /// DynamoDB Local (DynamoDB and DynamoDB Streams).
    pub dynamodb_upstream: String,
    /// moto (Secrets Manager).
    pub secrets_upstream: String,
    /// moto (SQS).
    pub sqs_upstream: String,
    /// The access key id written into the forwarded `Authorization` header (DynamoDB
    /// Local keeps one database per access key id and region).
    pub upstream_access_key: String,
    pub usage: Arc<Usage>,
}

/// A running gateway; [`Gateway::stop`] ends it (dropping it ends it too).
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds `cfg.bind` and serves until [`Gateway::stop`].
    pub async fn start(cfg: GatewayConfig) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            client,
            iterators: Mutex::new(Iterators::default()),
            secrets: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            cfg,
        });
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, inner, rx));
        tracing::debug!(%addr, "IAM gateway listening");
        Ok(Gateway {
            addr,
            shutdown: tx,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, the functions' `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), closes connections.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

struct Inner {
    cfg: GatewayConfig,
    client: reqwest::Client,
    iterators: Mutex<Iterators>,
    /// Secret name -> ARN, from moto.
    secrets: Mutex<HashMap<String, String>>,
    seq: AtomicU64,
    started: u64,
}

/// Shard iterator -> stream ARN, bounded (oldest dropped first).
#[derive(Default)]
struct Iterators {
    map: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Iterators {
    fn get(&self, it: &str) -> Option<String> {
        self.map.get(it).cloned()
    }

    fn learn(&mut self, it: String, stream: String) {
        if self.map.insert(it.clone(), stream).is_none() {
            self.order.push_back(it);
        }
        while self.map.len() > ITERATOR_CAP {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() > 2 * ITERATOR_CAP {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    fn forget(&mut self, it: &str) {
        self.map.remove(it);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let inner = inner.clone();
                    let mut stop = shutdown.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let inner = inner.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(&inner, req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stop.changed() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "IAM gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// The access key id and the signing service of a SigV4 `Authorization` header.
pub fn parse_credential(authorization: &str) -> Option<(&str, Option<&str>)> {
    let i = authorization.find("Credential=")?;
    let scope = authorization[i + "Credential=".len()..]
        .split([',', ' '])
        .next()?;
    let mut parts = scope.split('/');
    let akid = parts.next().filter(|s| !s.is_empty())?;
    // date / region / service / aws4_request
    let service = parts.nth(2).filter(|s| !s.is_empty());
    Some((akid, service))
}

type Resp = hyper::Response<Full<Bytes>>;

impl Inner {
    fn request_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{:016X}{:020X}GATEWAY", self.started, n)
    }

    fn respond(
        &self,
        status: StatusCode,
        svc: Option<Service>,
        body: Value,
        query_error: Option<&str>,
    ) -> Resp {
        let ct = svc.map_or("application/x-amz-json-1.0", Service::content_type);
        let mut b = hyper::Response::builder()
            .status(status)
            .header("content-type", ct)
            .header("x-amzn-RequestId", self.request_id());
        if let (Some(Service::Sqs), Some(q)) = (svc, query_error) {
            b = b.header("x-amzn-query-error", q);
        }
        b.body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
    }

    fn unrecognized_client(&self, svc: Option<Service>) -> Resp {
        let message = "The security token included in the request is invalid.";
        let ty = match svc {
            Some(Service::Secrets) => "UnrecognizedClientException",
            _ => "com.amazon.coral.service#UnrecognizedClientException",
        };
        self.respond(
            StatusCode::BAD_REQUEST,
            svc,
            json!({"__type": ty, "message": message}),
            Some("InvalidClientTokenId;Sender"),
        )
    }

    fn bad_request(&self, svc: Option<Service>, message: &str) -> Resp {
        let body = match svc {
            Some(Service::Secrets) => {
                json!({"__type": "InvalidRequestException", "Message": message})
            }
            Some(_) => {
                json!({"__type": "com.amazon.coral.validate#ValidationException", "message": message})
            }
            None => {
                json!({"__type": "com.amazon.coral.service#UnknownOperationException", "message": message})
            }
        };
        self.respond(
            StatusCode::BAD_REQUEST,
            svc,
            body,
            Some("ValidationError;Sender"),
        )
    }

    fn access_denied(
        &self,
        svc: Service,
        function: &str,
        action: &str,
        resource: &str,
        explicit: bool,
    ) -> Resp {
        let account = &self.cfg.account;
        let why = if explicit {
            "with an explicit deny in an identity-based policy".to_string()
        } else {
            format!("because no identity-based policy allows the {action} action")
        };
        let message = format!(
            "User: arn:aws:sts::{account}:assumed-role/{function}Role/{function} is not authorized to perform: {action} on resource: {resource} {why}"
        );
        let body = match svc {
            Service::DynamoDb | Service::Streams => json!({
                "__type": "com.amazon.coral.service#AccessDeniedException",
                "Message": message,
            }),
            Service::Secrets => json!({"__type": "AccessDeniedException", "Message": message}),
            Service::Sqs => json!({
                "__type": "com.amazon.coral.service#AccessDeniedException",
                "message": message,
            }),
        };
        self.respond(
            StatusCode::BAD_REQUEST,
            Some(svc),
            body,
            Some("AccessDenied;Sender"),
        )
    }

    fn placeholder_secret_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:secretsmanager:{}:{}:secret:{name}-XXXXXX",
            self.cfg.region, self.cfg.account
        )
    }

    /// A secret's ARN by name: moto's `DescribeSecret` (cached), or the placeholder
    /// `{name}-XXXXXX` when it does not exist (not cached).
    async fn resolve_secret(&self, name: &str) -> String {
        if let Some(arn) = lock(&self.secrets).get(name) {
            return arn.clone();
        }
        let (date, stamp) = amz_date(SystemTime::now());
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{date}/{}/secretsmanager/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
            self.cfg.upstream_access_key,
            self.cfg.region,
            "0".repeat(64)
        );
        let url = format!("{}/", self.cfg.secrets_upstream.trim_end_matches('/'));
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "secretsmanager.DescribeSecret")
            .header("x-amz-date", stamp)
            .header("authorization", auth)
            .body(json!({ "SecretId": name }).to_string())
            .send()
            .await;
        let found = match sent {
            Ok(r) if r.status().is_success() => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| str_field(&v, "ARN").map(str::to_string)),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "IAM gateway: DescribeSecret on the emulator failed");
                None
            }
        };
        match found {
            Some(arn) => {
                let arn = normalise_arn(&arn, &self.cfg.region, &self.cfg.account);
                let mut cache = lock(&self.secrets);
                if cache.len() >= SECRET_CACHE_CAP {
                    cache.clear();
                }
                cache.insert(name.to_string(), arn.clone());
                arn
            }
            None => self.placeholder_secret_arn(name),
        }
    }
}

/// SigV4 dates: (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`).
fn amz_date(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    (date, stamp)
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers (also those named by `Connection`) and `Content-Length`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
    headers.remove(CONTENT_LENGTH);
}

async fn handle(inner: &Inner, req: hyper::Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    // Read the whole body first, so the connection stays usable whatever the answer.
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "IAM gateway: reading the request body failed");
            return inner.bad_request(None, &format!("request body unreadable: {e}"));
        }
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authorization = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let credential = parse_credential(authorization);
    let svc = Service::detect(credential.and_then(|c| c.1).unwrap_or(""), target);

    let Some((akid, identity)) = credential
        .and_then(|(k, _)| inner.cfg.identities.get_key_value(k))
        .map(|(k, id)| (k.as_str(), id))
    else {
        let key = credential.map_or("<none>", |c| c.0);
        tracing::warn!(
            key,
            target,
            "IAM gateway: unknown access key {key} (UnrecognizedClientException)"
        );
        return inner.unrecognized_client(svc);
    };
    let Some(svc) = svc else {
        let msg = format!("unknown service for target {target:?}");
        tracing::warn!(function = %identity.function, "IAM gateway: {}: {msg}", identity.function);
        return inner.bad_request(None, &msg);
    };
    let json = match parse_body(&body) {
        Ok(v) => v,
        Err(msg) => {
            tracing::warn!(function = %identity.function, target, "IAM gateway: {}: {msg}", identity.function);
            return inner.bad_request(Some(svc), &msg);
        }
    };
    let op = operation(target);

    // Secret names are resolved (async) before the sync classification.
    let mut resolved: HashMap<&str, String> = HashMap::new();
    if svc == Service::Secrets {
        for id in secret_ids(op, &json) {
            if !id.starts_with("arn:") && !resolved.contains_key(id) {
                let arn = inner.resolve_secret(id).await;
                resolved.insert(id, arn);
            }
        }
    }
    let secret_arn = |name: &str| {
        resolved
            .get(name)
            .cloned()
            .unwrap_or_else(|| inner.placeholder_secret_arn(name))
    };
    let iterator_stream = |it: &str| lock(&inner.iterators).get(it);
    let pairs = match classify_parsed(
        svc,
        op,
        &json,
        &inner.cfg.region,
        &inner.cfg.account,
        &secret_arn,
        &iterator_stream,
    ) {
        Ok(p) => p,
        Err(msg) => {
            tracing::warn!(function = %identity.function, target, "IAM gateway: {} request not classified: {msg}", identity.function);
            return inner.bad_request(Some(svc), &msg);
        }
    };

    let function = identity.function.as_str();
    let mut grants = Vec::with_capacity(pairs.len());
    let mut first_denial: Option<(&str, &str, bool)> = None;
    for (action, resource) in &pairs {
        match evaluate(&identity.statements, action, resource) {
            Decision::Allowed { statement, pattern } => {
                grants.push((action, resource, statement, pattern))
            }
            d => {
                let explicit = d == Decision::ExplicitDeny;
                tracing::warn!(
                    function,
                    action = %action,
                    resource = %resource,
                    explicit,
                    "{function} AccessDenied: {action} on {resource}"
                );
                inner
                    .cfg
                    .usage
                    .record_denied(function, action, resource, explicit);
                first_denial.get_or_insert((action, resource, explicit));
            }
        }
    }
    if let Some((action, resource, explicit)) = first_denial {
        return inner.access_denied(svc, function, action, resource, explicit);
    }
    for (action, resource, statement, pattern) in grants {
        // "<statement index>/<resource index>": where the grant is in the function's
        // statements, as the least-privilege report reads the template.
        let ri = identity.statements[statement]
            .resources
            .iter()
            .position(|r| *r == pattern)
            .unwrap_or(0);
        let label = format!("{statement}/{ri}");
        inner
            .cfg
            .usage
            .record_allowed(function, action, &label, &pattern, resource);
    }

    // Forward.
    let upstream = match svc {
        Service::DynamoDb | Service::Streams => &inner.cfg.dynamodb_upstream,
        Service::Secrets => &inner.cfg.secrets_upstream,
        Service::Sqs => &inner.cfg.sqs_upstream,
    };
    let url = format!(
        "{}{}",
        upstream.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(HOST);
    headers.remove(http::header::EXPECT);
    let rewritten = authorization.replacen(
        &format!("Credential={akid}/"),
        &format!("Credential={}/", inner.cfg.upstream_access_key),
        1,
    );
    if let Ok(v) = HeaderValue::from_str(&rewritten) {
        headers.insert(AUTHORIZATION, v);
    }
    tracing::debug!(function, target, %url, "IAM gateway: forwarding");
    let sent = inner
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let (status, mut resp_headers, resp_body) = match sent {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            match r.bytes().await {
                Ok(b) => (status, headers, b),
                Err(e) => return unavailable(inner, svc, &url, &e),
            }
        }
        Err(e) => return unavailable(inner, svc, &url, &e),
    };

    // Streams: learn which stream each iterator belongs to.
    if svc == Service::Streams
        && status.is_success()
        && (op == "GetShardIterator" || op == "GetRecords")
    {
        let stream = &pairs[0].1;
        if !stream.contains('*') {
            let answer: Value = serde_json::from_slice(&resp_body).unwrap_or(Value::Null);
            let mut its = lock(&inner.iterators);
            if op == "GetRecords" {
                if let Some(used) = str_field(&json, "ShardIterator") {
                    its.forget(used);
                }
                if let Some(next) = str_field(&answer, "NextShardIterator") {
                    its.learn(next.to_string(), stream.clone());
                }
            } else if let Some(it) = str_field(&answer, "ShardIterator") {
                its.learn(it.to_string(), stream.clone());
            }
        }
    }
    if svc == Service::Secrets && status.is_success() && op == "DeleteSecret" {
        let ids = secret_ids(op, &json);
        lock(&inner.secrets).retain(|k, v| !ids.iter().any(|id| id == k || id == v));
    }

    strip_hop_by_hop(&mut resp_headers);
    let mut b = hyper::Response::builder().status(status);
    if let Some(h) = b.headers_mut() {
        *h = resp_headers;
    }
    b.body(Full::new(resp_body))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

fn unavailable(inner: &Inner, svc: Service, url: &str, e: &reqwest::Error) -> Resp {
    tracing::warn!(error = %e, %url, "IAM gateway: upstream unreachable");
    inner.respond(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(svc),
        json!({
            "__type": "ServiceUnavailable",
            "message": format!("local IAM gateway: upstream {url} unreachable: {e}"),
        }),
        Some("ServiceUnavailable;Receiver"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: &str = "us-east-1";
    const ACCOUNT: &str = "123456789012";

    fn no_secret(name: &str) -> String {
        panic!("secret_arn called for {name}")
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, r)| (a.to_string(), r.to_string()))
            .collect()
    }

    fn ddb(op: &str, body: Value) -> Result<Vec<(String, String)>, String> {
        classify(
            "dynamodb",
            &format!("DynamoDB_20120810.{op}"),
            body.to_string().as_bytes(),
            REGION,
            ACCOUNT,
            &no_secret,
        )
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "anything:at/all", false));
        assert!(wildcard_match("dynamodb:*", "dynamodb:PutItem", true));
        assert!(wildcard_match("dynamodb:Get*", "dynamodb:GetItem", true));
        assert!(wildcard_match("DynamoDB:get*", "dynamodb:GetItem", true));
        assert!(!wildcard_match("DynamoDB:get*", "dynamodb:GetItem", false));
        assert!(!wildcard_match("dynamodb:Get*", "dynamodb:PutItem", true));
        assert!(wildcard_match(
            "arn:aws:dynamodb:*:*:table/Inbox*",
            "arn:aws:dynamodb:us-east-1:1:table/Inbox/index/byTime",
            false
        ));
        assert!(wildcard_match("a?c", "abc", false));
        assert!(!wildcard_match("a?c", "ac", false));
        assert!(!wildcard_match("a?c", "abbc", false));
        assert!(wildcard_match("*a*b*c*", "xxaxxbxxcxx", false));
        assert!(!wildcard_match("*a*b*c", "xxaxxbxxcxx", false));
        assert!(wildcard_match(
            "secret:app-??????",
            "secret:app-AbC123",
            false
        ));
        assert!(!wildcard_match("table/Inbox", "table/inbox", false));
        assert!(wildcard_match("", "", false));
        assert!(!wildcard_match("", "x", false));
        assert!(wildcard_match("ü*", "Über", true));
    }

    #[test]
    fn evaluation() {
        let t = "arn:aws:dynamodb:us-east-1:123456789012:table/Inbox";
        let statements = vec![
            Statement {
                sid: Some("Write".into()),
                ..Statement::allowing(["dynamodb:PutItem", "dynamodb:Get*"], [t])
            },
            Statement::allowing(["dynamodb:*"], [format!("{t}/index/*")]),
            Statement::denying(["dynamodb:DeleteItem"], ["*"]),
            Statement::allowing(["dynamodb:DeleteItem"], [t]),
        ];
        assert_eq!(
            evaluate(&statements, "dynamodb:PutItem", t),
            Decision::Allowed {
                statement: 0,
                pattern: t.into()
            }
        );
        // Case-insensitive action.
        assert_eq!(
            evaluate(&statements, "DYNAMODB:getitem", t),
            Decision::Allowed {
                statement: 0,
                pattern: t.into()
            }
        );
        assert_eq!(
            evaluate(&statements, "dynamodb:Query", &format!("{t}/index/byTime")),
            Decision::Allowed {
                statement: 1,
                pattern: format!("{t}/index/*")
            }
        );
        assert_eq!(
            evaluate(&statements, "dynamodb:UpdateItem", t),
            Decision::ImplicitDeny
        );
        // Resources are case-sensitive.
        assert_eq!(
            evaluate(&statements, "dynamodb:PutItem", &t.to_lowercase()),
            Decision::ImplicitDeny
        );
        // An explicit deny wins over a matching allow.
        assert_eq!(
            evaluate(&statements, "dynamodb:DeleteItem", t),
            Decision::ExplicitDeny
        );
        assert_eq!(evaluate(&[], "dynamodb:PutItem", t), Decision::ImplicitDeny);
    }

    #[test]
    fn classify_dynamodb_ops() {
        let t = |n: &str| format!("arn:aws:dynamodb:us-east-1:123456789012:table/{n}");
        assert_eq!(
            ddb("PutItem", json!({"TableName": "Inbox", "Item": {}})).unwrap(),
            pairs(&[("dynamodb:PutItem", &t("Inbox"))])
        );
        // A table ARN (DynamoDB Local's region/account) as TableName.
        assert_eq!(
            ddb(
                "GetItem",
                json!({"TableName": "arn:aws:dynamodb:ddblocal:000000000000:table/Data"})
            )
            .unwrap(),
            pairs(&[("dynamodb:GetItem", &t("Data"))])
        );
        assert_eq!(
            ddb("Query", json!({"TableName": "Data", "IndexName": "gsi1"})).unwrap(),
            pairs(&[("dynamodb:Query", &format!("{}/index/gsi1", t("Data")))])
        );
        assert_eq!(
            ddb("Scan", json!({"TableName": "Data"})).unwrap(),
            pairs(&[("dynamodb:Scan", &t("Data"))])
        );
        assert_eq!(
            ddb(
                "TransactWriteItems",
                json!({"TransactItems": [
                    {"Put": {"TableName": "Data", "Item": {}}},
                    {"Update": {"TableName": "Inbox", "Key": {}}},
                    {"ConditionCheck": {"TableName": "Data", "Key": {}}},
                    {"Delete": {"TableName": "Inbox", "Key": {}}},
                ]})
            )
            .unwrap(),
            pairs(&[
                ("dynamodb:PutItem", &t("Data")),
                ("dynamodb:UpdateItem", &t("Inbox")),
                ("dynamodb:ConditionCheckItem", &t("Data")),
                ("dynamodb:DeleteItem", &t("Inbox")),
            ])
        );
        assert_eq!(
            ddb(
                "TransactGetItems",
                json!({"TransactItems": [{"Get": {"TableName": "Data"}}, {"Get": {"TableName": "Data"}}]})
            )
            .unwrap(),
            pairs(&[("dynamodb:GetItem", &t("Data"))])
        );
        let mut batch = ddb(
            "BatchWriteItem",
            json!({"RequestItems": {
                "Data": [],
                "arn:aws:dynamodb:us-east-1:123456789012:table/Inbox": []
            }}),
        )
        .unwrap();
        batch.sort();
        assert_eq!(
            batch,
            pairs(&[
                ("dynamodb:BatchWriteItem", &t("Data")),
                ("dynamodb:BatchWriteItem", &t("Inbox")),
            ])
        );
        assert_eq!(
            ddb("ListTables", json!({})).unwrap(),
            pairs(&[("dynamodb:ListTables", &t("*"))])
        );
        assert!(ddb("PutItem", json!({"Item": {}})).is_err());
        assert!(
            ddb(
                "TransactWriteItems",
                json!({"TransactItems": [{"Nope": {}}]})
            )
            .is_err()
        );
        assert!(ddb("ExecuteStatement", json!({"Statement": "SELECT"})).is_err());
        assert!(
            classify(
                "dynamodb",
                "DynamoDB_20120810.PutItem",
                b"{",
                REGION,
                ACCOUNT,
                &no_secret
            )
            .is_err()
        );
    }

    #[test]
    fn classify_streams_ops() {
        let local =
            "arn:aws:dynamodb:ddblocal:000000000000:table/Inbox/stream/2026-12-01T10:00:00.000";
        let want =
            "arn:aws:dynamodb:us-east-1:123456789012:table/Inbox/stream/2026-12-01T10:00:00.000";
        for op in ["DescribeStream", "GetShardIterator"] {
            assert_eq!(
                classify(
                    "dynamodb",
                    &format!("DynamoDBStreams_20120810.{op}"),
                    json!({"StreamArn": local, "ShardId": "s"})
                        .to_string()
                        .as_bytes(),
                    REGION,
                    ACCOUNT,
                    &no_secret
                )
                .unwrap(),
                pairs(&[(&format!("dynamodb:{op}"), want)])
            );
        }
        assert_eq!(
            classify(
                "dynamodb",
                "DynamoDBStreams_20120810.GetRecords",
                br#"{"ShardIterator":"opaque"}"#,
                REGION,
                ACCOUNT,
                &no_secret
            )
            .unwrap(),
            pairs(&[(
                "dynamodb:GetRecords",
                "arn:aws:dynamodb:us-east-1:123456789012:table/*/stream/*"
            )])
        );
        assert_eq!(
            classify(
                "dynamodb",
                "DynamoDBStreams_20120810.ListStreams",
                b"{}",
                REGION,
                ACCOUNT,
                &no_secret
            )
            .unwrap(),
            pairs(&[("dynamodb:ListStreams", "*")])
        );
    }

    #[test]
    fn classify_secrets_ops() {
        let by_name = |name: &str| {
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf")
        };
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ctwa/webhook-Zz9Zz9";
        let sm = |op: &str, body: Value| {
            classify(
                "secretsmanager",
                &format!("secretsmanager.{op}"),
                body.to_string().as_bytes(),
                REGION,
                ACCOUNT,
                &by_name,
            )
        };
        assert_eq!(
            sm("GetSecretValue", json!({"SecretId": arn})).unwrap(),
            pairs(&[("secretsmanager:GetSecretValue", arn)])
        );
        assert_eq!(
            sm("GetSecretValue", json!({"SecretId": "ctwa/token/1"})).unwrap(),
            pairs(&[("secretsmanager:GetSecretValue", &by_name("ctwa/token/1"))])
        );
        assert_eq!(
            sm(
                "CreateSecret",
                json!({"Name": "ctwa/new", "SecretString": "x"})
            )
            .unwrap(),
            pairs(&[("secretsmanager:CreateSecret", &by_name("ctwa/new"))])
        );
        assert_eq!(
            sm("ListSecrets", json!({})).unwrap(),
            pairs(&[("secretsmanager:ListSecrets", "*")])
        );
        assert!(sm("GetSecretValue", json!({})).is_err());
    }

    #[test]
    fn classify_sqs_ops() {
        let sqs = |op: &str, body: Value| {
            classify(
                "sqs",
                &format!("AmazonSQS.{op}"),
                body.to_string().as_bytes(),
                REGION,
                ACCOUNT,
                &no_secret,
            )
        };
        let want = "arn:aws:sqs:us-east-1:123456789012:capi-dlq";
        assert_eq!(
            sqs(
                "SendMessage",
                json!({"QueueUrl": "http://127.0.0.1:15000/123456789012/capi-dlq", "MessageBody": "x"})
            )
            .unwrap(),
            pairs(&[("sqs:SendMessage", want)])
        );
        assert_eq!(
            sqs(
                "ReceiveMessage",
                json!({"QueueUrl": "http://localhost:4566/queue/us-east-1/123456789012/capi-dlq"})
            )
            .unwrap(),
            pairs(&[("sqs:ReceiveMessage", want)])
        );
        assert_eq!(
            sqs("GetQueueUrl", json!({"QueueName": "capi-dlq"})).unwrap(),
            pairs(&[("sqs:GetQueueUrl", want)])
        );
        assert!(sqs("SendMessage", json!({})).is_err());
    }

    #[test]
    fn credentials_and_dates() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDWEB/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=ab";
        assert_eq!(parse_credential(h), Some(("AKIDWEB", Some("dynamodb"))));
        assert_eq!(parse_credential("Bearer x"), None);
        let t = UNIX_EPOCH + Duration::from_secs(1_796_119_200); // 2026-12-01T10:00:00Z
        assert_eq!(
            amz_date(t),
            ("20261201".to_string(), "20261201T100000Z".to_string())
        );
    }

    // ---- end to end, against a fake upstream -------------------------------------------

    const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook-AbCdEf";

    /// Echoes the Authorization header it received; answers DescribeSecret for
    /// `webhook` only; every answer carries shard iterators `it-1` / `it-2`.
    async fn fake_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string()
                            };
                            let (auth, target, host) = (
                                header("authorization"),
                                header("x-amz-target"),
                                header("host"),
                            );
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let (status, answer) = if target == "secretsmanager.DescribeSecret" {
                                if body["SecretId"] == "webhook" {
                                    (200, json!({"ARN": SECRET_ARN, "Name": "webhook"}))
                                } else {
                                    (400, json!({"__type": "ResourceNotFoundException"}))
                                }
                            } else {
                                (
                                    200,
                                    json!({
                                        "authorization": auth,
                                        "target": target,
                                        "host": host,
                                        "ShardIterator": "it-1",
                                        "NextShardIterator": "it-2",
                                    }),
                                )
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-amz-json-1.0")
                                    .body(Full::new(Bytes::from(answer.to_string())))
                                    .unwrap(),
                            )
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    async fn call(
        client: &reqwest::Client,
        gw: &Gateway,
        key: &str,
        service: &str,
        target: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = client
            .post(gw.url())
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={key}/20261201/us-east-1/{service}/aws4_request, SignedHeaders=host;x-amz-target, Signature=00"),
            )
            .header("x-amz-target", target)
            .header("content-type", "application/x-amz-json-1.0")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    #[tokio::test]
    async fn gateway_forwards_allowed_and_refuses_the_rest() {
        let upstream = format!("http://{}", fake_upstream().await);
        let table = "arn:aws:dynamodb:us-east-1:123456789012:table/Inbox";
        let stream = "arn:aws:dynamodb:us-east-1:123456789012:table/Inbox/stream/*";
        let usage = Arc::new(Usage::default());
        let mut identities = HashMap::new();
        identities.insert(
            "AKIDWEBHOOK".to_string(),
            Identity {
                function: "WebhookFunction".into(),
                statements: vec![
                    Statement {
                        sid: Some("InboxWrite".into()),
                        ..Statement::allowing(["dynamodb:PutItem"], [table])
                    },
                    Statement::allowing(
                        ["dynamodb:GetShardIterator", "dynamodb:GetRecords"],
                        [stream],
                    ),
                    Statement::allowing(
                        ["secretsmanager:GetSecretValue"],
                        ["arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook-??????"],
                    ),
                ],
            },
        );
        let gw = Gateway::start(GatewayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            region: REGION.into(),
            account: ACCOUNT.into(),
            identities,
            dynamodb_upstream: upstream.clone(),
            secrets_upstream: upstream.clone(),
            sqs_upstream: upstream.clone(),
            upstream_access_key: "LOCALSHARED".into(),
            usage: usage.clone(),
        })
        .await
        .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();

        // Allowed: forwarded with the upstream's access key.
        let (status, body) = call(
            &client,
            &gw,
            "AKIDWEBHOOK",
            "dynamodb",
            "DynamoDB_20120810.PutItem",
            json!({"TableName": "Inbox", "Item": {"pk": {"S": "a"}}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let auth = body["authorization"].as_str().unwrap();
        assert!(auth.contains("Credential=LOCALSHARED/20261201/"), "{auth}");
        assert!(!auth.contains("AKIDWEBHOOK"), "{auth}");
        assert_eq!(body["host"], upstream.trim_start_matches("http://"));

        // Not allowed: DynamoDB's AccessDeniedException.
        let (status, body) = call(
            &client,
            &gw,
            "AKIDWEBHOOK",
            "dynamodb",
            "DynamoDB_20120810.UpdateItem",
            json!({"TableName": "Inbox", "Key": {}}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["__type"],
            "com.amazon.coral.service#AccessDeniedException"
        );
        let msg = body["Message"].as_str().unwrap();
        assert_eq!(
            msg,
            format!(
                "User: arn:aws:sts::123456789012:assumed-role/WebhookFunctionRole/WebhookFunction is not authorized to perform: dynamodb:UpdateItem on resource: {table} because no identity-based policy allows the dynamodb:UpdateItem action"
            )
        );

        // Unknown key.
        let (status, body) = call(
            &client,
            &gw,
            "AKIDNOBODY",
            "dynamodb",
            "DynamoDB_20120810.PutItem",
            json!({"TableName": "Inbox"}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["__type"],
            "com.amazon.coral.service#UnrecognizedClientException"
        );

        // Streams: iterators learnt from the answers carry their stream's ARN.
        let local_stream =
            "arn:aws:dynamodb:ddblocal:000000000000:table/Inbox/stream/2026-12-01T10:00:00.000";
        let streams = |op: &str| format!("DynamoDBStreams_20120810.{op}");
        let (status, _) = call(&client, &gw, "AKIDWEBHOOK", "dynamodb", &streams("GetShardIterator"),
            json!({"StreamArn": local_stream, "ShardId": "s-1", "ShardIteratorType": "TRIM_HORIZON"})).await;
        assert_eq!(status, 200);
        let (status, _) = call(
            &client,
            &gw,
            "AKIDWEBHOOK",
            "dynamodb",
            &streams("GetRecords"),
            json!({"ShardIterator": "it-1"}),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = call(
            &client,
            &gw,
            "AKIDWEBHOOK",
            "dynamodb",
            &streams("GetRecords"),
            json!({"ShardIterator": "it-2"}),
        )
        .await;
        assert_eq!(status, 200);
        let (status, body) = call(
            &client,
            &gw,
            "AKIDWEBHOOK",
            "dynamodb",
            &streams("GetRecords"),
            json!({"ShardIterator": "never-seen"}),
        )
        .await;
        assert_eq!(status, 400, "{body}");

        // Secrets Manager: a name resolved through the emulator; unknown names get the
        // placeholder ARN (refused here).
        let (status, body) = call(
            &client,
            &gw,
            "AKIDWEBHOOK",
            "secretsmanager",
            "secretsmanager.GetSecretValue",
            json!({"SecretId": "webhook"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = call(
            &client,
            &gw,
            "AKIDWEBHOOK",
            "secretsmanager",
            "secretsmanager.GetSecretValue",
            json!({"SecretId": "other"}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["__type"], "AccessDeniedException");
        assert!(body["Message"].as_str().unwrap().contains(
            "on resource: arn:aws:secretsmanager:us-east-1:123456789012:secret:other-XXXXXX "
        ));

        let allowed = usage.allowed();
        let got: Vec<(&str, &str, &str, &str)> = allowed
            .iter()
            .map(|g| {
                (
                    g.function.as_str(),
                    g.action.as_str(),
                    g.statement.as_str(),
                    g.pattern.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("WebhookFunction", "dynamodb:PutItem", "0/0", table),
                (
                    "WebhookFunction",
                    "dynamodb:GetShardIterator",
                    "1/0",
                    stream
                ),
                ("WebhookFunction", "dynamodb:GetRecords", "1/0", stream),
                (
                    "WebhookFunction",
                    "secretsmanager:GetSecretValue",
                    "2/0",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:webhook-??????"
                ),
            ]
        );
        assert_eq!(
            allowed[2].resource,
            "arn:aws:dynamodb:us-east-1:123456789012:table/Inbox/stream/2026-12-01T10:00:00.000"
        );
        let denied = usage.denied();
        let got: Vec<(&str, &str, &str)> = denied
            .iter()
            .map(|d| (d.function.as_str(), d.action.as_str(), d.resource.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("WebhookFunction", "dynamodb:UpdateItem", table),
                (
                    "WebhookFunction",
                    "dynamodb:GetRecords",
                    "arn:aws:dynamodb:us-east-1:123456789012:table/*/stream/*"
                ),
                (
                    "WebhookFunction",
                    "secretsmanager:GetSecretValue",
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-XXXXXX"
                ),
            ]
        );

        let dir = std::env::temp_dir().join(format!("ctwa-iam-{}", std::process::id()));
        let file = dir.join("usage.jsonl");
        let _ = std::fs::remove_file(&file);
        usage.append_jsonl(&file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0]["kind"], "allowed");
        assert_eq!(lines[4]["kind"], "denied");
        assert_eq!(lines[4]["action"], "dynamodb:UpdateItem");
        let _ = std::fs::remove_dir_all(&dir);

        gw.stop().await;
    }

    #[tokio::test]
    async fn unreachable_upstream_is_503() {
        // A port nothing listens on.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let mut identities = HashMap::new();
        identities.insert(
            "AKIDSQS".to_string(),
            Identity {
                function: "CapiFunction".into(),
                statements: vec![Statement::allowing(["sqs:*"], ["*"])],
            },
        );
        let gw = Gateway::start(GatewayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            region: REGION.into(),
            account: ACCOUNT.into(),
            identities,
            dynamodb_upstream: dead_url.clone(),
            secrets_upstream: dead_url.clone(),
            sqs_upstream: dead_url,
            upstream_access_key: "LOCALSHARED".into(),
            usage: Arc::new(Usage::default()),
        })
        .await
        .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let (status, body) = call(
            &client,
            &gw,
            "AKIDSQS",
            "sqs",
            "AmazonSQS.SendMessage",
            json!({"QueueUrl": "http://x/123456789012/q", "MessageBody": "m"}),
        )
        .await;
        assert_eq!(status, 503);
        assert_eq!(body["__type"], "ServiceUnavailable");
        gw.stop().await;
    }
}
