//! Capture at its edges, through the local stack: a referral with fields of an
//! unexpected JSON type (issue 13, item 10), and the clicks that arrive before their
//! phone number id or Sinch app is onboarded (item 11).

use ctwa_tests::*;
use serde_json::{Value, json};

/// The exact odd referral of the issue: an integer ad id, a null headline, a list for
/// the media type. The click and its click id are kept; the odd fields are kept raw.
fn odd_cloud_webhook(wamid: &str, wa_id: &str, clid: &str) -> String {
    json!({"object":"whatsapp_business_account","entry":[{"id":FIXTURE_WABA,"changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":FIXTURE_PNID},
        "contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":wa_id}],
        "messages":[{"from":wa_id,"id":wamid,"timestamp":"1750275992","type":"text","text":{"body":"Hi"},
            "referral":{"source_url":"https://fb.me/3cr4Wqqkv","source_id":120208,"source_type":"ad",
                "headline":null,"body":"Summer Succulents are here!","media_type":["image"],"ctwa_clid":clid}}]}}]}]})
    .to_string()
}

/// The seed 004 callback with the same odd fields inside its escaped `metadata` string.
fn odd_sinch_callback(message_id: &str, identity: &str, clid: &str) -> String {
    let now = ctwa_shared::time::rfc3339_millis(ctwa_shared::time::now_millis());
    let referral = json!({"source_type":"ad","source_id":120208,"source_url":"https://fb.me/3cr4Wqqkv",
        "ctwa_clid":clid,"headline":null,"media_type":["image"],"body":"This is a great product"});
    json!({
        "app_id": FIXTURE_SINCH_APP,
        "accepted_time": now,
        "event_time": now,
        "project_id": "c36f3d3d-1513-4edd-ae42-11995557ff61",
        "message": {
            "id": message_id,
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": "Hi"}},
            "channel_identity": {"channel": "WHATSAPP", "identity": identity, "app_id": ""},
            "conversation_id": "01EKJ0KSWXMVDF05MG9TQ20S06",
            "contact_id": "01EKA07N79THJ20WSN6AS30TMW",
            "metadata": json!({"referral": referral}).to_string(),
            "accept_time": "2025-06-18T19:46:33.060170Z"
        }
    })
    .to_string()
}

fn assert_odd_click(conv: &Value, clid: &str) {
    let md = &conv["metadata"];
    assert_eq!(md["ctwa_clid"], clid, "{conv}");
    assert_eq!(md["ctwa_source_id"], "120208", "{conv}");
    assert_eq!(md["ctwa_body"].as_str().map(|b| !b.is_empty()), Some(true));
    assert!(md.get("ctwa_headline").is_none(), "{conv}");
    assert!(md.get("ctwa_media_type").is_none(), "{conv}");
    assert_eq!(
        md["ctwa_odd_fields"],
        json!({"source_id": 120208, "media_type": ["image"]}),
        "{conv}"
    );
    let click = &conv["clicks"][0];
    assert_eq!(click["ctwa_clid"], clid, "{conv}");
    assert_eq!(click["source_id"], "120208");
    assert_eq!(click["odd_fields"]["media_type"], json!(["image"]));
}

#[tokio::test]
async fn a_referral_field_of_an_unexpected_type_never_costs_the_click() {
    let app = spawn_app().await;
    let (s, v) = app
        .post_webhook(odd_cloud_webhook(
            "wamid.ODD1",
            "16505550101",
            "CLID-ODD-CLOUD",
        ))
        .await;
    assert_eq!((s, &v["stored"]), (200, &json!(1)), "{v}");
    let (s, v) = app
        .post_sinch(odd_sinch_callback(
            "01ODDSINCH1",
            "46712300101",
            "CLID-ODD-SINCH",
        ))
        .await;
    assert_eq!((s, &v["stored"]), (200, &json!(1)), "{v}");
    settled("both clicks", 2, || app.click_count()).await;
    for (phone, clid) in [
        ("16505550101", "CLID-ODD-CLOUD"),
        ("46712300101", "CLID-ODD-SINCH"),
    ] {
        let (s, v) = app
            .get(&format!("/v1/conversations?phone={phone}"), &app.api_key)
            .await;
        assert_eq!(s, 200, "{v}");
        let id = v["conversations"][0]["id"]
            .as_str()
            .expect("a conversation");
        let (s, conv) = app
            .get(&format!("/v1/conversations/{id}"), &app.api_key)
            .await;
        assert_eq!(s, 200, "{conv}");
        assert_odd_click(&conv, clid);
    }
    app.stack.stop().await;
}

/// A phone number id and a Sinch app that no account has claimed yet.
const EARLY_PNID: &str = "777000222";
const EARLY_SINCH_APP: &str = "EARLYAPP1";

/// template.yaml with the capture-backlog function's item budget set to `n`.
fn template_with_backlog_budget(n: usize) -> std::path::PathBuf {
    template_variant(&[(
        "BACKLOG_ITEMS_PER_RUN: \"1000\"",
        &format!("BACKLOG_ITEMS_PER_RUN: \"{n}\""),
    )])
}

async fn drain(app: &TestApp) -> Value {
    app.stack
        .lambda
        .invoke_scheduled("CaptureBacklogFunction")
        .await
        .expect("the capture-backlog function runs")
}

/// The unrouted items in the data table: (sort key, expires_at).
async fn unrouted_items(app: &TestApp) -> Vec<(String, Option<i64>)> {
    let out = app
        .clients
        .dynamodb
        .scan()
        .table_name(&app.cfg.data_table)
        .send()
        .await
        .expect("scan");
    out.items()
        .iter()
        .filter(|i| {
            i.get("pk")
                .and_then(|v| v.as_s().ok())
                .is_some_and(|pk| pk.starts_with("UNROUTED#"))
        })
        .map(|i| {
            let sk = i["sk"].as_s().unwrap().clone();
            let ttl = i
                .get("expires_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok());
            (sk, ttl)
        })
        .collect()
}

/// Clicks that arrive before their phone number id is onboarded are kept (with the
/// inbox's TTL), and captured into the account that claims the route: in message order
/// (the earliest click is the first touch, whatever order they came in), a bounded
/// share per run, each once; after the claim, new messages go straight in. A Sinch app
/// is different (issue 14): no one can check a callback for an app that has no secret
/// yet, so it is refused (Sinch retries it) and lands once the app is linked with its
/// secret.
#[tokio::test]
async fn clicks_that_arrive_before_onboarding_are_captured_when_the_route_is_linked() {
    let app = spawn_app_with(AppOptions {
        template: Some(template_with_backlog_budget(4)),
        ..Default::default()
    })
    .await;
    // Seven messages for routes nobody has claimed: the later click of Alice first.
    let alice = "16505550201";
    let cloud = [
        ("wamid.E1", alice, Some("CLID-LATE"), 1_750_000_100),
        ("wamid.E2", alice, Some("CLID-EARLY"), 1_750_000_000),
        ("wamid.E3", "16505550202", Some("CLID-BOB"), 1_750_000_050),
        ("wamid.E4", "16505550203", None, 1_750_000_060),
        ("wamid.E5", "16505550204", Some("CLID-DAN-1"), 1_750_000_070),
        ("wamid.E6", "16505550204", Some("CLID-DAN-2"), 1_750_000_080),
    ];
    for (wamid, wa_id, clid, ts) in cloud {
        let (s, v) = app
            .post_webhook(ctwa_webhook(EARLY_PNID, wamid, wa_id, clid, ts))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let sinch = odd_sinch_callback("01EARLYSINCH1", "46712300201", "CLID-SINCH-EARLY")
        .replace(FIXTURE_SINCH_APP, EARLY_SINCH_APP);
    let early_secret = "early-bird-sinch-secret-01";
    let (s, v) = app
        .post_sinch_signed_with(early_secret, sinch.clone())
        .await;
    assert_eq!(s, 401, "an app with no secret yet: {v}");
    settled("six unrouted items", 6, || app.count_unrouted()).await;
    assert_eq!(app.click_count().await, 0);
    // They expire with the inbox (InboxTtlDays: 30), not never.
    let now = ctwa_shared::time::now_secs();
    for (sk, ttl) in unrouted_items(&app).await {
        let ttl = ttl.unwrap_or_else(|| panic!("{sk} has no TTL"));
        assert!((ttl - (now + 30 * 86_400)).abs() < 3_600, "{sk}: {ttl}");
    }
    // Not linked yet: a run captures nothing (it only ends the fixture account's empty
    // drains).
    let r = drain(&app).await;
    assert_eq!(r["captured"], 0, "{r}");
    assert_eq!(app.count_unrouted().await, 6);

    // Onboarding over HTTP claims both routes.
    let op = app.operator_key().await;
    let (s, v) = app
        .post_json(
            "/v1/admin/accounts",
            &op,
            json!({"id": "early", "name": "Early bird", "phone_number_ids": [EARLY_PNID],
                   "sinch_app_id": EARLY_SINCH_APP, "sinch_webhook_secret": early_secret}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .post_json("/v1/api-keys", &op, json!({"account_id": "early"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();

    // Sinch retries the refused callback: it lands, straight in the account, once the
    // webhook sees the new secret (a missing one is remembered for 10 s).
    let retried = eventually(
        "Sinch's retry is accepted",
        std::time::Duration::from_secs(30),
        || async {
            let (s, v) = app
                .post_sinch_signed_with(early_secret, sinch.clone())
                .await;
            if s != 200 {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            (s == 200).then_some(v)
        },
    )
    .await;
    assert_eq!(retried["stored"], 1, "{retried}");

    // Four items per run: two runs drain the six, a third finds nothing.
    let r1 = drain(&app).await;
    assert_eq!(
        (&r1["captured"], &r1["more"]),
        (&json!(4), &json!(true)),
        "{r1}"
    );
    assert_eq!(app.count_unrouted().await, 2);
    let r2 = drain(&app).await;
    assert_eq!(
        (&r2["captured"], &r2["more"]),
        (&json!(2), &json!(false)),
        "{r2}"
    );
    assert_eq!(app.count_unrouted().await, 0);
    let r3 = drain(&app).await;
    assert_eq!(
        (&r3["captured"], &r3["routes"]),
        (&json!(0), &json!(0)),
        "{r3}"
    );
    // Six Cloud referrals (one a Status click without an id) and the Sinch one.
    settled("seven clicks", 7, || app.click_count()).await;

    let conv = |phone: &'static str| {
        let (app, key) = (&app, key.clone());
        async move {
            let (s, v) = app
                .get(&format!("/v1/conversations?phone={phone}"), &key)
                .await;
            assert_eq!(s, 200, "{v}");
            v["conversations"][0].clone()
        }
    };
    let a = conv("16505550201").await;
    assert_eq!(a["metadata"]["ctwa_clid"], "CLID-EARLY", "{a}");
    assert_eq!(a["clicks"].as_array().unwrap().len(), 2, "{a}");
    assert_eq!(
        conv("16505550204").await["metadata"]["ctwa_clid"],
        "CLID-DAN-1"
    );
    let s = conv("46712300201").await;
    assert_eq!(s["channel"], "sinch");
    assert_eq!(s["metadata"]["ctwa_clid"], "CLID-SINCH-EARLY", "{s}");
    // The fixture account sees none of them.
    let (_, v) = app
        .get("/v1/conversations?phone=16505550201", &app.api_key)
        .await;
    assert_eq!(v["conversations"], json!([]), "{v}");

    // Once linked, a message goes straight to the account; nothing is kept unrouted.
    app.post_webhook(ctwa_webhook(
        EARLY_PNID,
        "wamid.E7",
        "16505550205",
        Some("CLID-AFTER"),
        1_750_000_200,
    ))
    .await;
    settled("the new click", 8, || app.click_count()).await;
    assert_eq!(app.count_unrouted().await, 0);
    assert_eq!(
        conv("16505550205").await["metadata"]["ctwa_clid"],
        "CLID-AFTER"
    );
    app.stack.stop().await;
}
