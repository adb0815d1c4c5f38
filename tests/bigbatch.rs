//! Big batches within the conversions function's budget, and a send whose answer never
//! came: through the local stack (the release bootstraps under the template's `Timeout`)
//! against the Graph simulator.

use ctwa_shared::capi::resend_due;
use ctwa_tests::fault_proxy::{FaultConfig, FaultProxy, spawn_app_through};
use ctwa_tests::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A connected account with a dataset.
async fn connected_app() -> TestApp {
    connect(spawn_app().await).await
}

async fn connect(app: TestApp) -> TestApp {
    app.connect_meta(&app.api_key).await;
    let (s, v) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200, "{v}");
    app
}

/// One captured click for each phone (webhooks posted 16 at a time).
async fn clicks(app: &TestApp, phones: &[String]) {
    let before = app.click_count().await;
    let ts = ctwa_shared::time::now_secs() - 3600;
    let posts = futures_util::stream::iter(phones.iter().map(|phone| async move {
        let wamid = format!("wamid.{}", unique("big"));
        let clid = format!("CLID-{phone}");
        app.post_webhook(ctwa_webhook(FIXTURE_PNID, &wamid, phone, Some(&clid), ts))
            .await
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    for (s, v) in posts {
        assert_eq!(s, 200, "{v}");
    }
    let want = before + phones.len();
    eventually("the clicks captured", Duration::from_secs(180), || async {
        (app.click_count().await >= want).then_some(())
    })
    .await;
}

fn fault(app: &TestApp, v: Value) {
    app.sim.sim.add_fault(serde_json::from_value(v).unwrap());
}

/// How many times Meta (the simulator) took the event `event_id`.
fn at_meta(app: &TestApp, event_id: &str) -> usize {
    app.sim
        .sim
        .received_events()
        .iter()
        .filter(|e| e["event"]["event_id"] == event_id)
        .count()
}

/// The conversions function's `Timeout` in template.yaml (what Lambda, and the local
/// stack, stop it at).
fn conversions_timeout() -> Duration {
    let text = std::fs::read_to_string(format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let secs = doc["Resources"]["ConversionsFunction"]["Properties"]["Timeout"]
        .as_u64()
        .expect("the conversions function has a Timeout");
    Duration::from_secs(secs)
}

/// Meta takes the request and its answer never comes back in time (the client gives up
/// after 10 s): the outcome is unknown. The event is not sent again, neither at once
/// (the old retry sent it twice), nor on the client's retry with the same event id, nor
/// by the resend job: Meta does not deduplicate these events.
#[tokio::test]
async fn a_send_meta_took_without_answering_is_unknown_and_never_sent_twice() {
    let app = connected_app().await;
    clicks(&app, &["16505551234".to_string()]).await;
    fault(
        &app,
        json!({"path": "/events", "status": 200, "answer_delay_ms": 12_000, "times": 1}),
    );
    let body = json!({"phone": "16505551234", "event_name": "Purchase", "currency": "USD", "value": 10, "event_id": "lost-1"});
    let (s, v) = app
        .post_json("/v1/conversions", &app.api_key, body.clone())
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "unknown", "{v}");
    assert_eq!(v["reason"], "outcome_unknown", "{v}");
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["attempts"], 1, "not retried in the call: {v}");
    assert_eq!(v["error"]["reason"], "outcome_unknown", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not sent again")),
        "{v}"
    );
    // The simulator took it once, and answered too late.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(at_meta(&app, "lost-1"), 1, "taken once by Meta");

    // The client retries with the same event id: the audit trail answers, nothing sent.
    let (s, again) = app.post_json("/v1/conversions", &app.api_key, body).await;
    assert_eq!(s, 202, "{again}");
    assert_eq!(
        (&again["status"], &again["duplicate"]),
        (&json!("unknown"), &json!(true)),
        "{again}"
    );
    // The resend job, however late, does not take it either.
    let later = ctwa_shared::time::now_millis() + 86_400_000;
    let report = resend_due(
        &app.stack.capi,
        later,
        100,
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .expect("resend");
    assert_eq!((report.due, report.delivered), (0, 0), "{report:?}");
    assert_eq!(at_meta(&app, "lost-1"), 1, "never sent a second time");

    // The audit trail shows it as unknown, with the reason.
    let (s, list) = app
        .get("/v1/conversions?status=unknown", &app.api_key)
        .await;
    assert_eq!(s, 200, "{list}");
    let rows = list["events"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["event_id"], "lost-1");
    assert_eq!(rows[0]["error"]["reason"], "outcome_unknown");

    // A connection that cannot be made reaches nothing: that send stays a known
    // failure (pending, re-sent later), not unknown.
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"phone": "16505551234", "event_name": "LeadSubmitted", "event_id": "after-1"}),
        )
        .await;
    assert_eq!((s, &v["status"]), (200, &json!("delivered")), "{v}");
    app.stack.stop().await;
}

/// A DynamoDB round trip in AWS (same region, from Lambda): single-digit milliseconds.
/// DynamoDB Local over loopback answers in about one, which would hide how many calls a
/// batch makes one after another.
const AWS_DYNAMODB_ROUND_TRIP: Duration = Duration::from_millis(8);

/// A full batch (Meta's 1,000 events) against a Meta answering in 300 ms, with DynamoDB
/// as slow as in AWS, answers before the conversions function's Timeout, every event
/// delivered once, in one request, the answer in the batch's order. (Resolving and
/// saving the events one at a time, about five DynamoDB calls each, took the whole
/// Timeout: the function was stopped and the caller got a 503.)
#[tokio::test]
async fn a_thousand_event_batch_answers_within_the_function_timeout_against_a_slow_meta() {
    require_local_env();
    let dynamodb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("AWS_ENDPOINT_URL_DYNAMODB");
    let proxy = FaultProxy::start(&dynamodb).await;
    let app = connect(spawn_app_through(&proxy.url(), AppOptions::default()).await).await;
    let phones: Vec<String> = (0..1000).map(|i| format!("1777{i:07}")).collect();
    clicks(&app, &phones).await;
    proxy.set(FaultConfig {
        delay: AWS_DYNAMODB_ROUND_TRIP,
        ..Default::default()
    });
    fault(
        &app,
        json!({"path": "/events", "status": 200, "delay_ms": 300, "times": 100}),
    );
    let run = unique("b");
    let events: Vec<Value> = phones
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"phone": p, "event_name": "Purchase", "currency": "USD", "value": 10 + i % 90, "event_id": format!("{run}-{i}")}))
        .collect();
    let timeout = conversions_timeout();
    let started = Instant::now();
    let (s, v) = app
        .post_json(
            "/v1/conversions/batch",
            &app.api_key,
            json!({"events": events}),
        )
        .await;
    let took = started.elapsed();
    eprintln!("1,000-event batch, Meta answering in 300 ms: {took:?} (Timeout {timeout:?})");
    assert_eq!(s, 200, "{v}");
    assert!(
        took < timeout,
        "the batch took {took:?}, the function's Timeout is {timeout:?}"
    );
    assert_eq!(
        (&v["delivered"], &v["total"], &v["unknown"]),
        (&json!(1000), &json!(1000), &json!(0))
    );
    let results = v["results"].as_array().unwrap();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "{r}");
        assert_eq!(
            r["event_id"],
            format!("{run}-{i}"),
            "in the batch's order: {r}"
        );
        assert_eq!(r["status"], "delivered", "{r}");
        assert!(r["attribution"]["conversation_id"].is_string(), "{r}");
    }
    let sends = app
        .sim
        .sim
        .requests()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("/events"))
        .count();
    assert_eq!(sends, 1, "one request to Meta for the batch");
    assert_eq!(app.sim.sim.received_events().len(), 1000);
    app.stack.stop().await;
}
