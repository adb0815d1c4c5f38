//! A fault-injecting HTTP proxy on loopback, between the stack (or a capture consumer)
//! and DynamoDB Local (or the Graph simulator). For the requests it matches (by
//! `X-Amz-Target` operation, `TableName` and path), it answers a share with DynamoDB's own throttling errors (HTTP 400
//! `ProvisionedThroughputExceededException`, `ThrottlingException`,
//! `RequestLimitExceeded`), a share with HTTP 500 `InternalServerError` without
//! forwarding, and a share with a 500 AFTER forwarding (the write happened; the caller
//! cannot know), or forwards and then closes the connection without an answer. It can
//! slow requests down, and hold every matching request past the first N forever (a
//! consumer frozen in the middle of a batch, to be killed there).
//!
//! The server side is a small HTTP/1.1 reader (the AWS SDK sends `Content-Length`
//! bodies); requests go upstream with reqwest.

use ctwa_local::Clients;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{AppOptions, TestApp};

/// What to do to the matching requests. Shares are of the matching requests, 0.0 to 1.0.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// `X-Amz-Target` operations (`PutItem`, `UpdateItem`, ...); empty: every operation.
    pub operations: Vec<String>,
    /// `TableName`s; empty: every table.
    pub tables: Vec<String>,
    /// Substrings of the request path; empty: every path.
    pub paths: Vec<String>,
    /// Faults only for the first this many matching requests (then they pass).
    pub limit: Option<usize>,
    /// Answered with a throttling error, not forwarded.
    pub throttle: f64,
    /// Answered with a 500, not forwarded.
    pub error_500: f64,
    /// Forwarded, then answered with a 500 in place of DynamoDB's answer.
    pub error_500_after: f64,
    /// Forwarded, then the connection is closed without an answer.
    pub drop_after: f64,
    /// Added before forwarding.
    pub delay: Duration,
    /// Matching requests past this many are held: never forwarded, never answered.
    pub hold_after: Option<usize>,
}

impl FaultConfig {
    pub fn ops(operations: &[&str]) -> Self {
        Self {
            operations: operations.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
}

/// What the proxy did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub requests: usize,
    pub matched: usize,
    pub forwarded: usize,
    pub throttled: usize,
    pub errors_500: usize,
    pub errors_500_after: usize,
    pub dropped_after: usize,
    pub held: usize,
}

#[derive(Default)]
struct Counters {
    requests: AtomicUsize,
    matched: AtomicUsize,
    forwarded: AtomicUsize,
    throttled: AtomicUsize,
    errors_500: AtomicUsize,
    errors_500_after: AtomicUsize,
    dropped_after: AtomicUsize,
    held: AtomicUsize,
}

struct State {
    upstream: String,
    http: reqwest::Client,
    config: Mutex<FaultConfig>,
    counters: Counters,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Answer,
    Error500,
    Drop,
}

enum Decision {
    Forward { after: After, delay: Duration },
    Throttle,
    Error500,
    Hold,
}

fn random_share() -> f64 {
    (getrandom::u64().unwrap_or(0) >> 11) as f64 / (1u64 << 53) as f64
}

const THROTTLES: [(&str, &str); 3] = [
    (
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
    ),
    (
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    ),
    (
        "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded",
        "Throughput exceeds the current throughput limit for your account. Please contact AWS Support at https://aws.amazon.com/support request a limit increase",
    ),
];

impl State {
    fn decide(&self, operation: &str, table: Option<&str>, path: &str) -> Decision {
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let cfg = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let op_ok = cfg.operations.is_empty() || cfg.operations.iter().any(|o| o == operation);
        let table_ok =
            cfg.tables.is_empty() || table.is_some_and(|t| cfg.tables.iter().any(|x| x == t));
        let path_ok = cfg.paths.is_empty() || cfg.paths.iter().any(|p| path.contains(p.as_str()));
        let pass = Decision::Forward {
            after: After::Answer,
            delay: Duration::ZERO,
        };
        if !(op_ok && table_ok && path_ok) {
            c.forwarded.fetch_add(1, Ordering::Relaxed);
            return pass;
        }
        let n = c.matched.fetch_add(1, Ordering::Relaxed);
        if cfg.limit.is_some_and(|l| n >= l) {
            c.forwarded.fetch_add(1, Ordering::Relaxed);
            return pass;
        }
        if cfg.hold_after.is_some_and(|h| n >= h) {
            c.held.fetch_add(1, Ordering::Relaxed);
            return Decision::Hold;
        }
        let r = random_share();
        if r < cfg.throttle {
            c.throttled.fetch_add(1, Ordering::Relaxed);
            return Decision::Throttle;
        }
        if r < cfg.throttle + cfg.error_500 {
            c.errors_500.fetch_add(1, Ordering::Relaxed);
            return Decision::Error500;
        }
        c.forwarded.fetch_add(1, Ordering::Relaxed);
        let after = if r < cfg.throttle + cfg.error_500 + cfg.error_500_after {
            c.errors_500_after.fetch_add(1, Ordering::Relaxed);
            After::Error500
        } else if r < cfg.throttle + cfg.error_500 + cfg.error_500_after + cfg.drop_after {
            c.dropped_after.fetch_add(1, Ordering::Relaxed);
            After::Drop
        } else {
            After::Answer
        };
        Decision::Forward {
            after,
            delay: cfg.delay,
        }
    }
}

fn aws_error(status: u16, reason: &str, kind: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"__type": kind, "message": message}).to_string();
    let mut id = [0u8; 16];
    let _ = getrandom::fill(&mut id);
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: {}\r\ncontent-length: {}\r\n\r\n{body}",
        hex::encode(id).to_uppercase(),
        body.len()
    )
    .into_bytes()
}

fn error_500() -> Vec<u8> {
    aws_error(
        500,
        "Internal Server Error",
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "Internal server error",
    )
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if read.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return Ok(());
        };
        let (method, path) = (method.to_string(), path.to_string());
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        read.read_exact(&mut body).await?;
        let operation = header("x-amz-target")
            .and_then(|t| t.rsplit_once('.'))
            .map(|(_, op)| op.to_string())
            .unwrap_or_default();
        let table = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["TableName"].as_str().map(str::to_string));
        let answer = match state.decide(&operation, table.as_deref(), &path) {
            Decision::Hold => {
                // Never answered; the connection stays open until the proxy stops.
                let _ = shutdown.wait_for(|stop| *stop).await;
                return Ok(());
            }
            Decision::Throttle => {
                let (kind, message) =
                    THROTTLES[getrandom::u32().unwrap_or(0) as usize % THROTTLES.len()];
                aws_error(400, "Bad Request", kind, message)
            }
            Decision::Error500 => error_500(),
            Decision::Forward { after, delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut req = state.http.request(
                    method.parse().unwrap_or(reqwest::Method::POST),
                    format!("{}{path}", state.upstream),
                );
                for (k, v) in &headers {
                    if !matches!(
                        k.as_str(),
                        "host" | "content-length" | "connection" | "transfer-encoding"
                    ) {
                        req = req.header(k.as_str(), v.as_str());
                    }
                }
                match req.body(body).send().await {
                    Err(_) => error_500(),
                    Ok(resp) if after == After::Drop => {
                        // The upstream did the work; the caller never hears back.
                        let _ = resp.bytes().await;
                        return Ok(());
                    }
                    Ok(resp) if after == After::Answer => {
                        let status = resp.status();
                        let mut out = format!(
                            "HTTP/1.1 {} {}\r\n",
                            status.as_u16(),
                            status.canonical_reason().unwrap_or("")
                        );
                        for (k, v) in resp.headers() {
                            if !matches!(
                                k.as_str(),
                                "content-length" | "connection" | "transfer-encoding"
                            ) {
                                out.push_str(&format!(
                                    "{}: {}\r\n",
                                    k.as_str(),
                                    v.to_str().unwrap_or("")
                                ));
                            }
                        }
                        let bytes = resp.bytes().await.unwrap_or_default();
                        out.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
                        let mut out = out.into_bytes();
                        out.extend_from_slice(&bytes);
                        out
                    }
                    Ok(resp) => {
                        // The upstream did the work; the caller is told it failed.
                        let _ = resp.bytes().await;
                        error_500()
                    }
                }
            }
        };
        write.write_all(&answer).await?;
        write.flush().await?;
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:18000`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("bound");
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            config: Mutex::new(FaultConfig::default()),
            counters: Counters::default(),
        });
        let (tx, rx) = watch::channel(false);
        let s = state.clone();
        tokio::spawn(async move {
            let mut stop = rx.clone();
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                    _ = stop.wait_for(|v| *v) => return,
                };
                let (s, rx) = (s.clone(), rx.clone());
                tokio::spawn(async move {
                    let mut stop = rx.clone();
                    tokio::select! {
                        _ = serve_connection(stream, s, rx) => {}
                        _ = stop.wait_for(|v| *v) => {}
                    }
                });
            }
        });
        FaultProxy {
            addr,
            state,
            shutdown: tx,
        }
    }

    /// The endpoint URL to give the SDK (`endpoint_url` / `AWS_ENDPOINT_URL_DYNAMODB`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the faults (and restarts the `hold_after` count).
    pub fn set(&self, config: FaultConfig) {
        *self.state.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.state.counters.matched.store(0, Ordering::Relaxed);
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.state.counters;
        let l = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        ProxyStats {
            requests: l(&c.requests),
            matched: l(&c.matched),
            forwarded: l(&c.forwarded),
            throttled: l(&c.throttled),
            errors_500: l(&c.errors_500),
            errors_500_after: l(&c.errors_500_after),
            dropped_after: l(&c.dropped_after),
            held: l(&c.held),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The real stack like [`crate::spawn_app_with`], but its DynamoDB client (every function
/// and the capture's writes) goes through `dynamodb_endpoint`; the stream reads, the
/// secrets and the test's own reads (`TestApp::clients`) go straight to the servers.
pub async fn spawn_app_through(dynamodb_endpoint: &str, opts: AppOptions) -> TestApp {
    spawn_custom(Some(dynamodb_endpoint), false, opts).await.0
}

/// The real stack like [`crate::spawn_app_with`], its Graph API calls going through a
/// fault proxy in front of the simulator (the proxy starts with no faults).
pub async fn spawn_app_with_graph_proxy(opts: AppOptions) -> (TestApp, FaultProxy) {
    let (app, proxy) = spawn_custom(None, true, opts).await;
    (app, proxy.expect("graph proxy"))
}

async fn spawn_custom(
    dynamodb_endpoint: Option<&str>,
    graph_proxy: bool,
    opts: AppOptions,
) -> (TestApp, Option<FaultProxy>) {
    let direct = crate::clients().await;
    let dynamodb = match dynamodb_endpoint {
        Some(endpoint) => {
            let sdk = ctwa_shared::config::aws_sdk_config().await;
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&sdk)
                    .endpoint_url(endpoint)
                    .build(),
            )
        }
        None => direct.dynamodb.clone(),
    };
    let stack_clients = Clients {
        dynamodb,
        streams: direct.streams.clone(),
        secrets: direct.secrets.clone(),
        sqs: direct.sqs.clone(),
    };
    let mut cfg = crate::test_config(&opts);
    // The functions' DynamoDB calls (through the IAM gateway) reach the fault proxy.
    if let Some(endpoint) = dynamodb_endpoint {
        cfg.lambda.dynamodb_upstream = endpoint.to_string();
    }
    let sim = crate::start_sim(&cfg).await;
    let proxy = if graph_proxy {
        let p = FaultProxy::start(&format!("http://{}", sim.addr)).await;
        cfg.graph_url = format!("{}/{}", p.url(), graph_sim::DEFAULT_VERSION);
        Some(p)
    } else {
        cfg.graph_url = sim.graph_url();
        None
    };
    let app = crate::finish_app(&stack_clients, direct, cfg, sim, &opts).await;
    (app, proxy)
}
