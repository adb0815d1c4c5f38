//! The local stack is as strict as AWS: the template is the configuration (a variable,
//! a table or a binary it does not give stops the start), IAM is enforced on every AWS
//! call (AccessDenied answered as AWS answers it, nothing stored), timeouts and crashed
//! runtimes are answered as API Gateway answers them and the next request gets a fresh
//! instance, the stream mapping gives up on a batch into its on-failure queue, scheduled
//! functions take EventBridge's event, and no secret or customer PII reaches any log
//! line at the most verbose LogLevel the template accepts.

use ctwa_shared::meta::connection::REQUIRED_SCOPES;
use ctwa_tests::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// template.yaml with `from` replaced by `to` (exactly once), written to a temp file.
fn template_with(from: &str, to: &str) -> PathBuf {
    template_variant(&[(from, to)])
}

/// `text` with one action taken from one function's policy (replaced by an action
/// nothing calls, so the statement stays valid), as scripts/iam-mutation.sh does.
fn without_action(text: &str, function: &str, action: &str) -> String {
    // The function's block: from its line to the next resource (two spaces, a name).
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let is_resource =
        |l: &str| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':');
    let start = lines
        .iter()
        .position(|l| l == &format!("  {function}:"))
        .expect("the function");
    let end = lines[start + 1..]
        .iter()
        .position(|l| is_resource(l))
        .map_or(lines.len(), |i| start + 1 + i);
    let hits: Vec<usize> = (start..end)
        .filter(|&i| lines[i].trim() == format!("- {action}"))
        .collect();
    assert_eq!(hits.len(), 1, "{function} grants {action} once");
    lines[hits[0]] = lines[hits[0]].replace(action, "none:Removed");
    lines.join("\n") + "\n"
}

/// The start's answer for a template.
async fn start_error(template: PathBuf) -> String {
    let clients = clients().await;
    let mut cfg = test_config(&AppOptions::default());
    cfg.lambda.template_path = template;
    let sim = start_sim(&cfg).await;
    cfg.graph_url = sim.graph_url();
    match ctwa_local::start(&clients, cfg).await {
        Ok(_) => panic!("the stack started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn the_start_refuses_what_aws_would_fail_on_with_one_clear_line() {
    // A variable the code requires but the template does not set.
    let e = start_error(template_with(
        "      Description: Client HTTP API for conversations, their captured click ids, and Meta's automatic events.\n      CodeUri: .\n      ReservedConcurrentExecutions: !If [HasApiReservedConcurrency, !Ref ApiReservedConcurrency, !Ref AWS::NoValue]\n      Environment:\n        Variables:\n          DATA_TABLE: !Ref DataTable\n",
        "      Description: Client HTTP API for conversations, their captured click ids, and Meta's automatic events.\n      CodeUri: .\n      ReservedConcurrentExecutions: !If [HasApiReservedConcurrency, !Ref ApiReservedConcurrency, !Ref AWS::NoValue]\n      Environment:\n        Variables:\n          DATA_TABLEX: !Ref DataTable\n",
    ))
    .await;
    assert!(
        e.contains("ApiFunction") && e.contains("DATA_TABLE is required"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    // A policy that names a table the template does not define.
    let e = start_error(template_with(
        "            - Sid: InboxWrite\n              Effect: Allow\n              Action:\n                - dynamodb:PutItem\n              Resource: !GetAtt InboxTable.Arn",
        "            - Sid: InboxWrite\n              Effect: Allow\n              Action:\n                - dynamodb:PutItem\n              Resource: !GetAtt InboxTabel.Arn",
    ))
    .await;
    assert!(
        e.contains("WebhookFunction") && e.contains("no resource InboxTabel is defined"),
        "{e}"
    );
    // A function whose routes no binary answers.
    let e = start_error(template_with(
        "      BuildProperties:\n        Binary: api\n",
        "      BuildProperties: {}\n",
    ))
    .await;
    assert!(
        e.contains("ApiFunction") && e.contains("Binary is missing"),
        "{e}"
    );
    // A log level CloudFormation would refuse.
    let clients = clients().await;
    let mut cfg = test_config(&AppOptions::default());
    cfg.log_level = Some("verbose".into());
    let e = ctwa_local::start(&clients, cfg)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("LogLevel=verbose") && e.contains("AllowedValues"),
        "{e}"
    );
}

#[tokio::test]
async fn an_action_the_policy_does_not_grant_is_access_denied_and_nothing_is_stored() {
    let app = spawn_app_with(AppOptions {
        template: Some(template_with(
            "              Action:\n                - dynamodb:PutItem\n              Resource: !GetAtt InboxTable.Arn",
            "              Action:\n                - dynamodb:GetItem\n              Resource: !GetAtt InboxTable.Arn",
        )),
        expect_access_denied: true,
        ..Default::default()
    })
    .await;
    let (s, v) = app
        .post_webhook(ctwa_webhook(
            FIXTURE_PNID,
            "wamid.denied",
            "16505551234",
            Some("CLID-DENIED"),
            1_750_000_000,
        ))
        .await;
    // Meta sees a failure and retries; nothing was stored.
    assert!(s >= 500, "{s} {v}");
    assert_eq!(app.inbox_count().await, 0);
    let denied = app.stack.lambda.access_denied();
    assert!(
        denied.iter().any(|d| d
            .starts_with("WebhookFunction AccessDenied: dynamodb:PutItem on arn:aws:dynamodb:")
            && d.contains(&format!("table/{}", app.cfg.inbox_table))),
        "{denied:?}"
    );
}

#[tokio::test]
async fn a_timed_out_invocation_is_a_503_and_the_next_request_gets_a_fresh_instance() {
    // ConnectFunction with a 1 s Timeout; Meta's token endpoint answering in 2.5 s.
    let app = spawn_app_with(AppOptions {
        template: Some(template_with(
            "      Description: Meta connection. OAuth code exchange, token refresh and status. Tokens live in Secrets Manager only.\n      CodeUri: .\n      Timeout: 29\n",
            "      Description: Meta connection. OAuth code exchange, token refresh and status. Tokens live in Secrets Manager only.\n      CodeUri: .\n      Timeout: 1\n",
        )),
        ..Default::default()
    })
    .await;
    app.sim.sim.add_fault(
        serde_json::from_value(
            json!({"path": "oauth/access_token", "status": 200, "delay_ms": 2500}),
        )
        .unwrap(),
    );
    let code = app.oauth_code(&REQUIRED_SCOPES, FIXTURE_WABA);
    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v, json!({"message": "Service Unavailable"}));
    let pool = app.stack.lambda.pool("ConnectFunction").unwrap().clone();
    assert_eq!(pool.stats().timeouts, 1);
    let (s, v) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        pool.stats().cold_starts,
        2,
        "the timed-out instance was replaced"
    );
}

#[tokio::test]
async fn a_crashed_runtime_is_a_500_and_the_next_request_gets_a_fresh_instance() {
    let app = spawn_app().await;
    let (s, _) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200);
    let pool = app.stack.lambda.pool("ConnectFunction").unwrap().clone();
    // Killed while idle: the next request starts a new instance.
    for pid in pool.pids() {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, v) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(pool.stats().cold_starts, 2);
    // Killed in the middle of an invocation: API Gateway's 500.
    app.sim.sim.add_fault(
        serde_json::from_value(
            json!({"path": "oauth/access_token", "status": 200, "delay_ms": 3000}),
        )
        .unwrap(),
    );
    let code = app.oauth_code(&REQUIRED_SCOPES, FIXTURE_WABA);
    let exchange = app.post_json(
        "/v1/oauth/exchange-code",
        &app.api_key,
        json!({"code": code}),
    );
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        for pid in pool.pids() {
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        }
    };
    let ((s, v), ()) = tokio::join!(exchange, killer);
    assert_eq!(s, 500, "{v}");
    assert_eq!(v, json!({"message": "Internal Server Error"}));
    assert!(pool.stats().crashes >= 1);
    let (s, v) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn a_batch_capture_keeps_failing_goes_to_the_on_failure_queue_after_the_retries() {
    // Capture without UpdateItem fails every click; one retry, then the on-failure queue.
    let path = template_with(
        "            MaximumRetryAttempts: 10\n",
        "            MaximumRetryAttempts: 1\n",
    );
    let text = without_action(
        &std::fs::read_to_string(&path).unwrap(),
        "CaptureFunction",
        "dynamodb:UpdateItem",
    );
    std::fs::write(&path, text).unwrap();
    let app = spawn_app_with(AppOptions {
        template: Some(path),
        expect_access_denied: true,
        ..Default::default()
    })
    .await;
    let (s, v) = app
        .post_webhook(ctwa_webhook(
            FIXTURE_PNID,
            "wamid.dlq",
            "16505551234",
            Some("CLID-DLQ"),
            1_750_000_000,
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, url) = app.stack.lambda.resources.queues["CaptureDeadLetterQueue"].clone();
    let record: Value = eventually(
        "the batch reaches the on-failure queue",
        Duration::from_secs(60),
        || {
            let sqs = app.clients.sqs.clone();
            let url = url.clone();
            async move {
                let out = sqs.receive_message().queue_url(&url).send().await.ok()?;
                let m = out.messages?.into_iter().next()?;
                serde_json::from_str(m.body()?).ok()
            }
        },
    )
    .await;
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 2);
    let info = &record["DDBStreamBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert!(info["shardId"].is_string() && info["startSequenceNumber"].is_string());
    assert!(
        app.stack
            .lambda
            .access_denied()
            .iter()
            .any(|d| d.starts_with("CaptureFunction AccessDenied: dynamodb:UpdateItem")),
        "{:?}",
        app.stack.lambda.access_denied()
    );
    // The message itself stays in the inbox, for a replay.
    assert_eq!(app.inbox_count().await, 1);
}

#[tokio::test]
async fn scheduled_functions_take_eventbridges_event() {
    let app = spawn_app().await;
    app.connect_meta(&app.api_key).await;
    for f in ["ConversionsResendFunction", "TokenRefreshFunction"] {
        let out = app.stack.lambda.invoke_scheduled(f).await;
        assert!(out.is_ok(), "{f}: {out:?}");
    }
    let schedules: Vec<_> = app
        .stack
        .lambda
        .template
        .functions
        .iter()
        .flat_map(|f| {
            f.schedules
                .iter()
                .map(move |s| (f.logical_id.clone(), s.expression.clone()))
        })
        .collect();
    assert!(schedules.contains(&("ConversionsResendFunction".into(), "rate(5 minutes)".into())));
    assert!(schedules.contains(&("TokenRefreshFunction".into(), "rate(1 day)".into())));
}

/// The whole product at the most verbose LogLevel the template accepts: webhooks (Cloud
/// API and Sinch), the OAuth exchange and refresh, the dataset and CAPI config,
/// conversions with raw phones and emails, the audit trail, reads, API keys, the
/// scheduled jobs; then every function log line is scanned for secrets and PII.
#[tokio::test]
async fn no_secret_or_pii_in_any_function_log_line_at_the_most_verbose_level() {
    let level = most_verbose_log_level();
    let app = spawn_app_with(AppOptions {
        keep_logs: true,
        log_level: Some(level.clone()),
        ..Default::default()
    })
    .await;
    let fun = app
        .stack
        .lambda
        .template
        .function("WebhookFunction")
        .unwrap();
    assert_eq!(fun.application_log_level, level.to_uppercase());

    let phone = "16505559876";
    let (s, _) = app
        .post_webhook(ctwa_webhook(
            FIXTURE_PNID,
            "wamid.logs",
            phone,
            Some("CLID-LOGS"),
            ctwa_shared::time::now_secs() - 60,
        ))
        .await;
    assert_eq!(s, 200);
    let sinch = std::fs::read_to_string(format!(
        "{}/../events/webhooks/sinch/message_inbound_ctwa.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let (s, _) = app.post_sinch(sinch).await;
    assert_eq!(s, 200);
    let code = app.oauth_code(&REQUIRED_SCOPES, FIXTURE_WABA);
    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app
        .post_json("/v1/oauth/refresh-token", &app.api_key, json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = app
        .post_json(
            "/v1/capi",
            &app.api_key,
            json!({"lead_event_enabled": true, "lead_event_trigger": "form_submitted"}),
        )
        .await;
    assert!(s < 300, "{s}");
    eventually("the click is captured", Duration::from_secs(30), || async {
        (app.click_count().await >= 1).then_some(())
    })
    .await;
    let raw_phone = "+1 (650) 555-9876";
    let email = "Alice.Logs@Example.com";
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"phone": raw_phone, "email": email, "event_name": "Purchase", "value": 1499, "currency": "INR", "event_id": unique("ev")}),
        )
        .await;
    assert!(s < 300, "{s} {v}");
    let (s, v) = app
        .post_json(
            "/v1/conversions/batch",
            &app.api_key,
            json!({"events": [{"phone": raw_phone, "email": email, "event_name": "Lead", "event_id": unique("ev")}]}),
        )
        .await;
    assert!(s < 300, "{s} {v}");
    let (s, _) = app.get("/v1/conversions", &app.api_key).await;
    assert_eq!(s, 200);
    let (s, _) = app
        .get(&format!("/v1/conversations?phone={phone}"), &app.api_key)
        .await;
    assert_eq!(s, 200);
    let (s, v) = app
        .post_json("/v1/api-keys", &app.api_key, json!({"name": "logs"}))
        .await;
    assert!(s < 300, "{s} {v}");
    let minted = v["api_key"]
        .as_str()
        .or(v["key"].as_str())
        .unwrap_or_default()
        .to_string();
    for f in ["ConversionsResendFunction", "TokenRefreshFunction"] {
        app.stack.lambda.invoke_scheduled(f).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lines = app.stack.lambda.log_lines();
    let all = lines.join("\n");
    assert!(
        all.contains("cloud webhook accepted") && all.contains("Meta connected"),
        "the functions' log lines were read: {lines:?}"
    );
    let mut secrets: Vec<(String, String)> = vec![
        ("API key".into(), app.api_key.clone()),
        ("app secret".into(), app.cfg.app_secret.clone()),
        ("verify token".into(), app.cfg.verify_token.clone()),
        ("Sinch secret".into(), app.cfg.sinch_webhook_secret.clone()),
        ("OAuth code".into(), code),
        ("raw phone".into(), raw_phone.into()),
        ("phone digits".into(), phone.into()),
        ("email".into(), email.into()),
        ("email normalised".into(), email.to_lowercase()),
    ];
    if !minted.is_empty() {
        secrets.push(("minted API key".into(), minted));
    }
    for t in app.sim.sim.issued_tokens() {
        secrets.push(("Meta token".into(), t));
    }
    for line in &lines {
        for (what, s) in &secrets {
            assert!(!line.contains(s.as_str()), "{what} in a log line: {line}");
        }
        assert!(
            !line.to_ascii_lowercase().contains("authorization"),
            "an Authorization header in a log line: {line}"
        );
    }
}

/// template.yaml with every `from` replaced by `to` (at least once), in a temp file.
fn template_with_all(from: &str, to: &str) -> PathBuf {
    let text = template_text();
    assert!(text.contains(from), "{from:?} must occur");
    template_file(&text.replace(from, to))
}

#[tokio::test]
async fn a_pending_conversion_is_delivered_once_by_the_scheduled_resend_function() {
    // The template's resend delay, shortened; every policy as in template.yaml.
    let app = spawn_app_with(AppOptions {
        template: Some(template_with_all(
            "RESEND_DELAY_SECONDS: \"60\"",
            "RESEND_DELAY_SECONDS: \"1\"",
        )),
        ..Default::default()
    })
    .await;
    app.connect_meta(&app.api_key).await;
    let (s, v) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = app
        .post_webhook(ctwa_webhook(
            FIXTURE_PNID,
            "wamid.resend",
            "16505551234",
            Some("CLID-RESEND"),
            ctwa_shared::time::now_secs() - 60,
        ))
        .await;
    assert_eq!(s, 200);
    eventually("the click is captured", Duration::from_secs(30), || async {
        (app.click_count().await == 1).then_some(())
    })
    .await;
    app.sim.sim.add_fault(
        serde_json::from_value(json!({"path": "/events", "status": 503, "times": 1000})).unwrap(),
    );
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"phone": "16505551234", "event_name": "Lead", "event_id": "lead-resend"}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(app.sim.sim.received_events().is_empty());
    app.sim.sim.clear_faults();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = app
        .stack
        .lambda
        .invoke_scheduled("ConversionsResendFunction")
        .await
        .unwrap();
    assert_eq!(report["delivered"], 1, "{report}");
    let again = app
        .stack
        .lambda
        .invoke_scheduled("ConversionsResendFunction")
        .await
        .unwrap();
    assert_eq!(again["due"], 0, "{again}");
    let at_meta = app.sim.sim.received_events();
    assert_eq!(at_meta.len(), 1);
    assert_eq!(at_meta[0]["event"]["event_id"], "lead-resend");
}

#[tokio::test]
async fn the_scheduled_token_refresh_function_renews_an_expiring_token() {
    // Long-lived tokens last ~60 days: a 61-day window makes the new one due. Every
    // policy as in template.yaml.
    let app = spawn_app_with(AppOptions {
        template: Some(template_with(
            "REFRESH_WITHIN_DAYS: !Ref TokenRefreshWithinDays",
            "REFRESH_WITHIN_DAYS: \"61\"",
        )),
        ..Default::default()
    })
    .await;
    app.connect_meta(&app.api_key).await;
    let before = app.sim.sim.issued_tokens().len();
    let report = app
        .stack
        .lambda
        .invoke_scheduled("TokenRefreshFunction")
        .await
        .unwrap();
    assert_eq!(report["refreshed"], 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(app.sim.sim.issued_tokens().len() > before);
    let (s, st) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["status"], "connected", "{st}");
}

#[tokio::test]
async fn a_revoked_token_found_while_provisioning_the_dataset_marks_the_connection_broken() {
    let app = spawn_app().await;
    app.connect_meta(&app.api_key).await;
    let token = app.stack.connect.meta.token(&app.account_id).await.unwrap();
    app.sim.sim.revoke(token.expose());
    let (s, v) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("meta_token_invalid")),
        "{v}"
    );
    let (_, st) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(st["status"], "broken", "{st}");
}

/// The alarms of `template.yaml`, as (logical id, properties).
fn alarms() -> Vec<(String, serde_yaml::Value)> {
    let raw: serde_yaml::Value = serde_yaml::from_str(&template_text()).unwrap();
    raw["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|(k, r)| (k.as_str().unwrap().to_string(), r["Properties"].clone()))
        .collect()
}

/// Every metric an alarm reads: (namespace, name, dimension names), from the alarm's
/// own fields or from each `MetricStat` of its metric math.
fn alarm_metrics(props: &serde_yaml::Value) -> Vec<(String, String, Vec<String>)> {
    let dims = |d: &serde_yaml::Value| -> Vec<String> {
        d.as_sequence()
            .map(|s| {
                s.iter()
                    .map(|x| x["Name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if let Some(name) = props["MetricName"].as_str() {
        out.push((
            props["Namespace"].as_str().unwrap().to_string(),
            name.to_string(),
            dims(&props["Dimensions"]),
        ));
    }
    for m in props["Metrics"].as_sequence().into_iter().flatten() {
        let metric = &m["MetricStat"]["Metric"];
        if let Some(name) = metric["MetricName"].as_str() {
            out.push((
                metric["Namespace"].as_str().unwrap().to_string(),
                name.to_string(),
                dims(&metric["Dimensions"]),
            ));
        }
    }
    out
}

/// An alarm on a metric the code never writes (a typo, a renamed metric, a dimension
/// the line does not carry) never fires: every alarm of namespace `ctwa` reads a metric
/// of `ctwa_shared::metrics::Metric` with the dimensions it is written with; and every
/// alarm notifies (the given topic, or the stack's own), none is silent.
#[test]
fn every_alarm_reads_a_metric_the_code_writes_and_notifies_someone() {
    use ctwa_shared::metrics::{FUNCTION_DIMENSION, Metric, NAMESPACE};
    let all = alarms();
    assert!(all.len() >= 15, "{}", all.len());
    let mut ours = 0;
    for (id, props) in &all {
        let metrics = alarm_metrics(props);
        assert!(!metrics.is_empty(), "{id} reads no metric");
        for (ns, name, dims) in metrics {
            if ns != NAMESPACE {
                assert!(ns.starts_with("AWS/"), "{id}: namespace {ns}");
                continue;
            }
            ours += 1;
            let m = Metric::ALL
                .into_iter()
                .find(|m| m.name() == name)
                .unwrap_or_else(|| panic!("{id} reads {name}, which no code writes"));
            let expected: Vec<String> = if m.per_function() {
                vec![FUNCTION_DIMENSION.to_string()]
            } else {
                vec![]
            };
            assert_eq!(
                dims, expected,
                "{id}: the dimensions {name} is written with"
            );
        }
        for key in ["AlarmActions", "OKActions"] {
            let text = serde_yaml::to_string(&props[key]).unwrap();
            assert!(
                text.contains("AlarmTopicArn") && text.contains("AlarmTopic\n"),
                "{id}: {key} must notify the given topic or the stack's own: {text}"
            );
        }
    }
    assert!(ours >= 12, "alarms on our own metrics: {ours}");
}

/// A target that takes 40 ms per batch and notes, per item key, the versions it was
/// given in order, whether a key was ever in two batches at once, and how many batches
/// were in flight at most.
#[derive(Default)]
struct Lanes {
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    seen: std::sync::Mutex<std::collections::HashMap<String, Vec<i64>>>,
    overlaps: std::sync::atomic::AtomicUsize,
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ctwa_local::stream::BatchTarget for Lanes {
    async fn invoke(&self, event: bytes::Bytes) -> Result<bytes::Bytes, String> {
        use std::sync::atomic::Ordering::SeqCst;
        let ev: Value = serde_json::from_slice(&event).map_err(|e| e.to_string())?;
        let recs: Vec<(String, i64)> = ev["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let d = &r["dynamodb"];
                let v = d["NewImage"]["v"]["N"].as_str().unwrap().parse().unwrap();
                (d["Keys"]["pk"]["S"].as_str().unwrap().to_string(), v)
            })
            .collect();
        // One batch may hold several records of a key; another batch in flight may not.
        let keys: std::collections::HashSet<String> = recs.iter().map(|(k, _)| k.clone()).collect();
        {
            let mut busy = self.in_flight.lock().unwrap();
            for k in &keys {
                if !busy.insert(k.clone()) {
                    self.overlaps.fetch_add(1, SeqCst);
                }
            }
        }
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        self.now.fetch_sub(1, SeqCst);
        let mut seen = self.seen.lock().unwrap();
        let mut busy = self.in_flight.lock().unwrap();
        for k in &keys {
            busy.remove(k);
        }
        for (k, v) in recs {
            seen.entry(k).or_default().push(v);
        }
        Ok(bytes::Bytes::from_static(br#"{"batchItemFailures":[]}"#))
    }
}

#[tokio::test]
async fn the_stream_mapping_runs_parallelization_factor_batches_one_item_key_in_order() {
    // The template's setting is what the local mapping runs.
    let app = spawn_app_with(AppOptions::default()).await;
    let capture = app
        .stack
        .lambda
        .template
        .function("CaptureFunction")
        .unwrap();
    let factor = capture.streams[0].mapping.parallelization_factor;
    assert!(
        template_text().contains(&format!("            ParallelizationFactor: {factor}\n")),
        "the template's ParallelizationFactor, {factor}, is the mapping's"
    );
    // Lambda refuses a factor outside 1-10; so does the local start.
    let e = start_error(template_with(
        &format!("            ParallelizationFactor: {factor}\n"),
        "            ParallelizationFactor: 11\n",
    ))
    .await;
    assert!(
        e.contains("ParallelizationFactor") && e.contains("1-10"),
        "{e}"
    );

    // 30 items written three times each (INSERT, then two MODIFYs), read by a mapping of
    // factor 4 and batches of 10 whose target takes 40 ms per batch.
    let clients = clients().await;
    let table = unique("lanes");
    ctwa_shared::tables::create_inbox_table(&clients.dynamodb, &table)
        .await
        .unwrap();
    for v in 0..3 {
        for i in 0..30 {
            clients
                .dynamodb
                .put_item()
                .table_name(&table)
                .item(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("k{i}")),
                )
                .item(
                    "v",
                    aws_sdk_dynamodb::types::AttributeValue::N(v.to_string()),
                )
                .send()
                .await
                .unwrap();
        }
    }
    let lanes = std::sync::Arc::new(Lanes::default());
    let feeder = ctwa_local::stream::StreamFeeder::new(
        clients.dynamodb.clone(),
        clients.streams.clone(),
        table,
        lanes.clone(),
        ctwa_local::stream::MappingConfig {
            batch_size: 10,
            batching_window: Duration::ZERO,
            parallelization_factor: 4,
            event_names: None,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(feeder.run(rx));
    eventually("every record delivered", Duration::from_secs(60), || {
        let n: usize = lanes.seen.lock().unwrap().values().map(Vec::len).sum();
        async move { (n >= 90).then_some(()) }
    })
    .await;
    let _ = stop.send(true);
    let _ = run.await;
    use std::sync::atomic::Ordering::SeqCst;
    let seen = lanes.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 30);
    for (k, vs) in &seen {
        assert_eq!(
            vs,
            &[0, 1, 2],
            "{k}: its records in stream order, once each"
        );
    }
    assert_eq!(
        lanes.overlaps.load(SeqCst),
        0,
        "a key in two batches at once"
    );
    let most = lanes.most.load(SeqCst);
    assert!(
        (2..=4).contains(&most),
        "up to 4 batches of the shard at once, and more than one: {most}"
    );
}

#[tokio::test]
async fn the_stage_throttle_of_the_template_answers_429_per_route_as_api_gateway_does() {
    // The template with its throttling parameters' defaults lowered: 1 request/s, 3 at once.
    let param = |name: &str, from: &str, to: &str| {
        (
            format!("  {name}:\n    Type: Number\n    Default: {from}\n"),
            format!("  {name}:\n    Type: Number\n    Default: {to}\n"),
        )
    };
    let (rate, burst) = (
        param("ApiThrottlingRateLimit", "5000", "1"),
        param("ApiThrottlingBurstLimit", "5000", "3"),
    );
    let app = spawn_app_with(AppOptions {
        template: Some(template_variant(&[
            (&rate.0, &rate.1),
            (&burst.0, &burst.1),
        ])),
        ..Default::default()
    })
    .await;
    // A full bucket, then four at once: the fourth finds it empty.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for _ in 0..4 {
        let (s, v) = app.get("/v1/status", &app.api_key).await;
        statuses.push(s);
        last = v;
    }
    assert_eq!(statuses, [200, 200, 200, 429], "{last}");
    assert_eq!(last, json!({"message": "Too Many Requests"}));
    // Another route has its own bucket.
    let (s, v) = app.get("/v1/capi", &app.api_key).await;
    assert_eq!(s, 200, "{v}");
    // Refilled at the rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, v) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn a_failed_scheduled_run_is_retried_as_its_event_invoke_config_says_then_kept_in_the_failure_queue()
 {
    // The resend and refresh jobs cannot read the data table's indexes: each run fails.
    let mut text = template_text();
    for f in ["ConversionsResendFunction", "TokenRefreshFunction"] {
        text = without_action(&text, f, "dynamodb:Query");
    }
    let app = spawn_app_with(AppOptions {
        template: Some(template_file(&text)),
        expect_access_denied: true,
        ..Default::default()
    })
    .await;
    use ctwa_local::lambda::AsyncOutcome;
    // The resend job: no retry (the next run does the same work).
    let out = app
        .stack
        .lambda
        .invoke_scheduled_async("ConversionsResendFunction")
        .await;
    assert_eq!(
        out,
        Some(AsyncOutcome::Failed {
            attempts: 1,
            sent: true,
            condition: "RetriesExhausted"
        })
    );
    // The token refresh: tried three times.
    let out = app
        .stack
        .lambda
        .invoke_scheduled_async("TokenRefreshFunction")
        .await;
    assert_eq!(
        out,
        Some(AsyncOutcome::Failed {
            attempts: 3,
            sent: true,
            condition: "RetriesExhausted"
        })
    );
    // Lambda's records, in the queue the template names (sent with each function's role).
    let (_, url) = app.stack.lambda.resources.queues["ScheduledJobFailureQueue"].clone();
    let mut records: Vec<Value> = Vec::new();
    for _ in 0..5 {
        let got = app
            .clients
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for m in got.messages.unwrap_or_default() {
            records.push(serde_json::from_str(m.body().unwrap()).unwrap());
        }
        if records.len() >= 2 {
            break;
        }
    }
    assert_eq!(records.len(), 2, "{records:?}");
    for r in &records {
        assert_eq!(r["requestContext"]["condition"], "RetriesExhausted", "{r}");
        assert_eq!(r["requestPayload"]["detail-type"], "Scheduled Event", "{r}");
        assert_eq!(r["responseContext"]["functionError"], "Unhandled", "{r}");
        assert!(r["responsePayload"]["errorMessage"].is_string(), "{r}");
    }
    let counts: Vec<i64> = {
        let mut c: Vec<i64> = records
            .iter()
            .map(|r| {
                r["requestContext"]["approximateInvokeCount"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        c.sort();
        c
    };
    assert_eq!(counts, [1, 3]);
}
