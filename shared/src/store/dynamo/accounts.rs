//! The Accounts port: accounts, their routes, API keys (with each account's live-key
//! counter); the AuditLog port.

use super::ads::link_item;
use super::*;
use crate::auth::Scope;
use crate::time::sortable_millis;
use aws_sdk_dynamodb::types::Update;

fn account_from(item: &Item) -> Result<Account, StoreError> {
    let pnids = get_strings(item, "phone_number_ids");
    Ok(Account {
        id: req_s(item, "account_id")?,
        name: get_s(item, "account_name").unwrap_or_default(),
        waba_id: get_s(item, "waba_id"),
        phone_number_ids: pnids,
        sinch_app_id: get_s(item, "sinch_app_id"),
        page_ids: get_strings(item, "page_ids"),
        instagram_account_ids: get_strings(item, "instagram_account_ids"),
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
        let uncounted = ApiKeyRecord {
            counted: false,
            ..k.clone()
        };
        if self.put_all_new(api_key_items(&uncounted)).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict("api key exists".into()))
        }
    }

    async fn create_api_key(
        &self,
        k: &ApiKeyRecord,
        max_live: u32,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError> {
        let counted = ApiKeyRecord {
            counted: true,
            ..k.clone()
        };
        for attempt in 0..TRIES {
            backoff(attempt).await;
            let mut writes = vec![self.count_key(&k.account_id, 1, Some(max_live))?];
            for item in api_key_items(&counted)
                .into_iter()
                .chain([audit_item(audit)])
            {
                writes.push(self.new_item(item)?);
            }
            if self.transact(writes).await? {
                return Ok(KeyWrite::Done);
            }
            if self.live_keys(&k.account_id).await? >= i64::from(max_live) {
                return Ok(KeyWrite::LimitReached);
            }
            if self.api_key(&k.hash).await?.is_some() {
                return Err(StoreError::Conflict("api key exists".into()));
            }
            // Cancelled by a concurrent transaction on the counter: try again.
        }
        Err(StoreError::Conflict(
            "the account's keys are changing concurrently: retry".into(),
        ))
    }

    async fn rotate_api_key(
        &self,
        old: &ApiKeyRecord,
        new: &ApiKeyRecord,
        end: KeyEnd,
        max_live: u32,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError> {
        let counted = ApiKeyRecord {
            counted: true,
            ..new.clone()
        };
        for attempt in 0..TRIES {
            backoff(attempt).await;
            let mut writes = Vec::new();
            if !old.counted {
                // A key that held no place (made before the count, or already rotated
                // away): its successor takes a new one.
                writes.push(self.count_key(&new.account_id, 1, Some(max_live))?);
            }
            for item in api_key_items(&counted)
                .into_iter()
                .chain([audit_item(audit)])
            {
                writes.push(self.new_item(item)?);
            }
            writes.push(self.end_key(old, end)?);
            if self.transact(writes).await? {
                return Ok(KeyWrite::Done);
            }
            if !unchanged(old, self.api_key(&old.hash).await?.as_ref()) {
                return Ok(KeyWrite::Changed);
            }
            if !old.counted && self.live_keys(&new.account_id).await? >= i64::from(max_live) {
                return Ok(KeyWrite::LimitReached);
            }
        }
        Err(StoreError::Conflict(
            "the account's keys are changing concurrently: retry".into(),
        ))
    }

    async fn revoke_api_key(
        &self,
        k: &ApiKeyRecord,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError> {
        for attempt in 0..TRIES {
            backoff(attempt).await;
            let mut writes = vec![
                self.end_key(k, KeyEnd::RevokedAt(at_ms))?,
                self.new_item(audit_item(audit))?,
            ];
            if k.counted {
                writes.push(self.count_key(&k.account_id, -1, None)?);
            }
            if self.transact(writes).await? {
                return Ok(KeyWrite::Done);
            }
            if !unchanged(k, self.api_key(&k.hash).await?.as_ref()) {
                return Ok(KeyWrite::Changed);
            }
        }
        Err(StoreError::Conflict(
            "the account's keys are changing concurrently: retry".into(),
        ))
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

/// The key's item and its id's item (`live_slot` while it holds a live-key place).
fn api_key_items(k: &ApiKeyRecord) -> Vec<Item> {
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
    if let Some(scopes) = &k.scopes {
        item.insert(
            "scopes".into(),
            AttributeValue::L(scopes.iter().map(|x| s(x.as_str())).collect()),
        );
    }
    if k.counted {
        item.insert("live_slot".into(), AttributeValue::Bool(true));
    }
    if let Some(by) = &k.created_by {
        item.insert("created_by".into(), s(by));
    }
    item.insert("gsi1pk".into(), s(api_keys_gsi(k)));
    item.insert(
        "gsi1sk".into(),
        s(format!("KEY#{}#{key_id}", sortable_millis(k.created_at_ms))),
    );
    let mut by_id = key(format!("KEYID#{key_id}"), "KEYID");
    by_id.insert("key_hash".into(), s(&k.hash));
    vec![item, by_id]
}

/// Whether the stored key is still as `read` was (not revoked, the same place and end).
fn unchanged(read: &ApiKeyRecord, now: Option<&ApiKeyRecord>) -> bool {
    now.is_some_and(|k| {
        !k.revoked && k.counted == read.counted && k.expires_at_ms == read.expires_at_ms
    })
}

/// Tries of a key transaction cancelled by a concurrent one on the same items (the
/// account's counter).
const TRIES: u32 = 6;

/// Before try `attempt` (from 0): nothing, then a short random wait that grows.
async fn backoff(attempt: u32) {
    if attempt == 0 {
        return;
    }
    let mut b = [0u8; 1];
    let jitter = getrandom::fill(&mut b).map_or(0, |()| u64::from(b[0] % 20));
    tokio::time::sleep(std::time::Duration::from_millis(
        u64::from(attempt) * 15 + jitter,
    ))
    .await;
}

/// The account's live-key counter item.
fn key_count_key(account_id: &str) -> Item {
    key(format!("ACCT#{account_id}"), "APIKEY_COUNT")
}

fn update_item(
    table: &str,
    item_key: Item,
    expression: &str,
    condition: Option<String>,
    names: &[(&str, &str)],
    values: Vec<(&str, AttributeValue)>,
) -> Result<TransactWriteItem, StoreError> {
    let mut u = Update::builder()
        .table_name(table)
        .set_key(Some(item_key))
        .update_expression(expression)
        .set_condition_expression(condition);
    for (ph, name) in names {
        u = u.expression_attribute_names(*ph, *name);
    }
    for (ph, v) in values {
        u = u.expression_attribute_values(ph, v);
    }
    let u = u.build().map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(TransactWriteItem::builder().update(u).build())
}

impl DynamoData {
    /// A transaction's change of the account's live-key count by `delta`; with `max`,
    /// only while the count is below it.
    fn count_key(
        &self,
        account_id: &str,
        delta: i64,
        max: Option<u32>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut values = vec![(":d", n(delta))];
        let condition = max.map(|m| {
            values.push((":max", n(i64::from(m))));
            "attribute_not_exists(#live) OR #live < :max".to_string()
        });
        update_item(
            &self.table,
            key_count_key(account_id),
            "ADD #live :d",
            condition,
            &[("#live", "live")],
            values,
        )
    }

    /// A transaction's end of `k`, on condition that it is still as it was read (not
    /// revoked, the same live-key place and end); it gives its place back.
    fn end_key(&self, k: &ApiKeyRecord, end: KeyEnd) -> Result<TransactWriteItem, StoreError> {
        let mut values = vec![(":f", AttributeValue::Bool(false))];
        let mut names = vec![
            ("#rv", "revoked"),
            ("#ex", "key_expires_at"),
            ("#ls", "live_slot"),
        ];
        let (set, at) = match end {
            KeyEnd::RevokedAt(t) => {
                values.push((":t", AttributeValue::Bool(true)));
                names.push(("#ra", "revoked_at"));
                ("#rv = :t, #ra = :at", t)
            }
            KeyEnd::ExpiresAt(t) => ("#ex = :at", t),
        };
        values.push((":at", n(at)));
        let mut condition = format!(
            "#rv = :f AND {}",
            if k.counted {
                "attribute_exists(#ls)"
            } else {
                "attribute_not_exists(#ls)"
            }
        );
        match k.expires_at_ms {
            Some(x) => {
                values.push((":x", n(x)));
                condition.push_str(" AND #ex = :x");
            }
            None => condition.push_str(" AND attribute_not_exists(#ex)"),
        }
        update_item(
            &self.table,
            key(format!("APIKEY#{}", k.hash), "APIKEY"),
            &format!("SET {set} REMOVE #ls"),
            Some(condition),
            &names,
            values,
        )
    }

    /// The account's live-key count.
    async fn live_keys(&self, account_id: &str) -> Result<i64, StoreError> {
        Ok(self
            .get(format!("ACCT#{account_id}"), "APIKEY_COUNT")
            .await?
            .and_then(|i| get_n(&i, "live"))
            .unwrap_or(0))
    }
}

fn audit_pk(account_id: Option<&str>) -> String {
    match account_id {
        Some(a) => format!("ACCT#{a}#AUDIT"),
        None => "OPERATOR#AUDIT".to_string(),
    }
}

/// A target's trail (gsi1): every record about one route, key or account, whichever
/// account's list holds it.
fn audit_target_pk(target: &str) -> String {
    format!("AUDIT#{target}")
}

pub(super) fn audit_item(r: &AuditRecord) -> Item {
    let mut item = key(audit_pk(r.account_id.as_deref()), &r.cursor());
    item.insert("gsi1pk".into(), s(audit_target_pk(&r.target)));
    item.insert("gsi1sk".into(), s(r.cursor()));
    item.insert("audit_id".into(), s(&r.id));
    item.insert("at".into(), n(r.at_ms));
    if let Some(a) = &r.account_id {
        item.insert("account_id".into(), s(a));
    }
    item.insert("actor_kind".into(), s(&r.actor_kind));
    if let Some(k) = &r.actor_key_id {
        item.insert("actor_key_id".into(), s(k));
    }
    item.insert("action".into(), s(&r.action));
    item.insert("target".into(), s(&r.target));
    item.insert("detail".into(), s(r.detail.to_string()));
    item
}

fn audit_from(item: &Item) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: req_s(item, "audit_id")?,
        at_ms: get_n(item, "at").unwrap_or_default(),
        account_id: get_s(item, "account_id"),
        actor_kind: req_s(item, "actor_kind")?,
        actor_key_id: get_s(item, "actor_key_id"),
        action: req_s(item, "action")?,
        target: get_s(item, "target").unwrap_or_default(),
        detail: get_s(item, "detail")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or(serde_json::Value::Null),
    })
}

#[async_trait]
impl AuditLog for DynamoData {
    async fn record_audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
        if self.put_new(audit_item(r)).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict("audit record exists".into()))
        }
    }

    async fn audit_records(
        &self,
        account_id: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<AuditRecord>, Option<String>), StoreError> {
        let pk = audit_pk(account_id);
        let items = self
            .pages(limit + 1, |q| {
                let q = q
                    .expression_attribute_names("#p", "pk")
                    .expression_attribute_values(":p", s(pk.clone()))
                    .scan_index_forward(false);
                match cursor {
                    Some(c) => q
                        .key_condition_expression("#p = :p AND #s < :c")
                        .expression_attribute_names("#s", "sk")
                        .expression_attribute_values(":c", s(c)),
                    None => q.key_condition_expression("#p = :p"),
                }
            })
            .await?;
        let mut v = items
            .iter()
            .map(audit_from)
            .collect::<Result<Vec<_>, _>>()?;
        let more = v.len() > limit;
        v.truncate(limit);
        let next = more.then(|| v.last().map(AuditRecord::cursor)).flatten();
        Ok((v, next))
    }

    async fn target_audit_records(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let pk = audit_target_pk(target);
        self.pages(limit, |q| {
            q.index_name("gsi1")
                .key_condition_expression("gsi1pk = :p")
                .expression_attribute_values(":p", s(pk.clone()))
                .scan_index_forward(false)
        })
        .await?
        .iter()
        .map(audit_from)
        .collect()
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
        // A scope this version does not know grants nothing.
        scopes: match item.get("scopes") {
            Some(AttributeValue::L(l)) => Some(crate::auth::normalize_scopes(
                &l.iter()
                    .filter_map(|v| v.as_s().ok().and_then(|x| Scope::parse(x)))
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        },
        counted: matches!(item.get("live_slot"), Some(AttributeValue::Bool(true))),
        created_by: get_s(item, "created_by"),
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
        for (list, ids) in [
            ("page_ids", &a.page_ids),
            ("instagram_account_ids", &a.instagram_account_ids),
        ] {
            if !ids.is_empty() {
                item.insert(list.into(), AttributeValue::L(ids.iter().map(s).collect()));
            }
        }
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
