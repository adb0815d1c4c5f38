//! `ctwa-coldstart`: a Lambda bootstrap run with the real runtime client against a local
//! Lambda Runtime API. Measures the cold start (process start to the first answered
//! invocation) and, with `--invocations N`, keeps the same process answering N
//! invocations (a warm environment under load) and reads its peak resident memory
//! (VmHWM from /proc) at the end.
//!
//! ```text
//! ctwa-coldstart --bin target/release/webhook --event events/aws/apigw-webhook-verify.json \
//!                [--runs 20] [--invocations 1] [--env KEY=VALUE]...
//!                [--vary webhook --app-secret S | --vary stream [--batch 100]] [--bearer KEY]
//! ```
//! `--vary` makes every invocation a different realistic event instead of the same one:
//! `webhook` (an API Gateway event with a Cloud API webhook body): a new message id per
//! invocation, 500 customers, 30% with a CTWA referral (its own click id), re-signed
//! with the app secret; `stream` (a DynamoDB stream event): `--batch` records per
//! invocation, each a new inbox item (same mix). `--bearer` puts a real API key in an
//! API Gateway event's `authorization` header (the request then does its real work, not
//! a 401). Prints one JSON line: cold start median / p90 / min / max ms, warm invocation
//! p50 / p99 ms, errors (error answers, 5xx, reported batch failures), peak RSS and the
//! first answer.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How the events of one run are made.
#[derive(Clone)]
enum Vary {
    /// The same event every time.
    Same,
    Webhook {
        app_secret: String,
    },
    Stream {
        batch: usize,
    },
}

const CUSTOMERS: usize = 500;

fn customer(k: usize) -> String {
    format!("1650{:07}", k % CUSTOMERS)
}

/// A Cloud API webhook message varied for invocation `k`: its own id and customer, a
/// referral (with its own click id) for 30% of them.
fn vary_message(m: &mut Value, k: usize, tag: &str) {
    if let Some(id) = m["id"].as_str() {
        m["id"] = json!(format!("{id}.{tag}{k}"));
    }
    m["from"] = json!(customer(k));
    if k % 10 < 3 {
        if let Some(clid) = m["referral"]["ctwa_clid"].as_str() {
            m["referral"]["ctwa_clid"] = json!(format!("{clid}.{tag}{k}"));
        }
    } else if let Some(obj) = m.as_object_mut() {
        obj.remove("referral");
    }
}

fn make_event(template: &Value, vary: &Vary, i: usize, tag: &str) -> Result<Bytes, String> {
    match vary {
        Vary::Same => Ok(Bytes::from(template.to_string())),
        Vary::Webhook { app_secret } => {
            let mut ev = template.clone();
            let b64 = ev["isBase64Encoded"] == true;
            let raw = ev["body"].as_str().ok_or("the event has no body")?;
            let raw = if b64 {
                base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .map_err(|e| format!("body: {e}"))?
            } else {
                raw.as_bytes().to_vec()
            };
            let mut body: Value = serde_json::from_slice(&raw).map_err(|e| format!("body: {e}"))?;
            let value = &mut body["entry"][0]["changes"][0]["value"];
            if let Some(msgs) = value["messages"].as_array_mut() {
                for m in msgs {
                    vary_message(m, i, tag);
                }
            }
            if let Some(c) = value["contacts"].as_array_mut().and_then(|c| c.first_mut()) {
                c["wa_id"] = json!(customer(i));
            }
            let body = body.to_string();
            let sig = ctwa_shared::signature::sign_meta(app_secret, body.as_bytes());
            ev["headers"]["x-hub-signature-256"] = json!(sig);
            ev["headers"]["content-length"] = json!(body.len().to_string());
            ev["body"] = json!(if b64 {
                base64::engine::general_purpose::STANDARD.encode(body.as_bytes())
            } else {
                body
            });
            Ok(Bytes::from(ev.to_string()))
        }
        Vary::Stream { batch } => {
            let rec = &template["Records"][0];
            let mut records = Vec::with_capacity(*batch);
            for r in 0..*batch {
                let k = i * batch + r;
                let mut rec = rec.clone();
                let d = &mut rec["dynamodb"];
                let pk = d["NewImage"]["pk"]["S"].as_str().ok_or("no NewImage.pk")?;
                let pk = format!("{pk}.{tag}{k}");
                d["Keys"]["pk"]["S"] = json!(pk);
                d["NewImage"]["pk"]["S"] = json!(pk);
                let payload = d["NewImage"]["payload"]["S"].as_str().ok_or("no payload")?;
                let mut m: Value =
                    serde_json::from_str(payload).map_err(|e| format!("payload: {e}"))?;
                vary_message(&mut m, k, tag);
                d["NewImage"]["payload"]["S"] = json!(m.to_string());
                if let Some(c) = d["NewImage"]["contact"]["S"].as_str() {
                    let mut c: Value =
                        serde_json::from_str(c).map_err(|e| format!("contact: {e}"))?;
                    c["wa_id"] = json!(customer(k));
                    if let Some(o) = c.as_object_mut() {
                        o.remove("user_id");
                    }
                    d["NewImage"]["contact"]["S"] = json!(c.to_string());
                }
                d["SequenceNumber"] = json!(format!("{:028}", 10_000_000_000u64 + k as u64));
                rec["eventID"] = json!(format!("{k:032x}"));
                records.push(rec);
            }
            Ok(Bytes::from(json!({ "Records": records }).to_string()))
        }
    }
}

/// Replaces the API key of an API Gateway event.
fn with_bearer(event: Bytes, key: Option<&str>) -> Result<Bytes, String> {
    let Some(key) = key else { return Ok(event) };
    let mut v: Value = serde_json::from_slice(&event).map_err(|e| e.to_string())?;
    if v["headers"].is_object() {
        v["headers"]["authorization"] = json!(format!("Bearer {key}"));
    }
    Ok(Bytes::from(v.to_string()))
}

struct Run {
    template: Value,
    bearer: Option<String>,
    vary: Vary,
    tag: String,
    total: usize,
    next: usize,
    served_at: Vec<Option<Instant>>,
    answered: usize,
    errors: usize,
    first_answer_at: Option<Instant>,
    first_answer: Option<String>,
    last_error: Option<String>,
    warm_ms: Vec<f64>,
    build_error: Option<String>,
}

struct RuntimeApi {
    run: Mutex<Run>,
    done: Notify,
}

fn lock(api: &RuntimeApi) -> std::sync::MutexGuard<'_, Run> {
    api.run.lock().unwrap_or_else(|p| p.into_inner())
}

fn empty(status: u16) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

async fn serve_one(
    api: Arc<RuntimeApi>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if req.method() == hyper::Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        let next = {
            let mut run = lock(&api);
            if run.next >= run.total {
                None
            } else {
                let i = run.next;
                run.next += 1;
                let made = make_event(&run.template, &run.vary, i, &run.tag)
                    .and_then(|ev| with_bearer(ev, run.bearer.as_deref()));
                match made {
                    Ok(ev) => {
                        run.served_at[i] = Some(Instant::now());
                        Some((i, ev))
                    }
                    Err(e) => {
                        run.build_error = Some(e);
                        drop(run);
                        api.done.notify_one();
                        None
                    }
                }
            }
        };
        let Some((i, event)) = next else {
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
            .header("lambda-runtime-aws-request-id", format!("inv-{i}"))
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
    // /2018-06-01/runtime/invocation/inv-{i}/response | /error
    let invocation = path
        .strip_prefix("/2018-06-01/runtime/invocation/inv-")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(i, kind)| Some((i.parse::<usize>().ok()?, kind == "error")));
    if req.method() == hyper::Method::POST
        && let Some((i, is_error)) = invocation
    {
        let at = Instant::now();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut run = lock(&api);
        if run.first_answer_at.is_none() {
            run.first_answer_at = Some(at);
            let kind = if is_error { "error: " } else { "" };
            run.first_answer = Some(format!("{kind}{text}"));
        } else if let Some(Some(served)) = run.served_at.get(i) {
            let ms = at.duration_since(*served).as_secs_f64() * 1000.0;
            run.warm_ms.push(ms);
        }
        // An answered error, or an HTTP answer with a 5xx status code.
        let failed = is_error
            || serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["statusCode"].as_u64())
                .is_some_and(|s| s >= 500);
        let partial = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["batchItemFailures"].as_array().map(|a| !a.is_empty()))
            .unwrap_or(false);
        if failed || partial {
            run.errors += 1;
            run.last_error = Some(text.chars().take(300).collect());
        }
        run.answered += 1;
        let finished = run.answered >= run.total;
        drop(run);
        if finished {
            api.done.notify_one();
        }
        return empty(202);
    }
    empty(404)
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
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i.min(sorted.len() - 1)] * 100.0).round() / 100.0
}

struct Opts {
    bin: String,
    event_file: String,
    runs: usize,
    invocations: usize,
    envs: Vec<(String, String)>,
    vary: Vary,
    bearer: Option<String>,
}

fn parse() -> Result<Opts, String> {
    let (mut bin, mut event_file) = (None, None);
    let (mut runs, mut invocations, mut batch) = (20usize, 1usize, 100usize);
    let (mut vary, mut app_secret, mut bearer) = (None::<String>, None::<String>, None);
    let mut envs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        let num = |name: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{name}: a positive number"))
        };
        match a.as_str() {
            "--bin" => bin = Some(v),
            "--event" => event_file = Some(v),
            "--runs" => runs = num("--runs")?,
            "--invocations" => invocations = num("--invocations")?,
            "--batch" => batch = num("--batch")?,
            "--vary" => vary = Some(v),
            "--app-secret" => app_secret = Some(v),
            "--bearer" => bearer = Some(v),
            "--env" => {
                let (k, val) = v.split_once('=').ok_or("--env KEY=VALUE")?;
                envs.push((k.to_string(), val.to_string()));
            }
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let vary = match vary.as_deref() {
        None => Vary::Same,
        Some("webhook") => Vary::Webhook {
            app_secret: app_secret.ok_or("--vary webhook needs --app-secret")?,
        },
        Some("stream") => Vary::Stream { batch },
        Some(other) => return Err(format!("--vary {other}: webhook or stream")),
    };
    Ok(Opts {
        bin: bin.ok_or("--bin is required")?,
        event_file: event_file.ok_or("--event is required")?,
        runs,
        invocations,
        envs,
        vary,
        bearer,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "ctwa-coldstart: {e}\nusage: ctwa-coldstart --bin PATH --event FILE [--runs N] [--invocations N] [--env K=V]... [--vary webhook --app-secret S | --vary stream [--batch N]] [--bearer KEY]"
            );
            return ExitCode::from(2);
        }
    };
    let template: Value = match std::fs::read(&o.event_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}: {e}", o.event_file);
            return ExitCode::FAILURE;
        }
    };
    let bin = o.bin.clone();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut peak = 0u64;
    let mut errors = 0usize;
    let mut answer = String::new();
    let mut last_error = None;
    let mut load_seconds = 0.0;
    let stamp = ctwa_shared::time::now_millis();
    for r in 0..o.runs {
        let api = Arc::new(RuntimeApi {
            run: Mutex::new(Run {
                template: template.clone(),
                bearer: o.bearer.clone(),
                vary: o.vary.clone(),
                // Every run's events are new items (ids carry the run and the time).
                tag: format!("cs{stamp}r{r}i"),
                total: o.invocations,
                next: 0,
                served_at: vec![None; o.invocations],
                answered: 0,
                errors: 0,
                first_answer_at: None,
                first_answer: None,
                last_error: None,
                warm_ms: Vec::new(),
                build_error: None,
            }),
            done: Notify::new(),
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
        for (k, v) in &o.envs {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{bin}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // 10 s for the cold start, plus 100 ms per further invocation and 5 ms per record.
        let records = match o.vary {
            Vary::Stream { batch } => batch,
            _ => 1,
        };
        let per_invocation = Duration::from_millis(100 + 5 * records as u64);
        let limit = Duration::from_secs(10) + per_invocation * (o.invocations as u32);
        let waited = tokio::time::timeout(limit, api.done.notified()).await;
        let pid = child.id();
        peak = peak.max(peak_rss_kb(pid).unwrap_or(0));
        let _ = child.kill();
        let _ = child.wait();
        server.abort();
        let run = lock(&api);
        if let Some(e) = &run.build_error {
            eprintln!("{}: {e}", o.event_file);
            return ExitCode::FAILURE;
        }
        if waited.is_err() {
            eprintln!(
                "{bin}: {} of {} invocations answered within {limit:?}",
                run.answered, run.total
            );
            return ExitCode::FAILURE;
        }
        if let Some(at) = run.first_answer_at {
            cold.push(at.duration_since(started).as_secs_f64() * 1000.0);
            load_seconds = started.elapsed().as_secs_f64();
        }
        warm.extend(run.warm_ms.iter().copied());
        errors += run.errors;
        if run.last_error.is_some() {
            last_error.clone_from(&run.last_error);
        }
        answer = run.first_answer.clone().unwrap_or_default();
    }
    cold.sort_by(|a, b| a.total_cmp(b));
    warm.sort_by(|a, b| a.total_cmp(b));
    if cold.is_empty() {
        eprintln!("no run answered");
        return ExitCode::FAILURE;
    }
    let answer: String = answer.chars().take(160).collect();
    println!(
        "{}",
        json!({
            "bin": bin,
            "event": o.event_file,
            "runs": cold.len(),
            "invocations_per_run": o.invocations,
            "cold_start_ms": {
                "median": percentile(&cold, 0.5),
                "p90": percentile(&cold, 0.9),
                "min": percentile(&cold, 0.0),
                "max": percentile(&cold, 1.0),
            },
            "warm_ms": {"p50": percentile(&warm, 0.5), "p99": percentile(&warm, 0.99), "max": percentile(&warm, 1.0)},
            "last_run_seconds": (load_seconds * 1000.0).round() / 1000.0,
            "errors": errors,
            "last_error": last_error,
            "peak_rss_kb": peak,
            "answer": answer,
        })
    );
    ExitCode::SUCCESS
}
