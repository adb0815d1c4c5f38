//! Onboarding, API keys and the audit trail.
//!
//! Operator routes (an operator key, made with `ctwa-admin operator-key create`):
//! `POST /v1/admin/accounts`, `GET /v1/admin/accounts/{account_id}`,
//! `POST /v1/admin/accounts/{account_id}/ad-accounts`,
//! `PUT /v1/admin/accounts/{account_id}/sinch-webhook-secret`, `GET /v1/admin/audit`,
//! and the phone number routes of [`super::routes`].
//! Key routes (an account key holding the `keys` scope, for its own account, or an
//! operator key naming the account): `GET|POST /v1/api-keys`,
//! `POST /v1/api-keys/{key_id}/rotate`, `DELETE /v1/api-keys/{key_id}`. Keys are shown
//! once; only their SHA-256 is stored. Every action here that changes something leaves
//! an audit record (who, what, when).

use super::connect::json_body;
use crate::accounts::{NewAccount, NewAdAccountLink, SinchWebhookSecret, ValidAccount};
use crate::auth::{Caller, DEFAULT_SCOPES, Scope, authorize_caller, generate_key};
use crate::domain::Account;
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiRequest, ApiResponse};
use crate::ids::AccountId;
use crate::secrets::{
    MAX_SINCH_PREVIOUS_SECS, SecretError, SecretSource, SecretWriter, SinchAppSecret,
};
use crate::store::{
    Accounts, AdInventory, ApiKeyRecord, AuditLog, AuditRecord, KeyEnd, KeyWrite, MAX_LIVE_KEYS,
    is_audit_cursor,
};
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
    pub audit: Arc<dyn AuditLog>,
    pub sinch_secrets: SinchSecretStore,
    /// Routes (phone number ids) linked, moved, removed, verified: [`super::routes`].
    pub routes: Arc<dyn crate::store::RouteStore>,
    /// The account's Meta token, to check a phone number id with Meta.
    pub meta: Arc<crate::meta::connection::MetaDeps>,
    /// `POST /v1/admin/replay`.
    pub replay: Arc<crate::replay::ReplayDeps>,
}

/// Where the webhook secrets of linked Sinch apps are kept (Secrets Manager, one secret
/// per app under `prefix`).
pub struct SinchSecretStore {
    pub source: Arc<dyn SecretSource>,
    pub writer: Arc<dyn SecretWriter>,
    pub prefix: String,
}

impl SinchSecretStore {
    fn id(&self, app_id: &str) -> String {
        SinchAppSecret::id(&self.prefix, app_id)
    }

    /// Whether `app_id` has a secret the webhook can check its callbacks with.
    async fn is_set(&self, app_id: &str) -> ApiResult<bool> {
        match SinchAppSecret::load(self.source.as_ref(), &self.id(app_id)).await {
            Ok(_) => Ok(true),
            Err(SecretError::NotFound(_) | SecretError::Malformed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn set(
        &self,
        app_id: &str,
        secret: &str,
        previous_valid_secs: i64,
    ) -> ApiResult<Option<i64>> {
        Ok(SinchAppSecret::store(
            self.writer.as_ref(),
            self.source.as_ref(),
            &self.id(app_id),
            secret,
            previous_valid_secs,
            crate::time::now_secs(),
        )
        .await?)
    }
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
        (["v1", "admin", "accounts", id, "sinch-webhook-secret"], &Method::PUT) => {
            set_sinch_secret(deps, &req, id).await
        }
        (["v1", "admin", "audit"], &Method::GET) => list_audit(deps, &req).await,
        (["v1", "admin", "replay"], &Method::POST) => replay(deps, &req).await,
        (
            [
                "v1",
                "admin",
                "accounts",
                _,
                "phone-numbers" | "pages" | "instagram-accounts",
                ..,
            ]
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

/// The caller of an admin or key route, if its key may use the route (the one table:
/// [`crate::auth::ROUTE_ACCESS`]).
pub(super) async fn manager(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<Caller> {
    authorize_caller(deps.accounts.as_ref(), req).await
}

/// An audit record of `caller`'s action, written with or after it.
fn audit_record(
    caller: &Caller,
    account_id: Option<&str>,
    action: &str,
    target: &str,
    detail: Value,
) -> ApiResult<AuditRecord> {
    AuditRecord::by(
        &caller.actor(),
        account_id,
        action,
        target,
        detail,
        crate::time::now_millis(),
    )
    .map_err(ApiError::internal)
}

/// A broken onboarding rule is the caller's mistake.
pub(super) fn account_id(raw: &str) -> ApiResult<AccountId> {
    Ok(AccountId::parse(raw)?)
}

async fn account_view(deps: &AdminDeps, a: &Account) -> ApiResult<Value> {
    let links = deps.ads.ad_accounts(&a.id).await?;
    let sinch_secret_set = match &a.sinch_app_id {
        Some(app) => Some(deps.sinch_secrets.is_set(app).await?),
        None => None,
    };
    Ok(json!({
        "id": a.id,
        "name": a.name,
        "waba_id": a.waba_id,
        "phone_number_ids": a.phone_number_ids,
        "page_ids": a.page_ids,
        "instagram_account_ids": a.instagram_account_ids,
        "sinch_app_id": a.sinch_app_id,
        "sinch_webhook_secret_set": sinch_secret_set,
        "ad_accounts": links,
        "created_at": rfc3339_millis(a.created_at_ms),
    }))
}

async fn create_account(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let caller = manager(deps, req).await?;
    let body: NewAccount = json_body(req)?;
    let ValidAccount {
        account,
        ad_account_links: links,
        sinch_webhook_secret,
    } = body.parse(crate::time::now_millis())?;
    // All or nothing: the account, its routes and its ad accounts in one transaction.
    deps.ads
        .create_account_with_ad_accounts(&account, &links)
        .await?;
    // After the account: a failed write answers 500, and the account stands.
    deps.audit
        .record_audit(&audit_record(
            &caller,
            Some(&account.id),
            "account.create",
            &account.id,
            json!({
                "waba_id": account.waba_id,
                "phone_number_ids": account.phone_number_ids,
                "sinch_app_id": account.sinch_app_id,
                "ad_account_ids": links.iter().map(|l| &l.ad_account_id).collect::<Vec<_>>(),
            }),
        )?)
        .await?;
    // Then the Sinch app's secret: only once the app is this account's (a typo naming
    // another tenant's app fails above and overwrites nothing). If this write fails,
    // the app's callbacks are refused until the secret is set (fail closed).
    if let (Some(app), Some(secret)) = (&account.sinch_app_id, &sinch_webhook_secret) {
        deps.sinch_secrets.set(app, secret.expose(), 0).await.map_err(|e| {
            tracing::error!(account = %account.id, error = %e, "the Sinch webhook secret of a new account was not kept");
            ApiError::internal(format!(
                "account {} was created, but its Sinch webhook secret was not kept: set it with PUT /v1/admin/accounts/{}/sinch-webhook-secret",
                account.id, account.id
            ))
        })?;
    }
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
    manager(deps, req).await?;
    let a = existing_account(deps, &account_id(id)?).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"account": account_view(deps, &a).await?}),
    ))
}

async fn link_ad_account(deps: &AdminDeps, req: &ApiRequest, id: &str) -> ApiResult<ApiResponse> {
    let caller = manager(deps, req).await?;
    let body: NewAdAccountLink = json_body(req)?;
    let valid = body.parse()?;
    let id = account_id(id)?;
    existing_account(deps, &id).await?;
    let link = valid.link(&id, crate::time::now_millis());
    deps.ads.link_ad_account(&link).await?;
    deps.audit
        .record_audit(&audit_record(
            &caller,
            Some(id.as_str()),
            "ad_account.link",
            &link.ad_account_id,
            json!({"page_id": link.page_id}),
        )?)
        .await?;
    Ok(ApiResponse::json(
        StatusCode::CREATED,
        &json!({"ad_account": link}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinchSecretBody {
    secret: SinchWebhookSecret,
    /// How long the secret it replaces is still accepted (0 to 7 days; default 0).
    #[serde(default)]
    previous_valid_seconds: Option<i64>,
}

/// Sets (or rotates) the webhook secret of the account's Sinch app.
async fn set_sinch_secret(deps: &AdminDeps, req: &ApiRequest, id: &str) -> ApiResult<ApiResponse> {
    let caller = manager(deps, req).await?;
    let body: SinchSecretBody = json_body(req)?;
    let secret = body.secret.checked()?;
    let previous = body.previous_valid_seconds.unwrap_or(0);
    if !(0..=MAX_SINCH_PREVIOUS_SECS).contains(&previous) {
        return Err(ApiError::bad_request(format!(
            "previous_valid_seconds must be from 0 to {MAX_SINCH_PREVIOUS_SECS}"
        )));
    }
    let account = existing_account(deps, &account_id(id)?).await?;
    let app = account.sinch_app_id.ok_or_else(|| {
        ApiError::Conflict(format!("account {} has no Sinch app linked", account.id))
    })?;
    let until = deps
        .sinch_secrets
        .set(&app, secret.expose(), previous)
        .await?;
    tracing::info!(account = %account.id, sinch_app_id = %app, "Sinch webhook secret set");
    // Who set it and when; never the secret.
    deps.audit
        .record_audit(&audit_record(
            &caller,
            Some(&account.id),
            "sinch_webhook_secret.set",
            &app,
            json!({"previous_valid_seconds": previous}),
        )?)
        .await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({
            "account_id": account.id,
            "sinch_app_id": app,
            "sinch_webhook_secret_set": true,
            "previous_valid_until": until.map(|s| rfc3339_millis(s * 1000)),
        }),
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
        "scopes": (!k.operator).then(|| k.effective_scopes()),
        "legacy_scopes": !k.operator && k.scopes.is_none(),
        "created_by": k.created_by,
    })
}

/// The account a key route acts on: the caller's own, or the one an operator names.
async fn target_account(
    deps: &AdminDeps,
    caller: &Caller,
    named: Option<&str>,
) -> ApiResult<String> {
    match caller {
        Caller::Account { account_id, .. } => match named {
            Some(n) if n != account_id => Err(ApiError::Forbidden(
                "an account key manages its own account's keys only".into(),
            )),
            _ => Ok(account_id.clone()),
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
    let caller = manager(deps, req).await?;
    let account = target_account(deps, &caller, req.query_param("account_id")).await?;
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
    /// `None`: [`DEFAULT_SCOPES`].
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
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

/// The scopes a new key gets: those asked for (or [`DEFAULT_SCOPES`]), never more than
/// the account key that mints it holds (an operator may give any).
fn granted_scopes(caller: &Caller, asked: Option<Vec<Scope>>) -> ApiResult<Vec<Scope>> {
    let asked = crate::auth::normalize_scopes(&asked.unwrap_or_else(|| DEFAULT_SCOPES.to_vec()));
    if asked.is_empty() {
        return Err(ApiError::bad_request(
            "scopes must name at least one of: read, conversions, ads, connect, keys",
        ));
    }
    if let Caller::Account { scopes, .. } = caller
        && let Some(missing) = asked.iter().find(|s| !scopes.contains(s))
    {
        return Err(ApiError::InsufficientScope {
            required: missing.as_str(),
        });
    }
    Ok(asked)
}

/// Who made a key, as its record and view tell it.
fn creator(caller: &Caller) -> String {
    match caller {
        Caller::Operator { .. } => "operator".into(),
        Caller::Account { key_id, .. } => key_id.clone(),
    }
}

fn new_key(
    caller: &Caller,
    account: &str,
    name: Option<String>,
    scopes: &[Scope],
) -> ApiResult<(String, ApiKeyRecord)> {
    let (key, mut rec) =
        generate_key(account, scopes, crate::time::now_millis()).map_err(ApiError::internal)?;
    rec.name = name;
    rec.created_by = Some(creator(caller));
    Ok((key, rec))
}

fn key_write(w: KeyWrite) -> ApiResult<()> {
    match w {
        KeyWrite::Done => Ok(()),
        KeyWrite::LimitReached => Err(ApiError::KeyLimitReached { max: MAX_LIVE_KEYS }),
        KeyWrite::Changed => Err(ApiError::Conflict(
            "the key changed meanwhile (revoked or rotated): list the keys and retry".into(),
        )),
    }
}

fn new_key_body(key: &str, rec: &ApiKeyRecord) -> Value {
    let mut v = key_view(rec);
    v["key"] = json!(key);
    v["note"] = json!("shown once: only its SHA-256 hash is stored");
    v
}

async fn create_key(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let caller = manager(deps, req).await?;
    let body: NewKey = json_body(req)?;
    check_name(&body.name)?;
    let account = target_account(deps, &caller, body.account_id.as_deref()).await?;
    let scopes = granted_scopes(&caller, body.scopes)?;
    let (key, rec) = new_key(&caller, &account, body.name, &scopes)?;
    let audit = audit_record(
        &caller,
        Some(&account),
        "api_key.create",
        &rec.key_id,
        json!({"scopes": scopes, "name": rec.name}),
    )?;
    key_write(
        deps.accounts
            .create_api_key(&rec, MAX_LIVE_KEYS, &audit)
            .await?,
    )?;
    Ok(ApiResponse::json(
        StatusCode::CREATED,
        &new_key_body(&key, &rec),
    ))
}

/// The key a key route names, if the caller may manage it (another account's key
/// answers 404, as if it did not exist).
async fn managed_key(deps: &AdminDeps, c: &Caller, key_id: &str) -> ApiResult<ApiKeyRecord> {
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
        Caller::Account { account_id, .. } if !rec.operator && rec.account_id == *account_id => {
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
    let caller = manager(deps, req).await?;
    let body: RotateBody = json_body(req)?;
    let grace = body.grace_seconds.unwrap_or(0);
    if !(0..=MAX_GRACE_SECS).contains(&grace) {
        return Err(ApiError::bad_request(format!(
            "grace_seconds must be from 0 to {MAX_GRACE_SECS}"
        )));
    }
    let old = managed_key(deps, &caller, key_id).await?;
    let now = crate::time::now_millis();
    if !old.is_active(now) {
        return Err(ApiError::KeyInactive);
    }
    if old.operator {
        return Err(ApiError::bad_request(
            "operator keys are rotated with ctwa-admin operator-key create, then revoked here",
        ));
    }
    // The new key holds what the old one held (a key made before scopes: its legacy
    // scopes, now written down); an account key rotates only keys it could have made,
    // or rotating a stronger key would hand it that key's powers.
    let scopes = granted_scopes(&caller, Some(old.effective_scopes()))?;
    let (key, rec) = new_key(&caller, &old.account_id, old.name.clone(), &scopes)?;
    // An expiry only ever moves earlier: a key cannot push its own end back.
    let ends = old
        .expires_at_ms
        .map_or(now + grace * 1000, |e| e.min(now + grace * 1000));
    let end = if grace == 0 {
        KeyEnd::RevokedAt(now)
    } else {
        KeyEnd::ExpiresAt(ends)
    };
    let audit = audit_record(
        &caller,
        Some(&old.account_id),
        "api_key.rotate",
        &old.key_id,
        json!({"new_key_id": rec.key_id, "grace_seconds": grace, "scopes": scopes}),
    )?;
    key_write(
        deps.accounts
            .rotate_api_key(&old, &rec, end, MAX_LIVE_KEYS, &audit)
            .await?,
    )?;
    let mut v = new_key_body(&key, &rec);
    v["replaces"] = json!(old.key_id);
    v["old_key_expires_at"] = json!(rfc3339_millis(if grace == 0 { now } else { ends }));
    Ok(ApiResponse::json(StatusCode::CREATED, &v))
}

async fn revoke_key(deps: &AdminDeps, req: &ApiRequest, key_id: &str) -> ApiResult<ApiResponse> {
    let caller = manager(deps, req).await?;
    // Read, then revoke on condition that the key is still as read; a key that changed
    // meanwhile (rotated) is read again.
    for _ in 0..3 {
        let rec = managed_key(deps, &caller, key_id).await?;
        if rec.revoked {
            return Ok(revoked(&rec));
        }
        let audit = audit_record(
            &caller,
            (!rec.operator).then_some(rec.account_id.as_str()),
            "api_key.revoke",
            &rec.key_id,
            json!({}),
        )?;
        match deps
            .accounts
            .revoke_api_key(&rec, crate::time::now_millis(), &audit)
            .await?
        {
            KeyWrite::Changed => continue,
            w => {
                key_write(w)?;
                return Ok(revoked(&rec));
            }
        }
    }
    Err(ApiError::Conflict(
        "the key keeps changing (revoked or rotated meanwhile): retry".into(),
    ))
}

fn revoked(rec: &ApiKeyRecord) -> ApiResponse {
    ApiResponse::json(
        StatusCode::OK,
        &json!({"key_id": rec.key_id, "revoked": true}),
    )
}

/// `GET /v1/admin/audit?account_id=&limit=&cursor=`: an account's audit records (or,
/// without `account_id`, the deployment-wide ones: operator keys), newest first.
async fn list_audit(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    manager(deps, req).await?;
    let limit = super::list_limit(req)?;
    let account = match req.query_param("account_id") {
        Some(a) => Some(account_id(a)?.into_string()),
        None => None,
    };
    let cursor = req.query_param("cursor");
    if cursor.is_some_and(|c| !is_audit_cursor(c)) {
        return Err(ApiError::bad_request("invalid cursor"));
    }
    let (records, next) = deps
        .audit
        .audit_records(account.as_deref(), limit, cursor)
        .await?;
    let rows: Vec<Value> = records.iter().map(AuditRecord::view).collect();
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"account_id": account, "audit": rows, "next_cursor": next}),
    ))
}

/// `POST /v1/admin/replay` (operator): capture run again over inbox items, by message id,
/// by time range (and account), or over the capture's dead-letter queue
/// ([`crate::replay`]). Bounded per request; the answer says what each item came to and
/// gives the cursor of the next page. Audited when it changed anything.
async fn replay(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let caller = manager(deps, req).await?;
    let body: crate::replay::ReplayRequest = json_body(req)?;
    let account = body.account_id.clone();
    let report = crate::replay::replay(&deps.replay, body, req.deadline)
        .await
        .map_err(|e| match e {
            crate::replay::ReplayError::BadRequest(m) => ApiError::bad_request(m),
            crate::replay::ReplayError::Store(e) => e.into(),
            crate::replay::ReplayError::Backend(m) => ApiError::internal(m),
        })?;
    if report.changed > 0 || report.dead_letters.as_ref().is_some_and(|d| d.deleted > 0) {
        let detail = json!({
            "mode": report.mode,
            "replayed": report.replayed,
            "changed": report.changed,
            "failed": report.failed,
            "dead_letters_deleted": report.dead_letters.as_ref().map(|d| d.deleted),
        });
        let rec = audit_record(
            &caller,
            account.as_deref(),
            "capture.replayed",
            "inbox",
            detail,
        )?;
        deps.audit.record_audit(&rec).await?;
    }
    Ok(ApiResponse::json(StatusCode::OK, &report))
}
