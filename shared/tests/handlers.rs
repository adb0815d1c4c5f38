//! Handler tests with the in-memory fakes: the webhook, capture and read-API rules,
//! without any server. The same rules are checked against DynamoDB Local in tests/.

use ctwa_shared::auth::generate_key;
use ctwa_shared::capture::{CaptureDeps, Outcome, handle_stream_event, process_item};
use ctwa_shared::config::WebhookConfig;
use ctwa_shared::domain::{Account, Route};
use ctwa_shared::handlers::{api, webhook};
use ctwa_shared::http::ApiRequest;
use ctwa_shared::secrets::MemorySecrets;
use ctwa_shared::signature::{sign_meta, sign_sinch};
use ctwa_shared::store::memory::MemoryStore;
use ctwa_shared::store::{Accounts, Conversations, FirstTouchOutcome};
use ctwa_shared::stream::{StreamEvent, image_of};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const SECRET_ID: &str = "webhook";
const APP_SECRET: &str = "app-secret";
const PNID: &str = "1204727649384372";

struct World {
    store: Arc<MemoryStore>,
    webhook: webhook::WebhookDeps,
    capture: CaptureDeps,
    api: api::ApiDeps,
    key: String,
}

async fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let secrets = MemorySecrets::with(
        SECRET_ID,
        &json!({"app_secret": APP_SECRET, "verify_token": "vt-123456", "sinch_webhook_secret": "sinch-s"}).to_string(),
    );
    store
        .create_account(&Account {
            id: "acct1".into(),
            name: "One".into(),
            waba_id: Some("102290129340398".into()),
            phone_number_ids: vec![PNID.into()],
            sinch_app_id: Some("APP1".into()),
            page_ids: Vec::new(),
            instagram_account_ids: Vec::new(),
            created_at_ms: 0,
        })
        .await
        .unwrap();
    store
        .create_account(&Account {
            id: "acct2".into(),
            name: "Two".into(),
            waba_id: None,
            phone_number_ids: vec!["999".into()],
            sinch_app_id: None,
            page_ids: Vec::new(),
            instagram_account_ids: Vec::new(),
            created_at_ms: 0,
        })
        .await
        .unwrap();
    let (key, rec) = generate_key("acct1", &ctwa_shared::auth::Scope::ALL, 0).unwrap();
    store.put_api_key(&rec).await.unwrap();
    World {
        webhook: webhook::WebhookDeps {
            inbox: store.clone(),
            secrets: Arc::new(secrets),
            config: WebhookConfig {
                inbox_table: "inbox".into(),
                webhook_secret_id: SECRET_ID.into(),
                inbox_ttl: Duration::from_secs(86_400),
                max_body_bytes: 64 * 1024,
                sinch_max_skew: Duration::from_secs(300),
                secrets_cache_ttl: Duration::from_secs(1),
                // The single-tenant option (the stack tests run per-app secrets).
                sinch: ctwa_shared::config::SinchSecrets::Deployment,
            },
        },
        capture: CaptureDeps::new(store.clone(), store.clone()),
        api: api::ApiDeps {
            accounts: store.clone(),
            conversations: store.clone(),
        },
        store,
        key,
    }
}

fn ctwa_body(pnid: &str, wamid: &str, wa_id: &str, clid: Option<&str>, ts: i64) -> String {
    let mut referral = json!({"source_url":"https://fb.me/x","source_id":"AD1","source_type":"ad","headline":"Chat","body":"Body","media_type":"image","image_url":"https://img"});
    if let Some(c) = clid {
        referral["ctwa_clid"] = json!(c);
    }
    // Meta sends a number's webhooks under the WABA that owns it (`entry.id`): acct1's.
    json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"1555","phone_number_id":pnid},
        "contacts":[{"profile":{"name":"N"},"wa_id":wa_id}],
        "messages":[{"from":wa_id,"id":wamid,"timestamp":ts.to_string(),"type":"text","text":{"body":"hi"},"referral":referral}]}}]}]})
    .to_string()
}

fn signed(body: &str) -> ApiRequest {
    ApiRequest::new(Method::POST, "/webhook")
        .with_header(
            "x-hub-signature-256",
            &sign_meta(APP_SECRET, body.as_bytes()),
        )
        .with_body(body.to_string())
}

/// Feeds everything in the inbox through the capture handler as one stream batch.
async fn drain(w: &World) {
    let records: Vec<Value> = w
        .store
        .inbox_items()
        .iter()
        .enumerate()
        .map(|(i, it)| json!({"eventID": i.to_string(), "eventName": "INSERT", "dynamodb": {"NewImage": image_of(it), "SequenceNumber": format!("{i:021}")}}))
        .collect();
    let ev: StreamEvent = serde_json::from_value(json!({ "Records": records })).unwrap();
    let resp = handle_stream_event(&w.capture, ev).await;
    assert!(resp.batch_item_failures.is_empty());
}

#[tokio::test]
async fn verification_handshake() {
    let w = world().await;
    let ok = ApiRequest::new(
        Method::GET,
        "/webhook?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=vt-123456",
    );
    let r = webhook::handle(&w.webhook, ok).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, b"1158201444".as_slice())
    );
    for q in [
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
        "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=vt-123456",
        "hub.challenge=1",
    ] {
        let r = webhook::handle(
            &w.webhook,
            ApiRequest::new(Method::GET, &format!("/webhook?{q}")),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{q}");
        assert_eq!(r.body_json()["error"]["code"], "forbidden");
    }
}

#[tokio::test]
async fn signature_size_and_json_are_checked_before_anything_is_stored() {
    let w = world().await;
    let body = ctwa_body(PNID, "wamid.1", "16505551234", Some("CLID1"), 1_750_000_000);
    let wrong = ApiRequest::new(Method::POST, "/webhook")
        .with_header(
            "x-hub-signature-256",
            &sign_meta("not-the-secret", body.as_bytes()),
        )
        .with_body(body.clone());
    assert_eq!(
        webhook::handle(&w.webhook, wrong).await.status,
        StatusCode::UNAUTHORIZED
    );
    let missing = ApiRequest::new(Method::POST, "/webhook").with_body(body.clone());
    assert_eq!(
        webhook::handle(&w.webhook, missing).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A valid signature over bytes that are not JSON.
    assert_eq!(
        webhook::handle(&w.webhook, signed("{\"object\":"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let huge = " ".repeat(64 * 1024 + 1);
    let r = webhook::handle(&w.webhook, signed(&huge)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body_json()["error"]["code"], "payload_too_large");
    assert!(w.store.inbox_items().is_empty());
    let r = webhook::handle(&w.webhook, ApiRequest::new(Method::PUT, "/webhook")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn retries_are_no_ops_and_first_touch_is_one_shot() {
    let w = world().await;
    let first = ctwa_body(PNID, "wamid.1", "16505551234", Some("CLID1"), 1_750_000_000);
    for _ in 0..5 {
        assert_eq!(
            webhook::handle(&w.webhook, signed(&first)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(w.store.inbox_items().len(), 1);
    // A later click in the same conversation.
    let later = ctwa_body(PNID, "wamid.2", "16505551234", Some("CLID2"), 1_750_000_100);
    webhook::handle(&w.webhook, signed(&later)).await;
    drain(&w).await;
    drain(&w).await; // a redelivered batch changes nothing
    assert_eq!(w.store.click_count(), 2);
    assert_eq!(w.store.conversation_count(), 1);
    let convs = w
        .store
        .conversations_for_customer("acct1", "wa:16505551234")
        .await
        .unwrap();
    assert_eq!(
        convs[0].first_touch.as_ref().unwrap().ctwa_clid.as_deref(),
        Some("CLID1")
    );
    let clicks = w
        .store
        .clicks_for_customer("acct1", "wa:16505551234", 10)
        .await
        .unwrap();
    assert_eq!(
        clicks[0].referral.ctwa_clid.as_deref(),
        Some("CLID2"),
        "newest first"
    );
}

#[tokio::test]
async fn an_earlier_click_processed_later_still_wins_first_touch() {
    let w = world().await;
    let items = |body: &str| {
        ctwa_shared::meta::webhook::parse_cloud_webhook(body.as_bytes(), 0, 0)
            .unwrap()
            .items
            .remove(0)
    };
    let late = items(&ctwa_body(PNID, "wamid.B", "1650555", Some("LATE"), 2_000));
    let early = items(&ctwa_body(PNID, "wamid.A", "1650555", Some("EARLY"), 1_000));
    let o1 = process_item(&w.capture, &late, 5).await.unwrap();
    let o2 = process_item(&w.capture, &early, 6).await.unwrap();
    assert!(matches!(
        o1,
        Outcome::Message {
            first_touch: FirstTouchOutcome::Captured,
            ..
        }
    ));
    assert!(matches!(
        o2,
        Outcome::Message {
            first_touch: FirstTouchOutcome::Captured,
            ..
        }
    ));
    let o3 = process_item(&w.capture, &late, 7).await.unwrap();
    assert!(matches!(
        o3,
        Outcome::Message {
            first_touch: FirstTouchOutcome::Kept,
            click_recorded: false,
            ..
        }
    ));
    let c = w
        .store
        .conversations_for_customer("acct1", "wa:1650555")
        .await
        .unwrap();
    assert_eq!(
        c[0].first_touch.as_ref().unwrap().ctwa_clid.as_deref(),
        Some("EARLY")
    );
}

#[tokio::test]
async fn status_referral_without_clid_is_a_click_without_id() {
    let w = world().await;
    webhook::handle(
        &w.webhook,
        signed(&ctwa_body(PNID, "wamid.S", "1650555", None, 1_000)),
    )
    .await;
    drain(&w).await;
    let clicks = w
        .store
        .clicks_for_customer("acct1", "wa:1650555", 10)
        .await
        .unwrap();
    assert_eq!(clicks.len(), 1);
    assert_eq!(clicks[0].referral.ctwa_clid, None);
    assert_eq!(clicks[0].referral.source_id.as_deref(), Some("AD1"));
    let c = w
        .store
        .conversations_for_customer("acct1", "wa:1650555")
        .await
        .unwrap();
    assert_eq!(c[0].first_touch, None, "never filled from source_id");
}

#[tokio::test]
async fn unknown_phone_number_ids_are_kept_not_dropped() {
    let w = world().await;
    let r = webhook::handle(
        &w.webhook,
        signed(&ctwa_body("404404", "wamid.U", "1650555", Some("C"), 1_000)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    drain(&w).await;
    assert_eq!(w.store.unrouted.lock().unwrap().len(), 1);
    assert_eq!(w.store.click_count(), 0);
}

#[tokio::test]
async fn sinch_callbacks_are_verified_and_captured() {
    let w = world().await;
    let now = ctwa_shared::time::rfc3339_millis(ctwa_shared::time::now_millis());
    let body = json!({"app_id":"APP1","event_time":now,"message":{"id":"M1","direction":"TO_APP",
        "channel_identity":{"channel":"WHATSAPP","identity":"46712312312"},"contact_id":"C1",
        "metadata":"{\"referral\":{\"source_type\":\"ad\",\"source_id\":\"AD9\",\"ctwa_clid\":\"SINCH-CLID\"}}",
        "contact_message":{"text_message":{"text":"hi"}}}})
    .to_string();
    let ts = ctwa_shared::time::now_secs().to_string();
    let sig = sign_sinch("sinch-s", body.as_bytes(), "nonce", &ts);
    let req = |sig: &str, ts: &str| {
        ApiRequest::new(Method::POST, "/webhook/sinch")
            .with_header("x-sinch-webhook-signature", sig)
            .with_header("x-sinch-webhook-signature-nonce", "nonce")
            .with_header("x-sinch-webhook-signature-timestamp", ts)
            .with_header("x-sinch-webhook-signature-algorithm", "HmacSHA256")
            .with_body(body.clone())
    };
    assert_eq!(
        webhook::handle(&w.webhook, req("AAAA", &ts)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let old = "1000000000";
    let old_sig = sign_sinch("sinch-s", body.as_bytes(), "nonce", old);
    assert_eq!(
        webhook::handle(&w.webhook, req(&old_sig, old)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(w.store.inbox_items().is_empty());
    assert_eq!(
        webhook::handle(&w.webhook, req(&sig, &ts)).await.status,
        StatusCode::OK
    );
    drain(&w).await;
    let c = w
        .store
        .conversations_for_customer("acct1", "wa:46712312312")
        .await
        .unwrap();
    assert_eq!(
        c[0].first_touch.as_ref().unwrap().ctwa_clid.as_deref(),
        Some("SINCH-CLID")
    );
    assert_eq!(c[0].business_id, "APP1");
    assert_eq!(
        w.capture
            .accounts
            .account_for_route(&Route::SinchApp("APP1".into()))
            .await
            .unwrap()
            .as_deref(),
        Some("acct1")
    );
}

#[tokio::test]
async fn read_api_scopes_every_answer_to_the_key_account() {
    let w = world().await;
    webhook::handle(
        &w.webhook,
        signed(&ctwa_body(
            PNID,
            "wamid.1",
            "16505551234",
            Some("CLID1"),
            1_000,
        )),
    )
    .await;
    webhook::handle(
        &w.webhook,
        signed(&ctwa_body(
            "999",
            "wamid.2",
            "16505551234",
            Some("OTHER"),
            1_000,
        )),
    )
    .await;
    drain(&w).await;
    let auth = format!("Bearer {}", w.key);
    let api = &w.api;
    let get = |path: String| {
        let req = ApiRequest::new(Method::GET, &path).with_header("authorization", &auth);
        api::handle(api, req)
    };
    let list = get("/v1/conversations?phone=%2B1%20650-555-1234".into()).await;
    assert_eq!(list.status, StatusCode::OK);
    let v = list.body_json();
    assert_eq!(v["conversations"].as_array().unwrap().len(), 1, "{v}");
    let conv = &v["conversations"][0];
    assert_eq!(conv["metadata"]["ctwa_clid"], "CLID1");
    assert_eq!(conv["metadata"]["ctwa_source_id"], "AD1");
    assert_eq!(conv["clicks"].as_array().unwrap().len(), 1);
    let id = conv["id"].as_str().unwrap();
    let one = get(format!("/v1/conversations/{id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body_json()["id"], id);
    // acct2's conversation exists, but this key must not see it.
    let other = ctwa_shared::domain::conversation_id("acct2", "999", "wa:16505551234");
    assert!(w.store.get_conversation(&other).await.unwrap().is_some());
    assert_eq!(
        get(format!("/v1/conversations/{other}")).await.status,
        StatusCode::NOT_FOUND
    );
    for (path, status) in [
        ("/v1/conversations", StatusCode::BAD_REQUEST),
        ("/v1/conversations?phone=abc", StatusCode::BAD_REQUEST),
        ("/v1/conversations/..%2F..", StatusCode::NOT_FOUND),
    ] {
        let r = get(path.into()).await;
        assert_eq!(r.status, status, "{path}");
        assert!(r.body_json()["error"]["message"].is_string());
    }
    let r = api::handle(
        api,
        ApiRequest::new(Method::GET, "/v1/conversations?phone=16505551234"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Mutations of real payloads (truncations, byte flips, spliced JSON tokens), each with a
/// valid signature: the webhook answers 200 or a 4xx, never a 5xx and never a panic, and
/// whatever it stored can be read back by the capture step without failing.
#[tokio::test]
async fn mutated_webhooks_never_panic_or_500() {
    let w = world().await;
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/webhooks/cloud"
    ))
    .unwrap()
    .map(|e| std::fs::read(e.unwrap().path()).unwrap())
    .collect();
    let tokens: [&[u8]; 8] = [
        b"null",
        b"[]",
        b"{}",
        b"\"\"",
        b"-1e999",
        b"\"\\ud800\"",
        b"true",
        b"{\"id\":{}}",
    ];
    // A small deterministic generator: the same mutations on every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut checked = 0;
    for seed in &seeds {
        for _ in 0..40 {
            let mut b = seed.clone();
            match next() % 4 {
                0 => b.truncate((next() as usize) % (b.len() + 1)),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % b.len();
                        b[i] = (next() % 256) as u8;
                    }
                }
                2 => {
                    let i = (next() as usize) % b.len();
                    let t = tokens[(next() as usize) % tokens.len()];
                    b.splice(i..(i + 1).min(b.len()), t.iter().copied());
                }
                _ => {
                    // Replace the value after a random `":` with a hostile token.
                    if let Some(pos) = b
                        .windows(2)
                        .enumerate()
                        .filter(|(_, w)| w == b"\":")
                        .map(|(i, _)| i)
                        .nth((next() % 20) as usize)
                    {
                        let t = tokens[(next() as usize) % tokens.len()];
                        b.splice(pos + 2..pos + 3, t.iter().copied());
                    }
                }
            }
            let body = String::from_utf8_lossy(&b).into_owned();
            let r = webhook::handle(&w.webhook, signed(&body)).await;
            assert!(
                r.status == StatusCode::OK || r.status.is_client_error(),
                "{} for {body}",
                r.status
            );
            checked += 1;
        }
    }
    assert!(checked > 1000);
    drain(&w).await;
}
