//! The real `ctwa` binary against the real local stack (started in process by the test
//! support crate, on DynamoDB Local, the Secrets Manager emulator and the Graph
//! simulator): seed 001's quick start as written, the error cases and their exit codes,
//! and where the connection settings come from.
//!
//! Every run starts from an empty environment, in an empty temporary directory with its
//! own HOME, so nothing of the machine (a developer's `.ctwa/local.json`, config file or
//! CTWA_* variables) leaks in.

use ctwa_shared::meta::connection::REQUIRED_SCOPES;
use ctwa_shared::store::{AdAccountLink, AdInventory};
use ctwa_tests::{FIXTURE_PNID, TestApp, eventually, spawn_app, unique};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

mod common;
use common::{Run, TempDir, ctwa_in, run, temp_dir};

const WABA: &str = "102290129340398";
const CUSTOMER: &str = "+919876543210";

/// The app's URL and key in the environment, like a configured shell.
struct Shell {
    dir: TempDir,
    url: String,
    key: String,
    secrets: Vec<String>,
    outputs: Vec<String>,
}

impl Shell {
    fn new(app: &TestApp) -> Self {
        Self {
            dir: temp_dir(),
            url: app.base.clone(),
            key: app.api_key.clone(),
            secrets: vec![app.api_key.clone(), app.cfg.app_secret.clone()],
            outputs: Vec::new(),
        }
    }
    async fn run(&mut self, args: &[&str]) -> Run {
        let env = [
            ("CTWA_API_URL", self.url.as_str()),
            ("CTWA_API_KEY", self.key.as_str()),
        ];
        let r = ctwa_in(&self.dir, &env, args).await;
        self.outputs.push(format!("{}{}", r.stdout, r.stderr));
        r
    }
    /// A run that borrows nothing (for polling); its output is not recorded.
    fn detached(&self, args: &[&str]) -> impl std::future::Future<Output = Run> + use<> {
        let (dir, url, key) = (self.dir.to_path_buf(), self.url.clone(), self.key.clone());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctwa_in(
                &dir,
                &[("CTWA_API_URL", &url), ("CTWA_API_KEY", &key)],
                &args,
            )
            .await
        }
    }
    /// Neither the key nor the app secret was ever printed.
    fn assert_no_secret_printed(&self) {
        for out in &self.outputs {
            for s in &self.secrets {
                assert!(!out.contains(s.as_str()), "a secret was printed:\n{out}");
            }
        }
    }
}

fn clid_from(stderr: &str) -> String {
    stderr
        .split("ctwa_clid ")
        .nth(1)
        .and_then(|r| r.split([',', ' ', '\n']).next())
        .unwrap_or_else(|| panic!("no ctwa_clid in: {stderr}"))
        .to_string()
}

async fn wait_for_click(sh: &Shell, phone: &str, clid: &str) -> Value {
    eventually("the click is captured", Duration::from_secs(30), || {
        let r = sh.detached(&["conversations", "--phone", phone]);
        async move {
            let v = r.await.ok().json();
            let conv = v["conversations"][0].clone();
            (conv["metadata"]["ctwa_clid"] == clid).then_some(conv)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_001_quick_start_as_written() {
    let app = spawn_app().await;
    let mut sh = Shell::new(&app);

    // 1. Status: has CAPI been wired up yet? (`ctwa`, the default command)
    let v = sh.run(&[]).await.ok().json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["account_id"], app.account_id.as_str());
    assert_eq!(v["connected"], false);
    assert_eq!(v["status"], "not_connected");
    assert_eq!(v["capi"]["connected"], false);

    // 2. Connect Meta with the code the OAuth dialog returned.
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    let v = sh
        .run(&["exchange-code", "--code", &code])
        .await
        .ok()
        .json();
    assert_eq!(v["connected"], true, "{v}");
    assert_eq!(v["waba_id"], WABA);
    let v = sh.run(&[]).await.ok().json();
    assert_eq!(v["connected"], true, "{v}");

    // 3. Configure CAPI events (the dataset is created on Meta on the first save).
    let v = sh
        .run(&[
            "capi",
            "save",
            "--lead-enabled",
            "true",
            "--lead-trigger",
            "form_submitted",
            "--lead-tag",
            "lead",
            "--purchase-enabled",
            "true",
            "--purchase-trigger",
            "order_placed",
            "--purchase-tag",
            "buyer",
            "--purchase-currency",
            "INR",
        ])
        .await
        .ok()
        .json();
    let capi = &v["capi"];
    assert_eq!(v["success"], true, "{v}");
    assert!(capi["dataset_id"].is_string(), "{v}");
    assert_eq!(capi["lead_event_trigger"], "form_submitted");
    assert_eq!(capi["purchase_event_tag"], "buyer");
    assert_eq!(capi["purchase_event_currency"], "INR");
    assert_eq!(capi["connected"], true);
    // Only the flags given change.
    let v = sh
        .run(&["capi", "save", "--purchase-value", "0", "--lead-tag", "hot"])
        .await
        .ok()
        .json();
    assert_eq!(v["capi"]["lead_event_tag"], "hot");
    assert_eq!(v["capi"]["lead_event_trigger"], "form_submitted");
    let shown = sh.run(&["capi"]).await.ok().json();
    assert_eq!(shown["capi"], v["capi"]);
    let dataset = sh.run(&["dataset"]).await.ok().json();
    assert_eq!(dataset["dataset_id"], v["capi"]["dataset_id"]);
    assert_eq!(dataset["configured"], true);

    // The customer taps the ad: Meta's webhook with the click, signed with the app secret.
    let r = sh
        .run(&[
            "webhook",
            "simulate",
            "--phone-number-id",
            FIXTURE_PNID,
            "--from",
            CUSTOMER,
            "--app-secret",
            &app.cfg.app_secret,
        ])
        .await
        .ok();
    let v = r.json();
    assert_eq!(v["stored"], 1, "{v}");
    let clid = clid_from(&r.stderr);
    let conv = wait_for_click(&sh, CUSTOMER, &clid).await;
    assert_eq!(conv["customer"]["wa_id"], "919876543210");

    // 4. Test-fire a lead event for that contact: it really reaches Meta.
    let r = sh
        .run(&[
            "capi",
            "send-event",
            "--event-type",
            "lead",
            "--phone",
            CUSTOMER,
        ])
        .await
        .ok();
    let v = r.json();
    assert_eq!(v["success"], true, "{v}\n{}", r.stderr);
    assert_eq!(v["status"], "delivered");
    assert_eq!(v["event_name"], "LeadSubmitted");
    assert_eq!(v["ctwa_clid"], clid.as_str());
    assert_eq!(v["warnings"], json!([]), "a fresh click is in the window");
    assert_eq!(v["attribution"]["conversation_id"], conv["id"]);
    let at_meta = app.sim.sim.received_events();
    assert!(
        at_meta
            .iter()
            .any(|e| e["event"]["event_name"] == "LeadSubmitted"
                && e["event"]["user_data"]["ctwa_clid"] == clid.as_str()),
        "{at_meta:?}"
    );

    // The seed's purchase, then the same event id again: deduplicated.
    let purchase = [
        "capi",
        "send-event",
        "--event-type",
        "purchase",
        "--phone",
        CUSTOMER,
        "--value",
        "1499",
        "--currency",
        "INR",
        "--event-id",
        "order-1499",
    ];
    let v = sh.run(&purchase).await.ok().json();
    assert_eq!(v["status"], "delivered", "{v}");
    assert_eq!(v["event_name"], "Purchase");
    let r = sh.run(&purchase).await.ok();
    assert_eq!(r.json()["duplicate"], true);
    assert!(r.stderr.contains("sent before"), "{}", r.stderr);
    // A purchase without an amount takes the CAPI config's (0 INR).
    let r = sh
        .run(&[
            "capi",
            "send-event",
            "--event-type",
            "purchase",
            "--phone",
            CUSTOMER,
        ])
        .await
        .ok();
    assert_eq!(r.json()["status"], "delivered", "{}", r.stderr);
    assert!(r.stderr.contains("the CAPI config's 0 INR"), "{}", r.stderr);
    // A phone with no click yet: kept, waiting for its click, not an error.
    let r = sh
        .run(&[
            "capi",
            "send-event",
            "--event-type",
            "lead",
            "--phone",
            "+15550001111",
        ])
        .await
        .ok();
    assert_eq!(r.json()["reason"], "waiting_for_click");
    assert!(
        r.stderr.contains("sent when its click is captured"),
        "{}",
        r.stderr
    );

    // The audit trail, as JSON and as a table; the conversation by id.
    let v = sh.run(&["conversions", "--limit", "10"]).await.ok().json();
    assert_eq!(v["events"].as_array().map(Vec::len), Some(4), "{v}");
    let t = sh.run(&["conversions", "--table"]).await.ok();
    assert!(t.stdout.starts_with("TIMESTAMP "), "{}", t.stdout);
    assert!(t.stdout.contains("order-1499"), "{}", t.stdout);
    let id = conv["id"].as_str().expect("conversation id");
    let v = sh.run(&["conversation", id]).await.ok().json();
    assert_eq!(v["id"], id);
    assert_eq!(v["clicks"][0]["ctwa_clid"], clid.as_str());
    let t = sh
        .run(&["conversations", "--phone", CUSTOMER, "--table"])
        .await
        .ok();
    assert!(t.stdout.contains(id), "{}", t.stdout);

    // Refresh the stored token.
    let v = sh.run(&["refresh-token"]).await.ok().json();
    assert_eq!(v["success"], true, "{v}");

    // Troubleshooting: a used code is 400 "Invalid code", with Meta's own message.
    let r = sh.run(&["exchange-code", "--code", &code]).await.exit(1);
    assert!(
        r.stderr
            .starts_with("error: HTTP 400 invalid_code: Invalid code\n"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("meta: This authorization code has been used."),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: codes are single-use"));
    assert_eq!(r.stdout, "");
    let r = sh
        .run(&["-v", "exchange-code", "--code", &code])
        .await
        .exit(1);
    assert!(
        r.stderr.contains(r#"> {"code":"<redacted>"}"#),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains(&code),
        "-v shows no OAuth code: {}",
        r.stderr
    );

    // Verbose shows the requests, never the key.
    let r = sh.run(&["-v", "capi"]).await.ok();
    assert!(r.stderr.contains("> GET "), "{}", r.stderr);
    assert!(r.stderr.contains("< 200 ("), "{}", r.stderr);
    sh.assert_no_secret_printed();
    app.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_readable_with_their_exit_codes() {
    let app = spawn_app().await;
    let mut sh = Shell::new(&app);
    let dir = temp_dir();

    // A wrong key: 4xx, exit 1, a readable message, the key not echoed.
    let bad = "ctwa_not-a-real-key-0000000000000000000000000";
    let r = ctwa_in(
        &dir,
        &[("CTWA_API_URL", &app.base), ("CTWA_API_KEY", bad)],
        &["-v"],
    )
    .await
    .exit(1);
    assert!(
        r.stderr
            .contains("error: HTTP 401 unauthorized: invalid API key"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(bad) && !r.stdout.contains(bad));
    assert_eq!(r.stdout, "");

    // Nothing listens: exit 3.
    let r = ctwa_in(
        &dir,
        &[],
        &["--api-url", "http://127.0.0.1:1", "--api-key", "k", "capi"],
    )
    .await
    .exit(3);
    assert!(
        r.stderr
            .starts_with("error: cannot reach http://127.0.0.1:1"),
        "{}",
        r.stderr
    );

    // Nothing configured: exit 4, saying where settings come from.
    let r = ctwa_in(&dir, &[], &[]).await.exit(4);
    assert!(
        r.stderr.contains("no API URL configured") && r.stderr.contains("CTWA_API_URL"),
        "{}",
        r.stderr
    );
    let r = ctwa_in(&dir, &[("CTWA_API_URL", &app.base)], &["capi"])
        .await
        .exit(4);
    assert!(r.stderr.contains("no API key configured"), "{}", r.stderr);
    let r = ctwa_in(&dir, &[], &["--config", "missing.toml"])
        .await
        .exit(4);
    assert!(r.stderr.contains("missing.toml"), "{}", r.stderr);

    // Usage errors: exit 2 (clap's), before any request.
    for args in [
        &["capi", "send-event", "--phone", CUSTOMER][..],
        &["capi", "save"],
        &["conversations"],
        &["conversations", "--phone", "1", "--user-id", "u"],
        &["capi", "save", "--lead-enabled", "maybe"],
        &["exchange-code", "--code", "x", "--granted-scopes", "[1]"],
        &["nope"],
    ] {
        ctwa_in(&dir, &[], args).await.exit(2);
    }
    // No code and no local run to take a demo code from.
    let r = sh.run(&["exchange-code"]).await.exit(2);
    assert!(r.stderr.contains("--code"), "{}", r.stderr);

    // Meta not connected yet: a conflict to resolve with exchange-code.
    let r = sh
        .run(&[
            "capi",
            "send-event",
            "--event-type",
            "lead",
            "--phone",
            CUSTOMER,
        ])
        .await
        .exit(1);
    assert!(
        r.stderr.contains("HTTP 409 meta_not_connected"),
        "{}",
        r.stderr
    );
    // An unknown id, an event name Meta refuses.
    let r = sh
        .run(&["conversation", "c_000000000000000000000000"])
        .await
        .exit(1);
    assert!(
        r.stderr.contains(
            "error: HTTP 404 not_found: conversation c_000000000000000000000000 not found"
        ),
        "{}",
        r.stderr
    );
    let r = sh
        .run(&[
            "capi",
            "send-event",
            "--event-type",
            "Contact",
            "--phone",
            CUSTOMER,
        ])
        .await
        .exit(1);
    assert!(
        r.stderr.contains("HTTP 400 bad_request") && r.stderr.contains("LeadSubmitted"),
        "{}",
        r.stderr
    );
    // A wrong app secret: the webhook is refused.
    let r = sh
        .run(&[
            "webhook",
            "simulate",
            "--phone-number-id",
            FIXTURE_PNID,
            "--from",
            CUSTOMER,
            "--app-secret",
            "not-the-secret",
        ])
        .await
        .exit(1);
    assert!(r.stderr.contains("HTTP 401"), "{}", r.stderr);
    sh.assert_no_secret_printed();
    app.stack.stop().await;
}

fn write_local_run(root: &Path, v: &Value) {
    std::fs::create_dir_all(root.join(".ctwa")).expect("dir");
    std::fs::write(
        root.join(".ctwa/local.json"),
        serde_json::to_vec_pretty(v).expect("json"),
    )
    .expect("local.json");
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_come_from_flags_env_config_then_the_local_run() {
    let app = spawn_app().await;
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);

    // A local run's .ctwa/local.json, found from a subdirectory.
    let root = temp_dir();
    write_local_run(
        &root,
        &json!({
            "base_url": app.base, "api_key": app.api_key, "account_id": app.account_id,
            "app_secret": app.cfg.app_secret, "phone_number_id": FIXTURE_PNID,
            "waba_id": WABA, "oauth_code": code,
        }),
    );
    let sub = root.join("a/b");
    std::fs::create_dir_all(&sub).expect("subdir");
    let v = ctwa_in(&sub, &[], &[]).await.ok().json();
    assert_eq!(v["account_id"], app.account_id.as_str());
    // The demo OAuth code, the business number and the app secret come from it too.
    let r = ctwa_in(&sub, &[], &["exchange-code"]).await.ok();
    assert_eq!(r.json()["connected"], true);
    assert!(
        r.stderr.contains("using the local run's demo OAuth code"),
        "{}",
        r.stderr
    );
    let r = ctwa_in(
        &sub,
        &[],
        &["webhook", "simulate", "--from", "919800000001"],
    )
    .await
    .ok();
    assert_eq!(r.json()["stored"], 1, "{}", r.stderr);
    // The environment wins over the local run...
    ctwa_in(&sub, &[("CTWA_API_KEY", "ctwa_wrong")], &[])
        .await
        .exit(1);
    // ...and the local run's key never goes to another URL.
    let r = ctwa_in(&sub, &[("CTWA_API_URL", "http://127.0.0.1:1")], &[])
        .await
        .exit(4);
    assert!(r.stderr.contains("no API key"), "{}", r.stderr);

    // A TOML config file (--config), a JSON one in ~/.config/ctwa/config.json.
    let dir = temp_dir();
    std::fs::write(
        dir.join("ctwa.toml"),
        format!(
            "api_url = \"{}\"\napi_key = \"{}\"\n",
            app.base, app.api_key
        ),
    )
    .expect("toml");
    let v = ctwa_in(&dir, &[], &["--config", "ctwa.toml", "capi"])
        .await
        .ok()
        .json();
    assert_eq!(v["capi"]["connected"], true);
    let home_dir = temp_dir();
    std::fs::create_dir_all(home_dir.join(".config/ctwa")).expect("dir");
    std::fs::write(
        home_dir.join(".config/ctwa/config.json"),
        json!({"api_url": app.base, "api_key": app.api_key}).to_string(),
    )
    .expect("json");
    ctwa_in(&home_dir, &[], &["dataset"]).await.ok();
    // Env over the config file, flags over env.
    ctwa_in(&home_dir, &[("CTWA_API_KEY", "ctwa_wrong")], &["dataset"])
        .await
        .exit(1);
    ctwa_in(
        &home_dir,
        &[("CTWA_API_KEY", "ctwa_wrong")],
        &["--api-key", &app.api_key, "dataset"],
    )
    .await
    .ok();
    // A broken config file is a configuration error.
    std::fs::write(dir.join("bad.toml"), "api_url = ").expect("toml");
    let r = ctwa_in(&dir, &[], &["--config", "bad.toml"]).await.exit(4);
    assert!(r.stderr.contains("invalid TOML"), "{}", r.stderr);

    // A stale local.json (the local run stopped): unreachable, and it says why.
    let stale = temp_dir();
    write_local_run(
        &stale,
        &json!({"base_url": "http://127.0.0.1:1", "api_key": "ctwa_x"}),
    );
    let r = ctwa_in(&stale, &[], &[]).await.exit(3);
    assert!(
        r.stderr.contains(".ctwa/local.json") && r.stderr.contains("scripts/local.sh"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("ctwa_x"));
    app.stack.stop().await;
}

// ----------------------------------------------------------------- ads and admin

#[tokio::test(flavor = "multi_thread")]
async fn ads_create_list_and_show() {
    let app = spawn_app().await;
    let mut sh = Shell::new(&app);
    let code = app.oauth_code(&REQUIRED_SCOPES, WABA);
    sh.run(&["exchange-code", "--code", &code]).await.ok();
    app.sim.sim.add_ad_account(&json!({
        "id": "act_1001", "page_ids": ["1110001"], "whatsapp_numbers": [CUSTOMER],
    }));
    app.stack
        .data
        .link_ad_account(&AdAccountLink {
            ad_account_id: "act_1001".into(),
            account_id: app.account_id.clone(),
            page_id: Some("1110001".into()),
            linked_at_ms: 0,
        })
        .await
        .expect("link");

    let image = sh.dir.join("ad.png");
    std::fs::write(&image, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").expect("image");
    let image = image.to_string_lossy().into_owned();
    let create = [
        "ads",
        "create",
        "--name",
        "Summer Succulents",
        "--daily-budget",
        "100000",
        "--whatsapp-number",
        CUSTOMER,
        "--page-id",
        "1110001",
        "--countries",
        "IN,AE",
        "--age-min",
        "25",
        "--age-max",
        "34",
        "--message",
        "Chat with us",
        "--image",
        &image,
        "--idempotency-key",
        "cli-test-1",
    ];
    let r = sh.run(&create).await.ok();
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    let ad_id = v["ad_id"].as_str().expect("ad_id").to_string();
    assert!(r.stderr.contains("✓ 1/5 image "), "{}", r.stderr);
    assert!(r.stderr.contains("✓ 5/5 ad "), "{}", r.stderr);
    assert!(r.stderr.contains("idempotency key: cli-test-1"));
    // The same key again: the first outcome, nothing created twice.
    let again = sh.run(&create).await.ok().json();
    assert_eq!(again["ad_id"], ad_id.as_str());

    let v = sh.run(&["ads"]).await.ok().json();
    assert!(
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|a| a["ad_id"] == ad_id.as_str()),
        "{v}"
    );
    assert!(v["paging"].is_object(), "{v}");
    let t = sh.run(&["ads", "--table", "--limit", "10"]).await.ok();
    assert!(t.stdout.starts_with("AD_ID "), "{}", t.stdout);

    // A click on that ad shows on the ad.
    sh.run(&[
        "webhook",
        "simulate",
        "--phone-number-id",
        FIXTURE_PNID,
        "--from",
        CUSTOMER,
        "--source-id",
        &ad_id,
        "--app-secret",
        &app.cfg.app_secret,
    ])
    .await
    .ok();
    let v = eventually(
        "the click counts on the ad",
        Duration::from_secs(30),
        || {
            let r = sh.detached(&["ad", &ad_id]);
            async move {
                let v = r.await.ok().json();
                (v["clicks"] == 1).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(v["ad"]["id"], ad_id.as_str(), "{v}");
    assert!(v["conversions"]["total"].is_number(), "{v}");

    // A step Meta refuses: the failed step and the cleanup, readable.
    let fault: graph_sim::Fault = serde_json::from_value(json!({
        "path": "/adcreatives", "status": 400, "code": 100, "message": "Invalid creative", "times": 5,
    }))
    .expect("fault");
    app.sim.sim.add_fault(fault);
    let r = sh
        .run(&[
            "ads",
            "create",
            "--name",
            "Refused",
            "--daily-budget",
            "100000",
            "--whatsapp-number",
            CUSTOMER,
            "--countries",
            "IN",
            "--message",
            "Chat with us",
        ])
        .await;
    assert!(matches!(r.code, 1 | 3), "{}", r.stderr);
    assert!(r.stderr.contains("ad_creation_failed"), "{}", r.stderr);
    assert!(r.stderr.contains("failed step:"), "{}", r.stderr);
    assert!(r.stderr.contains("meta: Invalid creative"), "{}", r.stderr);
    assert!(r.stderr.contains("cleanup: campaign "), "{}", r.stderr);
    sh.assert_no_secret_printed();
    app.stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_accounts_and_api_keys() {
    let app = spawn_app().await;
    let mut admin = Shell::new(&app);
    admin.key = app.operator_key().await;
    admin.secrets.push(admin.key.clone());
    let id = unique("acme");
    // The Sinch app's secret comes from a file, never from the command line.
    let sinch_secret = unique("acme-sinch-secret");
    admin.secrets.push(sinch_secret.clone());
    let secret_file = std::env::temp_dir().join(unique("sinch-secret"));
    std::fs::write(&secret_file, format!("{sinch_secret}\n")).unwrap();
    let sinch_app = format!("ACME{}", &unique("x")[2..]);
    let v = admin
        .run(&[
            "admin",
            "account",
            "create",
            "--name",
            "Acme",
            "--id",
            &id,
            "--waba-id",
            "55500011",
            "--phone-number-id",
            "7770001",
            "--phone-number-id",
            "7770002",
            "--sinch-app-id",
            &sinch_app,
            "--sinch-webhook-secret-file",
            secret_file.to_str().unwrap(),
            "--ad-account-id",
            "act_42",
            "--page-id",
            "999",
        ])
        .await
        .ok()
        .json();
    std::fs::remove_file(&secret_file).ok();
    assert_eq!(v["account"]["id"], id.as_str(), "{v}");
    assert_eq!(v["account"]["sinch_webhook_secret_set"], true, "{v}");
    // The secret signs the app's callbacks, exactly as written in the file (no newline).
    let now = ctwa_shared::time::rfc3339_millis(ctwa_shared::time::now_millis());
    let cb = serde_json::json!({"app_id": sinch_app, "event_time": now,
        "message": {"id": unique("m"), "direction": "TO_APP",
            "channel_identity": {"channel": "WHATSAPP", "identity": "46700000909"},
            "contact_message": {"text_message": {"text": "hi"}}}});
    let (s, body) = app
        .post_sinch_signed_with(&sinch_secret, cb.to_string())
        .await;
    assert_eq!(s, 200, "{body}");
    let v = admin
        .run(&["admin", "account", "show", &id])
        .await
        .ok()
        .json();
    assert_eq!(v["account"]["name"], "Acme", "{v}");
    admin
        .run(&[
            "admin",
            "ad-account",
            "link",
            "--account",
            &id,
            "--ad-account-id",
            "act_43",
        ])
        .await
        .ok();

    // A key for the new account: shown once, and it works.
    let r = admin
        .run(&[
            "admin",
            "api-key",
            "create",
            "--account",
            &id,
            "--name",
            "ci",
            "--scope",
            "read,keys",
        ])
        .await
        .ok();
    let created = r.json();
    assert!(r.stderr.contains("shown once"));
    let key = created["key"].as_str().expect("key").to_string();
    let key_id = created["key_id"].as_str().expect("key_id").to_string();
    let mut acme = Shell::new(&app);
    acme.key = key.clone();
    assert_eq!(acme.run(&[]).await.ok().json()["account_id"], id.as_str());
    let v = admin
        .run(&["admin", "api-key", "list", "--account", &id])
        .await
        .ok()
        .json();
    assert!(
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|k| k["key_id"] == key_id.as_str()),
        "{v}"
    );
    // The account key manages its own keys: rotate with a grace period, list, revoke.
    let rotated = acme
        .run(&["api-key", "rotate", &key_id, "--grace-seconds", "60"])
        .await
        .ok()
        .json();
    assert_eq!(rotated["replaces"], key_id.as_str(), "{rotated}");
    let new_key = rotated["key"].as_str().expect("key").to_string();
    // In its grace period the old key still reads, but manages no keys.
    acme.run(&["api-key", "list"]).await.exit(1);
    acme.key = new_key;
    let t = acme.run(&["api-key", "list", "--table"]).await.ok();
    assert!(t.stdout.starts_with("KEY_ID "), "{}", t.stdout);
    let v = acme
        .run(&["api-key", "create", "--name", "spare"])
        .await
        .ok()
        .json();
    let spare = v["key_id"].as_str().expect("key_id").to_string();
    assert_eq!(v["scopes"], json!(["read"]), "the least by default: {v}");
    // Never more than the key that mints it holds.
    acme.run(&["api-key", "create", "--scope", "ads"])
        .await
        .exit(1);
    acme.run(&["api-key", "revoke", &spare]).await.ok();
    admin
        .run(&["admin", "api-key", "revoke", &key_id])
        .await
        .ok();
    let mut old = Shell::new(&app);
    old.key = key;
    old.run(&[]).await.exit(1);
    // An account key is not an operator key.
    acme.run(&["admin", "account", "show", &id]).await.exit(1);
    admin.assert_no_secret_printed();
    app.stack.stop().await;
}

/// Runs `script` with `sh -c`, the `ctwa` binary first on PATH, the shell's settings in
/// the environment: a seed's pipeline exactly as its documentation writes it.
async fn pipeline(sh: &Shell, script: &str) -> Run {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ctwa"))
        .parent()
        .expect("bin dir")
        .to_string_lossy()
        .into_owned();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", script])
        .current_dir(&*sh.dir)
        .env_clear()
        .env("HOME", &*sh.dir)
        .env("PATH", format!("{bin_dir}:/usr/local/bin:/usr/bin:/bin"))
        .env("CTWA_API_URL", &sh.url)
        .env("CTWA_API_KEY", &sh.key);
    run(cmd).await
}

/// Seed 001 as written: its `exchange-code` example with `--granted-scopes` and
/// `--redirect-uri`, then "Audit which ads are running on your account":
/// `ctwa ads | jq '.ads[] | {ad_id, name, status, daily_budget}'`, also under the
/// group's alias (`ctwa meta-ads ads`).
#[tokio::test(flavor = "multi_thread")]
async fn seed_001_ads_audit_and_exchange_code_as_written() {
    let app = spawn_app().await;
    let mut sh = Shell::new(&app);
    let redirect = "https://app.splashifypro.com/settings/ctwa/callback";
    let code = app.sim.sim.create_code(
        &json!({"scopes": REQUIRED_SCOPES, "waba_id": WABA, "redirect_uri": redirect}),
    )["code"]
        .as_str()
        .expect("code")
        .to_string();
    let v = sh
        .run(&[
            "exchange-code",
            "--code",
            &code,
            "--granted-scopes",
            r#"["ads_management","pages_show_list"]"#,
            "--redirect-uri",
            redirect,
        ])
        .await
        .ok()
        .json();
    assert_eq!(v["connected"], true, "{v}");

    app.sim.sim.add_ad_account(&json!({
        "id": "act_1001", "page_ids": ["1110001"], "whatsapp_numbers": [CUSTOMER],
    }));
    app.stack
        .data
        .link_ad_account(&AdAccountLink {
            ad_account_id: "act_1001".into(),
            account_id: app.account_id.clone(),
            page_id: Some("1110001".into()),
            linked_at_ms: 0,
        })
        .await
        .expect("link");
    let v = sh
        .run(&[
            "ads",
            "create",
            "--name",
            "Diwali 2026",
            "--daily-budget",
            "100000",
            "--whatsapp-number",
            CUSTOMER,
            "--countries",
            "IN",
            "--message",
            "Diwali offer",
        ])
        .await
        .ok()
        .json();
    let ad_id = v["ad_id"].as_str().expect("ad_id").to_string();

    for script in [
        "ctwa ads | jq '.ads[] | {ad_id, name, status, daily_budget}'",
        "ctwa meta-ads ads | jq '.ads[] | {ad_id, name, status, daily_budget}'",
    ] {
        let r = pipeline(&sh, script).await;
        assert_eq!(r.code, 0, "{script}: {}", r.stderr);
        let row: Value = serde_json::from_str(&r.stdout).expect(&r.stdout);
        assert_eq!(
            row,
            json!({"ad_id": ad_id, "name": "Diwali 2026 — ad", "status": "PAUSED", "daily_budget": 100000}),
            "{script}"
        );
    }
    // `ctwa ad <ad_id>` under the alias too.
    let v = sh.run(&["meta-ads", "ad", &ad_id]).await.ok().json();
    assert_eq!(v["ad"]["id"], ad_id.as_str(), "{v}");
    sh.assert_no_secret_printed();
    app.stack.stop().await;
}

/// Issue 15's fault test: a record capture keeps failing goes to the on-failure queue;
/// once the fault is gone, `ctwa admin replay --dead-letters` captures its message and
/// empties the queue; replaying it again (the queue, the message id, the time range)
/// changes nothing and duplicates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_goes_to_the_dead_letter_queue_and_admin_replay_brings_it_back_once() {
    use ctwa_tests::fault_proxy::{FaultConfig, FaultProxy, spawn_app_through};
    // The template as it is, with one retry instead of ten (the same path, sooner).
    let template = ctwa_tests::template_variant(&[(
        "            MaximumRetryAttempts: 10\n",
        "            MaximumRetryAttempts: 1\n",
    )]);
    let proxy = FaultProxy::start(
        &std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("AWS_ENDPOINT_URL_DYNAMODB"),
    )
    .await;
    let app = spawn_app_through(
        &proxy.url(),
        ctwa_tests::AppOptions {
            template: Some(template),
            ..Default::default()
        },
    )
    .await;
    let operator = app.operator_key().await;
    let mut sh = Shell::new(&app);
    sh.key = operator.clone();
    sh.secrets.push(operator);
    let mut account = Shell::new(&app);

    // The poison: every conversation write of the data table fails.
    proxy.set(FaultConfig {
        tables: vec![app.cfg.data_table.clone()],
        operations: vec!["UpdateItem".into()],
        error_500: 1.0,
        ..FaultConfig::default()
    });
    let phone = "16505550777";
    let (s, v) = app
        .post_webhook(ctwa_tests::ctwa_webhook(
            FIXTURE_PNID,
            "wamid.POISON",
            phone,
            Some("CLID-POISON"),
            ctwa_shared::time::now_secs() - 60,
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, url) = app.stack.lambda.resources.queues["CaptureDeadLetterQueue"].clone();
    let waiting = || {
        let (sqs, url) = (app.clients.sqs.clone(), url.clone());
        async move {
            let out = sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .send()
                .await
                .ok()?;
            out.attributes?
                .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)?
                .parse::<u64>()
                .ok()
        }
    };
    eventually(
        "the batch reaches the on-failure queue",
        Duration::from_secs(60),
        || async { waiting().await.filter(|n| *n == 1) },
    )
    .await;
    // Not captured: no conversation for the customer.
    let none = account.run(&["conversations", "--phone", phone]).await;
    assert_eq!(none.ok().json()["conversations"], json!([]));

    // The fault is fixed; the operator replays the queue.
    proxy.set(FaultConfig::default());
    let r = sh.run(&["admin", "replay", "--dead-letters"]).await.ok();
    let v = r.json();
    assert!(r.stderr.contains("replay: request 1:"), "{}", r.stderr);
    assert_eq!(v["mode"], "dead_letters", "{v}");
    assert_eq!(
        (v["replayed"].as_u64(), v["changed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["items"][0]["inbox_id"], "wa:wamid.POISON", "{v}");
    assert_eq!(v["items"][0]["outcome"], "first_touch_captured", "{v}");
    assert_eq!(v["dead_letters"]["deleted"], 1, "{v}");
    assert_eq!(v["dead_letters"]["kept"], json!([]), "{v}");
    assert_eq!(waiting().await, Some(0));
    let conv = wait_for_click(&account, phone, "CLID-POISON").await;
    let clicks = |c: &Value| c["clicks"].as_array().map(Vec::len);
    assert_eq!(clicks(&conv), Some(1), "{conv}");

    // Again, three ways: nothing changes, nothing is duplicated.
    let again = sh
        .run(&["admin", "replay", "--dead-letters"])
        .await
        .ok()
        .json();
    assert_eq!(
        (again["replayed"].as_u64(), again["done"].as_bool()),
        (Some(0), Some(true)),
        "{again}"
    );
    let by_id = sh
        .run(&["admin", "replay", "--message-id", "wamid.POISON"])
        .await
        .ok()
        .json();
    assert_eq!(
        (by_id["replayed"].as_u64(), by_id["changed"].as_u64()),
        (Some(1), Some(0)),
        "{by_id}"
    );
    assert_eq!(
        by_id["items"],
        json!([]),
        "only what changed or failed is listed: {by_id}"
    );
    let since =
        chrono::DateTime::<chrono::Utc>::from_timestamp(ctwa_shared::time::now_secs() - 600, 0)
            .unwrap()
            .to_rfc3339();
    let range = sh
        .run(&[
            "admin",
            "replay",
            "--since",
            &since,
            "--account",
            &app.account_id,
            "--limit",
            "1",
        ])
        .await
        .ok()
        .json();
    assert_eq!(range["changed"], 0, "{range}");
    assert!(range["replayed"].as_u64() >= Some(1), "{range}");
    assert!(range["requests"].as_u64() >= Some(1), "{range}");
    let conv = wait_for_click(&account, phone, "CLID-POISON").await;
    assert_eq!(clicks(&conv), Some(1), "{conv}");

    // An account key may not replay.
    let refused = account.run(&["admin", "replay", "--dead-letters"]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    sh.assert_no_secret_printed();
}
