//! HTTP handlers: plain async functions over the ports, shared by the Lambda binaries and
//! the local server.
pub mod admin;
pub mod ads;
pub mod api;
pub mod connect;
pub mod conversions;
pub mod dataset;
pub mod routes;
pub mod webhook;

/// Normalises a request path for routing (no trailing slash, never empty).
/// A list's `limit` query parameter: 1 to 200, 50 when absent.
pub(crate) fn list_limit(req: &crate::http::ApiRequest) -> crate::error::ApiResult<usize> {
    match req.query_param("limit") {
        None => Ok(50),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=200).contains(l))
            .ok_or_else(|| crate::error::ApiError::bad_request("limit must be 1 to 200")),
    }
}

pub(crate) fn route_path(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    if p.is_empty() { "/" } else { p }
}
