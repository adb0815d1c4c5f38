//! The Accounts port: accounts, their routes, API keys.

use super::ads::link_item;
use super::*;
use crate::time::sortable_millis;

fn account_from(item: &Item) -> Result<Account, StoreError> {
    let pnids = get_strings(item, "phone_number_ids");
    Ok(Account {
        id: req_s(item, "account_id")?,
        name: get_s(item, "account_name").unwrap_or_default(),
        waba_id: get_s(item, "waba_id"),
        phone_number_ids: pnids,
        sinch_app_id: get_s(item, "sinch_app_id"),
        created_at_ms: get_n(item, "created_at").unwrap_or_default(),
    })
}

#[async_trait]
impl Accounts for DynamoData {
    async fn create_account(&self, a: &Account) -> Result<(), StoreError> {
        self.create_account_items(a, &[]).await
    }

    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.get(format!("ACCT#{id}"), "ACCOUNT")
            .await?
            .map(|i| account_from(&i))
            .transpose()
    }

    async fn account_for_route(&self, route: &Route) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(format!("ROUTE#{}", route.key()), "ROUTE")
            .await?
            .and_then(|i| get_s(&i, "account_id")))
    }

    async fn route_record(&self, route: &Route) -> Result<Option<RouteRecord>, StoreError> {
        self.get(format!("ROUTE#{}", route.key()), "ROUTE")
            .await?
            .map(|i| super::routes::route_from(route, &i))
            .transpose()
    }

    async fn put_api_key(&self, k: &ApiKeyRecord) -> Result<(), StoreError> {
        let key_id = key_id_of(k);
        let mut item = key(format!("APIKEY#{}", k.hash), "APIKEY");
        item.insert("key_hash".into(), s(&k.hash));
        item.insert("account_id".into(), s(&k.account_id));
        item.insert("prefix".into(), s(&k.prefix));
        item.insert("created_at".into(), n(k.created_at_ms));
        item.insert("revoked".into(), AttributeValue::Bool(k.revoked));
        item.insert("key_id".into(), s(&key_id));
        item.insert("operator".into(), AttributeValue::Bool(k.operator));
        if let Some(name) = &k.name {
            item.insert("key_name".into(), s(name));
        }
        if let Some(e) = k.expires_at_ms {
            item.insert("key_expires_at".into(), n(e));
        }
        item.insert("gsi1pk".into(), s(api_keys_gsi(k)));
        item.insert(
            "gsi1sk".into(),
            s(format!("KEY#{}#{key_id}", sortable_millis(k.created_at_ms))),
        );
        let mut by_id = key(format!("KEYID#{key_id}"), "KEYID");
        by_id.insert("key_hash".into(), s(&k.hash));
        if self.put_all_new(vec![item, by_id]).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict("api key exists".into()))
        }
    }

    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(item) = self.get(format!("APIKEY#{hash}"), "APIKEY").await? else {
            return Ok(None);
        };
        api_key_from(hash, &item).map(Some)
    }

    async fn api_keys(&self, account_id: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let pk = match account_id {
            Some(a) => format!("ACCT#{a}#APIKEYS"),
            None => OPERATOR_KEYS.to_string(),
        };
        let items = self.query(KeyQuery::gsi1(pk, "KEY#"), false, 1000).await?;
        items
            .iter()
            .map(|i| api_key_from(&req_s(i, "key_hash")?, i))
            .collect()
    }

    async fn api_key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(i) = self.get(format!("KEYID#{key_id}"), "KEYID").await? else {
            return Ok(None);
        };
        self.api_key(&req_s(&i, "key_hash")?).await
    }

    async fn retire_api_key(
        &self,
        hash: &str,
        revoked_at_ms: Option<i64>,
        expires_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut e = SetExpr::default();
        if let Some(r) = revoked_at_ms {
            e.set("revoked", AttributeValue::Bool(true));
            e.set("revoked_at", n(r));
        }
        if let Some(x) = expires_at_ms {
            e.set("key_expires_at", n(x));
        }
        if e.parts.is_empty() {
            return Ok(());
        }
        // An expiry only ever moves earlier: a key cannot push its own end back.
        let mut condition = "attribute_exists(pk)".to_string();
        if let Some(x) = expires_at_ms {
            let v = e.value(n(x));
            let nm = e.name("key_expires_at");
            condition = format!("{condition} AND (attribute_not_exists({nm}) OR {nm} > {v})");
        }
        let res = self
            .update(format!("APIKEY#{hash}"), "APIKEY", e)
            .condition_expression(condition)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(err)
                if expires_at_ms.is_some()
                    && err
                        .as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(backend(err)),
        }
    }
}

// ---------------------------------------------------------------- API keys

const OPERATOR_KEYS: &str = "OPERATOR#APIKEYS";

fn api_keys_gsi(k: &ApiKeyRecord) -> String {
    if k.operator {
        OPERATOR_KEYS.to_string()
    } else {
        format!("ACCT#{}#APIKEYS", k.account_id)
    }
}

fn key_id_of(k: &ApiKeyRecord) -> String {
    if k.key_id.is_empty() {
        ApiKeyRecord::key_id_for_hash(&k.hash)
    } else {
        k.key_id.clone()
    }
}

fn api_key_from(hash: &str, item: &Item) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        hash: hash.to_string(),
        prefix: get_s(item, "prefix").unwrap_or_default(),
        account_id: req_s(item, "account_id")?,
        created_at_ms: get_n(item, "created_at").unwrap_or_default(),
        revoked: matches!(item.get("revoked"), Some(AttributeValue::Bool(true))),
        key_id: get_s(item, "key_id").unwrap_or_else(|| ApiKeyRecord::key_id_for_hash(hash)),
        name: get_s(item, "key_name"),
        operator: matches!(item.get("operator"), Some(AttributeValue::Bool(true))),
        expires_at_ms: get_n(item, "key_expires_at"),
        revoked_at_ms: get_n(item, "revoked_at"),
    })
}

impl DynamoData {
    /// The account, its routes and `links` (ad accounts) in one transaction.
    pub(super) async fn create_account_items(
        &self,
        a: &Account,
        links: &[AdAccountLink],
    ) -> Result<(), StoreError> {
        let mut item = key(format!("ACCT#{}", a.id), "ACCOUNT");
        item.insert("account_id".into(), s(&a.id));
        item.insert("account_name".into(), s(&a.name));
        if let Some(w) = &a.waba_id {
            item.insert("waba_id".into(), s(w));
        }
        item.insert(
            "phone_number_ids".into(),
            AttributeValue::L(a.phone_number_ids.iter().map(s).collect()),
        );
        if let Some(app) = &a.sinch_app_id {
            item.insert("sinch_app_id".into(), s(app));
        }
        item.insert("created_at".into(), n(a.created_at_ms));
        let mut writes = vec![item];
        for r in a.routes() {
            // Pending: a new account has no Meta connection to verify it with yet.
            let rec = RouteRecord::pending(r.clone(), a, a.created_at_ms);
            writes.push(super::routes::route_item(&rec));
            // The route's unrouted items are owed to the account from now on.
            writes.push(super::unrouted::drain_item(&r, &a.id, a.created_at_ms));
        }
        writes.extend(links.iter().map(link_item));
        if self.put_all_new(writes).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "account {} or one of its phone number ids, Sinch app or ad accounts is already registered",
                a.id
            )))
        }
    }
}
