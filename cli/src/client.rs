//! The HTTP side: one reqwest client (rustls), a timeout per request, the key as
//! `Authorization: Bearer` (marked sensitive), and answers sorted into success or
//! [`CliError`]. Neither the key nor any secret is ever written out, even with -v.

use crate::config::{NO_KEY, Origin};
use crate::error::CliError;
use reqwest::Method;
use serde_json::Value;
use std::time::{Duration, Instant};

pub struct Api {
    http: reqwest::Client,
    base: String,
    origin: Origin,
    key: Option<String>,
    verbose: bool,
    timeout: Duration,
}

pub enum Body {
    Json(Value),
    /// Bytes sent as they are, e.g. a signed webhook (the signature covers these bytes).
    Raw(Vec<u8>),
}

pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Body>,
    pub headers: Vec<(&'static str, String)>,
    /// Send the API key.
    pub auth: bool,
    /// Safe to send again (it carries an Idempotency-Key): retried when no answer came
    /// (the outcome is unknown), on a gateway timeout (504: it may still be running), and
    /// on 409 `request_in_progress`. Other answers are the recorded outcome: a retry
    /// would only replay them.
    pub retry: bool,
    pub timeout: Option<Duration>,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
            auth: true,
            retry: false,
            timeout: None,
        }
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::POST, path).json(body)
    }
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }
    /// Adds `name=value` to the query when the value is present.
    pub fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.query.push((name, v.to_string()));
        }
        self
    }
}

/// A 2xx answer.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// Percent-encodes one path segment (ids come from the command line).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.contains(&s) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Credentials a request body may carry (the OAuth code), hidden from -v.
const REDACTED_FIELDS: [&str; 4] = ["code", "access_token", "app_secret", "api_key"];

fn redacted(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        for k in REDACTED_FIELDS {
            if let Some(f @ Value::String(_)) = m.get_mut(k) {
                *f = Value::String("<redacted>".into());
            }
        }
    }
    v
}

fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

impl Api {
    pub fn new(
        base: String,
        origin: Origin,
        key: Option<String>,
        verbose: bool,
        timeout: Duration,
    ) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ctwa-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            origin,
            key,
            verbose,
            timeout,
        })
    }

    fn unreachable(&self, e: &reqwest::Error, timeout: Duration) -> CliError {
        if e.is_builder() {
            // e.g. a key with characters a header cannot hold; the value is not shown.
            return CliError::Config(format!(
                "cannot build the request to {}: {} (check the API URL and key)",
                self.base,
                causes(e)
            ));
        }
        let what = if e.is_timeout() {
            format!(
                "no answer from {} within {} s",
                self.base,
                timeout.as_secs()
            )
        } else {
            let cause = causes(e);
            format!(
                "cannot reach {}{}",
                self.base,
                if cause.is_empty() {
                    String::new()
                } else {
                    format!(": {cause}")
                }
            )
        };
        let hint = match &self.origin {
            Origin::LocalRun(p) => format!(
                " (the URL comes from {}: is the local run up? scripts/local.sh)",
                p.display()
            ),
            Origin::ConfigFile(p) => format!(" (the URL comes from {})", p.display()),
            Origin::FlagOrEnv => String::new(),
        };
        CliError::Unreachable(format!("{what}{hint}"))
    }

    /// Sends the request; a non-2xx answer is an error carrying the answer's body.
    pub async fn send(&self, req: Req) -> Result<Answer, CliError> {
        let key = if req.auth {
            Some(
                self.key
                    .as_deref()
                    .ok_or_else(|| CliError::Config(NO_KEY.into()))?,
            )
        } else {
            None
        };
        let url = format!("{}{}", self.base, req.path);
        let timeout = req.timeout.unwrap_or(self.timeout);
        let attempts: u32 = if req.retry { 4 } else { 1 };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut b = self
                .http
                .request(req.method.clone(), &url)
                .timeout(timeout)
                .header("accept", "application/json");
            if !req.query.is_empty() {
                b = b.query(&req.query);
            }
            if let Some(k) = key {
                b = b.bearer_auth(k);
            }
            for (name, value) in &req.headers {
                b = b.header(*name, value);
            }
            let mut shown_body = None;
            b = match &req.body {
                Some(Body::Json(v)) => {
                    let bytes = serde_json::to_vec(v).unwrap_or_default();
                    if self.verbose {
                        shown_body = Some(redacted(v).to_string());
                    }
                    b.header("content-type", "application/json").body(bytes)
                }
                Some(Body::Raw(bytes)) => {
                    if self.verbose {
                        shown_body = Some(String::from_utf8_lossy(bytes).into_owned());
                    }
                    b.header("content-type", "application/json")
                        .body(bytes.clone())
                }
                None => b,
            };
            if self.verbose {
                let q = if req.query.is_empty() {
                    String::new()
                } else {
                    let pairs: Vec<String> =
                        req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("?{}", pairs.join("&"))
                };
                eprintln!("> {} {url}{q}", req.method);
                for (name, value) in &req.headers {
                    if name.eq_ignore_ascii_case("idempotency-key") {
                        eprintln!("> {name}: {value}");
                    }
                }
                if let Some(s) = &shown_body {
                    eprintln!("> {}", truncated(s, 2000));
                }
            }
            let started = Instant::now();
            let result = b.send().await;
            let resp = match result {
                Ok(r) => r,
                // Sent but unanswered: the outcome is unknown. (A refused connection sent
                // nothing: no retry.)
                Err(e) if attempt < attempts && !e.is_builder() && !e.is_connect() => {
                    eprintln!(
                        "no answer ({}); retrying ({}/{attempts}) with the same Idempotency-Key",
                        if e.is_timeout() {
                            "timeout"
                        } else {
                            "connection lost"
                        },
                        attempt + 1
                    );
                    tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                    continue;
                }
                Err(e) => return Err(self.unreachable(&e, timeout)),
            };
            let status = resp.status().as_u16();
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => return Err(self.unreachable(&e, timeout)),
            };
            if self.verbose {
                eprintln!("< {status} ({} ms)", started.elapsed().as_millis());
            }
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            let in_progress =
                status == 504 || (status == 409 && body["error"]["code"] == "request_in_progress");
            if attempt < attempts && in_progress {
                eprintln!(
                    "HTTP {status}: still running; retrying ({}/{attempts}) with the same Idempotency-Key",
                    attempt + 1
                );
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                continue;
            }
            return if (200..300).contains(&status) {
                Ok(Answer { status, body })
            } else {
                if self.verbose {
                    eprintln!("< {}", truncated(&body.to_string(), 4000));
                }
                Err(CliError::Api { status, body })
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("c_1Ab-9.~"), "c_1Ab-9.~");
        assert_eq!(segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    #[test]
    fn verbose_bodies_hide_credentials() {
        let v = serde_json::json!({"code": "AQB123", "redirect_uri": "https://x"});
        assert_eq!(
            redacted(&v),
            serde_json::json!({"code": "<redacted>", "redirect_uri": "https://x"})
        );
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncated("héllo", 2), "h… (6 bytes)");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
