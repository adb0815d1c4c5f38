//! The secrets port: one trait every function reads secrets through, an adapter for
//! AWS Secrets Manager, an in-memory fake, and a TTL cache so a rotated secret is picked
//! up without a redeploy while Secrets Manager is not called on every request.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("secret {id} is malformed: {reason}")]
    Malformed { id: String, reason: String },
    #[error("secrets backend: {0}")]
    Backend(String),
}

#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn get_secret(&self, id: &str) -> Result<String, SecretError>;
    /// Forgets a cached value, so that the next read fetches the secret again (a cache
    /// does; a direct source has nothing to forget).
    fn invalidate(&self, _id: &str) {}
}

/// Writing secrets (a new version when the secret exists).
#[async_trait]
pub trait SecretWriter: Send + Sync {
    /// A new version of the secret, which is created when it does not exist yet
    /// (`secretsmanager:PutSecretValue`, then `CreateSecret`).
    async fn put_secret(&self, id: &str, value: &str) -> Result<(), SecretError>;
    /// A new version of an existing secret only (`secretsmanager:PutSecretValue`): a
    /// missing one is `NotFound`, never re-created.
    async fn put_new_version(&self, id: &str, value: &str) -> Result<(), SecretError>;
    /// The version before the current one (`AWSPREVIOUS`), if there is one: what a
    /// writer that lost a race puts back (`secretsmanager:GetSecretValue`).
    async fn previous_version(&self, id: &str) -> Result<Option<String>, SecretError>;
}

pub struct AwsSecrets {
    client: aws_sdk_secretsmanager::Client,
}

impl AwsSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl SecretSource for AwsSecrets {
    async fn get_secret(&self, id: &str) -> Result<String, SecretError> {
        let res = self.client.get_secret_value().secret_id(id).send().await;
        match res {
            Ok(out) => out.secret_string.ok_or_else(|| SecretError::Malformed {
                id: id.into(),
                reason: "no SecretString".into(),
            }),
            Err(e) => Err(backend_error(id, e)),
        }
    }
}

/// Secrets Manager's answer as our error: a missing secret is `NotFound` (a first
/// connection creates it), anything else the backend's failure with its context.
fn backend_error<E, R>(id: &str, e: aws_sdk_secretsmanager::error::SdkError<E, R>) -> SecretError
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
    if e.code() == Some("ResourceNotFoundException") {
        SecretError::NotFound(id.into())
    } else {
        SecretError::Backend(aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string())
    }
}

#[async_trait]
impl SecretWriter for AwsSecrets {
    /// A new version of an existing secret (a reconnect), or the secret created when it
    /// does not exist yet (a first connection).
    async fn put_secret(&self, id: &str, value: &str) -> Result<(), SecretError> {
        match self.put_new_version(id, value).await {
            Err(SecretError::NotFound(_)) => self.create(id, value).await,
            other => other,
        }
    }

    async fn previous_version(&self, id: &str) -> Result<Option<String>, SecretError> {
        let res = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_stage("AWSPREVIOUS")
            .send()
            .await;
        match res {
            Ok(out) => Ok(out.secret_string),
            Err(e) => match backend_error(id, e) {
                SecretError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn put_new_version(&self, id: &str, value: &str) -> Result<(), SecretError> {
        match self
            .client
            .put_secret_value()
            .secret_id(id)
            .secret_string(value)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(backend_error(id, e)),
        }
    }
}

impl AwsSecrets {
    async fn create(&self, id: &str, value: &str) -> Result<(), SecretError> {
        self.client
            .create_secret()
            .name(id)
            .description("A secret of one account (ctwa): its Meta access token or its Sinch app's webhook secret")
            .secret_string(value)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| backend_error(id, e))
    }
}

/// Fake for unit tests.
#[cfg(any(test, feature = "test-support"))]
#[derive(Default)]
pub struct MemorySecrets {
    values: Mutex<HashMap<String, String>>,
    previous: Mutex<HashMap<String, String>>,
    pub reads: std::sync::atomic::AtomicUsize,
}

#[cfg(any(test, feature = "test-support"))]
impl MemorySecrets {
    pub fn with(id: &str, value: &str) -> Self {
        let s = Self::default();
        s.set(id, value);
        s
    }
    pub fn set(&self, id: &str, value: &str) {
        let old = self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.into(), value.into());
        if let Some(old) = old {
            self.previous
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.into(), old);
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
#[async_trait]
impl SecretSource for MemorySecrets {
    async fn get_secret(&self, id: &str) -> Result<String, SecretError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(id.into()))
    }
}

#[cfg(any(test, feature = "test-support"))]
#[async_trait]
impl SecretWriter for MemorySecrets {
    async fn put_secret(&self, id: &str, value: &str) -> Result<(), SecretError> {
        self.set(id, value);
        Ok(())
    }

    async fn put_new_version(&self, id: &str, value: &str) -> Result<(), SecretError> {
        if !self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
        {
            return Err(SecretError::NotFound(id.into()));
        }
        self.set(id, value);
        Ok(())
    }

    async fn previous_version(&self, id: &str) -> Result<Option<String>, SecretError> {
        Ok(self
            .previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned())
    }
}

/// In-process cache in front of any source, per secret id, for `ttl`.
pub struct CachedSecrets {
    inner: Arc<dyn SecretSource>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, String)>>,
    /// Secrets found missing, and when: a flood of requests naming secrets that do not
    /// exist (callbacks for made-up Sinch apps) costs one Secrets Manager call per id
    /// per [`MISSING_TTL`], not one per request.
    missing: Mutex<HashMap<String, Instant>>,
    remember_missing: bool,
}

/// How long a missing secret is remembered as missing: short, so that a secret set
/// just now (a Sinch app being linked) is found by Sinch's next retry.
pub const MISSING_TTL: Duration = Duration::from_secs(10);
/// The most missing ids remembered; beyond it the memory starts over (bounded memory
/// whatever ids a caller makes up).
const MAX_MISSING: usize = 10_000;

impl CachedSecrets {
    pub fn new(inner: Arc<dyn SecretSource>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Mutex::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            remember_missing: false,
        }
    }

    /// Remembers missing secrets for [`MISSING_TTL`] (the webhook's per-app Sinch
    /// secrets, which callers name). Off by default: a token secret created by one
    /// function must be found by the others at once.
    pub fn remembering_missing(mut self) -> Self {
        self.remember_missing = true;
        self
    }
}

#[async_trait]
impl SecretSource for CachedSecrets {
    /// Drops the cached value, e.g. after a signature mismatch, so a just-rotated secret
    /// is fetched again.
    fn invalidate(&self, id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    async fn get_secret(&self, id: &str) -> Result<String, SecretError> {
        if let Some((at, v)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(v.clone());
        }
        if let Some(at) = self
            .missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            && at.elapsed() < MISSING_TTL
        {
            return Err(SecretError::NotFound(id.into()));
        }
        let v = match self.inner.get_secret(id).await {
            Err(SecretError::NotFound(missing)) if self.remember_missing => {
                let mut m = self.missing.lock().unwrap_or_else(|p| p.into_inner());
                if m.len() >= MAX_MISSING {
                    m.clear();
                }
                m.insert(id.into(), Instant::now());
                return Err(SecretError::NotFound(missing));
            }
            other => other?,
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.into(), (Instant::now(), v.clone()));
        Ok(v)
    }
}

/// The deployment-wide webhook secret (one JSON secret).
#[derive(Clone, Deserialize)]
pub struct WebhookSecrets {
    pub app_secret: String,
    pub verify_token: String,
    #[serde(default)]
    pub sinch_webhook_secret: Option<String>,
    /// During a rotation of the app secret: the one it replaces, accepted on webhooks
    /// until `previous_app_secret_until` (unix seconds), never after.
    #[serde(default)]
    pub previous_app_secret: Option<String>,
    #[serde(default)]
    pub previous_app_secret_until: Option<i64>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecrets { .. }")
    }
}

impl WebhookSecrets {
    pub async fn load(source: &dyn SecretSource, id: &str) -> Result<Self, SecretError> {
        let raw = source.get_secret(id).await?;
        let s: WebhookSecrets = serde_json::from_str(&raw).map_err(|e| SecretError::Malformed {
            id: id.into(),
            // serde's message names the field, never the value.
            reason: format!(
                "expected JSON with app_secret and verify_token: {}",
                e.classify_name()
            ),
        })?;
        if s.app_secret.is_empty() || s.verify_token.is_empty() {
            return Err(SecretError::Malformed {
                id: id.into(),
                reason: "empty app_secret or verify_token".into(),
            });
        }
        Ok(s)
    }
    /// The app secrets a Meta webhook may be signed with at `now_secs`: the current one,
    /// and the previous one within its rotation window.
    pub fn app_secrets(&self, now_secs: i64) -> Vec<&str> {
        current_and_previous(
            &self.app_secret,
            self.previous_app_secret.as_deref(),
            self.previous_app_secret_until,
            now_secs,
        )
    }
    pub fn sinch_secret(&self) -> Option<&str> {
        self.sinch_webhook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
    }
}

/// The webhook secret of one Sinch app, kept in Secrets Manager under
/// `<SINCH_SECRET_PREFIX><app_id>` (JSON): set by the operator when the app is linked to
/// an account, read by the webhook before anything of a callback is stored. A callback
/// signed with another app's secret (another tenant's) is refused.
#[derive(Clone, Serialize, Deserialize)]
pub struct SinchAppSecret {
    pub secret: String,
    /// The secret it replaced, still accepted until `previous_secret_until` (unix
    /// seconds): Sinch's webhook and this deployment are not updated at the same instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<i64>,
}

impl std::fmt::Debug for SinchAppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinchAppSecret { .. }")
    }
}

/// The shortest and longest Sinch webhook secret accepted.
pub const SINCH_SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// The longest window in which a replaced Sinch secret is still accepted.
pub const MAX_SINCH_PREVIOUS_SECS: i64 = 7 * 86_400;

impl SinchAppSecret {
    /// The Secrets Manager id of `app_id`'s secret. The app id is letters and digits
    /// (checked before any lookup), so it cannot reach outside the prefix.
    pub fn id(prefix: &str, app_id: &str) -> String {
        format!("{prefix}{app_id}")
    }

    /// A secret an operator may set: 16 to 256 printable ASCII characters.
    pub fn check(secret: &str) -> Result<(), String> {
        if !SINCH_SECRET_LEN.contains(&secret.len())
            || !secret.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "the Sinch webhook secret must be {} to {} printable ASCII characters without spaces",
                SINCH_SECRET_LEN.start(),
                SINCH_SECRET_LEN.end()
            ));
        }
        Ok(())
    }

    pub async fn load(source: &dyn SecretSource, id: &str) -> Result<Self, SecretError> {
        let raw = source.get_secret(id).await?;
        let s: SinchAppSecret = serde_json::from_str(&raw).map_err(|e| SecretError::Malformed {
            id: id.into(),
            reason: format!("expected JSON with secret: {}", e.classify_name()),
        })?;
        if s.secret.is_empty() {
            return Err(SecretError::Malformed {
                id: id.into(),
                reason: "empty secret".into(),
            });
        }
        Ok(s)
    }

    /// The secrets a callback may be signed with at `now_secs`: the current one, and the
    /// previous one within its window.
    pub fn secrets(&self, now_secs: i64) -> Vec<&str> {
        current_and_previous(
            &self.secret,
            self.previous_secret.as_deref(),
            self.previous_secret_until,
            now_secs,
        )
    }

    /// Sets `secret` as the app's secret (creating the Secrets Manager secret for a new
    /// app); the one it replaces stays valid for `previous_valid_secs` more seconds.
    /// Returns when the previous one stops being accepted, if it still is.
    pub async fn store(
        writer: &dyn SecretWriter,
        source: &dyn SecretSource,
        id: &str,
        secret: &str,
        previous_valid_secs: i64,
        now_secs: i64,
    ) -> Result<Option<i64>, SecretError> {
        let current = match Self::load(source, id).await {
            Ok(s) => Some(s.secret),
            Err(SecretError::NotFound(_) | SecretError::Malformed { .. }) => None,
            Err(e) => return Err(e),
        };
        let previous = current.filter(|c| c != secret && previous_valid_secs > 0);
        let until = previous.as_ref().map(|_| now_secs + previous_valid_secs);
        let value = SinchAppSecret {
            secret: secret.to_string(),
            previous_secret: previous,
            previous_secret_until: until,
        };
        let json =
            serde_json::to_string(&value).map_err(|e| SecretError::Backend(e.to_string()))?;
        writer.put_secret(id, &json).await?;
        Ok(until)
    }
}

/// The secrets a signature may be made with at `now_secs`: the current one, and the one
/// it replaced until its window ends (never without an end).
fn current_and_previous<'a>(
    current: &'a str,
    previous: Option<&'a str>,
    until: Option<i64>,
    now_secs: i64,
) -> Vec<&'a str> {
    let mut all = vec![current];
    if let (Some(p), Some(until)) = (previous, until)
        && !p.is_empty()
        && now_secs < until
    {
        all.push(p);
    }
    all
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_previous_app_secret_is_accepted_only_within_its_window() {
        let s: WebhookSecrets = serde_json::from_str(
            r#"{"app_secret":"new","verify_token":"v","previous_app_secret":"old","previous_app_secret_until":1000}"#,
        )
        .unwrap();
        assert_eq!(s.app_secrets(999), ["new", "old"]);
        assert_eq!(s.app_secrets(1000), ["new"]);
        let no_end: WebhookSecrets = serde_json::from_str(
            r#"{"app_secret":"new","verify_token":"v","previous_app_secret":"old"}"#,
        )
        .unwrap();
        assert_eq!(
            no_end.app_secrets(0),
            ["new"],
            "no window, no previous secret"
        );
    }

    use super::*;

    #[tokio::test]
    async fn cache_serves_within_ttl_and_refetches_after() {
        let inner = Arc::new(MemorySecrets::with("s", "v1"));
        let cached = CachedSecrets::new(inner.clone(), Duration::from_millis(50));
        assert_eq!(cached.get_secret("s").await.unwrap(), "v1");
        inner.set("s", "v2");
        assert_eq!(cached.get_secret("s").await.unwrap(), "v1");
        assert_eq!(inner.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cached.get_secret("s").await.unwrap(), "v2");
        cached.invalidate("s");
        inner.set("s", "v3");
        assert_eq!(cached.get_secret("s").await.unwrap(), "v3");
    }

    #[tokio::test]
    async fn a_missing_secret_is_asked_for_once_per_window_when_remembered() {
        let inner = Arc::new(MemorySecrets::default());
        let plain = CachedSecrets::new(inner.clone(), Duration::from_secs(60));
        let remembering =
            CachedSecrets::new(inner.clone(), Duration::from_secs(60)).remembering_missing();
        for _ in 0..5 {
            assert!(matches!(
                remembering.get_secret("app").await,
                Err(SecretError::NotFound(_))
            ));
        }
        assert_eq!(inner.reads.load(std::sync::atomic::Ordering::Relaxed), 1);
        inner.set("app", "v");
        assert!(remembering.get_secret("app").await.is_err(), "remembered");
        remembering.invalidate("app");
        assert_eq!(remembering.get_secret("app").await.unwrap(), "v");
        // Not remembering: a secret created a moment ago is found at once.
        inner.set("token", "t");
        assert_eq!(plain.get_secret("token").await.unwrap(), "t");
        assert!(plain.get_secret("nope").await.is_err());
        let before = inner.reads.load(std::sync::atomic::Ordering::Relaxed);
        assert!(plain.get_secret("nope").await.is_err());
        assert_eq!(
            inner.reads.load(std::sync::atomic::Ordering::Relaxed),
            before + 1
        );
    }

    #[tokio::test]
    async fn a_sinch_app_secret_keeps_the_one_it_replaces_for_its_window() {
        let store = MemorySecrets::default();
        assert!(SinchAppSecret::check("short").is_err());
        assert!(SinchAppSecret::check("with a space in it....").is_err());
        SinchAppSecret::check("0123456789abcdef").unwrap();
        let until = SinchAppSecret::store(&store, &store, "p/app", "first-secret-0001", 600, 1000)
            .await
            .unwrap();
        assert_eq!(until, None, "nothing replaced");
        let until = SinchAppSecret::store(&store, &store, "p/app", "second-secret-002", 600, 1000)
            .await
            .unwrap();
        assert_eq!(until, Some(1600));
        let s = SinchAppSecret::load(&store, "p/app").await.unwrap();
        assert_eq!(s.secrets(1599), ["second-secret-002", "first-secret-0001"]);
        assert_eq!(s.secrets(1600), ["second-secret-002"]);
        assert_eq!(format!("{s:?}"), "SinchAppSecret { .. }");
        SinchAppSecret::store(&store, &store, "p/app", "third-secret-0003", 0, 2000)
            .await
            .unwrap();
        let s = SinchAppSecret::load(&store, "p/app").await.unwrap();
        assert_eq!(s.secrets(2000), ["third-secret-0003"], "no window asked");
    }

    #[tokio::test]
    async fn malformed_secret_never_echoes_its_value() {
        let src = MemorySecrets::with("w", r#"{"app_secret":"TOPSECRET"}"#);
        let err = WebhookSecrets::load(&src, "w")
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("TOPSECRET"), "{err}");
        let ok = MemorySecrets::with("w", r#"{"app_secret":"a","verify_token":"b"}"#);
        let s = WebhookSecrets::load(&ok, "w").await.unwrap();
        assert_eq!(format!("{s:?}"), "WebhookSecrets { .. }");
        assert_eq!(s.sinch_secret(), None);
    }
}
