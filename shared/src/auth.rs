//! API keys: generated with 32 random bytes, shown once, stored only as a SHA-256 hash
//! with a short display prefix. Accepted as `Authorization: Bearer <key>` or, like seed
//! 003, `Authorization: Basic <key>` (also the standard `Basic base64(user:key)`).

use crate::error::ApiError;
use crate::http::ApiRequest;
use crate::store::{Accounts, ApiKeyRecord};
use base64::Engine;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "ctwa_";

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new key (`ctwa_` + 43 base64url characters) and its record for `account_id`.
pub fn generate_key(
    account_id: &str,
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
        ..Default::default()
    };
    Ok((key, record))
}

/// A new operator key: manages accounts and API keys, reads no account's data.
pub fn generate_operator_key(now_ms: i64) -> Result<(String, ApiKeyRecord), getrandom::Error> {
    let (key, mut rec) = generate_key("", now_ms)?;
    rec.operator = true;
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

/// Who is calling: an account's key or an operator key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Account { account_id: String, key_id: String },
    Operator { key_id: String },
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
                account_id: rec.account_id,
                key_id: rec.key_id,
            }
        }
    }
}

/// Who is calling; 401 for a missing, unknown, revoked or expired key.
pub async fn caller(accounts: &dyn Accounts, req: &ApiRequest) -> Result<Caller, ApiError> {
    Ok(caller_record(accounts, req).await?.into())
}

/// The account the request's key belongs to; 401 for a missing, unknown, revoked or
/// expired key, 403 for an operator key (it reads no account's data).
pub async fn authenticate(accounts: &dyn Accounts, req: &ApiRequest) -> Result<String, ApiError> {
    match caller(accounts, req).await? {
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
        let (key, rec) = generate_key("acct1", 0).unwrap();
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
            assert_eq!(
                authenticate(&store, &req(&h)).await.unwrap(),
                "acct1",
                "{h}"
            );
        }
        for h in ["", "Bearer", "Bearer nope", "Token abc", "Basic !!!"] {
            let e = authenticate(&store, &req(h)).await.unwrap_err();
            assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED, "{h}");
        }
        let none = ApiRequest::new(Method::GET, "/");
        assert!(authenticate(&store, &none).await.is_err());
    }

    #[tokio::test]
    async fn revoked_keys_are_refused() {
        let store = MemoryStore::new();
        let (key, mut rec) = generate_key("a", 0).unwrap();
        rec.revoked = true;
        store.put_api_key(&rec).await.unwrap();
        assert!(
            authenticate(&store, &req(&format!("Bearer {key}")))
                .await
                .is_err()
        );
    }
}
