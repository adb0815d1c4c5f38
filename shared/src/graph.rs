//! The one Graph API client. Every Meta call goes through `META_GRAPH_URL` (default
//! `https://graph.facebook.com/v25.0`), so tests and the local run point it at the
//! simulator. Errors keep Meta's body (`code`, `error_subcode`, `message`, `fbtrace_id`)
//! and say whether they are worth retrying (meta-api.md section 7). Tokens travel as
//! [`Token`], whose `Debug` never shows the value; no URL is ever logged.

use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com/v25.0";

/// A Meta access token. `Debug`/`Display` are redacted; `expose` is explicit. A token
/// read for an account carries its `appsecret_proof`, which every Graph call made with
/// it sends.
#[derive(Clone)]
pub struct Token {
    value: String,
    proof: Option<String>,
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl Eq for Token {}

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            proof: None,
        }
    }
    /// The token with its `appsecret_proof` for the app of `app_secret`.
    pub fn with_proof(self, app_secret: &str) -> Self {
        let proof = crate::signature::appsecret_proof(app_secret, &self.value);
        Self {
            proof: Some(proof),
            ..self
        }
    }
    pub fn expose(&self) -> &str {
        &self.value
    }
    pub fn appsecret_proof(&self) -> Option<&str> {
        self.proof.as_deref()
    }
}

/// The token as the request's bearer credential, with its `appsecret_proof` when known.
fn authed(req: reqwest::RequestBuilder, token: &Token) -> reqwest::RequestBuilder {
    let req = req.bearer_auth(token.expose());
    match token.appsecret_proof() {
        Some(p) => req.query(&[("appsecret_proof", p)]),
        None => req,
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The Meta app (id and secret) the OAuth calls are made for.
#[derive(Clone)]
pub struct AppCredentials {
    pub app_id: String,
    pub app_secret: String,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AppCredentials {{ app_id: {:?}, app_secret: *** }}",
            self.app_id
        )
    }
}

/// Meta's error body: `{"error":{...}}`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct GraphErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_user_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_user_msg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_transient: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: GraphErrorBody,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("Meta answered {status}: (#{}) {}", .error.code, .error.message)]
    Api {
        status: u16,
        error: Box<GraphErrorBody>,
    },
    /// The request never reached Meta (the connection could not be made): nothing
    /// happened there, so sending it again is safe.
    #[error("Meta could not be reached: {0}")]
    Transport(String),
    /// The request was sent but no answer came (the client's timeout, or the connection
    /// dropped after the request was written): Meta may or may not have acted on it.
    #[error("Meta did not answer: {0}")]
    NoAnswer(String),
    #[error("Meta's answer could not be read: {0}")]
    Decode(String),
}

impl GraphError {
    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// Codes 1, 2, 4, 17, 32, 341, 368, 613, 80000-80014, HTTP 5xx, timeouts,
    /// `is_transient: true`. Never 190 (token), 10/200-299 (permissions), 100. A call
    /// that may have acted ([`GraphError::NoAnswer`]) is retryable only where repeating
    /// it is harmless (reads): a caller whose call writes checks [`Self::outcome_unknown`]
    /// first.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::Transport(_) | GraphError::NoAnswer(_) => true,
            GraphError::Decode(_) => false,
            GraphError::Api { status, error } => {
                if matches!(error.code, 190 | 10 | 100 | 200..=299) || self.is_too_much_data() {
                    return false;
                }
                error.is_transient == Some(true)
                    || *status >= 500
                    || matches!(
                        error.code,
                        1 | 2 | 4 | 17 | 32 | 341 | 368 | 613 | 80_000..=80_014
                    )
            }
        }
    }

    /// Meta's refusal of an insights request too big to answer at once (code 1, "Please
    /// reduce the amount of data you're asking for, then retry your request", HTTP 500):
    /// the same request fails again; a smaller one (a shorter range) may not.
    pub fn is_too_much_data(&self) -> bool {
        matches!(self, GraphError::Api { error, .. }
            if error.code == 1 && error.message.contains("reduce the amount of data"))
    }

    /// Sent, unanswered: whether Meta acted on it is not known.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, GraphError::NoAnswer(_))
    }

    /// Meta's rate-limit codes (app 4, user 17, 32, ad account 613, business use case
    /// 80000-80014): retrying at once only extends the block.
    pub fn is_rate_limit(&self) -> bool {
        matches!(self.code(), Some(4 | 17 | 32 | 613 | 80_000..=80_014))
    }

    /// Code 190: the token is invalid, expired or revoked; the user must reconnect.
    pub fn is_token_error(&self) -> bool {
        self.code() == Some(190)
    }

    /// Meta's side of the error as JSON, the one shape used in answers and audit rows:
    /// `meta_status` (Meta's HTTP status) and `meta_error` (Meta's error object: `code`,
    /// `error_subcode`, `message`, `fbtrace_id`, ...), or `meta_error.message` alone
    /// when Meta could not be reached or read.
    pub fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        match self {
            GraphError::Api { status, error } => {
                m.insert("meta_status".into(), (*status).into());
                m.insert(
                    "meta_error".into(),
                    serde_json::to_value(error).unwrap_or_default(),
                );
            }
            other => {
                m.insert(
                    "meta_error".into(),
                    serde_json::json!({"message": other.to_string()}),
                );
            }
        }
        m
    }
}

#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds; absent or 0 for tokens that do not expire.
    #[serde(default)]
    pub expires_in: Option<i64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"***")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl TokenResponse {
    pub fn new(token: &Token, token_type: Option<String>, expires_in: Option<i64>) -> Self {
        Self {
            access_token: token.expose().to_string(),
            token_type,
            expires_in,
        }
    }
    pub fn token(&self) -> Token {
        Token::new(self.access_token.clone())
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GranularScope {
    pub scope: String,
    #[serde(default)]
    pub target_ids: Vec<String>,
}

/// `GET /debug_token` -> `data`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub is_valid: bool,
    /// Unix seconds; 0 = never (UNCONFIRMED by Meta, see meta-api.md section 4).
    #[serde(default)]
    pub expires_at: i64,
    #[serde(default)]
    pub data_access_expires_at: Option<i64>,
    #[serde(default)]
    pub issued_at: Option<i64>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub granular_scopes: Vec<GranularScope>,
    #[serde(default)]
    pub user_id: Option<String>,
}

impl TokenInfo {
    /// The WABA id: the first target of `whatsapp_business_management`.
    pub fn waba_id(&self) -> Option<String> {
        self.granular_scopes
            .iter()
            .find(|g| g.scope == "whatsapp_business_management")
            .and_then(|g| g.target_ids.first().cloned())
    }
    /// Every WABA the token reaches: the targets of `whatsapp_business_management` and
    /// `whatsapp_business_messaging`, in Meta's order, once each.
    pub fn waba_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for g in &self.granular_scopes {
            if matches!(
                g.scope.as_str(),
                "whatsapp_business_management" | "whatsapp_business_messaging"
            ) {
                for id in &g.target_ids {
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
            }
        }
        ids
    }
    pub fn expires(&self) -> Option<i64> {
        (self.expires_at > 0).then_some(self.expires_at)
    }
}

#[derive(Debug, Deserialize)]
struct DebugEnvelope {
    data: TokenInfo,
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
}

impl GraphClient {
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, GraphError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| GraphError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn read<T: serde::de::DeserializeOwned>(
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, GraphError> {
        // reqwest's error text can carry the URL (and so a query token): keep only its kind.
        let resp = resp.map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        // The answer's head came but its body did not: the request was made.
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| GraphError::NoAnswer(transport_kind(&e)))?;
        if !(200..300).contains(&status) {
            return Err(match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
                Ok(env) => GraphError::Api {
                    status,
                    error: Box::new(env.error),
                },
                Err(_) => GraphError::Api {
                    status,
                    error: Box::new(GraphErrorBody {
                        message: format!("HTTP {status} without a Graph error body"),
                        // 5xx: Meta's "temporary" code 2; 408/429: rate limit 4; any
                        // other status without a Graph body (a proxy, a wrong URL) is
                        // not retried.
                        code: match status {
                            500.. => 2,
                            408 | 429 => 4,
                            _ => 0,
                        },
                        ..Default::default()
                    }),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| GraphError::Decode(e.to_string()))
    }

    /// `GET /oauth/access_token` with the given parameters (never logged: they hold secrets).
    async fn access_token(&self, q: &[(&str, &str)]) -> Result<TokenResponse, GraphError> {
        let resp = self
            .http
            .get(format!("{}/oauth/access_token", self.base))
            .query(q)
            .send()
            .await;
        Self::read(resp).await
    }
}

/// The Graph API as the domain uses it: the port. [`GraphClient`] is its adapter over
/// HTTP (and `graph-sim` the HTTP-level contract it is tested against); [`fake`] is an
/// in-memory stand-in for unit tests of the domain.
#[async_trait::async_trait]
pub trait Graph: Send + Sync {
    /// `GET /oauth/access_token?client_id&redirect_uri&client_secret&code`. Not retried:
    /// codes are single-use.
    async fn exchange_code(
        &self,
        app: &AppCredentials,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<TokenResponse, GraphError>;
    /// `GET /oauth/access_token?grant_type=fb_exchange_token` (long-lived token, refresh).
    async fn exchange_long_lived(
        &self,
        app: &AppCredentials,
        token: &Token,
    ) -> Result<TokenResponse, GraphError>;
    /// `GET /debug_token?input_token=`, with the app token as bearer.
    async fn debug_token(
        &self,
        app: &AppCredentials,
        token: &Token,
    ) -> Result<TokenInfo, GraphError>;
    /// The WABA's dataset, if it has one.
    async fn get_dataset(&self, waba_id: &str, token: &Token)
    -> Result<Option<String>, GraphError>;
    /// Creates the WABA's dataset (Meta returns the existing one if there is one).
    async fn create_dataset(&self, waba_id: &str, token: &Token) -> Result<String, GraphError>;
    /// `POST /{dataset}/events` with up to 1000 events (and the `partner_agent`, once at
    /// the top of the request as Meta's guide shows it), given up after `timeout` (the
    /// client's own when `None`): a request that timed out is [`GraphError::NoAnswer`].
    async fn send_events(
        &self,
        dataset_id: &str,
        events: &[serde_json::Value],
        test_event_code: Option<&str>,
        partner_agent: Option<&str>,
        token: &Token,
        timeout: Option<Duration>,
    ) -> Result<EventsResponse, GraphError>;
    /// `GET /{waba_id}/phone_numbers`: every phone number of the WABA (all pages). A
    /// token that cannot see the WABA gets Meta's code 100 (subcode 33).
    async fn phone_numbers(
        &self,
        waba_id: &str,
        token: &Token,
    ) -> Result<Vec<PhoneNumber>, GraphError>;
    /// One Marketing API call: `path` is relative to the versioned base (`act_1/ads`,
    /// `2385...`, or empty with `ids=` in the query). No retry here: the caller decides,
    /// because a create that timed out may have happened.
    async fn marketing(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        token: &Token,
        timeout: Option<Duration>,
    ) -> MarketingReply;
}

#[async_trait::async_trait]
impl Graph for GraphClient {
    async fn exchange_code(
        &self,
        app: &AppCredentials,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<TokenResponse, GraphError> {
        let mut q = vec![
            ("client_id", app.app_id.as_str()),
            ("client_secret", app.app_secret.as_str()),
            ("code", code),
        ];
        if let Some(r) = redirect_uri {
            q.push(("redirect_uri", r));
        }
        self.access_token(&q).await
    }

    async fn exchange_long_lived(
        &self,
        app: &AppCredentials,
        token: &Token,
    ) -> Result<TokenResponse, GraphError> {
        let q = [
            ("grant_type", "fb_exchange_token"),
            ("client_id", app.app_id.as_str()),
            ("client_secret", app.app_secret.as_str()),
            ("fb_exchange_token", token.expose()),
        ];
        self.access_token(&q).await
    }

    async fn debug_token(
        &self,
        app: &AppCredentials,
        token: &Token,
    ) -> Result<TokenInfo, GraphError> {
        let app_token = format!("{}|{}", app.app_id, app.app_secret);
        let resp = self
            .http
            .get(format!("{}/debug_token", self.base))
            .query(&[("input_token", token.expose())])
            .bearer_auth(app_token)
            .send()
            .await;
        Self::read::<DebugEnvelope>(resp).await.map(|d| d.data)
    }

    async fn get_dataset(
        &self,
        waba_id: &str,
        token: &Token,
    ) -> Result<Option<String>, GraphError> {
        let resp = authed(
            self.http.get(format!("{}/{waba_id}/dataset", self.base)),
            token,
        )
        .send()
        .await;
        let d: DatasetLookup = Self::read(resp).await?;
        Ok(d.id.or_else(|| d.data.into_iter().next().map(|r| r.id)))
    }

    async fn create_dataset(&self, waba_id: &str, token: &Token) -> Result<String, GraphError> {
        let resp = authed(
            self.http.post(format!("{}/{waba_id}/dataset", self.base)),
            token,
        )
        .json(&serde_json::json!({}))
        .send()
        .await;
        let d: DatasetLookup = Self::read(resp).await?;
        d.id.or_else(|| d.data.into_iter().next().map(|r| r.id))
            .ok_or_else(|| GraphError::Decode("no dataset id in the answer".into()))
    }

    async fn send_events(
        &self,
        dataset_id: &str,
        events: &[serde_json::Value],
        test_event_code: Option<&str>,
        partner_agent: Option<&str>,
        token: &Token,
        timeout: Option<Duration>,
    ) -> Result<EventsResponse, GraphError> {
        let mut body = serde_json::json!({ "data": events });
        if let Some(code) = test_event_code {
            body["test_event_code"] = serde_json::json!(code);
        }
        if let Some(agent) = partner_agent {
            body["partner_agent"] = serde_json::json!(agent);
        }
        let mut req = authed(
            self.http.post(format!("{}/{dataset_id}/events", self.base)),
            token,
        )
        .json(&body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await;
        Self::read(resp).await
    }

    async fn phone_numbers(
        &self,
        waba_id: &str,
        token: &Token,
    ) -> Result<Vec<PhoneNumber>, GraphError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        // Meta pages by cursor; a WABA has a handful of numbers, 20 pages is a bound.
        for _ in 0..20 {
            let mut q = vec![
                (
                    "fields",
                    "id,display_phone_number,verified_name".to_string(),
                ),
                ("limit", "100".to_string()),
            ];
            if let Some(a) = after.take() {
                q.push(("after", a));
            }
            let resp = authed(
                self.http
                    .get(format!("{}/{waba_id}/phone_numbers", self.base))
                    .query(&q),
                token,
            )
            .send()
            .await;
            let page: PhoneNumbersPage = Self::read(resp).await?;
            let empty = page.data.is_empty();
            out.extend(page.data);
            // Only the cursor is followed (never `paging.next`: it carries the token).
            match page.paging.and_then(|p| p.next.and(p.cursors?.after)) {
                Some(a) if !empty => after = Some(a),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    async fn marketing(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        token: &Token,
        timeout: Option<Duration>,
    ) -> MarketingReply {
        let mut req = authed(
            self.http
                .request(method, format!("{}/{path}", self.base))
                .query(query),
            token,
        );
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        match req.send().await {
            Err(e) => MarketingReply {
                result: Err(transport_error(&e)),
                usage: Vec::new(),
            },
            Ok(resp) => {
                let usage = USAGE_HEADERS
                    .iter()
                    .filter_map(|h| {
                        let v = resp.headers().get(*h)?.to_str().ok()?;
                        Some((*h, v.to_string()))
                    })
                    .collect();
                MarketingReply {
                    result: Self::read(Ok(resp)).await,
                    usage,
                }
            }
        }
    }
}

/// `POST /{dataset}/events` -> this.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct EventsResponse {
    #[serde(default)]
    pub events_received: i64,
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
}

/// One phone number of a WABA (`GET /{waba_id}/phone_numbers` -> `data[]`).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct PhoneNumber {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PhoneNumbersPage {
    #[serde(default)]
    data: Vec<PhoneNumber>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
struct Paging {
    #[serde(default)]
    cursors: Option<Cursors>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Cursors {
    #[serde(default)]
    after: Option<String>,
}

/// `GET /{waba}/dataset`: `{"id"}` or `{"data":[{"id"}]}` (the shape is UNCONFIRMED:
/// both are accepted).
#[derive(Debug, Deserialize)]
struct DatasetLookup {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    data: Vec<DatasetRef>,
}

#[derive(Debug, Deserialize)]
struct DatasetRef {
    id: String,
}

/// A Marketing API answer: the JSON or Meta's error, and the usage headers Meta sent
/// (`X-Business-Use-Case-Usage`, `X-Ad-Account-Usage`, `X-App-Usage`), read either way.
#[derive(Debug)]
pub struct MarketingReply {
    pub result: Result<serde_json::Value, GraphError>,
    pub usage: Vec<(&'static str, String)>,
}

/// The usage headers Meta sends on Marketing API answers.
pub const USAGE_HEADERS: [&str; 3] = [
    "x-business-use-case-usage",
    "x-ad-account-usage",
    "x-app-usage",
];

/// An in-memory Graph API for unit tests of the domain: conversions are answered from a
/// script (then accepted), datasets and OAuth answered as Meta would for a healthy
/// account, and every call recorded.
#[cfg(any(test, feature = "test-support"))]
pub mod fake {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// One `POST /{dataset}/events` the fake received.
    #[derive(Debug, Clone)]
    pub struct SentEvents {
        pub dataset_id: String,
        pub events: Vec<serde_json::Value>,
        pub test_event_code: Option<String>,
        pub partner_agent: Option<String>,
        pub token: Token,
    }

    #[derive(Default)]
    pub struct FakeGraph {
        events: Mutex<VecDeque<Result<EventsResponse, GraphError>>>,
        marketing: Mutex<VecDeque<Result<serde_json::Value, GraphError>>>,
        sent: Mutex<Vec<SentEvents>>,
        datasets: Mutex<std::collections::HashMap<String, String>>,
        /// WABA id -> its phone numbers (`phone_numbers`); a WABA not here is one the
        /// token cannot see (code 100, subcode 33).
        pub phone_numbers: Mutex<std::collections::HashMap<String, Vec<String>>>,
        /// Scopes `debug_token` reports (default: every required scope).
        pub scopes: Vec<String>,
    }

    impl FakeGraph {
        pub fn new() -> Self {
            Self {
                scopes: crate::meta::connection::REQUIRED_SCOPES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ..Default::default()
            }
        }
        /// The next `send_events` answers this (then the next scripted one; accepted
        /// when the script is empty).
        pub fn answer_events(&self, answer: Result<EventsResponse, GraphError>) {
            self.events.lock().unwrap().push_back(answer);
        }
        /// The next Marketing API call answers this.
        pub fn answer_marketing(&self, answer: Result<serde_json::Value, GraphError>) {
            self.marketing.lock().unwrap().push_back(answer);
        }
        pub fn sent(&self) -> Vec<SentEvents> {
            self.sent.lock().unwrap().clone()
        }
        /// Meta's error with this HTTP status and code.
        pub fn error(status: u16, code: i64, subcode: Option<i64>) -> GraphError {
            GraphError::Api {
                status,
                error: Box::new(GraphErrorBody {
                    message: format!("fake error {code}"),
                    code,
                    error_subcode: subcode,
                    fbtrace_id: Some("FakeTrace".into()),
                    ..Default::default()
                }),
            }
        }
    }

    #[async_trait::async_trait]
    impl Graph for FakeGraph {
        async fn exchange_code(
            &self,
            _app: &AppCredentials,
            code: &str,
            _redirect_uri: Option<&str>,
        ) -> Result<TokenResponse, GraphError> {
            if code.starts_with("bad") {
                return Err(Self::error(400, 100, Some(36009)));
            }
            Ok(TokenResponse::new(
                &Token::new(format!("short-{code}")),
                None,
                Some(3600),
            ))
        }
        async fn exchange_long_lived(
            &self,
            _app: &AppCredentials,
            token: &Token,
        ) -> Result<TokenResponse, GraphError> {
            Ok(TokenResponse::new(
                &Token::new(format!("long-{}", token.expose())),
                Some("bearer".into()),
                Some(60 * 86_400),
            ))
        }
        async fn debug_token(
            &self,
            app: &AppCredentials,
            _token: &Token,
        ) -> Result<TokenInfo, GraphError> {
            Ok(TokenInfo {
                app_id: Some(app.app_id.clone()),
                kind: Some("USER".into()),
                is_valid: true,
                expires_at: crate::time::now_secs() + 60 * 86_400,
                scopes: self.scopes.clone(),
                granular_scopes: vec![GranularScope {
                    scope: "whatsapp_business_management".into(),
                    target_ids: vec!["102290129340398".into()],
                }],
                ..Default::default()
            })
        }
        async fn get_dataset(
            &self,
            waba_id: &str,
            _token: &Token,
        ) -> Result<Option<String>, GraphError> {
            Ok(self.datasets.lock().unwrap().get(waba_id).cloned())
        }
        async fn create_dataset(
            &self,
            waba_id: &str,
            _token: &Token,
        ) -> Result<String, GraphError> {
            let mut d = self.datasets.lock().unwrap();
            let n = d.len();
            Ok(d.entry(waba_id.to_string())
                .or_insert_with(|| format!("{}", 9_000_000 + n))
                .clone())
        }
        async fn send_events(
            &self,
            dataset_id: &str,
            events: &[serde_json::Value],
            test_event_code: Option<&str>,
            partner_agent: Option<&str>,
            token: &Token,
            _timeout: Option<Duration>,
        ) -> Result<EventsResponse, GraphError> {
            self.sent.lock().unwrap().push(SentEvents {
                dataset_id: dataset_id.to_string(),
                events: events.to_vec(),
                test_event_code: test_event_code.map(str::to_string),
                partner_agent: partner_agent.map(str::to_string),
                token: token.clone(),
            });
            let scripted = self.events.lock().unwrap().pop_front();
            scripted.unwrap_or_else(|| {
                Ok(EventsResponse {
                    events_received: events.len() as i64,
                    messages: Vec::new(),
                    fbtrace_id: Some("FakeTrace".into()),
                })
            })
        }
        async fn phone_numbers(
            &self,
            waba_id: &str,
            _token: &Token,
        ) -> Result<Vec<PhoneNumber>, GraphError> {
            match self.phone_numbers.lock().unwrap().get(waba_id) {
                Some(ids) => Ok(ids
                    .iter()
                    .map(|id| PhoneNumber {
                        id: id.clone(),
                        ..Default::default()
                    })
                    .collect()),
                None => Err(Self::error(400, 100, Some(33))),
            }
        }
        async fn marketing(
            &self,
            _method: http::Method,
            _path: &str,
            _query: &[(&str, &str)],
            _body: Option<&serde_json::Value>,
            _token: &Token,
            _timeout: Option<Duration>,
        ) -> MarketingReply {
            let next = self.marketing.lock().unwrap().pop_front();
            MarketingReply {
                result: next.unwrap_or_else(|| Err(Self::error(400, 100, None))),
                usage: Vec::new(),
            }
        }
    }
}

/// A request that failed without an answer: [`GraphError::Transport`] when it never
/// left (the connection could not be made, or the request could not be built),
/// [`GraphError::NoAnswer`] when it may have reached Meta (a timeout after connecting,
/// a connection dropped mid-exchange).
fn transport_error(e: &reqwest::Error) -> GraphError {
    if e.is_connect() || e.is_builder() {
        GraphError::Transport(transport_kind(e))
    } else {
        GraphError::NoAnswer(transport_kind(e))
    }
}

fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64, transient: Option<bool>) -> GraphError {
        GraphError::Api {
            status,
            error: Box::new(GraphErrorBody {
                code,
                is_transient: transient,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn retryable_codes_follow_meta() {
        for c in [1, 2, 4, 17, 32, 341, 368, 613, 80_000, 80_014] {
            assert!(api(400, c, None).is_retryable(), "{c}");
        }
        for c in [190, 10, 100, 200, 299, 80_015] {
            assert!(!api(400, c, None).is_retryable(), "{c}");
        }
        assert!(api(503, 9999, None).is_retryable());
        assert!(
            !api(500, 190, None).is_retryable(),
            "a token error is never retried"
        );
        assert!(api(400, 9999, Some(true)).is_retryable());
        assert!(GraphError::Transport("timeout".into()).is_retryable());
        assert!(!GraphError::Transport("connection failed".into()).outcome_unknown());
        assert!(GraphError::NoAnswer("timeout".into()).outcome_unknown());
        assert!(api(400, 190, None).is_token_error());
    }

    #[test]
    fn tokens_never_print() {
        let t = Token::new("EAAGsecret");
        assert_eq!(format!("{t:?}"), "Token(***)");
        let app = AppCredentials {
            app_id: "1".into(),
            app_secret: "s3cr3t".into(),
        };
        assert!(!format!("{app:?}").contains("s3cr3t"));
    }

    #[test]
    fn waba_from_granular_scopes() {
        let info: TokenInfo = serde_json::from_str(
            r#"{"is_valid":true,"expires_at":0,"scopes":["a"],"granular_scopes":[{"scope":"ads_management","target_ids":["1"]},{"scope":"whatsapp_business_management","target_ids":["W1","W2"]}]}"#,
        )
        .unwrap();
        assert_eq!(info.waba_id().as_deref(), Some("W1"));
        assert_eq!(info.expires(), None);
    }
}
