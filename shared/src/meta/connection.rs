//! An account's Meta connection: OAuth code exchange, the long-lived token kept in
//! Secrets Manager (one secret per account, a new version on change), refresh, and the
//! token read through an in-process cache by every function that calls Meta.
//!
//! The token never reaches a response, a log line or the table; the table keeps only
//! metadata ([`MetaConnection`]).

use crate::graph::{AppCredentials, Graph, GraphError, Token, TokenInfo};
use crate::secrets::{CachedSecrets, SecretError, SecretSource, SecretWriter, WebhookSecrets};
use crate::store::{ConnectionStatus, Connections, MetaConnection, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Scopes a connection must have (seed 001 and meta-api.md sections 3 and 6).
pub const REQUIRED_SCOPES: [&str; 4] = [
    "ads_management",
    "pages_show_list",
    "whatsapp_business_management",
    "whatsapp_business_manage_events",
];

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("Invalid code")]
    InvalidCode(#[source] GraphError),
    #[error("Required scopes missing: {}", .0.join(", "))]
    MissingScopes(Vec<String>),
    #[error("Meta is not connected for this account: run exchange-code first")]
    NotConnected,
    #[error("the stored Meta token is expired or revoked: reconnect (exchange a new code)")]
    TokenInvalid(#[source] Option<GraphError>),
    #[error("Meta refused the request: {0}")]
    Meta(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Whether an account's Meta connection can be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    NotConnected,
    /// Meta refused the token (190): the business must reconnect.
    Broken,
    /// The token's expiry has passed.
    Expired,
    Connected,
}

impl ConnectionState {
    pub fn of(conn: Option<&MetaConnection>, now_secs: i64) -> Self {
        match conn {
            None => Self::NotConnected,
            Some(c) if c.status == ConnectionStatus::Broken => Self::Broken,
            Some(c) if c.expires_at.is_some_and(|e| e <= now_secs) => Self::Expired,
            Some(_) => Self::Connected,
        }
    }
    pub fn is_usable(self) -> bool {
        self == Self::Connected
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Broken => "broken",
            Self::Expired => "expired",
            Self::Connected => "connected",
        }
    }
}

/// What is stored in the account's token secret.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    access_token: String,
    #[serde(default)]
    expires_at: Option<i64>,
    #[serde(default)]
    token_type: Option<String>,
    /// Equals the connection's `token_version` when this is the current token.
    #[serde(default)]
    version: i64,
}

pub struct MetaDeps {
    pub graph: Arc<dyn Graph>,
    pub connections: Arc<dyn Connections>,
    /// Reads (cached): the deployment secret (app secret) and the token secrets.
    pub secrets: Arc<CachedSecrets>,
    pub secret_writer: Arc<dyn SecretWriter>,
    /// The deployment secret holding `app_secret`.
    pub app_secret_id: String,
    pub app_id: String,
    /// Token secrets are named `<prefix><account id>`.
    pub token_secret_prefix: String,
}

impl MetaDeps {
    pub fn token_secret_id(&self, account_id: &str) -> String {
        format!("{}{account_id}", self.token_secret_prefix)
    }

    async fn app(&self) -> Result<AppCredentials, SecretError> {
        let s = WebhookSecrets::load(self.secrets.as_ref(), &self.app_secret_id).await?;
        Ok(AppCredentials {
            app_id: self.app_id.clone(),
            app_secret: s.app_secret,
        })
    }

    /// Writes the token's secret: created on a connection (`create`), only given a new
    /// version on a refresh (the scheduled refresh may not create secrets).
    async fn store_token(
        &self,
        account_id: &str,
        token: &Token,
        info: &TokenInfo,
        version: i64,
        create: bool,
    ) -> Result<String, SecretError> {
        let id = self.token_secret_id(account_id);
        let value = serde_json::to_string(&StoredToken {
            access_token: token.expose().to_string(),
            expires_at: info.expires(),
            token_type: info.kind.clone(),
            version,
        })
        .map_err(|e| SecretError::Malformed {
            id: id.clone(),
            reason: e.to_string(),
        })?;
        if create {
            self.secret_writer.put_secret(&id, &value).await?;
        } else {
            self.secret_writer.put_new_version(&id, &value).await?;
        }
        self.secrets.invalidate(&id);
        Ok(id)
    }

    /// The account's current token. The secret is cached in process; the connection
    /// (read on every call) says which token version is current, so a refresh or a
    /// reconnect made by any function is used at the next call, without a restart.
    pub async fn token(&self, account_id: &str) -> Result<Token, ConnectError> {
        let conn = self.live_connection(account_id).await?;
        let read = |raw: String| -> Result<StoredToken, SecretError> {
            serde_json::from_str(&raw).map_err(|_| SecretError::Malformed {
                id: conn.secret_id.clone(),
                reason: "expected JSON with access_token".into(),
            })
        };
        let mut stored = read(self.secrets.get_secret(&conn.secret_id).await?)?;
        if stored.version < conn.token_version {
            self.secrets.invalidate(&conn.secret_id);
            stored = read(self.secrets.get_secret(&conn.secret_id).await?)?;
        }
        // Every Graph call made with it carries its appsecret_proof.
        let app = self.app().await?;
        Ok(Token::new(stored.access_token).with_proof(&app.app_secret))
    }

    /// The account's connection unless there is none (`NotConnected`) or Meta refused its
    /// token (`TokenInvalid`): the one gate before anything is done with it.
    pub async fn live_connection(&self, account_id: &str) -> Result<MetaConnection, ConnectError> {
        let conn = self
            .connections
            .get_connection(account_id)
            .await?
            .ok_or(ConnectError::NotConnected)?;
        if conn.status == ConnectionStatus::Broken {
            return Err(ConnectError::TokenInvalid(None));
        }
        Ok(conn)
    }

    /// Drops the cached token (after Meta answered 190 with it, say).
    pub fn forget_token(&self, account_id: &str) {
        self.secrets.invalidate(&self.token_secret_id(account_id));
    }

    /// Marks the connection broken after Meta refused its token (190), unless the token
    /// was replaced (refresh or reconnect) since `token` was read.
    pub async fn mark_broken(&self, account_id: &str, token: &Token, e: &GraphError) {
        if let Ok(Some(mut conn)) = self.connections.get_connection(account_id).await {
            // Compare with the token as stored now, not as cached.
            self.forget_token(account_id);
            if self
                .token(account_id)
                .await
                .is_ok_and(|current| &current != token)
            {
                self.forget_token(account_id);
                return;
            }
            let expected = conn.token_version;
            conn.status = ConnectionStatus::Broken;
            conn.last_error = Some(e.to_string());
            if let Err(err) = self.connections.update_connection(&conn, expected).await {
                tracing::error!(account_id, error = %err, "could not mark the Meta connection broken");
            }
        }
        self.forget_token(account_id);
        tracing::warn!(
            account_id,
            "Meta refused the token (190): connection marked broken"
        );
    }
}

/// The scopes a token lacks. A business that messages on Messenger or Instagram only
/// needs no WhatsApp scope: a token with `page_events` or `instagram_manage_events`
/// (each channel's events permission, Meta's onboarding guide) is complete without
/// them; otherwise the WhatsApp pair is what is missing.
fn missing_scopes(granted: &[String]) -> Vec<String> {
    let has = |s: &str| granted.iter().any(|g| g == s);
    let other_channel = has("page_events") || has("instagram_manage_events");
    REQUIRED_SCOPES
        .iter()
        .filter(|s| !has(s))
        .filter(|s| !(other_channel && s.starts_with("whatsapp_")))
        .map(|s| s.to_string())
        .collect()
}

/// Finishes the OAuth flow: code -> token -> long-lived token -> introspection ->
/// scopes checked -> token in Secrets Manager -> metadata in the table.
///
/// The scopes checked are the token's own, as Meta's `debug_token` reports them. The
/// `granted_scopes` a caller declares (seed 001's `--granted-scopes`, which its own
/// example fills with two of the four) are not a reason to refuse before Meta is asked.
pub async fn exchange_code(
    deps: &MetaDeps,
    account_id: &str,
    code: &str,
    redirect_uri: Option<&str>,
    now_ms: i64,
) -> Result<MetaConnection, ConnectError> {
    let app = deps.app().await?;
    let short = deps
        .graph
        .exchange_code(&app, code, redirect_uri)
        .await
        .map_err(|e| match e.code() {
            // 100 (with subcodes 36007/36008/36009: malformed, redirect mismatch, used) and
            // 190: the code cannot be exchanged.
            Some(100 | 190) => ConnectError::InvalidCode(e),
            _ => ConnectError::Meta(e),
        })?;
    let long = deps.graph.exchange_long_lived(&app, &short.token()).await?;
    let token = long.token();
    let info = deps.graph.debug_token(&app, &token).await?;
    if !info.is_valid {
        return Err(ConnectError::InvalidCode(GraphError::Decode(
            "token is not valid".into(),
        )));
    }
    let missing = missing_scopes(&info.scopes);
    if !missing.is_empty() {
        return Err(ConnectError::MissingScopes(missing));
    }
    let secret_id = deps
        .store_token(account_id, &token, &info, now_ms, true)
        .await?;
    let conn = MetaConnection {
        account_id: account_id.to_string(),
        status: ConnectionStatus::Connected,
        token_type: info.kind.clone(),
        scopes: info.scopes.clone(),
        waba_id: info.waba_id(),
        waba_ids: info.waba_ids(),
        expires_at: info.expires(),
        connected_at_ms: now_ms,
        refreshed_at_ms: None,
        last_error: None,
        secret_id,
        token_version: now_ms,
    };
    deps.connections.put_connection(&conn).await?;
    tracing::info!(account_id, expires_at = ?conn.expires_at, waba_id = ?conn.waba_id, "Meta connected");
    Ok(conn)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RefreshOutcome {
    Refreshed {
        expires_at: Option<i64>,
    },
    /// System-user tokens that never expire are left alone.
    NeverExpires,
}

/// Refreshes the account's token. A token Meta refuses (190) marks the connection
/// broken and answers [`ConnectError::TokenInvalid`]; other failures are recorded as
/// `last_error` and returned.
pub async fn refresh(
    deps: &MetaDeps,
    account_id: &str,
    now_ms: i64,
) -> Result<RefreshOutcome, ConnectError> {
    let mut conn = deps.live_connection(account_id).await?;
    if conn.expires_at.is_none() {
        return Ok(RefreshOutcome::NeverExpires);
    }
    let app = deps.app().await?;
    let current = deps.token(account_id).await?;
    let result = async {
        let fresh = deps.graph.exchange_long_lived(&app, &current).await?;
        let token = fresh.token();
        let info = deps.graph.debug_token(&app, &token).await?;
        Ok::<_, GraphError>((token, info))
    }
    .await;
    let expected = conn.token_version;
    // A version newer than the current one, even within the same millisecond.
    let version = now_ms.max(expected + 1);
    match result {
        Ok((token, info)) => {
            conn.token_version = version;
            conn.expires_at = info.expires();
            conn.scopes = info.scopes.clone();
            conn.token_type = info.kind.clone().or(conn.token_type);
            conn.waba_id = info.waba_id().or(conn.waba_id);
            let granted = info.waba_ids();
            if !granted.is_empty() {
                conn.waba_ids = granted;
            }
            conn.refreshed_at_ms = Some(now_ms);
            conn.last_error = None;
            // The secret first: a failure before the record is updated leaves the new
            // token in the secret under a newer version than the record's, which readers
            // take (a secret at least as new as the record is current), and the record's
            // old expiry makes the next run refresh again. The reverse order could lose
            // the new token while the record claims it.
            deps.store_token(account_id, &token, &info, version, false)
                .await?;
            // Then the record, conditionally: if the business reconnected meanwhile, its
            // token is kept and this refreshed old one dropped.
            if !deps.connections.update_connection(&conn, expected).await? {
                restore_reconnected_token(deps, account_id).await;
                return Ok(RefreshOutcome::Refreshed {
                    expires_at: conn.expires_at,
                });
            }
            tracing::info!(account_id, expires_at = ?conn.expires_at, "Meta token refreshed");
            Ok(RefreshOutcome::Refreshed {
                expires_at: conn.expires_at,
            })
        }
        Err(e) if e.is_token_error() => {
            conn.status = ConnectionStatus::Broken;
            conn.last_error = Some(e.to_string());
            // Not if the business reconnected meanwhile: that new token is fine.
            if deps.connections.update_connection(&conn, expected).await? {
                tracing::warn!(account_id, error = %e, "Meta token refused: connection marked broken");
            }
            deps.forget_token(account_id);
            Err(ConnectError::TokenInvalid(Some(e)))
        }
        Err(e) => {
            conn.last_error = Some(e.to_string());
            deps.connections.update_connection(&conn, expected).await?;
            tracing::warn!(account_id, error = %e, "Meta token refresh failed");
            Err(ConnectError::Meta(e))
        }
    }
}

/// After a refresh lost the race to a reconnect: if the reconnect's token was written
/// before the refreshed one, it is now the previous version: put it back as current.
async fn restore_reconnected_token(deps: &MetaDeps, account_id: &str) {
    let id = deps.token_secret_id(account_id);
    let restored = async {
        let Some(conn) = deps.connections.get_connection(account_id).await? else {
            return Ok::<bool, ConnectError>(false);
        };
        let Some(raw) = deps.secret_writer.previous_version(&id).await? else {
            return Ok(false);
        };
        let previous: Option<StoredToken> = serde_json::from_str(&raw).ok();
        if previous.is_some_and(|p| p.version == conn.token_version) {
            deps.secret_writer.put_new_version(&id, &raw).await?;
            deps.secrets.invalidate(&id);
            return Ok(true);
        }
        Ok(false)
    }
    .await;
    match restored {
        Ok(put_back) => tracing::warn!(
            account_id,
            put_back,
            "the connection changed during the refresh (reconnected?); the refreshed token was dropped"
        ),
        Err(e) => tracing::error!(
            account_id,
            error = %e,
            "the connection changed during the refresh; putting the reconnected token back failed (readers re-read the secret by version)"
        ),
    }
}

/// What one scheduled refresh run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshReport {
    pub checked: usize,
    pub refreshed: usize,
    pub broken: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Left for the next run: the invocation's time was running out.
    pub deferred: usize,
    pub failures: Vec<String>,
}

/// The time one refresh may take: two Graph calls, a secret and a record write.
pub const REFRESH_BUDGET: std::time::Duration = std::time::Duration::from_secs(25);

/// Refreshes every token expiring within `within_secs`, carrying on past failures, and
/// starting none that could not finish before `deadline` (those are `deferred`: the
/// next run takes them, their tokens still valid for days).
pub async fn refresh_due(
    deps: &MetaDeps,
    within_secs: i64,
    now_ms: i64,
    deadline: std::time::Instant,
) -> Result<RefreshReport, StoreError> {
    let due = deps
        .connections
        .connections_expiring_before(now_ms / 1000 + within_secs)
        .await?;
    let mut report = RefreshReport::default();
    for conn in due {
        report.checked += 1;
        if conn.status == ConnectionStatus::Broken {
            report.skipped += 1;
            continue;
        }
        if std::time::Instant::now() + REFRESH_BUDGET > deadline {
            report.deferred += 1;
            continue;
        }
        match refresh(deps, &conn.account_id, now_ms).await {
            Ok(RefreshOutcome::Refreshed { .. }) => report.refreshed += 1,
            Ok(RefreshOutcome::NeverExpires) => report.skipped += 1,
            Err(ConnectError::TokenInvalid(_)) => {
                report.broken += 1;
                report
                    .failures
                    .push(format!("{}: token expired or revoked", conn.account_id));
            }
            Err(e) => {
                report.failed += 1;
                report.failures.push(format!("{}: {e}", conn.account_id));
            }
        }
    }
    Ok(report)
}

/// The scheduled run's report as a CloudWatch Embedded Metric Format line
/// (namespace `ctwa`, metrics `TokenRefreshFailures`, `TokensRefreshed`, `TokensBroken`).
pub fn refresh_metrics_line(report: &RefreshReport, now_ms: i64) -> String {
    crate::metrics::MetricLine::new()
        .count(
            crate::metrics::Metric::TokenRefreshFailures,
            (report.failed + report.broken) as u64,
        )
        .count(
            crate::metrics::Metric::TokensRefreshed,
            report.refreshed as u64,
        )
        .count(crate::metrics::Metric::TokensBroken, report.broken as u64)
        .field("report", report)
        .to_line(now_ms)
}
