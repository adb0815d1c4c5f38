//! The ads routes: the partner-style Marketing API proxy of seed 000
//! (`/v25.0/act_{id}/{edge}`, `/v25.0/{object_id}`), the one-call creation
//! `POST /v1/ads/ctwa`, the inventory `GET /v1/ads`, `GET /v1/ads/{ad_id}`, and what
//! each ad earned, `GET /v1/reports/ads` (the logic in [`crate::reports`]).
//!
//! The caller's API key picks the account; the account's Meta token is injected. An ad
//! account or object of another account answers 403 `id does not belong to your
//! account` before any Meta call.

use super::connect::json_body_limited;
use crate::ads::multipart;
use crate::ads::spec::{self, CtwaAdRequest};
use crate::ads::{self, AdsDeps, AdsError, CallKind, EDGES, FORWARDED_QUERY, NOT_YOURS};
use crate::auth::authorize;
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiRequest, ApiResponse};
use crate::store::RequestClaim;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use sha2::Digest;

/// The Graph API version the proxy speaks (seed 000).
pub const PROXY_VERSION: &str = "v25.0";
/// Bodies that may carry an image (`adimages`, `POST /v1/ads/ctwa`): below Lambda's
/// 6 MB request limit.
pub const MAX_IMAGE_BODY_BYTES: usize = 5 * 1024 * 1024;
/// How long an unfinished idempotent creation holds its key when the invocation's
/// deadline is unknown (not in Lambda).
const IDEMPOTENCY_LEASE_MS: i64 = 5 * 60 * 1000;

/// How long a key claimed by another request is held: as long as that request can still
/// be running. Every request of this function has the same `Timeout`, so this
/// invocation's own time (to its deadline, plus the margin) bounds the claimer's: a
/// claim older than that belongs to an invocation Lambda has ended (a crash, a
/// timeout), and a retry with the same key takes it over instead of waiting for
/// minutes.
fn idempotency_lease_ms(deadline: Option<std::time::Instant>) -> i64 {
    match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(std::time::Instant::now())
                + crate::http::INVOCATION_MARGIN;
            i64::try_from(left.as_millis()).unwrap_or(IDEMPOTENCY_LEASE_MS)
        }
        None => IDEMPOTENCY_LEASE_MS,
    }
}

pub async fn handle(deps: &AdsDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path).to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (segments.as_slice(), &req.method) {
        ([v, act, edge], m) if *v == PROXY_VERSION => match *m {
            Method::GET | Method::POST => proxy_edge(deps, &req, act, edge).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        ([v, id], m) if *v == PROXY_VERSION => match *m {
            Method::GET | Method::POST | Method::DELETE => proxy_object(deps, &req, id).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        (["v1", "ads", "ctwa"], &Method::POST) => create_ctwa(deps, &req).await,
        (["v1", "ads"], &Method::GET) => list(deps, &req).await,
        (["v1", "ads", id], &Method::GET) if *id != "ctwa" => detail(deps, &req, id).await,
        (["v1", "ads", ..], _) => Err(ApiError::MethodNotAllowed),
        (["v1", "reports", "ads"], &Method::GET) => report(deps, &req).await,
        (["v1", "reports", "ads"], _) => Err(ApiError::MethodNotAllowed),
        (["report"], &Method::GET) | (["report", "assets", _], &Method::GET) => page(&path),
        (["report"], _) | (["report", "assets", _], _) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// Meta's answer as the proxy's answer (scrubbed by the session: no paging link, no
/// token at any depth), with Meta's usage headers passed on.
fn passthrough(v: Value, usage: Vec<(&'static str, String)>) -> ApiResponse {
    let mut r = ApiResponse::json(StatusCode::OK, &v);
    r.headers.extend(usage);
    r
}

/// A Graph-style request body: a JSON object, form fields (values that read as JSON
/// objects, arrays or numbers are taken as such, like the Graph API does), or a
/// multipart form (Meta's usual image upload; a file only where `allow_file`).
async fn graph_body(
    req: &ApiRequest,
    limit: usize,
    allow_file: bool,
) -> ApiResult<Map<String, Value>> {
    let content_type = req.header("content-type").unwrap_or_default();
    let form = content_type.starts_with("application/x-www-form-urlencoded");
    let body: Map<String, Value> = if multipart::is_multipart(content_type) {
        multipart::graph_fields(&req.body, content_type, limit, allow_file)
            .await
            .map_err(|e| match e {
                multipart::MultipartError::TooLarge(limit) => ApiError::PayloadTooLarge { limit },
                other => ApiError::bad_request(other.to_string()),
            })?
    } else if form {
        if req.body.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        form_urlencoded::parse(&req.body)
            .map(|(k, v)| {
                let parsed = serde_json::from_str::<Value>(&v)
                    .ok()
                    .filter(|x| x.is_object() || x.is_array() || x.is_number());
                (k.into_owned(), parsed.unwrap_or_else(|| json!(v)))
            })
            .collect()
    } else {
        json_body_limited(req, limit)?
    };
    if body.contains_key("access_token") || body.contains_key("appsecret_proof") {
        return Err(ApiError::bad_request(
            "access_token and appsecret_proof are not accepted: the account's stored Meta token (and its proof) is used",
        ));
    }
    Ok(body)
}

fn forwarded_query(req: &ApiRequest) -> ApiResult<Vec<(&str, &str)>> {
    if req.query_param("access_token").is_some() {
        return Err(ApiError::bad_request(
            "access_token is not accepted: the account's stored Meta token is used",
        ));
    }
    Ok(req
        .query
        .iter()
        .filter(|(k, _)| FORWARDED_QUERY.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect())
}

/// `POST|GET /v25.0/act_{id}/{campaigns,adsets,adcreatives,ads,adimages}`.
async fn proxy_edge(
    deps: &AdsDeps,
    req: &ApiRequest,
    act: &str,
    edge: &str,
) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    if !act.starts_with("act_") {
        return Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        )));
    }
    if !EDGES.iter().any(|(e, _)| *e == edge) {
        return Err(ApiError::not_found(format!(
            "unknown edge {edge}: the proxy serves {}",
            EDGES.map(|(e, _)| e).join(", ")
        )));
    }
    let link = deps.own_ad_account(&account_id, act).await?;
    let act = link.ad_account_id;
    let s = deps.session(&account_id, req.deadline).await?;
    if req.method == Method::GET {
        let q = forwarded_query(req)?;
        let (v, usage) = s
            .call(
                &act,
                Method::GET,
                &format!("{act}/{edge}"),
                &q,
                None,
                CallKind::Read,
            )
            .await?;
        return Ok(passthrough(s.scrub(v), usage));
    }
    let limit = if edge == "adimages" {
        MAX_IMAGE_BODY_BYTES
    } else {
        super::connect::MAX_JSON_BODY_BYTES
    };
    let body = graph_body(req, limit, edge == "adimages").await?;
    // Objects this body points at must be the caller's too.
    let refs = [
        body.get("campaign_id"),
        body.get("adset_id"),
        body.get("creative").and_then(|c| c.get("creative_id")),
    ];
    for r in refs.into_iter().flatten() {
        let id = match r {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::bad_request(
                    "object ids must be strings of digits",
                ));
            }
        };
        if let Some(o) = deps.ads.ad_object(&id).await?
            && o.account_id != account_id
        {
            return Err(ApiError::Forbidden(NOT_YOURS.into()));
        }
    }
    let (v, usage) = s.create(&act, edge, &Value::Object(body)).await?;
    Ok(passthrough(s.scrub(v), usage))
}

/// `GET|POST|DELETE /v25.0/{object_id}`: read-back, update (publish), delete.
async fn proxy_object(deps: &AdsDeps, req: &ApiRequest, id: &str) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    if !spec::is_object_id(id) {
        return Err(ApiError::not_found(format!(
            "{id:?} is not a Graph object id; ad accounts are under /{PROXY_VERSION}/act_<id>/<edge>"
        )));
    }
    let body = match req.method {
        Method::POST => Some(Value::Object(
            graph_body(req, super::connect::MAX_JSON_BODY_BYTES, false).await?,
        )),
        _ => None,
    };
    let q = match req.method {
        Method::GET => forwarded_query(req)?,
        _ => Vec::new(),
    };
    let s = deps.session(&account_id, req.deadline).await?;
    let act = s.own_object(id).await?;
    let kind = match req.method {
        Method::GET => CallKind::Read,
        _ => CallKind::Update,
    };
    let (v, usage) = s
        .call(&act, req.method.clone(), id, &q, body.as_ref(), kind)
        .await?;
    Ok(passthrough(s.scrub(v), usage))
}

/// The key a request's body is known by (a retry must send the same bytes).
pub fn request_hash(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

/// `POST /v1/ads/ctwa`: the whole flow in one call, idempotent with `Idempotency-Key`.
async fn create_ctwa(deps: &AdsDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let body: CtwaAdRequest = json_body_limited(req, MAX_IMAGE_BODY_BYTES)?;
    let key = match req.header("idempotency-key") {
        None => None,
        Some(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(k.to_string())
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
    };
    // The ad account: named and owned, or the account's only one.
    let link = match &body.ad_account_id {
        Some(raw) => deps.own_ad_account(&account_id, raw).await?,
        None => {
            let mut links = deps.ads.ad_accounts(&account_id).await?;
            if links.len() != 1 {
                return Err(ApiError::bad_request(if links.is_empty() {
                    "no ad account is linked to this account: an operator links one (ctwa admin ad-account link)"
                } else {
                    "ad_account_id is required: this account has several ad accounts"
                }));
            }
            links.remove(0)
        }
    };
    let plan = body
        .plan(Some(&link.ad_account_id), link.page_id.as_deref())
        .map_err(ApiError::bad_request)?;
    if let Some(k) = &key {
        let hash = request_hash(&req.body);
        match deps
            .ads
            .claim_request(
                &account_id,
                k,
                &hash,
                crate::time::now_millis(),
                idempotency_lease_ms(req.deadline),
            )
            .await?
        {
            RequestClaim::New => {}
            RequestClaim::Done { status, body } => {
                let mut r = ApiResponse::json(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    &body,
                );
                r.headers.push(("idempotent-replayed", "true".into()));
                return Ok(r);
            }
            RequestClaim::InProgress => {
                return Err(ApiError::RequestInProgress);
            }
            RequestClaim::Mismatch => {
                return Err(ApiError::IdempotencyKeyReused);
            }
        }
    }
    // Whether Meta may hold something of this request (then the key keeps the answer).
    let mut reached_meta = false;
    let answer = match deps.session(&account_id, req.deadline).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(s) => match s.create_ctwa(plan).await {
            Ok(c) => {
                reached_meta = true;
                let mut v = json!({
                    "success": true,
                    "ad_account_id": c.ad_account_id,
                    "status": c.status,
                    "effective_status": c.effective_status,
                    "steps": c.steps,
                });
                if let (Value::Object(m), Value::Object(ids)) = (&mut v, json!(c.ids)) {
                    m.extend(ids);
                }
                ApiResponse::json(StatusCode::CREATED, &v)
            }
            Err(f) => {
                // Everything made was deleted: a retry with the key may try again.
                // Objects left behind (paused, unknown outcome): the key keeps the answer.
                reached_meta = f.unknown_outcome
                    || f.cleanup
                        .iter()
                        .any(|c| c.action == "paused" || c.action == "failed");
                if let Some(line) = ads::cleanup_metrics_line(&f, crate::time::now_millis()) {
                    // Raw stdout: CloudWatch reads embedded metrics from the log stream.
                    println!("{line}");
                }
                ApiError::from(*f).into_response()
            }
        },
    };
    if let Some(k) = &key {
        // Nothing reached Meta (not connected, held by the rate limit, refused at the
        // first step): the key is released so a retry can succeed. A failure to save
        // the answer does not hide it from the caller.
        let saved = if reached_meta {
            deps.ads
                .finish_request(&account_id, k, answer.status.as_u16(), &answer.body_json())
                .await
        } else {
            deps.ads.release_request(&account_id, k).await
        };
        if let Err(e) = saved {
            tracing::error!(error = %e, "could not record the Idempotency-Key outcome");
        }
    }
    Ok(answer)
}

/// `GET /v1/ads?ad_account_id=&limit=&after=`: `{ads, data, paging, ad_accounts}`.
async fn list(deps: &AdsDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let limit = match req.query_param("limit") {
        None => 25,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit must be from 1 to 100"))?,
    };
    let links = match req.query_param("ad_account_id") {
        Some(raw) => vec![deps.own_ad_account(&account_id, raw).await?],
        None => deps.ads.ad_accounts(&account_id).await?,
    };
    if links.is_empty() {
        return Ok(ApiResponse::json(
            StatusCode::OK,
            &json!({"ads": [], "data": [], "paging": {"after": null}, "ad_accounts": []}),
        ));
    }
    if let Some(a) = req.query_param("after")
        && (a.is_empty() || a.len() > 512)
    {
        return Err(ApiError::bad_request("after is not a cursor from this API"));
    }
    let s = deps.session(&account_id, req.deadline).await?;
    let (data, next) = ads::list_ads(&s, &links, limit, req.query_param("after")).await?;
    // `ads` is seed 001's shape (`ctwa ads | jq '.ads[]'`); `data` the Graph-style one
    // this API answered first. The same rows under both names.
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({
            "ads": data,
            "data": data,
            "paging": {"after": next},
            "ad_accounts": links.iter().map(|l| &l.ad_account_id).collect::<Vec<_>>(),
        }),
    ))
}

/// `GET /v1/ads/{ad_id}`.
async fn detail(deps: &AdsDeps, req: &ApiRequest, ad_id: &str) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    if !spec::is_object_id(ad_id) {
        return Err(ApiError::bad_request("the ad id must be digits"));
    }
    let s = deps.session(&account_id, req.deadline).await?;
    let v = ads::ad_detail(&s, ad_id).await.map_err(|e| match e {
        // Meta's "does not exist, or cannot be loaded" (100/33): not found here.
        AdsError::Meta(crate::graph::GraphError::Api { error, .. })
            if error.code == 100 && error.error_subcode == Some(33) =>
        {
            ApiError::not_found(format!("ad {ad_id} not found"))
        }
        other => other.into(),
    })?;
    Ok(ApiResponse::json(StatusCode::OK, &v))
}

/// `GET /v1/reports/ads?since=&until=&level=&ad_account_id=`: spend, clicks,
/// conversations, leads, purchases, revenue and ROAS per campaign, ad set or ad.
async fn report(deps: &AdsDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let q = crate::reports::ReportQuery::parse(
        req.query_param("since"),
        req.query_param("until"),
        req.query_param("level"),
    )?;
    let link = match req.query_param("ad_account_id") {
        Some(raw) => deps.own_ad_account(&account_id, raw).await?,
        None => {
            let mut links = deps.ads.ad_accounts(&account_id).await?;
            match links.len() {
                1 => links.remove(0),
                0 => {
                    return Err(ApiError::bad_request(
                        "no ad account is linked to this account: an operator links one (POST /v1/admin/accounts/{account_id}/ad-accounts)",
                    ));
                }
                n => {
                    return Err(ApiError::bad_request(format!(
                        "this account has {n} ad accounts ({}): say which with ad_account_id",
                        links
                            .iter()
                            .map(|l| l.ad_account_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
    };
    let s = deps.session(&account_id, req.deadline).await?;
    let v = crate::reports::ad_report(&s, deps.ads.as_ref(), &link, &q, crate::time::now_millis())
        .await?;
    Ok(ApiResponse::json(StatusCode::OK, &v))
}

/// `GET /report` and `GET /report/assets/{file}`: the report page and its assets
/// (public: the page asks for the key and sends it only to `GET /v1/reports/ads`), with
/// their cache policy and a content security policy that allows nothing but this origin.
fn page(path: &str) -> ApiResult<ApiResponse> {
    let a = crate::report_page::asset(path)
        .ok_or_else(|| ApiError::not_found(format!("no report asset {path}")))?;
    Ok(ApiResponse {
        status: StatusCode::OK,
        headers: vec![
            ("content-type", a.content_type.to_string()),
            ("cache-control", a.cache_control.to_string()),
            (
                "content-security-policy",
                crate::report_page::CONTENT_SECURITY_POLICY.to_string(),
            ),
            ("x-content-type-options", "nosniff".to_string()),
            ("referrer-policy", "no-referrer".to_string()),
            ("x-frame-options", "DENY".to_string()),
        ],
        body: a.body.to_vec(),
    })
}
