//! Routes as the operator manages them (the RouteStore port).
//!
//! A route is `ROUTE#<route>` / `ROUTE` with `account_id`, `waba_id` (the account's when
//! linked), `route_status`, `linked_at`, `checked_at`, `note`. Every change is one
//! transaction: the route item written on the condition that it is still what the
//! caller read (account and link time), the accounts' `phone_number_ids` kept in step
//! (a list element removed on the condition that it is that phone number id), and the
//! audit record (in the account's trail, see `accounts`). A quarantined item is
//! `QUARANTINE#<route>` / `<ms15>#<inbox id>`: the unrouted item's attributes, its
//! account, expected WABA and reason, and the inbox's TTL.

use super::accounts::audit_item;
use super::*;
use aws_sdk_dynamodb::types::{Delete, Update};

fn route_pk(route: &Route) -> String {
    format!("ROUTE#{}", route.key())
}

/// The route's item (its key and every attribute).
pub(super) fn route_item(rec: &RouteRecord) -> Item {
    let mut item = key(route_pk(&rec.route), "ROUTE");
    item.insert("account_id".into(), s(&rec.account_id));
    if let Some(w) = &rec.waba_id {
        item.insert("waba_id".into(), s(w));
    }
    item.insert("route_status".into(), s(rec.status.as_str()));
    item.insert("linked_at".into(), n(rec.linked_at_ms));
    if let Some(c) = rec.checked_at_ms {
        item.insert("checked_at".into(), n(c));
    }
    if let Some(note) = &rec.note {
        item.insert("note".into(), s(note));
    }
    item
}

/// A stored route; one stored before routes had a state reads as pending, linked at 0.
pub(super) fn route_from(route: &Route, item: &Item) -> Result<RouteRecord, StoreError> {
    Ok(RouteRecord {
        route: route.clone(),
        account_id: req_s(item, "account_id")?,
        waba_id: get_s(item, "waba_id"),
        status: RouteStatus::parse(get_s(item, "route_status").as_deref()),
        linked_at_ms: get_n(item, "linked_at").unwrap_or_default(),
        checked_at_ms: get_n(item, "checked_at"),
        note: get_s(item, "note"),
    })
}

fn quarantine_pk(route: &Route) -> String {
    format!("QUARANTINE#{}", route.key())
}

fn build(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl DynamoData {
    /// A partition's items, newest (highest sort key) first.
    async fn newest_first(&self, pk: String, limit: usize) -> Result<Vec<Item>, StoreError> {
        self.pages(limit, |q| {
            q.key_condition_expression("pk = :p")
                .expression_attribute_values(":p", s(pk.clone()))
                .scan_index_forward(false)
        })
        .await
    }

    fn put_write(
        &self,
        item: Item,
        condition: Option<(&str, Vec<(&str, AttributeValue)>)>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut p = Put::builder().table_name(&self.table).set_item(Some(item));
        if let Some((expr, values)) = condition {
            p = p.condition_expression(expr);
            for (k, v) in values {
                p = p.expression_attribute_values(k, v);
            }
        }
        Ok(TransactWriteItem::builder()
            .put(p.build().map_err(build)?)
            .build())
    }

    /// The route item as `rec`, on the condition that the stored one is `current`'s
    /// (same account, same link time; a route stored before link times has none).
    fn route_write_if(
        &self,
        rec: &RouteRecord,
        current: &RouteRecord,
    ) -> Result<TransactWriteItem, StoreError> {
        self.put_write(
            route_item(rec),
            Some((
                "account_id = :cur_a AND (attribute_not_exists(linked_at) OR linked_at = :cur_l)",
                vec![
                    (":cur_a", s(&current.account_id)),
                    (":cur_l", n(current.linked_at_ms)),
                ],
            )),
        )
    }

    /// The phone number id appended to the account's list (the account must exist).
    fn add_phone_number(
        &self,
        account_id: &str,
        route: &Route,
    ) -> Result<Option<TransactWriteItem>, StoreError> {
        let Some((list, p)) = account_list(route) else {
            return Ok(None);
        };
        let u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(format!("ACCT#{account_id}"), "ACCOUNT")))
            .update_expression(format!(
                "SET {list} = list_append(if_not_exists({list}, :empty), :one)"
            ))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":one", AttributeValue::L(vec![s(p)]))
            .build()
            .map_err(build)?;
        Ok(Some(TransactWriteItem::builder().update(u).build()))
    }

    /// The phone number id taken off the account's list, on the condition that the
    /// element read is still it (`None` when the list does not hold it).
    async fn remove_phone_number(
        &self,
        account_id: &str,
        route: &Route,
    ) -> Result<Option<TransactWriteItem>, StoreError> {
        let Some((list, p)) = account_list(route) else {
            return Ok(None);
        };
        let Some(account) = self.get(format!("ACCT#{account_id}"), "ACCOUNT").await? else {
            return Ok(None);
        };
        let Some(i) = get_strings(&account, list).iter().position(|x| x == p) else {
            return Ok(None);
        };
        let u = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(format!("ACCT#{account_id}"), "ACCOUNT")))
            .update_expression(format!("REMOVE {list}[{i}]"))
            .condition_expression(format!("{list}[{i}] = :p"))
            .expression_attribute_values(":p", s(p))
            .build()
            .map_err(build)?;
        Ok(Some(TransactWriteItem::builder().update(u).build()))
    }
}

/// The list attribute of the account item that holds a route of this kind, and its id
/// (a Sinch app is the account's own attribute, set at creation).
pub(super) fn account_list(route: &Route) -> Option<(&'static str, &str)> {
    match route {
        Route::PhoneNumberId(p) => Some(("phone_number_ids", p)),
        Route::Page(p) => Some(("page_ids", p)),
        Route::Instagram(i) => Some(("instagram_account_ids", i)),
        Route::SinchApp(_) => None,
    }
}

#[async_trait]
impl RouteStore for DynamoData {
    async fn link_route(&self, rec: &RouteRecord, audit: &AuditRecord) -> Result<(), StoreError> {
        let mut writes = vec![self.put_write(
            route_item(rec),
            Some(("attribute_not_exists(pk)", Vec::new())),
        )?];
        writes.extend(self.add_phone_number(&rec.account_id, &rec.route)?);
        // The route's unrouted items are owed to the account from now on.
        writes.push(self.put_write(
            super::unrouted::drain_item(&rec.route, &rec.account_id, rec.linked_at_ms),
            None,
        )?);
        writes.push(self.put_write(audit_item(audit), None)?);
        if self.transact(writes).await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "{} is already linked, or account {} does not exist",
                rec.route.key(),
                rec.account_id
            )))
        }
    }

    async fn move_route(
        &self,
        from: &RouteRecord,
        to: &RouteRecord,
        audits: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut writes = vec![self.route_write_if(to, from)?];
        writes.extend(
            self.remove_phone_number(&from.account_id, &from.route)
                .await?,
        );
        writes.extend(self.add_phone_number(&to.account_id, &to.route)?);
        for audit in audits {
            writes.push(self.put_write(audit_item(audit), None)?);
        }
        self.transact(writes).await
    }

    async fn remove_route(
        &self,
        current: &RouteRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let d = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(route_pk(&current.route), "ROUTE")))
            .condition_expression(
                "account_id = :cur_a AND (attribute_not_exists(linked_at) OR linked_at = :cur_l)",
            )
            .expression_attribute_values(":cur_a", s(&current.account_id))
            .expression_attribute_values(":cur_l", n(current.linked_at_ms))
            .build()
            .map_err(build)?;
        let mut writes = vec![TransactWriteItem::builder().delete(d).build()];
        writes.extend(
            self.remove_phone_number(&current.account_id, &current.route)
                .await?,
        );
        writes.push(self.put_write(audit_item(audit), None)?);
        self.transact(writes).await
    }

    async fn set_route_status(
        &self,
        rec: &RouteRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let writes = vec![
            self.route_write_if(rec, rec)?,
            self.put_write(audit_item(audit), None)?,
        ];
        self.transact(writes).await
    }

    async fn quarantined(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let items = self.newest_first(quarantine_pk(route), limit).await?;
        items
            .iter()
            .map(|i| {
                Ok(Quarantined {
                    item: super::unrouted::unrouted_from(route, i)?,
                    account_id: req_s(i, "account_id")?,
                    expected_waba_id: get_s(i, "expected_waba_id"),
                    reason: get_s(i, "reason").unwrap_or_default(),
                })
            })
            .collect()
    }
}

impl DynamoData {
    /// Writes a quarantined item (unconditional: a redelivery writes it again).
    pub(super) async fn keep_quarantined(&self, q: &Quarantined) -> Result<(), StoreError> {
        let mut item = super::unrouted::unrouted_item(&q.item);
        item.insert("pk".into(), s(quarantine_pk(&q.item.route)));
        item.insert("account_id".into(), s(&q.account_id));
        if let Some(w) = &q.expected_waba_id {
            item.insert("expected_waba_id".into(), s(w));
        }
        item.insert("reason".into(), s(&q.reason));
        self.put(item).await
    }
}
