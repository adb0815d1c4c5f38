//! CAPI routes. Dataset function: `GET|POST /v1/dataset`, `GET|POST /v1/capi`.
//! Conversions function: `POST /v1/conversions`, `POST /v1/conversions/batch`,
//! `GET /v1/conversions` (audit trail), `POST /v1/triggers`.

use crate::auth::authenticate;
use crate::capi::RecordContext;
use crate::capi::event::{Conversion, Currency, EventName, new_event_id};
use crate::capi::pii::{hash_email, hash_phone};
use crate::capi::{
    ATTRIBUTION_WINDOW_MS, Attribution, CapiDeps, CapiError, MAX_EVENT_AGE_SECS, SendResult,
    capi_view, deliver, last_click_for_customer, last_click_in_conversation, new_record,
    provision_dataset,
};
use crate::domain::phone_digits;
use crate::error::{ApiError, ApiResult};
use crate::graph::GraphError;
use crate::handlers::connect::json_body;
use crate::http::{ApiRequest, ApiResponse};
use crate::meta::connection::ConnectError;
use crate::store::{CapiConfig, ConnectionStatus, EventRecord, EventStatus};
use crate::time::rfc3339_millis;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Events per batch request (Meta's limit per request).
pub const MAX_BATCH: usize = 1000;
/// A batch body may be large: up to 1000 events.
const MAX_BATCH_BODY_BYTES: usize = 2 * 1024 * 1024;

pub async fn handle_dataset(deps: &CapiDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path);
    let result = match (&req.method, path) {
        (&Method::GET, "/v1/dataset") => get_dataset(deps, &req).await,
        (&Method::POST, "/v1/dataset") => post_dataset(deps, &req).await,
        (&Method::GET, "/v1/capi") => get_capi(deps, &req).await,
        (&Method::POST, "/v1/capi") => post_capi(deps, &req).await,
        (_, "/v1/dataset" | "/v1/capi") => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

pub async fn handle_conversions(deps: &CapiDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path);
    let result = match (&req.method, path) {
        (&Method::POST, "/v1/conversions") => send_one(deps, &req).await,
        (&Method::POST, "/v1/conversions/batch") => send_batch(deps, &req).await,
        (&Method::GET, "/v1/conversions") => list(deps, &req).await,
        (&Method::POST, "/v1/triggers") => trigger(deps, &req).await,
        (_, "/v1/conversions" | "/v1/conversions/batch" | "/v1/triggers") => {
            Err(ApiError::MethodNotAllowed)
        }
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn capi_error(e: CapiError) -> ApiError {
    match e {
        // The account's state, not a server failure: 409 / 401 like the connect routes.
        CapiError::Connect(ConnectError::NotConnected) | CapiError::NoWaba => {
            ApiError::status_with(
                StatusCode::CONFLICT,
                "meta_not_connected",
                "Meta not connected: run exchange-code first",
            )
        }
        CapiError::Connect(ConnectError::TokenInvalid(_)) => ApiError::status_with(
            StatusCode::UNAUTHORIZED,
            "meta_token_invalid",
            "The stored Meta token is expired or revoked: reconnect with a fresh code (exchange-code)",
        ),
        CapiError::NoDataset => ApiError::status_with(
            StatusCode::CONFLICT,
            "no_dataset",
            "No dataset for this account: POST /v1/dataset (or set dataset_id with POST /v1/capi)",
        ),
        CapiError::DatasetRefused(g) if g.is_token_error() => ApiError::status_with(
            StatusCode::UNAUTHORIZED,
            "meta_token_invalid",
            "Meta refused the stored token: reconnect with a fresh code (exchange-code)",
        )
        .with_details(json!({"meta_error": meta_error(&g)})),
        CapiError::DatasetRefused(g) if g.is_retryable() => ApiError::status_with(
            StatusCode::BAD_GATEWAY,
            "meta_unavailable",
            format!("Meta did not answer the dataset call: {g}; try again"),
        )
        .with_details(json!({"meta_error": meta_error(&g)})),
        CapiError::DatasetRefused(g) => {
            let hint = if g.code() == Some(100) {
                "(#100) Invalid parameter usually means the WhatsApp Business Account is not verified yet: complete business verification in Meta Business Manager"
            } else {
                "see meta_error"
            };
            ApiError::status_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                "meta_refused",
                format!("Meta refused the dataset call: {g}"),
            )
            .with_details(json!({"meta_error": meta_error(&g), "hint": hint}))
        }
        CapiError::Connect(other) => ApiError::internal(other),
        CapiError::Store(e) => ApiError::from(e),
    }
}

fn meta_error(e: &GraphError) -> Value {
    match e {
        GraphError::Api { error, .. } => serde_json::to_value(error).unwrap_or(Value::Null),
        other => json!({"message": other.to_string()}),
    }
}

async fn connected(deps: &CapiDeps, account_id: &str) -> ApiResult<bool> {
    let conn = deps.meta.connections.get_connection(account_id).await?;
    let now = crate::time::now_secs();
    Ok(conn.is_some_and(|c| {
        c.status == ConnectionStatus::Connected && c.expires_at.is_none_or(|e| e > now)
    }))
}

// ------------------------------------------------------------------ dataset and config

async fn get_dataset(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    let config = deps.store.get_capi(&account_id).await?.unwrap_or_default();
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"dataset_id": config.dataset_id, "configured": config.dataset_id.is_some()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetBody {
    #[serde(default, alias = "datasetId")]
    dataset_id: Option<String>,
}

fn valid_meta_id(id: &str, what: &str) -> ApiResult<String> {
    let id = id.trim();
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "{what} must be a Meta id (digits)"
        )));
    }
    Ok(id.to_string())
}

async fn post_dataset(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    let body: DatasetBody = json_body(req)?;
    if let Some(id) = body.dataset_id {
        let id = valid_meta_id(&id, "dataset_id")?;
        let mut config = deps.store.get_capi(&account_id).await?.unwrap_or_default();
        config.dataset_id = Some(id.clone());
        deps.store.put_capi(&account_id, &config).await?;
        return Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"dataset_id": id, "created": false, "source": "provided"}),
        ));
    }
    let out = provision_dataset(deps, &account_id)
        .await
        .map_err(capi_error)?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"dataset_id": out.dataset_id, "created": out.created}),
    ))
}

async fn get_capi(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    let config = deps.store.get_capi(&account_id).await?.unwrap_or_default();
    let connected = connected(deps, &account_id).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"success": true, "capi": capi_view(&config, connected)}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapiBody {
    #[serde(default)]
    dataset_id: Option<String>,
    #[serde(default)]
    lead_event_enabled: Option<bool>,
    #[serde(default)]
    lead_event_trigger: Option<String>,
    #[serde(default)]
    lead_event_tag: Option<String>,
    #[serde(default)]
    purchase_event_enabled: Option<bool>,
    #[serde(default)]
    purchase_event_trigger: Option<String>,
    #[serde(default)]
    purchase_event_tag: Option<String>,
    #[serde(default)]
    purchase_event_currency: Option<String>,
    #[serde(default)]
    purchase_event_value: Option<f64>,
}

fn short_text(v: Option<String>, what: &str) -> ApiResult<Option<String>> {
    match v {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) if s.len() > 128 || s.chars().any(char::is_control) => Err(ApiError::bad_request(
            format!("{what} must be up to 128 printable characters"),
        )),
        Some(s) => Ok(Some(s.trim().to_string())),
    }
}

/// Partial update: only the fields given change. With no dataset yet and none given,
/// the dataset is provisioned (GET-first) when Meta is connected.
async fn post_capi(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    let body: CapiBody = json_body(req)?;
    let mut config: CapiConfig = deps.store.get_capi(&account_id).await?.unwrap_or_default();
    if let Some(id) = &body.dataset_id {
        config.dataset_id = Some(valid_meta_id(id, "dataset_id")?);
    }
    if let Some(b) = body.lead_event_enabled {
        config.lead_event_enabled = b;
    }
    if body.lead_event_trigger.is_some() {
        config.lead_event_trigger = short_text(body.lead_event_trigger, "lead_event_trigger")?;
    }
    if body.lead_event_tag.is_some() {
        config.lead_event_tag = short_text(body.lead_event_tag, "lead_event_tag")?;
    }
    if let Some(b) = body.purchase_event_enabled {
        config.purchase_event_enabled = b;
    }
    if body.purchase_event_trigger.is_some() {
        config.purchase_event_trigger =
            short_text(body.purchase_event_trigger, "purchase_event_trigger")?;
    }
    if body.purchase_event_tag.is_some() {
        config.purchase_event_tag = short_text(body.purchase_event_tag, "purchase_event_tag")?;
    }
    if let Some(c) = body.purchase_event_currency {
        config.purchase_event_currency = Some(
            Currency::parse(&c)
                .map_err(ApiError::bad_request)?
                .as_str()
                .to_string(),
        );
    }
    if let Some(v) = body.purchase_event_value {
        if !v.is_finite() || v < 0.0 {
            return Err(ApiError::bad_request(
                "purchase_event_value must be a number >= 0",
            ));
        }
        config.purchase_event_value = Some(v);
    }
    let is_connected = connected(deps, &account_id).await?;
    deps.store.put_capi(&account_id, &config).await?;
    if config.dataset_id.is_none() && is_connected {
        let out = provision_dataset(deps, &account_id)
            .await
            .map_err(capi_error)?;
        config.dataset_id = Some(out.dataset_id);
    }
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"success": true, "capi": capi_view(&config, is_connected)}),
    ))
}

// ------------------------------------------------------------------ conversions

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversionBody {
    #[serde(default, alias = "accountId")]
    account_id: Option<String>,
    #[serde(default, alias = "conversationId")]
    conversation_id: Option<String>,
    #[serde(
        default,
        alias = "phone_number",
        alias = "phoneE164",
        alias = "phone_e164"
    )]
    phone: Option<String>,
    #[serde(alias = "eventName")]
    event_name: String,
    #[serde(default, alias = "eventId")]
    event_id: Option<String>,
    #[serde(default, alias = "eventTime")]
    event_time: Option<i64>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default, alias = "testCode", alias = "testEventCode")]
    test_event_code: Option<String>,
    #[serde(default, alias = "customData")]
    custom_data: Option<Map<String, Value>>,
}

/// A conversion checked and resolved to its click, or the reason it has none.
enum Prepared {
    Ready(Box<Ready>),
    NoClick(&'static str),
}

struct Ready {
    conversion: Conversion,
    attribution: Attribution,
    warnings: Vec<String>,
    test_event_code: Option<String>,
}

struct AccountContext {
    account_id: String,
    waba_id: String,
    dataset_id: String,
}

async fn context(deps: &CapiDeps, account_id: &str) -> ApiResult<AccountContext> {
    let conn = deps.meta.connections.get_connection(account_id).await?;
    let conn = conn.ok_or_else(|| capi_error(CapiError::Connect(ConnectError::NotConnected)))?;
    if conn.status == ConnectionStatus::Broken {
        return Err(capi_error(CapiError::Connect(ConnectError::TokenInvalid(
            None,
        ))));
    }
    let waba_id = match conn.waba_id {
        Some(w) => w,
        None => deps
            .accounts
            .get_account(account_id)
            .await?
            .and_then(|a| a.waba_id)
            .ok_or_else(|| capi_error(CapiError::NoWaba))?,
    };
    let dataset_id = deps
        .store
        .get_capi(account_id)
        .await?
        .and_then(|c| c.dataset_id)
        .ok_or_else(|| capi_error(CapiError::NoDataset))?;
    Ok(AccountContext {
        account_id: account_id.to_string(),
        waba_id,
        dataset_id,
    })
}

fn valid_event_id(raw: Option<String>) -> ApiResult<String> {
    match raw {
        None => Ok(new_event_id()),
        Some(id) => {
            let id = id.trim().to_string();
            if id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
            {
                return Err(ApiError::bad_request(
                    "event_id must be 1 to 128 characters: letters, digits, _ - . :",
                ));
            }
            Ok(id)
        }
    }
}

async fn prepare(
    deps: &CapiDeps,
    ctx: &AccountContext,
    b: ConversionBody,
    now_ms: i64,
) -> ApiResult<Prepared> {
    if let Some(a) = &b.account_id
        && a != &ctx.account_id
    {
        return Err(ApiError::not_found(format!("account {a} not found")));
    }
    let event_name = EventName::parse(&b.event_name).map_err(ApiError::bad_request)?;
    let currency = b
        .currency
        .as_deref()
        .map(Currency::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    if let Some(v) = b.value
        && (!v.is_finite() || v < 0.0)
    {
        return Err(ApiError::bad_request("value must be a number >= 0"));
    }
    if event_name.requires_value() && (currency.is_none() || b.value.is_none()) {
        return Err(ApiError::bad_request(format!(
            "currency (ISO 4217) and value are required for {}",
            event_name.as_str()
        )));
    }
    if b.value.is_some() != currency.is_some() {
        return Err(ApiError::bad_request("value and currency go together"));
    }
    let event_id = valid_event_id(b.event_id)?;
    let now_s = now_ms / 1000;
    let event_time = b.event_time.unwrap_or(now_s);
    if event_time < now_s - MAX_EVENT_AGE_SECS {
        return Err(ApiError::bad_request(
            "event_time is more than 7 days old: Meta refuses such events (and the whole request with them)",
        ));
    }
    if event_time > now_s + 300 {
        return Err(ApiError::bad_request("event_time is in the future"));
    }
    if let Some(code) = &b.test_event_code
        && (code.is_empty() || code.len() > 64)
    {
        return Err(ApiError::bad_request(
            "test_event_code must be 1 to 64 characters",
        ));
    }
    // Keeps every record far below DynamoDB's 400 KB item limit.
    if b.custom_data
        .as_ref()
        .is_some_and(|c| Value::Object(c.clone()).to_string().len() > 8 * 1024)
    {
        return Err(ApiError::bad_request(
            "custom_data must be at most 8 KB of JSON",
        ));
    }
    let ph = b
        .phone
        .as_deref()
        .map(hash_phone)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let em = b
        .email
        .as_deref()
        .map(hash_email)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let attribution = match (&b.conversation_id, &b.phone) {
        (Some(cid), _) => {
            if cid.is_empty()
                || cid.len() > 64
                || !cid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(ApiError::not_found(format!("conversation {cid} not found")));
            }
            let conv = deps.conversations.get_conversation(cid).await?;
            if conv.is_none_or(|c| c.account_id != ctx.account_id) {
                return Err(ApiError::not_found(format!("conversation {cid} not found")));
            }
            match last_click_in_conversation(deps, cid).await? {
                Some(a) => a,
                None => return Ok(Prepared::NoClick("no_ctwa_click_id_for_conversation")),
            }
        }
        (None, Some(p)) => {
            let digits = phone_digits(p).ok_or_else(|| {
                ApiError::bad_request("phone must be an E.164 number, with or without +")
            })?;
            match last_click_for_customer(deps, &ctx.account_id, &format!("wa:{digits}")).await? {
                Some(a) => a,
                None => return Ok(Prepared::NoClick("no_ctwa_click_id_for_phone")),
            }
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "conversation_id or phone is required",
            ));
        }
    };
    let mut warnings = Vec::new();
    if attribution.click.clicked_at_ms < now_ms - ATTRIBUTION_WINDOW_MS {
        warnings.push(format!(
            "the click ({}) is older than the 7-day attribution window: sent, but Meta may not attribute it",
            rfc3339_millis(attribution.click.clicked_at_ms)
        ));
    }
    let ctwa_clid = attribution
        .click
        .referral
        .ctwa_clid
        .clone()
        .unwrap_or_default();
    Ok(Prepared::Ready(Box::new(Ready {
        conversion: Conversion {
            event_name,
            event_id,
            event_time,
            waba_id: ctx.waba_id.clone(),
            ctwa_clid,
            currency,
            value: b.value,
            ph,
            em,
            custom_data: b.custom_data,
        },
        attribution,
        warnings,
        test_event_code: b.test_event_code,
    })))
}

fn result_view(r: &SendResult, attribution: Option<&Attribution>) -> (StatusCode, Value) {
    let rec = &r.record;
    let mut v = json!({
        "success": rec.status == EventStatus::Delivered,
        "status": rec.status.as_str(),
        "event_id": rec.event_id,
        "event_name": rec.event_name,
        "ctwa_clid": rec.ctwa_clid,
        "events_received": rec.events_received,
        "fbtrace_id": rec.fbtrace_id,
        "duplicate": r.duplicate,
        "attempts": rec.attempts,
        "warnings": rec.warnings,
    });
    if let Some(a) = attribution {
        v["attribution"] = json!({
            "model": a.model,
            "conversation_id": a.click.conversation_id,
            "clicked_at": rfc3339_millis(a.click.clicked_at_ms),
            "message_id": a.click.message_id,
            "source_id": a.click.referral.source_id,
        });
    } else if let Some(c) = &rec.conversation_id {
        v["attribution"] = json!({"model": "last_click", "conversation_id": c});
    }
    if rec.error.is_some() {
        v["error"] = rec.error.clone().unwrap_or(Value::Null);
    }
    let status = match rec.status {
        EventStatus::Delivered => StatusCode::OK,
        EventStatus::Pending | EventStatus::InFlight => {
            v["retry"] = json!(
                "Meta is unavailable: the event is kept and re-sent automatically with the same event_id"
            );
            StatusCode::ACCEPTED
        }
        EventStatus::Failed => {
            let token = rec
                .error
                .as_ref()
                .and_then(|e| e["meta_error"]["code"].as_i64())
                == Some(190);
            if token {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        }
    };
    (status, v)
}

async fn send_prepared(
    deps: &CapiDeps,
    ctx: &AccountContext,
    items: Vec<(Prepared, Option<String>)>,
    now_ms: i64,
) -> ApiResult<Vec<(StatusCode, Value)>> {
    // Which items go to Meta, and their records.
    let mut out: Vec<Option<(StatusCode, Value)>> = Vec::new();
    let mut records: Vec<EventRecord> = Vec::new();
    let mut slots: Vec<(usize, Attribution)> = Vec::new();
    for (prepared, batch_test_code) in items {
        match prepared {
            Prepared::NoClick(reason) => out.push(Some((
                StatusCode::OK,
                json!({"success": false, "reason": reason}),
            ))),
            Prepared::Ready(ready) => {
                let Ready {
                    conversion,
                    attribution,
                    warnings,
                    test_event_code,
                } = *ready;
                let rec = new_record(
                    deps,
                    &conversion,
                    RecordContext {
                        account_id: ctx.account_id.clone(),
                        dataset_id: ctx.dataset_id.clone(),
                        conversation_id: Some(attribution.click.conversation_id.clone()),
                        test_event_code: test_event_code.or(batch_test_code),
                        warnings,
                        ad_id: attribution.click.referral.source_id.clone(),
                    },
                    now_ms,
                );
                slots.push((out.len(), attribution));
                out.push(None);
                records.push(rec);
            }
        }
    }
    if !records.is_empty() {
        let results = deliver(deps, records).await.map_err(capi_error)?;
        for ((slot, attribution), r) in slots.into_iter().zip(results) {
            out[slot] = Some(result_view(&r, Some(&attribution)));
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Value::Null)))
        .collect())
}

async fn send_one(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    let body: ConversionBody = json_body(req)?;
    let now_ms = crate::time::now_millis();
    // Validate what needs no account state first: a bad request is a 400 even when Meta
    // is not connected yet.
    EventName::parse(&body.event_name).map_err(ApiError::bad_request)?;
    let ctx = context(deps, &account_id).await?;
    let prepared = prepare(deps, &ctx, body, now_ms).await?;
    let mut results = send_prepared(deps, &ctx, vec![(prepared, None)], now_ms).await?;
    let (status, v) = results
        .pop()
        .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Value::Null));
    Ok(ApiResponse::json(status, &v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<Value>,
    #[serde(default, alias = "testCode", alias = "testEventCode")]
    test_event_code: Option<String>,
}

async fn send_batch(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    if req.body.len() > MAX_BATCH_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BATCH_BODY_BYTES,
        });
    }
    if req.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object: {\"events\": [...]}",
        ));
    }
    let body: BatchBody = serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {e} (expected {{\"events\": [...]}})"
        ))
    })?;
    if body.events.is_empty() || body.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "events must hold 1 to {MAX_BATCH} events"
        )));
    }
    if let Some(code) = &body.test_event_code
        && (code.is_empty() || code.len() > 64)
    {
        return Err(ApiError::bad_request(
            "test_event_code must be 1 to 64 characters",
        ));
    }
    let now_ms = crate::time::now_millis();
    let ctx = context(deps, &account_id).await?;
    let mut answers: Vec<Option<Value>> = vec![None; body.events.len()];
    let mut to_send = Vec::new();
    let mut indexes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in body.events.into_iter().enumerate() {
        let is_object = raw.is_object();
        let parsed: Result<ConversionBody, _> = serde_json::from_value(raw);
        let prepared = match parsed {
            _ if !is_object => Err(ApiError::bad_request("each event must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!("invalid event: {e}"))),
            Ok(mut b) => {
                if b.event_id.is_none() {
                    b.event_id = Some(new_event_id());
                }
                if !seen.insert(b.event_id.as_deref().unwrap_or_default().trim().to_string()) {
                    Err(ApiError::bad_request(
                        "event_id appears twice in this batch",
                    ))
                } else {
                    prepare(deps, &ctx, b, now_ms).await
                }
            }
        };
        match prepared {
            Ok(p) => {
                indexes.push(i);
                to_send.push((p, body.test_event_code.clone()));
            }
            Err(e) => {
                let r = e.into_response();
                answers[i] = Some(
                    json!({"index": i, "success": false, "status": "invalid", "http_status": r.status.as_u16(), "error": r.body_json()["error"]}),
                );
            }
        }
    }
    let results = send_prepared(deps, &ctx, to_send, now_ms).await?;
    for (i, (status, mut v)) in indexes.into_iter().zip(results) {
        v["index"] = json!(i);
        v["http_status"] = json!(status.as_u16());
        answers[i] = Some(v);
    }
    let answers: Vec<Value> = answers
        .into_iter()
        .map(|a| a.unwrap_or(Value::Null))
        .collect();
    let delivered = answers
        .iter()
        .filter(|a| a["status"] == "delivered")
        .count();
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"results": answers, "delivered": delivered, "total": answers.len()}),
    ))
}

async fn list(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    let limit = match req.query_param("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=200).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit must be 1 to 200"))?,
    };
    let status = req
        .query_param("status")
        .map(|s| {
            EventStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("status must be delivered, pending, failed or in_flight")
            })
        })
        .transpose()?;
    let cursor = req.query_param("cursor");
    if let Some(c) = cursor
        && (c.len() > 256
            || c.split_once('|').is_none_or(|(a, b)| {
                a.is_empty() || b.is_empty() || !a.bytes().take(15).all(|x| x.is_ascii_digit())
            }))
    {
        return Err(ApiError::bad_request("invalid cursor"));
    }
    let (events, next) = deps
        .store
        .list_events(&account_id, limit, cursor, status)
        .await?;
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "timestamp": rfc3339_millis(e.created_at_ms),
                "event_id": e.event_id,
                "event_name": e.event_name,
                "event_time": e.event_time,
                "conversation_id": e.conversation_id,
                "ctwa_clid": e.ctwa_clid,
                "status": e.status.as_str(),
                "attempts": e.attempts,
                "events_received": e.events_received,
                "fbtrace_id": e.fbtrace_id,
                "duration_ms": e.duration_ms,
                "error": e.error,
                "warnings": e.warnings,
                "test_event_code": e.test_event_code,
                "updated_at": rfc3339_millis(e.updated_at_ms),
            })
        })
        .collect();
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"events": rows, "next_cursor": next}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    trigger: String,
    #[serde(default, alias = "phone_number")]
    phone: Option<String>,
    #[serde(default, alias = "conversationId")]
    conversation_id: Option<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default, alias = "eventId")]
    event_id: Option<String>,
    #[serde(default, alias = "testEventCode")]
    test_event_code: Option<String>,
}

/// Fires the configured event whose trigger name matches (seed 001's CAPI config).
async fn trigger(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authenticate(deps.accounts.as_ref(), req).await?;
    let b: TriggerBody = json_body(req)?;
    let config = deps.store.get_capi(&account_id).await?.unwrap_or_default();
    let name = b.trigger.trim();
    let matches = |t: &Option<String>| t.as_deref().is_some_and(|t| t == name);
    let (event_name, enabled, value, currency) = if matches(&config.purchase_event_trigger) {
        (
            "Purchase",
            config.purchase_event_enabled,
            b.value.or(config.purchase_event_value),
            b.currency
                .clone()
                .or(config.purchase_event_currency.clone()),
        )
    } else if matches(&config.lead_event_trigger) {
        (
            "LeadSubmitted",
            config.lead_event_enabled,
            b.value,
            b.currency.clone(),
        )
    } else {
        return Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"success": false, "reason": "unknown_trigger", "trigger": name}),
        ));
    };
    if !enabled {
        return Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"success": false, "reason": "trigger_disabled", "trigger": name, "event_name": event_name}),
        ));
    }
    let body = ConversionBody {
        account_id: None,
        conversation_id: b.conversation_id,
        phone: b.phone,
        event_name: event_name.into(),
        event_id: b.event_id,
        event_time: None,
        value,
        currency,
        email: None,
        test_event_code: b.test_event_code,
        custom_data: None,
    };
    let now_ms = crate::time::now_millis();
    let ctx = context(deps, &account_id).await?;
    let prepared = prepare(deps, &ctx, body, now_ms).await?;
    let mut results = send_prepared(deps, &ctx, vec![(prepared, None)], now_ms).await?;
    let (status, mut v) = results
        .pop()
        .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Value::Null));
    v["trigger"] = json!(name);
    Ok(ApiResponse::json(status, &v))
}
