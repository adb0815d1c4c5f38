//! `ctwa-coldstart`: cold start of a Lambda bootstrap, measured with the real runtime
//! client against a local Lambda Runtime API: from process start to the first answered
//! invocation, plus the process's peak resident memory (VmHWM) at that point.
//!
//! ```text
//! ctwa-coldstart --bin target/release/webhook --event events/aws/apigw-webhook-verify.json \
//!                [--runs 20] [--env KEY=VALUE]...
//! ```
//! Prints one JSON line: median / p90 / min / max milliseconds, peak RSS and the answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Default)]
struct Run {
    event: Bytes,
    served: bool,
    answered_at: Option<Instant>,
    answer: Option<String>,
}

struct RuntimeApi {
    run: Mutex<Run>,
    answered: Notify,
}

async fn serve_one(
    api: Arc<RuntimeApi>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if req.method() == hyper::Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        let event = {
            let mut run = api.run.lock().unwrap_or_else(|p| p.into_inner());
            if run.served {
                None
            } else {
                run.served = true;
                Some(run.event.clone())
            }
        };
        let Some(event) = event else {
            // Later polls wait forever, like an idle Lambda environment.
            std::future::pending::<()>().await;
            unreachable!()
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            + 10_000;
        return hyper::Response::builder()
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", "coldstart-1")
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:coldstart",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000",
            )
            .body(Full::new(event))
            .unwrap_or_default();
    }
    if req.method() == hyper::Method::POST
        && (path.ends_with("/response") || path.ends_with("/error"))
    {
        let at = Instant::now();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut run = api.run.lock().unwrap_or_else(|p| p.into_inner());
        run.answered_at = Some(at);
        let kind = if path.ends_with("/error") {
            "error: "
        } else {
            ""
        };
        run.answer = Some(format!("{kind}{}", String::from_utf8_lossy(&body)));
        drop(run);
        api.answered.notify_one();
        return hyper::Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default();
    }
    hyper::Response::builder()
        .status(404)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut bin = None;
    let mut event_file = None;
    let mut runs = 20usize;
    let mut envs: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--bin", Some(v)) => bin = Some(v),
            ("--event", Some(v)) => event_file = Some(v),
            ("--runs", Some(v)) => runs = v.parse().unwrap_or(20),
            ("--env", Some(v)) => {
                if let Some((k, val)) = v.split_once('=') {
                    envs.push((k.into(), val.into()));
                }
            }
            _ => {
                eprintln!(
                    "usage: ctwa-coldstart --bin PATH --event FILE [--runs N] [--env K=V]..."
                );
                return ExitCode::from(2);
            }
        }
    }
    let (Some(bin), Some(event_file)) = (bin, event_file) else {
        eprintln!("--bin and --event are required");
        return ExitCode::from(2);
    };
    let event = match std::fs::read(&event_file) {
        Ok(e) => Bytes::from(e),
        Err(e) => {
            eprintln!("{event_file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut times = Vec::new();
    let mut peak = 0u64;
    let mut answer = String::new();
    for _ in 0..runs {
        let api = Arc::new(RuntimeApi {
            run: Mutex::new(Run {
                event: event.clone(),
                ..Default::default()
            }),
            answered: Notify::new(),
        });
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bind: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().expect("bound");
        let server_api = api.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let api = server_api.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, std::convert::Infallible>(serve_one(api, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let started = Instant::now();
        let mut cmd = std::process::Command::new(&bin);
        cmd.env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "coldstart")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
            .env("_HANDLER", "bootstrap")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in &envs {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{bin}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let waited = tokio::time::timeout(Duration::from_secs(10), api.answered.notified()).await;
        let pid = child.id();
        peak = peak.max(peak_rss_kb(pid).unwrap_or(0));
        let _ = child.kill();
        let _ = child.wait();
        server.abort();
        if waited.is_err() {
            eprintln!("{bin}: no answer within 10 s");
            return ExitCode::FAILURE;
        }
        let run = api.run.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = run.answered_at {
            times.push(at.duration_since(started).as_secs_f64() * 1000.0);
        }
        answer = run.answer.clone().unwrap_or_default();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    if times.is_empty() {
        eprintln!("no run answered");
        return ExitCode::FAILURE;
    }
    let answer: String = answer.chars().take(160).collect();
    println!(
        "{}",
        serde_json::json!({
            "bin": bin,
            "event": event_file,
            "runs": times.len(),
            "cold_start_ms": {
                "median": (percentile(&times, 0.5) * 100.0).round() / 100.0,
                "p90": (percentile(&times, 0.9) * 100.0).round() / 100.0,
                "min": (times[0] * 100.0).round() / 100.0,
                "max": (times[times.len() - 1] * 100.0).round() / 100.0,
            },
            "peak_rss_kb": peak,
            "answer": answer,
        })
    );
    ExitCode::SUCCESS
}
