//! Issue 14, hole 1, written as the attack: a tenant holding its own Sinch app's secret
//! signs callbacks for another tenant's app (or for apps no one linked), and dates its
//! forged clicks so that they become first and last touches. Each Sinch app has its own
//! secret, set when the app is linked (kept in Secrets Manager, checked by the webhook
//! through the template's IAM), and a click dated far from its signed timestamp is kept
//! but is never a touch.

use ctwa_tests::*;
use serde_json::{Value, json};

fn callback(app_id: &str, message_id: &str, phone: &str, clid: &str, event_ms: i64) -> String {
    let referral = json!({"source_type": "ad", "source_id": "120226305854810726",
        "source_url": "https://fb.me/x", "ctwa_clid": clid, "headline": "Our new product"});
    json!({
        "app_id": app_id,
        "event_time": ctwa_shared::time::rfc3339_millis(event_ms),
        "project_id": "c36f3d3d-1513-4edd-ae42-11995557ff61",
        "message": {
            "id": message_id,
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": "Hi"}},
            "channel_identity": {"channel": "WHATSAPP", "identity": phone, "app_id": ""},
            "contact_id": "01EKA07N79THJ20WSN6AS30TMW",
            "metadata": json!({"referral": referral}).to_string(),
        }
    })
    .to_string()
}

const B_APP: &str = "01TENANTB0000000000000APPB";
const B_SECRET: &str = "tenant-b-own-sinch-secret-0001";

#[tokio::test]
async fn a_tenants_sinch_secret_cannot_sign_for_another_tenants_app() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    // Tenant B onboards with its own Sinch app and that app's webhook secret.
    let (s, v) = app
        .request(
            "POST",
            "/v1/admin/accounts",
            &op,
            Some(json!({"name": "Tenant B", "sinch_app_id": B_APP, "sinch_webhook_secret": B_SECRET})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["account"]["sinch_webhook_secret_set"], true, "{v}");
    assert!(
        !v.to_string().contains(B_SECRET),
        "the secret is never shown: {v}"
    );
    let b_account = v["account"]["id"].as_str().unwrap().to_string();

    // B's own callback, signed with B's secret: accepted.
    let now = ctwa_shared::time::now_millis();
    let own = callback(B_APP, "01BOWN", "46700000101", "CLID-B-OWN", now);
    let (s, v) = app.post_sinch_signed_with(B_SECRET, own).await;
    assert_eq!((s, &v["stored"]), (200, &json!(1)), "{v}");
    let inbox = app.inbox_count().await;
    let unrouted = app.count_unrouted().await;

    // The attack: B signs callbacks for A's app with B's secret, a click back-dated to
    // 1970 (to become A's customer's permanent first touch) and one dated now (to be
    // the last click).
    let victim = "46700000202";
    for (id, clid, at) in [
        ("01FORGED1970", "CLID-FORGED-FIRST", 0),
        ("01FORGEDNOW", "CLID-FORGED-LAST", now),
    ] {
        let forged = callback(FIXTURE_SINCH_APP, id, victim, clid, at);
        let (s, v) = app.post_sinch_signed_with(B_SECRET, forged).await;
        assert_eq!(s, 401, "a callback for A's app signed with B's secret: {v}");
        assert_eq!(v["error"]["code"], "unauthorized", "{v}");
    }
    // And for apps no one linked: refused as well, not kept as unrouted items.
    for n in 0..3 {
        let made_up = callback(
            &format!("01MADEUP{n}"),
            &format!("01X{n}"),
            victim,
            "C",
            now,
        );
        let (s, _) = app.post_sinch_signed_with(B_SECRET, made_up).await;
        assert_eq!(s, 401);
    }
    // A callback naming no usable app id is the caller's mistake.
    let (s, v) = app
        .post_sinch_signed_with(B_SECRET, r#"{"app_id":"../webhook-secret","message":{}}"#)
        .await;
    assert_eq!(s, 400, "{v}");

    // Nothing of any of them was stored.
    assert_eq!(app.inbox_count().await, inbox, "forged callbacks stored");
    assert_eq!(app.count_unrouted().await, unrouted);
    let (s, v) = app
        .get(&format!("/v1/conversations?phone={victim}"), &app.api_key)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["conversations"], json!([]), "{v}");

    // A's own secret still works for A's app.
    let real = callback(FIXTURE_SINCH_APP, "01AREAL", victim, "CLID-A-REAL", now);
    let (s, v) = app.post_sinch(real).await;
    assert_eq!((s, &v["stored"]), (200, &json!(1)), "{v}");
    let conv = eventually("A's click", std::time::Duration::from_secs(30), || async {
        let (_, v) = app
            .get(&format!("/v1/conversations?phone={victim}"), &app.api_key)
            .await;
        v["conversations"].get(0).cloned()
    })
    .await;
    assert_eq!(conv["metadata"]["ctwa_clid"], "CLID-A-REAL");

    // Rotation: the new secret works at once; the replaced one only for its window.
    let rotated = "tenant-b-rotated-sinch-secret-2";
    let path = format!("/v1/admin/accounts/{b_account}/sinch-webhook-secret");
    let (s, v) = app
        .request(
            "PUT",
            &path,
            &op,
            Some(json!({"secret": rotated, "previous_valid_seconds": 600})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["previous_valid_until"].is_string(), "{v}");
    assert!(!v.to_string().contains(rotated));
    for (id, secret) in [("01BNEW", rotated), ("01BOLD", B_SECRET)] {
        let body = callback(B_APP, id, "46700000101", "CLID-B", now);
        let (s, v) = app.post_sinch_signed_with(secret, body).await;
        assert_eq!(s, 200, "{id}: {v}");
    }
    // Only the operator sets secrets; an account key cannot, nor for an account
    // without a Sinch app, nor a short one.
    let (s, _) = app
        .request("PUT", &path, &app.api_key, Some(json!({"secret": rotated})))
        .await;
    assert_eq!(s, 403);
    let (s, v) = app
        .request("PUT", &path, &op, Some(json!({"secret": "short"})))
        .await;
    assert_eq!(s, 400, "{v}");
    let (no_sinch, _) = app.add_account("777000111").await;
    let (s, v) = app
        .request(
            "PUT",
            &format!("/v1/admin/accounts/{no_sinch}/sinch-webhook-secret"),
            &op,
            Some(json!({"secret": rotated})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    app.stack.stop().await;
}

#[tokio::test]
async fn a_click_dated_far_from_its_signed_timestamp_is_kept_but_never_a_touch() {
    let app = spawn_app().await;
    app.connect_meta(&app.api_key).await;
    let (s, v) = app.post_json("/v1/dataset", &app.api_key, json!({})).await;
    assert_eq!(s, 200, "{v}");
    let phone = "46700000303";
    let now = ctwa_shared::time::now_millis();
    let hour = 3_600_000;
    // Correctly signed, but dated 1970, eight days ago, and tomorrow: none can be vouched
    // for by the signature's timestamp. One dated an hour ago is.
    for (id, clid, at) in [
        ("01T1970", "CLID-1970", 0),
        ("01TWEEKAGO", "CLID-8-DAYS", now - 8 * 24 * hour),
        ("01TREAL", "CLID-REAL", now - hour),
        ("01TTOMORROW", "CLID-TOMORROW", now + 24 * hour),
    ] {
        let (s, v) = app
            .post_sinch(callback(FIXTURE_SINCH_APP, id, phone, clid, at))
            .await;
        assert_eq!((s, &v["stored"]), (200, &json!(1)), "{id}: {v}");
    }
    settled("four clicks kept", 4, || app.click_count()).await;
    let (_, v) = app
        .get(&format!("/v1/conversations?phone={phone}"), &app.api_key)
        .await;
    let conv = &v["conversations"][0];
    assert_eq!(
        conv["metadata"]["ctwa_clid"], "CLID-REAL",
        "the first touch is the click that can be vouched for: {conv}"
    );
    // Every click is in the history; the three others say why they are not touches.
    let id = conv["id"].as_str().unwrap();
    let (_, v) = app
        .get(&format!("/v1/conversations/{id}"), &app.api_key)
        .await;
    let clicks = v["clicks"].as_array().expect("clicks").clone();
    assert_eq!(clicks.len(), 4, "{v}");
    let unverified: Vec<&str> = clicks
        .iter()
        .filter(|c| c["time_unverified"] == true)
        .map(|c| c["ctwa_clid"].as_str().unwrap())
        .collect();
    assert_eq!(unverified.len(), 3, "{v}");
    assert!(!unverified.contains(&"CLID-REAL"));
    // The conversion is credited to the click that can be vouched for (that a click with
    // an unverified time is never the last click, whatever its date, is the unit test
    // `a_click_with_an_unverified_time_is_never_the_last_click`).
    let (s, v) = app
        .post_json(
            "/v1/conversions",
            &app.api_key,
            json!({"phone": phone, "event_name": "Purchase", "currency": "INR", "value": 1499}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ctwa_clid"], "CLID-REAL", "{v}");
    let sent: Vec<Value> = app.sim.sim.received_events();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["event"]["user_data"]["ctwa_clid"], "CLID-REAL");
    app.stack.stop().await;
}
