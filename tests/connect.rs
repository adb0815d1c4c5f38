//! The Meta connection lifecycle over HTTP: OAuth code exchange, the token in Secrets
//! Manager (the emulator), refresh, revocation, the scheduled refresh, and no token in
//! any response or log line — against the Graph simulator.

use ctwa_shared::meta::connection::{REQUIRED_SCOPES, refresh_due};
use ctwa_tests::*;
use serde_json::{Value, json};

const WABA: &str = "102290129340398";

async fn secret_value(app: &TestApp, account: &str) -> Value {
    let id = format!("{}{account}", app.cfg.token_secret_prefix());
    let out = app
        .clients
        .secrets
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .expect("token secret");
    serde_json::from_str(out.secret_string().unwrap()).unwrap()
}

async fn data_table_text(app: &TestApp) -> String {
    let out = app
        .clients
        .dynamodb
        .scan()
        .table_name(&app.cfg.data_table)
        .send()
        .await
        .unwrap();
    format!("{:?}", out.items())
}

#[tokio::test]
async fn exchange_stores_the_token_in_secrets_manager_and_a_used_code_is_invalid() {
    let app = spawn_app().await;
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["connected"], true);
    assert_eq!(v["waba_id"], WABA);
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    let stored = secret_value(&app, &app.account_id).await;
    let token = stored["access_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("EAAG"));
    assert!(!v.to_string().contains(&token));
    assert!(
        !data_table_text(&app).await.contains(&token),
        "the token must not be in the table"
    );
    // The long-lived exchange happened: the stored token is not the short one.
    let reqs = app.sim.sim.requests();
    assert!(
        reqs.iter()
            .any(|r| r["params"]["grant_type"] == "fb_exchange_token")
    );
    assert!(reqs.iter().any(|r| r["path"] == "/debug_token"));

    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["message"], "Invalid code");
    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": "AQBnot-a-code"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["message"].as_str()),
        (400, Some("Invalid code"))
    );

    let (s, v) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200);
    assert_eq!(v["connected"], true);
    assert_eq!(v["meta"]["scopes"].as_array().unwrap().len(), 4);
    assert_eq!(v["waba_id"], WABA);
    app.stack.stop().await;
}

#[tokio::test]
async fn missing_scopes_are_named() {
    let app = spawn_app().await;
    let code = app.oauth_code(&["ads_management", "pages_show_list"], WABA);
    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "Required scopes missing: whatsapp_business_management, whatsapp_business_manage_events"
    );
    assert_eq!(v["error"]["missing_scopes"].as_array().unwrap().len(), 2);
    // Declared granted scopes do not decide: Meta is asked, the token's scopes do.
    let code = app.oauth_code(&["ads_management"], WABA);
    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": code, "granted_scopes": REQUIRED_SCOPES}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Required scopes missing: pages_show_list")),
        "{v}"
    );
    let (s, _) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(s, 200);
    for bad in [
        json!({}),
        json!({"code": ""}),
        json!({"code": "c", "extra": 1}),
        json!([1]),
    ] {
        let (s, v) = app
            .post_json("/v1/oauth/exchange-code", &app.api_key, bad.clone())
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    app.stack.stop().await;
}

#[tokio::test]
async fn refresh_replaces_the_token_and_the_next_read_uses_it_without_restart() {
    let app = spawn_app().await;
    let (s, _) = app
        .post_json("/v1/oauth/refresh-token", &app.api_key, json!({}))
        .await;
    assert_eq!(s, 409, "not connected yet");
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    app.post_json(
        "/v1/oauth/exchange-code",
        &app.api_key,
        json!({"code": code}),
    )
    .await;
    let first = app.stack.connect.meta.token(&app.account_id).await.unwrap();
    // The CAPI functions have their own secrets cache (5-minute TTL, as in AWS): warm it.
    assert_eq!(
        app.stack.capi.meta.token(&app.account_id).await.unwrap(),
        first
    );
    let (s, v) = app
        .post_json("/v1/oauth/refresh-token", &app.api_key, json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["refreshed"], true);
    let stored = secret_value(&app, &app.account_id).await;
    let second = app.stack.connect.meta.token(&app.account_id).await.unwrap();
    assert_ne!(first, second);
    assert_eq!(second.expose(), stored["access_token"].as_str().unwrap());
    // Another function's next read uses the new token at once, with no restart.
    assert_eq!(
        app.stack.capi.meta.token(&app.account_id).await.unwrap(),
        second
    );
    app.stack.stop().await;
}

#[tokio::test]
async fn a_revoked_token_answers_401_and_marks_the_connection_broken() {
    let app = spawn_app().await;
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    app.post_json(
        "/v1/oauth/exchange-code",
        &app.api_key,
        json!({"code": code}),
    )
    .await;
    let token = app.stack.connect.meta.token(&app.account_id).await.unwrap();
    assert!(app.sim.sim.revoke(token.expose()));
    let (s, v) = app
        .post_json("/v1/oauth/refresh-token", &app.api_key, json!({}))
        .await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "meta_token_invalid");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reconnect")
    );
    let (_, st) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(
        (st["connected"].as_bool(), st["status"].as_str()),
        (Some(false), Some("broken"))
    );
    // A fresh code reconnects.
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    let (s, _) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &app.api_key,
            json!({"code": code}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, st) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(st["status"], "connected");
    app.stack.stop().await;
}

#[tokio::test]
async fn a_transient_meta_failure_keeps_the_connection_and_says_so() {
    let app = spawn_app().await;
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    app.post_json(
        "/v1/oauth/exchange-code",
        &app.api_key,
        json!({"code": code}),
    )
    .await;
    app.sim.sim.add_fault(
        serde_json::from_value(
            json!({"path_prefix": "/oauth/access_token", "status": 503, "code": 2}),
        )
        .unwrap(),
    );
    let (s, v) = app
        .post_json("/v1/oauth/refresh-token", &app.api_key, json!({}))
        .await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["meta_error"]["code"], 2);
    let (_, st) = app.get("/v1/status", &app.api_key).await;
    assert_eq!(st["status"], "connected");
    assert!(st["meta"]["last_error"].as_str().unwrap().contains("#2"));
    app.stack.stop().await;
}

#[tokio::test]
async fn scheduled_refresh_marks_the_revoked_one_broken_and_refreshes_the_others() {
    let app = spawn_app().await;
    let (revoked_acct, revoked_key) = app.add_account("700000001").await;
    let (system_acct, system_key) = app.add_account("700000002").await;
    for key in [&app.api_key, &revoked_key] {
        let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
        let (s, v) = app
            .post_json("/v1/oauth/exchange-code", key, json!({"code": code}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    // A system-user token that never expires.
    let code = app.sim.sim.create_code(&json!({"scopes": REQUIRED_SCOPES, "waba_id": WABA, "token_type": "SYSTEM_USER", "token_expires_in": 0}))["code"].as_str().unwrap().to_string();
    let (s, v) = app
        .post_json(
            "/v1/oauth/exchange-code",
            &system_key,
            json!({"code": code}),
        )
        .await;
    assert_eq!((s, &v["expires_at"]), (200, &Value::Null), "{v}");
    let revoked = app.stack.connect.meta.token(&revoked_acct).await.unwrap();
    app.sim.sim.revoke(revoked.expose());
    let system_before = app.stack.connect.meta.token(&system_acct).await.unwrap();
    let good_before = app.stack.connect.meta.token(&app.account_id).await.unwrap();

    // Tokens last ~60 days: a 61-day window makes both expiring ones due.
    let report = refresh_due(
        &app.stack.connect.meta,
        61 * 86_400,
        ctwa_shared::time::now_millis(),
        std::time::Instant::now() + std::time::Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.checked,
            report.refreshed,
            report.broken,
            report.failed
        ),
        (2, 1, 1, 0),
        "{report:?}"
    );
    assert_ne!(
        app.stack.connect.meta.token(&app.account_id).await.unwrap(),
        good_before
    );
    assert_eq!(
        app.stack.connect.meta.token(&system_acct).await.unwrap(),
        system_before,
        "left alone"
    );
    let (_, st) = app.get("/v1/status", &revoked_key).await;
    assert_eq!(st["status"], "broken");
    let line = ctwa_shared::meta::connection::refresh_metrics_line(&report, 0);
    let emf: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(emf["TokenRefreshFailures"], 1);
    app.stack.stop().await;
}

#[tokio::test]
async fn no_token_in_any_response_or_log_line() {
    // Every function's own log lines (their processes' stdout and stderr), at the
    // template's most verbose LogLevel.
    let app = spawn_app_with(AppOptions {
        keep_logs: true,
        log_level: Some(most_verbose_log_level()),
        ..Default::default()
    })
    .await;
    let mut bodies = String::new();
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    for (path, body) in [
        ("/v1/oauth/exchange-code", json!({"code": code})),
        ("/v1/oauth/refresh-token", json!({})),
        ("/v1/oauth/refresh-token", json!({})),
    ] {
        let (s, v) = app.post_json(path, &app.api_key, body).await;
        assert_eq!(s, 200, "{path}: {v}");
        bodies.push_str(&v.to_string());
    }
    let (_, v) = app.get("/v1/status", &app.api_key).await;
    bodies.push_str(&v.to_string());
    let tokens = app.sim.sim.issued_tokens();
    assert!(
        tokens.len() >= 3,
        "short-lived, long-lived and refreshed tokens were issued"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let text = app.stack.lambda.log_lines().join("\n");
    assert!(text.contains("Meta token refreshed"), "the capture works");
    for t in &tokens {
        assert!(!bodies.contains(t.as_str()), "token in a response");
        assert!(!text.contains(t.as_str()), "token in the logs");
    }
    assert!(
        !text.contains(&app.cfg.app_secret),
        "app secret in the logs"
    );
    app.stack.stop().await;
}
