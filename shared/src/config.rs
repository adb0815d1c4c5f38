//! Typed configuration read from the environment once, at cold start, failing fast with a
//! message that names the variable. AWS endpoints and credentials come from the standard
//! SDK environment (`AWS_ENDPOINT_URL*`, `AWS_REGION`, ...), never from variables of ours.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where variables are read from: the process environment in a Lambda, the template's
/// resolved variables when the local stack checks a function before starting it.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn required(env: Lookup, name: &'static str) -> Result<String, ConfigError> {
    match env(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(ConfigError::Missing(name)),
    }
}

fn number<T: std::str::FromStr>(
    env: Lookup,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env(name) {
        Some(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            })
        }
        _ => Ok(default),
    }
}

/// Default webhook body limit: 4 MiB. Base64 (API Gateway) makes it 5.3 MB, inside
/// Lambda's 6 MB synchronous payload limit; Meta's batches of up to 1000 updates fit.
pub const DEFAULT_MAX_WEBHOOK_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub inbox_table: String,
    /// Secrets Manager id (ARN or name) of the deployment secret: JSON with `app_secret`,
    /// `verify_token` and optionally `sinch_webhook_secret`.
    pub webhook_secret_id: String,
    pub inbox_ttl: Duration,
    pub max_body_bytes: usize,
    pub sinch_max_skew: Duration,
    pub secrets_cache_ttl: Duration,
    pub sinch: SinchSecrets,
}

/// Which secret a Sinch callback is checked with (`SINCH_SECRET_SCOPE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinchSecrets {
    /// `per-app` (the default): each Sinch app's own secret, kept under
    /// `SINCH_SECRET_PREFIX<app_id>` and set when the app is linked to an account. A
    /// callback for an app with no secret is refused.
    PerApp { prefix: String },
    /// `deployment`: the deployment secret's `sinch_webhook_secret` signs every app's
    /// callbacks. Only for a deployment that serves one business: any holder of that
    /// secret can sign callbacks for any app.
    Deployment,
}

impl SinchSecrets {
    fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        match env("SINCH_SECRET_SCOPE").as_deref().map(str::trim) {
            None | Some("" | "per-app") => Ok(Self::PerApp {
                prefix: required(env, "SINCH_SECRET_PREFIX")?,
            }),
            Some("deployment") => Ok(Self::Deployment),
            Some(other) => Err(ConfigError::Invalid {
                name: "SINCH_SECRET_SCOPE",
                reason: format!("{other:?}: use per-app or deployment"),
            }),
        }
    }
}

/// The admin function: the data table, and where Sinch apps' webhook secrets are kept
/// (`SINCH_SECRET_PREFIX`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The account's Meta token checks the phone numbers the operator links.
    pub connect: ConnectConfig,
    pub sinch_secret_prefix: String,
    /// `POST /v1/admin/replay`: capture run again ([`crate::replay`]).
    pub replay: ReplayConfig,
}

/// What a replay reads and runs: the inbox (`INBOX_TABLE`), the capture's on-failure
/// queue (`CAPTURE_DLQ_URL`, optional), and capture itself, with the conversions it
/// sends when a click lands (as the capture function: [`CapiConfig`]).
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub inbox_table: String,
    pub dead_letter_queue_url: Option<String>,
    pub capi: CapiConfig,
}

impl ReplayConfig {
    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            inbox_table: required(env, "INBOX_TABLE")?,
            dead_letter_queue_url: required(env, "CAPTURE_DLQ_URL").ok(),
            capi: CapiConfig::from_lookup(env)?,
        })
    }
}

impl AdminConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            connect: ConnectConfig::from_lookup(env)?,
            sinch_secret_prefix: required(env, "SINCH_SECRET_PREFIX")?,
            replay: ReplayConfig::from_lookup(env)?,
        })
    }
}

impl WebhookConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        let ttl_days: u64 = number(env, "INBOX_TTL_DAYS", 30)?;
        let max_body_bytes: usize = number(
            env,
            "MAX_WEBHOOK_BODY_BYTES",
            DEFAULT_MAX_WEBHOOK_BODY_BYTES,
        )?;
        if max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "MAX_WEBHOOK_BODY_BYTES",
                reason: "must be greater than 0".into(),
            });
        }
        Ok(Self {
            inbox_table: required(env, "INBOX_TABLE")?,
            webhook_secret_id: required(env, "WEBHOOK_SECRET_ID")?,
            inbox_ttl: Duration::from_secs(ttl_days * 86_400),
            max_body_bytes,
            sinch_max_skew: Duration::from_secs(number(env, "SINCH_MAX_SKEW_SECONDS", 300)?),
            secrets_cache_ttl: Duration::from_secs(number(env, "SECRETS_CACHE_TTL_SECONDS", 300)?),
            sinch: SinchSecrets::from_lookup(env)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct DataConfig {
    pub data_table: String,
    /// Audit rows of the conversions capture queues (forwarded automatic events) expire
    /// after this many days (`AUDIT_TTL_DAYS`, as [`CapiConfig`]); `None` keeps them.
    pub audit_ttl_days: Option<i64>,
}

impl DataConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            data_table: required(env, "DATA_TABLE")?,
            audit_ttl_days: audit_ttl_days(env)?,
        })
    }
}

/// The capture-backlog function: the data table and how many unrouted items one
/// invocation captures at most (`BACKLOG_ITEMS_PER_RUN`, 1 to 10000, default 1000; the
/// invocation's deadline may stop it earlier).
#[derive(Debug, Clone)]
pub struct BacklogConfig {
    pub data: DataConfig,
    pub items_per_run: usize,
}

impl BacklogConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        let items_per_run: usize = number(env, "BACKLOG_ITEMS_PER_RUN", 1000)?;
        if !(1..=10_000).contains(&items_per_run) {
            return Err(ConfigError::Invalid {
                name: "BACKLOG_ITEMS_PER_RUN",
                reason: "must be between 1 and 10000".into(),
            });
        }
        Ok(Self {
            data: DataConfig::from_lookup(env)?,
            items_per_run,
        })
    }
}

/// Builds the AWS SDK configuration from the standard environment.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// The connect and token-refresh functions.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    pub data_table: String,
    /// The deployment secret holding the Meta `app_secret` (the webhook secret).
    pub app_secret_id: String,
    pub meta_app_id: String,
    /// Token secrets are named `<prefix><account id>`.
    pub token_secret_prefix: String,
    pub secrets_cache_ttl: Duration,
    /// Scheduled refresh: tokens expiring within this many days are refreshed.
    pub refresh_within_days: i64,
    /// `META_GRAPH_URL`: Meta's Graph API with its version (the template always sets
    /// it, so a missing one is a deployment error, never a silent call to Meta).
    pub graph_url: String,
}

impl ConnectConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        let prefix = required(env, "TOKEN_SECRET_PREFIX")?;
        Ok(Self {
            data_table: required(env, "DATA_TABLE")?,
            app_secret_id: required(env, "WEBHOOK_SECRET_ID")?,
            meta_app_id: required(env, "META_APP_ID")?,
            token_secret_prefix: prefix,
            secrets_cache_ttl: Duration::from_secs(number(env, "SECRETS_CACHE_TTL_SECONDS", 300)?),
            refresh_within_days: number(env, "REFRESH_WITHIN_DAYS", 10)?,
            graph_url: required(env, "META_GRAPH_URL")?,
        })
    }
}

/// The dataset, conversions and resend functions: the connect settings plus these.
#[derive(Debug, Clone)]
pub struct CapiConfig {
    pub connect: ConnectConfig,
    /// Audit rows expire after this many days; unset or 0 keeps them forever.
    pub audit_ttl_days: Option<i64>,
    /// A conversion Meta did not take is sent again by the resend job this long after
    /// (`RESEND_DELAY_SECONDS`, default 60; later failures back off from it).
    pub resend_delay: Duration,
    /// A conversion with no click waits this long for its customer's click
    /// (`CLICK_WAIT_SECONDS`, default 900; 0 answers the no-op at once; at most 86400).
    pub click_wait: Duration,
    /// `META_PARTNER_AGENT`: the name Meta assigned the partner, sent once at the top of
    /// every Conversions API request; unset or empty sends none.
    pub partner_agent: Option<String>,
}

impl CapiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&process_env)
    }

    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        let resend_delay: u64 = number(env, "RESEND_DELAY_SECONDS", 60)?;
        if !(1..=3600).contains(&resend_delay) {
            return Err(ConfigError::Invalid {
                name: "RESEND_DELAY_SECONDS",
                reason: "must be between 1 and 3600".into(),
            });
        }
        let click_wait: u64 = number(env, "CLICK_WAIT_SECONDS", 900)?;
        if click_wait > 86_400 {
            return Err(ConfigError::Invalid {
                name: "CLICK_WAIT_SECONDS",
                reason: "must be between 0 and 86400".into(),
            });
        }
        let partner_agent = env("META_PARTNER_AGENT")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        if let Some(p) = &partner_agent
            && (p.len() > 64
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
        {
            return Err(ConfigError::Invalid {
                name: "META_PARTNER_AGENT",
                reason: "must be 1 to 64 letters, digits, _ - .".into(),
            });
        }
        Ok(Self {
            partner_agent,
            click_wait: Duration::from_secs(click_wait),
            resend_delay: Duration::from_secs(resend_delay),
            connect: ConnectConfig::from_lookup(env)?,
            audit_ttl_days: audit_ttl_days(env)?,
        })
    }
}

/// `AUDIT_TTL_DAYS`: unset or 0 keeps audit rows forever. Under 8 days the TTL could
/// remove a pending event or its dedup record while it can still be sent: such values
/// are raised to 8.
fn audit_ttl_days(env: Lookup) -> Result<Option<i64>, ConfigError> {
    let days: i64 = number(env, "AUDIT_TTL_DAYS", 0)?;
    Ok((days > 0).then_some(days.max(8)))
}

/// Reads a function binary's configuration from `env` exactly as the binary reads it
/// at its cold start: the local stack runs this with the variables template.yaml gives
/// the function, so a variable the code requires but the template does not set stops
/// the start instead of failing in AWS.
pub fn check_function(binary: &str, env: Lookup) -> Result<(), ConfigError> {
    match binary {
        "webhook" => WebhookConfig::from_lookup(env).map(drop),
        "api" => DataConfig::from_lookup(env).map(drop),
        "admin" => AdminConfig::from_lookup(env).map(drop),
        "capture-backlog" => BacklogConfig::from_lookup(env).map(drop),
        "connect" | "token-refresh" | "ads" => ConnectConfig::from_lookup(env).map(drop),
        "capture" | "dataset" | "conversions" | "conversions-resend" => {
            CapiConfig::from_lookup(env).map(drop)
        }
        other => Err(ConfigError::Invalid {
            name: "binary",
            reason: format!("{other} is not a function of this project"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_is_named() {
        let env = |name: &str| match name {
            "DATA_TABLE" | "WEBHOOK_SECRET_ID" | "TOKEN_SECRET_PREFIX" | "META_APP_ID" => {
                Some("x".to_string())
            }
            _ => None,
        };
        let e = check_function("dataset", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable META_GRAPH_URL is required"
        );
        assert!(check_function("api", &env).is_ok());
        let e = check_function("webhook", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable INBOX_TABLE is required"
        );
        assert!(check_function("nope", &env).is_err());
    }

    #[test]
    fn sinch_secrets_are_per_app_unless_the_deployment_is_single_tenant() {
        let env = |scope: Option<&'static str>, prefix: Option<&'static str>| {
            move |name: &str| match name {
                "INBOX_TABLE" | "WEBHOOK_SECRET_ID" => Some("x".to_string()),
                "SINCH_SECRET_SCOPE" => scope.map(str::to_string),
                "SINCH_SECRET_PREFIX" => prefix.map(str::to_string),
                _ => None,
            }
        };
        let read = |scope, prefix| WebhookConfig::from_lookup(&env(scope, prefix)).map(|c| c.sinch);
        assert_eq!(
            read(None, Some("stack/sinch-app/")).unwrap(),
            SinchSecrets::PerApp {
                prefix: "stack/sinch-app/".into()
            }
        );
        assert_eq!(
            read(None, None).unwrap_err().to_string(),
            "environment variable SINCH_SECRET_PREFIX is required"
        );
        assert_eq!(
            read(Some("deployment"), None).unwrap(),
            SinchSecrets::Deployment
        );
        assert!(read(Some("shared"), Some("p")).is_err());
    }
}
