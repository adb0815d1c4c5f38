//! External shapes: the events AWS's own tool generates (`sam local generate-event`, in
//! events/aws/) through the same `lambda_http` parsing the Lambda binaries use, and the
//! SAM template checked against the code (routes, table keys, indexes, stream, TTL).

use ctwa_shared::auth::hash_key;
use ctwa_shared::capture::{CaptureDeps, handle_stream_event};
use ctwa_shared::config::WebhookConfig;
use ctwa_shared::handlers::{api, webhook};
use ctwa_shared::http::lambda::{from_lambda, into_lambda};
use ctwa_shared::secrets::MemorySecrets;
use ctwa_shared::store::memory::MemoryStore;
use ctwa_shared::store::{Accounts, ApiKeyRecord};
use ctwa_shared::stream::StreamEvent;
use serde_yaml::Value as Yaml;
use std::sync::Arc;
use std::time::Duration;

fn event(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../events/aws/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn webhook_deps(store: Arc<MemoryStore>) -> webhook::WebhookDeps {
    webhook::WebhookDeps {
        inbox: store,
        secrets: Arc::new(MemorySecrets::with(
            "s",
            r#"{"app_secret":"local-app-secret","verify_token":"local-verify-token"}"#,
        )),
        config: WebhookConfig {
            inbox_table: "inbox".into(),
            webhook_secret_id: "s".into(),
            inbox_ttl: Duration::from_secs(86_400),
            max_body_bytes: 1 << 20,
            sinch_max_skew: Duration::from_secs(300),
            secrets_cache_ttl: Duration::from_secs(60),
            sinch: ctwa_shared::config::SinchSecrets::PerApp {
                prefix: "stack/sinch-app/".into(),
            },
        },
    }
}

async fn invoke_webhook(
    deps: &webhook::WebhookDeps,
    name: &str,
) -> lambda_http::Response<lambda_http::Body> {
    let req =
        lambda_http::request::from_str(&event(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    into_lambda(webhook::handle(deps, from_lambda(req)).await)
}

fn body_text(r: &lambda_http::Response<lambda_http::Body>) -> String {
    String::from_utf8_lossy(r.body().as_ref()).into_owned()
}

#[tokio::test]
async fn sam_generated_api_gateway_events_reach_the_handlers() {
    let store = Arc::new(MemoryStore::new());
    let deps = webhook_deps(store.clone());

    let verify = invoke_webhook(&deps, "apigw-webhook-verify.json").await;
    assert_eq!(
        (verify.status().as_u16(), body_text(&verify)),
        (200, "1158201444".to_string())
    );

    // isBase64Encoded: true — the signature is over the decoded bytes.
    let b64 = invoke_webhook(&deps, "apigw-webhook-post-base64.json").await;
    assert_eq!(b64.status(), 200, "{}", body_text(&b64));
    let plain = invoke_webhook(&deps, "apigw-webhook-post-plain.json").await;
    assert_eq!(plain.status(), 200, "{}", body_text(&plain));
    assert!(body_text(&plain).contains("\"duplicates\":1"));
    assert_eq!(store.inbox_items().len(), 1);

    let api_deps = api::ApiDeps {
        accounts: store.clone(),
        conversations: store.clone(),
    };
    let call = |name: &str| {
        let req = lambda_http::request::from_str(&event(name)).unwrap();
        api::handle(&api_deps, from_lambda(req))
    };
    assert_eq!(
        call("apigw-conversations-list.json").await.status,
        401,
        "unknown key"
    );
    store
        .put_api_key(&ApiKeyRecord {
            hash: hash_key("ctwa_test_key"),
            prefix: "ctwa_test_ke".into(),
            account_id: "acct".into(),
            created_at_ms: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let list = call("apigw-conversations-list.json").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body_json()["conversations"], serde_json::json!([]));
    assert_eq!(call("apigw-conversation-get.json").await.status, 404);
    // The raw generated event (GET /path/to/resource) is a 404 JSON answer, not a crash.
    let raw = lambda_http::request::from_str(&event("apigw-http-proxy.json")).unwrap();
    let r = webhook::handle(&deps, from_lambda(raw)).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn sam_generated_stream_event_is_read_and_foreign_items_are_skipped() {
    let store = Arc::new(MemoryStore::new());
    let deps = CaptureDeps::new(store.clone(), store.clone());
    let ev: StreamEvent = serde_json::from_str(&event("dynamodb-stream-generated.json")).unwrap();
    assert_eq!(ev.records.len(), 3);
    let resp = handle_stream_event(&deps, ev).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(store.click_count(), 0);
    assert_eq!(
        serde_json::to_string(&resp).unwrap(),
        r#"{"batchItemFailures":[]}"#
    );
}

fn template() -> Yaml {
    let text = std::fs::read_to_string(format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn openapi_routes() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!(
        "{}/../docs/openapi.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let doc: Yaml = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
    let mut routes = Vec::new();
    for (path, ops) in doc["paths"].as_mapping().unwrap() {
        for (method, op) in ops.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if ["get", "post", "put", "patch", "delete"].contains(&method) {
                assert!(
                    op["responses"]["default"].is_mapping()
                        || op["responses"].as_mapping().is_some_and(|r| r.len() > 1),
                    "{method} {path:?}: errors documented"
                );
                routes.push((method.to_uppercase(), path.as_str().unwrap().to_string()));
            }
        }
    }
    routes.sort();
    routes
}

/// The published contract names the template's routes (which the local stack serves:
/// it reads its routes from the template).
#[test]
fn openapi_routes_are_the_template_routes() {
    let mut routes = ctwa_local::lambda::template_routes().unwrap();
    routes.sort();
    assert_eq!(openapi_routes(), routes);
}

/// The contract names, for every operation, what its key needs (`x-required-scope`),
/// and that is what the code's one table ([`ROUTE_ACCESS`]) checks; the signed routes
/// (webhooks) take no key (`security: []`).
#[test]
fn openapi_states_each_routes_scope_as_the_code_checks_it() {
    use ctwa_shared::auth::{Access, ROUTE_ACCESS};
    let text = std::fs::read_to_string(format!(
        "{}/../docs/openapi.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let doc: Yaml = serde_yaml::from_str(&text).unwrap();
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_mapping().unwrap() {
        for (method, op) in ops.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_uppercase();
            let path = path.as_str().unwrap().to_string();
            let signed = op["security"].as_sequence().is_some_and(|s| s.is_empty());
            let scope = op["x-required-scope"].as_str();
            let access = match (signed, scope) {
                (true, None) => "none".to_string(),
                (false, Some(s)) => s.to_string(),
                other => panic!("{method} {path}: security/x-required-scope {other:?}"),
            };
            documented.push((method, path, access));
        }
    }
    documented.sort();
    let mut code: Vec<(String, String, String)> = ROUTE_ACCESS
        .iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), a.name().to_string()))
        .collect();
    code.sort();
    assert_eq!(documented, code);
    assert!(ROUTE_ACCESS.iter().any(|(_, _, a)| *a == Access::Operator));
}

/// Every route of the contract is served by the local run's handlers: none answers the
/// router's or a handler's "no route" 404, nor 405.
#[tokio::test]
async fn every_openapi_route_is_served_by_the_local_run() {
    let app = ctwa_tests::spawn_app().await;
    for (method, path) in openapi_routes() {
        let concrete = path
            .replace("{ad_account_id}", "act_1")
            .replace("{edge}", "campaigns")
            .replace("{object_id}", "123")
            .replace("{ad_id}", "123")
            .replace("{account_id}", "acme")
            .replace("{key_id}", "key_0")
            .replace("{phone_number_id}", "777")
            .replace("{id}", "c1");
        let r = app
            .http
            .request(method.parse().unwrap(), format!("{}{concrete}", app.base))
            .bearer_auth(&app.api_key)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !(status == 404 && (body.contains("no route") || body.contains("\"Not Found\""))),
            "{method} {path}: {body}"
        );
        assert!(status < 500, "{method} {path}: {status} {body}");
    }
}

/// The statuses a conversion's answer and its audit row carry are the contract's
/// `ConversionStatus` (with `invalid`: a batch entry refused before anything was stored),
/// the audit trail's filter names them all, and the unknown outcome (a send that got no
/// answer) is documented where the answers carry it.
#[test]
fn openapi_names_every_conversion_status_and_the_unknown_outcome() {
    use ctwa_shared::store::EventStatus;
    let text = std::fs::read_to_string(format!(
        "{}/../docs/openapi.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let doc: Yaml = serde_yaml::from_str(&text).unwrap();
    let schemas = &doc["components"]["schemas"];
    let mut documented: Vec<&str> = schemas["ConversionStatus"]["enum"]
        .as_sequence()
        .expect("ConversionStatus lists the statuses")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    documented.sort();
    let mut code: Vec<&str> = EventStatus::ALL.iter().map(|s| s.as_str()).collect();
    code.push("invalid");
    code.sort();
    assert_eq!(documented, code);
    let filter = doc["paths"]["/v1/conversions"]["get"]["parameters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("status"))
        .expect("the status filter");
    let filter = filter["description"].as_str().unwrap();
    for s in EventStatus::ALL {
        assert!(filter.contains(s.as_str()), "{} in {filter:?}", s.as_str());
    }
    let result = &schemas["ConversionResult"]["properties"];
    assert_eq!(
        result["status"]["$ref"].as_str(),
        Some("#/components/schemas/ConversionStatus")
    );
    let reason = result["reason"]["description"].as_str().unwrap();
    assert!(
        reason.contains(ctwa_shared::capi::OUTCOME_UNKNOWN),
        "{reason}"
    );
    let status_doc = schemas["ConversionStatus"]["description"].as_str().unwrap();
    assert!(status_doc.contains("unknown: sent"), "{status_doc}");
    let batch = &schemas["ConversionBatchResult"];
    assert_eq!(batch["additionalProperties"].as_bool(), Some(false));
    let required: Vec<&str> = batch["required"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut props: Vec<&str> = batch["properties"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    props.sort();
    // The batch answer's keys, as `send_batch` writes them.
    assert_eq!(props, ["delivered", "results", "total", "unknown"]);
    assert!(required.contains(&"unknown"));
    for path in ["/v1/conversions", "/v1/conversions/batch"] {
        let ok = &doc["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"];
        assert_ne!(
            ok.as_str(),
            Some("#/components/schemas/Object"),
            "{path}: its answer is documented"
        );
    }
}

/// The JSON request body schema of an operation, with its `$ref` resolved.
fn request_schema<'a>(doc: &'a Yaml, op: &'a Yaml) -> Option<&'a Yaml> {
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    let name = schema["$ref"].as_str()?.rsplit('/').next()?;
    Some(&doc["components"]["schemas"][name])
}

/// The contract is exact about extra fields: a request body whose schema says
/// `additionalProperties: false` is one whose handler refuses an unknown field (400
/// naming it), and a body the handler refuses that way is never documented as open.
/// Operator routes are asked with an operator key, the others with the account's key.
#[tokio::test]
async fn openapi_says_which_bodies_refuse_unknown_fields() {
    let app = ctwa_tests::spawn_app().await;
    let operator = {
        let (k, rec) = ctwa_shared::auth::generate_operator_key(0).expect("operator key");
        app.stack.data.put_api_key(&rec).await.expect("stored");
        k
    };
    let text = std::fs::read_to_string(format!(
        "{}/../docs/openapi.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let doc: Yaml = serde_yaml::from_str(&text).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_mapping().unwrap() {
        let path = path.as_str().unwrap();
        if path.starts_with("/webhook") || path.starts_with("/v25.0") {
            // Meta's own payloads and Graph bodies: open on purpose.
            continue;
        }
        for (method, op) in ops.as_mapping().unwrap() {
            let Some(schema) = request_schema(&doc, op) else {
                continue;
            };
            let closed = schema["additionalProperties"].as_bool() == Some(false);
            let concrete = path
                .replace("{account_id}", "acme")
                .replace("{key_id}", "key_0")
                .replace("{phone_number_id}", "777")
                .replace("{ad_id}", "123");
            let key = if path.starts_with("/v1/admin") {
                &operator
            } else {
                &app.api_key
            };
            let r = app
                .http
                .request(
                    method.as_str().unwrap().to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", app.base),
                )
                .bearer_auth(key)
                .json(&serde_json::json!({"zz_not_a_field": 1}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            let refused = status == 400 && body.contains("unknown field `zz_not_a_field`");
            assert_eq!(
                closed, refused,
                "{method:?} {path}: additionalProperties false = {closed}, the handler answered {status} {body}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} bodies checked");
    app.stack.stop().await;
}

fn key_schema(table: &Yaml) -> Vec<(String, String)> {
    table["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().unwrap().to_string(),
                k["KeyType"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn template_tables_match_the_code() {
    let t = template();
    let inbox = &t["Resources"]["InboxTable"]["Properties"];
    assert_eq!(key_schema(inbox), [("pk".to_string(), "HASH".to_string())]);
    assert_eq!(inbox["StreamSpecification"]["StreamViewType"], "NEW_IMAGE");
    assert_eq!(
        inbox["TimeToLiveSpecification"]["AttributeName"],
        ctwa_shared::tables::TTL_ATTRIBUTE
    );
    assert_eq!(
        inbox["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    let data = &t["Resources"]["DataTable"]["Properties"];
    assert_eq!(
        key_schema(data),
        [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
    assert_eq!(
        data["TimeToLiveSpecification"]["AttributeName"],
        ctwa_shared::tables::TTL_ATTRIBUTE
    );
    let gsis = data["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(gsis.len(), ctwa_shared::tables::DATA_INDEXES.len());
    for (name, pk, sk) in ctwa_shared::tables::DATA_INDEXES {
        let g = gsis
            .iter()
            .find(|g| g["IndexName"] == name)
            .unwrap_or_else(|| panic!("index {name}"));
        assert_eq!(
            key_schema(g),
            [
                (pk.to_string(), "HASH".to_string()),
                (sk.to_string(), "RANGE".to_string())
            ]
        );
        assert_eq!(g["Projection"]["ProjectionType"], "ALL");
    }
    // Every function is wired to the binary of its own crate under functions/.
    for (_, res) in t["Resources"].as_mapping().unwrap() {
        if res["Type"] == "AWS::Serverless::Function" {
            let bin = res["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap();
            let manifest = format!(
                "{}/../functions/{bin}/Cargo.toml",
                env!("CARGO_MANIFEST_DIR")
            );
            assert!(std::path::Path::new(&manifest).exists(), "{manifest}");
        }
    }
}

#[tokio::test]
async fn inbox_insert_stream_event_captures_the_click() {
    let store = Arc::new(MemoryStore::new());
    store
        .create_account(&ctwa_shared::domain::Account {
            id: "demo".into(),
            name: "Demo".into(),
            waba_id: None,
            phone_number_ids: vec!["1204727649384372".into()],
            sinch_app_id: None,
            page_ids: Vec::new(),
            instagram_account_ids: Vec::new(),
            created_at_ms: 0,
        })
        .await
        .unwrap();
    let deps = CaptureDeps::new(store.clone(), store.clone());
    let path = format!(
        "{}/../events/dynamodb-stream-inbox-insert.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let ev: StreamEvent = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let resp = handle_stream_event(&deps, ev).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(store.click_count(), 1);
    assert_eq!(store.conversation_count(), 1);
}
