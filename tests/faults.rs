//! Fault tests: the capture consumer killed in the middle of a batch and restarted;
//! DynamoDB throttling and 5xx between the stack and DynamoDB Local; the Graph API
//! failing in every way the simulator can. In each, nothing may be lost and nothing may
//! happen twice.

use ctwa_local::Clients;
use ctwa_local::loadgen;
use ctwa_local::stream::StreamFeeder;
use ctwa_shared::capi::resend_due;
use ctwa_shared::capture::CaptureDeps;
use ctwa_shared::store::dynamo::DynamoData;
use ctwa_tests::fault_proxy::{
    FaultConfig, FaultProxy, spawn_app_through, spawn_app_with_graph_proxy,
};
use ctwa_tests::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn dynamodb_url() -> String {
    require_local_env();
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("AWS_ENDPOINT_URL_DYNAMODB")
}

fn target_of(app: &TestApp, data_table: &str) -> loadgen::Target {
    loadgen::Target {
        base_url: app.base.clone(),
        app_secret: app.cfg.app_secret.clone(),
        inbox_table: app.cfg.inbox_table.clone(),
        data_table: data_table.to_string(),
        // Straight to DynamoDB Local: the test's own reads never see a fault.
        dynamodb: app.clients.dynamodb.clone(),
    }
}

// ------------------------------------------------------------------ capture killed

const FEEDER_INBOX: &str = "CTWA_FAULTS_FEEDER_INBOX";
const FEEDER_DATA: &str = "CTWA_FAULTS_FEEDER_DATA";

/// The capture consumer as its own process: the stream feeder and the capture handler
/// of the local run, reading `$CTWA_FAULTS_FEEDER_INBOX`'s stream from its start and
/// writing to `$CTWA_FAULTS_FEEDER_DATA`. Started (and SIGKILLed) by
/// `capture_consumer_killed_mid_batch_and_restarted_loses_nothing_and_duplicates_nothing`;
/// without those variables it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process, started by the capture fault test"]
async fn feeder_child_process() {
    let (Ok(inbox), Ok(data_table)) = (std::env::var(FEEDER_INBOX), std::env::var(FEEDER_DATA))
    else {
        return;
    };
    require_local_env();
    let clients = Clients::from_env().await;
    let data = Arc::new(DynamoData::new(clients.dynamodb.clone(), data_table));
    let deps = Arc::new(CaptureDeps::new(data.clone(), data));
    let feeder = StreamFeeder::in_process(
        clients.dynamodb.clone(),
        clients.streams.clone(),
        inbox,
        deps,
    )
    .await
    .expect("inbox stream");
    let (_keep, rx) = tokio::sync::watch::channel(false);
    let parent = std::os::unix::process::parent_id();
    // Never outlives the test: ends when its parent is gone, or after three minutes.
    let orphaned = async {
        while std::os::unix::process::parent_id() == parent {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = feeder.run(rx) => {}
        _ = orphaned => {}
        _ = tokio::time::sleep(Duration::from_secs(180)) => {}
    }
}

/// A child process killed (SIGKILL) when dropped.
struct Consumer(std::process::Child);

impl Consumer {
    fn spawn(inbox: &str, data: &str, dynamodb_endpoint: &str) -> Consumer {
        let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "feeder_child_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(FEEDER_INBOX, inbox)
            .env(FEEDER_DATA, data)
            // The capture's reads and writes go through `dynamodb_endpoint`; the stream
            // is read straight from DynamoDB Local.
            .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint)
            .env("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", dynamodb_url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("consumer process starts");
        Consumer(child)
    }

    fn kill(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the proxy holds a consumer's write: it is frozen inside a batch.
async fn frozen_mid_batch(proxy: &FaultProxy) {
    eventually(
        "the consumer is stuck inside a batch (a write held)",
        Duration::from_secs(60),
        || async { (proxy.stats().held > 0).then_some(()) },
    )
    .await;
    // Let the batch's other concurrent writes reach the proxy too.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_consumer_killed_mid_batch_and_restarted_loses_nothing_and_duplicates_nothing() {
    // The webhook side is the local stack. Its own in-process feeder captures into its
    // own data table, where the load's phone number ids belong to no account (they are
    // only kept there as unrouted); the load's accounts live in `data`, which only the
    // killable consumer process writes to.
    let app = spawn_app().await;
    let data = unique("data");
    ctwa_shared::tables::create_data_table(&app.clients.dynamodb, &data)
        .await
        .expect("data table");
    let target = target_of(&app, &data);
    let mut plan = loadgen::Plan::new(600);
    plan.accounts = 2;
    plan.customers = 25;
    plan.concurrency = 8;
    let w = Arc::new(loadgen::Workload::generate(&plan, &target.app_secret));
    w.setup_accounts(&target).await.expect("accounts");
    let deadline = Instant::now() + Duration::from_secs(150);
    let half = w.sends() / 2;
    let first = w.post(&target, 0..half, 8, deadline, false).await;

    // 1. The consumer writes 40 times, then every write hangs: it is in the middle of a
    //    batch (the handler awaits those writes) when it is killed.
    let upstream = dynamodb_url();
    let gate = FaultProxy::start(&upstream).await;
    gate.set(FaultConfig {
        hold_after: Some(40),
        ..FaultConfig::ops(&["PutItem", "UpdateItem"])
    });
    let consumer = Consumer::spawn(&app.cfg.inbox_table, &data, &gate.url());
    frozen_mid_batch(&gate).await;
    consumer.kill();
    let stats = gate.stats();
    assert_eq!(
        stats.forwarded - (stats.requests - stats.matched),
        40,
        "{stats:?}"
    );
    let at_kill = w.account(&target, None).await.expect("accounting");
    assert!(
        at_kill.lost() > 0,
        "killed before the end: {:?}",
        at_kill.to_json()
    );

    // 2. More webhooks while no consumer runs; a second consumer is killed mid-batch
    //    further on (it starts again from the stream's trim horizon).
    let second = w.post(&target, half..w.sends(), 8, deadline, false).await;
    gate.set(FaultConfig {
        hold_after: Some(300),
        ..FaultConfig::ops(&["PutItem", "UpdateItem"])
    });
    let consumer = Consumer::spawn(&app.cfg.inbox_table, &data, &gate.url());
    frozen_mid_batch(&gate).await;
    consumer.kill();

    // 3. A consumer that runs to the end: every message once, every click once, every
    //    first touch the earliest click.
    let consumer = Consumer::spawn(&app.cfg.inbox_table, &data, &upstream);
    let stored = first.stored_reported + second.stored_reported;
    let (acc, _) = w
        .settle_and_account(&target, Some(stored), Duration::from_secs(30), deadline)
        .await
        .expect("accounting");
    consumer.kill();
    assert_eq!(first.gave_up + second.gave_up, 0);
    assert_eq!(acc.lost(), 0, "lost: {}", acc.to_json());
    assert_eq!(acc.duplicated(), 0, "duplicated: {}", acc.to_json());
    assert_eq!(acc.first_touch_wrong, 0, "{}", acc.to_json());
    assert_eq!(acc.misfiled_clicks, 0, "{}", acc.to_json());
    assert!(acc.clicks > 100, "{}", acc.to_json());
    app.stack.stop().await;
}

// ------------------------------------------------------------------ DynamoDB faults

async fn in_inbox(app: &TestApp, wamid: &str) -> bool {
    app.clients
        .dynamodb
        .get_item()
        .table_name(&app.cfg.inbox_table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("wa:{wamid}")),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_throttling_and_5xx_lose_nothing_and_never_ack_an_unstored_message() {
    let proxy = FaultProxy::start(&dynamodb_url()).await;
    let app = spawn_app_through(&proxy.url(), AppOptions::default()).await;
    let inbox = app.cfg.inbox_table.clone();
    let body = ctwa_webhook(
        FIXTURE_PNID,
        "wamid.THROTTLED",
        "16505551234",
        Some("CLID-T"),
        ctwa_shared::time::now_secs() - 60,
    );

    // Every inbox write throttled (after the SDK's own retries): Meta is told to retry
    // (5xx), and nothing is stored.
    proxy.set(FaultConfig {
        tables: vec![inbox.clone()],
        throttle: 1.0,
        ..FaultConfig::ops(&["PutItem"])
    });
    let (s, v) = app.post_webhook(body.clone()).await;
    assert!(s >= 500, "storage refused: {s} {v}");
    assert!(!in_inbox(&app, "wamid.THROTTLED").await);
    assert!(proxy.stats().throttled >= 3, "{:?}", proxy.stats());

    // Every inbox write answered 500 although it happened: still a 5xx (the webhook
    // cannot know), the message is kept, and Meta's retry is a duplicate, not a second item.
    proxy.set(FaultConfig {
        tables: vec![inbox.clone()],
        error_500_after: 1.0,
        ..FaultConfig::ops(&["PutItem"])
    });
    let (s, v) = app.post_webhook(body.clone()).await;
    assert!(s >= 500, "{s} {v}");
    assert!(in_inbox(&app, "wamid.THROTTLED").await);
    proxy.set(FaultConfig::default());
    let (s, v) = app.post_webhook(body.clone()).await;
    assert_eq!(
        (s, &v["stored"], &v["duplicates"]),
        (200, &json!(0), &json!(1)),
        "{v}"
    );

    // Under load, a share of every DynamoDB call of the webhook and of capture fails:
    // throttled, 500 before, 500 after the write. Meta retries what was not a 200.
    let target = target_of(&app, &app.cfg.data_table);
    let mut plan = loadgen::Plan::new(500);
    plan.accounts = 2;
    plan.customers = 25;
    plan.concurrency = 16;
    let w = Arc::new(loadgen::Workload::generate(&plan, &target.app_secret));
    w.setup_accounts(&target).await.expect("accounts");
    proxy.set(FaultConfig {
        throttle: 0.10,
        error_500: 0.04,
        error_500_after: 0.04,
        ..FaultConfig::ops(&["PutItem", "UpdateItem", "GetItem", "Query"])
    });
    let deadline = Instant::now() + Duration::from_secs(150);
    let post = w.post(&target, 0..w.sends(), 16, deadline, true).await;
    assert_eq!(
        post.acked_not_stored,
        0,
        "a 200 for a message not stored: {}",
        post.to_json()
    );
    assert_eq!((post.gave_up, post.http_4xx), (0, 0), "{}", post.to_json());
    // Capture runs under the same faults; the stream retries what failed.
    let (acc, _) = w
        .settle_and_account(&target, None, Duration::from_secs(40), deadline)
        .await
        .expect("accounting");
    let stats = proxy.stats();
    proxy.set(FaultConfig::default());
    assert_eq!(acc.lost(), 0, "lost: {} {stats:?}", acc.to_json());
    assert_eq!(acc.duplicated(), 0, "duplicated: {}", acc.to_json());
    assert_eq!(acc.first_touch_wrong, 0, "{}", acc.to_json());
    assert_eq!(acc.misfiled_clicks, 0, "{}", acc.to_json());
    assert!(
        stats.throttled > 50 && stats.errors_500 > 10 && stats.errors_500_after > 10,
        "faults were injected: {stats:?}"
    );
    eprintln!("dynamodb faults: {stats:?}; webhooks: {}", post.to_json());
    app.stack.stop().await;
}

/// The EMF lines of one metric the function `logical_id` wrote (its log lines kept):
/// each line's value of `metric` where the line carries the `Function` dimension with
/// the function's deployed name (what the template's `!Ref` gives).
fn metric_values(app: &TestApp, logical_id: &str, metric: &str) -> Vec<f64> {
    let name = format!("{}-{logical_id}", app.cfg.stack_name);
    app.stack
        .lambda
        .log_lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{logical_id} ")))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let meta = &v["_aws"]["CloudWatchMetrics"][0];
            meta["Namespace"] == "ctwa"
                && meta["Dimensions"] == json!([["Function"]])
                && meta["Metrics"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x["Name"] == metric))
                && v["Function"] == name.as_str()
        })
        .filter_map(|v| v[metric].as_f64())
        .collect()
}

/// A DynamoDB outage makes every webhook answer 5xx: a handled failure, so Lambda's
/// `Errors` metric stays at zero. The webhook writes the answers by status class, and
/// the template's `WebhookHttp5xxAlarm` (read from template.yaml: its metrics, its
/// dimension, its expression's floor and threshold) would fire on what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_outage_on_the_webhook_raises_the_5xx_metric_its_alarm_reads() {
    let proxy = FaultProxy::start(&dynamodb_url()).await;
    let app = spawn_app_through(
        &proxy.url(),
        AppOptions {
            keep_logs: true,
            ..AppOptions::default()
        },
    )
    .await;
    // The alarm as the template writes it.
    let raw: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(ctwa_local::lambda::workspace_dir().join("template.yaml"))
            .unwrap(),
    )
    .unwrap();
    let alarm = &raw["Resources"]["WebhookHttp5xxAlarm"]["Properties"];
    let stat = |id: &str| {
        alarm["Metrics"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["Id"].as_str() == Some(id))
            .map(|m| m["MetricStat"]["Metric"].clone())
            .unwrap()
    };
    let (failed, requests) = (stat("failed"), stat("requests"));
    assert_eq!(failed["Namespace"].as_str(), Some("ctwa"));
    assert_eq!(failed["MetricName"].as_str(), Some("Http5xx"));
    assert_eq!(requests["MetricName"].as_str(), Some("Requests"));
    let dim = &failed["Dimensions"][0];
    assert_eq!(dim["Name"].as_str(), Some("Function"));
    let target = serde_yaml::to_string(&dim["Value"]).unwrap();
    assert!(target.contains("WebhookFunction"), "{target}");
    let threshold = alarm["Threshold"].as_f64().unwrap();

    // Healthy first: 200s, no 5xx.
    let body = |n: usize| {
        ctwa_webhook(
            FIXTURE_PNID,
            &format!("wamid.OUTAGE{n}"),
            "16505551234",
            None,
            ctwa_shared::time::now_secs() - 60,
        )
    };
    let (s, v) = app.post_webhook(body(0)).await;
    assert_eq!(s, 200, "{v}");
    // The outage: every DynamoDB call of the inbox fails.
    proxy.set(FaultConfig {
        tables: vec![app.cfg.inbox_table.clone()],
        error_500: 1.0,
        ..FaultConfig::default()
    });
    for n in 1..=6 {
        let (s, v) = app.post_webhook(body(n)).await;
        assert!(s >= 500, "{s} {v}");
    }
    proxy.set(FaultConfig::default());
    // The lines reach the log sink as the function writes them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (fails, reqs) = loop {
        let fails: f64 = metric_values(&app, "WebhookFunction", "Http5xx")
            .iter()
            .sum();
        let reqs: f64 = metric_values(&app, "WebhookFunction", "Requests")
            .iter()
            .sum();
        if fails >= 6.0 || Instant::now() > deadline {
            break (fails, reqs);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((fails, reqs), (6.0, 7.0), "one line per answer");
    // The alarm's expression: IF(failed >= 5, 100 * failed / requests, 0) > Threshold.
    let rate = if fails >= 5.0 {
        100.0 * fails / reqs
    } else {
        0.0
    };
    assert!(
        rate > threshold,
        "{rate} <= {threshold}: the alarm would stay quiet"
    );
    let twos: f64 = metric_values(&app, "WebhookFunction", "Http2xx")
        .iter()
        .sum();
    assert_eq!(twos, 1.0);
    app.stack.stop().await;
}

// ------------------------------------------------------------------ Graph faults

struct Sent {
    event_id: String,
    http: u16,
    body: Value,
}

async fn send(app: &TestApp, phone: &str, event_id: &str) -> Sent {
    let (http, body) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"phone": phone, "event_name": "Purchase", "currency": "USD", "value": 42, "event_id": event_id}),
        )
        .await;
    Sent {
        event_id: event_id.to_string(),
        http,
        body,
    }
}

fn fault(app: &TestApp, v: Value) {
    app.sim
        .sim
        .add_fault(serde_json::from_value(v).expect("fault"));
}

/// Runs the resend job (as the schedule would, later and later) until nothing is due.
async fn resend_until_quiet(app: &TestApp, from_ms: i64) {
    for k in 1..=12 {
        let r = resend_due(
            &app.stack.capi,
            from_ms + k * 7_200_000,
            500,
            Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("resend run");
        if r.due == 0 {
            return;
        }
    }
    panic!("events still due after 12 resend runs");
}

/// Every row of the audit trail, by event id.
async fn audit(app: &TestApp) -> HashMap<String, Vec<Value>> {
    let mut rows: HashMap<String, Vec<Value>> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "/v1/conversions?limit=200&cursor={}",
                c.replace('%', "%25")
                    .replace('#', "%23")
                    .replace('|', "%7C")
                    .replace('&', "%26")
            ),
            None => "/v1/conversions?limit=200".to_string(),
        };
        let (s, v) = app.get(&path, &app.api_key).await;
        assert_eq!(s, 200, "{v}");
        for e in v["events"].as_array().expect("events") {
            rows.entry(e["event_id"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(e.clone());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return rows,
        }
    }
}

/// What reached Meta, by event id, read from the simulator's control API.
async fn at_meta(app: &TestApp) -> HashMap<String, usize> {
    let v: Value = app
        .http
        .get(format!("{}/events", app.sim.control_url()))
        .send()
        .await
        .expect("simulator")
        .json()
        .await
        .expect("json");
    let mut n: HashMap<String, usize> = HashMap::new();
    for e in v["events"].as_array().expect("events") {
        *n.entry(
            e["event"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
        .or_default() += 1;
    }
    n
}

/// Connects Meta, provisions the dataset and captures a click for each phone.
async fn connected(app: &TestApp, phones: &[String]) {
    app.connect_meta(&app.api_key).await;
    let (s, v) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200, "{v}");
    for (i, p) in phones.iter().enumerate() {
        let (s, v) = app
            .post_webhook(ctwa_webhook(
                FIXTURE_PNID,
                &format!("wamid.G{i}"),
                p,
                Some(&format!("CLID-G{i}")),
                ctwa_shared::time::now_secs() - 3600,
            ))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    settled("a click per phone", phones.len(), || app.click_count()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_failing_every_way_each_conversion_delivered_once_or_failed_with_a_reason() {
    let app = spawn_app().await;
    let phones: Vec<String> = (0..6).map(|i| format!("1650555{i:04}")).collect();
    connected(&app, &phones).await;
    let phone = |i: usize| phones[i % phones.len()].clone();
    let mut sent: Vec<Sent> = Vec::new();

    // 1. Transient failures of every kind, and a slow Meta, under concurrent sends with
    //    duplicate event ids: the retries absorb them.
    for f in [
        json!({"path": "/events", "status": 500, "code": 2, "times": 2}),
        json!({"path": "/events", "status": 503, "times": 1}),
        json!({"path": "/events", "status": 400, "code": 4, "message": "(#4) Application request limit reached", "times": 1}),
        json!({"path": "/events", "status": 400, "code": 17, "message": "(#17) User request limit reached", "times": 1}),
        json!({"path": "/events", "status": 400, "code": 613, "message": "Calls to this api have exceeded the rate limit.", "times": 1}),
        json!({"path": "/events", "status": 400, "code": 80014, "times": 1}),
        json!({"path": "/events", "status": 400, "code": 1, "is_transient": true, "times": 1}),
        json!({"path": "/events", "status": 200, "delay_ms": 1200, "times": 2}),
    ] {
        fault(&app, f);
    }
    let ids: Vec<String> = (0..12).map(|i| format!("t-{i}")).collect();
    let mut jobs: Vec<(usize, String)> = ids.iter().cloned().enumerate().collect();
    jobs.extend((0..4).map(|i| (i, ids[i].clone())));
    let answers = futures_util::future::join_all(jobs.iter().map(|(i, id)| {
        let app = &app;
        let p = phone(*i);
        async move { send(app, &p, id).await }
    }))
    .await;
    sent.extend(answers);

    // 2. Permanent refusals (invalid click id, invalid parameter, permissions): failed
    //    at once with Meta's reason, never retried; the next sends go through.
    for f in [
        json!({"path": "/events", "status": 400, "code": 100, "error_subcode": 2804087, "message": "Invalid parameter", "times": 1}),
        json!({"path": "/events", "status": 400, "code": 100, "message": "(#100) Invalid parameter", "times": 1}),
        json!({"path": "/events", "status": 403, "code": 200, "message": "(#200) Permissions error", "times": 1}),
    ] {
        fault(&app, f);
    }
    for i in 0..5 {
        let s = send(&app, &phone(i), &format!("p-{i}")).await;
        if i < 3 {
            assert_eq!(s.http, 422, "{}", s.body);
            assert_eq!(s.body["status"], "failed");
            assert_eq!(s.body["attempts"], 1, "never retried: {}", s.body);
        } else {
            assert_eq!(s.http, 200, "{}", s.body);
        }
        sent.push(s);
    }

    // 3. Meta down for longer than the call: pending; the resend job, with Meta still
    //    down, keeps them pending; Meta back (one more hiccup): delivered once.
    fault(
        &app,
        json!({"path": "/events", "status": 503, "times": 100_000}),
    );
    for i in 0..4 {
        let s = send(&app, &phone(i), &format!("d-{i}")).await;
        assert_eq!(
            (s.http, s.body["status"].as_str()),
            (202, Some("pending")),
            "{}",
            s.body
        );
        sent.push(s);
    }
    let now = ctwa_shared::time::now_millis();
    let r = resend_due(
        &app.stack.capi,
        now + 3_600_000,
        500,
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .expect("resend");
    assert_eq!(r.delivered, 0, "{r:?}");
    app.sim.sim.clear_faults();
    fault(
        &app,
        json!({"path": "/events", "status": 500, "code": 2, "times": 1}),
    );
    resend_until_quiet(&app, now + 3_600_000).await;

    // 4. Meta answers after our client's timeout (10 s): it may have taken the event, and
    // it does not deduplicate business-messaging events, so the outcome is unknown and it
    // is never sent again (not by the resend job either).
    fault(
        &app,
        json!({"path": "/events", "status": 200, "delay_ms": 11_000, "times": 1}),
    );
    let s = send(&app, &phone(4), "slow-1").await;
    assert_eq!(s.http, 202, "{}", s.body);
    sent.push(s);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    resend_until_quiet(&app, ctwa_shared::time::now_millis()).await;

    // 5. The caller gives up mid-call (its connection closes while Meta is slow).
    fault(
        &app,
        json!({"path": "/events", "status": 200, "delay_ms": 2500, "times": 1}),
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let r = impatient
        .post(format!("{}/v1/conversions", app.base))
        .bearer_auth(&app.api_key)
        .json(&json!({"phone": phone(5), "event_name": "Purchase", "currency": "USD", "value": 1, "event_id": "gone-1"}))
        .send()
        .await;
    assert!(r.is_err(), "the caller timed out");
    sent.push(Sent {
        event_id: "gone-1".into(),
        http: 0,
        body: Value::Null,
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    resend_until_quiet(&app, ctwa_shared::time::now_millis()).await;

    // 6. Pending events whose token is revoked before the resend: failed with a reason.
    fault(
        &app,
        json!({"path": "/events", "status": 500, "code": 2, "times": 100_000}),
    );
    for i in 0..2 {
        let s = send(&app, &phone(i), &format!("r-{i}")).await;
        assert_eq!(s.http, 202, "{}", s.body);
        sent.push(s);
    }
    app.sim.sim.clear_faults();
    let token = app
        .stack
        .connect
        .meta
        .token(&app.account_id)
        .await
        .expect("token");
    app.sim.sim.revoke(token.expose());
    resend_until_quiet(&app, ctwa_shared::time::now_millis()).await;

    // Every event: one audit row, delivered once at Meta or failed with a reason and
    // never at Meta; nothing pending or in flight; nothing at Meta we did not send.
    let rows = audit(&app).await;
    let meta = at_meta(&app).await;
    let mut failed = Vec::new();
    for s in &sent {
        let row = rows.get(&s.event_id).unwrap_or_else(|| {
            panic!(
                "{}: no audit row (answer {} {})",
                s.event_id, s.http, s.body
            )
        });
        assert_eq!(row.len(), 1, "{}: one audit row: {row:?}", s.event_id);
        let row = &row[0];
        let at = meta.get(&s.event_id).copied().unwrap_or(0);
        match row["status"].as_str() {
            Some("delivered") => assert_eq!(at, 1, "{}: delivered once at Meta: {row}", s.event_id),
            Some("failed") => {
                assert_eq!(at, 0, "{}: failed, never at Meta: {row}", s.event_id);
                assert!(
                    !row["error"].is_null(),
                    "{}: failed with a reason: {row}",
                    s.event_id
                );
                failed.push(s.event_id.clone());
            }
            Some("unknown") => {
                assert!(
                    at <= 1,
                    "{}: unknown, at Meta once at most: {row}",
                    s.event_id
                );
                assert_eq!(
                    row["error"]["reason"], "outcome_unknown",
                    "{}: {row}",
                    s.event_id
                );
            }
            other => panic!("{}: ended {other:?}: {row}", s.event_id),
        }
        if s.event_id == "slow-1" {
            assert_eq!(row["status"], "unknown", "an unanswered send: {row}");
        }
        // The client's answer never claimed more than what happened.
        match s.http {
            200 => assert_eq!(row["status"], "delivered", "{}: {}", s.event_id, s.body),
            422 | 503 => assert_eq!(row["status"], "failed", "{}: {}", s.event_id, s.body),
            _ => {}
        }
    }
    for (id, n) in &meta {
        assert!(
            sent.iter().any(|s| &s.event_id == id),
            "{id} at Meta ({n} times) but never sent"
        );
    }
    failed.sort();
    failed.dedup();
    assert_eq!(failed, ["p-0", "p-1", "p-2", "r-0", "r-1"], "failed events");
    let duplicates = sent.iter().filter(|s| s.body["duplicate"] == true).count();
    assert_eq!(
        duplicates, 4,
        "the repeated event ids answered as duplicates"
    );
    app.stack.stop().await;
}

/// Meta took the event, but its answer never reached us: a front end answered 500 after
/// the work, or the connection closed. The retry that follows must not make a second
/// event at Meta (Meta does not deduplicate these events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known limit (README, Run the tests): at-least-once on an ambiguous outcome; a Graph answer lost after Meta took the events (HTTP 5xx from a front end after the work, or the connection closed) is retried as transient (shared/src/graph.rs is_retryable: 5xx and transport errors), so Meta receives the event twice while the audit trail shows one delivery"]
async fn meta_took_the_event_but_its_answer_was_lost_and_the_event_is_not_sent_twice() {
    let (app, graph) = spawn_app_with_graph_proxy(AppOptions::default()).await;
    let phones = vec!["16505550100".to_string()];
    connected(&app, &phones).await;
    let lost_answers = [
        FaultConfig {
            error_500_after: 1.0,
            ..Default::default()
        },
        FaultConfig {
            drop_after: 1.0,
            ..Default::default()
        },
    ];
    let mut outcomes = Vec::new();
    for (i, fault) in lost_answers.into_iter().enumerate() {
        graph.set(FaultConfig {
            paths: vec!["/events".into()],
            limit: Some(1),
            ..fault
        });
        let id = format!("lost-answer-{i}");
        let s = send(&app, &phones[0], &id).await;
        resend_until_quiet(&app, ctwa_shared::time::now_millis()).await;
        let rows = audit(&app).await;
        let at = at_meta(&app).await.get(&id).copied().unwrap_or(0);
        outcomes.push(format!(
            "{id}: audit {}, at Meta {at} times (answered {} {})",
            rows[&id][0]["status"], s.http, s.body["status"]
        ));
        assert_eq!(rows[&id][0]["status"], "delivered", "{outcomes:?}");
    }
    eprintln!("lost answers: {outcomes:?}; proxy {:?}", graph.stats());
    assert!(
        outcomes.iter().all(|o| o.contains("at Meta 1 times")),
        "sent twice: {outcomes:?}"
    );
    app.stack.stop().await;
}
