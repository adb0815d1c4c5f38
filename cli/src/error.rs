//! The CLI's failures, their exit codes, and how they read on stderr.

use serde_json::Value;
use std::fmt::Write as _;
use std::process::ExitCode;

pub const EXIT_API_4XX: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_SERVER: u8 = 3;
pub const EXIT_CONFIG: u8 = 4;
/// A job the API ran in steps ended with work left undone (`admin replay`: failed items
/// or dead letters kept).
pub const EXIT_INCOMPLETE: u8 = 5;

#[derive(Debug)]
pub enum CliError {
    /// Bad input found after parsing (exit 2, like clap's own usage errors).
    Usage(String),
    /// No URL or key, or an unreadable config file (exit 4).
    Config(String),
    /// The API answered with a status other than 2xx (exit 1 for 4xx, else 3).
    Api { status: u16, body: Value },
    /// No answer: connection refused, DNS, TLS, timeout (exit 3).
    Unreachable(String),
    /// Every request succeeded but some of the work is left (exit 5).
    Incomplete(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Config(_) => EXIT_CONFIG,
            Self::Api { status, .. } if (400..500).contains(status) => EXIT_API_4XX,
            Self::Api { .. } | Self::Unreachable(_) => EXIT_SERVER,
            Self::Incomplete(_) => EXIT_INCOMPLETE,
        })
    }

    /// The text for stderr.
    pub fn render(&self) -> String {
        match self {
            Self::Usage(m) | Self::Config(m) | Self::Unreachable(m) | Self::Incomplete(m) => {
                format!("error: {m}\n")
            }
            Self::Api { status, body } => render_api_error(*status, body),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// Meta's error object in one line: message, then type, code, subcode, trace id.
pub fn meta_line(m: &Value) -> String {
    let mut out = m["error_user_msg"]
        .as_str()
        .or(m["message"].as_str())
        .unwrap_or("(no message)")
        .to_string();
    let mut parts = Vec::new();
    if let Some(t) = m["type"].as_str() {
        parts.push(t.to_string());
    }
    if !m["code"].is_null() {
        parts.push(format!("code {}", scalar(&m["code"])));
    }
    if !m["error_subcode"].is_null() {
        parts.push(format!("subcode {}", scalar(&m["error_subcode"])));
    }
    if let Some(t) = m["fbtrace_id"].as_str() {
        parts.push(format!("fbtrace_id {t}"));
    }
    if !parts.is_empty() {
        let _ = write!(out, " ({})", parts.join(", "));
    }
    out
}

fn step_label(v: &Value) -> String {
    match v {
        Value::Object(_) => {
            let mut s = String::new();
            if !v["step"].is_null() {
                s.push_str(&scalar(&v["step"]));
            }
            if let Some(n) = v["name"].as_str() {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(n);
            }
            if s.is_empty() { v.to_string() } else { s }
        }
        other => scalar(other),
    }
}

/// `error: HTTP 400 invalid_code: Invalid code`, then Meta's error, the hint, and for a
/// failed ad creation the failed step, what was created and its cleanup.
pub fn render_api_error(status: u16, body: &Value) -> String {
    let err = &body["error"];
    let mut out = String::new();
    let (code, message) = match err {
        Value::Object(_) => (err["code"].as_str(), err["message"].as_str()),
        // API Gateway's own answers: {"message": "Not Found"}.
        Value::String(s) => (None, Some(s.as_str())),
        _ => (None, body["message"].as_str()),
    };
    let _ = write!(out, "error: HTTP {status}");
    if let Some(c) = code {
        let _ = write!(out, " {c}");
    }
    match message {
        Some(m) => {
            let _ = writeln!(out, ": {m}");
        }
        None => match body {
            Value::String(text) if !text.trim().is_empty() => {
                let _ = writeln!(out, ": {}", truncate(text.trim(), 300));
            }
            Value::Null | Value::String(_) => {
                // An empty answer: the status's reason phrase.
                match reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                {
                    Some(reason) => {
                        let _ = writeln!(out, " {reason}");
                    }
                    None => out.push('\n'),
                }
            }
            other if err.is_null() => {
                let _ = writeln!(out, ": {}", truncate(&other.to_string(), 300));
            }
            _ => out.push('\n'),
        },
    }
    let Value::Object(fields) = err else {
        return out;
    };
    for done in err["steps"].as_array().into_iter().flatten() {
        let _ = write!(out, "  ✓ {}", step_label(done));
        if let Some(id) = done["id"].as_str() {
            let _ = write!(out, " {id}");
        }
        if let Some(ms) = done["duration_ms"].as_u64() {
            let _ = write!(out, " ({ms} ms)");
        }
        out.push('\n');
    }
    match (&err["failed_step"], &err["step"]) {
        (Value::Null, _) => {}
        (Value::String(name), n @ Value::Number(_)) => {
            let _ = writeln!(out, "  failed step: {n} {name}");
        }
        (f, _) => {
            let _ = writeln!(out, "  failed step: {}", step_label(f));
        }
    }
    if err["meta_error"].is_object() {
        let _ = writeln!(out, "  meta: {}", meta_line(&err["meta_error"]));
    }
    if let Some(h) = err["hint"].as_str() {
        let _ = writeln!(out, "  hint: {h}");
    }
    if let Value::Object(created) = &err["created"] {
        let items: Vec<String> = created
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k} {}", scalar(v)))
            .collect();
        if !items.is_empty() {
            let _ = writeln!(out, "  created before the failure: {}", items.join(", "));
        }
    }
    if let Value::Array(cleanup) = &err["cleanup"] {
        for c in cleanup {
            let _ = write!(
                out,
                "  cleanup: {} {} {}",
                scalar(&c["kind"]),
                scalar(&c["id"]),
                scalar(&c["action"])
            );
            if let Some(e) = c["error"].as_str() {
                let _ = write!(out, " ({e})");
            }
            out.push('\n');
        }
    }
    if err["unknown_outcome"] == true {
        let _ = writeln!(
            out,
            "  outcome unknown: Meta may hold an object of the failed step that has no id here (objects are created PAUSED: it cannot spend)"
        );
    }
    const SHOWN: [&str; 12] = [
        "code",
        "message",
        "failed_step",
        "step",
        "steps",
        "meta_error",
        "meta_status",
        "hint",
        "created",
        "cleanup",
        "cause",
        "unknown_outcome",
    ];
    for (k, v) in fields {
        if SHOWN.contains(&k.as_str()) || v.is_null() {
            continue;
        }
        let shown = match v {
            Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                items.iter().map(scalar).collect::<Vec<_>>().join(", ")
            }
            other => truncate(&scalar(other), 300),
        };
        let _ = writeln!(out, "  {}: {shown}", k.replace('_', " "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_code_with_meta_error() {
        let body = json!({"error":{"code":"invalid_code","hint":"codes are single-use","message":"Invalid code","meta_error":{"code":100,"error_subcode":36009,"fbtrace_id":"Adc9","message":"This authorization code has been used.","type":"OAuthException"}}});
        let text = render_api_error(400, &body);
        assert_eq!(
            text,
            "error: HTTP 400 invalid_code: Invalid code\n  meta: This authorization code has been used. (OAuthException, code 100, subcode 36009, fbtrace_id Adc9)\n  hint: codes are single-use\n"
        );
        let e = CliError::Api { status: 400, body };
        assert_eq!(e.exit_code(), ExitCode::from(1));
    }

    #[test]
    fn ad_creation_failure_names_the_step_and_the_cleanup() {
        let body = json!({"error":{"code":"ad_creation_failed","message":"Meta refused the ad set","failed_step":"adset","step":2,
            "cause":"meta_refused","ad_account_id":"act_1","unknown_outcome":false,
            "steps":[{"step":1,"name":"campaign","id":"2385","duration_ms":12}],
            "meta_error":{"message":"Invalid budget","code":100},
            "created":{"campaign_id":"2385"},
            "cleanup":[{"kind":"campaign","id":"2385","action":"deleted"}]}});
        let text = render_api_error(422, &body);
        assert!(text.starts_with("error: HTTP 422 ad_creation_failed: Meta refused the ad set\n  ✓ 1 campaign 2385 (12 ms)\n  failed step: 2 adset\n"), "{text}");
        assert!(text.ends_with("  ad account id: act_1\n"), "{text}");
        assert!(
            !text.contains("cause") && !text.contains("outcome"),
            "{text}"
        );
        let older = json!({"error":{"code":"ad_creation_failed","message":"m","failed_step":{"step":2,"name":"adset"}}});
        assert!(render_api_error(422, &older).contains("  failed step: 2 adset\n"));
        assert!(
            text.contains("  meta: Invalid budget (code 100)\n"),
            "{text}"
        );
        assert!(text.contains("  created before the failure: campaign_id 2385\n"));
        assert!(text.contains("  cleanup: campaign 2385 deleted\n"));
    }

    #[test]
    fn other_details_and_odd_bodies() {
        let body = json!({"error":{"code":"missing_scopes","message":"Required scopes missing: ads_management","missing_scopes":["ads_management"]}});
        assert!(render_api_error(400, &body).ends_with("  missing scopes: ads_management\n"));
        assert_eq!(
            render_api_error(502, &json!({"message":"Internal Server Error"})),
            "error: HTTP 502: Internal Server Error\n"
        );
        assert_eq!(
            render_api_error(503, &Value::String("<html>down</html>".into())),
            "error: HTTP 503: <html>down</html>\n"
        );
        assert_eq!(
            render_api_error(404, &Value::Null),
            "error: HTTP 404 Not Found\n"
        );
        let e = CliError::Api {
            status: 503,
            body: Value::Null,
        };
        assert_eq!(e.exit_code(), ExitCode::from(3));
    }
}
