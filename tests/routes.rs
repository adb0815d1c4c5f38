//! Routes that hold against a typo and a tenant's lie (issue 14, item 3), written as the
//! attack: linking another business's phone number id, a webhook of another WABA for a
//! routed number, and the operator's moves and removals with their audit records.

use ctwa_shared::auth::{Scope, generate_key};
use ctwa_shared::domain::Account;
use ctwa_shared::meta::connection::REQUIRED_SCOPES;
use ctwa_shared::store::Accounts;
use ctwa_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Another business: its WABA and the number Meta lists under it.
const OTHER_WABA: &str = "300000000000001";
const OTHER_PNID: &str = "999000111222";
/// A second number of the fixture's own WABA.
const OWN_PNID: &str = "111000222333";

fn now() -> i64 {
    ctwa_shared::time::now_secs()
}

/// A Cloud API webhook for `pnid` sent under the WABA `waba` (`entry.id`).
fn webhook_from(waba: &str, pnid: &str, wamid: &str, wa_id: &str) -> String {
    ctwa_webhook(pnid, wamid, wa_id, Some(&format!("CLID-{wamid}")), now())
        .replace(FIXTURE_WABA, waba)
}

async fn phone_number(app: &TestApp, op: &str, pnid: &str) -> Value {
    let (s, v) = app
        .request("GET", &format!("/v1/admin/phone-numbers/{pnid}"), op, None)
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn actions(v: &Value) -> Vec<String> {
    v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect()
}

/// An account of this stack with its own key, created straight in the table.
async fn account_with_key(app: &TestApp, id: &str, waba: &str, pnids: &[&str]) -> String {
    app.stack
        .data
        .create_account(&Account {
            id: id.into(),
            name: id.into(),
            waba_id: Some(waba.into()),
            phone_number_ids: pnids.iter().map(|p| p.to_string()).collect(),
            sinch_app_id: None,
            page_ids: Vec::new(),
            instagram_account_ids: Vec::new(),
            created_at_ms: 0,
        })
        .await
        .unwrap();
    let (key, rec) = generate_key(id, &Scope::ALL, 0).unwrap();
    app.stack.data.put_api_key(&rec).await.unwrap();
    key
}

/// The attack: with the fixture account connected, the operator (a typo, or the
/// tenant's word) links another business's phone number id. Meta's list of the
/// account's WABA does not hold it: refused at link time, nothing stored, and that
/// business's customers stay out of the account. The account's own number is linked
/// verified.
#[tokio::test]
async fn another_business_phone_number_is_refused_at_link_time() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    app.connect_meta(&app.api_key).await;
    app.sim.sim.set_phone_numbers(
        FIXTURE_WABA,
        &json!([{"id": FIXTURE_PNID}, {"id": OWN_PNID, "display_phone_number": "+1 555-010-0002"}]),
    );
    app.sim
        .sim
        .set_phone_numbers(OTHER_WABA, &json!([{"id": OTHER_PNID}]));
    let link = format!("/v1/admin/accounts/{}/phone-numbers", app.account_id);

    let (s, v) = app
        .request(
            "POST",
            &link,
            &op,
            Some(json!({"phone_number_id": OTHER_PNID})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "phone_number_not_in_waba", "{v}");
    assert_eq!(v["error"]["waba_id"], FIXTURE_WABA);
    let shown = phone_number(&app, &op, OTHER_PNID).await;
    assert_eq!(shown["route"], Value::Null, "{shown}");
    assert!(actions(&shown).is_empty(), "{shown}");
    let (_, acct) = app
        .request(
            "GET",
            &format!("/v1/admin/accounts/{}", app.account_id),
            &op,
            None,
        )
        .await;
    assert_eq!(acct["account"]["phone_number_ids"], json!([FIXTURE_PNID]));
    // The other business's customer does not land in the account.
    let (s, _) = app
        .post_webhook(webhook_from(
            OTHER_WABA,
            OTHER_PNID,
            "wamid.other1",
            "16505550101",
        ))
        .await;
    assert_eq!(s, 200);
    settled("unrouted", 1, || app.count_unrouted()).await;
    assert_eq!(app.click_count().await, 0);

    // The account's own number: verified with Meta, linked, audited.
    let (s, v) = app
        .request(
            "POST",
            &link,
            &op,
            Some(json!({"phone_number_id": OWN_PNID})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["route"]["status"], "verified", "{v}");
    let shown = phone_number(&app, &op, OWN_PNID).await;
    assert_eq!(shown["route"]["account_id"], app.account_id.as_str());
    assert_eq!(actions(&shown), ["route.link"]);
    assert_eq!(shown["audit"][0]["actor"]["kind"], "operator", "{shown}");
    assert!(
        shown["audit"][0]["actor"]["key_id"]
            .as_str()
            .unwrap()
            .starts_with("key_"),
        "{shown}"
    );
    // Twice: taken.
    let (s, v) = app
        .request(
            "POST",
            &link,
            &op,
            Some(json!({"phone_number_id": OWN_PNID})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    // A WABA the account's token cannot see: Meta's 100/33, refused.
    let blind = account_with_key(&app, "blind", OTHER_WABA, &[]).await;
    let code = app.oauth_code(&REQUIRED_SCOPES, FIXTURE_WABA);
    let (s, v) = app
        .post_json("/v1/oauth/exchange-code", &blind, json!({"code": code}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .request(
            "POST",
            "/v1/admin/accounts/blind/phone-numbers",
            &op,
            Some(json!({"phone_number_id": OTHER_PNID})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "waba_not_reachable", "{v}");
    assert_eq!(v["error"]["meta_error"]["error_subcode"], 33, "{v}");
    // Every phone_numbers call carried the account token's appsecret_proof.
    let calls: Vec<Value> = app
        .sim
        .sim
        .requests()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap_or("").ends_with("/phone_numbers"))
        .collect();
    // Two links of other numbers, the repeated link (checked before it is refused as
    // taken), the blind account's link.
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(
        calls.iter().all(|r| r["appsecret_proof"] == "valid"),
        "{calls:?}"
    );
    app.stack.stop().await;
}

/// A route linked before Meta was connected is pending (and captured); connecting
/// checks it: a number of the account's WABA becomes verified, another business's
/// number rejected, and the rejected route's messages are quarantined.
#[tokio::test]
async fn pending_routes_are_verified_when_the_account_connects() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    const W2: &str = "300000000000002";
    let key = account_with_key(&app, "later", W2, &["222000111", OTHER_PNID]).await;
    let shown = phone_number(&app, &op, OTHER_PNID).await;
    assert_eq!(shown["route"]["status"], "pending", "{shown}");
    app.sim
        .sim
        .set_phone_numbers(W2, &json!([{"id": "222000111"}]));
    let code = app.oauth_code(&REQUIRED_SCOPES, W2);
    let (s, v) = app
        .post_json("/v1/oauth/exchange-code", &key, json!({"code": code}))
        .await;
    assert_eq!(s, 200, "{v}");
    let own = phone_number(&app, &op, "222000111").await;
    assert_eq!(own["route"]["status"], "verified", "{own}");
    let lied = phone_number(&app, &op, OTHER_PNID).await;
    assert_eq!(lied["route"]["status"], "rejected", "{lied}");
    assert_eq!(actions(&lied), ["route.verify"]);
    assert_eq!(lied["audit"][0]["actor"]["kind"], "connect", "{lied}");
    assert_eq!(lied["audit"][0]["account_id"], "later", "{lied}");
    // A message for the rejected route (even under the account's WABA): quarantined.
    app.post_webhook(webhook_from(W2, OTHER_PNID, "wamid.rej1", "16505550202"))
        .await;
    let held = eventually("quarantined", Duration::from_secs(30), || async {
        let v = phone_number(&app, &op, OTHER_PNID).await;
        (v["quarantined"].as_array().unwrap().len() == 1).then_some(v)
    })
    .await;
    assert_eq!(held["quarantined"][0]["reason"], "route_rejected");
    assert_eq!(app.click_count().await, 0);
    // The operator's verify route answers the same states, and changes nothing more.
    let (s, v) = app
        .request(
            "POST",
            "/v1/admin/accounts/later/phone-numbers/verify",
            &op,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let states: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["verified", "rejected"], "{v}");
    app.stack.stop().await;
}

/// The attack at runtime: a webhook for the fixture's routed number but sent under
/// another business's WABA (`entry.id`). Quarantined: no click, no conversation, shown
/// to the operator; the same number's webhook under the account's WABA is captured.
#[tokio::test]
async fn a_webhook_from_another_waba_is_quarantined_not_captured() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    let (s, v) = app
        .post_webhook(webhook_from(
            OTHER_WABA,
            FIXTURE_PNID,
            "wamid.foreign1",
            "16505550303",
        ))
        .await;
    assert_eq!((s, v["stored"].as_i64()), (200, Some(1)), "{v}");
    let held = eventually("quarantined", Duration::from_secs(30), || async {
        let v = phone_number(&app, &op, FIXTURE_PNID).await;
        (!v["quarantined"].as_array().unwrap().is_empty()).then_some(v)
    })
    .await;
    let q = &held["quarantined"][0];
    assert_eq!(q["reason"], "waba_mismatch", "{held}");
    assert_eq!(q["webhook_waba_id"], OTHER_WABA);
    assert_eq!(q["expected_waba_id"], FIXTURE_WABA);
    assert_eq!(q["account_id"], app.account_id.as_str());
    assert_eq!(q["inbox_id"], "wa:wamid.foreign1");
    settled("no click of the foreign webhook", 0, || app.click_count()).await;
    assert_eq!(app.conversation_count().await, 0);
    let (_, v) = app
        .get("/v1/conversations?phone=16505550303", &app.api_key)
        .await;
    assert_eq!(v["conversations"], json!([]), "{v}");
    // The account's own webhooks still land.
    app.post_webhook(webhook_from(
        FIXTURE_WABA,
        FIXTURE_PNID,
        "wamid.own1",
        "16505550304",
    ))
    .await;
    settled("the account's own click", 1, || app.click_count()).await;
    app.stack.stop().await;
}

/// The operator moves a route to another account and removes it; each change is
/// conditional on the route it read (a stale or concurrent move is refused, never
/// applied twice) and leaves an audit record (who, what, when).
#[tokio::test]
async fn routes_are_moved_and_removed_with_audit_records() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    for id in ["bee", "cee", "dee"] {
        let (s, v) = app
            .request(
                "POST",
                "/v1/admin/accounts",
                &op,
                Some(json!({"id": id, "name": id, "waba_id": FIXTURE_WABA})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let mv = format!("/v1/admin/phone-numbers/{FIXTURE_PNID}/move");
    let (s, v) = app
        .request(
            "POST",
            &mv,
            &op,
            Some(json!({"account_id": "bee", "from_account_id": app.account_id})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["route"]["account_id"], "bee");
    // bee has not connected Meta: the number is pending there.
    assert_eq!(v["route"]["status"], "pending", "{v}");
    // The same move again is stale: refused, nothing changed.
    let (s, v) = app
        .request(
            "POST",
            &mv,
            &op,
            Some(json!({"account_id": "cee", "from_account_id": app.account_id})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (_, a) = app
        .request(
            "GET",
            &format!("/v1/admin/accounts/{}", app.account_id),
            &op,
            None,
        )
        .await;
    assert_eq!(a["account"]["phone_number_ids"], json!([]), "{a}");
    let (_, b) = app
        .request("GET", "/v1/admin/accounts/bee", &op, None)
        .await;
    assert_eq!(
        b["account"]["phone_number_ids"],
        json!([FIXTURE_PNID]),
        "{b}"
    );
    // The number's customers now land in bee.
    let (s, k) = app
        .request(
            "POST",
            "/v1/api-keys",
            &op,
            Some(json!({"account_id": "bee"})),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let bee_key = k["key"].as_str().unwrap().to_string();
    app.post_webhook(webhook_from(
        FIXTURE_WABA,
        FIXTURE_PNID,
        "wamid.bee1",
        "16505550404",
    ))
    .await;
    settled("bee's click", 1, || app.click_count()).await;
    let (_, v) = app
        .get("/v1/conversations?phone=16505550404", &bee_key)
        .await;
    assert_eq!(v["conversations"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = app
        .get("/v1/conversations?phone=16505550404", &app.api_key)
        .await;
    assert_eq!(v["conversations"], json!([]), "{v}");

    // Two operators move it at once, to two accounts: exactly one move happens.
    let race = |to: &'static str| {
        app.request(
            "POST",
            &mv,
            &op,
            Some(json!({"account_id": to, "from_account_id": "bee"})),
        )
    };
    let (c, d) = tokio::join!(race("cee"), race("dee"));
    let mut statuses = [c.0, d.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{c:?} {d:?}");
    let winner = if c.0 == 200 { "cee" } else { "dee" };
    let shown = phone_number(&app, &op, FIXTURE_PNID).await;
    assert_eq!(shown["route"]["account_id"], winner);
    let mut holders = Vec::new();
    for id in ["bee", "cee", "dee"] {
        let (_, a) = app
            .request("GET", &format!("/v1/admin/accounts/{id}"), &op, None)
            .await;
        holders.push(a["account"]["phone_number_ids"].as_array().unwrap().len());
    }
    assert_eq!(holders.iter().sum::<usize>(), 1, "{holders:?}");

    // Removal: conditional on the owner named, then done, then audited.
    let rm = format!("/v1/admin/phone-numbers/{FIXTURE_PNID}");
    let (s, v) = app
        .request("DELETE", &format!("{rm}?account_id=bee"), &op, None)
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = app.request("DELETE", &rm, &op, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["account_id"], winner);
    let (s, _) = app.request("DELETE", &rm, &op, None).await;
    assert_eq!(s, 404);
    let shown = phone_number(&app, &op, FIXTURE_PNID).await;
    assert_eq!(shown["route"], Value::Null);
    assert_eq!(
        actions(&shown),
        ["route.remove", "route.move", "route.move", "route.verify"],
        "{shown}"
    );
    let remove = &shown["audit"][0];
    assert_eq!(remove["actor"]["kind"], "operator", "{remove}");
    // The same records in the accounts' own trails: the move in both, the removal in
    // the last holder's.
    let (s, trail) = app
        .request(
            "GET",
            &format!("/v1/admin/audit?account_id={winner}"),
            &op,
            None,
        )
        .await;
    assert_eq!(s, 200, "{trail}");
    assert_eq!(trail["audit"][0]["action"], "route.remove", "{trail}");
    assert_eq!(trail["audit"][0]["id"], remove["id"], "{trail}");
    assert_eq!(remove["target"], format!("pnid:{FIXTURE_PNID}"));
    assert_eq!(remove["detail"]["from"]["account_id"], winner);
    assert!(remove["at"].as_str().unwrap().ends_with('Z'), "{remove}");
    // Only an operator manages routes.
    let (s, v) = app.request("DELETE", &rm, &app.api_key, None).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_scope", "{v}");
    app.stack.stop().await;
}
