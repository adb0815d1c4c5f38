//! The read API: `GET /v1/conversations?phone=` (or `?user_id=`) and
//! `GET /v1/conversations/{id}`, answering the captured first touch (`metadata`, as in
//! seed 002) and the click history, newest first; `GET /v1/automatic-events`, the
//! purchases and leads Meta detected in the account's chats. A key sees only its own
//! account: any other id answers 404, as if it did not exist.

use crate::auth::authorize;
use crate::domain::{Click, Conversation, Phone};
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiRequest, ApiResponse};
use crate::store::{
    Accounts, AutomaticEventQuery, Conversations, customer_keys, is_automatic_event_cursor,
};
use crate::time::rfc3339_millis;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Clicks returned per conversation.
pub const CLICK_HISTORY_LIMIT: usize = 100;

pub struct ApiDeps {
    pub accounts: Arc<dyn Accounts>,
    pub conversations: Arc<dyn Conversations>,
}

pub async fn handle(deps: &ApiDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path).to_string();
    if path == "/v1/automatic-events" {
        let result = match req.method {
            Method::GET => list_automatic_events(deps, &req).await,
            _ => Err(ApiError::MethodNotAllowed),
        };
        return result.unwrap_or_else(ApiError::into_response);
    }
    let result = match path.strip_prefix("/v1/conversations") {
        Some("") => match req.method {
            Method::GET => list_conversations(deps, &req).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        Some(rest) if rest.starts_with('/') && !rest[1..].contains('/') => match req.method {
            Method::GET => get_conversation(deps, &req, &rest[1..]).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

async fn list_conversations(deps: &ApiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let scoped = |v: &str, name: &str| -> ApiResult<String> {
        crate::domain::scoped_user_id(v)
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be the sender.id of Meta's webhook (1 to 128 letters, digits, _ - .)"
                ))
            })
    };
    let customer_key = match (
        req.query_param("phone"),
        req.query_param("user_id"),
        req.query_param("psid"),
        req.query_param("igsid"),
    ) {
        (Some(p), _, _, _) => Phone::parse(p)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .customer_key(),
        (None, Some(u), _, _) if !u.trim().is_empty() && u.len() <= 256 => {
            format!("u:{}", u.trim())
        }
        (None, None, Some(p), _) => crate::domain::psid_key(&scoped(p, "psid")?),
        (None, None, None, Some(i)) => crate::domain::igsid_key(&scoped(i, "igsid")?),
        _ => {
            return Err(ApiError::bad_request(
                "query parameter phone (E.164), user_id, psid (Messenger) or igsid (Instagram) is required",
            ));
        }
    };
    // Every spelling WhatsApp may use for this number (Mexico's 521, Brazil's ninth
    // digit, ...) and the linked identity (phone <-> user id): one customer.
    let mut convs = Vec::new();
    let keys = customer_keys(deps.conversations.as_ref(), &account_id, &customer_key).await?;
    for key in keys {
        convs.extend(
            deps.conversations
                .conversations_for_customer(&account_id, &key)
                .await?,
        );
    }
    let mut out = Vec::with_capacity(convs.len());
    for c in convs {
        let clicks = deps
            .conversations
            .clicks_for_conversation(&c.id, CLICK_HISTORY_LIMIT)
            .await?;
        out.push(conversation_view(&c, &clicks));
    }
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({ "conversations": out }),
    ))
}

async fn get_conversation(deps: &ApiDeps, req: &ApiRequest, id: &str) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let not_found = || ApiError::not_found(format!("conversation {id} not found"));
    if !crate::domain::is_conversation_id(id) {
        return Err(not_found());
    }
    let conv = match deps.conversations.get_conversation(id).await? {
        Some(c) if c.account_id == account_id => c,
        _ => return Err(not_found()),
    };
    let clicks = deps
        .conversations
        .clicks_for_conversation(id, CLICK_HISTORY_LIMIT)
        .await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &conversation_view(&conv, &clicks),
    ))
}

/// A time bound of a query: unix seconds, or an RFC 3339 time; in millis.
fn time_param(req: &ApiRequest, name: &str) -> ApiResult<Option<i64>> {
    let Some(raw) = req.query_param(name) else {
        return Ok(None);
    };
    let t = raw.trim();
    let ms = if !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<i64>().ok().map(|s| s * 1000)
    } else {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|d| d.timestamp_millis())
            .filter(|ms| *ms >= 0)
    };
    ms.map(Some).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} must be unix seconds or an RFC 3339 time (e.g. 2026-11-01T00:00:00Z)"
        ))
    })
}

/// `GET /v1/automatic-events?since=&until=&event_name=&limit=&cursor=`: newest first.
async fn list_automatic_events(deps: &ApiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let limit = super::list_limit(req)?;
    let event_name = match req.query_param("event_name").map(str::trim) {
        None => None,
        Some(n) if n.eq_ignore_ascii_case("purchase") => Some("Purchase".to_string()),
        Some(n) if n.eq_ignore_ascii_case("leadsubmitted") || n.eq_ignore_ascii_case("lead") => {
            Some("LeadSubmitted".to_string())
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "event_name must be Purchase or LeadSubmitted (Meta's automatic events)",
            ));
        }
    };
    let cursor = req.query_param("cursor").map(str::to_string);
    if cursor
        .as_deref()
        .is_some_and(|c| !is_automatic_event_cursor(c))
    {
        return Err(ApiError::bad_request("invalid cursor"));
    }
    let query = AutomaticEventQuery {
        since_ms: time_param(req, "since")?,
        until_ms: time_param(req, "until")?,
        event_name,
        limit,
        cursor,
    };
    let (events, next) = deps
        .conversations
        .automatic_events(&account_id, &query)
        .await?;
    let rows: Vec<Value> = events.iter().map(crate::capi::automatic::view).collect();
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"automatic_events": rows, "next_cursor": next}),
    ))
}

fn put(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        m.insert(k.into(), Value::String(v.clone()));
    }
}

/// The public shape of a conversation.
pub fn conversation_view(c: &Conversation, clicks: &[Click]) -> Value {
    let mut metadata = Map::new();
    if let Some(ft) = &c.first_touch {
        let r = &ft.referral;
        // Messenger and Instagram clicks have no click id: the ad is `ctwa_source_id`.
        put(&mut metadata, "ctwa_clid", &ft.ctwa_clid);
        metadata.insert(
            "ctwa_captured_at".into(),
            json!(rfc3339_millis(ft.captured_at_ms)),
        );
        metadata.insert(
            "ctwa_clicked_at".into(),
            json!(rfc3339_millis(ft.clicked_at_ms)),
        );
        metadata.insert("ctwa_message_id".into(), json!(ft.message_id));
        put(&mut metadata, "ctwa_source_id", &r.source_id);
        put(&mut metadata, "ctwa_source_url", &r.source_url);
        put(&mut metadata, "ctwa_source_type", &r.source_type);
        put(&mut metadata, "ctwa_headline", &r.headline);
        put(&mut metadata, "ctwa_body", &r.body);
        put(&mut metadata, "ctwa_media_type", &r.media_type);
        put(&mut metadata, "ctwa_image_url", &r.image_url);
        put(&mut metadata, "ctwa_image_id", &r.image_id);
        put(&mut metadata, "ctwa_video_url", &r.video_url);
        put(&mut metadata, "ctwa_thumbnail_url", &r.thumbnail_url);
        put(&mut metadata, "ctwa_welcome_message", &r.welcome_message);
        put(&mut metadata, "ctwa_ref", &r.ref_param);
        put(&mut metadata, "ctwa_post_id", &r.post_id);
        if !r.odd_fields.is_empty() {
            metadata.insert("ctwa_odd_fields".into(), json!(r.odd_fields));
        }
    }
    let clicks: Vec<Value> = clicks.iter().map(click_view).collect();
    json!({
        "id": c.id,
        "channel": c.channel.as_str(),
        "business_id": c.business_id,
        "customer": c.customer,
        "created_at": rfc3339_millis(c.created_at_ms),
        "updated_at": rfc3339_millis(c.updated_at_ms),
        "metadata": metadata,
        "clicks": clicks,
    })
}

pub fn click_view(k: &Click) -> Value {
    let mut v = json!({
        "message_id": k.message_id,
        "clicked_at": rfc3339_millis(k.clicked_at_ms),
        "ctwa_clid": k.referral.ctwa_clid,
    });
    if k.time_unverified {
        // Dated outside its signed callback's window: history, never a touch.
        v["time_unverified"] = json!(true);
    }
    if let (Value::Object(m), Ok(Value::Object(r))) = (&mut v, serde_json::to_value(&k.referral)) {
        for (key, val) in r {
            m.entry(key).or_insert(val);
        }
    }
    v
}
