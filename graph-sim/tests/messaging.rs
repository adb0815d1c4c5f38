//! Messenger and Instagram Direct in the simulator: Pages and Instagram accounts as Graph
//! objects reached only by tokens granted on them, `debug_token`'s `target_ids`, a
//! dataset per Page / Instagram account, and the Conversions API's per-channel
//! `user_data` checks and refusals, with `partner_agent` recorded.

use serde_json::{Value, json};

const PAGE: &str = "104881234567890";
const IG: &str = "17841400000000001";
const OTHER_PAGE: &str = "104889999999999";
const OTHER_IG: &str = "17841499999999999";
const WABA: &str = "102290129340398";

struct Sim {
    run: graph_sim::RunningSim,
    http: reqwest::Client,
}

async fn sim() -> Sim {
    let run = graph_sim::start(
        ([127, 0, 0, 1], 0).into(),
        graph_sim::SimConfig {
            app_id: "1".into(),
            app_secret: "s".into(),
        },
    )
    .await
    .unwrap();
    let s = Sim {
        run,
        http: reqwest::Client::new(),
    };
    for (page, ig, user) in [(PAGE, IG, "acme"), (OTHER_PAGE, OTHER_IG, "other")] {
        let (st, v) = s
            .control(
                "/pages",
                json!({"page_id": page, "name": format!("Page {user}"), "instagram_account_id": ig, "instagram_username": user}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    s
}

impl Sim {
    async fn control(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.run.control_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn token(&self, body: Value) -> String {
        let (st, v) = self.control("/tokens", body).await;
        assert_eq!(st, 200, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.run.graph_url()),
            )
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.run.graph_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// A token granted on every object and permission of the three channels.
    async fn full_token(&self) -> String {
        self.token(json!({
            "scopes": ["whatsapp_business_management", "whatsapp_business_manage_events",
                       "pages_messaging", "page_events", "instagram_basic", "instagram_manage_events"],
            "waba_id": WABA, "page_ids": [PAGE], "instagram_account_ids": [IG],
        }))
        .await
    }

    async fn dataset(&self, owner: &str, token: &str) -> String {
        let (st, v) = self
            .call("POST", &format!("/{owner}/dataset"), token, json!({}))
            .await;
        assert_eq!(st, 200, "{v}");
        v["id"].as_str().unwrap().to_string()
    }
}

fn unsupported(method: &str, id: &str) -> Value {
    json!(format!(
        "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
    ))
}

/// Meta's 100/33 for an object out of reach.
fn assert_unreachable(st: u16, v: &Value, method: &str, id: &str) {
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], 100, "{v}");
    assert_eq!(v["error"]["error_subcode"], 33, "{v}");
    assert_eq!(v["error"]["type"], "GraphMethodException", "{v}");
    assert_eq!(v["error"]["message"], unsupported(method, id), "{v}");
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn whatsapp_event() -> Value {
    json!({"event_name": "Purchase", "event_time": now() - 60, "action_source": "business_messaging",
           "messaging_channel": "whatsapp",
           "user_data": {"whatsapp_business_account_id": WABA, "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-GABDLOPaOdRMv-_zfUQ2a"},
           "custom_data": {"currency": "USD", "value": 123}})
}

/// Meta's Messenger sample: `page_id` unquoted (a number).
fn messenger_event() -> Value {
    json!({"event_name": "Purchase", "event_time": now() - 60, "action_source": "business_messaging",
           "messaging_channel": "messenger",
           "user_data": {"page_id": PAGE.parse::<u64>().unwrap(), "page_scoped_user_id": "6543210987654321"},
           "custom_data": {"currency": "USD", "value": 123}})
}

fn instagram_event() -> Value {
    json!({"event_name": "LeadSubmitted", "event_time": now() - 60, "action_source": "business_messaging",
           "messaging_channel": "instagram",
           "user_data": {"instagram_business_account_id": IG, "ig_sid": "527193846152038"}})
}

#[tokio::test]
async fn pages_and_instagram_accounts_answer_only_tokens_granted_on_them() {
    let s = sim().await;
    let granted = s
        .token(json!({"scopes": ["pages_show_list", "instagram_basic"], "page_ids": [PAGE], "instagram_account_ids": [IG]}))
        .await;

    let (st, v) = s.get(&format!("/{PAGE}"), &granted).await;
    assert_eq!((st, v), (200, json!({"id": PAGE, "name": "Page acme"})));
    let (st, v) = s
        .get(
            &format!("/{PAGE}?fields=instagram_business_account"),
            &granted,
        )
        .await;
    assert_eq!(
        (st, v),
        (
            200,
            json!({"id": PAGE, "instagram_business_account": {"id": IG}})
        )
    );
    let (st, v) = s
        .get(
            &format!("/{PAGE}?fields=name,instagram_business_account{{id,username}}"),
            &granted,
        )
        .await;
    assert_eq!(
        (st, v),
        (
            200,
            json!({"id": PAGE, "name": "Page acme", "instagram_business_account": {"id": IG, "username": "acme"}})
        )
    );
    let (st, v) = s.get(&format!("/{IG}?fields=username"), &granted).await;
    assert_eq!((st, v), (200, json!({"id": IG, "username": "acme"})));
    let (st, v) = s.get(&format!("/{IG}"), &granted).await;
    assert_eq!((st, v), (200, json!({"id": IG, "username": "acme"})));

    // A field a Page does not have: Meta's code 100.
    let (st, v) = s
        .get(&format!("/{PAGE}?fields=name,followers"), &granted)
        .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "(#100) Tried accessing nonexisting field (followers) on node type (Page)"
    );
    let (st, v) = s.get(&format!("/{IG}?fields=biography"), &granted).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "(#100) Tried accessing nonexisting field (biography) on node type (IGUser)"
    );

    // A Page without a linked account leaves the field out.
    let (st, v) = s
        .control("/pages", json!({"page_id": "104880000000001"}))
        .await;
    assert_eq!(
        (st, v),
        (
            200,
            json!({"page_id": "104880000000001", "name": "Sim Page", "instagram_account_id": null, "instagram_username": null})
        )
    );
    let lone = s
        .token(json!({"scopes": ["pages_show_list"], "page_ids": ["104880000000001"]}))
        .await;
    let (st, v) = s
        .get(
            "/104880000000001?fields=id,instagram_business_account",
            &lone,
        )
        .await;
    assert_eq!((st, v), (200, json!({"id": "104880000000001"})));

    // Tokens granted on other objects, or on none: 100/33 for the Page and the account.
    let other = s
        .token(json!({"scopes": ["pages_show_list", "instagram_basic"], "page_ids": [OTHER_PAGE], "instagram_account_ids": [OTHER_IG]}))
        .await;
    let bare = s
        .token(json!({"scopes": ["pages_show_list", "instagram_basic", "ads_management"]}))
        .await;
    for t in [&other, &bare, &lone] {
        let (st, v) = s.get(&format!("/{PAGE}?fields=name"), t).await;
        assert_unreachable(st, &v, "get", PAGE);
        let (st, v) = s.get(&format!("/{IG}"), t).await;
        assert_unreachable(st, &v, "get", IG);
    }
    // The account reached but not its Page (and the other way round).
    let ig_only = s.token(json!({"instagram_account_ids": [IG]})).await;
    let (st, v) = s.get(&format!("/{PAGE}"), &ig_only).await;
    assert_unreachable(st, &v, "get", PAGE);
    assert_eq!(s.get(&format!("/{IG}"), &ig_only).await.0, 200);
    let (st, v) = s.get(&format!("/{IG}"), &lone).await;
    assert_unreachable(st, &v, "get", IG);

    // Invalid tokens are refused as everywhere else.
    let (st, v) = s.get(&format!("/{PAGE}"), "EAAGnot-a-token").await;
    assert_eq!((st, &v["error"]["code"]), (400, &json!(190)), "{v}");
    assert!(s.run.sim.revoke(&granted));
    let (st, v) = s.get(&format!("/{PAGE}"), &granted).await;
    assert_eq!(
        (st, &v["error"]["code"], &v["error"]["error_subcode"]),
        (400, &json!(190), &json!(460)),
        "{v}"
    );

    // Ad objects keep being answered by the Marketing module, unknown ids as before.
    s.run.sim.add_ad_account(
        &json!({"id": "act_111", "page_ids": [PAGE], "whatsapp_numbers": ["+919876543210"]}),
    );
    let (st, c) = s
        .call("POST", "/act_111/campaigns", &bare, json!({"name": "C", "objective": "OUTCOME_ENGAGEMENT", "status": "PAUSED", "special_ad_categories": []}))
        .await;
    assert_eq!(st, 200, "{c}");
    let id = c["id"].as_str().unwrap();
    let (st, v) = s.get(&format!("/{id}?fields=name,objective"), &bare).await;
    assert_eq!(
        (st, v),
        (
            200,
            json!({"id": id, "name": "C", "objective": "OUTCOME_ENGAGEMENT"})
        )
    );
    let (st, v) = s.get("/123456789", &bare).await;
    assert_eq!((st, &v["error"]["error_subcode"]), (400, &json!(33)), "{v}");
}

#[tokio::test]
async fn page_registration_refuses_what_cannot_be() {
    let s = sim().await;
    for (body, why) in [
        (json!({}), "page_id is required"),
        (json!({"page_id": ""}), "page_id is required"),
        (
            json!({"page_id": "5", "instagram_username": "x"}),
            "instagram_username needs instagram_account_id",
        ),
        (
            json!({"page_id": "5", "instagram_account_id": "5"}),
            "instagram_account_id must differ from page_id",
        ),
        (
            json!({"page_id": "5", "instagram_account_id": IG}),
            "instagram account 17841400000000001 is linked to page 104881234567890",
        ),
        (
            json!({"page_id": IG}),
            "17841400000000001 is an Instagram account",
        ),
    ] {
        let (st, v) = s.control("/pages", body.clone()).await;
        assert_eq!((st, v), (400, json!({"error": why})), "{body}");
    }
    // Re-registering a Page without its account unlinks the account.
    let (st, _) = s
        .control("/pages", json!({"page_id": PAGE, "name": "Renamed"}))
        .await;
    assert_eq!(st, 200);
    let t = s
        .token(json!({"page_ids": [PAGE], "instagram_account_ids": [IG]}))
        .await;
    let (st, v) = s
        .get(
            &format!("/{PAGE}?fields=name,instagram_business_account"),
            &t,
        )
        .await;
    assert_eq!((st, v), (200, json!({"id": PAGE, "name": "Renamed"})));
    // The account is then unknown (answered as any unknown id: 100/33).
    let t = s
        .token(json!({"scopes": ["ads_management"], "instagram_account_ids": [IG]}))
        .await;
    let (st, v) = s.get(&format!("/{IG}"), &t).await;
    assert_eq!(
        (st, &v["error"]["code"], &v["error"]["error_subcode"]),
        (400, &json!(100), &json!(33)),
        "{v}"
    );
}

#[tokio::test]
async fn debug_token_lists_pages_and_instagram_accounts_as_target_ids() {
    let s = sim().await;
    let scopes = json!([
        "whatsapp_business_management",
        "whatsapp_business_manage_events",
        "business_management",
        "pages_messaging",
        "pages_show_list",
        "page_events",
        "pages_manage_metadata",
        "pages_read_engagement",
        "instagram_basic",
        "instagram_manage_messages",
        "instagram_manage_events"
    ]);
    let direct = s
        .token(json!({"scopes": scopes, "waba_id": WABA, "page_ids": [PAGE, OTHER_PAGE], "instagram_account_ids": [IG]}))
        .await;
    let (st, code) = s
        .control("/oauth/codes", json!({"scopes": scopes, "waba_id": WABA, "page_ids": [PAGE, OTHER_PAGE], "instagram_account_ids": [IG]}))
        .await;
    assert_eq!(st, 200);
    let r: Value = s
        .http
        .get(format!(
            "{}/oauth/access_token?client_id=1&client_secret=s&code={}",
            s.run.graph_url(),
            code["code"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let exchanged = r["access_token"].as_str().unwrap().to_string();
    let bare = s.token(json!({"scopes": scopes})).await;

    let granular = |token: String| {
        let s = &s;
        async move {
            let v: Value = s
                .http
                .get(format!(
                    "{}/debug_token?input_token={token}&access_token=1|s",
                    s.run.graph_url()
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"]["granular_scopes"].clone()
        }
    };
    let expected = json!([
        {"scope": "whatsapp_business_management", "target_ids": [WABA]},
        {"scope": "whatsapp_business_manage_events", "target_ids": [WABA]},
        {"scope": "business_management"},
        {"scope": "pages_messaging", "target_ids": [PAGE, OTHER_PAGE]},
        {"scope": "pages_show_list", "target_ids": [PAGE, OTHER_PAGE]},
        {"scope": "page_events", "target_ids": [PAGE, OTHER_PAGE]},
        {"scope": "pages_manage_metadata", "target_ids": [PAGE, OTHER_PAGE]},
        {"scope": "pages_read_engagement", "target_ids": [PAGE, OTHER_PAGE]},
        {"scope": "instagram_basic", "target_ids": [IG]},
        {"scope": "instagram_manage_messages", "target_ids": [IG]},
        {"scope": "instagram_manage_events", "target_ids": [IG]},
    ]);
    assert_eq!(granular(direct).await, expected);
    assert_eq!(granular(exchanged).await, expected);
    // A token granted on no Page or account: scopes without target_ids, as before.
    let plain: Vec<Value> = scopes
        .as_array()
        .unwrap()
        .iter()
        .map(|sc| json!({"scope": sc}))
        .collect();
    assert_eq!(granular(bare).await, json!(plain));
}

#[tokio::test]
async fn a_dataset_per_page_and_per_instagram_account() {
    let s = sim().await;
    let token = s.full_token().await;

    // Nothing yet; POST creates, POST again returns the same id, GET lists it.
    let mut ids = Vec::new();
    for owner in [PAGE, IG, WABA] {
        let (st, v) = s.get(&format!("/{owner}/dataset"), &token).await;
        assert_eq!((st, v), (200, json!({"data": []})), "{owner}");
        let id = s.dataset(owner, &token).await;
        assert_eq!(s.dataset(owner, &token).await, id, "{owner}");
        let (st, v) = s.get(&format!("/{owner}/dataset"), &token).await;
        assert_eq!((st, v), (200, json!({"data": [{"id": id}]})), "{owner}");
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one dataset per owner");
    let mut by_owner: Vec<(String, &str)> = s
        .run
        .sim
        .datasets_by_owner()
        .into_iter()
        .map(|(o, _, k)| (o, k.as_str()))
        .collect();
    by_owner.sort();
    assert_eq!(
        by_owner,
        vec![
            (WABA.to_string(), "whatsapp_business_account"),
            (PAGE.to_string(), "page"),
            (IG.to_string(), "instagram_account"),
        ]
    );
    assert_eq!(s.run.sim.datasets().len(), 3);

    // The owner's permission is required: 403 code 200.
    let no_page_events = s
        .token(json!({"scopes": ["pages_messaging", "instagram_manage_events", "whatsapp_business_manage_events"], "page_ids": [PAGE], "instagram_account_ids": [IG]}))
        .await;
    let no_ig_events = s
        .token(json!({"scopes": ["page_events", "instagram_basic", "instagram_manage_messages"], "page_ids": [PAGE], "instagram_account_ids": [IG]}))
        .await;
    for (owner, t, scope) in [
        (PAGE, &no_page_events, "page_events"),
        (IG, &no_ig_events, "instagram_manage_events"),
    ] {
        for method in ["GET", "POST"] {
            let (st, v) = s
                .call(method, &format!("/{owner}/dataset"), t, json!({}))
                .await;
            assert_eq!(st, 403, "{v}");
            assert_eq!(v["error"]["code"], 200);
            assert_eq!(
                v["error"]["message"],
                format!("(#200) Permissions error: {scope} is required")
            );
        }
    }
    // The token must be granted on the Page / account: 100/33, nothing created.
    let elsewhere = s
        .token(json!({"scopes": ["page_events", "instagram_manage_events"], "page_ids": [OTHER_PAGE], "instagram_account_ids": [OTHER_IG]}))
        .await;
    let nowhere = s
        .token(json!({"scopes": ["page_events", "instagram_manage_events"]}))
        .await;
    for t in [&elsewhere, &nowhere] {
        for owner in [PAGE, IG] {
            for method in ["GET", "POST"] {
                let (st, v) = s
                    .call(method, &format!("/{owner}/dataset"), t, json!({}))
                    .await;
                assert_unreachable(st, &v, &method.to_lowercase(), owner);
            }
        }
    }
    assert_eq!(s.run.sim.datasets().len(), 3);
    // The other Page's token creates the other Page's dataset.
    let other = s.dataset(OTHER_PAGE, &elsewhere).await;
    assert!(!ids.contains(&other));
}

#[tokio::test]
async fn events_of_each_channel_are_accepted_with_partner_agent_recorded() {
    let s = sim().await;
    let token = s.full_token().await;
    let wa = s.dataset(WABA, &token).await;
    let ms = s.dataset(PAGE, &token).await;
    let ig = s.dataset(IG, &token).await;

    for (dataset, event, agent) in [
        (&wa, whatsapp_event(), json!("ctwa-backend")),
        (&ms, messenger_event(), json!("ctwa-backend")),
        (&ig, instagram_event(), Value::Null),
    ] {
        let mut body = json!({"data": [event.clone(), event]});
        if !agent.is_null() {
            body["partner_agent"] = agent;
        }
        let (st, v) = s
            .call("POST", &format!("/{dataset}/events"), &token, body)
            .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["events_received"], 2);
    }
    // Messenger ids may come as strings too; a test code travels beside them.
    let mut e = messenger_event();
    e["user_data"]["page_id"] = json!(PAGE);
    let (st, v) = s
        .call(
            "POST",
            &format!("/{ms}/events"),
            &token,
            json!({"data": [e], "partner_agent": "ctwa-backend", "test_event_code": "TEST1"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");

    let at_meta = s.run.sim.received_events();
    assert_eq!(at_meta.len(), 7);
    let summary: Vec<(String, Value, Value, Value)> = at_meta
        .iter()
        .map(|r| {
            (
                r["dataset_id"].as_str().unwrap().to_string(),
                r["partner_agent"].clone(),
                r["test_event_code"].clone(),
                r["event"]["messaging_channel"].clone(),
            )
        })
        .collect();
    let row = |d: &str, a: Value, t: Value, c: &str| (d.to_string(), a, t, json!(c));
    let agent = || json!("ctwa-backend");
    assert_eq!(
        summary,
        vec![
            row(&wa, agent(), Value::Null, "whatsapp"),
            row(&wa, agent(), Value::Null, "whatsapp"),
            row(&ms, agent(), Value::Null, "messenger"),
            row(&ms, agent(), Value::Null, "messenger"),
            row(&ig, Value::Null, Value::Null, "instagram"),
            row(&ig, Value::Null, Value::Null, "instagram"),
            row(&ms, agent(), json!("TEST1"), "messenger"),
        ]
    );
    assert_eq!(
        at_meta[2]["event"],
        messenger_event_without_time(&at_meta[2])
    );
    // The control endpoint shows the same records, partner_agent a member of each.
    let over_http: Value = s
        .http
        .get(format!("{}/events", s.run.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["events"], json!(at_meta));
    assert!(
        over_http["events"][4]
            .as_object()
            .unwrap()
            .contains_key("partner_agent")
    );

    // WhatsApp events are not checked for a permission (the WABA's dataset is).
    let no_scope = s.token(json!({"waba_id": WABA})).await;
    let (st, v) = s
        .call(
            "POST",
            &format!("/{wa}/events"),
            &no_scope,
            json!({"data": [whatsapp_event()]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
}

/// The recorded Messenger event is the one sent (its `event_time` taken from the record).
fn messenger_event_without_time(recorded: &Value) -> Value {
    let mut e = messenger_event();
    e["event_time"] = recorded["event"]["event_time"].clone();
    e
}

/// One refusal: HTTP 400, code 100 "Invalid parameter", the subcode and title.
fn assert_refused(st: u16, v: &Value, subcode: i64, title: &str, case: &str) {
    assert_eq!(st, 400, "{case}: {v}");
    let e = &v["error"];
    assert_eq!(
        (
            &e["code"],
            &e["type"],
            &e["message"],
            &e["error_subcode"],
            &e["error_user_title"]
        ),
        (
            &json!(100),
            &json!("OAuthException"),
            &json!("Invalid parameter"),
            &json!(subcode),
            &json!(title)
        ),
        "{case}: {v}"
    );
    assert!(
        e["error_user_msg"]
            .as_str()
            .unwrap()
            .starts_with(&format!("event 0: {title}")),
        "{case}: {v}"
    );
}

#[tokio::test]
async fn each_channel_refuses_wrong_missing_and_foreign_keys() {
    let s = sim().await;
    let token = s.full_token().await;
    let wa = s.dataset(WABA, &token).await;
    let ms = s.dataset(PAGE, &token).await;
    let ig = s.dataset(IG, &token).await;
    let other_page = s
        .token(json!({"scopes": ["page_events"], "page_ids": [OTHER_PAGE]}))
        .await;
    let other_ds = s.dataset(OTHER_PAGE, &other_page).await;

    type Edit = fn(&mut Value);
    let cases: Vec<(&str, &String, Value, Edit, i64, String)> = vec![
        // Messenger.
        (
            "messenger without page_id",
            &ms,
            messenger_event(),
            |e| {
                e["user_data"].as_object_mut().unwrap().remove("page_id");
            },
            2_804_901,
            "Missing page_id".into(),
        ),
        (
            "messenger with an empty page_id",
            &ms,
            messenger_event(),
            |e| e["user_data"]["page_id"] = json!(""),
            2_804_901,
            "Missing page_id".into(),
        ),
        (
            "messenger with another Page",
            &ms,
            messenger_event(),
            |e| e["user_data"]["page_id"] = json!(OTHER_PAGE),
            2_804_902,
            "No Page Associated To Dataset".into(),
        ),
        (
            "messenger without PSID",
            &ms,
            messenger_event(),
            |e| {
                e["user_data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("page_scoped_user_id");
            },
            2_804_903,
            "Missing page_scoped_user_id".into(),
        ),
        (
            "messenger with an empty PSID",
            &ms,
            messenger_event(),
            |e| e["user_data"]["page_scoped_user_id"] = json!(""),
            2_804_903,
            "Missing page_scoped_user_id".into(),
        ),
        (
            "messenger with ctwa_clid",
            &ms,
            messenger_event(),
            |e| e["user_data"]["ctwa_clid"] = json!("ARAkLkA8rm"),
            2_804_904,
            "Messaging Event Invalid Key ctwa_clid For Messaging Channel messenger".into(),
        ),
        (
            "messenger with ig_sid",
            &ms,
            messenger_event(),
            |e| e["user_data"]["ig_sid"] = json!("527193846152038"),
            2_804_904,
            "Messaging Event Invalid Key ig_sid For Messaging Channel messenger".into(),
        ),
        // Instagram.
        (
            "instagram with client_ip_address",
            &ig,
            instagram_event(),
            |e| e["user_data"]["client_ip_address"] = json!("203.0.113.7"),
            2_804_064,
            "Messaging Event Invalid Argument".into(),
        ),
        (
            "instagram with client_user_agent",
            &ig,
            instagram_event(),
            |e| e["user_data"]["client_user_agent"] = json!("Mozilla/5.0"),
            2_804_064,
            "Messaging Event Invalid Argument".into(),
        ),
        (
            "instagram with ctwa_clid",
            &ig,
            instagram_event(),
            |e| e["user_data"]["ctwa_clid"] = json!("ARAkLkA8rm"),
            2_804_904,
            "Messaging Event Invalid Key ctwa_clid For Messaging Channel instagram".into(),
        ),
        (
            "instagram with a PSID",
            &ig,
            instagram_event(),
            |e| e["user_data"]["page_scoped_user_id"] = json!("6543210987654321"),
            2_804_904,
            "Messaging Event Invalid Key page_scoped_user_id For Messaging Channel instagram"
                .into(),
        ),
        (
            "instagram without account id",
            &ig,
            instagram_event(),
            |e| {
                e["user_data"]
                    .as_object_mut()
                    .unwrap()
                    .remove("instagram_business_account_id");
            },
            2_804_079,
            "Missing IG Account ID".into(),
        ),
        (
            "instagram with ig_account_id only",
            &ig,
            instagram_event(),
            |e| {
                let u = e["user_data"].as_object_mut().unwrap();
                u.remove("instagram_business_account_id");
                u.insert("ig_account_id".into(), json!(IG));
            },
            2_804_079,
            "Missing IG Account ID".into(),
        ),
        (
            "instagram with another account",
            &ig,
            instagram_event(),
            |e| e["user_data"]["instagram_business_account_id"] = json!(OTHER_IG),
            2_804_133,
            "No IG Account Associated To Dataset".into(),
        ),
        (
            "instagram without IGSID",
            &ig,
            instagram_event(),
            |e| {
                e["user_data"].as_object_mut().unwrap().remove("ig_sid");
            },
            2_804_075,
            "Missing ig_sid".into(),
        ),
        // The event's channel is not the dataset's.
        (
            "instagram event to a Page's dataset",
            &ms,
            instagram_event(),
            |_| {},
            2_804_133,
            "No IG Account Associated To Dataset".into(),
        ),
        (
            "instagram event to a WABA's dataset",
            &wa,
            instagram_event(),
            |_| {},
            2_804_133,
            "No IG Account Associated To Dataset".into(),
        ),
        (
            "messenger event to a WABA's dataset",
            &wa,
            messenger_event(),
            |_| {},
            2_804_050,
            "Messaging Event Invalid Action Source or Messaging Channel".into(),
        ),
        (
            "messenger event to an IG account's dataset",
            &ig,
            messenger_event(),
            |_| {},
            2_804_050,
            "Messaging Event Invalid Action Source or Messaging Channel".into(),
        ),
        (
            "whatsapp event to a Page's dataset",
            &ms,
            whatsapp_event(),
            |_| {},
            2_804_050,
            "Messaging Event Invalid Action Source or Messaging Channel".into(),
        ),
        (
            "whatsapp event to an IG account's dataset",
            &ig,
            whatsapp_event(),
            |_| {},
            2_804_050,
            "Messaging Event Invalid Action Source or Messaging Channel".into(),
        ),
        (
            "an unknown channel",
            &ms,
            messenger_event(),
            |e| e["messaging_channel"] = json!("sms"),
            2_804_050,
            "Messaging Event Invalid Action Source or Messaging Channel".into(),
        ),
        (
            "no channel",
            &ig,
            instagram_event(),
            |e| {
                e.as_object_mut().unwrap().remove("messaging_channel");
            },
            2_804_050,
            "Messaging Event Invalid Action Source or Messaging Channel".into(),
        ),
        // partner_agent belongs beside data.
        (
            "partner_agent in a messenger event",
            &ms,
            messenger_event(),
            |e| e["partner_agent"] = json!("ctwa-backend"),
            2_804_905,
            "partner_agent goes at the top level of the request".into(),
        ),
        (
            "partner_agent in a whatsapp event",
            &wa,
            whatsapp_event(),
            |e| e["partner_agent"] = json!("ctwa-backend"),
            2_804_905,
            "partner_agent goes at the top level of the request".into(),
        ),
        // The checks common to every channel still hold.
        (
            "an event name off the allowlist",
            &ig,
            instagram_event(),
            |e| e["event_name"] = json!("Contact"),
            2_804_066,
            "Messaging Event Invalid Event Type".into(),
        ),
        (
            "a messenger Purchase without value",
            &ms,
            messenger_event(),
            |e| {
                e["custom_data"].as_object_mut().unwrap().remove("value");
            },
            2_804_008,
            "Purchase events need custom_data.currency and custom_data.value".into(),
        ),
        (
            "a whatsapp event with an unknown click id",
            &wa,
            whatsapp_event(),
            |e| e["user_data"]["ctwa_clid"] = json!("INVALID-1"),
            2_804_087,
            "Messaging Event Invalid Ctwa Clid".into(),
        ),
    ];
    for (case, dataset, mut event, edit, subcode, title) in cases {
        edit(&mut event);
        let (st, v) = s
            .call(
                "POST",
                &format!("/{dataset}/events"),
                &token,
                json!({"data": [event], "partner_agent": "ctwa-backend"}),
            )
            .await;
        assert_refused(st, &v, subcode, &title, case);
    }
    // The other Page's dataset is reached by its own token, and refuses this Page's id.
    let (st, v) = s
        .call(
            "POST",
            &format!("/{other_ds}/events"),
            &other_page,
            json!({"data": [messenger_event()]}),
        )
        .await;
    assert_refused(
        st,
        &v,
        2_804_902,
        "No Page Associated To Dataset",
        "this Page's id to the other Page's dataset",
    );

    // One bad event refuses the whole request.
    let mut bad = messenger_event();
    bad["user_data"]["ig_sid"] = json!("527193846152038");
    let (st, v) = s
        .call(
            "POST",
            &format!("/{ms}/events"),
            &token,
            json!({"data": [messenger_event(), bad]}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["error_subcode"], 2_804_904);
    assert!(
        v["error"]["error_user_msg"]
            .as_str()
            .unwrap()
            .starts_with("event 1: ")
    );

    // A partner_agent that is not a string.
    for agent in [json!(7), json!(["ctwa-backend"]), json!({"name": "x"})] {
        let (st, v) = s
            .call(
                "POST",
                &format!("/{ms}/events"),
                &token,
                json!({"data": [messenger_event()], "partner_agent": agent}),
            )
            .await;
        assert_eq!(st, 400, "{v}");
        assert_eq!(
            (&v["error"]["code"], &v["error"]["message"]),
            (
                &json!(100),
                &json!("(#100) param partner_agent must be a string")
            )
        );
        assert!(v["error"].get("error_subcode").is_none(), "{v}");
    }
    assert!(s.run.sim.received_events().is_empty());
}

#[tokio::test]
async fn events_need_a_token_granted_on_the_owner_with_its_permission() {
    let s = sim().await;
    let token = s.full_token().await;
    let ms = s.dataset(PAGE, &token).await;
    let ig = s.dataset(IG, &token).await;

    // Granted on the objects, without their events permission: 403 code 200.
    let no_perm = s
        .token(json!({"scopes": ["pages_messaging", "instagram_manage_messages", "whatsapp_business_manage_events"],
                      "page_ids": [PAGE], "instagram_account_ids": [IG]}))
        .await;
    for (dataset, event, scope) in [
        (&ms, messenger_event(), "page_events"),
        (&ig, instagram_event(), "instagram_manage_events"),
    ] {
        let (st, v) = s
            .call(
                "POST",
                &format!("/{dataset}/events"),
                &no_perm,
                json!({"data": [event]}),
            )
            .await;
        assert_eq!(st, 403, "{v}");
        assert_eq!(v["error"]["code"], 200);
        assert_eq!(
            v["error"]["message"],
            format!("(#200) Permissions error: {scope} is required")
        );
    }
    // With the permission but not granted on the owner: 100/33 (the Page's token does
    // not reach the account's dataset, and the other way round).
    let page_only = s
        .token(json!({"scopes": ["page_events", "instagram_manage_events"], "page_ids": [PAGE]}))
        .await;
    let ig_only = s
        .token(json!({"scopes": ["page_events", "instagram_manage_events"], "instagram_account_ids": [IG]}))
        .await;
    let elsewhere = s
        .token(json!({"scopes": ["page_events", "instagram_manage_events"], "waba_id": WABA, "page_ids": [OTHER_PAGE], "instagram_account_ids": [OTHER_IG]}))
        .await;
    for (dataset, event, tokens) in [
        (&ms, messenger_event(), [&ig_only, &elsewhere]),
        (&ig, instagram_event(), [&page_only, &elsewhere]),
    ] {
        for t in tokens {
            let (st, v) = s
                .call(
                    "POST",
                    &format!("/{dataset}/events"),
                    t,
                    json!({"data": [event.clone()]}),
                )
                .await;
            assert_unreachable(st, &v, "post", dataset);
        }
    }
    // A dataset that does not exist: 100/33.
    let (st, v) = s
        .call(
            "POST",
            "/880000000000999/events",
            &token,
            json!({"data": [messenger_event()]}),
        )
        .await;
    assert_unreachable(st, &v, "post", "880000000000999");
    assert!(s.run.sim.received_events().is_empty());
    // The right tokens are served.
    for (dataset, event, t) in [
        (&ms, messenger_event(), &page_only),
        (&ig, instagram_event(), &ig_only),
    ] {
        let (st, v) = s
            .call(
                "POST",
                &format!("/{dataset}/events"),
                t,
                json!({"data": [event]}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    assert_eq!(s.run.sim.received_events().len(), 2);
}
