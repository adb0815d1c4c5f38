//! The conversions function's routes: `POST /v1/conversions`, `POST
//! /v1/conversions/batch`, `GET /v1/conversions` (the audit trail) and `POST
//! /v1/triggers` (seed 001's configured events).

use crate::auth::authorize;
use crate::capi::RecordContext;
use crate::capi::conversion::{
    AccountContext, ConversionBody, Prepared, Ready, TriggerBody, TriggerMatch, Waiting, context,
    prepare, valid_test_event_code,
};
use crate::capi::event::{EventName, new_event_id};
use crate::capi::{
    Attribution, BATCH_CONCURRENCY, CapiDeps, FailureReason, OUTCOME_UNKNOWN, SendResult,
    deliver_by, delivery_end, new_record, new_waiting_record,
};
use crate::error::{ApiError, ApiResult};
use crate::handlers::connect::json_body;
use crate::http::{ApiRequest, ApiResponse};
use crate::store::{EventRecord, EventStatus, dedup_key};
use crate::time::rfc3339_millis;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// Events per batch request: Meta's limit per request. The conversions function's
/// `Timeout` (29 s) holds a full batch with room to spare: resolving the clicks and
/// saving the rows run [`BATCH_CONCURRENCY`] at a time, the one request to Meta is given
/// up in time to save its outcomes before the invocation ends (`delivery_end`), and a
/// 1,000-event batch against a Meta answering in 300 ms takes a few seconds end to end
/// (`scripts/bench.sh --only-batch`, `tests/bigbatch.rs`, README "Benchmarks").
pub const MAX_BATCH: usize = 1000;
/// A batch body may be large: up to 1000 events.
const MAX_BATCH_BODY_BYTES: usize = 2 * 1024 * 1024;

pub async fn handle(deps: &CapiDeps, req: ApiRequest) -> ApiResponse {
    let path = super::route_path(&req.path);
    let result = match (&req.method, path) {
        (&Method::POST, "/v1/conversions") => send_one(deps, &req).await,
        (&Method::POST, "/v1/conversions/batch") => send_batch(deps, &req).await,
        (&Method::GET, "/v1/conversions") => list(deps, &req).await,
        (&Method::POST, "/v1/triggers") => trigger(deps, &req).await,
        (_, "/v1/conversions" | "/v1/conversions/batch" | "/v1/triggers") => {
            Err(ApiError::MethodNotAllowed)
        }
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn result_view(r: &SendResult, attribution: Option<&Attribution>) -> (StatusCode, Value) {
    let rec = &r.record;
    let mut v = json!({
        "success": rec.status == EventStatus::Delivered,
        "status": rec.status.as_str(),
        "event_id": rec.event_id,
        "event_name": rec.event_name,
        "ctwa_clid": (!rec.ctwa_clid.is_empty()).then_some(&rec.ctwa_clid),
        "events_received": rec.events_received,
        "fbtrace_id": rec.fbtrace_id,
        "duplicate": r.duplicate,
        "attempts": rec.attempts,
        "warnings": rec.warnings,
    });
    if let Some(a) = attribution {
        v["attribution"] = json!({
            "model": a.model,
            "conversation_id": a.click.conversation_id,
            "clicked_at": rfc3339_millis(a.click.clicked_at_ms),
            "message_id": a.click.message_id,
            "source_id": a.click.referral.source_id,
        });
    } else if let Some(c) = &rec.conversation_id {
        v["attribution"] =
            json!({"model": "last_click", "conversation_id": c, "source_id": rec.ad_id});
    }
    if rec.error.is_some() && rec.status != EventStatus::NoClick {
        v["error"] = rec.error.clone().unwrap_or(Value::Null);
    }
    let status = match rec.status {
        EventStatus::Delivered => StatusCode::OK,
        EventStatus::WaitingForClick => {
            v["reason"] = json!("waiting_for_click");
            v["wait_until"] = json!(rec.next_attempt_at_ms.map(rfc3339_millis));
            v["message"] = json!(
                "no click of this customer yet (capture may still be on its way): the event is kept and sent with this event_id when the click is captured; if none comes by wait_until, nothing is sent"
            );
            StatusCode::ACCEPTED
        }
        EventStatus::NoClick => {
            // The seed 003 no-op, after the wait: the reason is in the record.
            v["reason"] = rec
                .error
                .as_ref()
                .and_then(|e| e.get("reason"))
                .cloned()
                .unwrap_or(Value::Null);
            StatusCode::OK
        }
        EventStatus::Unknown => {
            // Sent, unanswered: never sent again (see `capi::OUTCOME_UNKNOWN`).
            v["reason"] = json!(OUTCOME_UNKNOWN);
            StatusCode::ACCEPTED
        }
        EventStatus::Pending | EventStatus::InFlight => {
            v["retry"] = json!(
                "Meta is unavailable: the event is kept and re-sent automatically with the same event_id"
            );
            StatusCode::ACCEPTED
        }
        EventStatus::Failed => match FailureReason::of(rec) {
            Some(reason) if reason.needs_reconnect() => StatusCode::UNAUTHORIZED,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        },
    };
    (status, v)
}

async fn send_prepared(
    deps: &CapiDeps,
    req: &ApiRequest,
    ctx: &AccountContext,
    items: Vec<(Prepared, Option<String>)>,
    now_ms: i64,
) -> ApiResult<Vec<(StatusCode, Value)>> {
    // Which items go to Meta, and their records.
    let mut out: Vec<Option<(StatusCode, Value)>> = Vec::new();
    let mut records: Vec<EventRecord> = Vec::new();
    let mut slots: Vec<(usize, Option<Attribution>)> = Vec::new();
    for (prepared, batch_test_code) in items {
        match prepared {
            Prepared::NoClick(reason) => out.push(Some((
                StatusCode::OK,
                json!({"success": false, "reason": reason}),
            ))),
            Prepared::Wait(w) => {
                let Waiting {
                    conversion,
                    dataset_id,
                    customer_key,
                    conversation_id,
                    test_event_code,
                } = *w;
                let rec = new_waiting_record(
                    deps,
                    &conversion,
                    RecordContext {
                        account_id: ctx.account_id.clone(),
                        dataset_id,
                        conversation_id,
                        test_event_code: test_event_code.or(batch_test_code),
                        warnings: Vec::new(),
                        ad_id: None,
                    },
                    customer_key,
                    now_ms,
                );
                slots.push((out.len(), None));
                out.push(None);
                records.push(rec);
            }
            Prepared::Ready(ready) => {
                let Ready {
                    conversion,
                    dataset_id,
                    attribution,
                    warnings,
                    test_event_code,
                } = *ready;
                let rec = new_record(
                    deps,
                    &conversion,
                    RecordContext {
                        account_id: ctx.account_id.clone(),
                        dataset_id,
                        conversation_id: Some(attribution.click.conversation_id.clone()),
                        test_event_code: test_event_code.or(batch_test_code),
                        warnings,
                        ad_id: attribution.click.referral.source_id.clone(),
                    },
                    now_ms,
                );
                slots.push((out.len(), Some(attribution)));
                out.push(None);
                records.push(rec);
            }
        }
    }
    if !records.is_empty() {
        let end = delivery_end(&deps.policy, req.deadline);
        let results = deliver_by(deps, records, end).await?;
        for ((slot, attribution), r) in slots.into_iter().zip(results) {
            // A duplicate answers what was sent the first time, nothing recomputed.
            // A waiting conversion sent at once (its click landed meanwhile) has no
            // attribution here: the record's conversation and ad are answered.
            let fresh = attribution.filter(|_| !r.duplicate);
            out[slot] = Some(result_view(&r, fresh.as_ref()));
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Value::Null)))
        .collect())
}

async fn send_one(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let body: ConversionBody = json_body(req)?;
    let now_ms = crate::time::now_millis();
    // Validate what needs no account state first: a bad request is a 400 even when Meta
    // is not connected yet.
    EventName::parse(&body.event_name).map_err(ApiError::bad_request)?;
    let ctx = context(deps, &account_id).await?;
    let prepared = prepare(deps, &ctx, body, now_ms).await?;
    let mut results = send_prepared(deps, req, &ctx, vec![(prepared, None)], now_ms).await?;
    let (status, v) = results
        .pop()
        .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Value::Null));
    Ok(ApiResponse::json(status, &v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    events: Vec<Value>,
    #[serde(default, alias = "testCode", alias = "testEventCode")]
    test_event_code: Option<String>,
}

async fn send_batch(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    if req.body.len() > MAX_BATCH_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BATCH_BODY_BYTES,
        });
    }
    if req.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object: {\"events\": [...]}",
        ));
    }
    let body: BatchBody = serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {e} (expected {{\"events\": [...]}})"
        ))
    })?;
    if body.events.is_empty() || body.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "events must hold 1 to {MAX_BATCH} events"
        )));
    }
    valid_test_event_code(body.test_event_code.as_deref())?;
    let now_ms = crate::time::now_millis();
    let ctx = context(deps, &account_id).await?;
    let mut answers: Vec<Option<Value>> = vec![None; body.events.len()];
    let mut to_send = Vec::new();
    let mut indexes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Parsed and checked for repeats in order; then each event's click resolved,
    // BATCH_CONCURRENCY at a time (a 1,000-event batch would otherwise spend most of
    // its function's time on one lookup after another), the answer in the batch's order.
    let parsed: Vec<(usize, Result<ConversionBody, ApiError>)> = body
        .events
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let is_object = raw.is_object();
            let parsed = match serde_json::from_value::<ConversionBody>(raw) {
                _ if !is_object => Err(ApiError::bad_request("each event must be a JSON object")),
                Err(e) => Err(ApiError::bad_request(format!("invalid event: {e}"))),
                Ok(mut b) => {
                    if b.event_id.is_none() {
                        b.event_id = Some(new_event_id());
                    }
                    // A test send and a production send of one id are kept apart (as
                    // they are across requests): the key is the id and the test code.
                    let test_code = b.test_event_code.as_ref().or(body.test_event_code.as_ref());
                    let event_id = b.event_id.as_deref().unwrap_or_default().trim();
                    if seen.insert(dedup_key(event_id, test_code.map(String::as_str))) {
                        Ok(b)
                    } else {
                        Err(ApiError::bad_request(
                            "event_id appears twice in this batch (with the same test_event_code)",
                        ))
                    }
                }
            };
            (i, parsed)
        })
        .collect();
    let ctx = &ctx;
    let resolving: Vec<_> = parsed
        .into_iter()
        .map(|(i, parsed)| async move {
            let prepared = match parsed {
                Ok(b) => prepare(deps, ctx, b, now_ms).await.map_err(ApiError::from),
                Err(e) => Err(e),
            };
            (i, prepared)
        })
        .collect();
    for (i, prepared) in crate::run_bounded_in_order(resolving, BATCH_CONCURRENCY).await {
        match prepared {
            Ok(p) => {
                indexes.push(i);
                to_send.push((p, body.test_event_code.clone()));
            }
            Err(e) => {
                let (status, error) = e.into_parts();
                answers[i] = Some(
                    json!({"index": i, "success": false, "status": "invalid", "http_status": status.as_u16(), "error": error}),
                );
            }
        }
    }
    let results = send_prepared(deps, req, ctx, to_send, now_ms).await?;
    for (i, (status, mut v)) in indexes.into_iter().zip(results) {
        v["index"] = json!(i);
        v["http_status"] = json!(status.as_u16());
        answers[i] = Some(v);
    }
    let answers: Vec<Value> = answers
        .into_iter()
        .map(|a| a.unwrap_or(Value::Null))
        .collect();
    let count = |status: &str| answers.iter().filter(|a| a["status"] == status).count();
    let (delivered, unknown) = (count("delivered"), count("unknown"));
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"results": answers, "delivered": delivered, "unknown": unknown, "total": answers.len()}),
    ))
}

async fn list(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let limit = super::list_limit(req)?;
    let status = req
        .query_param("status")
        .map(|s| {
            EventStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("status must be delivered, pending, failed, in_flight, waiting_for_click, no_click or unknown")
            })
        })
        .transpose()?;
    let cursor = req.query_param("cursor");
    if let Some(c) = cursor
        && (c.len() > 256
            || c.split_once('|').is_none_or(|(a, b)| {
                a.is_empty() || b.is_empty() || !a.bytes().take(15).all(|x| x.is_ascii_digit())
            }))
    {
        return Err(ApiError::bad_request("invalid cursor"));
    }
    let (events, next) = deps
        .events
        .list_events(&account_id, limit, cursor, status)
        .await?;
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "timestamp": rfc3339_millis(e.created_at_ms),
                "event_id": e.event_id,
                "event_name": e.event_name,
                "event_time": e.event_time,
                "conversation_id": e.conversation_id,
                "ctwa_clid": (!e.ctwa_clid.is_empty()).then_some(&e.ctwa_clid),
                "status": e.status.as_str(),
                "attempts": e.attempts,
                "events_received": e.events_received,
                "fbtrace_id": e.fbtrace_id,
                "duration_ms": e.duration_ms,
                "error": e.error,
                "warnings": e.warnings,
                "test_event_code": e.test_event_code,
                "updated_at": rfc3339_millis(e.updated_at_ms),
            })
        })
        .collect();
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"events": rows, "next_cursor": next}),
    ))
}

/// Fires the configured event whose trigger name matches (seed 001's CAPI config).
async fn trigger(deps: &CapiDeps, req: &ApiRequest) -> ApiResult<ApiResponse> {
    let account_id = authorize(deps.accounts.as_ref(), req).await?;
    let b: TriggerBody = json_body(req)?;
    let settings = deps.settings.get_capi_or_default(&account_id).await?;
    let name = b.trigger.trim().to_string();
    let body = match b.resolve(&settings) {
        TriggerMatch::Unknown => {
            return Ok(ApiResponse::json(
                StatusCode::OK,
                &json!({"success": false, "reason": "unknown_trigger", "trigger": name}),
            ));
        }
        TriggerMatch::Disabled { event_name } => {
            return Ok(ApiResponse::json(
                StatusCode::OK,
                &json!({"success": false, "reason": "trigger_disabled", "trigger": name, "event_name": event_name}),
            ));
        }
        TriggerMatch::Fire(body) => *body,
    };
    let now_ms = crate::time::now_millis();
    let ctx = context(deps, &account_id).await?;
    let prepared = prepare(deps, &ctx, body, now_ms).await?;
    let mut results = send_prepared(deps, req, &ctx, vec![(prepared, None)], now_ms).await?;
    let (status, mut v) = results
        .pop()
        .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Value::Null));
    v["trigger"] = json!(name);
    Ok(ApiResponse::json(status, &v))
}
