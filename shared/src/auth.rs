//! API keys: generated with 32 random bytes, shown once, stored only as a SHA-256 hash
//! with a short display prefix. Accepted as `Authorization: Bearer <key>` or, like seed
//! 003, `Authorization: Basic <key>` (also the standard `Basic base64(user:key)`).
//!
//! Each account key holds [`Scope`]s; [`ROUTE_ACCESS`] is the one table of what every
//! route of the HTTP API asks of the caller's key, and [`authorize`] /
//! [`authorize_caller`] (every handler's first call) check it.

use crate::error::ApiError;
use crate::http::ApiRequest;
use crate::store::{Accounts, ApiKeyRecord};
use base64::Engine;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "ctwa_";

/// What an account key may do. Every `GET` of the account's data needs `read`; each kind
/// of write needs its own scope.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read the account's data: conversations, automatic events, status, dataset and
    /// CAPI settings, the conversions' audit trail, ads (and the proxy's `GET`s).
    Read,
    /// Send conversions (`POST /v1/conversions`, `/batch`, `/v1/triggers`).
    Conversions,
    /// Create, change and delete ads (they spend money): `POST /v1/ads/ctwa`, the
    /// proxy's `POST` and `DELETE`.
    Ads,
    /// The Meta connection and where conversions go: OAuth code exchange, token refresh,
    /// `POST /v1/dataset` and `POST /v1/capi`.
    Connect,
    /// Manage the account's API keys (list, create, rotate, revoke).
    Keys,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Conversions,
        Scope::Ads,
        Scope::Connect,
        Scope::Keys,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Conversions => "conversions",
            Scope::Ads => "ads",
            Scope::Connect => "connect",
            Scope::Keys => "keys",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The scopes of a key created without `scopes`: the least, reading only.
pub const DEFAULT_SCOPES: [Scope; 1] = [Scope::Read];

/// The scopes of a key stored before keys had scopes: everything an account key could
/// do then except managing keys, so existing integrations keep working while a leaked
/// old key can no longer mint keys that outlive it.
pub const LEGACY_SCOPES: [Scope; 4] = [Scope::Read, Scope::Conversions, Scope::Ads, Scope::Connect];

/// Sorted, without repeats.
pub fn normalize_scopes(scopes: &[Scope]) -> Vec<Scope> {
    let mut v = scopes.to_vec();
    v.sort();
    v.dedup();
    v
}

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No API key: the request is signed (Meta's and Sinch's webhooks).
    Signed,
    /// An account key holding this scope (for [`Scope::Keys`], an operator key too).
    Scope(Scope),
    /// An operator key.
    Operator,
    /// Nothing: a static page and its assets (the report page; the key is the page's
    /// to send, with its own API calls).
    Public,
}

impl Access {
    /// The name the OpenAPI document gives it (`x-required-scope`) and the 403 names.
    pub fn name(self) -> &'static str {
        match self {
            Access::Signed | Access::Public => "none",
            Access::Scope(s) => s.as_str(),
            Access::Operator => "operator",
        }
    }
}

/// Every route of the HTTP API (template.yaml's `HttpApi` events) and what it asks of
/// the caller: the one place where routes meet scopes. tests/fixtures.rs checks it
/// against docs/openapi.yaml (`x-required-scope`) and the template.
pub const ROUTE_ACCESS: &[(&str, &str, Access)] = &[
    ("GET", "/webhook", Access::Signed),
    ("POST", "/webhook", Access::Signed),
    ("POST", "/webhook/sinch", Access::Signed),
    ("GET", "/v1/conversations", Access::Scope(Scope::Read)),
    ("GET", "/v1/conversations/{id}", Access::Scope(Scope::Read)),
    ("GET", "/v1/automatic-events", Access::Scope(Scope::Read)),
    (
        "POST",
        "/v1/oauth/exchange-code",
        Access::Scope(Scope::Connect),
    ),
    (
        "POST",
        "/v1/oauth/refresh-token",
        Access::Scope(Scope::Connect),
    ),
    ("GET", "/v1/status", Access::Scope(Scope::Read)),
    ("GET", "/v1/dataset", Access::Scope(Scope::Read)),
    ("POST", "/v1/dataset", Access::Scope(Scope::Connect)),
    ("GET", "/v1/capi", Access::Scope(Scope::Read)),
    ("POST", "/v1/capi", Access::Scope(Scope::Connect)),
    ("GET", "/v1/conversions", Access::Scope(Scope::Read)),
    ("POST", "/v1/conversions", Access::Scope(Scope::Conversions)),
    (
        "POST",
        "/v1/conversions/batch",
        Access::Scope(Scope::Conversions),
    ),
    ("POST", "/v1/triggers", Access::Scope(Scope::Conversions)),
    ("POST", "/v1/ads/ctwa", Access::Scope(Scope::Ads)),
    ("GET", "/v1/ads", Access::Scope(Scope::Read)),
    ("GET", "/v1/ads/{ad_id}", Access::Scope(Scope::Read)),
    ("GET", "/v1/reports/ads", Access::Scope(Scope::Read)),
    ("GET", "/report", Access::Public),
    ("GET", "/report/assets/{file}", Access::Public),
    (
        "GET",
        "/v25.0/{ad_account_id}/{edge}",
        Access::Scope(Scope::Read),
    ),
    (
        "POST",
        "/v25.0/{ad_account_id}/{edge}",
        Access::Scope(Scope::Ads),
    ),
    ("GET", "/v25.0/{object_id}", Access::Scope(Scope::Read)),
    ("POST", "/v25.0/{object_id}", Access::Scope(Scope::Ads)),
    ("DELETE", "/v25.0/{object_id}", Access::Scope(Scope::Ads)),
    ("POST", "/v1/admin/accounts", Access::Operator),
    ("GET", "/v1/admin/accounts/{account_id}", Access::Operator),
    (
        "POST",
        "/v1/admin/accounts/{account_id}/ad-accounts",
        Access::Operator,
    ),
    (
        "PUT",
        "/v1/admin/accounts/{account_id}/sinch-webhook-secret",
        Access::Operator,
    ),
    ("GET", "/v1/admin/audit", Access::Operator),
    ("POST", "/v1/admin/replay", Access::Operator),
    (
        "POST",
        "/v1/admin/accounts/{account_id}/phone-numbers",
        Access::Operator,
    ),
    (
        "POST",
        "/v1/admin/accounts/{account_id}/phone-numbers/verify",
        Access::Operator,
    ),
    (
        "POST",
        "/v1/admin/accounts/{account_id}/pages",
        Access::Operator,
    ),
    (
        "POST",
        "/v1/admin/accounts/{account_id}/instagram-accounts",
        Access::Operator,
    ),
    (
        "GET",
        "/v1/admin/phone-numbers/{phone_number_id}",
        Access::Operator,
    ),
    (
        "DELETE",
        "/v1/admin/phone-numbers/{phone_number_id}",
        Access::Operator,
    ),
    (
        "POST",
        "/v1/admin/phone-numbers/{phone_number_id}/move",
        Access::Operator,
    ),
    ("GET", "/v1/api-keys", Access::Scope(Scope::Keys)),
    ("POST", "/v1/api-keys", Access::Scope(Scope::Keys)),
    (
        "POST",
        "/v1/api-keys/{key_id}/rotate",
        Access::Scope(Scope::Keys),
    ),
    (
        "DELETE",
        "/v1/api-keys/{key_id}",
        Access::Scope(Scope::Keys),
    ),
];

/// What the route of `method path` asks of the caller: the matching [`ROUTE_ACCESS`]
/// entry with the most literal segments (`/v1/ads/ctwa` before `/v1/ads/{ad_id}`).
pub fn route_access(method: &str, path: &str) -> Option<Access> {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').collect();
    ROUTE_ACCESS
        .iter()
        .filter(|(m, _, _)| m.eq_ignore_ascii_case(method))
        .filter_map(|(_, pattern, access)| {
            let pat: Vec<&str> = pattern.split('/').collect();
            if pat.len() != segs.len() {
                return None;
            }
            let mut literal = 0;
            for (p, s) in pat.iter().zip(&segs) {
                if p.starts_with('{') {
                    if s.is_empty() {
                        return None;
                    }
                } else if p == s {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, *access))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, a)| a)
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new key (`ctwa_` + 43 base64url characters) and its record for `account_id`,
/// holding `scopes`.
pub fn generate_key(
    account_id: &str,
    scopes: &[Scope],
    now_ms: i64,
) -> Result<(String, ApiKeyRecord), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_key(&key);
    let record = ApiKeyRecord {
        key_id: ApiKeyRecord::key_id_for_hash(&hash),
        hash,
        prefix: key[..12].to_string(),
        account_id: account_id.to_string(),
        created_at_ms: now_ms,
        scopes: Some(normalize_scopes(scopes)),
        ..Default::default()
    };
    Ok((key, record))
}

/// A new operator key: manages accounts and API keys, reads no account's data.
pub fn generate_operator_key(now_ms: i64) -> Result<(String, ApiKeyRecord), getrandom::Error> {
    let (key, mut rec) = generate_key("", &[], now_ms)?;
    rec.operator = true;
    rec.scopes = None;
    rec.name = Some("operator".into());
    Ok((key, rec))
}

/// The key from the `Authorization` header, without checking it.
pub fn presented_key(req: &ApiRequest) -> Result<String, ApiError> {
    let header = req
        .header("authorization")
        .ok_or_else(|| {
            ApiError::unauthorized("missing Authorization header (use: Bearer <api key>)")
        })?
        .trim();
    let (scheme, rest) = header.split_once(' ').ok_or_else(|| {
        ApiError::unauthorized("malformed Authorization header (use: Bearer <api key>)")
    })?;
    let cred = rest.trim();
    let key = if scheme.eq_ignore_ascii_case("bearer") {
        cred.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        if cred.starts_with(KEY_PREFIX) {
            cred.to_string()
        } else {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(cred)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
            match decoded.split_once(':') {
                Some((_, pass)) if !pass.is_empty() => pass.to_string(),
                Some((user, _)) => user.to_string(),
                None => decoded,
            }
        }
    } else {
        return Err(ApiError::unauthorized(
            "unsupported Authorization scheme (use: Bearer <api key>)",
        ));
    };
    if key.is_empty() || key.len() > 256 {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    Ok(key)
}

/// Who is calling: an account's key (with its scopes) or an operator key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Account {
        account_id: String,
        key_id: String,
        scopes: Vec<Scope>,
    },
    Operator {
        key_id: String,
    },
}

impl Caller {
    pub fn key_id(&self) -> &str {
        match self {
            Caller::Account { key_id, .. } | Caller::Operator { key_id } => key_id,
        }
    }

    /// The caller as audit records name it: `operator` or `account_key`, and its key.
    pub fn actor(&self) -> crate::store::Actor {
        let kind = match self {
            Caller::Operator { .. } => "operator",
            Caller::Account { .. } => "account_key",
        };
        crate::store::Actor {
            kind: kind.to_string(),
            key_id: Some(self.key_id().to_string()),
        }
    }
}

/// The active key record of the request; 401 for a missing, unknown, revoked or
/// expired key.
pub async fn caller_record(
    accounts: &dyn Accounts,
    req: &ApiRequest,
) -> Result<ApiKeyRecord, ApiError> {
    let key = presented_key(req)?;
    match accounts.api_key(&hash_key(&key)).await? {
        Some(rec) if rec.is_active(crate::time::now_millis()) => Ok(rec),
        _ => Err(ApiError::unauthorized("invalid API key")),
    }
}

impl From<ApiKeyRecord> for Caller {
    fn from(rec: ApiKeyRecord) -> Self {
        if rec.operator {
            Caller::Operator { key_id: rec.key_id }
        } else {
            Caller::Account {
                scopes: rec.effective_scopes(),
                account_id: rec.account_id,
                key_id: rec.key_id,
            }
        }
    }
}

/// Who is calling, if the request's key may use its route ([`ROUTE_ACCESS`]): 401 for a
/// missing, unknown, revoked or expired key; 403 `insufficient_scope` naming what the
/// route needs when the key lacks it; 403 for an operator key on an account's data, and
/// for a key in a rotation's grace period on a route that manages keys or accounts (a
/// leaked key that was rotated away cannot mint a new key or keep itself alive). A
/// route missing from the table is refused (fail closed).
pub async fn authorize_caller(
    accounts: &dyn Accounts,
    req: &ApiRequest,
) -> Result<Caller, ApiError> {
    let access = route_access(req.method.as_str(), &req.path).ok_or_else(|| {
        ApiError::Forbidden(format!(
            "no access rule for {} {}",
            req.method,
            req.path.chars().take(200).collect::<String>()
        ))
    })?;
    let rec = caller_record(accounts, req).await?;
    let manages = matches!(access, Access::Operator | Access::Scope(Scope::Keys));
    if manages && rec.expires_at_ms.is_some() {
        return Err(ApiError::Forbidden(
            "this key was rotated and is in its grace period: it cannot manage keys or accounts"
                .into(),
        ));
    }
    let caller = Caller::from(rec);
    match (access, &caller) {
        (Access::Signed, _) => Err(ApiError::Forbidden(
            "this route takes a signed request, not an API key".into(),
        )),
        (Access::Public, _) => Err(ApiError::Forbidden(
            "this route is public: it takes no API key".into(),
        )),
        (Access::Operator, Caller::Operator { .. }) => Ok(caller),
        (Access::Operator, Caller::Account { .. }) => Err(ApiError::InsufficientScope {
            required: Access::Operator.name(),
        }),
        (Access::Scope(Scope::Keys), Caller::Operator { .. }) => Ok(caller),
        (Access::Scope(_), Caller::Operator { .. }) => Err(ApiError::Forbidden(
            "an operator key manages accounts and keys; use an account's API key for its data"
                .into(),
        )),
        (Access::Scope(s), Caller::Account { scopes, .. }) => {
            if scopes.contains(&s) {
                Ok(caller)
            } else {
                Err(ApiError::InsufficientScope {
                    required: s.as_str(),
                })
            }
        }
    }
}

/// The account of the request's key, if the key may use the route (see
/// [`authorize_caller`]; an operator key reads no account's data).
pub async fn authorize(accounts: &dyn Accounts, req: &ApiRequest) -> Result<String, ApiError> {
    match authorize_caller(accounts, req).await? {
        Caller::Account { account_id, .. } => Ok(account_id),
        Caller::Operator { .. } => Err(ApiError::Forbidden(
            "an operator key manages accounts and keys; use an account's API key for its data"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use http::Method;

    fn req(auth: &str) -> ApiRequest {
        ApiRequest::new(Method::GET, "/v1/conversations").with_header("authorization", auth)
    }

    #[tokio::test]
    async fn bearer_and_both_basic_forms() {
        let store = MemoryStore::new();
        let (key, rec) = generate_key("acct1", &[Scope::Read], 0).unwrap();
        assert!(key.starts_with("ctwa_") && key.len() == 48, "{key}");
        assert_ne!(rec.hash, key);
        store.put_api_key(&rec).await.unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        for h in [
            format!("Bearer {key}"),
            format!("bearer   {key}"),
            format!("Basic {key}"),
            format!("Basic {}", b64.encode(format!("user:{key}"))),
            format!("Basic {}", b64.encode(format!("{key}:"))),
        ] {
            assert_eq!(authorize(&store, &req(&h)).await.unwrap(), "acct1", "{h}");
        }
        for h in ["", "Bearer", "Bearer nope", "Token abc", "Basic !!!"] {
            let e = authorize(&store, &req(h)).await.unwrap_err();
            assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED, "{h}");
        }
        let none = ApiRequest::new(Method::GET, "/");
        assert!(authorize(&store, &none).await.is_err());
    }

    #[tokio::test]
    async fn revoked_keys_are_refused() {
        let store = MemoryStore::new();
        let (key, mut rec) = generate_key("a", &Scope::ALL, 0).unwrap();
        rec.revoked = true;
        store.put_api_key(&rec).await.unwrap();
        assert!(
            authorize(&store, &req(&format!("Bearer {key}")))
                .await
                .is_err()
        );
    }

    #[test]
    fn every_route_has_one_rule_and_the_most_literal_wins() {
        assert_eq!(
            route_access("POST", "/v1/ads/ctwa"),
            Some(Access::Scope(Scope::Ads))
        );
        assert_eq!(
            route_access("GET", "/v1/ads/123/"),
            Some(Access::Scope(Scope::Read))
        );
        assert_eq!(
            route_access("DELETE", "/v25.0/123"),
            Some(Access::Scope(Scope::Ads))
        );
        assert_eq!(
            route_access("POST", "/v1/api-keys/key_1/rotate"),
            Some(Access::Scope(Scope::Keys))
        );
        assert_eq!(route_access("PUT", "/v1/conversions"), None);
        assert_eq!(route_access("GET", "/v1/conversations/a/b"), None);
        let mut seen = std::collections::HashSet::new();
        for (m, p, _) in ROUTE_ACCESS {
            assert!(seen.insert((m, p)), "{m} {p} twice");
        }
    }

    #[tokio::test]
    async fn scopes_are_checked_and_legacy_keys_cannot_manage_keys() {
        let store = MemoryStore::new();
        let (read, rec) = generate_key("a", &[Scope::Read], 0).unwrap();
        store.put_api_key(&rec).await.unwrap();
        let (legacy, mut rec) = generate_key("a", &[], 0).unwrap();
        rec.scopes = None;
        store.put_api_key(&rec).await.unwrap();
        let call = |method: Method, path: &str, key: &str| {
            ApiRequest::new(method, path).with_header("authorization", &format!("Bearer {key}"))
        };
        assert_eq!(
            authorize(&store, &call(Method::GET, "/v1/status", &read))
                .await
                .unwrap(),
            "a"
        );
        let e = authorize(&store, &call(Method::POST, "/v1/conversions", &read))
            .await
            .unwrap_err();
        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(e.code(), "insufficient_scope");
        // A key stored before scopes: every account scope but `keys`.
        for path in ["/v1/conversions", "/v1/ads/ctwa", "/v1/oauth/exchange-code"] {
            assert!(
                authorize(&store, &call(Method::POST, path, &legacy))
                    .await
                    .is_ok(),
                "{path}"
            );
        }
        let e = authorize_caller(&store, &call(Method::POST, "/v1/api-keys", &legacy))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "insufficient_scope");
        let e = authorize_caller(&store, &call(Method::POST, "/v1/admin/accounts", &legacy))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "insufficient_scope");
    }
}
