//! DynamoDB adapters of the storage ports.
//!
//! Inbox table: partition key `pk` (the channel-prefixed message id), stream NEW_IMAGE,
//! TTL on `expires_at`. Data table (single-table design), keys `pk`/`sk`:
//!
//! | item          | pk                        | sk                       | gsi1pk / gsi1sk                         | gsi2pk / gsi2sk                  |
//! |---------------|---------------------------|--------------------------|-----------------------------------------|----------------------------------|
//! | conversation  | `CONV#<id>`               | `CONV`                   | `ACCT#<a>#CUST#<key>` / `CONV#<id>`     |                                  |
//! | click         | `CONV#<id>`               | `CLICK#<ms15>#<msg id>`  | `ACCT#<a>#CUST#<key>` / `CLICK#<ms15>#<msg id>` | `ACCT#<a>#AD#<source id>` / same |
//! | account       | `ACCT#<id>`               | `ACCOUNT`                |                                         |                                  |
//! | route         | `ROUTE#<pnid:..|sinch:..>`| `ROUTE`                  |                                         |                                  |
//! | API key       | `APIKEY#<sha256 hex>`     | `APIKEY`                 | `ACCT#<a>#APIKEYS` (or `OPERATOR#APIKEYS`) / `KEY#<ms15>#<key id>` |        |
//! | key id        | `KEYID#<key id>`          | `KEYID`                  |                                         |                                  |
//! | unrouted item | `UNROUTED#<route>`        | `<ms15>#<inbox id>`      |                                         |                                  |
//! | auto event    | `ACCT#<a>#AUTOEVENT`      | `<ms15>#<event id>`      |                                         |                                  |
//! | Meta connection | `ACCT#<a>`              | `META_CONNECTION`        |                                         | `META_CONNECTIONS` / `<expires s15>#<a>` (expiring tokens only) |
//! | CAPI config   | `ACCT#<a>`                | `CAPI`                   |                                         |                                  |
//! | conversion    | `EVT#<a>#<dedup key>`     | `EVT`                    | `ACCT#<a>#EVENTS` / `<ms15>#<event id>` | `DUE_EVENTS` / `<next ms15>#<a>#<event id>` (pending only); gsi3: `ACCT#<a>#AD#<ad>` / `EVT#<ms15>#<event id>` |
//! | ad account    | `ADACCT#act_<digits>`     | `ADACCT`                 | `ACCT#<a>#ADACCTS` / `act_<digits>`     |                                  |
//! | ad object     | `ADOBJ#<graph id>`        | `ADOBJ`                  |                                         |                                  |
//! | idempotency   | `IDEM#<a>#<key>`          | `IDEM`                   |                                         |                                  |
//!
//! Conversations and clicks are partitioned per conversation, so no account is a hot key.

use super::*;
use crate::domain::Referral;
use crate::time::sortable_millis;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

fn backend<E: std::error::Error + Send + Sync + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> StoreError {
    StoreError::Backend(DisplayErrorContext(&e).to_string())
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub fn get_s(item: &Item, k: &str) -> Option<String> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}
pub fn get_n(item: &Item, k: &str) -> Option<i64> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}
fn req_s(item: &Item, k: &str) -> Result<String, StoreError> {
    get_s(item, k).ok_or_else(|| StoreError::Corrupt(format!("missing attribute {k}")))
}

/// A conditional put: `false` when an item with the same key exists (a repeat).
async fn put_if_absent(client: &Client, table: &str, item: Item) -> Result<bool, StoreError> {
    let res = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

// ---------------------------------------------------------------- inbox

#[derive(Clone)]
pub struct DynamoInbox {
    client: Client,
    table: String,
}

impl DynamoInbox {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

pub fn inbox_item_to_attrs(item: &InboxItem) -> Item {
    let mut m = Item::new();
    m.insert("pk".into(), s(&item.id));
    m.insert("kind".into(), s(item.kind.as_str()));
    m.insert("channel".into(), s(item.channel.as_str()));
    m.insert("route".into(), s(item.route.key()));
    if let Some(w) = &item.waba_id {
        m.insert("waba_id".into(), s(w));
    }
    m.insert("payload".into(), s(&item.payload));
    if let Some(c) = &item.contact {
        m.insert("contact".into(), s(c));
    }
    m.insert("received_at".into(), n(item.received_at_ms));
    m.insert("expires_at".into(), n(item.expires_at));
    m
}

#[async_trait]
impl Inbox for DynamoInbox {
    async fn put_once(&self, item: &InboxItem) -> Result<bool, StoreError> {
        put_if_absent(&self.client, &self.table, inbox_item_to_attrs(item)).await
    }
}

// ---------------------------------------------------------------- data table

#[derive(Clone)]
pub struct DynamoData {
    client: Client,
    table: String,
}

impl DynamoData {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
    pub fn table(&self) -> &str {
        &self.table
    }
}

fn conv_pk(id: &str) -> String {
    format!("CONV#{id}")
}
fn customer_gsi(account_id: &str, customer_key: &str) -> String {
    format!("ACCT#{account_id}#CUST#{customer_key}")
}
fn click_sk(ms: i64, msg: &str) -> String {
    format!("CLICK#{}#{msg}", sortable_millis(ms))
}

/// Builds `SET #a0 = :v0, ...` with every name behind a placeholder, so no attribute
/// name can collide with DynamoDB's reserved words.
#[derive(Default)]
struct SetExpr {
    parts: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl SetExpr {
    fn name(&mut self, attr: &str) -> String {
        let ph = format!("#a{}", self.names.len());
        self.names.insert(ph.clone(), attr.to_string());
        ph
    }
    fn value(&mut self, v: AttributeValue) -> String {
        let ph = format!(":v{}", self.values.len());
        self.values.insert(ph.clone(), v);
        ph
    }
    fn set(&mut self, attr: &str, v: AttributeValue) {
        let (nm, vp) = (self.name(attr), self.value(v));
        self.parts.push(format!("{nm} = {vp}"));
    }
    fn set_if_not_exists(&mut self, attr: &str, v: AttributeValue) {
        let (nm, vp) = (self.name(attr), self.value(v));
        self.parts.push(format!("{nm} = if_not_exists({nm}, {vp})"));
    }
    fn expression(&self) -> String {
        format!("SET {}", self.parts.join(", "))
    }
}

fn referral_json(r: &Referral) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| "{}".into())
}
fn referral_from(item: &Item, k: &str) -> Result<Referral, StoreError> {
    let raw = req_s(item, k)?;
    serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("{k}: {e}")))
}

fn conversation_from(item: &Item) -> Result<Conversation, StoreError> {
    let channel = req_s(item, "channel")?;
    let first_touch = match get_s(item, "ctwa_clid") {
        Some(clid) => Some(FirstTouch {
            ctwa_clid: clid,
            captured_at_ms: get_n(item, "ctwa_captured_at").unwrap_or_default(),
            clicked_at_ms: get_n(item, "ctwa_clicked_at").unwrap_or_default(),
            message_id: get_s(item, "ctwa_message_id").unwrap_or_default(),
            referral: referral_from(item, "ctwa_referral")?,
        }),
        None => None,
    };
    Ok(Conversation {
        id: req_s(item, "conversation_id")?,
        account_id: req_s(item, "account_id")?,
        channel: Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("channel {channel}")))?,
        business_id: req_s(item, "business_id")?,
        customer_key: req_s(item, "customer_key")?,
        customer: Customer {
            wa_id: get_s(item, "wa_id"),
            user_id: get_s(item, "user_id"),
            name: get_s(item, "customer_name"),
        },
        created_at_ms: get_n(item, "created_at").unwrap_or_default(),
        updated_at_ms: get_n(item, "updated_at").unwrap_or_default(),
        first_touch,
    })
}

fn click_from(item: &Item) -> Result<Click, StoreError> {
    let channel = req_s(item, "channel")?;
    Ok(Click {
        conversation_id: req_s(item, "conversation_id")?,
        message_id: req_s(item, "message_id")?,
        channel: Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("channel {channel}")))?,
        clicked_at_ms: get_n(item, "clicked_at").unwrap_or_default(),
        referral: referral_from(item, "referral")?,
    })
}

/// A list-of-strings attribute; absent or of another type reads as empty.
fn get_strings(item: &Item, k: &str) -> Vec<String> {
    match item.get(k) {
        Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        _ => Vec::new(),
    }
}

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

/// `pk_attr = pk AND begins_with(sk_attr, sk_prefix)` on the table or an index.
struct KeyQuery<'a> {
    index: Option<&'a str>,
    pk_attr: &'a str,
    pk: String,
    sk_attr: &'a str,
    sk_prefix: &'a str,
}

impl<'a> KeyQuery<'a> {
    fn table(pk: String, sk_prefix: &'a str) -> Self {
        Self {
            index: None,
            pk_attr: "pk",
            pk,
            sk_attr: "sk",
            sk_prefix,
        }
    }
    fn gsi1(pk: String, sk_prefix: &'a str) -> Self {
        Self {
            index: Some("gsi1"),
            pk_attr: "gsi1pk",
            pk,
            sk_attr: "gsi1sk",
            sk_prefix,
        }
    }
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

impl DynamoData {
    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            // Dedup losers, leases and connection checks read right after a write.
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item)
    }

    /// A transaction's put of a new item (`attribute_not_exists(pk)`).
    fn put_new_in_transaction(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(p).build())
    }

    /// A conditional put: `false` when an item with the same key exists.
    async fn put_new(&self, item: Item) -> Result<bool, StoreError> {
        put_if_absent(&self.client, &self.table, item).await
    }

    /// Every page of a query, up to `limit` items.
    async fn query(
        &self,
        q: KeyQuery<'_>,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let KeyQuery {
            index,
            pk_attr,
            pk,
            sk_attr,
            sk_prefix,
        } = q;
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression("#p = :p AND begins_with(#s, :s)")
                .expression_attribute_names("#p", pk_attr)
                .expression_attribute_names("#s", sk_attr)
                .expression_attribute_values(":p", s(pk.clone()))
                .expression_attribute_values(":s", s(sk_prefix))
                .scan_index_forward(!newest_first)
                .limit(i32::try_from(limit.min(1000)).unwrap_or(1000))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if out.len() < limit && !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }
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
        let put = |item: Item| self.put_new_in_transaction(item);
        let res = self
            .client
            .transact_write_items()
            .transact_items(put(item)?)
            .transact_items(put(by_id)?)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                Err(StoreError::Conflict("api key exists".into()))
            }
            Err(e) => Err(backend(e)),
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
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("APIKEY#{hash}"), "APIKEY")))
            .update_expression(e.expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
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

#[async_trait]
impl Conversations for DynamoData {
    async fn record_click(&self, rec: &ClickRecord) -> Result<bool, StoreError> {
        let c = &rec.click;
        let sk = click_sk(c.clicked_at_ms, &c.message_id);
        let mut item = key(conv_pk(&c.conversation_id), &sk);
        item.insert("account_id".into(), s(&rec.account_id));
        item.insert("customer_key".into(), s(&rec.customer_key));
        item.insert("conversation_id".into(), s(&c.conversation_id));
        item.insert("message_id".into(), s(&c.message_id));
        item.insert("channel".into(), s(c.channel.as_str()));
        item.insert("clicked_at".into(), n(c.clicked_at_ms));
        item.insert("referral".into(), s(referral_json(&c.referral)));
        if let Some(clid) = &c.referral.ctwa_clid {
            item.insert("ctwa_clid".into(), s(clid));
        }
        item.insert(
            "gsi1pk".into(),
            s(customer_gsi(&rec.account_id, &rec.customer_key)),
        );
        item.insert("gsi1sk".into(), s(sk.clone()));
        if let Some(ad) = &c.referral.source_id {
            item.insert("source_id".into(), s(ad));
            item.insert("gsi2pk".into(), s(ad_gsi(&rec.account_id, ad)));
            item.insert("gsi2sk".into(), s(sk));
        }
        self.put_new(item).await
    }

    async fn upsert_conversation(
        &self,
        c: &ConversationUpsert,
        first_touch: Option<&FirstTouch>,
    ) -> Result<FirstTouchOutcome, StoreError> {
        let base = |e: &mut SetExpr| {
            e.set("conversation_id", s(&c.id));
            e.set("account_id", s(&c.account_id));
            e.set("channel", s(c.channel.as_str()));
            e.set("business_id", s(&c.business_id));
            e.set("customer_key", s(&c.customer_key));
            e.set("gsi1pk", s(customer_gsi(&c.account_id, &c.customer_key)));
            e.set("gsi1sk", s(conv_pk(&c.id)));
            e.set("updated_at", n(c.now_ms));
            e.set_if_not_exists("created_at", n(c.now_ms));
            if let Some(w) = &c.customer.wa_id {
                e.set("wa_id", s(w));
            }
            if let Some(u) = &c.customer.user_id {
                e.set("user_id", s(u));
            }
            if let Some(nm) = &c.customer.name {
                e.set("customer_name", s(nm));
            }
        };
        let update = |e: SetExpr, condition: Option<String>| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(conv_pk(&c.id), "CONV")))
                .update_expression(e.expression())
                .set_condition_expression(condition)
                .set_expression_attribute_names(Some(e.names))
                .set_expression_attribute_values(Some(e.values))
                .send()
        };
        if let Some(ft) = first_touch {
            let mut e = SetExpr::default();
            base(&mut e);
            e.set("ctwa_clid", s(&ft.ctwa_clid));
            e.set("ctwa_captured_at", n(ft.captured_at_ms));
            e.set("ctwa_message_id", s(&ft.message_id));
            e.set("ctwa_referral", s(referral_json(&ft.referral)));
            let clid = e.name("ctwa_clid");
            let at = e.name("ctwa_clicked_at");
            let mid = e.name("ctwa_message_id");
            let at_v = e.value(n(ft.clicked_at_ms));
            e.parts.push(format!("{at} = {at_v}"));
            let mid_v = e.value(s(&ft.message_id));
            let cond = format!(
                "attribute_not_exists({clid}) OR {at} > {at_v} OR ({at} = {at_v} AND {mid} > {mid_v})"
            );
            match update(e, Some(cond)).await {
                Ok(_) => return Ok(FirstTouchOutcome::Captured),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|se| se.is_conditional_check_failed_exception()) => {}
                Err(err) => return Err(backend(err)),
            }
        }
        let mut e = SetExpr::default();
        base(&mut e);
        update(e, None).await.map_err(backend)?;
        Ok(if first_touch.is_some() {
            FirstTouchOutcome::Kept
        } else {
            FirstTouchOutcome::NoClick
        })
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        self.get(conv_pk(id), "CONV")
            .await?
            .map(|i| conversation_from(&i))
            .transpose()
    }

    async fn conversations_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.query(
            KeyQuery::gsi1(customer_gsi(account_id, customer_key), "CONV#"),
            false,
            1000,
        )
        .await?
        .iter()
        .map(conversation_from)
        .collect()
    }

    async fn clicks_for_conversation(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<Click>, StoreError> {
        self.query(KeyQuery::table(conv_pk(id), "CLICK#"), true, limit)
            .await?
            .iter()
            .map(click_from)
            .collect()
    }

    async fn clicks_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
        limit: usize,
    ) -> Result<Vec<Click>, StoreError> {
        self.query(
            KeyQuery::gsi1(customer_gsi(account_id, customer_key), "CLICK#"),
            true,
            limit,
        )
        .await?
        .iter()
        .map(click_from)
        .collect()
    }

    async fn record_unrouted(&self, it: &InboxItem) -> Result<(), StoreError> {
        let mut item = key(
            format!("UNROUTED#{}", it.route.key()),
            &format!("{}#{}", sortable_millis(it.received_at_ms), it.id),
        );
        item.insert("inbox_id".into(), s(&it.id));
        item.insert("kind".into(), s(it.kind.as_str()));
        item.insert("channel".into(), s(it.channel.as_str()));
        item.insert("payload".into(), s(&it.payload));
        if let Some(c) = &it.contact {
            item.insert("contact".into(), s(c));
        }
        item.insert("received_at".into(), n(it.received_at_ms));
        self.put_new(item).await.map(|_| ())
    }

    async fn record_automatic_event(
        &self,
        account_id: &str,
        ev: &AutomaticEvent,
    ) -> Result<bool, StoreError> {
        let mut item = key(
            format!("ACCT#{account_id}#AUTOEVENT"),
            &format!("{}#{}", sortable_millis(ev.occurred_at_ms), ev.id),
        );
        item.insert("account_id".into(), s(account_id));
        item.insert("event_id".into(), s(&ev.id));
        item.insert("event_name".into(), s(&ev.event_name));
        item.insert("occurred_at".into(), n(ev.occurred_at_ms));
        if let Some(c) = &ev.ctwa_clid {
            item.insert("ctwa_clid".into(), s(c));
        }
        if let Some(d) = &ev.custom_data {
            item.insert("custom_data".into(), s(d.to_string()));
        }
        self.put_new(item).await
    }
}

fn connection_from(item: &Item) -> Result<MetaConnection, StoreError> {
    let status = req_s(item, "status")?;
    let scopes = get_strings(item, "scopes");
    Ok(MetaConnection {
        account_id: req_s(item, "account_id")?,
        status: ConnectionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        token_type: get_s(item, "token_type"),
        scopes,
        waba_id: get_s(item, "waba_id"),
        expires_at: get_n(item, "expires_at_s"),
        connected_at_ms: get_n(item, "connected_at").unwrap_or_default(),
        refreshed_at_ms: get_n(item, "refreshed_at"),
        last_error: get_s(item, "last_error"),
        secret_id: req_s(item, "secret_id")?,
        token_version: get_n(item, "token_version").unwrap_or_default(),
    })
}

const CONNECTIONS_INDEX_PK: &str = "META_CONNECTIONS";

fn connection_item(c: &MetaConnection) -> Item {
    let mut item = key(format!("ACCT#{}", c.account_id), "META_CONNECTION");
    item.insert("account_id".into(), s(&c.account_id));
    item.insert("status".into(), s(c.status.as_str()));
    if let Some(t) = &c.token_type {
        item.insert("token_type".into(), s(t));
    }
    item.insert(
        "scopes".into(),
        AttributeValue::L(c.scopes.iter().map(s).collect()),
    );
    if let Some(w) = &c.waba_id {
        item.insert("waba_id".into(), s(w));
    }
    if let Some(e) = c.expires_at {
        // Not `expires_at`: that name is the table's TTL attribute.
        item.insert("expires_at_s".into(), n(e));
        item.insert("gsi2pk".into(), s(CONNECTIONS_INDEX_PK));
        item.insert(
            "gsi2sk".into(),
            s(format!("{:015}#{}", e.max(0), c.account_id)),
        );
    }
    item.insert("connected_at".into(), n(c.connected_at_ms));
    if let Some(r) = c.refreshed_at_ms {
        item.insert("refreshed_at".into(), n(r));
    }
    if let Some(e) = &c.last_error {
        item.insert("last_error".into(), s(e));
    }
    item.insert("secret_id".into(), s(&c.secret_id));
    item.insert("token_version".into(), n(c.token_version));
    item
}

#[async_trait]
impl Connections for DynamoData {
    async fn put_connection(&self, c: &MetaConnection) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(connection_item(c)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn update_connection(
        &self,
        c: &MetaConnection,
        expected: i64,
    ) -> Result<bool, StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(connection_item(c)))
            .condition_expression("token_version = :v")
            .expression_attribute_values(":v", n(expected))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_connection(&self, account_id: &str) -> Result<Option<MetaConnection>, StoreError> {
        self.get(format!("ACCT#{account_id}"), "META_CONNECTION")
            .await?
            .map(|i| connection_from(&i))
            .transpose()
    }

    async fn connections_expiring_before(
        &self,
        before: i64,
    ) -> Result<Vec<MetaConnection>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi2")
                .key_condition_expression("gsi2pk = :p AND gsi2sk < :t")
                .expression_attribute_values(":p", s(CONNECTIONS_INDEX_PK))
                .expression_attribute_values(":t", s(format!("{:015}", before.max(0))))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(backend)?;
            for item in page.items.unwrap_or_default() {
                out.push(connection_from(&item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- CAPI config and events

const DUE_INDEX_PK: &str = "DUE_EVENTS";

fn event_pk(account_id: &str, event_id: &str) -> String {
    format!("EVT#{account_id}#{event_id}")
}

fn event_item(r: &EventRecord) -> Result<Item, StoreError> {
    let mut item = key(event_pk(&r.account_id, &r.dedup_key()), "EVT");
    // The whole record as JSON, plus the attributes keys, indexes and conditions need.
    let json = serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    item.insert("record".into(), s(json));
    item.insert("account_id".into(), s(&r.account_id));
    item.insert("event_id".into(), s(&r.event_id));
    item.insert("dedup_key".into(), s(r.dedup_key()));
    item.insert("status".into(), s(r.status.as_str()));
    item.insert("lease_id".into(), s(&r.lease_id));
    item.insert("gsi1pk".into(), s(format!("ACCT#{}#EVENTS", r.account_id)));
    item.insert(
        "gsi1sk".into(),
        s(format!(
            "{}#{}",
            sortable_millis(r.created_at_ms),
            r.event_id
        )),
    );
    if let (false, Some(next)) = (r.status.is_final(), r.next_attempt_at_ms) {
        item.insert("next_attempt_at".into(), n(next));
        item.insert("gsi2pk".into(), s(DUE_INDEX_PK));
        item.insert(
            "gsi2sk".into(),
            s(format!(
                "{}#{}#{}",
                sortable_millis(next),
                r.account_id,
                r.event_id
            )),
        );
    }
    if let Some(e) = r.expires_at {
        item.insert("expires_at".into(), n(e));
    }
    // Conversions by ad (test sends are not the ad's conversions).
    if let (Some(ad), None) = (&r.ad_id, &r.test_event_code) {
        item.insert("gsi3pk".into(), s(ad_gsi(&r.account_id, ad)));
        item.insert(
            "gsi3sk".into(),
            s(format!(
                "EVT#{}#{}",
                sortable_millis(r.created_at_ms),
                r.event_id
            )),
        );
    }
    Ok(item)
}

/// The partition of one ad's clicks (gsi2) and conversions (gsi3).
fn ad_gsi(account_id: &str, ad_id: &str) -> String {
    format!("ACCT#{account_id}#AD#{ad_id}")
}

fn event_from(item: &Item) -> Result<EventRecord, StoreError> {
    let json = req_s(item, "record")?;
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("event record: {e}")))
}

fn is_condition_failed<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>,
) -> bool {
    e.as_service_error()
        .is_some_and(|se| se.is_conditional_check_failed_exception())
}

#[async_trait]
impl CapiStore for DynamoData {
    async fn get_capi(&self, account_id: &str) -> Result<Option<CapiConfig>, StoreError> {
        let Some(item) = self.get(format!("ACCT#{account_id}"), "CAPI").await? else {
            return Ok(None);
        };
        let mut config: CapiConfig = match get_s(&item, "config") {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("capi config: {e}")))?,
            None => CapiConfig::default(),
        };
        // The dataset id is its own attribute, so provisioning never races a config save.
        config.dataset_id = get_s(&item, "dataset_id").or(config.dataset_id);
        Ok(Some(config))
    }

    async fn put_capi(&self, account_id: &str, config: &CapiConfig) -> Result<(), StoreError> {
        let json = serde_json::to_string(&CapiConfig {
            dataset_id: None,
            ..config.clone()
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut e = SetExpr::default();
        e.set("config", s(json));
        if let Some(d) = &config.dataset_id {
            e.set("dataset_id", s(d));
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("ACCT#{account_id}"), "CAPI")))
            .update_expression(e.expression())
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn set_dataset_if_absent(
        &self,
        account_id: &str,
        dataset_id: &str,
    ) -> Result<String, StoreError> {
        let mut e = SetExpr::default();
        e.set_if_not_exists("dataset_id", s(dataset_id));
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("ACCT#{account_id}"), "CAPI")))
            .update_expression(e.expression())
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(backend)?;
        Ok(out
            .attributes
            .as_ref()
            .and_then(|a| get_s(a, "dataset_id"))
            .unwrap_or_else(|| dataset_id.to_string()))
    }

    async fn claim_event(&self, rec: &EventRecord) -> Result<bool, StoreError> {
        self.put_new(event_item(rec)?).await
    }

    async fn get_event(
        &self,
        account_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.get(event_pk(account_id, event_id), "EVT")
            .await?
            .map(|i| event_from(&i))
            .transpose()
    }

    async fn save_event(&self, rec: &EventRecord, lease_id: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(rec)?))
            .condition_expression("lease_id = :l")
            .expression_attribute_values(":l", s(lease_id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn lease_event(
        &self,
        rec: &EventRecord,
        new_lease_id: &str,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut taken = rec.clone();
        taken.lease_id = new_lease_id.to_string();
        taken.status = EventStatus::InFlight;
        taken.next_attempt_at_ms = Some(lease_until_ms);
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item(&taken)?))
            .condition_expression("lease_id = :l AND #st IN (:p, :f)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":l", s(&rec.lease_id))
            .expression_attribute_values(":p", s(EventStatus::Pending.as_str()))
            .expression_attribute_values(":f", s(EventStatus::InFlight.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn due_events(&self, now_ms: i64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi2")
            .key_condition_expression("gsi2pk = :p AND gsi2sk < :t")
            .expression_attribute_values(":p", s(DUE_INDEX_PK))
            .expression_attribute_values(":t", s(sortable_millis(now_ms)))
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(backend)?;
        let mut due = Vec::new();
        for item in out.items.unwrap_or_default() {
            match event_from(&item) {
                Ok(r) => due.push(r),
                Err(e) => tracing::error!(error = %e, "unreadable event record skipped"),
            }
        }
        Ok(due)
    }

    async fn list_events(
        &self,
        account_id: &str,
        limit: usize,
        cursor: Option<&str>,
        status: Option<EventStatus>,
    ) -> Result<(Vec<EventRecord>, Option<String>), StoreError> {
        let limit = limit.clamp(1, 200);
        let gsi1pk = format!("ACCT#{account_id}#EVENTS");
        let pk_prefix = format!("EVT#{account_id}#");
        // The cursor is `<gsi1sk>|<dedup key>`; the keys are rebuilt from the caller's own
        // account, so a crafted cursor can only move within it.
        let mut start: Option<Item> = match cursor.and_then(|c| c.split_once('|')) {
            Some((gsi1sk, dedup)) if !gsi1sk.is_empty() && !dedup.is_empty() => {
                let mut k = key(event_pk(account_id, dedup), "EVT");
                k.insert("gsi1pk".into(), s(&gsi1pk));
                k.insert("gsi1sk".into(), s(gsi1sk));
                Some(k)
            }
            Some(_) => return Err(StoreError::Corrupt("invalid cursor".into())),
            None => None,
        };
        let mut items = Vec::new();
        let mut resume: Option<String> = None;
        // A status filter is applied after the read: read fixed pages, at most ten.
        for page_no in 0..10 {
            let page_size = if status.is_some() {
                200
            } else {
                i32::try_from(limit).unwrap_or(200)
            };
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("gsi1")
                .key_condition_expression("gsi1pk = :p")
                .expression_attribute_values(":p", s(&gsi1pk))
                .scan_index_forward(false)
                .limit(page_size)
                .set_exclusive_start_key(start.take());
            if let Some(st) = status {
                q = q
                    .filter_expression("#st = :st")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":st", s(st.as_str()));
            }
            let page = q.send().await.map_err(backend)?;
            let mut full = false;
            for item in page.items.unwrap_or_default() {
                items.push(item);
                if items.len() == limit {
                    full = true;
                    break;
                }
            }
            if full {
                break;
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => {
                    if page_no == 9 {
                        // Stop here; the next page starts where the reading stopped.
                        resume = get_s(&k, "gsi1sk")
                            .zip(get_s(&k, "pk"))
                            .and_then(|(sk, pk)| {
                                pk.strip_prefix(&pk_prefix).map(|d| format!("{sk}|{d}"))
                            });
                    }
                    start = Some(k);
                }
                _ => break,
            }
        }
        let mut records = Vec::with_capacity(items.len());
        for i in &items {
            match event_from(i) {
                Ok(r) => records.push(r),
                Err(e) => tracing::error!(error = %e, "unreadable event record skipped"),
            }
        }
        // A next page exists when this one is full; the cursor is the last row's key.
        let next = if items.len() == limit {
            items.last().and_then(|i| {
                let dedup = get_s(i, "dedup_key").or_else(|| get_s(i, "event_id"))?;
                Some(format!("{}|{dedup}", get_s(i, "gsi1sk")?))
            })
        } else {
            resume
        };
        Ok((records, next))
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
        crate::auth::key_id_for_hash(&k.hash)
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
        key_id: get_s(item, "key_id").unwrap_or_else(|| crate::auth::key_id_for_hash(hash)),
        name: get_s(item, "key_name"),
        operator: matches!(item.get("operator"), Some(AttributeValue::Bool(true))),
        expires_at_ms: get_n(item, "key_expires_at"),
        revoked_at_ms: get_n(item, "revoked_at"),
    })
}

// ---------------------------------------------------------------- ads

fn ad_account_pk(ad_account_id: &str) -> String {
    format!("ADACCT#{ad_account_id}")
}
fn ad_accounts_gsi(account_id: &str) -> String {
    format!("ACCT#{account_id}#ADACCTS")
}
fn request_pk(account_id: &str, key: &str) -> String {
    format!("IDEM#{account_id}#{key}")
}

/// Idempotency records are kept a day: long enough for any client retry.
const REQUEST_TTL_SECS: i64 = 86_400;

fn link_item(link: &AdAccountLink) -> Item {
    let mut item = key(ad_account_pk(&link.ad_account_id), "ADACCT");
    item.insert("ad_account_id".into(), s(&link.ad_account_id));
    item.insert("account_id".into(), s(&link.account_id));
    if let Some(p) = &link.page_id {
        item.insert("page_id".into(), s(p));
    }
    item.insert("linked_at".into(), n(link.linked_at_ms));
    item.insert("gsi1pk".into(), s(ad_accounts_gsi(&link.account_id)));
    item.insert("gsi1sk".into(), s(&link.ad_account_id));
    item
}

fn link_from(item: &Item) -> Result<AdAccountLink, StoreError> {
    Ok(AdAccountLink {
        ad_account_id: req_s(item, "ad_account_id")?,
        account_id: req_s(item, "account_id")?,
        page_id: get_s(item, "page_id"),
        linked_at_ms: get_n(item, "linked_at").unwrap_or_default(),
    })
}

impl DynamoData {
    /// The account, its routes and `links` (ad accounts) in one transaction.
    async fn create_account_items(
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
        let put = |item: Item| self.put_new_in_transaction(item);
        let mut writes = vec![put(item)?];
        for r in a.routes() {
            let mut ri = key(format!("ROUTE#{}", r.key()), "ROUTE");
            ri.insert("account_id".into(), s(&a.id));
            writes.push(put(ri)?);
        }
        for l in links {
            writes.push(put(link_item(l))?);
        }
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                Err(StoreError::Conflict(format!(
                    "account {} or one of its phone number ids, Sinch app or ad accounts is already registered",
                    a.id
                )))
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// `Select COUNT` over every page of `index`'s partition, optionally filtered on the
    /// status attribute.
    async fn count(
        &self,
        index: &str,
        pk: String,
        sk_prefix: &str,
        status: Option<&str>,
    ) -> Result<u64, StoreError> {
        let (pk_attr, sk_attr) = (format!("{index}pk"), format!("{index}sk"));
        let mut total = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .key_condition_expression("#p = :p AND begins_with(#s, :s)")
                .expression_attribute_names("#p", &pk_attr)
                .expression_attribute_names("#s", &sk_attr)
                .expression_attribute_values(":p", s(pk.clone()))
                .expression_attribute_values(":s", s(sk_prefix))
                .set_exclusive_start_key(start.take());
            if let Some(st) = status {
                q = q
                    .filter_expression("#st = :st")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":st", s(st));
            }
            let page = q.send().await.map_err(backend)?;
            total += u64::try_from(page.count).unwrap_or_default();
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(total),
            }
        }
    }
}

#[async_trait]
impl AdsStore for DynamoData {
    async fn create_account_with_ad_accounts(
        &self,
        account: &Account,
        links: &[AdAccountLink],
    ) -> Result<(), StoreError> {
        self.create_account_items(account, links).await
    }

    async fn link_ad_account(&self, link: &AdAccountLink) -> Result<(), StoreError> {
        let item = link_item(link);
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR account_id = :a")
            .expression_attribute_values(":a", s(&link.account_id))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::Conflict(format!(
                "ad account {} is linked to another account",
                link.ad_account_id
            ))),
            Err(e) => Err(backend(e)),
        }
    }

    async fn ad_account(&self, ad_account_id: &str) -> Result<Option<AdAccountLink>, StoreError> {
        self.get(ad_account_pk(ad_account_id), "ADACCT")
            .await?
            .map(|i| link_from(&i))
            .transpose()
    }

    async fn ad_accounts(&self, account_id: &str) -> Result<Vec<AdAccountLink>, StoreError> {
        let items = self
            .query(
                KeyQuery::gsi1(ad_accounts_gsi(account_id), "act_"),
                false,
                1000,
            )
            .await?;
        items.iter().map(link_from).collect()
    }

    async fn put_ad_object(&self, o: &AdObject) -> Result<(), StoreError> {
        let mut item = key(format!("ADOBJ#{}", o.id), "ADOBJ");
        item.insert("object_id".into(), s(&o.id));
        item.insert("kind".into(), s(&o.kind));
        item.insert("account_id".into(), s(&o.account_id));
        item.insert("ad_account_id".into(), s(&o.ad_account_id));
        item.insert("created_at".into(), n(o.created_at_ms));
        self.put_new(item).await.map(|_| ())
    }

    async fn ad_object(&self, id: &str) -> Result<Option<AdObject>, StoreError> {
        let Some(i) = self.get(format!("ADOBJ#{id}"), "ADOBJ").await? else {
            return Ok(None);
        };
        Ok(Some(AdObject {
            id: req_s(&i, "object_id")?,
            kind: req_s(&i, "kind")?,
            account_id: req_s(&i, "account_id")?,
            ad_account_id: req_s(&i, "ad_account_id")?,
            created_at_ms: get_n(&i, "created_at").unwrap_or_default(),
        }))
    }

    async fn ad_stats(&self, account_id: &str, ad_id: &str) -> Result<AdStats, StoreError> {
        let pk = ad_gsi(account_id, ad_id);
        let (clicks, conversions, delivered) = tokio::try_join!(
            self.count("gsi2", pk.clone(), "CLICK#", None),
            self.count("gsi3", pk.clone(), "EVT#", None),
            self.count(
                "gsi3",
                pk.clone(),
                "EVT#",
                Some(EventStatus::Delivered.as_str())
            ),
        )?;
        Ok(AdStats {
            clicks,
            conversions,
            conversions_delivered: delivered,
        })
    }

    async fn claim_request(
        &self,
        account_id: &str,
        key_: &str,
        request_hash: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<RequestClaim, StoreError> {
        let mut item = key(request_pk(account_id, key_), "IDEM");
        item.insert("request_hash".into(), s(request_hash));
        item.insert("state".into(), s("running"));
        item.insert("claimed_at".into(), n(now_ms));
        item.insert("expires_at".into(), n(now_ms / 1000 + REQUEST_TTL_SECS));
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :running AND claimed_at < :stale AND request_hash = :h)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":stale", n(now_ms - lease_ms))
            .expression_attribute_values(":h", s(request_hash))
            .send()
            .await;
        match res {
            Ok(_) => return Ok(RequestClaim::New),
            Err(e) if is_condition_failed(&e) => {}
            Err(e) => return Err(backend(e)),
        }
        let Some(i) = self.get(request_pk(account_id, key_), "IDEM").await? else {
            // Expired between the two calls: the caller may try again.
            return Ok(RequestClaim::InProgress);
        };
        if get_s(&i, "request_hash").as_deref() != Some(request_hash) {
            return Ok(RequestClaim::Mismatch);
        }
        if get_s(&i, "state").as_deref() == Some("done") {
            let body = get_s(&i, "answer")
                .and_then(|b| serde_json::from_str(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            let status = get_n(&i, "answer_status")
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(200);
            return Ok(RequestClaim::Done { status, body });
        }
        Ok(RequestClaim::InProgress)
    }

    async fn finish_request(
        &self,
        account_id: &str,
        key_: &str,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(request_pk(account_id, key_), "IDEM")))
            .update_expression("SET #state = :done, answer = :b, answer_status = :s")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":b", s(body.to_string()))
            .expression_attribute_values(":s", n(i64::from(status)))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn release_request(&self, account_id: &str, key_: &str) -> Result<(), StoreError> {
        // A claim from the epoch is stale for every lease: the next claim takes it.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(request_pk(account_id, key_), "IDEM")))
            .update_expression("SET claimed_at = :zero")
            .condition_expression("#state = :running")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":running", s("running"))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception())
                {
                    Ok(())
                } else {
                    Err(backend(e))
                }
            })
    }
}
