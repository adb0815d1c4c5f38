//! The phone number routes of the admin function (operator key), the rules in
//! [`crate::routes`]:
//!
//! - `POST /v1/admin/accounts/{account_id}/phone-numbers` `{"phone_number_id"}`: link
//!   (checked with Meta when the account is connected; pending otherwise).
//! - `POST /v1/admin/accounts/{account_id}/pages` `{"page_id"}` and
//!   `POST /v1/admin/accounts/{account_id}/instagram-accounts` `{"instagram_account_id"}`:
//!   link a Facebook Page (Messenger) or an Instagram professional account (Instagram
//!   Direct), verified with the account's token when it is connected.
//! - `POST /v1/admin/accounts/{account_id}/phone-numbers/verify`: check the account's
//!   pending and rejected routes with Meta now.
//! - `GET /v1/admin/phone-numbers/{phone_number_id}`: the route, its audit trail and
//!   the messages quarantined for it.
//! - `POST /v1/admin/phone-numbers/{phone_number_id}/move` `{"account_id",
//!   "from_account_id"?}`: give it to another account.
//! - `DELETE /v1/admin/phone-numbers/{phone_number_id}[?account_id=]`: unlink it.
//!
//! Every change leaves an audit record (who: the operator's key; what; when) in the
//! account's trail (`GET /v1/admin/audit?account_id=`); a route's own trail is shown
//! with it.

use super::admin::{AdminDeps, account_id, existing_account, manager};
use super::connect::json_body;
use crate::domain::Route;
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiRequest, ApiResponse};
use crate::ids::{PageId, PhoneNumberId};
use crate::routes::route_view;
use crate::store::{Actor, RouteRecord};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

/// Audit records and quarantined items one answer shows.
const SHOWN: usize = 50;

pub(super) async fn handle(
    deps: &AdminDeps,
    req: &ApiRequest,
    segments: &[&str],
) -> ApiResult<ApiResponse> {
    // A wrong method is 405 and an unknown path 404 whoever asks; every route here
    // takes the operator key, checked before anything is read.
    let operator = || operator_actor(deps, req);
    match (segments, &req.method) {
        (["v1", "admin", "accounts", id, "phone-numbers"], &Method::POST) => {
            link(deps, req, id, LinkKind::PhoneNumber, &operator().await?).await
        }
        (["v1", "admin", "accounts", id, "pages"], &Method::POST) => {
            link(deps, req, id, LinkKind::Page, &operator().await?).await
        }
        (["v1", "admin", "accounts", id, "instagram-accounts"], &Method::POST) => {
            link(deps, req, id, LinkKind::Instagram, &operator().await?).await
        }
        (["v1", "admin", "accounts", id, "phone-numbers", "verify"], &Method::POST) => {
            verify(deps, req, id, &operator().await?).await
        }
        (["v1", "admin", "phone-numbers", p], &Method::GET) => {
            operator().await?;
            show(deps, p).await
        }
        (["v1", "admin", "phone-numbers", p], &Method::DELETE) => {
            remove(deps, req, p, &operator().await?).await
        }
        (["v1", "admin", "phone-numbers", p, "move"], &Method::POST) => {
            move_route(deps, req, p, &operator().await?).await
        }
        (
            [
                "v1",
                "admin",
                "accounts",
                _,
                "phone-numbers" | "pages" | "instagram-accounts",
            ]
            | ["v1", "admin", "accounts", _, "phone-numbers", "verify"]
            | ["v1", "admin", "phone-numbers", _]
            | ["v1", "admin", "phone-numbers", _, "move"],
            _,
        ) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method, req.path
        ))),
    }
}

/// The operator behind the request, as audit records name it (the operator-only rule
/// is [`crate::auth::ROUTE_ACCESS`]'s, checked by `manager`).
async fn operator_actor(deps: &AdminDeps, req: &ApiRequest) -> ApiResult<Actor> {
    Ok(manager(deps, req).await?.actor())
}

fn phone_route(raw: &str) -> ApiResult<Route> {
    let p = PhoneNumberId::parse(raw).map_err(|e| e.in_field("phone_number_id"))?;
    Ok(Route::PhoneNumberId(p.into_string()))
}

async fn current_route(deps: &AdminDeps, route: &Route) -> ApiResult<RouteRecord> {
    deps.accounts.route_record(route).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "phone number id {} is not linked to any account",
            route.business_id()
        ))
    })
}

fn changed_meanwhile(route: &Route) -> ApiError {
    ApiError::Conflict(format!(
        "phone number id {} changed while this request ran: read it again and retry",
        route.business_id()
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    phone_number_id: String,
}

/// What a link route links: a phone number id (WhatsApp), a Facebook Page (Messenger
/// webhooks, `object: "page"`) or an Instagram professional account (`object:
/// "instagram"`).
#[derive(Debug, Clone, Copy)]
enum LinkKind {
    PhoneNumber,
    Page,
    Instagram,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageBody {
    page_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstagramBody {
    instagram_account_id: String,
}

/// Links a route to the account ([`crate::routes::link`]): checked with the account's
/// token when Meta can be asked (another WABA's number, or a Page / Instagram account
/// the token does not reach, is refused, 409, nothing linked), pending otherwise.
async fn link(
    deps: &AdminDeps,
    req: &ApiRequest,
    id: &str,
    kind: LinkKind,
    actor: &Actor,
) -> ApiResult<ApiResponse> {
    let route = match kind {
        LinkKind::PhoneNumber => {
            let body: LinkBody = json_body(req)?;
            phone_route(&body.phone_number_id)?
        }
        LinkKind::Page => {
            let b: PageBody = json_body(req)?;
            Route::Page(
                PageId::parse(&b.page_id)
                    .map_err(|e| e.in_field("page_id"))?
                    .into_string(),
            )
        }
        LinkKind::Instagram => {
            let b: InstagramBody = json_body(req)?;
            Route::Instagram(
                PageId::parse(&b.instagram_account_id)
                    .map_err(|e| e.in_field("instagram_account_id"))?
                    .into_string(),
            )
        }
    };
    let account = existing_account(deps, &account_id(id)?).await?;
    let rec = crate::routes::link(
        &deps.meta,
        deps.routes.as_ref(),
        &account,
        route,
        actor,
        crate::time::now_millis(),
    )
    .await?;
    Ok(ApiResponse::json(
        StatusCode::CREATED,
        &json!({"route": route_view(&rec)}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

async fn verify(
    deps: &AdminDeps,
    req: &ApiRequest,
    id: &str,
    actor: &Actor,
) -> ApiResult<ApiResponse> {
    let _: EmptyBody = json_body(req)?;
    let account = existing_account(deps, &account_id(id)?).await?;
    let routes = crate::routes::verify_pending(
        &deps.meta,
        deps.accounts.as_ref(),
        deps.routes.as_ref(),
        &account,
        actor,
        crate::time::now_millis(),
    )
    .await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"account_id": account.id, "routes": routes.iter().map(route_view).collect::<Vec<_>>()}),
    ))
}

async fn show(deps: &AdminDeps, raw: &str) -> ApiResult<ApiResponse> {
    let route = phone_route(raw)?;
    let rec = deps.accounts.route_record(&route).await?;
    let mut audit = deps.audit.target_audit_records(&route.key(), SHOWN).await?;
    // A move is one record kept in both accounts' lists.
    audit.dedup_by(|a, b| a.id == b.id);
    let held = deps.routes.quarantined(&route, SHOWN).await?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({
            "phone_number_id": route.business_id(),
            "route": rec.as_ref().map(route_view),
            "audit": audit.iter().map(|a| a.view()).collect::<Vec<_>>(),
            "quarantined": held.iter().map(|q| json!({
                "inbox_id": q.item.id,
                "kind": q.item.kind.as_str(),
                "reason": q.reason,
                "account_id": q.account_id,
                "webhook_waba_id": q.item.waba_id,
                "expected_waba_id": q.expected_waba_id,
                "received_at": crate::time::rfc3339_millis(q.item.received_at_ms),
            })).collect::<Vec<_>>(),
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    account_id: String,
    /// The account the operator believes holds it now: refused (409) if not.
    #[serde(default)]
    from_account_id: Option<String>,
}

/// 409 when the route is not where the operator believes it is.
fn expect_owner(rec: &RouteRecord, expected: Option<&str>) -> ApiResult<()> {
    match expected {
        Some(e) if e != rec.account_id => Err(ApiError::Conflict(format!(
            "phone number id {} belongs to account {}, not {e}",
            rec.route.business_id(),
            rec.account_id
        ))),
        _ => Ok(()),
    }
}

async fn move_route(
    deps: &AdminDeps,
    req: &ApiRequest,
    raw: &str,
    actor: &Actor,
) -> ApiResult<ApiResponse> {
    let body: MoveBody = json_body(req)?;
    let route = phone_route(raw)?;
    let to = existing_account(deps, &account_id(&body.account_id)?).await?;
    let current = current_route(deps, &route).await?;
    expect_owner(&current, body.from_account_id.as_deref())?;
    if current.account_id == to.id {
        return Err(ApiError::Conflict(format!(
            "phone number id {} already belongs to account {}",
            route.business_id(),
            to.id
        )));
    }
    let moved = crate::routes::move_to(
        &deps.meta,
        deps.routes.as_ref(),
        &current,
        &to,
        actor,
        crate::time::now_millis(),
    )
    .await?
    .ok_or_else(|| changed_meanwhile(&route))?;
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"route": route_view(&moved), "from_account_id": current.account_id}),
    ))
}

async fn remove(
    deps: &AdminDeps,
    req: &ApiRequest,
    raw: &str,
    actor: &Actor,
) -> ApiResult<ApiResponse> {
    let route = phone_route(raw)?;
    let current = current_route(deps, &route).await?;
    expect_owner(&current, req.query_param("account_id"))?;
    if !crate::routes::remove(
        deps.routes.as_ref(),
        &current,
        actor,
        crate::time::now_millis(),
    )
    .await?
    {
        return Err(changed_meanwhile(&route));
    }
    Ok(ApiResponse::json(
        StatusCode::OK,
        &json!({"phone_number_id": route.business_id(), "removed": true, "account_id": current.account_id}),
    ))
}
