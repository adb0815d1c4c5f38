//! Onboarding over HTTP with an operator key, and API keys: create, list (prefix only),
//! rotate (with and without grace), revoke; each key bound to one account.

use ctwa_shared::store::Accounts;
use ctwa_tests::*;
use serde_json::json;

#[tokio::test]
async fn operator_onboards_a_business_over_http() {
    let app = spawn_app().await;
    let op = app.operator_key().await;
    let (s, v) = app
        .request(
            "POST",
            "/v1/admin/accounts",
            &op,
            Some(json!({
                "id": "acme", "name": "Acme", "waba_id": "555", "phone_number_ids": ["777000111"],
                "ad_account_ids": ["act_42"], "page_id": "99"
            })),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["account"]["ad_accounts"][0]["ad_account_id"], "act_42");
    // Routes are exclusive: a second account cannot claim the same number or ad account.
    let (s, v) = app
        .request(
            "POST",
            "/v1/admin/accounts",
            &op,
            Some(json!({"name": "B", "phone_number_ids": ["777000111"]})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = app.request("POST",
        "/v1/admin/accounts",
        &op,
        Some(
            json!({"id": "c", "name": "C", "phone_number_ids": ["888"], "ad_account_ids": ["42"]}),
        ),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    // All or nothing: neither the account nor its number was kept.
    let (s, _) = app.request("GET", "/v1/admin/accounts/c", &op, None).await;
    assert_eq!(s, 404);
    let (s, v) = app
        .request(
            "POST",
            "/v1/admin/accounts",
            &op,
            Some(json!({"id": "c", "name": "C", "phone_number_ids": ["888"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .request(
            "POST",
            "/v1/admin/accounts/acme/ad-accounts",
            &op,
            Some(json!({"ad_account_id": "act_43"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = app
        .request("GET", "/v1/admin/accounts/acme", &op, None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["account"]["ad_accounts"].as_array().unwrap().len(), 2);
    let (s, _) = app
        .request("GET", "/v1/admin/accounts/nobody", &op, None)
        .await;
    assert_eq!(s, 404);
    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "id": "a b"}),
        json!({"name": "x", "ad_account_ids": ["act_x"]}),
        json!({"name": "x", "extra": 1}),
        json!({"name": "x", "phone_number_ids": ["5", "5"]}),
        json!({"name": "x", "ad_account_ids": ["act_7", "7"]}),
        json!({"name": "x", "phone_number_ids": (0..30).map(|i| i.to_string()).collect::<Vec<_>>()}),
    ] {
        let (s, v) = app
            .request("POST", "/v1/admin/accounts", &op, Some(bad.clone()))
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }

    // A key for the new account: shown once, works, listed by prefix only.
    let (s, k) = app
        .request(
            "POST",
            "/v1/api-keys",
            &op,
            Some(json!({"account_id": "acme", "name": "shop backend"})),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("ctwa_"));
    let (s, v) = app.request("GET", "/v1/status", &key, None).await;
    assert_eq!((s, &v["account_id"]), (200, &json!("acme")), "{v}");
    let (s, list) = app
        .request("GET", "/v1/api-keys?account_id=acme", &op, None)
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["data"][0]["key_id"], k["key_id"]);
    assert_eq!(list["data"][0]["prefix"], &key[..12]);
    assert!(
        !list.to_string().contains(&key),
        "the key is never shown again"
    );
    let stored = app.stack.data.api_keys(Some("acme")).await.unwrap();
    assert!(
        stored
            .iter()
            .all(|r| r.hash != key && !r.hash.contains(&key[5..])),
        "only hashes are stored"
    );

    // Roles: an account key cannot onboard; an operator key reads no account's data.
    let (s, _) = app
        .request(
            "POST",
            "/v1/admin/accounts",
            &key,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app.request("GET", "/v1/status", &op, None).await;
    assert_eq!(s, 403);
    let (s, _) = app.request("GET", "/v1/api-keys", &op, None).await;
    assert_eq!(s, 400, "an operator names the account");
}

#[tokio::test]
async fn keys_rotate_and_revoke() {
    let app = spawn_app().await;
    let own = app.api_key.clone();
    // Self-service with the account's own key.
    let (s, v) = app
        .request("POST", "/v1/api-keys", &own, Some(json!({"name": "ci"})))
        .await;
    assert_eq!(s, 201, "{v}");
    let (k1, id1) = (
        v["key"].as_str().unwrap().to_string(),
        v["key_id"].as_str().unwrap().to_string(),
    );
    // Rotation with a grace period: both keys work until it ends.
    let (s, v) = app
        .request(
            "POST",
            &format!("/v1/api-keys/{id1}/rotate"),
            &own,
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["replaces"], id1.as_str());
    let (k2, id2) = (
        v["key"].as_str().unwrap().to_string(),
        v["key_id"].as_str().unwrap().to_string(),
    );
    for k in [&k1, &k2] {
        let (s, _) = app.request("GET", "/v1/status", k, None).await;
        assert_eq!(s, 200);
    }
    // The old key reads, but manages nothing: no new key, no longer life for itself.
    let (s, _) = app
        .request("POST", "/v1/api-keys", &k1, Some(json!({})))
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .request(
            "POST",
            &format!("/v1/api-keys/{id1}/rotate"),
            &k1,
            Some(json!({"grace_seconds": 2592000})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .request(
            "POST",
            &format!("/v1/api-keys/{id1}/rotate"),
            &own,
            Some(json!({"grace_seconds": 2592000})),
        )
        .await;
    assert_eq!(s, 201, "rotating it again does not push its end back");
    let (_, list) = app.request("GET", "/v1/api-keys", &own, None).await;
    let k1_row = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == id1.as_str())
        .unwrap()
        .clone();
    let ends: String = k1_row["expires_at"].as_str().unwrap().into();
    assert!(
        ends < ctwa_shared::time::rfc3339_millis(ctwa_shared::time::now_millis() + 3_601_000),
        "{ends}"
    );
    // Rotation without grace: the old key stops at once.
    let (s, v) = app
        .request(
            "POST",
            &format!("/v1/api-keys/{id2}/rotate"),
            &own,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let k3 = v["key"].as_str().unwrap().to_string();
    let (s, _) = app.request("GET", "/v1/status", &k2, None).await;
    assert_eq!(s, 401);
    let (s, _) = app
        .request("POST", &format!("/v1/api-keys/{id2}/rotate"), &own, None)
        .await;
    assert_eq!(s, 409, "a retired key is not rotated again");
    // Revocation.
    let id3 = v["key_id"].as_str().unwrap().to_string();
    let (s, v) = app
        .request("DELETE", &format!("/v1/api-keys/{id3}"), &own, None)
        .await;
    assert_eq!((s, &v["revoked"]), (200, &json!(true)));
    let (s, v) = app.request("GET", "/v1/status", &k3, None).await;
    assert_eq!(s, 401, "{v}");
    let (s, list) = app.request("GET", "/v1/api-keys", &own, None).await;
    assert_eq!(s, 200);
    let active: Vec<bool> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["active"].as_bool().unwrap())
        .collect();
    assert_eq!(active.len(), 5, "{list}");
    // Another account cannot see or touch these keys.
    let (_, other_key) = app.add_account("1111111111").await;
    let (s, _) = app
        .request("DELETE", &format!("/v1/api-keys/{id1}"), &other_key, None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .request(
            "GET",
            &format!("/v1/api-keys?account_id={}", app.account_id),
            &other_key,
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = app
        .request(
            "POST",
            "/v1/api-keys/key_0000/rotate",
            &own,
            Some(json!({"grace_seconds": -1})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = app
        .request("DELETE", "/v1/api-keys/..%2f", &own, None)
        .await;
    assert_eq!(s, 404);
}
