//! `ctwa-load`: throughput of the local stack, driven over HTTP like a client backend
//! (loopback only; bounded in count; stops by itself).
//!
//! ```text
//! ctwa-load conversions [--state .ctwa/local.json] [--count 2000] [--concurrency 32] [--server-pid PID]
//! ctwa-load webhooks    [--state .ctwa/local.json] [--count 5000] [--concurrency 32] [--server-pid PID]
//! ctwa-load putitem     [--state .ctwa/local.json] [--count 5000] [--concurrency 32]
//! ctwa-load batch       [--state .ctwa/local.json] [--count 1000] [--meta-delay-ms 300]
//! ctwa-load report      [--state .ctwa/local.json] [--count 20]
//! ```
//! `conversions` connects the demo account (with the local.json OAuth code) if needed,
//! provisions the dataset, captures one click per customer, then sends `count`
//! conversions with unique event ids. `webhooks` posts signed Cloud API webhooks, one
//! new message each (a third with a CTWA referral). `putitem` is the baseline of
//! `webhooks`: the same inbox items (as the webhook would write them, so the same size)
//! written straight into the stack's own inbox table with the same conditional PutItem
//! (`attribute_not_exists(pk)`), at the same concurrency, so the stream and the capture
//! do the same work behind it as behind `webhooks` (a fresh table is no fair baseline:
//! DynamoDB Local writes to a table made late in its life are much slower); it needs the
//! AWS SDK environment (`.ctwa/env`). `batch` sets up like `conversions` (one customer
//! per event), has the Graph simulator answer `POST /{dataset}/events` after
//! `--meta-delay-ms`, and times one `POST /v1/conversions/batch` of `count` events end to
//! end (the client's view: API Gateway, the function's bootstrap, DynamoDB Local, the
//! simulator). With `--server-pid`, the server's CPU time (utime + stime from /proc,
//! the server and its function instances, which are its child processes)
//! per request is reported too. `report` seeds the report's month
//! (`ctwa_local::report_seed`: 3 campaigns, 10 ads, 2,000 clicks, 300 leads, 80
//! purchases, Meta's daily spend at the simulator) for the demo account, asks
//! `GET /v1/reports/ads` for it once cold (Meta asked, the days cached) and then `count`
//! times warm, one at a time, and reports the latencies. Prints one JSON line.

use ctwa_local::loadgen::{LocalState, envelope, latency_ms};
use ctwa_shared::signature::sign_meta;
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Opts {
    mode: String,
    state: String,
    count: usize,
    concurrency: usize,
    server_pid: Option<u32>,
    customers: usize,
    meta_delay_ms: u64,
}

fn parse() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .ok_or("mode: conversions | webhooks | putitem | batch | report")?;
    let mut o = Opts {
        mode,
        state: ".ctwa/local.json".into(),
        count: 2000,
        concurrency: 32,
        server_pid: None,
        customers: 200,
        meta_delay_ms: 300,
    };
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--state" => o.state = v,
            "--count" => o.count = v.parse().map_err(|_| "--count")?,
            "--concurrency" => o.concurrency = v.parse().map_err(|_| "--concurrency")?,
            "--server-pid" => o.server_pid = Some(v.parse().map_err(|_| "--server-pid")?),
            "--customers" => o.customers = v.parse().map_err(|_| "--customers")?,
            "--meta-delay-ms" => o.meta_delay_ms = v.parse().map_err(|_| "--meta-delay-ms")?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.count == 0 || o.count > 1_000_000 || o.concurrency == 0 || o.concurrency > 1024 {
        return Err("count 1..=1000000, concurrency 1..=1024".into());
    }
    if o.mode == "batch" {
        // One customer per event; Meta's limit per request.
        o.customers = o.count;
        if o.count > 1000 {
            return Err("batch: count 1..=1000 (Meta's limit per request)".into());
        }
    }
    Ok(o)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
/// (parent pid, utime + stime) of a process.
fn proc_ticks(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some((
        f.get(1)?.parse().ok()?,
        f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    ))
}

/// CPU ticks of the server and of its live children (the local stack runs each function
/// instance as a child process).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let mut total = proc_ticks(pid)?.1;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
            && let Some((ppid, t)) = proc_ticks(child)
            && ppid == pid
        {
            total += t;
        }
    }
    Some(total)
}

fn webhook(pnid: &str, wamid: &str, phone: &str, clid: Option<&str>, ts: i64) -> String {
    let mut m = json!({"from": phone, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": "hi"}});
    if let Some(c) = clid {
        m["referral"] = json!({"source_url": "https://fb.me/x", "source_id": "120226305854810726", "source_type": "ad",
            "headline": "Chat with us", "body": "Offer", "media_type": "image", "image_url": "https://img", "ctwa_clid": c});
    }
    envelope(json!({
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "Load"}, "wa_id": phone}], "messages": [m]}))
}

async fn run_load<F, Fut>(count: usize, concurrency: usize, f: F) -> (Duration, Vec<f64>, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (f, next) = (f.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t = Instant::now();
                if !f(i).await {
                    errors += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_by(|a, b| a.total_cmp(b));
    (started.elapsed(), all, errors)
}

/// `GET {url}` with the API key; its JSON body.
async fn get_json(http: &reqwest::Client, url: String, key: &str) -> Result<Value, String> {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

async fn main_inner(o: Opts) -> Result<Value, String> {
    let state = LocalState::read(&o.state)?;
    let (base, key, secret, pnid) = (
        state.get("base_url")?,
        state.get("api_key")?,
        state.get("app_secret")?,
        state.get("phone_number_id")?,
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let run_id = ctwa_shared::time::now_millis();
    let post_hook = {
        let (http, base, secret) = (http.clone(), base.clone(), secret.clone());
        move |body: String| {
            let (http, base) = (http.clone(), base.clone());
            let sig = sign_meta(&secret, body.as_bytes());
            async move {
                http.post(format!("{base}/webhook"))
                    .header("x-hub-signature-256", sig)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }
    };
    let cpu_before = o.server_pid.and_then(cpu_ticks);
    let (elapsed, lat, errors) = match o.mode.as_str() {
        "putitem" => {
            let inbox = state.get("inbox_table")?;
            return putitem(&o, &inbox, &pnid, run_id).await;
        }
        "webhooks" => {
            let pnid = pnid.clone();
            run_load(o.count, o.concurrency, move |i| {
                let ts = ctwa_shared::time::now_secs();
                let clid = (i % 3 == 0).then(|| format!("LOAD-{run_id}-{i}"));
                post_hook(webhook(
                    &pnid,
                    &format!("wamid.load.{run_id}.{i}"),
                    &format!("1555{:07}", i % 5000),
                    clid.as_deref(),
                    ts,
                ))
            })
            .await
        }
        "batch" => {
            setup_customers(&http, &base, &key, &state, o.customers, run_id, &post_hook).await?;
            return batch(&o, &http, &state, run_id).await;
        }
        "report" => {
            // Connects the demo account (one customer is enough).
            setup_customers(&http, &base, &key, &state, 1, run_id, &post_hook).await?;
            return report_month(&o, &http, &state).await;
        }
        "conversions" => {
            setup_customers(&http, &base, &key, &state, o.customers, run_id, &post_hook).await?;
            let cpu_setup = o.server_pid.and_then(cpu_ticks);
            let customers = o.customers;
            let (http2, base2, key2) = (http.clone(), base.clone(), key.clone());
            let out = run_load(o.count, o.concurrency, move |i| {
                let (http, base, key) = (http2.clone(), base2.clone(), key2.clone());
                async move {
                    let body = json!({"phone": format!("+1666{:07}", i % customers), "event_name": "Purchase", "currency": "USD",
                        "value": 10 + i % 90, "event_id": format!("load-{run_id}-{i}")});
                    http.post(format!("{base}/v1/conversions")).bearer_auth(&key).json(&body).send().await
                        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
                }
            })
            .await;
            // CPU is counted from after the setup.
            return Ok(report(&o, out, cpu_setup));
        }
        other => return Err(format!("unknown mode {other}")),
    };
    Ok(report(&o, (elapsed, lat, errors), cpu_before))
}

/// Connects the demo account (with the local.json OAuth code) if needed, provisions the
/// dataset, and captures one click for each of `customers` customers (`+1666…`).
async fn setup_customers<F, Fut>(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    state: &LocalState,
    customers: usize,
    run_id: i64,
    post_hook: &F,
) -> Result<(), String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let pnid = state.get("phone_number_id")?;
    // Connect and provision once.
    let status = get_json(http, format!("{base}/v1/status"), key).await?;
    if status["connected"] != true {
        let code = state.get("oauth_code")?;
        let r = http
            .post(format!("{base}/v1/oauth/exchange-code"))
            .bearer_auth(key)
            .json(&json!({"code": code}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!(
                "exchange-code: {}",
                r.text().await.unwrap_or_default()
            ));
        }
    }
    let r = http
        .post(format!("{base}/v1/dataset"))
        .bearer_auth(key)
        .json(&json!({}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("dataset: {}", r.text().await.unwrap_or_default()));
    }
    // One click per customer.
    let ts = ctwa_shared::time::now_secs() - 60;
    for c in 0..customers {
        let ok = post_hook(webhook(
            &pnid,
            &format!("wamid.setup.{run_id}.{c}"),
            &format!("1666{c:07}"),
            Some(&format!("CLID-{run_id}-{c}")),
            ts,
        ))
        .await;
        if !ok {
            return Err("posting the setup webhooks failed".into());
        }
    }
    let last = format!("1666{:07}", customers - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(http, format!("{base}/v1/conversations?phone={last}"), key).await?;
        if v["conversations"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            return Err("clicks were not captured within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The seeded month's report, once cold and `count` times warm.
async fn report_month(
    o: &Opts,
    http: &reqwest::Client,
    state: &LocalState,
) -> Result<Value, String> {
    use ctwa_local::report_seed::{self, AD_ACCOUNT, SINCE, UNTIL};
    use ctwa_shared::store::{AdAccountLink, AdInventory};
    let (base, key) = (state.get("base_url")?, state.get("api_key")?);
    let (sim, account) = (
        state.get("graph_sim_control_url")?,
        state.get("account_id")?,
    );
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let data = ctwa_shared::store::dynamo::DynamoData::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        state.get("data_table")?,
    );
    data.link_ad_account(&AdAccountLink {
        ad_account_id: AD_ACCOUNT.into(),
        account_id: account.clone(),
        page_id: None,
        linked_at_ms: 0,
    })
    .await
    .map_err(|e| e.to_string())?;
    let seeding = Instant::now();
    let mut expected = report_seed::seed_activity(&data, &account, &state.get("phone_number_id")?)
        .await
        .map_err(|e| e.to_string())?;
    for (path, body) in [
        ("ad_accounts", report_seed::sim_ad_account()),
        ("insights", report_seed::sim_insights(&mut expected)),
    ] {
        let r = http
            .post(format!("{sim}/{path}"))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!(
                "simulator {path}: {}",
                r.text().await.unwrap_or_default()
            ));
        }
    }
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let url = format!(
        "{base}/v1/reports/ads?since={SINCE}&until={UNTIL}&level=ad&ad_account_id={AD_ACCOUNT}"
    );
    let once = |url: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let t = Instant::now();
            let r = http
                .get(url)
                .bearer_auth(&key)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!("the report answered {status}: {v}"));
            }
            Ok::<_, String>((t.elapsed().as_secs_f64() * 1000.0, v))
        }
    };
    let (cold_ms, v) = once(url.clone()).await?;
    let mut warm = Vec::new();
    for _ in 0..o.count {
        warm.push(once(url.clone()).await?.0);
    }
    warm.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| warm[((warm.len() as f64 - 1.0) * p).round() as usize];
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    Ok(json!({
        "mode": "report",
        "rows": v["rows"].as_array().map(Vec::len),
        "clicks": v["totals"]["clicks"],
        "leads": v["totals"]["leads"],
        "purchases": v["totals"]["purchases"],
        "seed_seconds": r1(seed_seconds),
        "cold_ms": r1(cold_ms),
        "warm_count": warm.len(),
        "warm_median_ms": r1(pct(0.5)),
        "warm_p95_ms": r1(pct(0.95)),
        "warm_max_ms": r1(*warm.last().unwrap_or(&0.0)),
    }))
}

/// One batch of `count` conversions (one per customer) timed end to end, Meta (the
/// simulator) answering after `meta_delay_ms`.
async fn batch(
    o: &Opts,
    http: &reqwest::Client,
    state: &LocalState,
    run_id: i64,
) -> Result<Value, String> {
    let (base, key) = (state.get("base_url")?, state.get("api_key")?);
    let sim = state.get("graph_sim_control_url")?;
    let fault =
        json!({"path": "/events", "status": 200, "delay_ms": o.meta_delay_ms, "times": 1000});
    let r = http
        .post(format!("{sim}/faults"))
        .json(&fault)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!(
            "simulator fault: {}",
            r.text().await.unwrap_or_default()
        ));
    }
    let events: Vec<Value> = (0..o.count)
        .map(|i| {
            json!({"phone": format!("+1666{i:07}"), "event_name": "Purchase", "currency": "USD",
                "value": 10 + i % 90, "event_id": format!("batch-{run_id}-{i}")})
        })
        .collect();
    let started = Instant::now();
    let answer = http
        .post(format!("{base}/v1/conversions/batch"))
        .bearer_auth(&key)
        .timeout(Duration::from_secs(120))
        .json(&json!({"events": events}))
        .send()
        .await;
    let (status, body) = match answer {
        Ok(r) => (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        ),
        Err(e) => return Err(format!("the batch got no answer: {e}")),
    };
    let seconds = started.elapsed().as_secs_f64();
    let _ = http.post(format!("{sim}/faults/clear")).send().await;
    Ok(json!({
        "mode": "batch",
        "count": o.count,
        "meta_delay_ms": o.meta_delay_ms,
        "http_status": status,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "delivered": body["delivered"],
        "unknown": body["unknown"],
        "total": body["total"],
    }))
}

/// The inbox item a webhook's message becomes (same attributes, same size).
fn inbox_item(body: &str) -> Result<ctwa_shared::store::dynamo::Item, String> {
    let now = ctwa_shared::time::now_millis();
    let parsed =
        ctwa_shared::meta::webhook::parse_cloud_webhook(body.as_bytes(), now, now / 1000 + 86_400)
            .map_err(|e| e.to_string())?;
    let item = parsed.items.first().ok_or("the webhook has no message")?;
    Ok(ctwa_shared::store::dynamo::inbox_item_to_attrs(item))
}

/// Raw conditional PutItem throughput of the same DynamoDB Local, into the stack's inbox.
async fn putitem(o: &Opts, inbox: &str, pnid: &str, run_id: i64) -> Result<Value, String> {
    let sdk = ctwa_shared::config::aws_sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = inbox.to_string();
    client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .map_err(|e| {
            format!(
                "{table}: {} (is AWS_ENDPOINT_URL_DYNAMODB the stack's? source .ctwa/env)",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )
        })?;
    // Items made up front, like the webhook bodies are made by the webhook mode's workers.
    let mut items = Vec::with_capacity(o.count);
    for i in 0..o.count {
        let clid = (i % 3 == 0).then(|| format!("LOAD-{run_id}-{i}"));
        items.push(inbox_item(&webhook(
            pnid,
            &format!("wamid.raw.{run_id}.{i}"),
            &format!("1555{:07}", i % 5000),
            clid.as_deref(),
            ctwa_shared::time::now_secs(),
        ))?);
    }
    let items = Arc::new(items);
    let (c, t) = (client.clone(), table.clone());
    let out = run_load(o.count, o.concurrency, move |i| {
        let (c, t, items) = (c.clone(), t.clone(), items.clone());
        async move {
            c.put_item()
                .table_name(&t)
                .set_item(Some(items[i].clone()))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await
                .is_ok()
        }
    })
    .await;
    Ok(report(o, out, None))
}

fn report(
    o: &Opts,
    (elapsed, lat, errors): (Duration, Vec<f64>, usize),
    cpu_before: Option<u64>,
) -> Value {
    let cpu_after = o.server_pid.and_then(cpu_ticks);
    let cpu_ms_per_req = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => {
            Some(((b - a) as f64 * 10.0 / o.count as f64 * 1000.0).round() / 1000.0)
        }
        _ => None,
    };
    json!({
        "mode": o.mode,
        "count": o.count,
        "concurrency": o.concurrency,
        "errors": errors,
        "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "per_second": ((o.count as f64 / elapsed.as_secs_f64()) * 10.0).round() / 10.0,
        "latency_ms": latency_ms(&lat),
        "server_cpu_ms_per_request": cpu_ms_per_req,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "ctwa-load: {e}\nusage: ctwa-load conversions|webhooks|putitem|batch [--state F] [--count N] [--concurrency C] [--server-pid PID] [--customers K] [--meta-delay-ms MS]"
            );
            return ExitCode::from(2);
        }
    };
    match main_inner(o).await {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctwa-load: {e}");
            ExitCode::FAILURE
        }
    }
}
