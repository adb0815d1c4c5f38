//! The one place where errors become HTTP answers.
//!
//! Every failure a caller can see is a typed [`ApiError`] variant; the domain's errors
//! ([`ConnectError`], [`CapiError`], [`AdsError`], storage and secrets) convert into it
//! with `From` at the boundary, so handlers only write `?`. [`ApiError::into_response`]
//! is the one encoder: `{"error": {"code", "message", ...details}}`, with Meta's error
//! (`meta_status`, `meta_error`) for everything Meta answered, `Retry-After` when there
//! is a wait, `WWW-Authenticate` on a 401 of ours. Anything unexpected is `Internal`: the
//! caller gets an opaque 500 and the cause goes to the log, never to the response.

use crate::ads::{AdsError, CleanupDone, CreatedIds, CreationFailed, StepDone};
use crate::capi::CapiError;
use crate::graph::GraphError;
use crate::http::ApiResponse;
use crate::meta::connection::ConnectError;
use http::StatusCode;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// How long the caller should wait before trying again (`Retry-After`, whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(Duration);

impl RetryAfter {
    pub fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    /// Whole seconds, rounded up: a wait is never announced shorter than it is.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

/// The hint given when Meta refuses a dataset call with (#100).
const UNVERIFIED_HINT: &str = "(#100) Invalid parameter usually means the WhatsApp Business Account is not verified yet: complete business verification in Meta Business Manager";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The API key lacks what the route needs (a scope, or being an operator key).
    #[error("{}", insufficient_scope_message(.required))]
    InsufficientScope { required: &'static str },
    /// The account holds as many live API keys as it may.
    #[error(
        "this account already has {max} live API keys: revoke one (DELETE /v1/api-keys/{{key_id}}) before creating another"
    )]
    KeyLimitReached { max: u32 },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request conflicts with what is stored (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// A key that is revoked or expired cannot be rotated.
    #[error("this key is revoked or expired: create a new one instead")]
    KeyInactive,
    #[error("a request with this Idempotency-Key is still running: retry in a few seconds")]
    RequestInProgress,
    #[error("this Idempotency-Key was used with another request body")]
    IdempotencyKeyReused,
    /// Our own hold (Meta announced a wait): no call was made.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: RetryAfter,
    },
    #[error("Invalid code")]
    InvalidCode(GraphError),
    #[error("Required scopes missing: {}", .0.join(", "))]
    MissingScopes(Vec<String>),
    #[error("Meta is not connected for this account: run exchange-code first")]
    MetaNotConnected,
    #[error(
        "The stored Meta token is expired or revoked: reconnect with a fresh code (exchange-code)"
    )]
    MetaTokenInvalid(Option<GraphError>),
    #[error("No dataset for this account: POST /v1/dataset (or set dataset_id with POST /v1/capi)")]
    NoDataset,
    /// No dataset for a Page / Instagram account (the message names it and the call).
    #[error("{0}")]
    NoChannelDataset(String),
    /// The token lacks a channel's events permission.
    #[error("{message}")]
    MetaPermissionMissing {
        message: String,
        permission: &'static str,
    },
    /// The stored token does not reach the account's own WABA.
    #[error(
        "The Meta token does not reach this account's WhatsApp Business Account {waba_id}: reconnect with a token of that business (exchange-code); nothing was sent"
    )]
    MetaWabaNotGranted {
        waba_id: String,
        granted: Vec<String>,
    },
    /// A phone number id Meta does not list under the account's WABA (issue 14).
    #[error("{message}")]
    PhoneNumberNotInWaba {
        message: String,
        phone_number_id: String,
        waba_id: String,
    },
    /// The account's token cannot see its own WABA: its numbers cannot be checked.
    #[error("{message}")]
    WabaNotReachable {
        message: String,
        waba_id: String,
        error: GraphError,
    },
    /// Meta's refusal or failure, passed on: Meta's own 4xx (the request was wrong), 429
    /// for its rate limits, 502 for its failures.
    #[error("{}", meta_message(.error))]
    Meta {
        error: GraphError,
        retry_after: Option<RetryAfter>,
    },
    /// Meta permanently refused a call the caller cannot change (422), with a hint.
    #[error("Meta refused the dataset call: {error}")]
    MetaRefused {
        error: GraphError,
        hint: &'static str,
    },
    #[error(
        "Meta answered too slowly: the request's time budget was spent before this call, which was not sent"
    )]
    MetaSlow,
    /// A step of an ad creation failed; the answer says what was made and cleaned up.
    #[error("ad creation failed at step {}", .0.step)]
    AdCreationFailed(Box<FailedCreation>),
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A failed ad creation as the answer tells it: the failed step's own error and what
/// was created and cleaned up before it.
#[derive(Debug)]
pub struct FailedCreation {
    pub cause: ApiError,
    pub ad_account_id: String,
    pub step: u8,
    pub failed_step: &'static str,
    pub ids: CreatedIds,
    pub steps: Vec<StepDone>,
    pub cleanup: Vec<CleanupDone>,
    pub unknown_outcome: bool,
}

impl From<CreationFailed> for ApiError {
    fn from(f: CreationFailed) -> Self {
        Self::AdCreationFailed(Box::new(FailedCreation {
            cause: f.error.into(),
            ad_account_id: f.ad_account_id,
            step: f.step,
            failed_step: f.failed_step,
            ids: f.ids,
            steps: f.steps,
            cleanup: f.cleanup,
            unknown_outcome: f.unknown_outcome,
        }))
    }
}

fn insufficient_scope_message(required: &str) -> String {
    if required == "operator" {
        "this route needs an operator key".to_string()
    } else {
        format!("this API key lacks the `{required}` scope this route needs")
    }
}

fn meta_message(e: &GraphError) -> String {
    match e {
        GraphError::Api { error, .. } if error.message.starts_with("(#") => error.message.clone(),
        GraphError::Api { error, .. } => format!("(#{}) {}", error.code, error.message),
        other => other.to_string(),
    }
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::Unauthorized(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(err.into())
    }
    pub fn meta(error: GraphError) -> Self {
        Self::Meta {
            error,
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::InvalidCode(_) | Self::MissingScopes(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized(_) | Self::MetaTokenInvalid(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict(_)
            | Self::KeyLimitReached { .. }
            | Self::KeyInactive
            | Self::RequestInProgress
            | Self::MetaNotConnected
            | Self::MetaWabaNotGranted { .. }
            | Self::PhoneNumberNotInWaba { .. }
            | Self::WabaNotReachable { .. }
            | Self::NoDataset
            | Self::NoChannelDataset(_)
            | Self::MetaPermissionMissing { .. } => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused | Self::MetaRefused { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Meta { error, .. } => match error {
                _ if error.is_rate_limit() => StatusCode::TOO_MANY_REQUESTS,
                GraphError::Api { status, .. } if (400..500).contains(status) => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
                }
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::MetaSlow => StatusCode::GATEWAY_TIMEOUT,
            Self::AdCreationFailed(f) => f.cause.status(),
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::KeyLimitReached { .. } => "key_limit_reached",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Conflict(_) => "conflict",
            Self::KeyInactive => "key_inactive",
            Self::RequestInProgress => "request_in_progress",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::RateLimited { .. } => "rate_limited",
            Self::InvalidCode(_) => "invalid_code",
            Self::MissingScopes(_) => "missing_scopes",
            Self::MetaNotConnected => "meta_not_connected",
            Self::MetaTokenInvalid(_) => "meta_token_invalid",
            Self::NoDataset | Self::NoChannelDataset(_) => "no_dataset",
            Self::MetaPermissionMissing { .. } => "meta_permission_missing",
            Self::MetaWabaNotGranted { .. } => "meta_waba_not_granted",
            Self::PhoneNumberNotInWaba { .. } => "phone_number_not_in_waba",
            Self::WabaNotReachable { .. } => "waba_not_reachable",
            Self::Meta {
                error: GraphError::Api { .. },
                ..
            } => "meta_error",
            Self::Meta { .. } => "meta_unavailable",
            Self::MetaRefused { .. } => "meta_refused",
            Self::MetaSlow => "meta_slow",
            Self::AdCreationFailed(_) => "ad_creation_failed",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<RetryAfter> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::Meta { retry_after, .. } => *retry_after,
            Self::AdCreationFailed(f) => f.cause.retry_after(),
            _ => None,
        }
    }

    /// The error object: `code`, `message` and what else the caller needs to act.
    fn error_object(&self) -> Map<String, Value> {
        let message = match self {
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut e = Map::new();
        e.insert("code".into(), self.code().into());
        e.insert("message".into(), message.into());
        match self {
            Self::InvalidCode(cause) => {
                e.insert(
                    "hint".into(),
                    "codes are single-use and expire within minutes: restart the OAuth dialog for a fresh code".into(),
                );
                e.extend(cause.details());
            }
            Self::MissingScopes(missing) => {
                e.insert("missing_scopes".into(), json!(missing));
            }
            Self::InsufficientScope { required } => {
                e.insert("required_scope".into(), json!(required));
            }
            Self::KeyLimitReached { max } => {
                e.insert("max_live_keys".into(), json!(max));
            }
            Self::MetaPermissionMissing { permission, .. } => {
                e.insert("missing_permission".into(), json!(permission));
            }
            Self::MetaWabaNotGranted { waba_id, granted } => {
                e.insert("waba_id".into(), json!(waba_id));
                e.insert("token_waba_ids".into(), json!(granted));
            }
            Self::PhoneNumberNotInWaba {
                phone_number_id,
                waba_id,
                ..
            } => {
                e.insert("phone_number_id".into(), json!(phone_number_id));
                e.insert("waba_id".into(), json!(waba_id));
            }
            Self::WabaNotReachable { waba_id, error, .. } => {
                e.insert("waba_id".into(), json!(waba_id));
                e.extend(error.details());
            }
            Self::MetaTokenInvalid(Some(cause)) | Self::Meta { error: cause, .. } => {
                e.extend(cause.details());
            }
            Self::MetaRefused { error, hint } => {
                e.extend(error.details());
                e.insert("hint".into(), (*hint).into());
            }
            Self::AdCreationFailed(f) => return creation_failed(f),
            _ => {}
        }
        if let Some(r) = self.retry_after() {
            e.insert("retry_after_secs".into(), r.as_secs().into());
        }
        e
    }

    /// The status and the error object, for an answer that holds several outcomes (a
    /// batch's items).
    pub fn into_parts(self) -> (StatusCode, Value) {
        (self.status(), Value::Object(self.error_object()))
    }

    /// The answer the caller sees. 500s are opaque; their cause is logged here.
    pub fn into_response(self) -> ApiResponse {
        let status = self.status();
        let retry_after = self.retry_after();
        let mut resp = ApiResponse::json(status, &json!({ "error": self.error_object() }));
        if let Self::Unauthorized(_) = self {
            resp.headers
                .push(("www-authenticate", "Bearer".to_string()));
        }
        if let Some(r) = retry_after {
            resp.headers.push(("retry-after", r.as_secs().to_string()));
        }
        resp
    }
}

/// A failed ad creation: the failed step's own error (code, message, Meta's error, the
/// wait) and what was created and cleaned up before it.
fn creation_failed(f: &FailedCreation) -> Map<String, Value> {
    let cause = &f.cause;
    let cause_error = cause.error_object();
    let left = f
        .cleanup
        .iter()
        .filter(|c| c.action != "deleted" && c.action != "kept")
        .count();
    let message = format!(
        "step {} ({}) failed: {}; {}",
        f.step,
        f.failed_step,
        cause_error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error"),
        if f.cleanup.is_empty() {
            "nothing had been created".to_string()
        } else if left == 0 {
            "everything created before it was deleted".to_string()
        } else {
            format!("{left} object(s) could not be deleted and were paused or left: see cleanup")
        }
    );
    let mut e = Map::new();
    e.insert("code".into(), "ad_creation_failed".into());
    e.insert("message".into(), message.into());
    let details = json!({
        "failed_step": f.failed_step,
        "step": f.step,
        "cause": cause.code(),
        "ad_account_id": f.ad_account_id,
        "created": f.ids,
        "cleanup": f.cleanup,
        "steps": f.steps,
        "unknown_outcome": f.unknown_outcome,
    });
    if let Value::Object(d) = details {
        e.extend(d);
    }
    for k in ["meta_status", "meta_error", "retry_after_secs", "hint"] {
        if let Some(v) = cause_error.get(k) {
            e.insert(k.into(), v.clone());
        }
    }
    e
}

impl From<crate::routes::RouteError> for ApiError {
    fn from(e: crate::routes::RouteError) -> Self {
        use crate::routes::RouteError;
        let message = e.to_string();
        match e {
            RouteError::NotInWaba {
                phone_number_id,
                waba_id,
            } => Self::PhoneNumberNotInWaba {
                message,
                phone_number_id,
                waba_id,
            },
            RouteError::WabaNotReachable { waba_id, error } => Self::WabaNotReachable {
                message,
                waba_id,
                error,
            },
            RouteError::ObjectNotReachable { .. } => Self::Conflict(message),
            RouteError::Meta(e) => e.into(),
            RouteError::Store(e) => e.into(),
            RouteError::AuditId(e) => ApiError::internal(e),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::internal(other),
        }
    }
}

impl From<crate::secrets::SecretError> for ApiError {
    fn from(e: crate::secrets::SecretError) -> Self {
        Self::internal(e)
    }
}

impl From<crate::ids::IdError> for ApiError {
    fn from(e: crate::ids::IdError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<crate::accounts::AccountRuleError> for ApiError {
    fn from(e: crate::accounts::AccountRuleError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<ConnectError> for ApiError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::InvalidCode(cause) => Self::InvalidCode(cause),
            ConnectError::MissingScopes(missing) => Self::MissingScopes(missing),
            ConnectError::NotConnected => Self::MetaNotConnected,
            ConnectError::TokenInvalid(cause) => Self::MetaTokenInvalid(cause),
            ConnectError::Meta(cause) => Self::meta(cause),
            ConnectError::Store(e) => e.into(),
            ConnectError::Secret(e) => e.into(),
        }
    }
}

impl From<CapiError> for ApiError {
    fn from(e: CapiError) -> Self {
        match e {
            CapiError::Connect(c) => c.into(),
            CapiError::NoWaba => Self::MetaNotConnected,
            CapiError::WabaNotGranted { waba_id, granted } => {
                Self::MetaWabaNotGranted { waba_id, granted }
            }
            CapiError::NoDataset => Self::NoDataset,
            e @ CapiError::NoChannelDataset { .. } => Self::NoChannelDataset(e.to_string()),
            e @ CapiError::MissingPermission { permission, .. } => Self::MetaPermissionMissing {
                message: e.to_string(),
                permission,
            },
            CapiError::DatasetRefused(g) if g.is_token_error() => Self::MetaTokenInvalid(Some(g)),
            CapiError::DatasetRefused(g) if g.is_retryable() => Self::meta(g),
            CapiError::DatasetRefused(error) => Self::MetaRefused {
                hint: if error.code() == Some(100) {
                    UNVERIFIED_HINT
                } else {
                    "see meta_error"
                },
                error,
            },
            CapiError::Invalid(m) => Self::BadRequest(m),
            CapiError::NotFound(m) => Self::NotFound(m),
            CapiError::Store(e) => e.into(),
        }
    }
}

impl From<AdsError> for ApiError {
    fn from(e: AdsError) -> Self {
        match e {
            AdsError::NotYours => Self::Forbidden(crate::ads::NOT_YOURS.into()),
            AdsError::Invalid(m) => Self::BadRequest(m),
            AdsError::Throttled { retry_after_secs } => Self::RateLimited {
                message: format!(
                    "Meta's rate limit for this ad account is spent: retry in {retry_after_secs} s (no call was made)"
                ),
                retry_after: RetryAfter::secs(retry_after_secs),
            },
            AdsError::MetaRateLimited {
                error,
                retry_after_secs,
            } => Self::Meta {
                error,
                retry_after: Some(RetryAfter::secs(retry_after_secs)),
            },
            AdsError::Deadline => Self::MetaSlow,
            AdsError::Connect(c) => c.into(),
            AdsError::Meta(g) => Self::meta(g),
            AdsError::Store(s) => s.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::fake::FakeGraph;

    fn body(e: ApiError) -> (StatusCode, Value, Vec<(&'static str, String)>) {
        let resp = e.into_response();
        let v: Value = serde_json::from_slice(&resp.body).unwrap();
        (resp.status, v["error"].clone(), resp.headers)
    }

    #[test]
    fn internal_errors_are_opaque() {
        let resp = ApiError::internal("db password is hunter2").into_response();
        assert_eq!(resp.status, StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8(resp.body).unwrap();
        assert!(!body.contains("hunter2"), "{body}");
        assert!(body.contains("\"internal\""));
    }

    #[test]
    fn client_errors_say_what_is_wrong() {
        let (s, e, _) = body(ApiError::PayloadTooLarge { limit: 10 });
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e["code"], "payload_too_large");
        assert_eq!(e["message"], "request body is larger than 10 bytes");
    }

    #[test]
    fn meta_errors_keep_metas_body_and_status() {
        let (s, e, _) = body(ApiError::meta(FakeGraph::error(400, 100, Some(33))));
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(e["code"], "meta_error");
        assert_eq!(e["meta_status"], 400);
        assert_eq!(e["meta_error"]["error_subcode"], 33);
        assert_eq!(e["message"], "(#100) fake error 100");
        let (s, _, _) = body(ApiError::meta(FakeGraph::error(503, 2, None)));
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        let (s, e, h) = body(
            AdsError::MetaRateLimited {
                error: FakeGraph::error(400, 80_004, None),
                retry_after_secs: 120,
            }
            .into(),
        );
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e["retry_after_secs"], 120);
        assert!(h.contains(&("retry-after", "120".to_string())));
        let (s, e, _) = body(ApiError::meta(GraphError::Transport("timeout".into())));
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(e["code"], "meta_unavailable");
        assert!(e["meta_error"]["message"].is_string());
    }

    #[test]
    fn connection_states_have_one_answer_each() {
        let from_connect: ApiError = ConnectError::NotConnected.into();
        let from_capi: ApiError = CapiError::NoWaba.into();
        for e in [from_connect, from_capi] {
            let (s, e, _) = body(e);
            assert_eq!(s, StatusCode::CONFLICT);
            assert_eq!(e["code"], "meta_not_connected");
        }
        let refused = FakeGraph::error(401, 190, Some(463));
        let (s, e, _) = body(CapiError::DatasetRefused(refused).into());
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(e["code"], "meta_token_invalid");
        assert_eq!(e["meta_error"]["code"], 190);
        let (s, e, _) = body(CapiError::DatasetRefused(FakeGraph::error(400, 100, None)).into());
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e["hint"].as_str().unwrap().contains("verified"));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(RetryAfter(Duration::from_millis(1_200)).as_secs(), 2);
        assert_eq!(RetryAfter::secs(3).as_secs(), 3);
    }
}
