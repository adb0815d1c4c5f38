//! Capture at its edges, through the local stack: a referral with fields of an
//! unexpected JSON type (issue 13, item 10).

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
    let referral = json!({"source_type":"ad","source_id":120208,"source_url":"https://fb.me/3cr4Wqqkv",
        "ctwa_clid":clid,"headline":null,"media_type":["image"],"body":"This is a great product"});
    json!({
        "app_id": FIXTURE_SINCH_APP,
        "accepted_time": "2025-06-18T19:46:33.073703Z",
        "event_time": "2025-06-18T19:46:32.991Z",
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
