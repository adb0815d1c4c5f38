//! API Gateway HTTP API in front of the functions: route matching on the template's
//! routes, the payload format 2.0 event built as API Gateway builds it, and the
//! function's answer (or failure) mapped back as API Gateway maps it.

use super::runtime::InvokeError;
use super::template::Route;
use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value, json};

/// HTTP API's own limit on a request body (Lambda's 6 MB invocation limit comes after).
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Lambda's limit on a synchronous invocation's payload.
pub const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;

/// The route of a request and its path parameters. API Gateway answers 404
/// `{"message":"Not Found"}` for any method and path no route matches.
type RouteMatch<'a> = (&'a Route, Vec<(String, String)>);

pub fn match_route<'a>(routes: &'a [Route], method: &str, path: &str) -> Option<RouteMatch<'a>> {
    // Exact routes win over routes with parameters, like API Gateway's most specific match.
    let mut best: Option<(RouteMatch<'a>, usize)> = None;
    for r in routes
        .iter()
        .filter(|r| r.method == method || r.method == "ANY")
    {
        if let Some(params) = path_params(&r.path, path) {
            let literal = r.path.split('/').filter(|s| !s.starts_with('{')).count();
            if best.as_ref().is_none_or(|(_, l)| literal > *l) {
                best = Some(((r, params), literal));
            }
        }
    }
    best.map(|(m, _)| m)
}

fn path_params(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let (mut p, mut q) = (pattern.split('/'), path.split('/'));
    let mut params = Vec::new();
    loop {
        match (p.next(), q.next()) {
            (None, None) => return Some(params),
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with("+}") => {
                let mut rest = vec![b.to_string()];
                rest.extend(q.map(str::to_string));
                params.push((a[1..a.len() - 2].to_string(), rest.join("/")));
                return Some(params);
            }
            (Some(a), Some(b)) if a.starts_with('{') && a.ends_with('}') => {
                if b.is_empty() {
                    return None;
                }
                let decoded = percent_decode(b);
                params.push((a[1..a.len() - 1].to_string(), decoded));
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Content types API Gateway passes as text; any other body is base64-encoded.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct == "application/json"
        || ct.ends_with("+json")
        || ct == "application/xml"
        || ct.ends_with("+xml")
        || ct == "application/javascript"
}

pub struct EventInput<'a> {
    pub route: &'a Route,
    pub path_params: Vec<(String, String)>,
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: String,
    pub request_id: String,
    pub account: &'a str,
    pub api_id: &'a str,
    pub region: &'a str,
    pub now_ms: u64,
}

/// The payload format 2.0 event.
pub fn build_event(i: &EventInput<'_>) -> Value {
    let mut headers: Map<String, Value> = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for (name, value) in i.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let key = name.as_str().to_ascii_lowercase();
        if key == "cookie" {
            cookies.extend(
                v.split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Value::String(c.to_string())),
            );
            continue;
        }
        match headers.get_mut(&key) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                headers.insert(key, Value::String(v));
            }
        }
    }
    let domain = format!("{}.execute-api.{}.amazonaws.com", i.api_id, i.region);
    headers
        .entry("host")
        .or_insert_with(|| Value::String(domain.clone()));
    let user_agent = headers
        .get("user-agent")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut event = json!({
        "version": "2.0",
        "routeKey": i.route.key(),
        "rawPath": i.raw_path,
        "rawQueryString": i.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": i.account,
            "apiId": i.api_id,
            "domainName": domain,
            "domainPrefix": i.api_id,
            "http": {
                "method": i.method,
                "path": i.raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": i.source_ip,
                "userAgent": user_agent,
            },
            "requestId": i.request_id,
            "routeKey": i.route.key(),
            "stage": "$default",
            "time": clf_time(i.now_ms),
            "timeEpoch": i.now_ms,
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = Value::Array(cookies);
    }
    if !i.raw_query.is_empty() {
        let mut q: Map<String, Value> = Map::new();
        for (k, v) in form_urlencoded::parse(i.raw_query.as_bytes()) {
            match q.get_mut(k.as_ref()) {
                Some(Value::String(prev)) => {
                    prev.push(',');
                    prev.push_str(&v);
                }
                _ => {
                    q.insert(k.into_owned(), Value::String(v.into_owned()));
                }
            }
        }
        event["queryStringParameters"] = Value::Object(q);
    }
    if !i.path_params.is_empty() {
        event["pathParameters"] = Value::Object(
            i.path_params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
    }
    if !i.body.is_empty() {
        let ct = i.headers.get("content-type").and_then(|v| v.to_str().ok());
        match std::str::from_utf8(i.body) {
            Ok(text) if is_text(ct) => event["body"] = Value::String(text.to_string()),
            _ => {
                event["body"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(i.body));
                event["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    event
}

/// `12/Mar/2020:19:03:58 +0000`, as in `requestContext.time`.
fn clf_time(ms: u64) -> String {
    let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64).unwrap_or_default();
    dt.format("%d/%b/%Y:%H:%M:%S +0000").to_string()
}

/// An answer for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl HttpAnswer {
    pub fn message(status: u16, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(json!({ "message": message }).to_string()),
        }
    }
}

/// What API Gateway answers for a failed invocation: 500 for a function error or a
/// crashed runtime, 503 for a timed-out one.
pub fn failure_answer(e: &InvokeError) -> HttpAnswer {
    match e {
        InvokeError::Timeout(_) => HttpAnswer::message(503, "Service Unavailable"),
        _ => HttpAnswer::message(500, "Internal Server Error"),
    }
}

/// The function's answer mapped as API Gateway maps a payload 2.0 response: a JSON
/// object with `statusCode` is a response; anything else is a 200 with that body.
pub fn map_response(payload: &[u8]) -> HttpAnswer {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) => return HttpAnswer::message(500, "Internal Server Error"),
    };
    let Some(obj) = v.as_object().filter(|o| o.contains_key("statusCode")) else {
        return HttpAnswer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(payload.to_vec()),
        };
    };
    let Some(status) = obj["statusCode"]
        .as_u64()
        .filter(|s| (100..=599).contains(s))
    else {
        return HttpAnswer::message(500, "Internal Server Error");
    };
    let mut headers = Vec::new();
    if let Some(h) = obj.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            headers.push((k.clone(), v));
        }
    }
    if let Some(h) = obj.get("multiValueHeaders").and_then(Value::as_object) {
        for (k, vs) in h {
            for v in vs.as_array().into_iter().flatten() {
                headers.push((k.clone(), v.as_str().unwrap_or_default().to_string()));
            }
        }
    }
    for c in obj
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = c.as_str() {
            headers.push(("set-cookie".into(), c.to_string()));
        }
    }
    let body = match obj.get("body") {
        Some(Value::String(s)) if obj.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(b) => Bytes::from(b),
                Err(_) => return HttpAnswer::message(500, "Internal Server Error"),
            }
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(Value::Null) | None => Bytes::new(),
        Some(other) => Bytes::from(other.to_string()),
    };
    HttpAnswer {
        status: status as u16,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &str, p: &str) -> Route {
        Route {
            method: m.into(),
            path: p.into(),
            function: "F".into(),
        }
    }

    #[test]
    fn routes_like_api_gateway() {
        let routes = vec![
            route("GET", "/v1/conversations/{id}"),
            route("GET", "/v1/conversations"),
            route("GET", "/v25.0/{object_id}"),
            route("GET", "/v25.0/{ad_account_id}/{edge}"),
        ];
        let (r, p) = match_route(&routes, "GET", "/v1/conversations/c%201").unwrap();
        assert_eq!(r.path, "/v1/conversations/{id}");
        assert_eq!(p, vec![("id".to_string(), "c 1".to_string())]);
        assert!(match_route(&routes, "POST", "/v1/conversations").is_none());
        assert!(match_route(&routes, "GET", "/v1/conversations/").is_none());
        assert_eq!(
            match_route(&routes, "GET", "/v25.0/act_1/ads")
                .unwrap()
                .0
                .path,
            "/v25.0/{ad_account_id}/{edge}"
        );
    }

    #[test]
    fn event_shape() {
        let r = route("POST", "/webhook");
        let mut h = HeaderMap::new();
        h.insert("Content-Type", "application/json".parse().unwrap());
        h.append("X-Multi", "a".parse().unwrap());
        h.append("X-Multi", "b".parse().unwrap());
        h.insert("Cookie", "a=1; b=2".parse().unwrap());
        let ev = build_event(&EventInput {
            route: &r,
            path_params: vec![],
            method: "POST",
            raw_path: "/webhook",
            raw_query: "a=1&a=2&b=x%20y",
            headers: &h,
            body: b"{\"x\":1}",
            source_ip: "127.0.0.1".into(),
            request_id: "rid".into(),
            account: "123456789012",
            api_id: "local",
            region: "us-east-1",
            now_ms: 1_583_348_638_390,
        });
        assert_eq!(ev["routeKey"], "POST /webhook");
        assert_eq!(ev["headers"]["x-multi"], "a,b");
        assert_eq!(ev["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(ev["queryStringParameters"]["a"], "1,2");
        assert_eq!(ev["queryStringParameters"]["b"], "x y");
        assert_eq!(ev["body"], "{\"x\":1}");
        assert_eq!(ev["isBase64Encoded"], false);
        assert_eq!(ev["requestContext"]["time"], "04/Mar/2020:19:03:58 +0000");
        let ev = build_event(&EventInput {
            headers: &HeaderMap::new(),
            body: &[0xff, 0x00],
            raw_query: "",
            ..EventInput {
                route: &r,
                path_params: vec![],
                method: "POST",
                raw_path: "/webhook",
                raw_query: "",
                headers: &h,
                body: b"",
                source_ip: "127.0.0.1".into(),
                request_id: "rid".into(),
                account: "1",
                api_id: "local",
                region: "us-east-1",
                now_ms: 0,
            }
        });
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], "/wA=");
        assert!(ev.get("queryStringParameters").is_none());
    }

    #[test]
    fn responses() {
        let a = map_response(br#"{"statusCode":201,"headers":{"content-type":"text/plain"},"body":"aGk=","isBase64Encoded":true,"cookies":["s=1"]}"#);
        assert_eq!(a.status, 201);
        assert_eq!(&a.body[..], b"hi");
        assert!(a.headers.contains(&("set-cookie".into(), "s=1".into())));
        let a = map_response(br#"{"ok":true}"#);
        assert_eq!(a.status, 200);
        assert_eq!(map_response(b"not json").status, 500);
        assert_eq!(
            failure_answer(&InvokeError::Timeout(std::time::Duration::from_secs(1))).status,
            503
        );
    }
}

/// API Gateway's stage throttling: a token bucket per route (`burst` tokens, refilled at
/// `rate` per second); a request finding it empty is answered 429 `Too Many Requests`
/// without invoking the function.
pub struct Throttle {
    limit: crate::lambda::template::RouteThrottle,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl Throttle {
    pub fn new(limit: crate::lambda::template::RouteThrottle) -> Self {
        Self {
            limit,
            buckets: Default::default(),
        }
    }

    /// Takes a token of `route`'s bucket; `false` when there is none.
    pub fn admit(&self, route: &str) -> bool {
        let now = std::time::Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = f64::from(self.limit.burst);
        let (tokens, at) = b.entry(route.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.limit.rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn each_route_has_its_own_bucket_refilled_at_the_rate() {
        let t = Throttle::new(crate::lambda::template::RouteThrottle {
            burst: 3,
            rate: 1000.0,
        });
        assert!((0..3).all(|_| t.admit("POST /a")));
        // Refilled at 1,000/s: within a few ms there is a token again, but not four.
        let slow = Throttle::new(crate::lambda::template::RouteThrottle {
            burst: 2,
            rate: 0.001,
        });
        assert!(slow.admit("GET /x") && slow.admit("GET /x"));
        assert!(!slow.admit("GET /x"));
        assert!(slow.admit("GET /y"), "another route's bucket is full");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(t.admit("POST /a"));
    }
}
