//! API key scopes, written as the attack: a leaked `read` key tries every write route
//! of the contract (the list generated from docs/openapi.yaml, not written here); a key
//! without `keys` tries to mint keys, a `keys` key tries to mint a stronger key than
//! itself; an account tries to outgrow the live-key cap with concurrent creations; and
//! every key and admin action must leave an audit record.

use ctwa_shared::auth::{Scope, generate_key};
use ctwa_shared::store::{Accounts, MAX_LIVE_KEYS};
use ctwa_tests::*;
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;

fn openapi() -> Yaml {
    let text = std::fs::read_to_string(format!(
        "{}/../docs/openapi.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// A schema with its `$ref` resolved.
fn resolve<'a>(doc: &'a Yaml, schema: &'a Yaml) -> &'a Yaml {
    match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    }
}

/// A plausible value of `schema`: its required fields filled by type, so the body is
/// one the route would act on if the key were allowed.
fn plausible(doc: &Yaml, schema: &Yaml) -> Value {
    let schema = resolve(doc, schema);
    let ty = schema["type"].as_str().unwrap_or("object");
    match ty {
        "string" => match schema["enum"].as_sequence() {
            Some(e) => json!(e[0].as_str().unwrap()),
            None => json!("1"),
        },
        "integer" => json!(schema["minimum"].as_i64().unwrap_or(100).max(100)),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "array" => json!([plausible(doc, &schema["items"])]),
        _ => {
            let mut required: Vec<&str> = schema["required"]
                .as_sequence()
                .map(|r| r.iter().filter_map(Yaml::as_str).collect())
                .unwrap_or_default();
            if let Some(first) = schema["anyOf"].as_sequence().and_then(|a| a.first()) {
                required.extend(
                    first["required"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .filter_map(Yaml::as_str),
                );
            }
            let mut o = serde_json::Map::new();
            for name in required {
                o.insert(name.into(), plausible(doc, &schema["properties"][name]));
            }
            Value::Object(o)
        }
    }
}

/// Every item of the data table, in a stable order.
async fn snapshot(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = app
            .clients
            .dynamodb
            .scan()
            .table_name(app.stack.data.table())
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            out.push(format!("{:?}", item.iter().collect::<BTreeMap<_, _>>()));
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_read_key_is_refused_on_every_write_route_of_the_contract() {
    let app = spawn_app().await;
    // The account has something to lose: a Meta connection, a dataset, an ad account.
    app.connect_meta(&app.api_key).await;
    let read = app.key_with_scopes(&[Scope::Read]).await;
    let (s, keys) = app.get("/v1/api-keys", &app.api_key).await;
    assert_eq!(s, 200, "{keys}");
    let own_key_id = keys["data"][0]["key_id"].as_str().unwrap().to_string();

    let doc = openapi();
    let mut writes = Vec::new();
    for (path, ops) in doc["paths"].as_mapping().unwrap() {
        for (method, op) in ops.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_uppercase();
            if !["POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                continue;
            }
            if op["security"].as_sequence().is_some_and(|s| s.is_empty()) {
                // Signed by Meta or Sinch, no API key (the webhooks).
                assert!(path.as_str().unwrap().starts_with("/webhook"), "{path:?}");
                continue;
            }
            writes.push((method, path.as_str().unwrap().to_string(), op.clone()));
        }
    }
    assert!(writes.len() >= 15, "{} write routes", writes.len());

    let before = snapshot(&app).await;
    let graph_calls = app.sim.sim.requests().len();
    for (method, path, op) in &writes {
        let concrete = path
            .replace("{ad_account_id}", "act_1")
            .replace("{edge}", "campaigns")
            .replace("{object_id}", "120330000000000001")
            .replace("{account_id}", &app.account_id)
            .replace("{key_id}", &own_key_id)
            .replace("{phone_number_id}", FIXTURE_PNID);
        assert!(
            !concrete.contains('{'),
            "{concrete}: a path parameter to fill"
        );
        let body = op["requestBody"]["content"]["application/json"]["schema"]
            .as_mapping()
            .map(|_| {
                plausible(
                    &doc,
                    &op["requestBody"]["content"]["application/json"]["schema"],
                )
            });
        let (s, v) = app.request(method, &concrete, &read, body.clone()).await;
        let needed = op["x-required-scope"].as_str().unwrap();
        assert_eq!(
            (
                s,
                v["error"]["code"].as_str(),
                v["error"]["required_scope"].as_str()
            ),
            (403, Some("insufficient_scope"), Some(needed)),
            "{method} {concrete} with {body:?}: {v}"
        );
    }
    assert_eq!(snapshot(&app).await, before, "nothing changed in the table");
    assert_eq!(
        app.sim.sim.requests().len(),
        graph_calls,
        "no call reached Meta"
    );
    // The key still reads.
    let (s, v) = app.get("/v1/status", &read).await;
    assert_eq!(s, 200, "{v}");
    app.stack.stop().await;
}

#[tokio::test]
async fn only_keys_keys_mint_and_never_more_than_they_hold() {
    let app = spawn_app().await;
    // A leaked conversions key cannot mint a key that would outlive its revocation.
    let sender = app
        .key_with_scopes(&[Scope::Read, Scope::Conversions])
        .await;
    for (method, path) in [
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/api-keys"),
        ("POST", "/v1/api-keys/key_0/rotate"),
        ("DELETE", "/v1/api-keys/key_0"),
    ] {
        let (s, v) = app.request(method, path, &sender, Some(json!({}))).await;
        assert_eq!(
            (s, &v["error"]["required_scope"]),
            (403, &json!("keys")),
            "{method} {path}: {v}"
        );
    }
    // A keys key mints what it holds, never more; without scopes the least: read.
    let manager = app.key_with_scopes(&[Scope::Read, Scope::Keys]).await;
    let (s, v) = app
        .request(
            "POST",
            "/v1/api-keys",
            &manager,
            Some(json!({"scopes": ["read", "ads"]})),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"], &v["error"]["required_scope"]),
        (403, &json!("insufficient_scope"), &json!("ads")),
        "{v}"
    );
    let (s, minted) = app
        .request("POST", "/v1/api-keys", &manager, Some(json!({"name": "x"})))
        .await;
    assert_eq!(s, 201, "{minted}");
    assert_eq!(minted["scopes"], json!(["read"]));
    let (s, keys_key) = app
        .request(
            "POST",
            "/v1/api-keys",
            &manager,
            Some(json!({"scopes": ["keys", "keys"]})),
        )
        .await;
    assert_eq!(
        (s, &keys_key["scopes"]),
        (201, &json!(["keys"])),
        "{keys_key}"
    );
    for bad in [json!({"scopes": []}), json!({"scopes": ["admin"]})] {
        let (s, v) = app
            .request("POST", "/v1/api-keys", &manager, Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    // The minted read key reads, and writes nothing.
    let read = minted["key"].as_str().unwrap();
    assert_eq!(app.get("/v1/status", read).await.0, 200);
    let (s, v) = app
        .request("POST", "/v1/capi", read, Some(json!({"dataset_id": "666"})))
        .await;
    assert_eq!((s, &v["error"]["required_scope"]), (403, &json!("connect")));
    // Rotation keeps the scopes (and a keys-only key cannot mint a read key).
    let id = minted["key_id"].as_str().unwrap();
    let (s, v) = app
        .request(
            "POST",
            &format!("/v1/api-keys/{id}/rotate"),
            &manager,
            Some(json!({})),
        )
        .await;
    assert_eq!((s, &v["scopes"]), (201, &json!(["read"])), "{v}");
    let (s, v) = app
        .request(
            "POST",
            "/v1/api-keys",
            keys_key["key"].as_str().unwrap(),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["required_scope"]),
        (403, &json!("read")),
        "{v}"
    );
    // Nor can it rotate a stronger key to get that key's powers.
    let (s, v) = app
        .request(
            "POST",
            &format!(
                "/v1/api-keys/{}/rotate",
                minted["created_by"].as_str().unwrap()
            ),
            keys_key["key"].as_str().unwrap(),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["required_scope"]),
        (403, &json!("read")),
        "{v}"
    );
    // The operator gives any scopes.
    let op = app.operator_key().await;
    let (s, v) = app
        .request(
            "POST",
            "/v1/api-keys",
            &op,
            Some(json!({"account_id": app.account_id, "scopes": ["ads", "connect", "keys"]})),
        )
        .await;
    assert_eq!(
        (s, &v["scopes"], &v["created_by"]),
        (201, &json!(["ads", "connect", "keys"]), &json!("operator")),
        "{v}"
    );
    app.stack.stop().await;
}

#[tokio::test]
async fn keys_stored_before_scopes_keep_working_but_manage_no_keys() {
    let app = spawn_app().await;
    let (legacy, mut rec) = generate_key(&app.account_id, &[], 0).unwrap();
    rec.scopes = None;
    app.stack.data.put_api_key(&rec).await.unwrap();
    let (s, v) = app.get("/v1/status", &legacy).await;
    assert_eq!(s, 200, "{v}");
    let code = app.oauth_code(
        &ctwa_shared::meta::connection::REQUIRED_SCOPES,
        FIXTURE_WABA,
    );
    let (s, v) = app
        .post_json("/v1/oauth/exchange-code", &legacy, json!({ "code": code }))
        .await;
    assert_eq!(s, 200, "connect is a legacy scope: {v}");
    let (s, v) = app
        .request("POST", "/v1/api-keys", &legacy, Some(json!({})))
        .await;
    assert_eq!(
        (s, &v["error"]["required_scope"]),
        (403, &json!("keys")),
        "{v}"
    );
    // Rotated (by a keys key), its successor holds the legacy scopes, written down.
    let (s, v) = app
        .request(
            "POST",
            &format!("/v1/api-keys/{}/rotate", rec.key_id),
            &app.api_key,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["scopes"],
        json!(["read", "conversions", "ads", "connect"])
    );
    assert_eq!(v["legacy_scopes"], json!(false));
    app.stack.stop().await;
}

#[tokio::test]
async fn live_keys_are_capped_even_under_concurrent_creation() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    let (account, _) = app.add_account("5550001111").await;
    let create = |name: String| {
        let (app, op, account) = (&app, op.clone(), account.clone());
        async move {
            app.request(
                "POST",
                "/v1/api-keys",
                &op,
                Some(json!({"account_id": account, "name": name})),
            )
            .await
        }
    };
    let mut ids = Vec::new();
    for i in 0..MAX_LIVE_KEYS - 5 {
        let (s, v) = create(format!("k{i}")).await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["key_id"].as_str().unwrap().to_string());
    }
    // Ten at once for the last five places: exactly five get one.
    let answers = futures_util::future::join_all((0..10).map(|i| create(format!("race{i}")))).await;
    let made = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, v)| v)
        .collect();
    assert_eq!((made, refused.len()), (5, 5), "{answers:?}");
    for v in refused {
        assert_eq!(v["error"]["code"], "key_limit_reached", "{v}");
    }
    let (s, v) = create("one more".into()).await;
    assert_eq!((s, &v["error"]["code"]), (409, &json!("key_limit_reached")));
    // A rotation takes the old key's place; a revocation gives one back.
    let (s, v) = app
        .request(
            "POST",
            &format!("/v1/api-keys/{}/rotate", ids[0]),
            &op,
            Some(json!({"grace_seconds": 60})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = app
        .request("DELETE", &format!("/v1/api-keys/{}", ids[1]), &op, None)
        .await;
    assert_eq!(s, 200);
    let (s, v) = app
        .request("DELETE", &format!("/v1/api-keys/{}", ids[1]), &op, None)
        .await;
    assert_eq!(s, 200, "a repeat is a no-op: {v}");
    let (s, v) = create("after a revocation".into()).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = create("over again".into()).await;
    assert_eq!(s, 409);
    let live = app
        .stack
        .data
        .api_keys(Some(&account))
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.counted)
        .count();
    assert_eq!(live, MAX_LIVE_KEYS as usize);
    app.stack.stop().await;
}

#[tokio::test]
async fn every_key_and_admin_action_is_audited() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    let (s, v) = app
        .post_json(
            "/v1/admin/accounts",
            &op,
            json!({"id": "audited", "name": "Audited", "phone_number_ids": ["4440001"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = app
        .post_json(
            "/v1/admin/accounts/audited/ad-accounts",
            &op,
            json!({"ad_account_id": "act_4441"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, k) = app
        .post_json(
            "/v1/api-keys",
            &op,
            json!({"account_id": "audited", "scopes": ["read", "keys"]}),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let (manager, manager_id) = (
        k["key"].as_str().unwrap().to_string(),
        k["key_id"].as_str().unwrap().to_string(),
    );
    let (s, minted) = app
        .post_json("/v1/api-keys", &manager, json!({"name": "minted"}))
        .await;
    assert_eq!(s, 201, "{minted}");
    let minted_id = minted["key_id"].as_str().unwrap().to_string();
    assert_eq!(minted["created_by"], manager_id.as_str());
    let (s, rotated) = app
        .post_json(
            &format!("/v1/api-keys/{minted_id}/rotate"),
            &manager,
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{rotated}");
    let (s, _) = app
        .request(
            "DELETE",
            &format!("/v1/api-keys/{}", rotated["key_id"].as_str().unwrap()),
            &op,
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Only the operator reads the trail.
    let (s, v) = app
        .get("/v1/admin/audit?account_id=audited", &manager)
        .await;
    assert_eq!(
        (s, &v["error"]["required_scope"]),
        (403, &json!("operator"))
    );
    let (s, v) = app.get("/v1/admin/audit?account_id=audited", &op).await;
    assert_eq!(s, 200, "{v}");
    let rows = v["audit"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["actor"]["kind"].as_str().unwrap(),
                r["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "api_key.revoke",
                "operator",
                rotated["key_id"].as_str().unwrap()
            ),
            ("api_key.rotate", "account_key", minted_id.as_str()),
            ("api_key.create", "account_key", minted_id.as_str()),
            ("api_key.create", "operator", manager_id.as_str()),
            ("ad_account.link", "operator", "act_4441"),
            ("account.create", "operator", "audited"),
        ],
        "{v}"
    );
    assert_eq!(rows[1]["actor"]["key_id"], manager_id.as_str());
    assert_eq!(rows[3]["detail"]["scopes"], json!(["read", "keys"]));
    assert!(
        rows.iter()
            .all(|r| r["at"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    assert!(!v.to_string().contains(&manager), "no key in the trail");
    // Pages, newest first.
    let (s, p1) = app
        .get("/v1/admin/audit?account_id=audited&limit=4", &op)
        .await;
    assert_eq!((s, p1["audit"].as_array().unwrap().len()), (200, 4));
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (s, p2) = app
        .get(
            &format!(
                "/v1/admin/audit?account_id=audited&limit=4&cursor={}",
                cursor.replace('#', "%23")
            ),
            &op,
        )
        .await;
    assert_eq!(s, 200, "{p2}");
    assert_eq!(p2["audit"].as_array().unwrap().len(), 2);
    assert_eq!(p2["next_cursor"], Value::Null);
    let (s, _) = app.get("/v1/admin/audit?cursor=nope", &op).await;
    assert_eq!(s, 400);
    app.stack.stop().await;
}
