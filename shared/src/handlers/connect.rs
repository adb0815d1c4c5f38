//! The Meta connection routes: `POST /v1/oauth/exchange-code`,
//! `POST /v1/oauth/refresh-token` and `GET /v1/status` (the seed CLI's default).

use crate::auth::authorize;
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiRequest, ApiResponse};
use crate::meta::connection::{ConnectionState, MetaDeps, RefreshOutcome, exchange_code, refresh};
use crate::store::{Accounts, CapiSettingsStore};
use crate::time::rfc3339_millis;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// JSON request bodies of the client API are small.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;

pub struct ConnectDeps {
    pub accounts: Arc<dyn Accounts>,
    /// The account's pending routes are verified once it connects.
    pub routes: Arc<dyn crate::store::RouteStore>,
    pub meta: Arc<MetaDeps>,
    /// For the status: the dataset and the CAPI config summary.
    pub capi: Arc<dyn CapiSettingsStore>,
}

pub async fn handle(deps: &ConnectDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path);
    let result = match (&req.method, path) {
        (&Method::POST, "/v1/oauth/exchange-code") => exchange(deps, &req).await,
        (&Method::POST, "/v1/oauth/refresh-token") => refresh_token(deps, &req).await,
        (&Method::GET, "/v1/status") => status(deps, &req).await,
        (_, "/v1/oauth/exchange-code" | "/v1/oauth/refresh-token" | "/v1/status") => {
            Err(ApiError::MethodNotAllowed)
        }
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// Parses a JSON body strictly: size-limited, an object, no unknown fields.
pub fn json_body<T: serde::de::DeserializeOwned>(req: &ApiRequest) -> ApiResult<T> {
    json_body_limited(req, MAX_JSON_BODY_BYTES)
}

/// [`json_body`] with another size limit (bodies that carry an image).
pub fn json_body_limited<T: serde::de::DeserializeOwned>(
    req: &ApiRequest,
    limit: usize,
) -> ApiResult<T> {
    if req.body.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &req.body
    };
    // serde would also read a struct from an array of its fields: only objects here.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeBody {
    code: String,
    #[serde(default)]
    redirect_uri: Option<String>,
    /// What the OAuth redirect reported (seed 001). Informational: the token's own
    /// scopes (Meta's `debug_token`) decide, after the exchange.
    #[serde(default, rename = "granted_scopes")]
    _granted_scopes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

fn expires_view(expires_at: Option<i64>) -> Value {
    match expires_at {
        Some(s) => json!(rfc3339_millis(s.saturating_mul(1000))),
        None => Value::Null,
    }
}

async fn exchange(deps: &ConnectDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let body: ExchangeBody = json_body(req)?;
    let code = body.code.trim();
    if code.is_empty() || code.len() > 2048 {
        return Err(ApiError::bad_request(
            "code is required (the ?code= Meta appended to your redirect URI)",
        ));
    }
    if let Some(uri) = &body.redirect_uri
        && !(uri.starts_with("https://") || uri.starts_with("http://"))
    {
        return Err(ApiError::bad_request(
            "redirect_uri must be an http(s) URL, the one registered on the Meta app",
        ));
    }
    let now = crate::time::now_millis();
    let conn = exchange_code(
        &deps.meta,
        &account_id,
        code,
        body.redirect_uri.as_deref(),
        now,
    )
    .await?;
    verify_routes(deps, &account_id, now).await;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({
            "success": true,
            "connected": true,
            "waba_id": conn.waba_id,
            "token_type": conn.token_type,
            "expires_at": expires_view(conn.expires_at),
            "scopes": conn.scopes,
        }),
    ))
}

/// Now that the account's token is known, its pending routes are checked with Meta
/// ([`crate::routes::verify_pending`]). The connection is made whatever happens here:
/// a failure leaves them pending (logged), for the operator's verify route.
async fn verify_routes(deps: &ConnectDeps, account_id: &str, now_ms: i64) {
    let outcome = async {
        let Some(account) = deps.accounts.get_account(account_id).await? else {
            return Ok(Vec::new());
        };
        crate::routes::verify_pending(
            &deps.meta,
            deps.accounts.as_ref(),
            deps.routes.as_ref(),
            &account,
            &crate::store::Actor {
                kind: "connect".into(),
                key_id: None,
            },
            now_ms,
        )
        .await
    }
    .await;
    match outcome {
        Ok(routes) => tracing::info!(
            account_id,
            routes = routes.len(),
            verified = routes
                .iter()
                .filter(|r| r.status == crate::store::RouteStatus::Verified)
                .count(),
            "routes checked with Meta after the connection"
        ),
        Err(e) => {
            tracing::warn!(account_id, error = %e, "routes could not be checked with Meta after the connection; they stay pending")
        }
    }
}

async fn refresh_token(deps: &ConnectDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let _: EmptyBody = json_body(req)?;
    let outcome = refresh(&deps.meta, &account_id, crate::time::now_millis()).await?;
    let body = match outcome {
        RefreshOutcome::Refreshed { expires_at } => {
            json!({"success": true, "refreshed": true, "expires_at": expires_view(expires_at)})
        }
        RefreshOutcome::NeverExpires => {
            json!({"success": true, "refreshed": false, "reason": "token_never_expires", "expires_at": null})
        }
    };
    Ok(ApiResponse::json(StatusCode::OK, &body))
}

/// Per channel: the events permission Meta requires (granted or not, by the stored
/// token's scopes), and each business line with its dataset (or none yet).
fn channels_view(
    account: Option<&crate::domain::Account>,
    conn: Option<&crate::store::MetaConnection>,
    capi: &crate::store::CapiSettings,
) -> serde_json::Value {
    use crate::domain::{MessagingChannel, Route};
    let granted = |c: MessagingChannel| conn.map(|k| c.permission_granted(&k.scopes));
    let lines = |ids: &[String], route: fn(String) -> Route| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|id| {
                let r = route(id.clone());
                json!({
                    r.field(): id,
                    "dataset_id": capi.channel_datasets.get(&r.key()),
                })
            })
            .collect()
    };
    let empty = Vec::new();
    let (pages, igs) = account
        .map(|a| (&a.page_ids, &a.instagram_account_ids))
        .unwrap_or((&empty, &empty));
    json!({
        "whatsapp": {
            "permission": MessagingChannel::Whatsapp.events_permission(),
            "permission_granted": granted(MessagingChannel::Whatsapp),
            "dataset_id": capi.dataset_id,
        },
        "messenger": {
            "permission": MessagingChannel::Messenger.events_permission(),
            "permission_granted": granted(MessagingChannel::Messenger),
            "pages": lines(pages, Route::Page),
        },
        "instagram": {
            "permission": MessagingChannel::Instagram.events_permission(),
            "permission_granted": granted(MessagingChannel::Instagram),
            "instagram_accounts": lines(igs, Route::Instagram),
        },
    })
}

async fn status(deps: &ConnectDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let account = deps.accounts.get_account(&account_id).await?;
    let conn = deps.meta.connections.get_connection(&account_id).await?;
    let capi = deps.capi.get_capi_or_default(&account_id).await?;
    let now_s = crate::time::now_secs();
    let state = ConnectionState::of(conn.as_ref(), now_s);
    let connected = state.is_usable();
    let state = state.as_str();
    let meta = conn.as_ref().map(|c| {
        json!({
            "status": state,
            "token_type": c.token_type,
            "expires_at": expires_view(c.expires_at),
            "expires_in_days": c.expires_at.map(|e| (e - now_s) / 86_400),
            "scopes": c.scopes,
            "connected_at": rfc3339_millis(c.connected_at_ms),
            "refreshed_at": c.refreshed_at_ms.map(rfc3339_millis),
            "last_error": c.last_error,
            "waba_ids": c.waba_ids,
        })
    });
    // The WABA conversions go under, or why none can be used.
    let account_waba = account.as_ref().and_then(|a| a.waba_id.clone());
    let waba = crate::capi::waba_of_send(account_waba.as_deref(), conn.as_ref());
    let waba_problem = match &waba {
        Err(e @ crate::capi::CapiError::WabaNotGranted { .. }) => Some(e.to_string()),
        _ => None,
    };
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({
            "success": true,
            "account_id": account_id,
            "connected": connected,
            "status": state,
            "waba_id": waba.as_ref().ok().cloned().or(account_waba),
            "waba_reachable": conn.as_ref().map(|_| waba_problem.is_none()),
            "waba_error": waba_problem,
            "phone_number_ids": account.as_ref().map(|a| a.phone_number_ids.clone()).unwrap_or_default(),
            "meta": meta,
            "dataset_id": capi.dataset_id,
            "channels": channels_view(account.as_ref(), conn.as_ref(), &capi),
            "capi": crate::capi::capi_view(&capi, connected),
        }),
    ))
}
