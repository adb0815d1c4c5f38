//! Test support: each test gets the real stack deployed from template.yaml on free ports:
//! every function as its release bootstrap behind a local Lambda Runtime API and API
//! Gateway's mapping, the stream mapping feeding capture, and every AWS call through the
//! IAM gateway that enforces the template's policies, against DynamoDB Local and the
//! Secrets Manager emulator, with its own stack name, tables, secret and account.
//!
//! The servers are started by `scripts/test.sh` (README command 2), which also builds
//! the bootstraps and sets the standard AWS SDK environment pointing at the servers.

pub mod browser;
pub mod fault_proxy;
pub mod report;

use ctwa_local::{Clients, LocalConfig, Stack, start};
use ctwa_shared::auth::{Scope, generate_key};
use ctwa_shared::domain::Account;
use ctwa_shared::signature::{sign_meta, sign_sinch};
use ctwa_shared::store::{Accounts, RouteRecord, RouteStatus, RouteStore};
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};

pub const FIXTURE_PNID: &str = "1204727649384372";
pub const FIXTURE_SINCH_APP: &str = "01EB37HMH1M6SV18ASNS3G135H";
/// The WABA of the test account (and of the codes `connect_meta` exchanges).
pub const FIXTURE_WABA: &str = "102290129340398";

/// Refuses to run without the local servers' environment: the SDK would otherwise look
/// for credentials on the instance-metadata address, which must never be contacted.
pub fn require_local_env() {
    for var in [
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the tests with scripts/test.sh (README command 2), which starts DynamoDB Local and the Secrets Manager emulator"
        );
    }
    assert_eq!(
        std::env::var("AWS_EC2_METADATA_DISABLED").as_deref(),
        Ok("true"),
        "AWS_EC2_METADATA_DISABLED=true is required (scripts/test.sh sets it)"
    );
}

/// The most verbose value template.yaml's LogLevel parameter accepts.
pub fn most_verbose_log_level() -> String {
    let text = std::fs::read_to_string(ctwa_local::lambda::workspace_dir().join("template.yaml"))
        .expect("template.yaml");
    let raw = ctwa_local::lambda::template::parse_raw(&text).expect("template parses");
    let allowed: Vec<String> = raw["Parameters"]["LogLevel"]["AllowedValues"]
        .as_sequence()
        .expect("LogLevel has AllowedValues")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    ["trace", "debug", "info", "warn", "error"]
        .iter()
        .find(|l| allowed.iter().any(|a| a == *l))
        .expect("a known level")
        .to_string()
}

/// template.yaml's text.
pub fn template_text() -> String {
    std::fs::read_to_string(ctwa_local::lambda::workspace_dir().join("template.yaml"))
        .expect("template.yaml")
}

/// `text` as a new template file (a test's variant of template.yaml, for
/// `AppOptions::template`).
pub fn template_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("template")));
    std::fs::write(&path, text).expect("template variant");
    path
}

/// template.yaml with each `(from, to)` applied, each `from` occurring exactly once (so
/// a variant never changes more than the test means), as a new template file.
pub fn template_variant(replacements: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = template_text();
    for (from, to) in replacements {
        assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
        text = text.replacen(from, to, 1);
    }
    template_file(&text)
}

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("random bytes");
    format!("{prefix}-{}", hex::encode(b))
}

pub async fn clients() -> Clients {
    require_local_env();
    Clients::from_env().await
}

pub struct TestApp {
    pub stack: Stack,
    pub sim: graph_sim::RunningSim,
    pub base: String,
    pub http: reqwest::Client,
    pub clients: Clients,
    pub cfg: LocalConfig,
    pub account_id: String,
    pub api_key: String,
}

pub struct AppOptions {
    pub phone_number_id: String,
    pub sinch_app_id: String,
    /// The template's LogLevel parameter (`None`: its default).
    pub log_level: Option<String>,
    /// Keep every function log line in memory (`app.stack.lambda.log_lines()`).
    pub keep_logs: bool,
    /// Deploy this template instead of template.yaml (tests of the stack's own rules).
    pub template: Option<std::path::PathBuf>,
    /// The test provokes AccessDenied on purpose: do not fail on it.
    pub expect_access_denied: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            phone_number_id: FIXTURE_PNID.into(),
            sinch_app_id: FIXTURE_SINCH_APP.into(),
            log_level: None,
            keep_logs: false,
            template: None,
            expect_access_denied: false,
        }
    }
}

/// An answer's JSON (`null` when it is not JSON). Every answer of the ads routes (the
/// proxy and `/v1/ads`) is scanned: a Meta token must never reach a caller, at any depth
/// (issue 14: Meta writes `access_token=...` into paging links).
async fn read_answer(path: &str, resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap_or_default();
    if path.starts_with("/v25.0") || path.starts_with("/v1/ads") {
        assert!(
            !text.contains("access_token="),
            "an ads answer carries a Meta token: {path}: {text}"
        );
    }
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    let clients = clients().await;
    let mut cfg = test_config(&opts);
    let sim = start_sim(&cfg).await;
    cfg.graph_url = sim.graph_url();
    finish_app(&clients, clients.clone(), cfg, sim, &opts).await
}

/// A test stack's config: fresh tables, secrets and app credentials; a short retry
/// budget and resend delay. The Graph URL is set by the caller.
/// The `MetaPartnerAgent` the test stacks deploy with.
pub const PARTNER_AGENT: &str = "ctwa-tests";

pub fn test_config(opts: &AppOptions) -> LocalConfig {
    let stack_name = unique("stack");
    let mut lambda = ctwa_local::lambda::LambdaOptions::from_env();
    // Lambda's 1 and 2 minutes between retries of a failed scheduled run, shortened.
    lambda.async_retry_delays = [Duration::from_millis(200), Duration::from_millis(400)];
    lambda.keep_logs = opts.keep_logs;
    lambda.fail_on_access_denied = !opts.expect_access_denied;
    if let Some(t) = &opts.template {
        lambda.template_path = t.clone();
    }
    lambda.max_instances = 8;
    lambda.log_file = Some(
        ctwa_local::lambda::workspace_dir()
            .join(".ctwa/logs/tests")
            .join(format!("{stack_name}.log")),
    );
    LocalConfig {
        bind: ([127, 0, 0, 1], 0).into(),
        inbox_table: unique("inbox"),
        data_table: unique("data"),
        webhook_secret_id: unique("webhook-secret"),
        app_secret: unique("app-secret"),
        verify_token: unique("verify"),
        sinch_webhook_secret: unique("sinch"),
        inbox_ttl_days: 30,
        graph_url: String::new(),
        meta_app_id: "1234567890".into(),
        log_level: opts.log_level.clone(),
        // As a partner's deployment would set it: every events request carries it.
        partner_agent: Some(PARTNER_AGENT.into()),
        stack_name,
        retry_policy: ctwa_shared::capi::RetryPolicy {
            budget: Duration::from_secs(3),
            resend_delay: Duration::from_millis(500),
            ..Default::default()
        },
        lambda,
    }
}

/// The Graph simulator for the app of `cfg`.
pub async fn start_sim(cfg: &LocalConfig) -> graph_sim::RunningSim {
    graph_sim::start(
        ([127, 0, 0, 1], 0).into(),
        graph_sim::SimConfig {
            app_id: cfg.meta_app_id.clone(),
            app_secret: cfg.app_secret.clone(),
        },
    )
    .await
    .expect("graph simulator starts")
}

/// Starts the stack on `stack_clients` and seeds the test account and its API key;
/// `clients` are the test's own (straight to the local servers).
pub(crate) async fn finish_app(
    stack_clients: &Clients,
    clients: Clients,
    cfg: LocalConfig,
    sim: graph_sim::RunningSim,
    opts: &AppOptions,
) -> TestApp {
    let stack = start(stack_clients, cfg.clone())
        .await
        .expect("local stack starts");
    let account_id = unique("acct");
    stack
        .data
        .create_account(&Account {
            id: account_id.clone(),
            name: "Test business".into(),
            waba_id: Some(FIXTURE_WABA.into()),
            phone_number_ids: vec![opts.phone_number_id.clone()],
            sinch_app_id: Some(opts.sinch_app_id.clone()),
            page_ids: Vec::new(),
            instagram_account_ids: Vec::new(),
            created_at_ms: 0,
        })
        .await
        .expect("account");
    // The fixture Sinch app's own webhook secret (per-app secrets, the template default).
    ctwa_local::set_sinch_app_secret(
        &clients,
        &cfg.stack_name,
        &opts.sinch_app_id,
        &cfg.sinch_webhook_secret,
    )
    .await
    .expect("the fixture Sinch app's secret");
    // The fixture's number is its WABA's, as Meta would say: a verified route.
    let route = ctwa_shared::domain::Route::PhoneNumberId(opts.phone_number_id.clone());
    let verified = RouteRecord {
        status: RouteStatus::Verified,
        checked_at_ms: Some(0),
        ..stack
            .data
            .route_record(&route)
            .await
            .expect("route read")
            .expect("route")
    };
    let audit = ctwa_shared::store::AuditRecord::by(
        &ctwa_shared::store::Actor {
            kind: "test-fixture".into(),
            key_id: None,
        },
        Some(&account_id),
        "route.verify",
        &route.key(),
        serde_json::json!({"status": "verified"}),
        0,
    )
    .expect("audit id");
    assert!(
        stack
            .data
            .set_route_status(&verified, &audit)
            .await
            .expect("route verified")
    );
    let (api_key, rec) = generate_key(&account_id, &Scope::ALL, 0).expect("key");
    stack.data.put_api_key(&rec).await.expect("api key");
    TestApp {
        base: stack.base_url(),
        stack,
        sim,
        http: reqwest::Client::new(),
        clients,
        cfg,
        account_id,
        api_key,
    }
}

impl TestApp {
    /// An authorization code from the simulated OAuth dialog.
    pub fn oauth_code(&self, scopes: &[&str], waba_id: &str) -> String {
        self.sim
            .sim
            .create_code(&serde_json::json!({"scopes": scopes, "waba_id": waba_id}))["code"]
            .as_str()
            .expect("code")
            .to_string()
    }

    /// Connects Meta for the account of `key`: a fresh code with every required scope
    /// and the fixture WABA, exchanged (200 asserted); the answer.
    pub async fn connect_meta(&self, key: &str) -> Value {
        self.connect_meta_granted(
            key,
            serde_json::json!({
                "scopes": ctwa_shared::meta::connection::REQUIRED_SCOPES,
                "waba_id": FIXTURE_WABA,
            }),
        )
        .await
    }

    /// Connects Meta for the account of `key` with a code of the simulator's `grant`
    /// (`POST /_sim/oauth/codes`: scopes, WABA, Pages, Instagram accounts), exchanged
    /// (200 asserted); the answer.
    pub async fn connect_meta_granted(&self, key: &str, grant: Value) -> Value {
        let code = self.sim.sim.create_code(&grant)["code"]
            .as_str()
            .expect("code")
            .to_string();
        let (s, v) = self
            .post_json(
                "/v1/oauth/exchange-code",
                key,
                serde_json::json!({ "code": code }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Any request with a key and an optional JSON body: status, JSON answer, headers.
    pub async fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.base),
            )
            .bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, read_answer(path, resp).await, headers)
    }

    /// [`Self::request_with_headers`] without the headers.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (s, v, _) = self.request_with_headers(method, path, key, body).await;
        (s, v)
    }

    pub async fn post_json(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, read_answer(path, r).await)
    }

    /// A new operator key (as `ctwa-admin operator-key create` makes one).
    pub async fn operator_key(&self) -> String {
        let (key, rec) = ctwa_shared::auth::generate_operator_key(0).expect("key");
        self.stack
            .data
            .put_api_key(&rec)
            .await
            .expect("operator key");
        key
    }

    /// A new key of the test account holding only `scopes`.
    pub async fn key_with_scopes(&self, scopes: &[Scope]) -> String {
        let (key, rec) = generate_key(&self.account_id, scopes, 0).expect("key");
        self.stack.data.put_api_key(&rec).await.expect("api key");
        key
    }

    /// Another account (with its own key) on the same tables.
    pub async fn add_account(&self, phone_number_id: &str) -> (String, String) {
        let id = unique("acct");
        self.stack
            .data
            .create_account(&Account {
                id: id.clone(),
                name: "Other business".into(),
                waba_id: None,
                phone_number_ids: vec![phone_number_id.into()],
                sinch_app_id: None,
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: 0,
            })
            .await
            .expect("account");
        let (key, rec) = generate_key(&id, &Scope::ALL, 0).expect("key");
        self.stack.data.put_api_key(&rec).await.expect("api key");
        (id, key)
    }

    pub async fn post_webhook(&self, body: impl Into<Vec<u8>>) -> (u16, Value) {
        let body = body.into();
        let sig = sign_meta(&self.cfg.app_secret, &body);
        self.post_webhook_with_signature(body, &sig).await
    }

    pub async fn post_webhook_with_signature(&self, body: Vec<u8>, sig: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/webhook", self.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A Sinch callback signed with the fixture app's secret.
    pub async fn post_sinch(&self, body: impl Into<Vec<u8>>) -> (u16, Value) {
        self.post_sinch_signed_with(&self.cfg.sinch_webhook_secret.clone(), body)
            .await
    }

    /// A Sinch callback signed with `secret`, timestamped now.
    pub async fn post_sinch_signed_with(
        &self,
        secret: &str,
        body: impl Into<Vec<u8>>,
    ) -> (u16, Value) {
        let body = body.into();
        let ts = ctwa_shared::time::now_secs().to_string();
        let nonce = unique("nonce");
        let sig = sign_sinch(secret, &body, &nonce, &ts);
        let r = self
            .http
            .post(format!("{}/webhook/sinch", self.base))
            .header("content-type", "application/json")
            .header("x-sinch-webhook-signature", sig)
            .header("x-sinch-webhook-signature-nonce", nonce)
            .header("x-sinch-webhook-signature-timestamp", ts)
            .header("x-sinch-webhook-signature-algorithm", "HmacSHA256")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, read_answer(path, r).await)
    }

    pub async fn inbox_count(&self) -> usize {
        self.count_items_sk(&self.cfg.inbox_table, "").await
    }
    pub async fn click_count(&self) -> usize {
        self.count_items_sk(&self.cfg.data_table, "CLICK#").await
    }
    pub async fn count_unrouted(&self) -> usize {
        let mut n = 0;
        let out = self
            .clients
            .dynamodb
            .scan()
            .table_name(&self.cfg.data_table)
            .send()
            .await
            .expect("scan");
        for i in out.items() {
            if i.get("pk")
                .and_then(|v| v.as_s().ok())
                .is_some_and(|pk| pk.starts_with("UNROUTED#"))
            {
                n += 1;
            }
        }
        n
    }
    pub async fn conversation_count(&self) -> usize {
        self.count_items_sk(&self.cfg.data_table, "CONV").await
    }

    /// Items of a table whose sort key starts with `sk_prefix` ("" counts every item,
    /// with or without a sort key). Tests only: a scan.
    async fn count_items_sk(&self, table: &str, sk_prefix: &str) -> usize {
        let mut n = 0;
        let mut start = None;
        loop {
            let out = self
                .clients
                .dynamodb
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan");
            n += out
                .items()
                .iter()
                .filter(|i| {
                    sk_prefix.is_empty()
                        || i.get("sk")
                            .and_then(|v| v.as_s().ok())
                            .is_some_and(|sk| sk.starts_with(sk_prefix))
                })
                .count();
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        n
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream feeder is asynchronous: after the last write, give it time to settle and
/// check that a count stays where it is.
pub async fn settled<F, Fut>(what: &str, expected: usize, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    eventually(what, Duration::from_secs(30), || {
        let f = count();
        async move { (f.await == expected).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(count().await, expected, "{what}: changed after settling");
}

/// A Cloud API webhook with one CTWA (or plain, when `clid` and `source` are None) message.
/// A Sinch callback (a fixture of `events/webhooks/sinch/`) with its `event_time` set to
/// now: a click dated more than a week before its signed timestamp is history only.
pub fn sinch_dated_now(body: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).expect("a JSON callback");
    v["event_time"] = Value::String(ctwa_shared::time::rfc3339_millis(
        ctwa_shared::time::now_millis(),
    ));
    serde_json::to_vec(&v).expect("JSON")
}

pub fn ctwa_webhook(pnid: &str, wamid: &str, wa_id: &str, clid: Option<&str>, ts: i64) -> String {
    let mut referral = serde_json::json!({"source_url":"https://fb.me/3cr4Wqqkv","source_id":"120226305854810726","source_type":"ad","headline":"Chat with us","body":"Summer Succulents are here!","media_type":"image","image_url":"https://scontent.xx.fbcdn.net/v/t45.1"});
    if let Some(c) = clid {
        referral["ctwa_clid"] = Value::String(c.into());
    }
    serde_json::json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":pnid},
        "contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":wa_id}],
        "messages":[{"from":wa_id,"id":wamid,"timestamp":ts.to_string(),"type":"text","text":{"body":"Can I get more info?"},"referral":referral}]}}]}]})
    .to_string()
}

/// One customer message of a Messenger or Instagram webhook (`messaging[]` entry) from
/// `sender` (PSID / IGSID) to `business` (the Page / Instagram account id), with an ad
/// referral of `ad_id` when given, as Meta's webhook references show it.
pub fn messaging_message(
    business: &str,
    sender: &str,
    mid: &str,
    ad_id: Option<&str>,
    ts_ms: i64,
) -> Value {
    let mut message = serde_json::json!({"mid": mid, "text": "Is this still available?"});
    if let Some(ad) = ad_id {
        message["referral"] = serde_json::json!({
            "ref": "summer-sale", "ad_id": ad, "source": "ADS", "type": "OPEN_THREAD",
            "ads_context_data": {"ad_title": "Summer Succulents",
                "photo_url": "https://scontent.xx.fbcdn.net/p.jpg"}});
    }
    serde_json::json!({"sender": {"id": sender}, "recipient": {"id": business},
        "timestamp": ts_ms, "message": message})
}

/// A delivery of `events` (`messaging[]` entries) for `business`.
pub fn messaging_webhook(object: &str, business: &str, events: Vec<Value>) -> String {
    serde_json::json!({"object": object, "entry": [{"id": business,
        "time": ctwa_shared::time::now_millis(), "messaging": events}]})
    .to_string()
}
