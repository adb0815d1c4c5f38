//! `GET /webhook` (Meta's verification handshake), `POST /webhook` (Cloud API) and
//! `POST /webhook/sinch` (Sinch Conversation API). Verify, store each inbound item once
//! in the inbox, answer 200 fast; the capture step does the rest from the inbox stream.

use crate::config::{SinchSecrets, WebhookConfig};
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiRequest, ApiResponse};
use crate::meta::webhook::{WebhookParseError, parse_cloud_webhook};
use crate::secrets::{SecretError, SecretSource, SinchAppSecret, WebhookSecrets};
use crate::signature::{self, SignatureError, SinchHeaders};
use crate::sinch::{SinchCallback, parse_sinch_callback, sinch_app_id};
use crate::store::{Inbox, InboxItem};
use http::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

pub struct WebhookDeps {
    pub inbox: Arc<dyn Inbox>,
    /// Should be a `CachedSecrets`: read on every POST.
    pub secrets: Arc<dyn SecretSource>,
    pub config: WebhookConfig,
}

pub async fn handle(deps: &WebhookDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path);
    let result = match (&req.method, path) {
        (&Method::GET, "/webhook") => verify_subscription(deps, &req).await,
        (&Method::POST, "/webhook") => receive_cloud(deps, &req).await,
        (&Method::POST, "/webhook/sinch") => receive_sinch(deps, &req).await,
        (_, "/webhook" | "/webhook/sinch") => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

async fn secrets(deps: &WebhookDeps) -> ApiResult<WebhookSecrets> {
    Ok(WebhookSecrets::load(deps.secrets.as_ref(), &deps.config.webhook_secret_id).await?)
}

/// When this instance last re-read each secret after a mismatch (unix millis), by id.
static LAST_REREAD_MS: std::sync::Mutex<Option<std::collections::HashMap<String, i64>>> =
    std::sync::Mutex::new(None);
/// At most one re-read per secret per this long per instance: forged requests cannot turn
/// every refusal into a Secrets Manager call.
const REREAD_EVERY_MS: i64 = 10_000;

/// Loads secret `id` with `load` and verifies a request with it by `check`. On a
/// mismatch the secret is read again once (rate-limited, [`may_reread`]), so a secret
/// rotated or set a moment ago is honoured at once instead of after the cache's lifetime.
async fn verify_rereading<S, Fut>(
    deps: &WebhookDeps,
    id: &str,
    load: impl Fn() -> Fut,
    check: impl Fn(&S) -> Result<(), SignatureError>,
) -> ApiResult<S>
where
    Fut: std::future::Future<Output = ApiResult<S>>,
{
    let s = load().await?;
    match check(&s) {
        Err(SignatureError::Mismatch) => {}
        other => return other.map(|()| s).map_err(signature_error),
    }
    if !may_reread(id) {
        return Err(signature_error(SignatureError::Mismatch));
    }
    deps.secrets.invalidate(id);
    let fresh = load().await?;
    check(&fresh).map_err(signature_error)?;
    tracing::info!("webhook signed with a secret newer than the cached one (rotated): re-read");
    Ok(fresh)
}

/// Verifies a webhook with the deployment secret: `check` against each secret it may be
/// signed with now (the current one, the previous one in its rotation window).
async fn verify_rotating(
    deps: &WebhookDeps,
    check: impl Fn(&WebhookSecrets) -> Result<(), SignatureError>,
) -> ApiResult<WebhookSecrets> {
    verify_rereading(
        deps,
        &deps.config.webhook_secret_id,
        || secrets(deps),
        check,
    )
    .await
}

/// Whether this instance may re-read secret `id` after a mismatch now (at most once per
/// [`REREAD_EVERY_MS`] per secret); claims the slot when it may. Only existing secrets
/// mismatch, so the map holds at most one entry per real secret.
fn may_reread(id: &str) -> bool {
    let now = crate::time::now_millis();
    let mut guard = LAST_REREAD_MS.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(Default::default);
    if map.get(id).is_some_and(|last| now - last < REREAD_EVERY_MS) {
        return false;
    }
    if map.len() >= 10_000 {
        map.clear();
    }
    map.insert(id.to_string(), now);
    true
}

/// Verifies a Sinch callback with its app's own secret (the current one, the previous
/// one in its window), re-read once on a mismatch like the deployment secret. An app without a secret (not linked, or linked without
/// one) is refused: whoever signs for an app must hold that app's secret.
async fn verify_sinch_app(
    deps: &WebhookDeps,
    secret_id: &str,
    app_id: &str,
    check: impl Fn(&str) -> Result<(), SignatureError>,
) -> ApiResult<()> {
    let load = || async {
        match SinchAppSecret::load(deps.secrets.as_ref(), secret_id).await {
            Ok(s) => Ok(s),
            Err(SecretError::NotFound(_)) => {
                tracing::warn!(%app_id, "Sinch callback for an app with no webhook secret: refused");
                Err(ApiError::unauthorized(format!(
                    "invalid signature: Sinch app {app_id} has no webhook secret on this deployment (link the app to an account with its secret)"
                )))
            }
            Err(e) => Err(e.into()),
        }
    };
    let verify = |s: &SinchAppSecret| any_secret(&s.secrets(crate::time::now_secs()), &check);
    verify_rereading(deps, secret_id, load, verify)
        .await
        .map(drop)
}

/// The first secret's outcome unless another one matches.
fn any_secret(
    secrets: &[&str],
    verify: impl Fn(&str) -> Result<(), SignatureError>,
) -> Result<(), SignatureError> {
    let mut first = Err(SignatureError::Mismatch);
    for (i, s) in secrets.iter().enumerate() {
        match verify(s) {
            Ok(()) => return Ok(()),
            Err(e) if i == 0 => first = Err(e),
            Err(_) => {}
        }
    }
    first
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Meta's handshake: answer the bare `hub.challenge` when the token matches, else 403.
async fn verify_subscription(deps: &WebhookDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let mode = req.query_param("hub.mode");
    let token = req.query_param("hub.verify_token").unwrap_or_default();
    let challenge = req.query_param("hub.challenge");
    let s = secrets(deps).await?;
    if mode != Some("subscribe") || !constant_time_eq(token.as_bytes(), s.verify_token.as_bytes()) {
        tracing::warn!("webhook verification refused (mode or verify token mismatch)");
        return Err(ApiError::Forbidden(
            "verification failed: hub.mode must be subscribe and hub.verify_token must match"
                .into(),
        ));
    }
    match challenge {
        Some(c) if !c.is_empty() && c.len() <= 512 => Ok(ApiResponse::text(StatusCode::OK, c)),
        _ => Err(ApiError::bad_request(
            "hub.challenge is required (1 to 512 characters)",
        )),
    }
}

fn check_size(deps: &WebhookDeps, req: &ApiRequest) -> ApiResult<()> {
    if req.body.len() > deps.config.max_body_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: deps.config.max_body_bytes,
        });
    }
    Ok(())
}

fn signature_error(e: SignatureError) -> ApiError {
    tracing::warn!(reason = %e, "webhook signature refused");
    ApiError::unauthorized(format!("invalid signature: {e}"))
}

fn parse_error(e: WebhookParseError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

fn expiry(deps: &WebhookDeps, now_ms: i64) -> i64 {
    now_ms / 1000 + i64::try_from(deps.config.inbox_ttl.as_secs()).unwrap_or(i64::MAX / 2)
}

/// Writes every item once (conditional puts, several at a time). Returns (new, repeats).
async fn store_all(deps: &WebhookDeps, items: &[InboxItem]) -> ApiResult<(usize, usize)> {
    // A plain loop, not an iterator closure: keeps the future provably Send for spawn.
    let mut writes = Vec::with_capacity(items.len());
    for it in items {
        writes.push(deps.inbox.put_once(it));
    }
    let results = crate::run_bounded(writes, 16).await;
    let mut new = 0;
    for r in results {
        new += usize::from(r?);
    }
    Ok((new, items.len() - new))
}

async fn receive_cloud(deps: &WebhookDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    check_size(deps, req)?;
    let header = req.header("x-hub-signature-256");
    verify_rotating(deps, |s| {
        any_secret(&s.app_secrets(crate::time::now_secs()), |secret| {
            signature::verify_meta(secret, header, &req.body)
        })
    })
    .await?;
    let now_ms = crate::time::now_millis();
    let parsed =
        parse_cloud_webhook(&req.body, now_ms, expiry(deps, now_ms)).map_err(parse_error)?;
    if let Some(obj) = &parsed.foreign_object {
        tracing::info!(object = %obj, "webhook for another object type acknowledged and ignored");
    }
    for e in &parsed.errors {
        tracing::warn!(code = %e.get("code").unwrap_or(&json!(null)), title = %e.get("title").unwrap_or(&json!(null)), "Meta reported an error in a webhook");
    }
    let (stored, duplicates) = store_all(deps, &parsed.items).await?;
    tracing::info!(
        stored,
        duplicates,
        statuses = parsed.statuses,
        other_fields = ?parsed.other_fields,
        "cloud webhook accepted"
    );
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({
            "received": parsed.items.len(),
            "stored": stored,
            "duplicates": duplicates,
            "statuses": parsed.statuses,
            "ignored_fields": parsed.other_fields,
        }),
    ))
}

async fn receive_sinch(deps: &WebhookDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    check_size(deps, req)?;
    let headers = SinchHeaders {
        signature: req.header(signature::SINCH_SIGNATURE),
        nonce: req.header(signature::SINCH_NONCE),
        timestamp: req.header(signature::SINCH_TIMESTAMP),
        algorithm: req.header(signature::SINCH_ALGORITHM),
    };
    let skew = i64::try_from(deps.config.sinch_max_skew.as_secs()).unwrap_or(300);
    let check = |secret: &str| {
        signature::verify_sinch(secret, headers, &req.body, crate::time::now_secs(), skew)
    };
    match &deps.config.sinch {
        SinchSecrets::PerApp { prefix } => {
            // The app names the secret; nothing of the callback is stored before it is
            // checked with that app's own secret. An unsigned body is refused unread.
            if headers.signature.is_none() {
                return Err(signature_error(SignatureError::Missing(
                    signature::SINCH_SIGNATURE,
                )));
            }
            let app_id = sinch_app_id(&req.body).map_err(parse_error)?;
            verify_sinch_app(deps, &SinchAppSecret::id(prefix, &app_id), &app_id, check).await?;
        }
        SinchSecrets::Deployment => {
            let s = secrets(deps).await?;
            let Some(secret) = s.sinch_secret() else {
                tracing::error!(
                    "a Sinch callback arrived but no sinch_webhook_secret is configured; refused"
                );
                return Err(ApiError::unauthorized(
                    "Sinch callbacks are not enabled on this deployment (no webhook secret configured)",
                ));
            };
            check(secret).map_err(signature_error)?;
        }
    }
    let now_ms = crate::time::now_millis();
    match parse_sinch_callback(&req.body, now_ms, expiry(deps, now_ms)).map_err(parse_error)? {
        SinchCallback::Inbound(item) => {
            let (stored, duplicates) = store_all(deps, std::slice::from_ref(&item)).await?;
            tracing::info!(stored, duplicates, "sinch callback accepted");
            Ok(ApiResponse::json(
                StatusCode::OK,
                &json!({"received": 1, "stored": stored, "duplicates": duplicates}),
            ))
        }
        SinchCallback::Ignored(kind) => {
            tracing::info!(%kind, "sinch callback acknowledged and ignored");
            Ok(ApiResponse::json(
                StatusCode::OK,
                &json!({"received": 0, "ignored": kind}),
            ))
        }
    }
}
