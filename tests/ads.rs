//! Click-to-WhatsApp ads over HTTP against the Graph simulator: the seed 000 proxy flow,
//! the one-call creation with publish and clean-up, ownership (403 with no Meta call),
//! validation before any call, rate limits, idempotency, and the inventory with the
//! clicks and conversions captured for an ad.

use ctwa_shared::store::{AdAccountLink, AdInventory};
use ctwa_tests::*;
use serde_json::{Value, json};

const ACT: &str = "act_100000000000001";
const PAGE: &str = "200000000000001";
const NUMBER: &str = "+919876543210";

async fn link(app: &TestApp, account_id: &str, act: &str) {
    app.stack
        .data
        .link_ad_account(&AdAccountLink {
            ad_account_id: act.into(),
            account_id: account_id.into(),
            page_id: Some(PAGE.into()),
            linked_at_ms: 0,
        })
        .await
        .expect("link");
}

/// A connected account with one linked ad account, known to the simulator.
async fn ads_app_with(call_limit: u64) -> TestApp {
    let app = spawn_app().await;
    app.connect_meta(&app.api_key).await;
    link(&app, &app.account_id, ACT).await;
    app.sim.sim.add_ad_account(&json!({
        "id": ACT, "page_ids": [PAGE], "whatsapp_numbers": [NUMBER], "call_limit": call_limit,
    }));
    app
}

async fn ads_app() -> TestApp {
    ads_app_with(1000).await
}

fn meta_calls(app: &TestApp) -> usize {
    app.sim.sim.requests().len()
}

fn live(app: &TestApp) -> Vec<(String, String, String)> {
    app.sim.sim.live_ad_objects(ACT)
}

fn ctwa_request(publish: bool) -> Value {
    json!({
        "name": "Diwali Sale 2026",
        "objective": "OUTCOME_ENGAGEMENT",
        "optimization_goal": "CONVERSATIONS",
        "special_ad_categories": [],
        "daily_budget": 100000,
        "whatsapp_phone_number": NUMBER,
        "targeting": {"geo_locations": {"countries": ["IN"]}, "age_min": 25, "age_max": 34},
        "start_time": "2026-10-01T00:00:00+0530",
        "creative": {
            "message": "Diwali offer — 30% off, tap to chat!",
            "link": "https://wa.me/919876543210?text=I%27d%20like%20to%20know%20more",
            "image": {"bytes": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "name": "diwali.png"},
        },
        "publish": publish,
    })
}

#[tokio::test]
async fn seed_000_five_steps_through_the_proxy() {
    let app = ads_app().await;
    let key = app.api_key.clone();
    let base = format!("/v25.0/{ACT}");
    // Image upload (the extra step before the creative).
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            &format!("{base}/adimages"),
            &key,
            Some(json!({"bytes": "aGVsbG8=", "name": "a.png"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let hash = v["images"]["a.png"]["hash"].as_str().unwrap().to_string();
    // 1. Campaign
    let (s, v, h) = app.request_with_headers("POST", &format!("{base}/campaigns"), &key, Some(json!({
        "name": "Diwali Sale 2026", "objective": "OUTCOME_ENGAGEMENT", "status": "PAUSED", "special_ad_categories": []
    }))).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        h.get("x-business-use-case-usage").is_some(),
        "Meta's usage header is passed on"
    );
    let campaign = v["id"].as_str().unwrap().to_string();
    let (s, v, _) = app
        .request_with_headers(
            "GET",
            &format!("/v25.0/{campaign}?fields=id,name,objective,status,effective_status"),
            &key,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["objective"], "OUTCOME_ENGAGEMENT");
    assert_eq!(v["effective_status"], "PAUSED");
    // 2. Ad set
    let (s, v, _) = app.request_with_headers("POST", &format!("{base}/adsets"), &key, Some(json!({
        "name": "Diwali Sale 2026 — India 25-34", "campaign_id": campaign, "daily_budget": 100000,
        "billing_event": "IMPRESSIONS", "optimization_goal": "CONVERSATIONS",
        "promoted_object": {"page_id": PAGE, "whatsapp_phone_number": NUMBER},
        "targeting": {"geo_locations": {"countries": ["IN"]}, "age_min": 25, "age_max": 34},
        "status": "PAUSED", "start_time": "2026-10-01T00:00:00+0530"
    }))).await;
    assert_eq!(s, 200, "{v}");
    let adset = v["id"].as_str().unwrap().to_string();
    // 3. Creative
    let (s, v, _) = app.request_with_headers("POST", &format!("{base}/adcreatives"), &key, Some(json!({
        "name": "Diwali Sale 2026 — Creative v1",
        "object_story_spec": {"page_id": PAGE, "link_data": {
            "message": "Diwali offer — 30% off, tap to chat!", "link": "https://wa.me/919876543210",
            "image_hash": hash,
            "call_to_action": {"type": "WHATSAPP_MESSAGE", "value": {"app_destination": "WHATSAPP"}}}}
    }))).await;
    assert_eq!(s, 200, "{v}");
    let creative = v["id"].as_str().unwrap().to_string();
    // 4. Ad
    let (s, v, _) = app.request_with_headers("POST", &format!("{base}/ads"), &key, Some(json!({
        "name": "Diwali Sale 2026 — Ad 1", "adset_id": adset, "creative": {"creative_id": creative}, "status": "PAUSED"
    }))).await;
    assert_eq!(s, 200, "{v}");
    let ad = v["id"].as_str().unwrap().to_string();
    // 5. Publish: the ad, then its ad set and campaign.
    for id in [&ad, &adset, &campaign] {
        let (s, v, _) = app
            .request_with_headers(
                "POST",
                &format!("/v25.0/{id}"),
                &key,
                Some(json!({"status": "ACTIVE"})),
            )
            .await;
        assert_eq!((s, &v), (200, &json!({"success": true})));
    }
    let (s, v, _) = app
        .request_with_headers(
            "GET",
            &format!("/v25.0/{ad}?fields=id,name,adset_id,creative,status,effective_status"),
            &key,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "ACTIVE");
    assert_eq!(v["creative"]["id"], creative.as_str());
    assert_eq!(v["effective_status"], "PENDING_REVIEW", "in review first");
    let (_, v, _) = app
        .request_with_headers(
            "GET",
            &format!("/v25.0/{ad}?fields=effective_status"),
            &key,
            None,
        )
        .await;
    assert_eq!(v["effective_status"], "ACTIVE", "then serving");
    // The listing edge, with Meta's paging.
    let (s, v, _) = app
        .request_with_headers(
            "GET",
            &format!("{base}/ads?fields=id,name,effective_status&limit=10"),
            &key,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["id"], ad.as_str());
    // Meta's errors come back with their status, code and message.
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            &format!("{base}/campaigns"),
            &key,
            Some(json!({"name": "x", "objective": "OUTCOME_ENGAGEMENT"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["message"], "(#100) Invalid parameter");
    assert_eq!(v["error"]["meta_error"]["code"], 100);
    assert!(
        v["error"]["meta_error"]["error_user_msg"]
            .as_str()
            .unwrap()
            .contains("special_ad_categories")
    );
    // A token of the caller's own is refused: the stored one is used.
    let (s, v, _) = app
        .request_with_headers("GET", &format!("/v25.0/{ad}?access_token=EAAB"), &key, None)
        .await;
    assert_eq!(s, 400, "{v}");
    // Unknown edges and ids that are not ids.
    let (s, _, _) = app
        .request_with_headers(
            "POST",
            &format!("{base}/customaudiences"),
            &key,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _, _) = app
        .request_with_headers("GET", "/v25.0/me", &key, None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn one_call_creation_with_publish_and_inventory() {
    let app = ads_app().await;
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(ctwa_request(true)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["status"], "ACTIVE");
    let names: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["image", "campaign", "adset", "creative", "ad", "publish"]
    );
    let ad_id = v["ad_id"].as_str().unwrap().to_string();
    for (field, kind) in [
        ("campaign_id", "campaign"),
        ("adset_id", "adset"),
        ("ad_id", "ad"),
    ] {
        let o = app
            .sim
            .sim
            .ad_object(v[field].as_str().unwrap())
            .expect("made at Meta");
        assert_eq!(o["kind"], kind);
        assert_eq!(o["status"], "ACTIVE", "{field} published");
    }
    let creative = app
        .sim
        .sim
        .ad_object(v["creative_id"].as_str().unwrap())
        .unwrap();
    let ld = &creative["fields"]["object_story_spec"]["link_data"];
    assert_eq!(ld["image_hash"], v["image_hash"]);
    assert_eq!(ld["call_to_action"]["type"], "WHATSAPP_MESSAGE");
    let adset = app
        .sim
        .sim
        .ad_object(v["adset_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(adset["fields"]["campaign_id"], v["campaign_id"]);
    assert_eq!(adset["fields"]["daily_budget"], 100000);

    // Inventory.
    let (s, list, _) = app
        .request_with_headers("GET", "/v1/ads", &app.api_key, None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["data"][0]["ad_id"], ad_id.as_str());
    assert_eq!(list["data"][0]["daily_budget"], 100000);
    assert_eq!(list["data"][0]["ad_account_id"], ACT);
    assert_eq!(list["data"][0]["campaign_id"], v["campaign_id"]);
    assert!(list["data"][0]["created_time"].is_string());
    assert!(list["data"][0]["effective_status"].is_string());

    // A click on this ad and a conversion for it are counted on the ad.
    let (s, d, _) = app
        .request_with_headers("GET", &format!("/v1/ads/{ad_id}"), &app.api_key, None)
        .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["clicks"], 0);
    assert_eq!(d["adset"]["daily_budget"], 100000);
    assert_eq!(d["creative"]["id"], v["creative_id"]);
    let (s, r) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200, "{r}");
    let wamid = format!("wamid.{}", unique("m"));
    let body = ctwa_webhook(
        FIXTURE_PNID,
        &wamid,
        "919812345678",
        Some("ARAkLkA8rmlF"),
        ctwa_shared::time::now_secs() - 60,
    )
    .replace(
        "\"source_id\":\"120226305854810726\"",
        &format!("\"source_id\":\"{ad_id}\""),
    );
    assert!(body.contains(&ad_id), "the fixture's ad id was replaced");
    let before = app.click_count().await;
    let (s, r) = app.post_webhook(body).await;
    assert_eq!(s, 200, "{r}");
    settled("click captured", before + 1, || app.click_count()).await;
    let (s, r) = app
        .post_json("/v1/conversions", &app.api_key, json!({"phone": "+919812345678", "event_name": "Purchase", "value": 1499, "currency": "INR"}))
        .await;
    assert_eq!(s, 200, "{r}");
    let d = eventually(
        "the ad's counts",
        std::time::Duration::from_secs(10),
        || async {
            let (_, d, _) = app
                .request_with_headers("GET", &format!("/v1/ads/{ad_id}"), &app.api_key, None)
                .await;
            (d["clicks"] == 1 && d["conversions"]["delivered"] == 1).then_some(d)
        },
    )
    .await;
    assert_eq!(d["conversions"]["total"], 1);
    assert_eq!(d["ad"]["id"], ad_id.as_str());
}

#[tokio::test]
async fn failure_at_step_4_leaves_nothing_behind() {
    let app = ads_app().await;
    app.sim.sim.add_fault(serde_json::from_value(json!({
        "path": "/ads$", "method": "POST", "status": 400, "code": 100, "message": "(#100) Invalid parameter"
    })).unwrap());
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(ctwa_request(true)),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let e = &v["error"];
    assert_eq!(e["code"], "ad_creation_failed");
    assert_eq!(e["failed_step"], "ad");
    assert_eq!(e["step"], 4);
    assert_eq!(e["meta_error"]["code"], 100);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("step 4 (ad) failed: (#100)"),
        "{e}"
    );
    let actions: Vec<(&str, &str)> = e["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("adcreative", "deleted"),
            ("adset", "deleted"),
            ("campaign", "deleted"),
            ("adimage", "kept")
        ]
    );
    assert!(e["created"]["campaign_id"].is_string() && e["created"]["ad_id"].is_null());
    assert_eq!(live(&app), vec![], "no ACTIVE and no orphan object");

    // Meta failing (a 500, retried by nothing: a create's outcome is unknown) at step 4,
    // and the deletions failing too: what cannot be deleted is paused, and said so.
    app.sim.sim.add_fault(
        serde_json::from_value(
            json!({"path": "/ads$", "method": "POST", "status": 500, "code": 2}),
        )
        .unwrap(),
    );
    app.sim.sim.add_fault(
        serde_json::from_value(json!({"method": "DELETE", "status": 400, "code": 100, "times": 2}))
            .unwrap(),
    );
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(ctwa_request(true)),
        )
        .await;
    assert_eq!(s, 502, "{v}");
    let e = &v["error"];
    assert_eq!(e["unknown_outcome"], true);
    let actions: Vec<(&str, &str)> = e["cleanup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("adcreative", "failed"),
            ("adset", "paused"),
            ("campaign", "deleted"),
            ("adimage", "kept")
        ]
    );
    let left = live(&app);
    assert!(
        left.iter().all(|(_, _, status)| status != "ACTIVE"),
        "{left:?}"
    );

    // A failure at publishing removes everything too (the ad account has no funds).
    app.sim.sim.add_ad_account(
        &json!({"id": ACT, "page_ids": [PAGE], "whatsapp_numbers": [NUMBER], "funded": false}),
    );
    let sorted = |mut v: Vec<(String, String, String)>| {
        v.sort();
        v
    };
    let before = sorted(live(&app));
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(ctwa_request(true)),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["failed_step"], "publish");
    assert_eq!(v["error"]["meta_error"]["code"], 1_487_749);
    assert_eq!(sorted(live(&app)), before, "nothing new is left behind");
}

#[tokio::test]
async fn another_accounts_ids_answer_403_without_a_meta_call() {
    let app = ads_app().await;
    let (other, other_key) = app.add_account("1111111111").await;
    link(&app, &other, "act_999").await;
    let theirs = json!({"name": "x", "objective": "OUTCOME_ENGAGEMENT", "status": "PAUSED", "special_ad_categories": []});
    let before = meta_calls(&app);
    for act in ["act_999", "act_424242"] {
        let (s, v, _) = app
            .request_with_headers(
                "POST",
                &format!("/v25.0/{act}/campaigns"),
                &app.api_key,
                Some(theirs.clone()),
            )
            .await;
        assert_eq!(s, 403, "{act}: {v}");
        assert_eq!(v["error"]["message"], "id does not belong to your account");
        let (s, _, _) = app
            .request_with_headers("GET", &format!("/v25.0/{act}/ads"), &app.api_key, None)
            .await;
        assert_eq!(s, 403);
    }
    let mut req = ctwa_request(false);
    req["ad_account_id"] = json!("act_999");
    let (s, v, _) = app
        .request_with_headers("POST", "/v1/ads/ctwa", &app.api_key, Some(req))
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, _, _) = app
        .request_with_headers("GET", "/v1/ads?ad_account_id=act_999", &app.api_key, None)
        .await;
    assert_eq!(s, 403);
    assert_eq!(meta_calls(&app), before, "no Meta call was made");

    // Our objects are not theirs either.
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(ctwa_request(false)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    app.connect_meta(&other_key).await;
    let before = meta_calls(&app);
    for id in ["campaign_id", "adset_id", "ad_id"] {
        let id = v[id].as_str().unwrap();
        for (m, body) in [
            ("GET", None),
            ("POST", Some(json!({"status": "ACTIVE"}))),
            ("DELETE", None),
        ] {
            let (s, r, _) = app
                .request_with_headers(m, &format!("/v25.0/{id}"), &other_key, body)
                .await;
            assert_eq!(s, 403, "{m} {id}: {r}");
        }
        let (s, _, _) = app
            .request_with_headers("GET", &format!("/v1/ads/{id}"), &other_key, None)
            .await;
        assert_eq!(s, 403);
    }
    // Nor can their ad reference our ad set.
    link(&app, &other, "act_999").await;
    let (s, _, _) = app.request_with_headers("POST", "/v25.0/act_999/ads", &other_key, Some(json!({"name": "x", "adset_id": v["adset_id"], "creative": {"creative_id": v["creative_id"]}}))).await;
    assert_eq!(s, 403);
    assert_eq!(meta_calls(&app), before, "no Meta call was made");
    // An ad account is linked to one account only.
    let e = app
        .stack
        .data
        .link_ad_account(&AdAccountLink {
            ad_account_id: ACT.into(),
            account_id: other,
            page_id: None,
            linked_at_ms: 0,
        })
        .await;
    assert!(e.is_err());
}

#[tokio::test]
async fn objects_made_elsewhere_are_checked_with_meta() {
    let app = ads_app().await;
    let (other, other_key) = app.add_account("1111111111").await;
    link(&app, &other, "act_999").await;
    app.sim.sim.add_ad_account(
        &json!({"id": "act_999", "page_ids": [PAGE], "whatsapp_numbers": [NUMBER]}),
    );
    app.connect_meta(&other_key).await;
    // Campaigns made in Ads Manager (straight at Meta), one in each ad account.
    let token = app.sim.sim.issued_tokens().into_iter().next().unwrap();
    let http = reqwest::Client::new();
    let mut made = Vec::new();
    for act in [ACT, "act_999"] {
        let v: Value = http
            .post(format!("{}/{act}/campaigns", app.sim.graph_url()))
            .bearer_auth(&token)
            .json(&json!({"name": "elsewhere", "objective": "OUTCOME_SALES", "special_ad_categories": []}))
            .send().await.unwrap().json().await.unwrap();
        made.push(v["id"].as_str().unwrap().to_string());
    }
    let (s, v, _) = app
        .request_with_headers(
            "GET",
            &format!("/v25.0/{}?fields=id,name", made[0]),
            &app.api_key,
            None,
        )
        .await;
    assert_eq!(s, 200, "ours, by Meta's account_id: {v}");
    assert_eq!(v["name"], "elsewhere");
    let (s, v, _) = app
        .request_with_headers(
            "GET",
            &format!("/v25.0/{}?fields=id,name", made[1]),
            &app.api_key,
            None,
        )
        .await;
    assert_eq!(s, 403, "theirs: {v}");
    let (s, v, _) = app
        .request_with_headers("GET", "/v25.0/4242424242", &app.api_key, None)
        .await;
    assert_eq!(s, 400, "unknown to Meta: Meta's error: {v}");
    assert_eq!(v["error"]["meta_error"]["code"], 100);
}

#[tokio::test]
async fn every_mistake_is_refused_before_any_meta_call() {
    let app = ads_app().await;
    let before = meta_calls(&app);
    let mutate = |path: &[&str], x: Value| {
        let mut v = ctwa_request(true);
        let mut cur = &mut v;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = x;
        v
    };
    let cases = [
        (
            mutate(&["objective"], json!("OUTCOME_AWARENESS")),
            "objective",
        ),
        (
            mutate(&["optimization_goal"], json!("REACH")),
            "optimization_goal",
        ),
        (mutate(&["daily_budget"], json!(999.99)), "minor units"),
        (
            mutate(&["whatsapp_phone_number"], json!("98765 43210")),
            "E.164",
        ),
        (
            mutate(&["creative", "link"], json!("https://wa.me/15550001111")),
            "opens a chat with",
        ),
        (
            mutate(&["creative", "call_to_action"], json!({"type": "SHOP_NOW"})),
            "WHATSAPP_MESSAGE",
        ),
        (
            mutate(&["special_ad_categories"], json!("none")),
            "invalid JSON body",
        ),
        (
            mutate(&["targeting"], json!({"geo_locations": {}})),
            "geo_locations",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, want) in cases {
        let (s, v, _) = app
            .request_with_headers("POST", "/v1/ads/ctwa", &app.api_key, Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg:?} should mention {want:?}");
    }
    let r = app
        .http
        .post(format!("{}/v1/ads/ctwa", app.base))
        .bearer_auth(&app.api_key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (s, _, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            "ctwa_wrong",
            Some(ctwa_request(false)),
        )
        .await;
    assert_eq!(s, 401);
    let (s, _, _) = app
        .request_with_headers("GET", "/v1/ads?limit=0", &app.api_key, None)
        .await;
    assert_eq!(s, 400);
    let (s, _, _) = app
        .request_with_headers("GET", "/v1/ads?after=nonsense", &app.api_key, None)
        .await;
    assert_eq!(s, 400);
    assert_eq!(meta_calls(&app), before, "nothing reached Meta");
    assert_eq!(live(&app), vec![]);
}

#[tokio::test]
async fn rate_limits_are_respected_before_meta_throttles() {
    let app = ads_app_with(3).await;
    let key = app.api_key.clone();
    let path = format!("/v25.0/{ACT}/campaigns");
    // Meta's usage header climbs 33%, 67%, 100%: the budget is spent, though Meta has
    // not refused anything yet.
    for _ in 0..3 {
        let (s, v, _) = app.request_with_headers("GET", &path, &key, None).await;
        assert_eq!(s, 200, "{v}");
    }
    let before = meta_calls(&app);
    let (s, v, h) = app.request_with_headers("GET", &path, &key, None).await;
    assert_eq!(s, 429, "held back before Meta throttles: {v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    assert!(h.get("retry-after").is_some());
    let (s, v, _) = app
        .request_with_headers("POST", "/v1/ads/ctwa", &key, Some(ctwa_request(false)))
        .await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["failed_step"], "image", "the first step: {v}");
    assert_eq!(meta_calls(&app), before, "held back, not sent");
    assert_eq!(live(&app), vec![]);

    // Throttled by Meta (another instance spent the budget): 80004 with Meta's wait of
    // 5 minutes, passed on as 429, and no call until the wait is over.
    let app = ads_app_with(1000).await;
    let key = app.api_key.clone();
    let (s, _, _) = app.request_with_headers("GET", &path, &key, None).await;
    assert_eq!(s, 200);
    app.sim.sim.add_ad_account(
        &json!({"id": ACT, "page_ids": [PAGE], "whatsapp_numbers": [NUMBER], "call_limit": 0}),
    );
    let (s, v, _) = app.request_with_headers("GET", &path, &key, None).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["meta_error"]["code"], 80_004);
    let before = meta_calls(&app);
    let (s, v, h) = app.request_with_headers("GET", &path, &key, None).await;
    assert_eq!(s, 429, "{v}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 200 && retry <= 300, "Meta said 5 minutes: {retry}");
    assert_eq!(meta_calls(&app), before, "held back, not sent");
    // Other ad accounts are not held.
    link(&app, &app.account_id, "act_5").await;
    app.sim
        .sim
        .add_ad_account(&json!({"id": "act_5", "page_ids": [PAGE], "whatsapp_numbers": [NUMBER]}));
    let (s, v, _) = app
        .request_with_headers("GET", "/v25.0/act_5/campaigns", &key, None)
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn idempotency_key_makes_retries_safe() {
    let app = ads_app().await;
    let send = |body: Value| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(format!("{}/v1/ads/ctwa", app.base))
                .bearer_auth(&app.api_key)
                .header("idempotency-key", "order-42")
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (
                r.status().as_u16(),
                replayed,
                r.json::<Value>().await.unwrap(),
            )
        }
    };
    let (s1, r1, v1) = send(ctwa_request(false)).await;
    let (s2, r2, v2) = send(ctwa_request(false)).await;
    assert_eq!((s1, r1), (201, false), "{v1}");
    assert_eq!((s2, r2), (201, true), "{v2}");
    assert_eq!(v1["ad_id"], v2["ad_id"]);
    let campaigns = live(&app)
        .iter()
        .filter(|(_, k, _)| k == "campaign")
        .count();
    assert_eq!(campaigns, 1, "one set of objects at Meta");
    let (s3, _, v3) = send(ctwa_request(true)).await;
    assert_eq!(s3, 422, "{v3}");
}

/// A key whose claimer Lambda ended (a crash, a timeout) without an answer: a retry
/// waits only while that invocation could still be running (the function's Timeout),
/// then takes the key over and runs, instead of answering 409 for minutes.
#[tokio::test]
async fn a_key_held_by_an_invocation_lambda_ended_is_taken_over_by_the_retry() {
    let app = ads_app().await;
    let body = serde_json::to_vec(&ctwa_request(false)).unwrap();
    let hash = ctwa_shared::handlers::ads::request_hash(&body);
    let now = ctwa_shared::time::now_millis();
    let send = |key: &'static str| {
        let (app, body) = (&app, body.clone());
        async move {
            let r = app
                .http
                .post(format!("{}/v1/ads/ctwa", app.base))
                .bearer_auth(&app.api_key)
                .header("idempotency-key", key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // Claimed 10 s ago: its invocation (Timeout 29 s) may still be running.
    let held = |key: &'static str, ago_ms: i64| {
        let (app, hash) = (&app, hash.clone());
        async move {
            app.stack
                .data
                .claim_request(&app.account_id, key, &hash, now - ago_ms, 0)
                .await
                .unwrap()
        }
    };
    held("launch-recent", 10_000).await;
    let (s, v) = send("launch-recent").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("request_in_progress")),
        "{v}"
    );
    // Claimed 40 s ago: past the Timeout and the margin, that invocation is over.
    held("launch-crashed", 40_000).await;
    let (s, v) = send("launch-crashed").await;
    assert_eq!(s, 201, "the retry takes the key over: {v}");
    let campaigns = live(&app)
        .iter()
        .filter(|(_, k, _)| k == "campaign")
        .count();
    assert_eq!(campaigns, 1, "{v}");
}

#[tokio::test]
async fn a_key_that_made_nothing_is_free_again() {
    let app = spawn_app().await;
    link(&app, &app.account_id, ACT).await;
    app.sim
        .sim
        .add_ad_account(&json!({"id": ACT, "page_ids": [PAGE], "whatsapp_numbers": [NUMBER]}));
    let send = || async {
        let r = app
            .http
            .post(format!("{}/v1/ads/ctwa", app.base))
            .bearer_auth(&app.api_key)
            .header("idempotency-key", "launch-1")
            .json(&ctwa_request(false))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, v) = send().await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("meta_not_connected")),
        "{v}"
    );
    app.connect_meta(&app.api_key).await;
    let (s, v) = send().await;
    assert_eq!(s, 201, "the retry with the same key runs: {v}");
}

/// A multipart/form-data body as curl's `-F` sends it (boundary `ctwa-b`): `(field,
/// file name, content)`.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, file, data) in parts {
        b.extend_from_slice(b"--ctwa-b\r\n");
        let disposition = match file {
            Some(f) => format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n"
            ),
            None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
        };
        b.extend_from_slice(disposition.as_bytes());
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"--ctwa-b--\r\n");
    b
}

async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(&app.api_key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Seed 000's image upload the way Meta takes it: multipart/form-data with a file part
/// (`curl -F 'filename=@diwali.png'`) or a `bytes` field. Graph receives the image (as
/// base64 `bytes`, named by the file); hostile multipart bodies answer a 4xx JSON error
/// with no Meta call.
#[tokio::test]
async fn adimages_accepts_multipart_uploads_as_meta_does() {
    use base64::Engine as _;
    let app = ads_app().await;
    let path = format!("/v25.0/{ACT}/adimages");
    let ct = "multipart/form-data; boundary=ctwa-b";
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\x00\xff\xfe";
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);

    let (s, v) = post_raw(
        &app,
        &path,
        ct,
        multipart(&[("filename", Some("diwali.png"), png)]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["images"]["diwali.png"]["hash"].is_string(), "{v}");
    let sent = app.sim.sim.requests().pop().expect("a Graph call");
    assert_eq!(sent["path"], format!("/{ACT}/adimages"));
    assert_eq!(
        sent["params"]["bytes"],
        b64.as_str(),
        "Graph receives the image itself"
    );
    assert_eq!(sent["params"]["name"], "diwali.png");

    let (s, v) = post_raw(
        &app,
        &path,
        ct,
        multipart(&[("bytes", None, b64.as_bytes()), ("name", None, b"b.png")]),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["images"]["b.png"]["hash"].is_string(), "{v}");

    let calls = meta_calls(&app);
    // A multipart body reaches Lambda base64-encoded: past about 4.4 MB the event is over
    // Lambda's 6 MB and API Gateway answers its own 413.
    let too_big = multipart(&[("filename", Some("big.png"), &vec![7u8; 5 * 1024 * 1024 + 1])]);
    let (s, v) = post_raw(&app, &path, ct, too_big).await;
    assert_eq!(s, 413, "{v}");
    for (content_type, body, status, code) in [
        (
            "multipart/form-data",
            multipart(&[("a", None, b"1")]),
            400,
            "bad_request",
        ),
        (ct, b"--ctwa-b\r\nno headers".to_vec(), 400, "bad_request"),
        (
            ct,
            multipart(&[("bytes", None, b"@@@ not base64")]),
            400,
            "bad_request",
        ),
        (
            ct,
            multipart(&[("f", Some("a.png"), png), ("g", Some("b.png"), png)]),
            400,
            "bad_request",
        ),
        (
            ct,
            multipart(&[("f", Some("a.png"), b"")]),
            400,
            "bad_request",
        ),
    ] {
        let (s, v) = post_raw(&app, &path, content_type, body).await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // A file on another edge is refused too.
    let (s, v) = post_raw(
        &app,
        &format!("/v25.0/{ACT}/campaigns"),
        ct,
        multipart(&[("f", Some("a.png"), png)]),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(meta_calls(&app), calls, "nothing hostile reached Meta");
    app.stack.stop().await;
}

/// Issue 14 item 5: with the app's "Require App Secret" on, every Graph call made with a
/// tenant's token carries a valid `appsecret_proof` (HMAC-SHA256 of the token with the
/// app secret): the dataset, a conversion, the Marketing proxy. The simulator checks
/// each one and logs the outcome; a call without one is refused as Meta does.
#[tokio::test]
async fn every_graph_call_with_a_token_carries_a_valid_appsecret_proof() {
    let app = ads_app().await;
    app.sim.sim.require_appsecret_proof(true);
    let (s, v) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .get(
            &format!("/v25.0/{ACT}/campaigns?fields=id,name"),
            &app.api_key,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let before = app.click_count().await;
    let (s, _) = app
        .post_webhook(ctwa_webhook(
            FIXTURE_PNID,
            "wamid.PROOF",
            "16505551234",
            Some("CLID-PROOF"),
            ctwa_shared::time::now_secs() - 60,
        ))
        .await;
    assert_eq!(s, 200);
    settled("click", before + 1, || app.click_count()).await;
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"phone": "16505551234", "event_name": "Lead"}),
        )
        .await;
    assert_eq!((s, &v["status"]), (200, &json!("delivered")), "{v}");
    let requests = app.sim.sim.requests();
    let with_token: Vec<&Value> = requests
        .iter()
        .filter(|r| !r["appsecret_proof"].is_null())
        .collect();
    assert!(with_token.len() >= 3, "{requests:?}");
    for r in &with_token {
        assert_eq!(r["appsecret_proof"], "valid", "{r}");
    }
    // The simulator really refuses a call without one.
    let token = app.stack.connect.meta.token(&app.account_id).await.unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/{ACT}/campaigns", app.sim.graph_url()))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "API calls from the server require an appsecret_proof argument"
    );
    app.stack.stop().await;
}

/// Issue 14 item 2: Meta puts `access_token=...` into paging links at every depth (a
/// field expansion such as `adsets.limit(1){id}` has its own paging). The proxy drops
/// them all and any string holding the token; the cursors stay.
#[tokio::test]
async fn nested_paging_links_never_hand_out_the_token() {
    let app = ads_app().await;
    let base = format!("/v25.0/{ACT}");
    let (s, c) = app
        .post_json(
            &format!("{base}/campaigns"),
            &app.api_key,
            json!({"name": "Nested", "objective": "OUTCOME_ENGAGEMENT", "special_ad_categories": [], "status": "PAUSED"}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    let campaign = c["id"].as_str().unwrap().to_string();
    for i in 0..2 {
        let (s, v) = app
            .post_json(
                &format!("{base}/adsets"),
                &app.api_key,
                json!({"name": format!("Set {i}"), "campaign_id": campaign, "daily_budget": 100000,
                    "billing_event": "IMPRESSIONS", "optimization_goal": "CONVERSATIONS",
                    "promoted_object": {"page_id": PAGE, "whatsapp_phone_number": NUMBER},
                    "targeting": {"geo_locations": {"countries": ["IN"]}, "age_min": 25, "age_max": 34},
                    "status": "PAUSED", "start_time": "2026-10-01T00:00:00+0530"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let token = app.stack.connect.meta.token(&app.account_id).await.unwrap();
    // Meta's own answer (the simulator, asked directly) carries the token, nested.
    let direct = reqwest::Client::new()
        .get(format!(
            "{}/{ACT}/campaigns?fields=id,adsets.limit(1){{id}}&limit=1&appsecret_proof={}",
            app.sim.graph_url(),
            token.appsecret_proof().unwrap()
        ))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(direct.contains("access_token="), "{direct}");
    // Through the proxy: the same data, cursors and all, no token anywhere (the harness
    // also scans every ads answer of every test for `access_token=`).
    let (s, v) = app
        .get(
            &format!("{base}/campaigns?fields=id,adsets.limit(1){{id}}&limit=1"),
            &app.api_key,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let text = v.to_string();
    assert!(!text.contains(token.expose()), "{text}");
    let adsets = &v["data"][0]["adsets"];
    assert_eq!(adsets["data"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(adsets["paging"]["cursors"]["after"].is_string(), "{v}");
    assert!(adsets["paging"].get("next").is_none(), "{v}");
    app.stack.stop().await;
}

/// The one-call creation answers before its function's `Timeout` (read from the
/// template) even when Meta hangs at step 4: no call runs past the invocation's
/// deadline less a margin, what could not be cleaned up is named (never a silent 503
/// from the gateway with objects left unknown), and the Idempotency-Key keeps the
/// answer for a retry.
#[tokio::test]
async fn a_hanging_meta_call_ends_before_the_function_timeout_with_what_was_left() {
    let from = "and the /report page).\n      CodeUri: .\n      Timeout: 29";
    let app = spawn_app_with(AppOptions {
        template: Some(template_variant(&[(from, &from.replace("29", "8"))])),
        ..AppOptions::default()
    })
    .await;
    app.connect_meta(&app.api_key).await;
    link(&app, &app.account_id, ACT).await;
    app.sim.sim.add_ad_account(&json!({
        "id": ACT, "page_ids": [PAGE], "whatsapp_numbers": [NUMBER], "call_limit": 1000,
    }));
    // Step 4 hangs longer than the function may run.
    app.sim.sim.add_fault(
        serde_json::from_value(json!({"path": "/ads$", "method": "POST", "delay_ms": 12_000}))
            .unwrap(),
    );
    let started = std::time::Instant::now();
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(ctwa_request(true)),
        )
        .await;
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
    assert_ne!(s, 503, "the gateway's timeout answer: {v}");
    let e = &v["error"];
    assert_eq!(e["code"], "ad_creation_failed", "{v}");
    assert_eq!(e["failed_step"], "ad", "{v}");
    // Meta may have made the ad: the objects it could not reach in time are named.
    let cleanup = e["cleanup"].as_array().unwrap();
    assert!(
        cleanup
            .iter()
            .any(|c| c["kind"] == "campaign" && c["id"].is_string()),
        "{v}"
    );
    app.stack.stop().await;
}

// ------------------------------------------------ Messenger, Instagram Direct, several

const IG: &str = "17841400000000001";

/// [`ads_app`] whose Page has an Instagram professional account connected.
async fn channels_app() -> TestApp {
    let app = ads_app().await;
    app.sim
        .sim
        .add_page(&json!({"page_id": PAGE, "instagram_account_id": IG}))
        .expect("page");
    app
}

fn channel_request(destinations: Value) -> Value {
    let mut v = ctwa_request(false);
    let m = v.as_object_mut().unwrap();
    m.insert("destinations".into(), destinations.clone());
    m["creative"].as_object_mut().unwrap().remove("link");
    let text = destinations.to_string();
    if !text.contains("whatsapp") {
        m.remove("whatsapp_phone_number");
    }
    if text.contains("instagram") {
        m.insert("instagram_account_id".into(), json!(IG));
    }
    v
}

/// The ad set and creative Meta holds for a creation's answer.
fn made(app: &TestApp, v: &Value) -> (Value, Value) {
    let get = |f: &str| {
        app.sim
            .sim
            .ad_object(v[f].as_str().unwrap())
            .expect("made at Meta")["fields"]
            .clone()
    };
    (get("adset_id"), get("creative_id"))
}

#[tokio::test]
async fn a_messenger_only_ad_in_one_call() {
    let app = channels_app().await;
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(channel_request(json!(["messenger"]))),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (adset, creative) = made(&app, &v);
    assert_eq!(adset["destination_type"], "MESSENGER");
    assert_eq!(adset["billing_event"], "IMPRESSIONS");
    assert_eq!(adset["promoted_object"], json!({"page_id": PAGE}));
    let oss = &creative["object_story_spec"];
    assert_eq!(
        oss["link_data"]["call_to_action"],
        json!({"type": "MESSAGE_PAGE", "value": {"app_destination": "MESSENGER"}})
    );
    assert_eq!(oss["link_data"]["link"], "https://fb.com/messenger_doc/");
    assert!(oss.get("instagram_user_id").is_none());
    assert!(creative.get("asset_feed_spec").is_none());
}

#[tokio::test]
async fn an_instagram_direct_ad_in_one_call() {
    let app = channels_app().await;
    let (s, v, _) = app
        .request_with_headers(
            "POST",
            "/v1/ads/ctwa",
            &app.api_key,
            Some(channel_request(json!(["instagram"]))),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (adset, creative) = made(&app, &v);
    assert_eq!(adset["destination_type"], "INSTAGRAM_DIRECT");
    assert_eq!(adset["promoted_object"], json!({"page_id": PAGE}));
    let oss = &creative["object_story_spec"];
    assert_eq!(oss["instagram_user_id"], IG);
    assert_eq!(
        oss["link_data"]["call_to_action"],
        json!({"type": "INSTAGRAM_MESSAGE", "value": {"app_destination": "INSTAGRAM_DIRECT"}})
    );
    assert_eq!(oss["link_data"]["image_hash"], v["image_hash"]);
}

#[tokio::test]
async fn a_multidestination_ad_to_all_three_published_in_one_call() {
    let app = channels_app().await;
    let mut body = channel_request(json!(["whatsapp", "instagram", "messenger"]));
    body["publish"] = json!(true);
    let (s, v, _) = app
        .request_with_headers("POST", "/v1/ads/ctwa", &app.api_key, Some(body))
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"], "ACTIVE");
    let (adset, creative) = made(&app, &v);
    assert_eq!(
        adset["destination_type"],
        "MESSAGING_INSTAGRAM_DIRECT_MESSENGER_WHATSAPP"
    );
    assert_eq!(adset["optimization_goal"], "CONVERSATIONS");
    assert_eq!(
        adset["promoted_object"],
        json!({"page_id": PAGE, "whatsapp_phone_number": NUMBER})
    );
    assert_eq!(creative["object_story_spec"]["instagram_user_id"], IG);
    let afs = &creative["asset_feed_spec"];
    assert_eq!(afs["optimization_type"], "DOF_MESSAGING_DESTINATION");
    let ctas: Vec<(&str, &str)> = afs["call_to_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap(),
                c["value"]["app_destination"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ctas,
        [
            ("MESSAGE_PAGE", "MESSENGER"),
            ("WHATSAPP_MESSAGE", "WHATSAPP"),
            ("INSTAGRAM_MESSAGE", "INSTAGRAM_DIRECT")
        ]
    );
    let ad = app.sim.sim.ad_object(v["ad_id"].as_str().unwrap()).unwrap();
    assert_eq!(ad["status"], "ACTIVE");
}

#[tokio::test]
async fn combinations_meta_refuses_are_refused_before_meta_and_by_the_simulator_after() {
    let app = channels_app().await;
    let before = meta_calls(&app);
    let all = || channel_request(json!(["messenger", "whatsapp", "instagram"]));
    let mut housing = all();
    housing["special_ad_categories"] = json!(["HOUSING"]);
    let mut clicks = all();
    clicks["objective"] = json!("OUTCOME_SALES");
    clicks["optimization_goal"] = json!("LINK_CLICKS");
    let mut ig_leads = channel_request(json!(["instagram"]));
    ig_leads["objective"] = json!("OUTCOME_LEADS");
    let mut no_ig = channel_request(json!(["instagram"]));
    no_ig
        .as_object_mut()
        .unwrap()
        .remove("instagram_account_id");
    for (body, want) in [
        (
            housing,
            "\"Currently we don't support special ad categories for ads that click to multidestination, so it needs to be NONE or empty array.\"",
        ),
        (
            clicks,
            "\"Must be set to CONVERSATIONS for ads that click to multidestination.\"",
        ),
        (
            ig_leads,
            "\"Supported objectives are OUTCOME_ENGAGEMENT, OUTCOME_SALES, and OUTCOME_TRAFFIC.\"",
        ),
        (no_ig, "instagram_account_id is required"),
    ] {
        let (s, v, _) = app
            .request_with_headers("POST", "/v1/ads/ctwa", &app.api_key, Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg:?} should quote {want:?}");
    }
    assert_eq!(meta_calls(&app), before, "nothing reached Meta");
    assert_eq!(live(&app), vec![]);

    // What only Meta knows: the Instagram account is not the Page's. The simulator
    // refuses the creative as Meta does, and what was made is cleaned up.
    let mut foreign = channel_request(json!(["instagram"]));
    foreign["instagram_account_id"] = json!("17841499999999999");
    let (s, v, _) = app
        .request_with_headers("POST", "/v1/ads/ctwa", &app.api_key, Some(foreign))
        .await;
    assert_eq!(s, 400, "{v}");
    let e = &v["error"];
    assert_eq!(e["failed_step"], "creative");
    assert_eq!(e["meta_error"]["code"], 100);
    assert!(
        e["meta_error"]["error_user_msg"]
            .as_str()
            .unwrap()
            .contains("not the Instagram account connected to the Page"),
        "{e}"
    );
    assert_eq!(live(&app), vec![], "campaign and ad set deleted");
}
