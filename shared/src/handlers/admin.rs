//! Onboarding and API keys.
//!
//! Operator routes (an operator key, made with `ctwa-admin operator-key create`):
//! `POST /v1/admin/accounts`, `GET /v1/admin/accounts/{account_id}`,
//! `POST /v1/admin/accounts/{account_id}/ad-accounts`; the phone number routes of
//! [`super::routes`].
//! Key routes (an account key for its own account, or an operator key naming the
//! account): `GET|POST /v1/api-keys`, `POST /v1/api-keys/{key_id}/rotate`,
//! `DELETE /v1/api-keys/{key_id}`. Keys are shown once; only their SHA-256 is stored.

use super::connect::json_body;
use crate::accounts::{NewAccount, NewAdAccountLink, ValidAccount};
use crate::auth::{Caller, caller_record, generate_key};
use crate::domain::Account;
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiRequest, ApiResponse};
use crate::ids::AccountId;
use crate::store::{Accounts, AdInventory, ApiKeyRecord};
use crate::time::rfc3339_millis;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The longest grace period a rotation may give the old key.
pub const MAX_GRACE_SECS: i64 = 30 * 86_400;
/// Phone number ids or ad accounts per account creation.
pub use crate::accounts::MAX_IDS_PER_LIST;

pub struct AdminDeps {
    pub accounts: Arc<dyn Accounts>,
    pub ads: Arc<dyn AdInventory>,
    /// Routes (phone number ids) linked, moved, removed, verified: [`super::routes`].
    pub routes: Arc<dyn crate::store::RouteStore>,
    pub audit: Arc<dyn crate::audit::AuditLog>,
    /// The account's Meta token, to check a phone number id with Meta.
    pub meta: Arc<crate::meta::connection::MetaDeps>,
}

pub async fn handle(deps: &AdminDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path).to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (segments.as_slice(), &req.method) {
        (["v1", "admin", "accounts"], &Method::POST) => create_account(deps, &req).await,
        (["v1", "admin", "accounts", id], &Method::GET) => show_account(deps, &req, id).await,
        (["v1", "admin", "accounts", id, "ad-accounts"], &Method::POST) => {
            link_ad_account(deps, &req, id).await
        }
        (
            ["v1", "admin", "accounts", _, "phone-numbers", ..]
            | ["v1", "admin", "phone-numbers", ..],
            _,
        ) => super::routes::handle(deps, &req, &segments).await,
        (["v1", "api-keys"], &Method::GET) => list_keys(deps, &req).await,
        (["v1", "api-keys"], &Method::POST) => create_key(deps, &req).await,
        (["v1", "api-keys", key_id, "rotate"], &Method::POST) => {
            rotate_key(deps, &req, key_id).await
        }
        (["v1", "api-keys", key_id], &Method::DELETE) => revoke_key(deps, &req, key_id).await,
        (["v1", "admin", ..] | ["v1", "api-keys", ..], _) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// The caller of an admin or key route. A key in a rotation's grace period still
/// reads its account's data, but manages nothing: a leaked key that was rotated away
/// cannot mint a new key or keep itself alive.
pub(super) async fn manager(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<Caller> {
    let rec = caller_record(deps.accounts.as_ref(), req).await?;
    if rec.expires_at_ms.is_some() {
        return Err(ApiError::Forbidden(
            "this key was rotated and is in its grace period: it cannot manage keys or accounts"
                .into(),
        ));
    }
    Ok(rec.into())
}

async fn operator(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<()> {
    match manager(deps, req).await? {
        Caller::Operator { .. } => Ok(()),
        Caller::Account { .. } => Err(ApiError::Forbidden(
            "this route needs an operator key".into(),
        )),
    }
}

/// A broken onboarding rule is the caller's mistake.
pub(super) fn account_id(raw: &str) -> ApiResult<AccountId> {
    Ok(AccountId::parse(raw)?)
}

async fn account_view(deps: &AdminDeps, a: &Account) -> ApiResult<Value> {
    let links = deps.ads.ad_accounts(&a.id).await?;
    Ok(json!({
        "id": a.id,
        "name": a.name,
        "waba_id": a.waba_id,
        "phone_number_ids": a.phone_number_ids,
        "sinch_app_id": a.sinch_app_id,
        "ad_accounts": links,
        "created_at": rfc3339_millis(a.created_at_ms),
    }))
}

async fn create_account(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    operator(deps, req).await?;
    let body: NewAccount = json_body(req)?;
    let ValidAccount {
        account,
        ad_account_links: links,
    } = body.parse(crate::time::now_millis())?;
    // All or nothing: the account, its routes and its ad accounts in one transaction.
    deps.ads
        .create_account_with_ad_accounts(&account, &links)
        .await?;
    Ok(ApiResponse::json(
        StatusCode::CREATED,
        &json!({"account": account_view(deps, &account).await?}),
    ))
}

pub(super) async fn existing_account(deps: &AdminDeps, id: &AccountId) -> ApiResult<Account> {
    deps.accounts
        .get_account(id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {id} not found")))
}

async fn show_account(deps: &AdminDeps, req: &ApiRequest, id: &str) -> ApiResult<ApiResponse> {
    operator(deps, req).await?;
    let a = existing_account(deps, &account_id(id)?).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"account": account_view(deps, &a).await?}),
    ))
}

async fn link_ad_account(deps: &AdminDeps, req: &ApiRequest, id: &str) -> ApiResult<ApiResponse> {
    operator(deps, req).await?;
    let body: NewAdAccountLink = json_body(req)?;
    let valid = body.parse()?;
    let id = account_id(id)?;
    existing_account(deps, &id).await?;
    let link = valid.link(&id, crate::time::now_millis());
    deps.ads.link_ad_account(&link).await?;
    Ok(ApiResponse::json(
        StatusCode::CREATED,
        &json!({"ad_account": link}),
    ))
}

fn key_view(k: &ApiKeyRecord) -> Value {
    json!({
        "key_id": k.key_id,
        "prefix": k.prefix,
        "name": k.name,
        "account_id": (!k.operator).then_some(&k.account_id),
        "operator": k.operator,
        "created_at": rfc3339_millis(k.created_at_ms),
        "revoked_at": k.revoked_at_ms.map(rfc3339_millis),
        "expires_at": k.expires_at_ms.map(rfc3339_millis),
        "active": k.is_active(crate::time::now_millis()),
    })
}

/// The account a key route acts on: the caller's own, or the one an operator names.
async fn target_account(
    deps: &AdminDeps,
    req: &ApiRequest,
    named: Option<&str>,
) -> ApiResult<String> {
    match manager(deps, req).await? {
        Caller::Account { account_id, .. } => match named {
            Some(n) if n != account_id => Err(ApiError::Forbidden(
                "an account key manages its own account's keys only".into(),
            )),
            _ => Ok(account_id),
        },
        Caller::Operator { .. } => {
            let id = named.ok_or_else(|| {
                ApiError::bad_request("account_id is required with an operator key")
            })?;
            let id = account_id(id)?;
            existing_account(deps, &id).await?;
            Ok(id.into_string())
        }
    }
}

async fn list_keys(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account = target_account(deps, req, req.query_param("account_id")).await?;
    let keys = deps.accounts.api_keys(Some(&account)).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"account_id": account, "data": keys.iter().map(key_view).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

fn check_name(name: &Option<String>) -> ApiResult<()> {
    if name
        .as_ref()
        .is_some_and(|n| n.trim().is_empty() || n.len() > 100)
    {
        return Err(ApiError::bad_request("name must be 1 to 100 characters"));
    }
    Ok(())
}

async fn issue_key(
    deps: &AdminDeps,
    account: &str,
    name: Option<String>,
) -> ApiResult<(String, ApiKeyRecord)> {
    let (key, mut rec) =
        generate_key(account, crate::time::now_millis()).map_err(ApiError::internal)?;
    rec.name = name;
    deps.accounts.put_api_key(&rec).await?;
    Ok((key, rec))
}

fn new_key_body(key: &str, rec: &ApiKeyRecord) -> Value {
    let mut v = key_view(rec);
    v["key"] = json!(key);
    v["note"] = json!("shown once: only its SHA-256 hash is stored");
    v
}

async fn create_key(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let body: NewKey = json_body(req)?;
    check_name(&body.name)?;
    let account = target_account(deps, req, body.account_id.as_deref()).await?;
    let (key, rec) = issue_key(deps, &account, body.name).await?;
    Ok(ApiResponse::json(
        StatusCode::CREATED,
        &new_key_body(&key, &rec),
    ))
}

/// The key a key route names, if the caller may manage it (another account's key
/// answers 404, as if it did not exist).
async fn managed_key(deps: &AdminDeps, req: &ApiRequest, key_id: &str) -> ApiResult<ApiKeyRecord> {
    let c = manager(deps, req).await?;
    let not_found = || ApiError::not_found(format!("API key {key_id} not found"));
    if key_id.len() > 64
        || !key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(not_found());
    }
    let rec = deps
        .accounts
        .api_key_by_id(key_id)
        .await?
        .ok_or_else(not_found)?;
    match c {
        Caller::Operator { .. } => Ok(rec),
        Caller::Account { account_id, .. } if !rec.operator && rec.account_id == account_id => {
            Ok(rec)
        }
        Caller::Account { .. } => Err(not_found()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_seconds: Option<i64>,
}

async fn rotate_key(deps: &AdminDeps, req: &ApiRequest, key_id: &str) -> ApiResult<ApiResponse> {
    let body: RotateBody = json_body(req)?;
    let grace = body.grace_seconds.unwrap_or(0);
    if !(0..=MAX_GRACE_SECS).contains(&grace) {
        return Err(ApiError::bad_request(format!(
            "grace_seconds must be from 0 to {MAX_GRACE_SECS}"
        )));
    }
    let old = managed_key(deps, req, key_id).await?;
    let now = crate::time::now_millis();
    if !old.is_active(now) {
        return Err(ApiError::KeyInactive);
    }
    if old.operator {
        return Err(ApiError::bad_request(
            "operator keys are rotated with ctwa-admin operator-key create, then revoked here",
        ));
    }
    let (key, rec) = issue_key(deps, &old.account_id, old.name.clone()).await?;
    if grace == 0 {
        deps.accounts
            .retire_api_key(&old.hash, Some(now), None)
            .await?;
    } else {
        deps.accounts
            .retire_api_key(&old.hash, None, Some(now + grace * 1000))
            .await?;
    }
    let mut v = new_key_body(&key, &rec);
    v["replaces"] = json!(old.key_id);
    v["old_key_expires_at"] = json!(rfc3339_millis(now + grace * 1000));
    Ok(ApiResponse::json(StatusCode::CREATED, &v))
}

async fn revoke_key(deps: &AdminDeps, req: &ApiRequest, key_id: &str) -> ApiResult<ApiResponse> {
    let rec = managed_key(deps, req, key_id).await?;
    if !rec.revoked {
        deps.accounts
            .retire_api_key(&rec.hash, Some(crate::time::now_millis()), None)
            .await?;
    }
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"key_id": rec.key_id, "revoked": true}),
    ))
}
