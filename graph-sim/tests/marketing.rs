//! The Marketing API simulator: seed 000's five-step Click-to-WhatsApp flow, Meta's
//! validations and errors, statuses, deletion, paging and the usage header.

use serde_json::{Value, json};

struct Sim {
    run: graph_sim::RunningSim,
    http: reqwest::Client,
    token: String,
}

async fn sim(funded: bool, call_limit: u32) -> Sim {
    let run = graph_sim::start(
        ([127, 0, 0, 1], 0).into(),
        graph_sim::SimConfig {
            app_id: "1".into(),
            app_secret: "s".into(),
        },
    )
    .await
    .unwrap();
    run.sim.add_ad_account(&json!({"id": "act_111", "page_ids": ["222"], "whatsapp_numbers": ["+91 98765 43210"], "funded": funded, "call_limit": call_limit}));
    let token = run
        .sim
        .create_token(&json!({"scopes": ["ads_management", "pages_show_list"]}))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    Sim {
        run,
        http: reqwest::Client::new(),
        token,
    }
}

impl Sim {
    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value, Option<String>) {
        let r = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.run.graph_url()),
            )
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let usage = r
            .headers()
            .get("x-business-use-case-usage")
            .map(|v| v.to_str().unwrap().to_string());
        (status, r.json().await.unwrap(), usage)
    }
}

async fn five_steps(s: &Sim) -> (String, String, String, String) {
    let (st, c, usage) = s
        .call("POST", "/act_111/campaigns", json!({"name": "Diwali 2026", "objective": "OUTCOME_ENGAGEMENT", "status": "PAUSED", "special_ad_categories": []}))
        .await;
    assert_eq!(st, 200, "{c}");
    let usage: Value = serde_json::from_str(&usage.unwrap()).unwrap();
    assert_eq!(usage["111"][0]["type"], "ads_management");
    let (st, a, _) = s
        .call("POST", "/act_111/adsets", json!({"name": "India 25-34", "campaign_id": c["id"], "daily_budget": 100000, "billing_event": "IMPRESSIONS",
            "optimization_goal": "CONVERSATIONS", "destination_type": "WHATSAPP", "promoted_object": {"page_id": "222", "whatsapp_phone_number": "+919876543210"},
            "targeting": {"geo_locations": {"countries": ["IN"]}, "age_min": 25, "age_max": 34}, "status": "PAUSED", "start_time": "2026-10-01T00:00:00+0530"}))
        .await;
    assert_eq!(st, 200, "{a}");
    let (st, img, _) = s
        .call(
            "POST",
            "/act_111/adimages",
            json!({"bytes": "iVBORw0KGgo=", "name": "diwali.png"}),
        )
        .await;
    assert_eq!(st, 200, "{img}");
    let hash = img["images"]["diwali.png"]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, cr, _) = s
        .call("POST", "/act_111/adcreatives", json!({"name": "Creative v1", "object_story_spec": {"page_id": "222", "link_data": {"message": "30% off",
            "link": "https://wa.me/919876543210", "image_hash": hash, "call_to_action": {"type": "WHATSAPP_MESSAGE", "value": {"app_destination": "WHATSAPP"}}}}}))
        .await;
    assert_eq!(st, 200, "{cr}");
    let (st, ad, _) = s
        .call("POST", "/act_111/ads", json!({"name": "Ad 1", "adset_id": a["id"], "creative": {"creative_id": cr["id"]}, "status": "PAUSED"}))
        .await;
    assert_eq!(st, 200, "{ad}");
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    (id(&c), id(&a), id(&cr), id(&ad))
}

#[tokio::test]
async fn seed_000_flow_publish_review_and_read_back() {
    let s = sim(true, 1000).await;
    let (c, a, _cr, ad) = five_steps(&s).await;
    let (_, v, _) = s
        .call(
            "GET",
            &format!("/{ad}?fields=id,name,adset_id,creative,status,effective_status"),
            json!(null),
        )
        .await;
    assert_eq!(
        (v["status"].as_str(), v["effective_status"].as_str()),
        (Some("PAUSED"), Some("PAUSED"))
    );
    assert_eq!(v["adset_id"], a.as_str());
    // Publish the campaign, ad set and ad: the ad goes through review first.
    for id in [&c, &a, &ad] {
        let (st, v, _) = s
            .call("POST", &format!("/{id}"), json!({"status": "ACTIVE"}))
            .await;
        assert_eq!((st, &v), (200, &json!({"success": true})));
    }
    let (_, v, _) = s
        .call(
            "GET",
            &format!("/{ad}?fields=effective_status"),
            json!(null),
        )
        .await;
    assert_eq!(v["effective_status"], "PENDING_REVIEW");
    s.call(
        "GET",
        &format!("/{ad}?fields=effective_status"),
        json!(null),
    )
    .await;
    let (_, v, _) = s
        .call(
            "GET",
            &format!("/{ad}?fields=effective_status"),
            json!(null),
        )
        .await;
    assert_eq!(v["effective_status"], "ACTIVE");
    // Pausing the ad set shows on the ad.
    s.call("POST", &format!("/{a}"), json!({"status": "PAUSED"}))
        .await;
    let (_, v, _) = s
        .call(
            "GET",
            &format!("/{ad}?fields=effective_status"),
            json!(null),
        )
        .await;
    assert_eq!(v["effective_status"], "ADSET_PAUSED");
    // Deletion.
    let (st, _, _) = s.call("DELETE", &format!("/{ad}"), json!(null)).await;
    assert_eq!(st, 200);
    assert_eq!(s.run.sim.ad_object(&ad).unwrap()["status"], "DELETED");
    let (st, v, _) = s.call("DELETE", &format!("/{ad}"), json!(null)).await;
    assert_eq!((st, v["error"]["error_subcode"].as_i64()), (400, Some(33)));
}

#[tokio::test]
async fn metas_validations_and_errors() {
    let s = sim(false, 1000).await;
    let (st, v, _) = s
        .call(
            "POST",
            "/act_111/campaigns",
            json!({"name": "x", "objective": "OUTCOME_ENGAGEMENT"}),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_i64()),
        (400, Some(100)),
        "special_ad_categories is required: {v}"
    );
    let (_, c, _) = s
        .call(
            "POST",
            "/act_111/campaigns",
            json!({"name": "x", "objective": "OUTCOME_LEADS", "special_ad_categories": []}),
        )
        .await;
    let adset = |goal: &str, number: &str| {
        json!({"name": "s", "campaign_id": c["id"], "daily_budget": 50000, "billing_event": "IMPRESSIONS", "optimization_goal": goal,
            "destination_type": "WHATSAPP", "promoted_object": {"page_id": "222", "whatsapp_phone_number": number},
            "targeting": {"geo_locations": {"countries": ["IN"]}}})
    };
    let (st, v, _) = s
        .call(
            "POST",
            "/act_111/adsets",
            adset("LINK_CLICKS", "+919876543210"),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_i64()),
        (400, Some(100)),
        "LEADS allows CONVERSATIONS only: {v}"
    );
    let (st, v, _) = s
        .call(
            "POST",
            "/act_111/adsets",
            adset("CONVERSATIONS", "+15550000000"),
        )
        .await;
    assert_eq!(
        (st, v["error"]["message"].as_str()),
        (400, Some("(#200) Permissions error")),
        "{v}"
    );
    let (st, v, _) = s
        .call(
            "POST",
            "/act_999/campaigns",
            json!({"name": "x", "objective": "OUTCOME_LEADS", "special_ad_categories": []}),
        )
        .await;
    assert_eq!((st, v["error"]["error_subcode"].as_i64()), (400, Some(33)));
    let (st, v, _) = s
        .call("POST", "/act_111/adcreatives", json!({"name": "c", "object_story_spec": {"page_id": "222", "link_data": {"link": "https://example.com", "call_to_action": {"type": "WHATSAPP_MESSAGE"}}}}))
        .await;
    assert_eq!(st, 400, "a WhatsApp creative needs a wa.me link: {v}");
    // An unfunded account cannot publish.
    let s2 = sim(false, 1000).await;
    let (.., ad) = five_steps(&s2).await;
    let (st, v, _) = s2
        .call("POST", &format!("/{ad}"), json!({"status": "ACTIVE"}))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_i64()),
        (400, Some(1_487_749)),
        "{v}"
    );
    // A token without ads_management.
    let weak = s
        .run
        .sim
        .create_token(&json!({"scopes": ["pages_show_list"]}))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .http
        .get(format!("{}/act_111/ads", s.run.graph_url()))
        .bearer_auth(weak)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], 200);
}

#[tokio::test]
async fn paging_and_the_business_use_case_rate_limit() {
    let s = sim(true, 30).await;
    let mut ads = Vec::new();
    for _ in 0..3 {
        ads.push(five_steps(&s).await.3);
    }
    let (_, p1, _) = s
        .call(
            "GET",
            "/act_111/ads?fields=id,name,status,effective_status,daily_budget,created_time&limit=2",
            json!(null),
        )
        .await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    let after = p1["paging"]["cursors"]["after"].as_str().unwrap();
    assert!(p1["paging"]["next"].is_string());
    let (_, p2, _) = s
        .call(
            "GET",
            &format!("/act_111/ads?fields=id&limit=2&after={after}"),
            json!(null),
        )
        .await;
    assert_eq!(p2["data"].as_array().unwrap().len(), 1);
    assert!(p2["paging"].get("next").is_none());
    // 3 flows x 5 calls + 2 list calls + this one = 18 of 30: the header says 60%.
    let (_, _, usage) = s.call("GET", "/act_111/ads?fields=id", json!(null)).await;
    let u: Value = serde_json::from_str(&usage.unwrap()).unwrap();
    assert_eq!(u["111"][0]["call_count"], 60, "{u}");
    let mut limited = None;
    for _ in 0..15 {
        let (st, v, _) = s.call("GET", "/act_111/ads?fields=id", json!(null)).await;
        if st != 200 {
            limited = Some(v);
            break;
        }
    }
    let v = limited.expect("the account hits its limit");
    assert_eq!(v["error"]["code"], 80_004);
}

/// Ads that click to Messenger, Instagram Direct and several apps (Meta's "Ads that
/// Click to ..." guides): what each destination type takes, and the refusals.
#[tokio::test]
async fn messenger_instagram_and_multidestination_ads() {
    let s = sim(true, 1000).await;
    s.run
        .sim
        .add_page(&json!({"page_id": "222", "instagram_account_id": "17841400000000001"}))
        .unwrap();
    s.run.sim.add_ad_account(
        &json!({"id": "act_333", "page_ids": ["444"], "whatsapp_numbers": ["+919876543210"]}),
    );
    s.run.sim.add_page(&json!({"page_id": "444"})).unwrap();
    let s = &s;
    let campaign = |act: &'static str, objective: &'static str, categories: Value| async move {
        let (st, c, _) = s
            .call(
                "POST",
                &format!("/{act}/campaigns"),
                json!({"name": "c", "objective": objective, "special_ad_categories": categories}),
            )
            .await;
        assert_eq!(st, 200, "{c}");
        c["id"].as_str().unwrap().to_string()
    };
    let adset = |campaign: &str, dt: &str, goal: &str, po: Value| {
        json!({"name": "s", "campaign_id": campaign, "daily_budget": 50000, "billing_event": "IMPRESSIONS",
            "optimization_goal": goal, "destination_type": dt, "promoted_object": po,
            "targeting": {"geo_locations": {"countries": ["IN"]}}})
    };
    let user_msg = |v: &Value| {
        v["error"]["error_user_msg"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let eng = campaign("act_111", "OUTCOME_ENGAGEMENT", json!([])).await;

    // Accepted: each single destination and the four multidestination types.
    let page = json!({"page_id": "222"});
    let with_number = json!({"page_id": "222", "whatsapp_phone_number": "+919876543210"});
    let mut adsets = std::collections::HashMap::new();
    for (dt, po) in [
        ("MESSENGER", &page),
        ("INSTAGRAM_DIRECT", &page),
        ("MESSAGING_MESSENGER_WHATSAPP", &with_number),
        ("MESSAGING_INSTAGRAM_DIRECT_MESSENGER", &page),
        ("MESSAGING_INSTAGRAM_DIRECT_WHATSAPP", &with_number),
        (
            "MESSAGING_INSTAGRAM_DIRECT_MESSENGER_WHATSAPP",
            &with_number,
        ),
    ] {
        let (st, v, _) = s
            .call(
                "POST",
                "/act_111/adsets",
                adset(&eng, dt, "CONVERSATIONS", po.clone()),
            )
            .await;
        assert_eq!(st, 200, "{dt}: {v}");
        adsets.insert(dt, v["id"].as_str().unwrap().to_string());
    }

    // Refused as code 100 "Invalid parameter" with error_user_msg.
    let sales = campaign("act_111", "OUTCOME_SALES", json!([])).await;
    let housing = campaign("act_111", "OUTCOME_ENGAGEMENT", json!(["HOUSING"])).await;
    let leads = campaign("act_111", "OUTCOME_LEADS", json!([])).await;
    let eng_333 = campaign("act_333", "OUTCOME_ENGAGEMENT", json!([])).await;
    let all = "MESSAGING_INSTAGRAM_DIRECT_MESSENGER_WHATSAPP";
    let cases = [
        (
            "act_111",
            adset(&sales, all, "LINK_CLICKS", with_number.clone()),
            "Must be set to CONVERSATIONS",
        ),
        (
            "act_111",
            adset(&housing, all, "CONVERSATIONS", with_number.clone()),
            "special ad categories",
        ),
        (
            "act_111",
            adset(&leads, "INSTAGRAM_DIRECT", "CONVERSATIONS", page.clone()),
            "not valid for destination_type",
        ),
        (
            "act_111",
            adset(&leads, "MESSENGER", "CONVERSATIONS", page.clone()),
            "not valid for objective",
        ),
        (
            "act_111",
            adset(&eng, "INSTAGRAM_DIRECT", "REACH", page.clone()),
            "not valid for objective",
        ),
        (
            "act_111",
            adset(&eng, "MESSENGER", "CONVERSATIONS", with_number.clone()),
            "whatsapp_phone_number is not valid",
        ),
        (
            "act_111",
            adset(&eng, "MESSENGER", "CONVERSATIONS", json!({})),
            "page_id is required",
        ),
        (
            "act_333",
            adset(
                &eng_333,
                "INSTAGRAM_DIRECT",
                "CONVERSATIONS",
                json!({"page_id": "444"}),
            ),
            "Instagram business account connected",
        ),
    ];
    for (act, body, want) in cases {
        let (st, v, _) = s
            .call("POST", &format!("/{act}/adsets"), body.clone())
            .await;
        assert_eq!(
            (st, v["error"]["code"].as_i64()),
            (400, Some(100)),
            "{body}: {v}"
        );
        assert_eq!(v["error"]["message"], "(#100) Invalid parameter");
        assert!(user_msg(&v).contains(want), "{v} should say {want:?}");
    }
    let mut cheap = adset(&eng, "MESSENGER", "CONVERSATIONS", page.clone());
    cheap["billing_event"] = json!("LINK_CLICKS");
    let (st, v, _) = s.call("POST", "/act_111/adsets", cheap).await;
    assert_eq!(st, 400, "billing_event must be IMPRESSIONS: {v}");

    // Creatives: the guides' shapes, then the ad joins a matching ad set only.
    let creative = |ld_cta: Value, link: Option<&str>, ig: Option<&str>, feed: Option<Value>| {
        let mut ld = json!({"message": "hi", "call_to_action": ld_cta});
        if let Some(l) = link {
            ld["link"] = json!(l);
        }
        let mut oss = json!({"page_id": "222", "link_data": ld});
        if let Some(i) = ig {
            oss["instagram_user_id"] = json!(i);
        }
        let mut c = json!({"name": "c", "object_story_spec": oss});
        if let Some(f) = feed {
            c["asset_feed_spec"] = f;
        }
        c
    };
    let messenger = json!({"type": "MESSAGE_PAGE", "value": {"app_destination": "MESSENGER"}});
    let instagram =
        json!({"type": "INSTAGRAM_MESSAGE", "value": {"app_destination": "INSTAGRAM_DIRECT"}});
    let feed = json!({"optimization_type": "DOF_MESSAGING_DESTINATION", "call_to_actions": [
        {"type": "MESSAGE_PAGE", "value": {"app_destination": "MESSENGER", "link": "https://fb.com/messenger_doc/"}},
        {"type": "WHATSAPP_MESSAGE", "value": {"app_destination": "WHATSAPP", "link": "https://api.whatsapp.com/send"}},
        {"type": "INSTAGRAM_MESSAGE", "value": {"app_destination": "INSTAGRAM_DIRECT", "link": "https://www.instagram.com"}}]});
    let make = |body: Value| async move {
        let (st, v, _) = s.call("POST", "/act_111/adcreatives", body).await;
        (st, v)
    };
    let (st, m) = make(creative(
        messenger.clone(),
        Some("https://fb.com/messenger_doc/"),
        None,
        None,
    ))
    .await;
    assert_eq!(st, 200, "{m}");
    let (st, i) = make(creative(
        instagram.clone(),
        None,
        Some("17841400000000001"),
        None,
    ))
    .await;
    assert_eq!(st, 200, "{i}");
    let (st, multi) = make(creative(
        messenger.clone(),
        Some("https://fb.com/messenger_doc/"),
        Some("17841400000000001"),
        Some(feed.clone()),
    ))
    .await;
    assert_eq!(st, 200, "{multi}");
    for (body, want) in [
        (
            creative(instagram.clone(), None, None, None),
            "instagram_user_id is required",
        ),
        (
            creative(instagram.clone(), None, Some("999"), None),
            "not the Instagram account connected",
        ),
        (
            creative(
                json!({"type": "MESSAGE_PAGE", "value": {"app_destination": "WHATSAPP"}}),
                None,
                None,
                None,
            ),
            "app_destination must be MESSENGER",
        ),
        (
            creative(json!({"type": "LEARN_MORE"}), None, None, None),
            "call_to_action.type must be",
        ),
        (
            creative(
                messenger.clone(),
                None,
                Some("17841400000000001"),
                Some(
                    json!({"optimization_type": "REGULAR", "call_to_actions": feed["call_to_actions"]}),
                ),
            ),
            "DOF_MESSAGING_DESTINATION",
        ),
        (
            creative(
                messenger.clone(),
                None,
                None,
                Some(
                    json!({"optimization_type": "DOF_MESSAGING_DESTINATION", "call_to_actions": [feed["call_to_actions"][1]]}),
                ),
            ),
            "one of asset_feed_spec.call_to_actions",
        ),
    ] {
        let (st, v) = make(body.clone()).await;
        assert_eq!(
            (st, v["error"]["code"].as_i64()),
            (400, Some(100)),
            "{body}: {v}"
        );
        assert!(user_msg(&v).contains(want), "{v} should say {want:?}");
    }
    let ad = |adset: &str, creative: &Value| json!({"name": "a", "adset_id": adset, "creative": {"creative_id": creative["id"]}, "status": "PAUSED"});
    for (dt, c) in [("MESSENGER", &m), ("INSTAGRAM_DIRECT", &i), (all, &multi)] {
        let (st, v, _) = s.call("POST", "/act_111/ads", ad(&adsets[dt], c)).await;
        assert_eq!(st, 200, "{dt}: {v}");
    }
    for (dt, c) in [
        ("INSTAGRAM_DIRECT", &m),
        ("MESSENGER", &multi),
        ("MESSAGING_MESSENGER_WHATSAPP", &multi),
        ("MESSAGING_INSTAGRAM_DIRECT_MESSENGER", &m),
    ] {
        let (st, v, _) = s.call("POST", "/act_111/ads", ad(&adsets[dt], c)).await;
        assert_eq!(
            (st, v["error"]["code"].as_i64()),
            (400, Some(100)),
            "{dt}: {v}"
        );
        assert!(
            user_msg(&v).contains("It needs to match with the destination_type"),
            "{v}"
        );
    }
}
