//! Unrouted items (messages for a route no account had claimed yet) and the drains owed
//! once one does: the `record_unrouted` of the Conversations port and the
//! UnroutedBacklog port.
//!
//! An unrouted item is `UNROUTED#<route>` / `<received ms15>#<inbox id>` (received
//! order), with the inbox item's attributes and its TTL (`expires_at`, the inbox's).
//! A drain is `UNROUTED_DRAIN` / `<route>`, written in the transaction that claims the
//! route, deleted when the route's backlog is empty.

use super::*;
use crate::time::sortable_millis;
use aws_sdk_dynamodb::types::ConditionCheck;

const DRAINS_PK: &str = "UNROUTED_DRAIN";

fn unrouted_pk(route: &Route) -> String {
    format!("UNROUTED#{}", route.key())
}

fn unrouted_sk(it: &InboxItem) -> String {
    format!("{}#{}", sortable_millis(it.received_at_ms), it.id)
}

fn route_pk(route: &Route) -> String {
    format!("ROUTE#{}", route.key())
}

/// The drain owed to `account_id` for `route` (part of the route's claim).
pub(super) fn drain_item(route: &Route, account_id: &str, linked_at_ms: i64) -> Item {
    let mut item = key(DRAINS_PK.to_string(), &route.key());
    item.insert("account_id".into(), s(account_id));
    item.insert("linked_at".into(), n(linked_at_ms));
    item
}

pub(super) fn unrouted_item(it: &InboxItem) -> Item {
    let mut item = key(unrouted_pk(&it.route), &unrouted_sk(it));
    item.insert("inbox_id".into(), s(&it.id));
    item.insert("kind".into(), s(it.kind.as_str()));
    item.insert("channel".into(), s(it.channel.as_str()));
    item.insert("payload".into(), s(&it.payload));
    if let Some(c) = &it.contact {
        item.insert("contact".into(), s(c));
    }
    if let Some(w) = &it.waba_id {
        item.insert("waba_id".into(), s(w));
    }
    item.insert("received_at".into(), n(it.received_at_ms));
    // The inbox's TTL: gone with the raw message, unless its route is linked before.
    if it.expires_at > 0 {
        item.insert(super::inbox::attr::EXPIRES_AT.into(), n(it.expires_at));
    }
    item
}

pub(super) fn unrouted_from(route: &Route, item: &Item) -> Result<InboxItem, StoreError> {
    let kind = req_s(item, "kind")?;
    let channel = req_s(item, "channel")?;
    Ok(InboxItem {
        id: req_s(item, "inbox_id")?,
        kind: InboxKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("kind {kind}")))?,
        channel: Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("channel {channel}")))?,
        route: route.clone(),
        waba_id: get_s(item, "waba_id"),
        payload: req_s(item, "payload")?,
        contact: get_s(item, "contact"),
        received_at_ms: get_n(item, "received_at").unwrap_or_default(),
        expires_at: get_n(item, super::inbox::attr::EXPIRES_AT).unwrap_or_default(),
    })
}

impl DynamoData {
    /// One transaction: the route still unclaimed (a condition check on its item) and
    /// the unrouted item written. `false` when it was cancelled (the route is claimed,
    /// or a concurrent transaction on it): nothing written.
    pub(super) async fn keep_unrouted(&self, it: &InboxItem) -> Result<bool, StoreError> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Backend(e.to_string());
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(key(route_pk(&it.route), "ROUTE")))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build)?;
        // Unconditional: a redelivered item writes the same attributes again.
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(unrouted_item(it)))
            .build()
            .map_err(build)?;
        self.transact(vec![
            TransactWriteItem::builder().condition_check(check).build(),
            TransactWriteItem::builder().put(put).build(),
        ])
        .await
    }
}

#[async_trait]
impl UnroutedBacklog for DynamoData {
    async fn pending_drains(&self, limit: usize) -> Result<Vec<BacklogDrain>, StoreError> {
        let items = self
            .pages(limit, |q| {
                q.key_condition_expression("pk = :p")
                    .expression_attribute_values(":p", s(DRAINS_PK))
            })
            .await?;
        items
            .iter()
            .map(|i| {
                let sk = req_s(i, "sk")?;
                Ok(BacklogDrain {
                    route: Route::parse(&sk)
                        .ok_or_else(|| StoreError::Corrupt(format!("drain route {sk}")))?,
                    account_id: get_s(i, "account_id").unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn unrouted_items(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let pk = unrouted_pk(route);
        let items = self
            .pages(limit, |q| {
                q.key_condition_expression("pk = :p")
                    .expression_attribute_values(":p", s(pk.clone()))
                    .scan_index_forward(true)
                    // An item removed by the last page is not read again.
                    .consistent_read(true)
            })
            .await?;
        items.iter().map(|i| unrouted_from(route, i)).collect()
    }

    async fn remove_unrouted(&self, it: &InboxItem) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(unrouted_pk(&it.route), &unrouted_sk(it))))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn finish_drain(&self, route: &Route) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(DRAINS_PK.to_string(), &route.key())))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
