//! HTTP handlers: plain async functions over the ports, shared by the Lambda binaries and
//! the local server.
pub mod admin;
pub mod ads;
pub mod api;
pub mod connect;
pub mod conversions;
pub mod dataset;
pub mod webhook;

/// Normalises a request path for routing (no trailing slash, never empty).
pub(crate) fn route_path(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    if p.is_empty() { "/" } else { p }
}
