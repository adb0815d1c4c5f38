//! The one place where errors become HTTP answers.
//!
//! Expected failures (bad input, unknown ids, wrong keys) are `ApiError` values with a
//! 4xx status and a JSON body that says what is wrong. Anything else is `Internal`: the
//! caller gets an opaque 500 and the cause goes to the log, never to the response.

use crate::http::ApiResponse;
use http::StatusCode;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Any other answer with its own status and code, and optional details merged into
    /// the error object (e.g. the missing scopes, or Meta's error).
    #[error("{message}")]
    Status {
        status: StatusCode,
        code: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
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

    pub fn status_with(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Status {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(self, details: serde_json::Value) -> Self {
        match self {
            Self::Status {
                status,
                code,
                message,
                ..
            } => Self::Status {
                status,
                code,
                message,
                details: Some(details),
            },
            other => other,
        }
    }

    /// Meta's refusal as an answer: Meta's own 4xx status (the request was wrong), 429
    /// for its rate limits, 502 for its failures; the body keeps Meta's code, subcode,
    /// message and fbtrace_id under `meta_error`.
    pub fn meta(e: &crate::graph::GraphError) -> Self {
        use crate::graph::GraphError;
        match e {
            GraphError::Api { status, error } => {
                let message = if error.message.starts_with("(#") {
                    error.message.clone()
                } else {
                    format!("(#{}) {}", error.code, error.message)
                };
                let status_code = match *status {
                    _ if e.is_rate_limit() => StatusCode::TOO_MANY_REQUESTS,
                    400..=499 => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                    _ => StatusCode::BAD_GATEWAY,
                };
                Self::status_with(status_code, "meta_error", message)
                    .with_details(json!({"meta_status": status, "meta_error": error}))
            }
            other => Self::status_with(
                StatusCode::BAD_GATEWAY,
                "meta_unavailable",
                other.to_string(),
            )
            .with_details(json!({"meta_error": {"message": other.to_string()}})),
        }
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::status_with(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            .with_details(json!({ "retry_after_secs": retry_after_secs }))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Status { status, .. } => *status,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Status { code, .. } => code,
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Internal(_) => "internal",
        }
    }

    /// The answer the caller sees. 500s are opaque; their cause is logged here.
    pub fn into_response(self) -> ApiResponse {
        let status = self.status();
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let mut error = json!({"code": self.code(), "message": message});
        let retry_after = match &self {
            Self::Status {
                details: Some(d), ..
            } => d
                .get("retry_after_secs")
                .and_then(serde_json::Value::as_u64),
            _ => None,
        };
        if let Self::Status {
            details: Some(serde_json::Value::Object(d)),
            ..
        } = &self
            && let serde_json::Value::Object(e) = &mut error
        {
            for (k, v) in d {
                e.entry(k.clone()).or_insert(v.clone());
            }
        }
        let mut resp = ApiResponse::json(status, &json!({ "error": error }));
        if let Self::Unauthorized(_) = self {
            resp.headers
                .push(("www-authenticate", "Bearer".to_string()));
        }
        if let Some(secs) = retry_after {
            resp.headers.push(("retry-after", secs.to_string()));
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<crate::secrets::SecretError> for ApiError {
    fn from(e: crate::secrets::SecretError) -> Self {
        Self::internal(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

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
        let resp = ApiError::PayloadTooLarge { limit: 10 }.into_response();
        assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v["error"]["code"], "payload_too_large");
        assert_eq!(
            v["error"]["message"],
            "request body is larger than 10 bytes"
        );
    }
}
