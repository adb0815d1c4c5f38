//! A Meta Graph API simulator for tests and the local run, served in place of
//! `META_GRAPH_URL`. It answers with Meta's shapes and error bodies
//! (`{"error":{"message","type","code","error_subcode","fbtrace_id"}}`), keeps what it
//! received for tests to read, and takes faults to inject.
//!
//! Graph endpoints (under any version prefix, e.g. `/v25.0`):
//! - `GET|POST /oauth/access_token` — code exchange (single-use codes that expire,
//!   `redirect_uri` checked) and `grant_type=fb_exchange_token` (long-lived token;
//!   an expired or revoked token is refused with code 190).
//! - `GET /debug_token?input_token=` — introspection, app token as `access_token`
//!   (query) or `Authorization: Bearer`. `granular_scopes[].target_ids`: the WABA for
//!   `whatsapp_business_*` scopes, the token's `page_ids` for Page scopes (`pages_*`,
//!   `page_events`), its `instagram_account_ids` for `instagram_*` scopes (only where
//!   the token was granted on such objects).
//!
//! Control endpoints (`/_sim/...`, JSON):
//! - `POST /_sim/oauth/codes {scopes, waba_id?, page_ids?, instagram_account_ids?, redirect_uri?, ttl_seconds?, token_type?, token_expires_in?}` -> `{code}`
//! - `POST /_sim/tokens {scopes, waba_id?, page_ids?, instagram_account_ids?, type?, expires_in?}` -> `{access_token}` (0 = never expires);
//!   `page_ids` / `instagram_account_ids` are the Pages / Instagram accounts the token
//!   was granted on (what it reaches), as `waba_id` is its WABA.
//! - `POST /_sim/pages {page_id, name?, instagram_account_id?, instagram_username?}` ->
//!   `{page_id, name, instagram_account_id, instagram_username}` (module [`messaging`]):
//!   a Facebook Page and its linked Instagram professional account; 400 `{error}` for a
//!   request that cannot be (no `page_id`, an account linked to another Page, ...).
//! - `POST /_sim/tokens/revoke {access_token}`, `POST /_sim/tokens/expire {access_token}`
//! - `POST /_sim/faults {path?, status?, code?, error_subcode?, message?, times?, delay_ms?, answer_delay_ms?, is_transient?}`
//!   (the next `times` requests whose path contains `path` fail that way; status 200
//!   with `delay_ms` only slows them down; status 200 with `answer_delay_ms` serves them
//!   (events accepted) and holds the answer back that long: Meta took the request, the
//!   caller may give up before it hears so)
//! - `GET /{page_id}?fields=id,name,instagram_business_account` (default `id,name`) and
//!   `GET /{ig_id}?fields=id,username`: a registered Page / Instagram account, for a
//!   valid token granted on it; otherwise code 100 subcode 33. Ad objects keep being
//!   answered by the Marketing module.
//! - `GET|POST /{owner}/dataset` — the dataset (`{"data":[{"id"}]}` / `{"id"}`, POST
//!   returns the existing one) of a registered Page (`page_events` required, the token
//!   granted on the Page), of a registered Instagram account (`instagram_manage_events`,
//!   the token granted on it), or else of a WABA (`whatsapp_business_manage_events`).
//!   A missing permission is HTTP 403 code 200; an owner out of reach code 100/33.
//! - `GET /{waba}/phone_numbers` — the WABA's phone numbers (`data[]` with `id`,
//!   `display_phone_number`, `verified_name`, ...; `paging.cursors`), from
//!   `POST /_sim/phone_numbers {waba_id, phone_numbers: [{id, ...}]}`; a WABA the token
//!   cannot see answers code 100 subcode 33.
//! - `POST /{dataset}/events` — Conversions API for Business Messaging with Meta's
//!   validation: allowed event names (subcode 2804066), `action_source`,
//!   `messaging_channel` (`whatsapp`, `messenger` or `instagram`, the channel of the
//!   dataset's owner), that channel's `user_data` keys (WhatsApp:
//!   `whatsapp_business_account_id`, `ctwa_clid` (2804087); Messenger: `page_id`,
//!   `page_scoped_user_id`; Instagram: `instagram_business_account_id` (2804079),
//!   `ig_sid` (2804075); a key of another channel refused; see [`messaging`]),
//!   `event_time` within 7 days, 1000 events at most; one bad event rejects the batch.
//!   A top-level `partner_agent` (a string) is recorded with each event.
//! - Marketing API (module [`marketing`]): `POST|GET /act_{id}/{campaigns,adsets,adimages,adcreatives,ads}`,
//!   `GET|POST|DELETE /{object id}`, with Meta's validations for ads that click to
//!   WhatsApp, Messenger, Instagram Direct or several (multidestination; an Instagram
//!   destination needs the Page's Instagram account from `POST /_sim/pages`), statuses,
//!   paging and `X-Business-Use-Case-Usage`; ad accounts come from
//!   `POST /_sim/ad_accounts {id, page_ids, whatsapp_numbers, funded?, call_limit?,
//!   currency?, timezone_name?, name?, insights_row_limit?}`;
//!   `POST /_sim/insights {ad_account_id, rows: [{date, campaign_id, campaign_name,
//!   adset_id, adset_name, ad_id, ad_name, spend, impressions, clicks, conversations}]}`:
//!   the daily delivery `GET /act_{id}/insights` answers from (see `insights`).
//! - `GET /_sim/requests` -> every Graph request received; `GET /_sim/events` -> every
//!   event accepted (`{"events": [{dataset_id, test_event_code, partner_agent, event}]}`);
//!   `POST /_sim/reset`

pub mod insights;
pub mod marketing;
pub mod messaging;

use messaging::OwnerKind;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub const DEFAULT_VERSION: &str = "v25.0";
/// Long-lived user tokens last about 60 days.
pub const LONG_LIVED_SECONDS: i64 = 5_183_944;
/// Tokens from a code exchange last one to two hours.
pub const SHORT_LIVED_SECONDS: i64 = 5_400;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub app_id: String,
    pub app_secret: String,
}

#[derive(Debug, Clone)]
struct Grant {
    scopes: Vec<String>,
    waba_id: Option<String>,
    page_ids: Vec<String>,
    instagram_account_ids: Vec<String>,
    redirect_uri: Option<String>,
    expires_at: i64,
    used: bool,
    token_type: String,
    token_expires_in: Option<i64>,
}

#[derive(Debug, Clone)]
struct TokenInfo {
    kind: String,
    scopes: Vec<String>,
    waba_id: Option<String>,
    /// The Pages the token was granted on (`pages_*`, `page_events`).
    page_ids: Vec<String>,
    /// The Instagram professional accounts it was granted on (`instagram_*`).
    instagram_account_ids: Vec<String>,
    issued_at: i64,
    /// 0 = never expires.
    expires_at: i64,
    revoked: bool,
    user_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// The fault applies to requests whose path (after the version) contains this; a
    /// trailing `$` anchors it at the end (`/ads$` is the ads edge, not `/adsets`).
    #[serde(default, alias = "path_prefix")]
    pub path: Option<String>,
    /// Only requests with this method (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default = "default_fault_status")]
    pub status: u16,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub is_transient: Option<bool>,
    #[serde(default = "default_times")]
    pub times: u32,
    #[serde(default)]
    pub delay_ms: u64,
    /// With status 200: the request is served first, then its answer held back this
    /// long (a caller that times out meanwhile does not know it was served).
    #[serde(default)]
    pub answer_delay_ms: u64,
}

fn default_fault_status() -> u16 {
    500
}
fn default_times() -> u32 {
    1
}

#[derive(Default)]
struct State {
    grants: HashMap<String, Grant>,
    tokens: HashMap<String, TokenInfo>,
    requests: Vec<Value>,
    faults: VecDeque<Fault>,
    counter: u64,
    /// Owner id (WABA, Page or Instagram account) -> dataset id.
    datasets: HashMap<String, String>,
    /// Owner id -> what the owner is (which channel its dataset takes).
    dataset_kinds: HashMap<String, OwnerKind>,
    /// Every event accepted by `POST /{dataset}/events`, with its dataset, test code and
    /// partner agent.
    events: Vec<Value>,
    marketing: marketing::Marketing,
    /// Facebook Pages and their Instagram professional accounts.
    messaging: messaging::Messaging,
    /// WABA id -> its phone numbers (`GET /{waba}/phone_numbers`), as tests set them.
    phone_numbers: HashMap<String, Vec<Value>>,
    /// Refuse calls made with a user token that lack a valid `appsecret_proof` (the
    /// app's "Require App Secret" setting).
    require_appsecret_proof: bool,
}

/// What one simulated request answers: status, JSON body, and the
/// `X-Business-Use-Case-Usage` header for Marketing API calls.
pub struct SimAnswer {
    pub status: u16,
    pub body: Value,
    pub usage: Option<String>,
}

fn iso8601(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+0000")
        .to_string()
}

/// Meta's business-messaging allowlist.
pub const ALLOWED_EVENTS: [&str; 14] = [
    "Purchase",
    "LeadSubmitted",
    "InitiateCheckout",
    "AddToCart",
    "ViewContent",
    "OrderCreated",
    "OrderShipped",
    "OrderDelivered",
    "OrderCanceled",
    "OrderReturned",
    "CartAbandoned",
    "QualifiedLead",
    "RatingProvided",
    "ReviewProvided",
];

pub struct Simulator {
    config: SimConfig,
    state: Mutex<State>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn graph_error(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    kind: &str,
    message: &str,
) -> (u16, Value) {
    let mut e = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": fbtrace(),
    });
    if let Some(s) = subcode {
        e["error_subcode"] = json!(s);
    }
    (status, json!({ "error": e }))
}

fn fbtrace() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    format!("A{}", hex::encode(b))
}

/// Whether a token reaches a dataset's owner: a Page or Instagram account it was granted
/// on; a WABA unless it was granted on another WABA.
fn reaches(info: &TokenInfo, kind: OwnerKind, owner: &str) -> bool {
    match kind {
        OwnerKind::Waba => info.waba_id.as_deref().is_none_or(|w| w == owner),
        OwnerKind::Page => info.page_ids.iter().any(|p| p == owner),
        OwnerKind::InstagramAccount => info.instagram_account_ids.iter().any(|a| a == owner),
    }
}

/// A permission the token lacks (`(#200) Permissions error`, HTTP 403).
fn permissions_error(scope: &str) -> (u16, Value) {
    graph_error(
        403,
        200,
        None,
        "OAuthException",
        &format!("(#200) Permissions error: {scope} is required"),
    )
}

fn token_error(subcode: i64, message: &str) -> (u16, Value) {
    graph_error(400, 190, Some(subcode), "OAuthException", message)
}

impl Simulator {
    pub fn new(config: SimConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mint(&self, st: &mut State, prefix: &str) -> String {
        st.counter += 1;
        let mut b = [0u8; 16];
        let _ = getrandom::fill(&mut b);
        format!("{prefix}{}{}", st.counter, hex::encode(b))
    }

    /// Creates an authorization code as Meta's OAuth dialog would hand it to the browser.
    pub fn create_code(&self, req: &Value) -> Value {
        let mut st = self.lock();
        let code = self.mint(&mut st, "AQB");
        let grant = Grant {
            scopes: strings(&req["scopes"]),
            waba_id: req["waba_id"].as_str().map(str::to_string),
            page_ids: ids(&req["page_ids"]),
            instagram_account_ids: ids(&req["instagram_account_ids"]),
            redirect_uri: req["redirect_uri"].as_str().map(str::to_string),
            expires_at: now() + req["ttl_seconds"].as_i64().unwrap_or(600),
            used: false,
            token_type: req["token_type"].as_str().unwrap_or("USER").to_string(),
            token_expires_in: req["token_expires_in"].as_i64(),
        };
        st.grants.insert(code.clone(), grant);
        json!({ "code": code })
    }

    /// Creates a token directly (e.g. a system-user token minted in Business Manager).
    pub fn create_token(&self, req: &Value) -> Value {
        let mut st = self.lock();
        let token = self.mint(&mut st, "EAAG");
        let expires_in = req["expires_in"].as_i64().unwrap_or(LONG_LIVED_SECONDS);
        let info = TokenInfo {
            kind: req["type"].as_str().unwrap_or("USER").to_string(),
            scopes: strings(&req["scopes"]),
            waba_id: req["waba_id"].as_str().map(str::to_string),
            page_ids: ids(&req["page_ids"]),
            instagram_account_ids: ids(&req["instagram_account_ids"]),
            issued_at: now(),
            expires_at: if expires_in == 0 {
                0
            } else {
                now() + expires_in
            },
            revoked: false,
            user_id: "10000000000001".into(),
        };
        st.tokens.insert(token.clone(), info);
        json!({ "access_token": token, "expires_in": expires_in })
    }

    pub fn revoke(&self, token: &str) -> bool {
        self.lock()
            .tokens
            .get_mut(token)
            .map(|t| t.revoked = true)
            .is_some()
    }

    pub fn expire(&self, token: &str) -> bool {
        self.lock()
            .tokens
            .get_mut(token)
            .map(|t| t.expires_at = now() - 1)
            .is_some()
    }

    pub fn add_fault(&self, f: Fault) {
        self.lock().faults.push_back(f);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The phone numbers a WABA owns (`GET /{waba}/phone_numbers` answers them): each
    /// `{"id", "display_phone_number"?, "verified_name"?}`, completed with Meta's other
    /// fields. Replaces the WABA's list.
    pub fn set_phone_numbers(&self, waba_id: &str, numbers: &Value) {
        let list = numbers
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| {
                        let id = n["id"].as_str().unwrap_or_default();
                        json!({
                            "verified_name": n["verified_name"].as_str().unwrap_or("Sim Business"),
                            "code_verification_status": "VERIFIED",
                            "display_phone_number": n["display_phone_number"].as_str().unwrap_or("+1 555-010-0000"),
                            "quality_rating": "GREEN",
                            "platform_type": "CLOUD_API",
                            "throughput": {"level": "STANDARD"},
                            "id": id,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.lock().phone_numbers.insert(waba_id.to_string(), list);
    }

    /// `GET /{waba}/phone_numbers`: the token must see the WABA (its granted WABA), as
    /// Meta's code 100 subcode 33 says otherwise; pages of `limit` (default 25) with
    /// `paging.cursors` and `paging.next` while more follow.
    fn phone_numbers(
        &self,
        waba: &str,
        params: &HashMap<String, String>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let st = self.lock();
        let info = match self.valid_token(&st, token) {
            Ok(i) => i.clone(),
            Err(e) => return e,
        };
        let unreachable = || {
            graph_error(
                400,
                100,
                Some(33),
                "GraphMethodException",
                &format!(
                    "Unsupported get request. Object with ID '{waba}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
                ),
            )
        };
        if info.waba_id.as_deref() != Some(waba)
            || !info
                .scopes
                .iter()
                .any(|s| s == "whatsapp_business_management")
        {
            return unreachable();
        }
        let Some(all) = st.phone_numbers.get(waba) else {
            return (200, json!({"data": []}));
        };
        let limit = params
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(25);
        let start = params
            .get("after")
            .and_then(|a| hex::decode(a).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
        if page.is_empty() {
            return (200, json!({"data": []}));
        }
        let cursor = |i: usize| hex::encode(i.to_string());
        let end = start + page.len();
        let mut paging = json!({"cursors": {"before": cursor(start), "after": cursor(end)}});
        if end < all.len() {
            // As Meta does: the next page's URL carries the token.
            paging["next"] = json!(format!(
                "https://graph.facebook.com/v25.0/{waba}/phone_numbers?access_token={}&limit={limit}&after={}",
                token.unwrap_or_default(),
                cursor(end)
            ));
        }
        (200, json!({"data": page, "paging": paging}))
    }

    /// Turns the app's "Require App Secret" setting on or off.
    pub fn require_appsecret_proof(&self, on: bool) {
        self.lock().require_appsecret_proof = on;
    }

    /// Whether `proof` is the `appsecret_proof` of `token` for this app: `valid`,
    /// `invalid` or `missing`.
    fn proof_status(&self, token: &str, proof: Option<&str>) -> &'static str {
        use hmac::Mac;
        let Some(proof) = proof else {
            return "missing";
        };
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.config.app_secret.as_bytes())
            .expect("HMAC takes any key length");
        m.update(token.as_bytes());
        if hex::encode(m.finalize().into_bytes()) == proof {
            "valid"
        } else {
            "invalid"
        }
    }

    /// Every Graph request received so far: method, path, query, body.
    pub fn requests(&self) -> Vec<Value> {
        self.lock().requests.clone()
    }

    /// Every token the simulator has issued (tests look for them in logs).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// Registers an ad account with the Pages and WhatsApp numbers linked to it.
    pub fn add_ad_account(&self, req: &Value) -> Value {
        let raw = req["id"].as_str().unwrap_or_default();
        let id = if raw.starts_with("act_") {
            raw.to_string()
        } else {
            format!("act_{raw}")
        };
        let acct = marketing::AdAccount {
            page_ids: strings(&req["page_ids"]),
            whatsapp_numbers: strings(&req["whatsapp_numbers"])
                .iter()
                .map(|n| n.chars().filter(char::is_ascii_digit).collect())
                .collect(),
            funded: req["funded"].as_bool().unwrap_or(true),
            call_limit: req["call_limit"].as_u64().unwrap_or(1000) as u32,
            calls: 0,
            currency: req["currency"].as_str().unwrap_or("USD").to_string(),
            timezone_name: req["timezone_name"]
                .as_str()
                .unwrap_or("America/Los_Angeles")
                .to_string(),
            name: req["name"].as_str().unwrap_or("Ad account").to_string(),
            insights_row_limit: req["insights_row_limit"].as_u64().unwrap_or(10_000) as usize,
        };
        self.lock().marketing.accounts.insert(id.clone(), acct);
        json!({"id": id})
    }

    /// Registers daily delivery rows of an ad account (added to those it has).
    pub fn add_insights(&self, req: &Value) -> (u16, Value) {
        let raw = req["ad_account_id"].as_str().unwrap_or_default();
        let id = if raw.starts_with("act_") {
            raw.to_string()
        } else {
            format!("act_{raw}")
        };
        match insights::parse_rows(req) {
            Ok(rows) => {
                let n = rows.len();
                self.lock()
                    .marketing
                    .insights
                    .entry(id.clone())
                    .or_default()
                    .extend(rows);
                (200, json!({"ad_account_id": id, "rows": n}))
            }
            Err(e) => (400, json!({"error": e})),
        }
    }

    /// A Marketing API object as the simulator holds it (tests check statuses).
    pub fn ad_object(&self, id: &str) -> Option<Value> {
        let st = self.lock();
        st.marketing.objects.get(id).map(|o| {
            json!({"kind": o.kind, "account": o.account, "status": o.status, "fields": o.fields})
        })
    }

    /// Objects of an ad account that are not deleted: (id, kind, status).
    pub fn live_ad_objects(&self, account: &str) -> Vec<(String, String, String)> {
        let st = self.lock();
        st.marketing
            .objects
            .iter()
            .filter(|(_, o)| o.account == account && o.status != "DELETED")
            .map(|(id, o)| (id.clone(), o.kind.to_string(), o.status.clone()))
            .collect()
    }

    fn marketing_token(&self, st: &State, token: Option<&str>) -> Result<(), (u16, Value)> {
        let info = self.valid_token(st, token)?;
        if !info.scopes.iter().any(|s| s == "ads_management") {
            return Err(graph_error(
                400,
                200,
                None,
                "OAuthException",
                "(#200) Permissions error: ads_management is required",
            ));
        }
        Ok(())
    }

    /// Marketing API routes: `/act_{id}/{edge}` and `/{object id}`.
    fn marketing(
        &self,
        method: &str,
        segments: &[&str],
        params: &HashMap<String, String>,
        body: &Value,
        token: Option<&str>,
    ) -> Option<SimAnswer> {
        let mut st = self.lock();
        let account = match segments {
            [a, _] | [a] if a.starts_with("act_") => Some(a.to_string()),
            // Pages and Instagram accounts are not ad objects: `graph` answers them.
            [id] if st.marketing.owner_of(id).is_none() && st.messaging.kind_of(id).is_some() => {
                return None;
            }
            [id] if id.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty() => {
                st.marketing.owner_of(id).map(str::to_string)
            }
            // `GET /?ids=1,2&fields=...`: several objects in one call.
            [""] if params.contains_key("ids") => params["ids"]
                .split(',')
                .next()
                .and_then(|id| st.marketing.owner_of(id.trim()))
                .map(str::to_string),
            _ => return None,
        };
        if let Err((status, body)) = self.marketing_token(&st, token) {
            return Some(SimAnswer {
                status,
                body,
                usage: None,
            });
        }
        let mut usage = None;
        if let Some(a) = &account
            && let Some((header, over)) = st.marketing.count_call(a)
        {
            usage = Some(header);
            if over {
                let (status, body) = graph_error(
                    400,
                    80_004,
                    Some(2_446_079),
                    "OAuthException",
                    "There have been too many calls to this ad-account. Wait a bit and try again.",
                );
                return Some(SimAnswer {
                    status,
                    body,
                    usage,
                });
            }
        }
        let mut p: serde_json::Map<String, Value> = match body {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        for (k, v) in params {
            if k == "access_token" || k == "appsecret_proof" {
                continue;
            }
            // Form/query parameters carry JSON for nested fields, as the Graph API takes them.
            let parsed = serde_json::from_str::<Value>(v)
                .ok()
                .filter(|x| x.is_object() || x.is_array() || x.is_number());
            p.entry(k.clone())
                .or_insert(parsed.unwrap_or_else(|| json!(v)));
        }
        let fields = params.get("fields").map(String::as_str).unwrap_or("");
        st.marketing.caller_token = token.unwrap_or_default().to_string();
        let (status, body) = match (method, segments) {
            ("POST", [act, edge]) if act.starts_with("act_") => {
                let st = &mut *st;
                let messaging = &st.messaging;
                let instagram_of_page = |page: &str| {
                    messaging
                        .pages
                        .get(page)
                        .and_then(|p| p.instagram_account_id.clone())
                };
                st.marketing
                    .create(act, edge, &p, now(), &instagram_of_page)
            }
            ("GET", [act, "insights"]) if act.starts_with("act_") => {
                let m = &st.marketing;
                match m.accounts.get(*act) {
                    Some(a) => insights::answer(
                        act,
                        a,
                        m.insights.get(*act).map(Vec::as_slice).unwrap_or_default(),
                        params,
                        chrono::Utc::now().date_naive(),
                        &m.caller_token,
                    ),
                    None => st.marketing.account_view(act, ""),
                }
            }
            ("GET", [act]) if act.starts_with("act_") => st.marketing.account_view(act, fields),
            ("GET", [act, edge]) if act.starts_with("act_") => {
                let limit = params
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(25);
                st.marketing.list(
                    act,
                    edge,
                    fields,
                    limit,
                    params.get("after").map(String::as_str),
                    "/v25.0",
                )
            }
            ("GET", [""]) => st.marketing.read_many(&params["ids"], fields),
            ("GET", [id]) => st.marketing.read(id, fields),
            ("POST", [id]) => st.marketing.update(id, &p),
            ("DELETE", [id]) => st.marketing.delete(id),
            _ => return None,
        };
        Some(SimAnswer {
            status,
            body,
            usage,
        })
    }

    /// Every event Meta accepted (what "reached Meta").
    pub fn received_events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Datasets created so far: (owner id, dataset id); the owner is a WABA, a Page or
    /// an Instagram account.
    pub fn datasets(&self) -> Vec<(String, String)> {
        self.lock()
            .datasets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Datasets created so far with what owns each: (owner id, dataset id, owner kind).
    pub fn datasets_by_owner(&self) -> Vec<(String, String, OwnerKind)> {
        let st = self.lock();
        st.datasets
            .iter()
            .map(|(k, v)| {
                let kind = st.dataset_kinds.get(k).copied().unwrap_or(OwnerKind::Waba);
                (k.clone(), v.clone(), kind)
            })
            .collect()
    }

    /// Registers a Facebook Page and, optionally, its linked Instagram professional
    /// account (`POST /_sim/pages`); an error says what is wrong with the request.
    pub fn add_page(&self, req: &Value) -> Result<Value, String> {
        self.lock().messaging.register(req)
    }

    /// `GET /{page_id}` or `GET /{ig_id}` (`fields`): only for a valid token granted on
    /// that Page / Instagram account, else Meta's code 100 subcode 33.
    fn messaging_object(
        &self,
        id: &str,
        params: &HashMap<String, String>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let st = self.lock();
        let info = match self.valid_token(&st, token) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let fields = params.get("fields").map(String::as_str).unwrap_or("");
        match st.messaging.kind_of(id) {
            Some(OwnerKind::Page) if reaches(info, OwnerKind::Page, id) => {
                st.messaging.page_view(id, fields)
            }
            Some(OwnerKind::InstagramAccount) if reaches(info, OwnerKind::InstagramAccount, id) => {
                st.messaging.ig_view(id, fields)
            }
            _ => messaging::unknown_object(id),
        }
    }

    fn valid_token<'a>(
        &self,
        st: &'a State,
        token: Option<&str>,
    ) -> Result<&'a TokenInfo, (u16, Value)> {
        let Some(t) = token else {
            return Err(graph_error(
                400,
                104,
                None,
                "OAuthException",
                "An access token is required to request this resource.",
            ));
        };
        match st.tokens.get(t) {
            None => Err(token_error(
                190,
                "Invalid OAuth access token - Cannot parse access token",
            )),
            Some(i) if i.revoked => Err(token_error(
                460,
                "Error validating access token: The session has been invalidated.",
            )),
            Some(i) if i.expires_at != 0 && i.expires_at <= now() => Err(token_error(
                463,
                "Error validating access token: Session has expired.",
            )),
            Some(i) => Ok(i),
        }
    }

    /// `GET|POST /{owner}/dataset`: the dataset of a registered Page (`page_events`), of
    /// a registered Instagram account (`instagram_manage_events`), or else of a WABA
    /// (`whatsapp_business_manage_events`). The permission is checked first (403 code
    /// 200), then that the token reaches the owner (code 100 subcode 33). POST returns
    /// the existing dataset if there is one.
    fn dataset(&self, method: &str, owner: &str, token: Option<&str>) -> (u16, Value) {
        let mut st = self.lock();
        let info = match self.valid_token(&st, token) {
            Ok(i) => i.clone(),
            Err(e) => return e,
        };
        let kind = st.messaging.kind_of(owner).unwrap_or(OwnerKind::Waba);
        let scope = kind.events_scope();
        if !info.scopes.iter().any(|s| s == scope) {
            return permissions_error(scope);
        }
        if !reaches(&info, kind, owner) {
            return graph_error(
                400,
                100,
                Some(33),
                "GraphMethodException",
                &format!(
                    "Unsupported {} request. Object with ID '{owner}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                    method.to_lowercase()
                ),
            );
        }
        match method {
            "GET" => match st.datasets.get(owner) {
                Some(id) => (200, json!({"data": [{"id": id}]})),
                None => (200, json!({"data": []})),
            },
            _ => {
                if let Some(id) = st.datasets.get(owner) {
                    return (200, json!({"id": id}));
                }
                st.counter += 1;
                let id = format!("{}", 880_000_000_000_000u64 + st.counter);
                st.datasets.insert(owner.to_string(), id.clone());
                st.dataset_kinds.insert(owner.to_string(), kind);
                (200, json!({"id": id}))
            }
        }
    }

    /// `POST /{dataset}/events`: the token must reach the dataset's owner (and, for a
    /// Page's or an Instagram account's dataset, hold its events permission); each
    /// event is checked for its name, its channel (that of the dataset's owner) and that
    /// channel's `user_data` keys, its time and a Purchase's value. One bad event
    /// refuses the whole request.
    fn events(&self, dataset: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut st = self.lock();
        let info = match self.valid_token(&st, token) {
            Ok(i) => i.clone(),
            Err(e) => return e,
        };
        let owner = st
            .datasets
            .iter()
            .find(|(_, d)| *d == dataset)
            .map(|(w, _)| w.clone());
        let kind = owner
            .as_ref()
            .and_then(|o| st.dataset_kinds.get(o).copied())
            .unwrap_or(OwnerKind::Waba);
        // A token that cannot reach the dataset (another business's): code 100 subcode 33.
        let Some(owner) = owner.filter(|o| reaches(&info, kind, o)) else {
            return graph_error(
                400,
                100,
                Some(33),
                "GraphMethodException",
                &format!(
                    "Unsupported post request. Object with ID '{dataset}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
                ),
            );
        };
        // WhatsApp events are not checked for their permission (the WABA's dataset is).
        if kind != OwnerKind::Waba && !info.scopes.iter().any(|s| s == kind.events_scope()) {
            return permissions_error(kind.events_scope());
        }
        let data = match &body["data"] {
            Value::Array(a) if !a.is_empty() => a.clone(),
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(a)) if !a.is_empty() => a,
                _ => {
                    return graph_error(
                        400,
                        100,
                        None,
                        "OAuthException",
                        "(#100) The parameter data is required",
                    );
                }
            },
            _ => {
                return graph_error(
                    400,
                    100,
                    None,
                    "OAuthException",
                    "(#100) The parameter data is required",
                );
            }
        };
        if data.len() > 1000 {
            return graph_error(
                400,
                100,
                None,
                "OAuthException",
                "(#100) You can only send up to 1000 events per request.",
            );
        }
        // Meta's samples put partner_agent beside `data`, a name Meta assigns.
        let partner_agent = match body.get("partner_agent") {
            None | Some(Value::Null) => Value::Null,
            Some(v @ Value::String(_)) => v.clone(),
            Some(_) => {
                return graph_error(
                    400,
                    100,
                    None,
                    "OAuthException",
                    "(#100) param partner_agent must be a string",
                );
            }
        };
        let now_s = now();
        for (i, e) in data.iter().enumerate() {
            let refused = |r: messaging::Refusal| {
                let (status, mut v) = graph_error(
                    400,
                    100,
                    Some(r.subcode),
                    "OAuthException",
                    "Invalid parameter",
                );
                let msg = match &r.detail {
                    Some(d) => format!("event {i}: {}: {d}", r.title),
                    None => format!("event {i}: {}", r.title),
                };
                v["error"]["error_user_title"] = json!(r.title);
                v["error"]["error_user_msg"] = json!(msg);
                (status, v)
            };
            let invalid = |subcode: i64, title: &str| {
                refused(messaging::Refusal {
                    subcode,
                    title: title.to_string(),
                    detail: None,
                })
            };
            let name = e["event_name"].as_str().unwrap_or_default();
            if !ALLOWED_EVENTS.contains(&name) {
                return invalid(2_804_066, "Messaging Event Invalid Event Type");
            }
            let channel = e["messaging_channel"].as_str().unwrap_or_default();
            if e["action_source"] != "business_messaging"
                || !["whatsapp", "messenger", "instagram"].contains(&channel)
            {
                return invalid(
                    2_804_050,
                    "Messaging Event Invalid Action Source or Messaging Channel",
                );
            }
            if let Err(r) = messaging::check_event(e, kind, &owner) {
                return refused(r);
            }
            let Some(t) = e["event_time"].as_i64() else {
                return invalid(2_804_003, "Invalid Event Time");
            };
            if t < now_s - 7 * 86_400 {
                return invalid(
                    2_804_003,
                    "Event Timestamp Too Old: event_time must be within the last 7 days",
                );
            }
            if t > now_s + 600 {
                return invalid(2_804_004, "Event Timestamp In The Future");
            }
            if name == "Purchase"
                && (e["custom_data"]["currency"].as_str().is_none()
                    || !e["custom_data"]["value"].is_number())
            {
                return invalid(
                    2_804_008,
                    "Purchase events need custom_data.currency and custom_data.value",
                );
            }
        }
        let test_code = body["test_event_code"].as_str().map(str::to_string);
        for e in &data {
            st.events.push(json!({
                "dataset_id": dataset,
                "test_event_code": test_code,
                "partner_agent": partner_agent,
                "event": e,
            }));
        }
        (
            200,
            json!({"events_received": data.len(), "messages": [], "fbtrace_id": fbtrace()}),
        )
    }

    pub fn reset(&self) {
        *self.lock() = State::default();
    }

    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut st = self.lock();
        let matches = |f: &Fault| {
            let path_ok = f.path.as_deref().is_none_or(|p| match p.strip_suffix('$') {
                Some(end) => path.ends_with(end),
                None => path.contains(p),
            });
            path_ok
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        };
        let i = st.faults.iter().position(matches)?;
        let f = st.faults.get_mut(i)?;
        let out = f.clone();
        f.times = f.times.saturating_sub(1);
        if f.times == 0 {
            st.faults.remove(i);
        }
        Some(out)
    }

    fn check_app(&self, params: &HashMap<String, String>) -> Option<(u16, Value)> {
        if params.get("client_id").map(String::as_str) != Some(self.config.app_id.as_str()) {
            return Some(graph_error(
                400,
                101,
                None,
                "OAuthException",
                "Error validating application. Invalid application ID.",
            ));
        }
        if params.get("client_secret").map(String::as_str) != Some(self.config.app_secret.as_str())
        {
            return Some(graph_error(
                400,
                1,
                None,
                "OAuthException",
                "Error validating client secret.",
            ));
        }
        None
    }

    fn access_token(&self, params: &HashMap<String, String>) -> (u16, Value) {
        if let Some(e) = self.check_app(params) {
            return e;
        }
        if params.get("grant_type").map(String::as_str) == Some("fb_exchange_token") {
            let Some(old) = params.get("fb_exchange_token") else {
                return graph_error(
                    400,
                    100,
                    None,
                    "OAuthException",
                    "Missing fb_exchange_token parameter.",
                );
            };
            let mut st = self.lock();
            let Some(info) = st.tokens.get(old).cloned() else {
                return token_error(
                    190,
                    "Invalid OAuth access token - Cannot parse access token",
                );
            };
            if info.revoked {
                return token_error(
                    460,
                    "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
                );
            }
            if info.expires_at != 0 && info.expires_at <= now() {
                return token_error(463, "Error validating access token: Session has expired.");
            }
            let token = self.mint(&mut st, "EAAG");
            let expires_in = if info.expires_at == 0 {
                0
            } else {
                LONG_LIVED_SECONDS
            };
            st.tokens.insert(
                token.clone(),
                TokenInfo {
                    issued_at: now(),
                    expires_at: if expires_in == 0 {
                        0
                    } else {
                        now() + expires_in
                    },
                    ..info
                },
            );
            return (
                200,
                json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in}),
            );
        }
        let Some(code) = params.get("code") else {
            return graph_error(400, 100, None, "OAuthException", "Missing code parameter.");
        };
        let mut st = self.lock();
        let Some(grant) = st.grants.get(code).cloned() else {
            return graph_error(
                400,
                100,
                Some(36007),
                "OAuthException",
                "Invalid verification code format.",
            );
        };
        if grant.used {
            return graph_error(
                400,
                100,
                Some(36009),
                "OAuthException",
                "This authorization code has been used.",
            );
        }
        if grant.expires_at <= now() {
            return graph_error(
                400,
                100,
                Some(36007),
                "OAuthException",
                "Code was invalid or expired. ",
            );
        }
        if let Some(uri) = &grant.redirect_uri
            && params.get("redirect_uri") != Some(uri)
        {
            return graph_error(
                400,
                100,
                Some(36008),
                "OAuthException",
                "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request",
            );
        }
        if let Some(g) = st.grants.get_mut(code) {
            g.used = true;
        }
        let token = self.mint(&mut st, "EAAG");
        let expires_in = grant.token_expires_in.unwrap_or(SHORT_LIVED_SECONDS);
        st.tokens.insert(
            token.clone(),
            TokenInfo {
                kind: grant.token_type,
                scopes: grant.scopes,
                waba_id: grant.waba_id,
                page_ids: grant.page_ids,
                instagram_account_ids: grant.instagram_account_ids,
                issued_at: now(),
                expires_at: if expires_in == 0 {
                    0
                } else {
                    now() + expires_in
                },
                revoked: false,
                user_id: "10000000000001".into(),
            },
        );
        (
            200,
            json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in}),
        )
    }

    fn debug_token(&self, params: &HashMap<String, String>, bearer: Option<&str>) -> (u16, Value) {
        let app_token = format!("{}|{}", self.config.app_id, self.config.app_secret);
        let presented = params.get("access_token").map(String::as_str).or(bearer);
        let st = self.lock();
        let app_ok = presented == Some(app_token.as_str())
            || presented
                .and_then(|t| st.tokens.get(t))
                .is_some_and(|t| !t.revoked);
        if !app_ok {
            return token_error(190, "Invalid OAuth access token signature.");
        }
        let Some(input) = params.get("input_token") else {
            return graph_error(
                400,
                100,
                None,
                "OAuthException",
                "The parameter input_token is required",
            );
        };
        let Some(info) = st.tokens.get(input) else {
            return (
                200,
                json!({"data": {"is_valid": false, "scopes": [], "error": {"code": 190, "message": "Invalid OAuth access token."}}}),
            );
        };
        let valid = !info.revoked && (info.expires_at == 0 || info.expires_at > now());
        let mut granular = Vec::new();
        for s in &info.scopes {
            let mut g = json!({"scope": s});
            if s.starts_with("whatsapp_business")
                && let Some(w) = &info.waba_id
            {
                g["target_ids"] = json!([w]);
            } else if messaging::is_page_scope(s) && !info.page_ids.is_empty() {
                g["target_ids"] = json!(info.page_ids);
            } else if messaging::is_instagram_scope(s) && !info.instagram_account_ids.is_empty() {
                g["target_ids"] = json!(info.instagram_account_ids);
            }
            granular.push(g);
        }
        let mut data = json!({
            "app_id": self.config.app_id,
            "type": info.kind,
            "application": "ctwa-sim",
            "data_access_expires_at": if info.expires_at == 0 { 0 } else { info.issued_at + 90 * 86_400 },
            "expires_at": info.expires_at,
            "is_valid": valid,
            "issued_at": info.issued_at,
            "scopes": info.scopes,
            "granular_scopes": granular,
            "user_id": info.user_id,
        });
        if !valid {
            data["error"] = json!({"code": 190, "subcode": if info.revoked { 460 } else { 463 }, "message": "Error validating access token."});
        }
        (200, json!({ "data": data }))
    }

    /// Routes one request: Graph endpoints (after the version segment) and `/_sim/...`.
    pub async fn handle(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &hyper::HeaderMap,
        body: &[u8],
    ) -> SimAnswer {
        let body_json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if let Some(ctl) = path.strip_prefix("/_sim") {
            return SimAnswer::from(match (method, ctl) {
                ("POST", "/oauth/codes") => (200, self.create_code(&body_json)),
                ("POST", "/tokens") => (200, self.create_token(&body_json)),
                ("POST", "/ad_accounts") => (200, self.add_ad_account(&body_json)),
                ("POST", "/pages") => match self.add_page(&body_json) {
                    Ok(v) => (200, v),
                    Err(e) => (400, json!({"error": e})),
                },
                ("POST", "/insights") => self.add_insights(&body_json),
                ("POST", "/phone_numbers") => {
                    let waba = body_json["waba_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    self.set_phone_numbers(&waba, &body_json["phone_numbers"]);
                    (200, json!({"success": true}))
                }
                ("POST", "/tokens/revoke") => {
                    let ok = self.revoke(body_json["access_token"].as_str().unwrap_or_default());
                    (if ok { 200 } else { 404 }, json!({"success": ok}))
                }
                ("POST", "/tokens/expire") => {
                    let ok = self.expire(body_json["access_token"].as_str().unwrap_or_default());
                    (if ok { 200 } else { 404 }, json!({"success": ok}))
                }
                ("POST", "/faults") => match serde_json::from_value::<Fault>(body_json) {
                    Ok(f) => {
                        self.add_fault(f);
                        (200, json!({"success": true}))
                    }
                    Err(e) => (400, json!({"error": e.to_string()})),
                },
                ("POST", "/faults/clear") => {
                    self.clear_faults();
                    (200, json!({"success": true}))
                }
                ("GET", "/requests") => (200, json!({"requests": self.requests()})),
                ("GET", "/events") => (200, json!({"events": self.received_events()})),
                ("POST", "/reset") => {
                    self.reset();
                    (200, json!({"success": true}))
                }
                _ => (404, json!({"error": "unknown simulator control route"})),
            });
        }
        // Strip the version segment (`/v25.0/...`).
        let rest = match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
            Some((v, rest)) if v.starts_with('v') && v[1..].contains('.') => format!("/{rest}"),
            _ => path.to_string(),
        };
        let mut params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let is_form = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            params.extend(form_urlencoded::parse(body).into_owned());
        } else if let Value::Object(m) = &body_json {
            for (k, v) in m {
                params.insert(
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                );
            }
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("OAuth "))
            });
        let token = params.get("access_token").map(String::as_str).or(bearer);
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        // A user token's call (not the OAuth exchange, not the app token's introspection)
        // is checked for its appsecret_proof, and the outcome logged with the request.
        let app_token_call = matches!(
            segments.as_slice(),
            ["oauth", "access_token"] | ["debug_token"]
        );
        let proof = match token {
            Some(t) if !app_token_call => {
                Some(self.proof_status(t, params.get("appsecret_proof").map(String::as_str)))
            }
            _ => None,
        };
        let required = {
            let mut st = self.lock();
            st.requests.push(json!({
                "method": method,
                "path": rest,
                "params": params,
                "appsecret_proof": proof,
            }));
            st.require_appsecret_proof
        };
        if required && let Some(status) = proof.filter(|p| *p != "valid") {
            let message = if status == "missing" {
                "API calls from the server require an appsecret_proof argument"
            } else {
                "Invalid appsecret_proof provided in the API argument"
            };
            return graph_error(400, 100, None, "GraphMethodException", message).into();
        }
        let fault = self.take_fault(method, &rest);
        let answer_delay = fault.as_ref().map_or(0, |f| f.answer_delay_ms);
        if let Some(f) = fault {
            if f.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
            }
            if f.status != 200 {
                let code = f.code.unwrap_or(if f.status >= 500 { 2 } else { 1 });
                let (status, mut body) = graph_error(
                    f.status,
                    code,
                    f.error_subcode,
                    "OAuthException",
                    f.message.as_deref().unwrap_or(
                        "An unexpected error has occurred. Please retry your request later.",
                    ),
                );
                if let Some(t) = f.is_transient {
                    body["error"]["is_transient"] = json!(t);
                }
                return (status, body).into();
            }
        }
        let answer = match self.marketing(method, &segments, &params, &body_json, token) {
            Some(answer) => answer,
            None => self.graph(method, &segments, &rest, &params, &body_json, token, bearer),
        };
        if answer_delay > 0 {
            tokio::time::sleep(Duration::from_millis(answer_delay)).await;
        }
        answer
    }

    /// The Graph endpoints other than the Marketing API's.
    #[allow(clippy::too_many_arguments)]
    fn graph(
        &self,
        method: &str,
        segments: &[&str],
        rest: &str,
        params: &HashMap<String, String>,
        body_json: &Value,
        token: Option<&str>,
        bearer: Option<&str>,
    ) -> SimAnswer {
        SimAnswer::from(match (method, segments) {
            ("GET" | "POST", ["oauth", "access_token"]) => self.access_token(params),
            ("GET", ["debug_token"]) => self.debug_token(params, bearer),
            ("GET" | "POST", [owner, "dataset"]) => self.dataset(method, owner, token),
            ("GET", [waba, "phone_numbers"]) => self.phone_numbers(waba, params, token),
            ("POST", [dataset, "events"]) => self.events(dataset, body_json, token),
            ("GET", [id]) if self.lock().messaging.kind_of(id).is_some() => {
                self.messaging_object(id, params, token)
            }
            _ => graph_error(
                400,
                100,
                Some(33),
                "GraphMethodException",
                &format!(
                    "Unsupported {} request. Object with ID '{}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                    method.to_lowercase(),
                    rest.trim_start_matches('/')
                ),
            ),
        })
    }
}

impl From<(u16, Value)> for SimAnswer {
    fn from((status, body): (u16, Value)) -> Self {
        Self {
            status,
            body,
            usage: None,
        }
    }
}

/// Ids given as strings or numbers (`page_ids`, `instagram_account_ids`).
fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(messaging::id_value).collect())
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub struct RunningSim {
    pub addr: SocketAddr,
    pub sim: Arc<Simulator>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSim {
    /// The value for `META_GRAPH_URL`.
    pub fn graph_url(&self) -> String {
        format!("http://{}/{DEFAULT_VERSION}", self.addr)
    }
    pub fn control_url(&self) -> String {
        format!("http://{}/_sim", self.addr)
    }
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Serves the simulator on `addr` (port 0 for any free port).
pub async fn start(addr: SocketAddr, config: SimConfig) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sim = Simulator::new(config);
    let s = sim.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = Limited::new(body, 8 << 20)
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let answer = s
                            .handle(
                                parts.method.as_str(),
                                parts.uri.path(),
                                parts.uri.query().unwrap_or(""),
                                &parts.headers,
                                &body,
                            )
                            .await;
                        let mut builder = hyper::Response::builder()
                            .status(answer.status)
                            .header("content-type", "application/json; charset=UTF-8")
                            .header("x-fb-trace-id", fbtrace());
                        if let Some(u) = &answer.usage {
                            builder = builder.header("x-business-use-case-usage", u.as_str());
                        }
                        let resp = builder
                            .body(Full::new(Bytes::from(answer.body.to_string())))
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(RunningSim { addr, sim, task })
}
