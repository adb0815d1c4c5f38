//! A local Lambda service for one function: its shipped bootstrap binary run as a pool of
//! warm instances, each a process polling its own Lambda Runtime API
//! (`/2018-06-01/runtime/...`), one invocation per instance at a time, like a Lambda
//! execution environment. An instance starts on demand (a cold start) when none is
//! idle; an invocation past the function's Timeout kills its instance, as does a crash,
//! and the next invocation gets a fresh one.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Lambda's limit for a synchronous invocation's response.
const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// How an invocation failed, in Lambda's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    /// The function ran past its Timeout ("Task timed out after N seconds").
    Timeout(Duration),
    /// The runtime process exited or could not start (Runtime.ExitError, init errors).
    Crashed(String),
    /// The handler reported an error through the Runtime API.
    Function { error_type: String, message: String },
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "Task timed out after {:.2} seconds", d.as_secs_f64()),
            Self::Crashed(m) => write!(f, "Runtime.ExitError: {m}"),
            Self::Function {
                error_type,
                message,
            } => write!(f, "{error_type}: {message}"),
        }
    }
}

/// Where the functions' log lines go: one file per stack (each line prefixed with the
/// function's name), optionally kept in memory for tests that read them.
#[derive(Default)]
pub struct LogSink {
    file: Option<Mutex<std::fs::File>>,
    memory: Option<Mutex<Vec<String>>>,
}

impl LogSink {
    pub fn new(file: Option<PathBuf>, keep_in_memory: bool) -> std::io::Result<Self> {
        let file = match file {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                ))
            }
            None => None,
        };
        Ok(Self {
            file,
            memory: keep_in_memory.then(|| Mutex::new(Vec::new())),
        })
    }

    pub fn line(&self, function: &str, line: &str) {
        if let Some(f) = &self.file {
            use std::io::Write;
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{function} {line}");
        }
        if let Some(m) = &self.memory {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{function} {line}"));
        }
    }

    /// Every line kept so far (`None` when not kept).
    pub fn lines(&self) -> Option<Vec<String>> {
        self.memory
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// How to start one instance of a function.
#[derive(Clone)]
pub struct LaunchSpec {
    pub function: String,
    pub program: PathBuf,
    /// A command put before the program (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`).
    pub launcher: Vec<String>,
    /// The whole environment of the process (nothing is inherited).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_instances: usize,
    pub function_arn: String,
}

type Reply = oneshot::Sender<Result<Bytes, InvokeError>>;

struct Job {
    request_id: String,
    payload: Bytes,
    deadline_ms: u64,
    reply: Reply,
}

struct InstanceShared {
    jobs: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    inflight: Mutex<Option<(String, Reply)>>,
    dead: AtomicBool,
    init_error: Mutex<Option<String>>,
    function_arn: String,
}

struct Instance {
    pid: Option<u32>,
    jobs: mpsc::Sender<Job>,
    shared: Arc<InstanceShared>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Instance {
    fn dead(&self) -> bool {
        self.shared.dead.load(Ordering::SeqCst)
    }
    fn kill(&self) {
        self.shared.dead.store(true, Ordering::SeqCst);
        if let Some(k) = self.kill.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = k.send(());
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
        self.server.abort();
    }
}

/// Counts for benchmarks and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub cold_starts: u64,
    pub invocations: u64,
    pub timeouts: u64,
    pub crashes: u64,
}

pub struct FunctionPool {
    spec: LaunchSpec,
    logs: Arc<LogSink>,
    idle: Mutex<Vec<Arc<Instance>>>,
    all: Mutex<Vec<std::sync::Weak<Instance>>>,
    permits: Semaphore,
    next_request: AtomicU64,
    cold_starts: AtomicU64,
    invocations: AtomicU64,
    timeouts: AtomicU64,
    crashes: AtomicU64,
    /// Process start to the first answered invocation, per cold start (ms).
    cold_start_ms: Mutex<Vec<f64>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl FunctionPool {
    pub fn new(spec: LaunchSpec, logs: Arc<LogSink>) -> Self {
        let max = spec.max_instances.max(1);
        Self {
            spec,
            logs,
            idle: Mutex::new(Vec::new()),
            all: Mutex::new(Vec::new()),
            permits: Semaphore::new(max),
            next_request: AtomicU64::new(1),
            cold_starts: AtomicU64::new(0),
            invocations: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            cold_start_ms: Mutex::new(Vec::new()),
        }
    }

    /// Every cold start so far: process start to its first answered invocation, in ms.
    pub fn cold_starts_ms(&self) -> Vec<f64> {
        self.cold_start_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn name(&self) -> &str {
        &self.spec.function
    }

    pub fn function_arn(&self) -> &str {
        &self.spec.function_arn
    }

    pub fn timeout(&self) -> Duration {
        self.spec.timeout
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
            invocations: self.invocations.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
        }
    }

    /// The process ids of the live instances (for fault tests).
    pub fn pids(&self) -> Vec<u32> {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|w| w.upgrade())
            .filter(|i| !i.dead())
            .filter_map(|i| i.pid)
            .collect()
    }

    /// Stops every instance (their processes are killed).
    pub fn shutdown(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for w in self.all.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            if let Some(i) = w.upgrade() {
                i.kill();
            }
        }
    }

    /// One synchronous invocation (Lambda's `RequestResponse`): the function's answer.
    pub async fn invoke(&self, payload: Bytes) -> Result<Bytes, InvokeError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| InvokeError::Crashed("the function pool is closed".into()))?;
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let mut cold_since = None;
        let instance = loop {
            let popped = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match popped {
                Some(i) if i.dead() => continue,
                Some(i) => break i,
                None => {
                    self.cold_starts.fetch_add(1, Ordering::Relaxed);
                    cold_since = Some(std::time::Instant::now());
                    break self.spawn().await.inspect_err(|e| {
                        self.crashes.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(function = %self.spec.function, error = %e, "{}: instance did not start: {e}", self.spec.function);
                    })?;
                }
            }
        };
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
        let (tx, rx) = oneshot::channel();
        let job = Job {
            request_id: request_id.clone(),
            payload,
            deadline_ms: now_ms() + self.spec.timeout.as_millis() as u64,
            reply: tx,
        };
        if instance.jobs.send(job).await.is_err() {
            self.crashes.fetch_add(1, Ordering::Relaxed);
            return Err(InvokeError::Crashed("the instance is gone".into()));
        }
        let outcome = match tokio::time::timeout(self.spec.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(InvokeError::Crashed(
                "the instance dropped the invocation".into(),
            )),
            Err(_) => {
                instance.kill();
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                let e = InvokeError::Timeout(self.spec.timeout);
                tracing::error!(function = %self.spec.function, %request_id, "{}: {e}; instance killed", self.spec.function);
                self.logs.line(
                    &self.spec.function,
                    &format!(
                        "{request_id} Task timed out after {:.2} seconds",
                        self.spec.timeout.as_secs_f64()
                    ),
                );
                return Err(e);
            }
        };
        if let (Some(t), Ok(_)) = (cold_since, &outcome) {
            let mut v = self.cold_start_ms.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() < 10_000 {
                v.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        match &outcome {
            Err(InvokeError::Crashed(m)) => {
                self.crashes.fetch_add(1, Ordering::Relaxed);
                instance.kill();
                tracing::error!(function = %self.spec.function, %request_id, "{}: Runtime.ExitError: {m}", self.spec.function);
            }
            _ if instance.dead() => {}
            _ => self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(instance),
        }
        outcome
    }

    /// Starts one instance: its Runtime API, then the process.
    async fn spawn(&self) -> Result<Arc<Instance>, InvokeError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| InvokeError::Crashed(format!("runtime API: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| InvokeError::Crashed(format!("runtime API: {e}")))?;
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(1);
        let shared = Arc::new(InstanceShared {
            jobs: tokio::sync::Mutex::new(jobs_rx),
            inflight: Mutex::new(None),
            dead: AtomicBool::new(false),
            init_error: Mutex::new(None),
            function_arn: self.spec.function_arn.clone(),
        });
        let server = tokio::spawn(serve_runtime_api(listener, shared.clone()));

        let (program, args): (PathBuf, Vec<String>) = match self.spec.launcher.split_first() {
            Some((first, rest)) => {
                let mut args = rest.to_vec();
                args.push(self.spec.program.display().to_string());
                (PathBuf::from(first), args)
            }
            None => (self.spec.program.clone(), Vec::new()),
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            server.abort();
            InvokeError::Crashed(format!("cannot start {}: {e}", program.display()))
        })?;
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = self.logs.clone();
            let name = self.spec.function.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    logs.line(&name, &l);
                }
            });
        }
        let pid = child.id();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let watcher_shared = shared.clone();
        let name = self.spec.function.clone();
        let logs = self.logs.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = kill_rx => {
                    let _ = child.kill().await;
                    None
                }
            };
            watcher_shared.dead.store(true, Ordering::SeqCst);
            let init = watcher_shared
                .init_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let why = match (status, init) {
                (_, Some(init)) => format!("init error: {init}"),
                (Some(s), None) => format!("the runtime exited ({s})"),
                (None, None) => "the instance was stopped".to_string(),
            };
            if status.is_some() {
                logs.line(&name, &format!("RUNTIME EXIT: {why}"));
            }
            let inflight = watcher_shared
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some((_, reply)) = inflight {
                let _ = reply.send(Err(InvokeError::Crashed(why.clone())));
            }
            // Invocations queued for this instance fail with it.
            let mut jobs = watcher_shared.jobs.lock().await;
            jobs.close();
            while let Ok(job) = jobs.try_recv() {
                let _ = job.reply.send(Err(InvokeError::Crashed(why.clone())));
            }
        });
        let instance = Arc::new(Instance {
            pid,
            jobs: jobs_tx,
            shared,
            kill: Mutex::new(Some(kill_tx)),
            server,
        });
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|w| w.strong_count() > 0);
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&instance));
        Ok(instance)
    }
}

impl Drop for FunctionPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn respond(status: u16, body: impl Into<Bytes>) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap_or_default()
}

async fn serve_runtime_api(listener: TcpListener, shared: Arc<InstanceShared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(runtime_api(shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn runtime_api(
    shared: Arc<InstanceShared>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    const BASE: &str = "/2018-06-01/runtime/";
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(BASE) else {
        return respond(
            404,
            r#"{"errorType":"NotFound","errorMessage":"unknown path"}"#,
        );
    };
    let method = req.method().clone();
    if method == hyper::Method::GET && rest == "invocation/next" {
        let job = {
            let mut jobs = shared.jobs.lock().await;
            jobs.recv().await
        };
        let Some(job) = job else {
            return respond(
                500,
                r#"{"errorType":"ServiceException","errorMessage":"stopped"}"#,
            );
        };
        *shared.inflight.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((job.request_id.clone(), job.reply));
        return hyper::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", &job.request_id)
            .header("lambda-runtime-deadline-ms", job.deadline_ms.to_string())
            .header("lambda-runtime-invoked-function-arn", &shared.function_arn)
            .header(
                "lambda-runtime-trace-id",
                format!(
                    "Root=1-00000000-{};Sampled=0",
                    &job.request_id.replace('-', "")[..24]
                ),
            )
            .body(Full::new(job.payload))
            .unwrap_or_default();
    }
    let body = match Limited::new(req.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            // Lambda refuses a response over 6 MB: the invocation fails.
            let inflight = shared
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some((_, reply)) = inflight {
                let _ = reply.send(Err(InvokeError::Function {
                    error_type: "Function.ResponseSizeTooLarge".into(),
                    message: "Response payload size exceeded maximum allowed payload size (6291556 bytes).".into(),
                }));
            }
            return respond(
                413,
                r#"{"errorType":"RequestEntityTooLarge","errorMessage":"response too large"}"#,
            );
        }
    };
    if method == hyper::Method::POST && rest == "init/error" {
        let text = String::from_utf8_lossy(&body).into_owned();
        *shared.init_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error_text(&text));
        shared.dead.store(true, Ordering::SeqCst);
        return respond(202, r#"{"status":"OK"}"#);
    }
    if method == hyper::Method::POST
        && let Some(id_and_kind) = rest.strip_prefix("invocation/")
        && let Some((id, kind)) = id_and_kind.split_once('/')
    {
        let taken = {
            let mut g = shared.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_ref() {
                Some((rid, _)) if rid == id => g.take(),
                _ => None,
            }
        };
        let Some((_, reply)) = taken else {
            return respond(
                400,
                r#"{"errorType":"InvalidRequestID","errorMessage":"no such invocation in flight"}"#,
            );
        };
        match kind {
            "response" => {
                let _ = reply.send(Ok(body));
            }
            "error" => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let _ = reply.send(Err(InvokeError::Function {
                    error_type: v["errorType"].as_str().unwrap_or("Unhandled").to_string(),
                    message: v["errorMessage"].as_str().unwrap_or_default().to_string(),
                }));
            }
            _ => {
                return respond(
                    404,
                    r#"{"errorType":"NotFound","errorMessage":"unknown path"}"#,
                );
            }
        }
        return respond(202, r#"{"status":"OK"}"#);
    }
    respond(
        404,
        r#"{"errorType":"NotFound","errorMessage":"unknown path"}"#,
    )
}

fn error_text(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => format!(
            "{}: {}",
            v["errorType"].as_str().unwrap_or("Runtime.Unknown"),
            v["errorMessage"].as_str().unwrap_or_default()
        ),
        Err(_) => body.chars().take(500).collect(),
    }
}
