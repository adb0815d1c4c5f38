//! Routes (phone number id -> account) that hold against a typo and a tenant's lie.
//!
//! - **Link time.** A phone number id is linked to an account only if Meta lists it
//!   under the account's WABA (`GET /{waba_id}/phone_numbers` with the account's own
//!   token, with its `appsecret_proof`): another business's number is refused (409
//!   `phone_number_not_in_waba`, nothing stored), and so is a WABA the token cannot see
//!   (409 `waba_not_reachable`). When Meta cannot be asked yet (the account has not
//!   connected Meta, which is always so at account creation, or has no WABA), the route
//!   is linked `pending`.
//! - **Pending routes are captured**: a new business must not lose the clicks of its
//!   first days. The runtime guard is the webhook's WABA: Meta sends a number's webhooks
//!   under the WABA that owns it (`entry.id`), so a message whose WABA is not the
//!   route's account's is quarantined ([`admit`]), never attributed. A pending route is
//!   verified when the account connects Meta (`exchange-code`) or when the operator asks
//!   (`POST /v1/admin/accounts/{account_id}/phone-numbers/verify`); one Meta does not
//!   list under the WABA becomes `rejected`, and its messages are quarantined too.
//! - **Moves and removals** are the operator's, conditional on the route read (no
//!   read-then-write race), each with its audit record in the same transaction. A warm
//!   capture instance reuses a route it read for up to its `route_ttl` (60 s), so a
//!   move or removal reaches every capture within a minute.

use crate::domain::{Account, Channel, Route};
use crate::graph::GraphError;
use crate::meta::connection::{ConnectError, MetaDeps};
use crate::store::{
    Accounts, Actor, AuditRecord, InboxItem, Quarantined, RouteRecord, RouteStatus, RouteStore,
    StoreError,
};
use serde_json::json;
use std::collections::HashSet;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Meta's list of the account's WABA does not hold the phone number id.
    #[error(
        "phone number id {phone_number_id} is not a number of WhatsApp Business Account {waba_id} (Meta's list of the account's WABA): nothing was linked"
    )]
    NotInWaba {
        phone_number_id: String,
        waba_id: String,
    },
    /// The account's token cannot see its WABA (Meta's code 100).
    #[error(
        "the account's Meta token cannot see WhatsApp Business Account {waba_id}: its phone numbers cannot be checked (fix the account's WABA or reconnect Meta); nothing was linked"
    )]
    WabaNotReachable { waba_id: String, error: GraphError },
    /// The account's token cannot reach the Page / Instagram account (Meta's code 100).
    #[error(
        "the account's Meta token cannot reach {noun} {id}: it is not the business's, or the token was not granted on it (reconnect with it selected); nothing was linked",
        noun = route.noun(),
        id = route.business_id()
    )]
    ObjectNotReachable { route: Route },
    #[error(transparent)]
    Meta(#[from] ConnectError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness for the audit record's id: nothing was written.
    #[error("no audit record id: {0}")]
    AuditId(#[from] getrandom::Error),
}

/// What capture does with an item of a linked route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Capture,
    /// Kept for the operator, never attributed: `waba_mismatch` or `route_rejected`.
    Quarantine(&'static str),
}

/// Whether an item may be captured into its route's account: not for a rejected route,
/// nor for a Cloud API webhook whose WABA (`entry.id`) is not the route's account's.
pub fn admit(rec: &RouteRecord, item: &InboxItem) -> Admission {
    if rec.status == RouteStatus::Rejected {
        return Admission::Quarantine("route_rejected");
    }
    if item.channel == Channel::Cloud
        && let (Some(got), Some(want)) = (&item.waba_id, &rec.waba_id)
        && got != want
    {
        return Admission::Quarantine("waba_mismatch");
    }
    Admission::Capture
}

/// The quarantine record of an item held back from `rec`'s account.
pub fn quarantined(rec: &RouteRecord, item: &InboxItem, reason: &str) -> Quarantined {
    Quarantined {
        item: item.clone(),
        account_id: rec.account_id.clone(),
        expected_waba_id: rec.waba_id.clone(),
        reason: reason.to_string(),
    }
}

/// What Meta says about an account's WABA now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WabaNumbers {
    /// The phone number ids Meta lists under the account's WABA.
    Listed(HashSet<String>),
    /// Meta cannot be asked now (why): the route stays pending.
    CannotAsk(String),
}

/// The account's own token to ask Meta with, or why Meta cannot be asked yet (the
/// route then stays pending with that reason).
async fn token_to_ask(
    meta: &MetaDeps,
    account: &Account,
) -> Result<Result<crate::graph::Token, String>, RouteError> {
    match meta.token(&account.id).await {
        Ok(t) => Ok(Ok(t)),
        Err(ConnectError::NotConnected) => Ok(Err(
            "Meta is not connected for the account yet: verified when it connects".into(),
        )),
        Err(ConnectError::TokenInvalid(_)) => Ok(Err(
            "the account's Meta token is expired or revoked: verified when it reconnects".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The phone numbers of the account's WABA, asked with the account's own token.
pub async fn waba_numbers(meta: &MetaDeps, account: &Account) -> Result<WabaNumbers, RouteError> {
    let Some(waba_id) = &account.waba_id else {
        return Ok(WabaNumbers::CannotAsk(
            "the account has no WABA to check its phone numbers against".into(),
        ));
    };
    let token = match token_to_ask(meta, account).await? {
        Ok(t) => t,
        Err(why) => return Ok(WabaNumbers::CannotAsk(why)),
    };
    match meta.graph.phone_numbers(waba_id, &token).await {
        Ok(numbers) => Ok(WabaNumbers::Listed(
            numbers.into_iter().map(|p| p.id).collect(),
        )),
        Err(e) if e.is_token_error() => {
            meta.mark_broken(&account.id, &token, &e).await;
            Ok(WabaNumbers::CannotAsk(
                "Meta refused the account's token: verified when it reconnects".into(),
            ))
        }
        Err(e) if e.code() == Some(100) => Err(RouteError::WabaNotReachable {
            waba_id: waba_id.clone(),
            error: e,
        }),
        Err(e) => Err(ConnectError::Meta(e).into()),
    }
}

/// `rec` as Meta's answer makes it: verified or rejected when listed, pending (with
/// the reason) when Meta cannot be asked.
fn judged(mut rec: RouteRecord, numbers: &WabaNumbers, now_ms: i64) -> RouteRecord {
    match numbers {
        WabaNumbers::Listed(ids) => {
            rec.checked_at_ms = Some(now_ms);
            if ids.contains(rec.route.business_id()) {
                rec.status = RouteStatus::Verified;
                rec.note = None;
            } else {
                rec.status = RouteStatus::Rejected;
                rec.note = Some(format!(
                    "Meta does not list it under WABA {}",
                    rec.waba_id.as_deref().unwrap_or("-")
                ));
            }
        }
        WabaNumbers::CannotAsk(why) => rec.note = Some(why.clone()),
    }
    rec
}

/// The route `rec` would be for `account` after asking Meta: refused when Meta's list
/// of the WABA does not hold it.
async fn checked_for(
    meta: &MetaDeps,
    account: &Account,
    rec: RouteRecord,
    now_ms: i64,
) -> Result<RouteRecord, RouteError> {
    let numbers = waba_numbers(meta, account).await?;
    let rec = judged(rec, &numbers, now_ms);
    if rec.status == RouteStatus::Rejected {
        return Err(RouteError::NotInWaba {
            phone_number_id: rec.route.business_id().to_string(),
            waba_id: account.waba_id.clone().unwrap_or_default(),
        });
    }
    Ok(rec)
}

fn route_detail(rec: &RouteRecord) -> serde_json::Value {
    json!({
        "account_id": rec.account_id,
        "waba_id": rec.waba_id,
        "status": rec.status.as_str(),
        "note": rec.note,
    })
}

/// A Page / Instagram account route as Meta answers it for `account`: verified when the
/// account's token reaches the object (`GET /{id}?fields=id`), rejected when Meta says
/// it cannot (code 100), pending (with the reason) when Meta cannot be asked yet.
async fn object_judged(
    meta: &MetaDeps,
    account: &Account,
    mut rec: RouteRecord,
    now_ms: i64,
) -> Result<RouteRecord, RouteError> {
    let token = match token_to_ask(meta, account).await? {
        Ok(t) => t,
        Err(why) => {
            rec.note = Some(why);
            return Ok(rec);
        }
    };
    let reply = meta
        .graph
        .marketing(
            http::Method::GET,
            rec.route.business_id(),
            &[("fields", "id")],
            None,
            &token,
            None,
        )
        .await;
    match reply.result {
        Ok(_) => {
            rec.status = RouteStatus::Verified;
            rec.checked_at_ms = Some(now_ms);
            rec.note = None;
            Ok(rec)
        }
        Err(e) if e.code() == Some(100) => {
            rec.status = RouteStatus::Rejected;
            rec.checked_at_ms = Some(now_ms);
            rec.note = Some(format!(
                "the account's token does not reach this {}: {}",
                rec.route.noun(),
                e
            ));
            Ok(rec)
        }
        Err(e) => Err(ConnectError::Meta(e).into()),
    }
}

/// [`object_judged`], refusing a route Meta says the token cannot reach.
async fn object_checked(
    meta: &MetaDeps,
    account: &Account,
    rec: RouteRecord,
    now_ms: i64,
) -> Result<RouteRecord, RouteError> {
    let rec = object_judged(meta, account, rec, now_ms).await?;
    if rec.status == RouteStatus::Rejected {
        return Err(RouteError::ObjectNotReachable { route: rec.route });
    }
    Ok(rec)
}

/// Links `route` to `account` (checked with Meta when it can be), with `actor`'s audit
/// record. `Conflict` when the route is taken.
pub async fn link(
    meta: &MetaDeps,
    routes: &dyn RouteStore,
    account: &Account,
    route: Route,
    actor: &Actor,
    now_ms: i64,
) -> Result<RouteRecord, RouteError> {
    let pending = RouteRecord::pending(route, account, now_ms);
    let rec = match &pending.route {
        Route::Page(_) | Route::Instagram(_) => {
            object_checked(meta, account, pending, now_ms).await?
        }
        _ => checked_for(meta, account, pending, now_ms).await?,
    };
    let audit = AuditRecord::by(
        actor,
        Some(&rec.account_id),
        "route.link",
        &rec.route.key(),
        route_detail(&rec),
        now_ms,
    )?;
    routes.link_route(&rec, &audit).await?;
    Ok(rec)
}

/// Moves the route `current` to `to` (checked with Meta against `to`'s WABA when it can
/// be). `None` when the route changed after it was read (nothing written).
pub async fn move_to(
    meta: &MetaDeps,
    routes: &dyn RouteStore,
    current: &RouteRecord,
    to: &Account,
    actor: &Actor,
    now_ms: i64,
) -> Result<Option<RouteRecord>, RouteError> {
    let next = checked_for(
        meta,
        to,
        RouteRecord::pending(current.route.clone(), to, now_ms),
        now_ms,
    )
    .await?;
    // One record in each account's trail: the number left one and joined the other.
    let detail = json!({"from": route_detail(current), "to": route_detail(&next)});
    let mut audits = vec![AuditRecord::by(
        actor,
        Some(&next.account_id),
        "route.move",
        &current.route.key(),
        detail,
        now_ms,
    )?];
    if current.account_id != next.account_id {
        // The same record (one id: the route's trail shows it once) in the other list.
        let mut left = audits[0].clone();
        left.account_id = Some(current.account_id.clone());
        audits.push(left);
    }
    Ok(routes
        .move_route(current, &next, &audits)
        .await?
        .then_some(next))
}

/// Removes the route `current`; `false` when it changed after it was read.
pub async fn remove(
    routes: &dyn RouteStore,
    current: &RouteRecord,
    actor: &Actor,
    now_ms: i64,
) -> Result<bool, RouteError> {
    let audit = AuditRecord::by(
        actor,
        Some(&current.account_id),
        "route.remove",
        &current.route.key(),
        json!({"from": route_detail(current)}),
        now_ms,
    )?;
    Ok(routes.remove_route(current, &audit).await?)
}

/// Checks the account's phone number, Page and Instagram account routes that are not
/// verified with Meta now: each becomes verified or rejected (with its audit record), or
/// stays pending with the reason. Answers every such route of the account as it stands
/// after.
pub async fn verify_pending(
    meta: &MetaDeps,
    accounts: &dyn Accounts,
    routes: &dyn RouteStore,
    account: &Account,
    actor: &Actor,
    now_ms: i64,
) -> Result<Vec<RouteRecord>, RouteError> {
    let mut out = Vec::new();
    let mut numbers: Option<WabaNumbers> = None;
    // Phone number ids (a Sinch app is not a WABA's number), then the Pages and
    // Instagram accounts, each asked of Meta on its own.
    let phone_routes = account
        .phone_number_ids
        .iter()
        .map(|p| Route::PhoneNumberId(p.clone()));
    let object_routes = account
        .page_ids
        .iter()
        .map(|p| Route::Page(p.clone()))
        .chain(
            account
                .instagram_account_ids
                .iter()
                .map(|i| Route::Instagram(i.clone())),
        );
    for route in phone_routes.chain(object_routes) {
        let Some(rec) = accounts.route_record(&route).await? else {
            continue;
        };
        if rec.account_id != account.id || rec.status == RouteStatus::Verified {
            out.push(rec);
            continue;
        }
        let next = if let Route::Page(_) | Route::Instagram(_) = route {
            object_judged(meta, account, rec.clone(), now_ms).await?
        } else {
            if numbers.is_none() {
                numbers = Some(match waba_numbers(meta, account).await {
                    Ok(n) => n,
                    Err(RouteError::WabaNotReachable { waba_id, error }) => WabaNumbers::CannotAsk(
                        format!("the account's token cannot see WABA {waba_id}: {error}"),
                    ),
                    Err(e) => return Err(e),
                });
            }
            let Some(numbers) = numbers.as_ref() else {
                continue;
            };
            judged(rec.clone(), numbers, now_ms)
        };
        if next == rec {
            out.push(rec);
            continue;
        }
        let audit = AuditRecord::by(
            actor,
            Some(&account.id),
            "route.verify",
            &route.key(),
            route_detail(&next),
            now_ms,
        )?;
        if routes.set_route_status(&next, &audit).await? {
            if next.status == RouteStatus::Rejected {
                tracing::warn!(route = %route.key(), account_id = %account.id, note = ?next.note, "Meta does not confirm this route for the account: rejected, its messages are quarantined");
            }
            out.push(next);
        } else if let Some(now) = accounts.route_record(&route).await? {
            out.push(now);
        }
    }
    Ok(out)
}

/// A route as the admin API answers it: named by its own field (`phone_number_id`,
/// `page_id`, `instagram_account_id`).
pub fn route_view(rec: &RouteRecord) -> serde_json::Value {
    json!({
        rec.route.field(): rec.route.business_id(),
        "account_id": rec.account_id,
        "waba_id": rec.waba_id,
        "status": rec.status.as_str(),
        "linked_at": crate::time::rfc3339_millis(rec.linked_at_ms),
        "checked_at": rec.checked_at_ms.map(crate::time::rfc3339_millis),
        "note": rec.note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;
    use crate::store::InboxKind;

    fn rec(status: RouteStatus, waba: Option<&str>) -> RouteRecord {
        RouteRecord {
            route: Route::PhoneNumberId("777".into()),
            account_id: "acme".into(),
            waba_id: waba.map(str::to_string),
            status,
            linked_at_ms: 1,
            checked_at_ms: None,
            note: None,
        }
    }

    fn item(channel: Channel, waba: Option<&str>) -> InboxItem {
        InboxItem {
            id: "wa:1".into(),
            kind: InboxKind::Message,
            channel,
            route: Route::PhoneNumberId("777".into()),
            waba_id: waba.map(str::to_string),
            payload: "{}".into(),
            contact: None,
            received_at_ms: 1,
            expires_at: 0,
        }
    }

    #[test]
    fn a_foreign_waba_or_a_rejected_route_is_quarantined() {
        use Admission::*;
        let cloud = |w| item(Channel::Cloud, w);
        for status in [RouteStatus::Pending, RouteStatus::Verified] {
            assert_eq!(admit(&rec(status, Some("W1")), &cloud(Some("W1"))), Capture);
            assert_eq!(
                admit(&rec(status, Some("W1")), &cloud(Some("W2"))),
                Quarantine("waba_mismatch")
            );
            // Nothing to compare: an account without a WABA, a webhook without entry.id.
            assert_eq!(admit(&rec(status, None), &cloud(Some("W2"))), Capture);
            assert_eq!(admit(&rec(status, Some("W1")), &cloud(None)), Capture);
        }
        assert_eq!(
            admit(&rec(RouteStatus::Rejected, Some("W1")), &cloud(Some("W1"))),
            Quarantine("route_rejected")
        );
        assert_eq!(
            admit(
                &rec(RouteStatus::Pending, Some("W1")),
                &item(Channel::Sinch, Some("W2"))
            ),
            Capture
        );
    }

    #[test]
    fn meta_decides_verified_or_rejected_and_cannot_ask_keeps_pending() {
        let listed = WabaNumbers::Listed(["777".to_string()].into());
        let r = judged(rec(RouteStatus::Pending, Some("W1")), &listed, 5);
        assert_eq!(
            (r.status, r.checked_at_ms),
            (RouteStatus::Verified, Some(5))
        );
        let other = WabaNumbers::Listed(["888".to_string()].into());
        let r = judged(rec(RouteStatus::Pending, Some("W1")), &other, 5);
        assert_eq!(r.status, RouteStatus::Rejected);
        let r = judged(
            rec(RouteStatus::Pending, Some("W1")),
            &WabaNumbers::CannotAsk("later".into()),
            5,
        );
        assert_eq!(
            (r.status, r.note.as_deref()),
            (RouteStatus::Pending, Some("later"))
        );
    }
}
