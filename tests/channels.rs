//! Click-to-Messenger and click-to-Instagram-Direct beside WhatsApp, through the local
//! stack: a Page / Instagram account linked with the tenant's token, its dataset
//! provisioned, signed `page` / `instagram` webhooks captured (first touch by the
//! earliest ad, full history, replays and reorderings changing nothing), and one
//! conversion sent once with the channel's keys and the partner agent.

use ctwa_shared::meta::connection::REQUIRED_SCOPES;
use ctwa_tests::*;
use serde_json::{Value, json};

const PAGE: &str = "1122334455";
const IG: &str = "17841400000000001";
/// A Page of another business: the tenant's token was not granted on it.
const OTHER_PAGE: &str = "9988776655";

/// A stack whose account is connected with a token granted on the Page and its
/// Instagram account (and every channel's events permission unless `without` names
/// one), the Page and the Instagram account linked by the operator.
async fn channel_app(without: Option<&str>) -> (TestApp, String) {
    let app = spawn_app().await;
    for (page, ig) in [(PAGE, Some(IG)), (OTHER_PAGE, None)] {
        app.sim
            .sim
            .add_page(&json!({"page_id": page, "name": "Succulents", "instagram_account_id": ig}))
            .expect("page");
    }
    let mut scopes: Vec<&str> = REQUIRED_SCOPES.to_vec();
    scopes.extend(["pages_messaging", "page_events", "instagram_manage_events"]);
    scopes.retain(|s| Some(*s) != without);
    app.connect_meta_granted(
        &app.api_key,
        json!({
            "scopes": scopes, "waba_id": FIXTURE_WABA,
            "page_ids": [PAGE], "instagram_account_ids": [IG],
        }),
    )
    .await;
    let op = app.operator_key().await;
    for (path, body) in [
        ("pages", json!({"page_id": PAGE})),
        ("instagram-accounts", json!({"instagram_account_id": IG})),
    ] {
        let (s, v) = app
            .post_json(
                &format!("/v1/admin/accounts/{}/{path}", app.account_id),
                &op,
                body,
            )
            .await;
        assert_eq!(
            (s, v["route"]["status"].as_str()),
            (201, Some("verified")),
            "{v}"
        );
    }
    (app, op)
}

fn now_ms() -> i64 {
    ctwa_shared::time::now_millis()
}

fn events_at_meta(app: &TestApp) -> Vec<Value> {
    app.sim.sim.received_events()
}

/// One channel end to end: `object` is `page` or `instagram`.
async fn one_channel(object: &str) {
    let (app, _) = channel_app(None).await;
    let (business, id_field, customer_field, channel) = match object {
        "page" => (PAGE, "page_id", "psid", "messenger"),
        _ => (IG, "instagram_account_id", "igsid", "instagram"),
    };
    let (s, ds) = app
        .post_json("/v1/dataset", &app.api_key, json!({id_field: business}))
        .await;
    assert_eq!((s, &ds["created"]), (200, &json!(true)), "{ds}");
    let dataset = ds["dataset_id"].as_str().expect("dataset").to_string();
    let (s, again) = app
        .post_json("/v1/dataset", &app.api_key, json!({id_field: business}))
        .await;
    assert_eq!(
        (s, &again["dataset_id"], &again["created"]),
        (200, &ds["dataset_id"], &json!(false))
    );

    // The later ad click arrives first; an echo of the business's reply and a read
    // receipt ride along; then the earlier click, then the whole first delivery again.
    let customer = unique("1000");
    let t = now_ms();
    let echo = json!({"sender": {"id": business}, "recipient": {"id": customer},
        "timestamp": t - 3_000_000, "message": {"mid": unique("echo"), "text": "Hi!", "is_echo": true}});
    let read = json!({"sender": {"id": customer}, "recipient": {"id": business},
        "timestamp": t - 2_999_000, "read": {"mid": "m-x"}});
    let later = messaging_webhook(
        object,
        business,
        vec![
            messaging_message(
                business,
                &customer,
                &unique("mid"),
                Some("120000000000000002"),
                t - 3_600_000,
            ),
            echo,
            read,
        ],
    );
    let earlier = messaging_webhook(
        object,
        business,
        vec![messaging_message(
            business,
            &customer,
            &unique("mid"),
            Some("120000000000000001"),
            t - 7_200_000,
        )],
    );
    let before = app.click_count().await;
    let (s, v) = app.post_webhook(later.clone()).await;
    assert_eq!(
        (s, &v["stored"], &v["statuses"]),
        (200, &json!(1), &json!(2)),
        "{v}"
    );
    let (s, v) = app.post_webhook(earlier).await;
    assert_eq!((s, &v["stored"]), (200, &json!(1)), "{v}");
    let (s, v) = app.post_webhook(later).await;
    assert_eq!(
        (s, &v["stored"], &v["duplicates"]),
        (200, &json!(0), &json!(1)),
        "{v}"
    );
    settled("both ad clicks captured", before + 2, || app.click_count()).await;

    let (s, v) = app
        .get(
            &format!("/v1/conversations?{customer_field}={customer}"),
            &app.api_key,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let convs = v["conversations"].as_array().expect("conversations");
    assert_eq!(convs.len(), 1, "{v}");
    let conv = &convs[0];
    assert_eq!(conv["channel"], channel);
    assert_eq!(conv["business_id"], business);
    assert_eq!(conv["customer"][customer_field], customer.as_str());
    let m = &conv["metadata"];
    assert_eq!(
        m["ctwa_source_id"], "120000000000000001",
        "first touch: the earliest ad: {v}"
    );
    assert_eq!(m["ctwa_source_type"], "ADS");
    assert_eq!(m["ctwa_ref"], "summer-sale");
    assert!(
        m.get("ctwa_clid").is_none(),
        "no click id on {channel}: {m}"
    );
    assert_eq!(conv["clicks"].as_array().map(Vec::len), Some(2));
    let conversation_id = conv["id"].as_str().expect("id").to_string();

    // A purchase by the customer's id: one event at Meta, the channel's keys, the
    // partner agent at the top of the request; the same event id again is answered
    // from the first send.
    let event_id = unique("purchase");
    let body = json!({customer_field: customer, "event_name": "Purchase", "event_id": event_id,
        "value": 1499, "currency": "INR", "messaging_channel": channel});
    let (s, first) = app
        .post_json("/v1/conversions", &app.api_key, body.clone())
        .await;
    assert_eq!((s, &first["success"]), (200, &json!(true)), "{first}");
    // Credited to the last ad clicked before the purchase, in this conversation.
    assert_eq!(
        first["attribution"]["conversation_id"],
        conversation_id.as_str(),
        "{first}"
    );
    assert_eq!(
        first["attribution"]["source_id"], "120000000000000002",
        "{first}"
    );
    assert!(first["ctwa_clid"].is_null(), "{first}");
    let (s, dup) = app.post_json("/v1/conversions", &app.api_key, body).await;
    assert_eq!((s, &dup["duplicate"]), (200, &json!(true)), "{dup}");
    let at_meta = events_at_meta(&app);
    assert_eq!(at_meta.len(), 1, "{at_meta:?}");
    let sent = &at_meta[0];
    assert_eq!(sent["dataset_id"], dataset.as_str());
    assert_eq!(sent["partner_agent"], PARTNER_AGENT);
    let e = &sent["event"];
    assert_eq!(e["messaging_channel"], channel);
    assert_eq!(e["action_source"], "business_messaging");
    let want = match channel {
        "messenger" => json!({"page_id": PAGE, "page_scoped_user_id": customer}),
        _ => json!({"instagram_business_account_id": IG, "ig_sid": customer}),
    };
    assert_eq!(e["user_data"], want, "{e}");

    // By conversation id the same customer is found; a channel that is not the
    // conversation's is refused before anything is stored.
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"conversation_id": conversation_id, "event_name": "LeadSubmitted", "messaging_channel": "whatsapp"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(events_at_meta(&app).len(), 1);
    app.stack.stop().await;
}

#[tokio::test]
async fn a_messenger_ad_click_is_captured_and_its_purchase_sent_once_with_the_page_keys() {
    require_local_env();
    one_channel("page").await;
}

#[tokio::test]
async fn an_instagram_ad_click_is_captured_and_its_purchase_sent_once_with_the_instagram_keys() {
    require_local_env();
    one_channel("instagram").await;
}

/// One business on WhatsApp and Messenger: two customers, two conversations, each
/// conversion under its own channel's keys and dataset; nothing crosses.
#[tokio::test]
async fn a_whatsapp_customer_and_a_messenger_customer_of_one_business_stay_apart() {
    require_local_env();
    let (app, _) = channel_app(None).await;
    let (s, wa_ds) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200, "{wa_ds}");
    let (s, page_ds) = app
        .post_json("/v1/dataset", &app.api_key, json!({"page_id": PAGE}))
        .await;
    assert_eq!(s, 200, "{page_ds}");
    assert_ne!(wa_ds["dataset_id"], page_ds["dataset_id"]);
    let psid = unique("2000");
    let t = ctwa_shared::time::now_secs();
    let before = app.click_count().await;
    app.post_webhook(ctwa_webhook(
        FIXTURE_PNID,
        &unique("wamid."),
        "919876543210",
        Some("CLID-WA"),
        t - 600,
    ))
    .await;
    app.post_webhook(messaging_webhook(
        "page",
        PAGE,
        vec![messaging_message(
            PAGE,
            &psid,
            &unique("mid"),
            Some("120000000000000003"),
            (t - 600) * 1000,
        )],
    ))
    .await;
    settled("both clicks", before + 2, || app.click_count()).await;
    let (_, wa) = app
        .get("/v1/conversations?phone=%2B919876543210", &app.api_key)
        .await;
    let (_, fb) = app
        .get(&format!("/v1/conversations?psid={psid}"), &app.api_key)
        .await;
    assert_eq!(
        wa["conversations"].as_array().map(Vec::len),
        Some(1),
        "{wa}"
    );
    assert_eq!(
        fb["conversations"].as_array().map(Vec::len),
        Some(1),
        "{fb}"
    );
    assert_ne!(wa["conversations"][0]["id"], fb["conversations"][0]["id"]);
    assert_eq!(wa["conversations"][0]["channel"], "cloud");
    assert_eq!(fb["conversations"][0]["channel"], "messenger");

    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"phone": "+919876543210", "event_name": "LeadSubmitted"}),
        )
        .await;
    assert_eq!((s, &v["success"]), (200, &json!(true)), "{v}");
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"psid": psid, "event_name": "LeadSubmitted"}),
        )
        .await;
    assert_eq!((s, &v["success"]), (200, &json!(true)), "{v}");
    // A psid that never wrote to the Page: nothing to attribute, nothing sent.
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"psid": "31337", "event_name": "LeadSubmitted"}),
        )
        .await;
    assert_eq!(
        (s, &v["success"], &v["reason"]),
        (200, &json!(false), &json!("no_conversation_for_customer")),
        "{v}"
    );
    // A phone together with a psid is refused.
    let (s, _) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"psid": psid, "phone": "+919876543210", "event_name": "LeadSubmitted"}),
        )
        .await;
    assert_eq!(s, 400);
    let at_meta = events_at_meta(&app);
    assert_eq!(at_meta.len(), 2, "{at_meta:?}");
    let by_channel = |c: &str| {
        at_meta
            .iter()
            .find(|e| e["event"]["messaging_channel"] == c)
            .unwrap_or_else(|| panic!("no {c} event: {at_meta:?}"))
            .clone()
    };
    let wa_sent = by_channel("whatsapp");
    let fb_sent = by_channel("messenger");
    assert_eq!(wa_sent["dataset_id"], wa_ds["dataset_id"]);
    assert_eq!(wa_sent["event"]["user_data"]["ctwa_clid"], "CLID-WA");
    assert!(
        wa_sent["event"]["user_data"]
            .get("page_scoped_user_id")
            .is_none()
    );
    assert_eq!(fb_sent["dataset_id"], page_ds["dataset_id"]);
    assert_eq!(
        fb_sent["event"]["user_data"]["page_scoped_user_id"],
        psid.as_str()
    );
    assert!(fb_sent["event"]["user_data"].get("ctwa_clid").is_none());
    // The status lists each channel's permission and datasets.
    let (_, st) = app.get("/v1/status", &app.api_key).await;
    let ch = &st["channels"];
    assert_eq!(ch["messenger"]["permission_granted"], true, "{st}");
    assert_eq!(
        ch["messenger"]["pages"],
        json!([{"page_id": PAGE, "dataset_id": page_ds["dataset_id"]}])
    );
    assert_eq!(
        ch["instagram"]["instagram_accounts"],
        json!([{"instagram_account_id": IG, "dataset_id": null}])
    );
    app.stack.stop().await;
}

/// Refusals before Meta: a Page the token does not reach is not linked; a channel
/// whose events permission the token lacks gets a clear error and Meta is not called;
/// another tenant cannot provision this tenant's Page's dataset.
#[tokio::test]
async fn a_missing_permission_or_a_foreign_page_is_refused_before_meta() {
    require_local_env();
    let (app, op) = channel_app(Some("page_events")).await;
    let (s, v) = app
        .post_json(
            &format!("/v1/admin/accounts/{}/pages", app.account_id),
            &op,
            json!({"page_id": OTHER_PAGE}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let (_, acct) = app
        .get(&format!("/v1/admin/accounts/{}", app.account_id), &op)
        .await;
    assert_eq!(acct["account"]["page_ids"], json!([PAGE]), "{acct}");
    assert_eq!(
        acct["account"]["instagram_account_ids"],
        json!([IG]),
        "{acct}"
    );

    let dataset_posts = |app: &TestApp| {
        app.sim
            .sim
            .requests()
            .iter()
            .filter(|r| {
                r["method"] == "POST"
                    && r["path"].as_str().unwrap_or_default().ends_with("/dataset")
            })
            .count()
    };
    let (s, v) = app
        .post_json("/v1/dataset", &app.api_key, json!({"page_id": PAGE}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("meta_permission_missing")),
        "{v}"
    );
    assert_eq!(v["error"]["missing_permission"], "page_events");
    assert_eq!(dataset_posts(&app), 0);
    // The Instagram account's permission is there: its dataset is provisioned.
    let (s, v) = app
        .post_json(
            "/v1/dataset",
            &app.api_key,
            json!({"instagram_account_id": IG}),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // A Messenger customer's conversion: refused before Meta, nothing sent.
    let psid = unique("3000");
    let before = app.click_count().await;
    app.post_webhook(messaging_webhook(
        "page",
        PAGE,
        vec![messaging_message(
            PAGE,
            &psid,
            &unique("mid"),
            Some("120000000000000004"),
            now_ms() - 60_000,
        )],
    ))
    .await;
    settled("click", before + 1, || app.click_count()).await;
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"psid": psid, "event_name": "LeadSubmitted"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("meta_permission_missing")),
        "{v}"
    );
    assert!(events_at_meta(&app).is_empty());

    // Another tenant names this tenant's Page: not found, nothing asked of Meta.
    let (_, other_key) = app.add_account("5550001").await;
    let calls = app.sim.sim.requests().len();
    let (s, v) = app
        .post_json(
            "/v1/dataset",
            &other_key,
            json!({"instagram_account_id": IG}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(app.sim.sim.requests().len(), calls);
    let (s, v) = app
        .get(&format!("/v1/conversations?psid={psid}"), &other_key)
        .await;
    assert_eq!(
        (s, v["conversations"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    app.stack.stop().await;
}

/// An Instagram click that arrives before its account is linked is kept unrouted and
/// captured (first touch and all) when the operator links the Instagram account.
#[tokio::test]
async fn an_instagram_click_before_its_account_is_linked_is_captured_when_it_is() {
    require_local_env();
    let app = spawn_app().await;
    app.sim
        .sim
        .add_page(&json!({"page_id": PAGE, "instagram_account_id": IG}))
        .expect("page");
    let igsid = unique("4000");
    let (s, v) = app
        .post_webhook(messaging_webhook(
            "instagram",
            IG,
            vec![messaging_message(
                IG,
                &igsid,
                &unique("mid"),
                Some("120000000000000005"),
                now_ms() - 60_000,
            )],
        ))
        .await;
    assert_eq!((s, &v["stored"]), (200, &json!(1)), "{v}");
    settled("one unrouted item", 1, || app.count_unrouted()).await;
    assert_eq!(app.click_count().await, 0);
    // Not connected yet: linked pending, and captured all the same.
    let op = app.operator_key().await;
    let (s, v) = app
        .post_json(
            &format!("/v1/admin/accounts/{}/instagram-accounts", app.account_id),
            &op,
            json!({"instagram_account_id": IG}),
        )
        .await;
    assert_eq!(
        (s, v["route"]["status"].as_str()),
        (201, Some("pending")),
        "{v}"
    );
    let r = app
        .stack
        .lambda
        .invoke_scheduled("CaptureBacklogFunction")
        .await
        .expect("the capture-backlog function runs");
    assert_eq!(r["captured"], 1, "{r}");
    assert_eq!(app.count_unrouted().await, 0);
    let (_, v) = app
        .get(&format!("/v1/conversations?igsid={igsid}"), &app.api_key)
        .await;
    assert_eq!(v["conversations"][0]["channel"], "instagram", "{v}");
    assert_eq!(
        v["conversations"][0]["metadata"]["ctwa_source_id"],
        "120000000000000005"
    );
    // When the account connects with a token granted on it, the route is verified.
    app.connect_meta_granted(
        &app.api_key,
        json!({
            "scopes": REQUIRED_SCOPES, "waba_id": FIXTURE_WABA, "instagram_account_ids": [IG],
        }),
    )
    .await;
    let (s, v) = app
        .post_json(
            &format!("/v1/admin/accounts/{}/phone-numbers/verify", app.account_id),
            &op,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let ig_route = v["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["instagram_account_id"] == IG))
        .unwrap_or_else(|| panic!("no Instagram route: {v}"))
        .clone();
    assert_eq!(ig_route["status"], "verified", "{v}");
    app.stack.stop().await;
}
