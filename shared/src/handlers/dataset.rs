//! The dataset function's routes: `GET|POST /v1/dataset` (provisioning, idempotent)
//! and `GET|POST /v1/capi` (seed 001's CAPI settings and triggers).

use crate::auth::authorize;
use crate::capi::event::Currency;
use crate::capi::{CapiDeps, capi_view, provision_channel_dataset, provision_dataset};
use crate::domain::Route;
use crate::error::{ApiError, ApiResult};
use crate::handlers::connect::json_body;
use crate::http::{ApiRequest, ApiResponse};
use crate::ids::{DatasetId, PageId};
use crate::meta::connection::ConnectionState;
use crate::store::CapiSettings;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

pub async fn handle(deps: &CapiDeps, req: ApiRequest) -> ApiResponse {
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

/// Whether the account's Meta connection can be used now.
async fn connected(deps: &CapiDeps, account_id: &str) -> ApiResult<bool> {
    let conn = deps.meta.connections.get_connection(account_id).await?;
    Ok(ConnectionState::of(conn.as_ref(), crate::time::now_secs()).is_usable())
}

async fn get_dataset(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let config = deps.settings.get_capi_or_default(&account_id).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({
            "dataset_id": config.dataset_id,
            "configured": config.dataset_id.is_some(),
            "pages": channel_datasets(&config, "page:"),
            "instagram_accounts": channel_datasets(&config, "ig:"),
        }),
    ))
}

/// The datasets of the account's Pages (`page:`) or Instagram accounts (`ig:`): id ->
/// dataset id.
fn channel_datasets(config: &CapiSettings, prefix: &str) -> serde_json::Map<String, Value> {
    config
        .channel_datasets
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|id| (id.to_string(), json!(v))))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetBody {
    #[serde(default, alias = "datasetId")]
    dataset_id: Option<String>,
    /// Seed 002's `{"accountId": ...}`: the API key names the account; a body that
    /// names another one is refused as the conversions body is.
    #[serde(default, alias = "accountId")]
    account_id: Option<String>,
    /// A Page's dataset (Messenger conversions) instead of the WABA's.
    #[serde(default)]
    page_id: Option<String>,
    /// An Instagram account's dataset (Instagram conversions) instead of the WABA's.
    #[serde(default)]
    instagram_account_id: Option<String>,
}

async fn post_dataset(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let body: DatasetBody = json_body(req)?;
    if let Some(a) = &body.account_id
        && a.trim() != account_id
    {
        return Err(ApiError::not_found(format!("account {a} not found")));
    }
    let channel_route = match (&body.page_id, &body.instagram_account_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give page_id or instagram_account_id, not both",
            ));
        }
        (Some(p), None) => Some(Route::Page(
            PageId::parse(p)
                .map_err(|e| e.in_field("page_id"))?
                .into_string(),
        )),
        (None, Some(i)) => Some(Route::Instagram(
            PageId::parse(i)
                .map_err(|e| e.in_field("instagram_account_id"))?
                .into_string(),
        )),
        (None, None) => None,
    };
    if let Some(route) = channel_route {
        if body.dataset_id.is_some() {
            return Err(ApiError::bad_request(
                "dataset_id cannot be set for a Page or an Instagram account: Meta links one dataset to each, provisioned here with POST /v1/dataset {\"page_id\"} or {\"instagram_account_id\"}",
            ));
        }
        let out = provision_channel_dataset(deps, &account_id, &route).await?;
        return Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({
                "dataset_id": out.dataset_id,
                "created": out.created,
                route.field(): route.business_id(),
            }),
        ));
    }
    if let Some(id) = body.dataset_id {
        let id = DatasetId::parse(&id)?.into_string();
        let mut config = deps.settings.get_capi_or_default(&account_id).await?;
        config.dataset_id = Some(id.clone());
        deps.settings.put_capi(&account_id, &config).await?;
        return Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"dataset_id": id, "created": false, "source": "provided"}),
        ));
    }
    let out = provision_dataset(deps, &account_id).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"dataset_id": out.dataset_id, "created": out.created}),
    ))
}

async fn get_capi(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let config = deps.settings.get_capi_or_default(&account_id).await?;
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
    #[serde(default)]
    forward_automatic_events: Option<bool>,
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
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let body: CapiBody = json_body(req)?;
    let mut config: CapiSettings = deps.settings.get_capi_or_default(&account_id).await?;
    if let Some(id) = &body.dataset_id {
        config.dataset_id = Some(DatasetId::parse(id)?.into_string());
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
    if let Some(b) = body.forward_automatic_events {
        config.forward_automatic_events = b;
    }
    let is_connected = connected(deps, &account_id).await?;
    deps.settings.put_capi(&account_id, &config).await?;
    if config.dataset_id.is_none() && is_connected {
        let out = provision_dataset(deps, &account_id).await?;
        config.dataset_id = Some(out.dataset_id);
    }
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"success": true, "capi": capi_view(&config, is_connected)}),
    ))
}
