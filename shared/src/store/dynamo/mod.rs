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
//! | quarantined   | `QUARANTINE#<route>`      | `<ms15>#<inbox id>`      |                                         |                                  |
//! | API key       | `APIKEY#<sha256 hex>`     | `APIKEY`                 | `ACCT#<a>#APIKEYS` (or `OPERATOR#APIKEYS`) / `KEY#<ms15>#<key id>` |        |
//! | key id        | `KEYID#<key id>`          | `KEYID`                  |                                         |                                  |
//! | live-key count | `ACCT#<a>`               | `APIKEY_COUNT`           |                                         |                                  |
//! | audit record  | `ACCT#<a>#AUDIT` (or `OPERATOR#AUDIT`) | `<ms15>#<audit id>` | `AUDIT#<target>` / `<ms15>#<audit id>` |                                  |
//! | unrouted item | `UNROUTED#<route>`        | `<ms15>#<inbox id>`      |                                         |                                  |
//! | backlog drain | `UNROUTED_DRAIN`          | `<route>`                |                                         |                                  |
//! | due account   | `DUE_ACCOUNTS`            | `<account id>`           | (TTL 8 days, refreshed by each due write) |                  |
//! | auto event    | `ACCT#<a>#AUTOEVENT`      | `<ms15>#<event id>`      |                                         |                                  |
//! | Meta connection | `ACCT#<a>`              | `META_CONNECTION`        |                                         | `META_CONNECTIONS` / `<expires s15>#<a>` (expiring tokens only) |
//! | CAPI config   | `ACCT#<a>`                | `CAPI`                   |                                         |                                  |
//! | conversion    | `EVT#<a>#<dedup key>`     | `EVT`                    | `ACCT#<a>#EVENTS` / `<ms15>#<event id>` | `DUE#<a>` / `<next ms15>#<a>#<event id>` (pending and in flight; `DUE_EVENTS` before); gsi3: `ACCT#<a>#AD#<ad>` / `EVT#<ms15>#<event id>` |
//! | ad account    | `ADACCT#act_<digits>`     | `ADACCT`                 | `ACCT#<a>#ADACCTS` / `act_<digits>`     |                                  |
//! | ad object     | `ADOBJ#<graph id>`        | `ADOBJ`                  |                                         |                                  |
//! | idempotency   | `IDEM#<a>#<key>`          | `IDEM`                   |                                         |                                  |
//!
//! Conversations and clicks are partitioned per conversation, so no account is a hot key.
//!
//! This module holds the attribute helpers, the two adapters' clients and their shared
//! get/put/query helpers; each port's impl, with its items' conversions, is in its own
//! file: [`inbox`] (also the inbox item's schema), `accounts` (with API keys and the
//! audit trail),
//! `conversations`, `unrouted` (items of unclaimed routes and their drains), `routes`
//! (route links, moves, removals, quarantined items),
//! `connections`, `capi` (settings and conversion records), `ads`.

mod accounts;
mod ads;
mod capi;
mod connections;
mod conversations;
pub mod inbox;
mod routes;
mod unrouted;

/// The event record's index keys and list cursor, shared with the in-memory store.
#[cfg(any(test, feature = "test-support"))]
pub(super) use capi::{due_sk, events_sk, list_cursor, parse_list_cursor};
pub use inbox::inbox_item_to_attrs;

use super::*;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
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

/// A conditional put: `condition` adds the condition expression (with its names and
/// values); `false` when the condition does not hold, so nothing was written.
async fn put_if(
    client: &Client,
    table: &str,
    item: Item,
    condition: impl FnOnce(PutItemFluentBuilder) -> PutItemFluentBuilder,
) -> Result<bool, StoreError> {
    let put = client.put_item().table_name(table).set_item(Some(item));
    match condition(put).send().await {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => Ok(false),
        Err(e) => Err(backend(e)),
    }
}

/// A put unless an item with the same key exists (`false`: a repeat).
async fn put_if_absent(client: &Client, table: &str, item: Item) -> Result<bool, StoreError> {
    put_if(client, table, item, |p| {
        p.condition_expression("attribute_not_exists(pk)")
    })
    .await
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

// ---------------------------------------------------------------- data table

#[derive(Clone)]
pub struct DynamoData {
    client: Client,
    table: String,
    /// Accounts this instance listed among those with due records, and when.
    due_registered: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

impl DynamoData {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            due_registered: Default::default(),
        }
    }
    pub fn table(&self) -> &str {
        &self.table
    }
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

/// A list-of-strings attribute; absent or of another type reads as empty.
fn get_strings(item: &Item, k: &str) -> Vec<String> {
    match item.get(k) {
        Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        _ => Vec::new(),
    }
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
    pub(super) fn new_item(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let p = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(p).build())
    }

    /// Writes every item in one transaction, none of which may exist yet: `false`
    /// (nothing written) when one does.
    async fn put_all_new(&self, items: Vec<Item>) -> Result<bool, StoreError> {
        let writes = items
            .into_iter()
            .map(|item| self.new_item(item))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.transact(writes).await
    }

    /// Runs `writes` as one transaction: `false` (nothing written) when DynamoDB
    /// cancelled it (a condition failed, or a concurrent transaction on an item).
    pub(super) async fn transact(
        &self,
        writes: Vec<TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_transaction_canceled_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// An update of one item with `e` (its names and values); the caller adds a
    /// condition or the values to return, and sends it.
    fn update(&self, pk: String, sk: &str, e: SetExpr) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .update_expression(e.expression())
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
    }

    /// An unconditional put: the item as given, replacing any with its key.
    async fn put(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// A conditional put: `false` when an item with the same key exists.
    async fn put_new(&self, item: Item) -> Result<bool, StoreError> {
        put_if_absent(&self.client, &self.table, item).await
    }

    /// `pk_attr = pk AND begins_with(sk_attr, sk_prefix)`, every page up to `limit` items.
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
        self.pages(limit, |query| {
            query
                .set_index_name(index.map(str::to_string))
                .key_condition_expression("#p = :p AND begins_with(#s, :s)")
                .expression_attribute_names("#p", pk_attr)
                .expression_attribute_names("#s", sk_attr)
                .expression_attribute_values(":p", s(pk.clone()))
                .expression_attribute_values(":s", s(sk_prefix))
                .scan_index_forward(!newest_first)
        })
        .await
    }

    /// Every page of the query `condition` describes (index, key condition, order), up
    /// to `limit` items.
    async fn pages(
        &self,
        limit: usize,
        condition: impl Fn(QueryFluentBuilder) -> QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = condition(self.client.query().table_name(&self.table))
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

/// The partition of one ad's clicks (gsi2) and conversions (gsi3).
fn ad_gsi(account_id: &str, ad_id: &str) -> String {
    format!("ACCT#{account_id}#AD#{ad_id}")
}

fn is_condition_failed<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>,
) -> bool {
    e.as_service_error()
        .is_some_and(|se| se.is_conditional_check_failed_exception())
}
