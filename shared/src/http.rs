//! A small request/response pair that both the Lambda adapters (API Gateway HTTP API
//! through `lambda_http`) and the local server convert to and from, so the very same
//! handler code answers in AWS and on a laptop.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the invocation ends (Lambda's deadline, from the function's `Timeout`):
    /// work that must answer in time stops before it. `None` outside Lambda.
    pub deadline: Option<std::time::Instant>,
}

/// Kept free before the invocation's deadline: the answer, and what must be saved
/// before it (an idempotency key's record, a batch's outcomes).
pub const INVOCATION_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `limit`, or the invocation's deadline less [`INVOCATION_MARGIN`] when that comes
/// first (never before now): no work of the request runs past it.
pub fn within_invocation(
    limit: std::time::Instant,
    invocation_deadline: Option<std::time::Instant>,
) -> std::time::Instant {
    let now = std::time::Instant::now();
    match invocation_deadline {
        Some(d) => limit.min(d.checked_sub(INVOCATION_MARGIN).unwrap_or(now).max(now)),
        None => limit,
    }
}

impl ApiRequest {
    pub fn new(method: Method, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, parse_query(q)),
            None => (path_and_query, Vec::new()),
        };
        Self {
            method,
            path: path.to_string(),
            query,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            deadline: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    /// For tests: production requests come from `lambda::from_lambda` or the local server.
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// First value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header as UTF-8 text; absent or not text is `None`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        // Serialising our own response types cannot fail (no maps with non-string keys).
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body,
        }
    }

    pub fn text(status: StatusCode, text: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".to_string())],
            body: text.into().into_bytes(),
        }
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Conversions for the Lambda side (`lambda_http`, API Gateway HTTP API payload 2.0).
/// `lambda_http` has already decoded base64 bodies (`isBase64Encoded: true`) into bytes.
pub mod lambda {
    use super::*;
    use lambda_http::{Body, Request, Response};

    pub fn from_lambda(req: Request) -> ApiRequest {
        let (parts, body) = req.into_parts();
        let body = match body {
            Body::Empty => Bytes::new(),
            Body::Text(s) => Bytes::from(s),
            Body::Binary(b) => Bytes::from(b),
            _ => Bytes::new(),
        };
        // Lambda's deadline (epoch millis) as an instant of this process's clock.
        let deadline = parts
            .extensions
            .get::<lambda_http::Context>()
            .and_then(|c| {
                let left = i64::try_from(c.deadline).ok()? - crate::time::now_millis();
                Some(
                    std::time::Instant::now()
                        + std::time::Duration::from_millis(left.max(0) as u64),
                )
            });
        ApiRequest {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(parse_query).unwrap_or_default(),
            headers: parts.headers,
            body,
            deadline,
        }
    }

    pub fn into_lambda(resp: ApiResponse) -> Response<Body> {
        let mut builder = Response::builder().status(resp.status);
        for (k, v) in &resp.headers {
            builder = builder.header(*k, v.as_str());
        }
        let body = match String::from_utf8(resp.body) {
            Ok(s) if s.is_empty() => Body::Empty,
            Ok(s) => Body::Text(s),
            Err(e) => Body::Binary(e.into_bytes()),
        };
        builder.body(body).unwrap_or_else(|_| {
            let mut r = Response::new(Body::Empty);
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}
