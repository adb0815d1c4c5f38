//! The CapiSettingsStore and ConversionEvents ports: each account's CAPI settings and its conversion records.

use super::*;
use crate::time::sortable_millis;

/// Before the due index was per account, every due record was in this one partition;
/// the resend job still reads it, so records written then are sent too.
const LEGACY_DUE_INDEX_PK: &str = "DUE_EVENTS";
/// The accounts that have (or had, within the registry's TTL) due records.
const DUE_ACCOUNTS_PK: &str = "DUE_ACCOUNTS";
/// A registry entry outlives the records it stands for: Meta takes events up to 7 days
/// old, and every write of a due record refreshes it.
const DUE_ACCOUNT_TTL_SECS: i64 = 8 * 86_400;
/// How often one instance refreshes an account's registry entry.
const DUE_ACCOUNT_REFRESH_MS: i64 = 3_600_000;

/// An account's partition of the due index (gsi2).
fn due_pk(account_id: &str) -> String {
    format!("DUE#{account_id}")
}

fn event_pk(account_id: &str, event_id: &str) -> String {
    format!("EVT#{account_id}#{event_id}")
}

/// A record's sort key in its account's audit trail (gsi1): creation time, event id.
pub(in crate::store) fn events_sk(r: &EventRecord) -> String {
    format!("{}#{}", sortable_millis(r.created_at_ms), r.event_id)
}

/// A record's sort key in the due index (gsi2): the next attempt, account, event id;
/// `None` when it is not in the index (final, or no next attempt). The record is due at
/// `now` when this key sorts before `sortable_millis(now)`.
pub(in crate::store) fn due_sk(r: &EventRecord) -> Option<String> {
    let next = r.next_attempt_at_ms.filter(|_| !r.status.is_final())?;
    Some(format!(
        "{}#{}#{}",
        sortable_millis(next),
        r.account_id,
        r.event_id
    ))
}

/// The `list_events` cursor: `<gsi1sk>|<dedup key>` of the last row read.
pub(in crate::store) fn list_cursor(events_sk: &str, dedup_key: &str) -> String {
    format!("{events_sk}|{dedup_key}")
}

/// The `(gsi1sk, dedup key)` a cursor continues after; `None` for no cursor (or one
/// without a `|`), `Corrupt` when a part is empty.
pub(in crate::store) fn parse_list_cursor(
    cursor: Option<&str>,
) -> Result<Option<(&str, &str)>, StoreError> {
    match cursor.and_then(|c| c.split_once('|')) {
        Some((sk, dedup)) if !sk.is_empty() && !dedup.is_empty() => Ok(Some((sk, dedup))),
        Some(_) => Err(StoreError::Corrupt("invalid cursor".into())),
        None => Ok(None),
    }
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
    item.insert("gsi1sk".into(), s(events_sk(r)));
    if let (Some(next), Some(due)) = (r.next_attempt_at_ms, due_sk(r)) {
        item.insert("next_attempt_at".into(), n(next));
        item.insert("gsi2pk".into(), s(due_pk(&r.account_id)));
        item.insert("gsi2sk".into(), s(due));
    }
    if let Some(e) = r.expires_at {
        item.insert("expires_at".into(), n(e));
    }
    // Conversions waiting for their customer's click; else conversions by ad (test
    // sends are not the ad's conversions).
    if let (EventStatus::WaitingForClick, Some(customer)) = (r.status, &r.waiting_for) {
        item.insert("gsi3pk".into(), s(waiting_gsi(&r.account_id, customer)));
        item.insert("gsi3sk".into(), s(events_sk(r)));
    } else if let (Some(ad), None) = (&r.ad_id, &r.test_event_code) {
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

fn waiting_gsi(account_id: &str, customer_key: &str) -> String {
    format!("ACCT#{account_id}#WAIT#{customer_key}")
}

fn event_from(item: &Item) -> Result<EventRecord, StoreError> {
    let json = req_s(item, "record")?;
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("event record: {e}")))
}

#[async_trait]
impl CapiSettingsStore for DynamoData {
    async fn get_capi(&self, account_id: &str) -> Result<Option<CapiSettings>, StoreError> {
        let Some(item) = self.get(format!("ACCT#{account_id}"), "CAPI").await? else {
            return Ok(None);
        };
        let mut config: CapiSettings = match get_s(&item, "config") {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("capi config: {e}")))?,
            None => CapiSettings::default(),
        };
        // The dataset id is its own attribute, so provisioning never races a config save.
        config.dataset_id = get_s(&item, "dataset_id").or(config.dataset_id);
        for (k, v) in &item {
            if let (Some(route), Ok(d)) = (k.strip_prefix(CHANNEL_DATASET), v.as_s()) {
                config.channel_datasets.insert(route.to_string(), d.clone());
            }
        }
        Ok(Some(config))
    }

    async fn put_capi(&self, account_id: &str, config: &CapiSettings) -> Result<(), StoreError> {
        let json = serde_json::to_string(&CapiSettings {
            dataset_id: None,
            ..config.clone()
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut e = SetExpr::default();
        e.set("config", s(json));
        if let Some(d) = &config.dataset_id {
            e.set("dataset_id", s(d));
        }
        self.update(format!("ACCT#{account_id}"), "CAPI", e)
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
        self.set_dataset_attr_if_absent(account_id, "dataset_id", dataset_id)
            .await
    }

    async fn set_channel_dataset_if_absent(
        &self,
        account_id: &str,
        route_key: &str,
        dataset_id: &str,
    ) -> Result<String, StoreError> {
        let attr = format!("{CHANNEL_DATASET}{route_key}");
        self.set_dataset_attr_if_absent(account_id, &attr, dataset_id)
            .await
    }
}

impl DynamoData {
    /// Writes `dataset_id` to `attr` of the account's CAPI item unless it holds one
    /// (`if_not_exists`: of two provisionings at once, the first id stays); answers the
    /// stored id.
    async fn set_dataset_attr_if_absent(
        &self,
        account_id: &str,
        attr: &str,
        dataset_id: &str,
    ) -> Result<String, StoreError> {
        let mut e = SetExpr::default();
        e.set_if_not_exists(attr, s(dataset_id));
        let out = self
            .update(format!("ACCT#{account_id}"), "CAPI", e)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(backend)?;
        Ok(out
            .attributes
            .as_ref()
            .and_then(|a| get_s(a, attr))
            .unwrap_or_else(|| dataset_id.to_string()))
    }
}

/// The attribute prefix of a Page's / Instagram account's dataset id on the CAPI item
/// (`dataset#page:<id>`, `dataset#ig:<id>`).
const CHANNEL_DATASET: &str = "dataset#";

#[async_trait]
impl ConversionEvents for DynamoData {
    async fn claim_event(&self, rec: &EventRecord) -> Result<bool, StoreError> {
        self.register_due(rec).await?;
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
        self.register_due(rec).await?;
        put_if(&self.client, &self.table, event_item(rec)?, |p| {
            p.condition_expression("lease_id = :l")
                .expression_attribute_values(":l", s(lease_id))
        })
        .await
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
        self.register_due(&taken).await?;
        put_if(&self.client, &self.table, event_item(&taken)?, |p| {
            p.condition_expression("lease_id = :l AND #st IN (:p, :f)")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":l", s(&rec.lease_id))
                .expression_attribute_values(":p", s(EventStatus::Pending.as_str()))
                .expression_attribute_values(":f", s(EventStatus::InFlight.as_str()))
        })
        .await
    }

    async fn take_waiting(
        &self,
        rec: &EventRecord,
        old_lease_id: &str,
    ) -> Result<bool, StoreError> {
        self.register_due(rec).await?;
        put_if(&self.client, &self.table, event_item(rec)?, |p| {
            p.condition_expression("lease_id = :l AND #st = :w")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":l", s(old_lease_id))
                .expression_attribute_values(":w", s(EventStatus::WaitingForClick.as_str()))
        })
        .await
    }

    async fn waiting_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi3")
            .key_condition_expression("gsi3pk = :p")
            .expression_attribute_values(":p", s(waiting_gsi(account_id, customer_key)))
            .limit(100)
            .send()
            .await
            .map_err(backend)?;
        let mut waiting = Vec::new();
        for item in out.items.unwrap_or_default() {
            match event_from(&item) {
                Ok(r) if r.status == EventStatus::WaitingForClick => waiting.push(r),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "unreadable event record skipped"),
            }
        }
        Ok(waiting)
    }

    async fn due_events(
        &self,
        now_ms: i64,
        limit: usize,
        per_account: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let per_account = per_account.clamp(1, 1000);
        let accounts: Vec<String> = self
            .pages(10_000, |q| {
                q.key_condition_expression("pk = :p")
                    .expression_attribute_values(":p", s(DUE_ACCOUNTS_PK))
            })
            .await?
            .iter()
            .filter_map(|i| get_s(i, "sk"))
            .collect();
        // Each account's partition, a few at a time; then the legacy one.
        let reads = accounts
            .into_iter()
            .map(|a| self.due_in(due_pk(&a), now_ms, per_account));
        let mut lists = Vec::new();
        for r in crate::run_bounded(reads, 8).await {
            lists.push(r?);
        }
        let mut legacy: std::collections::BTreeMap<String, Vec<EventRecord>> =
            std::collections::BTreeMap::new();
        for r in self
            .due_in(
                LEGACY_DUE_INDEX_PK.to_string(),
                now_ms,
                limit.clamp(1, 1000),
            )
            .await?
        {
            let l = legacy.entry(r.account_id.clone()).or_default();
            if l.len() < per_account {
                l.push(r);
            }
        }
        lists.extend(legacy.into_values());
        Ok(crate::store::round_robin(lists, limit.clamp(1, 1000)))
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
        let mut start: Option<Item> = parse_list_cursor(cursor)?.map(|(gsi1sk, dedup)| {
            let mut k = key(event_pk(account_id, dedup), "EVT");
            k.insert("gsi1pk".into(), s(&gsi1pk));
            k.insert("gsi1sk".into(), s(gsi1sk));
            k
        });
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
                                pk.strip_prefix(&pk_prefix).map(|d| list_cursor(&sk, d))
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
                Some(list_cursor(&get_s(i, "gsi1sk")?, &dedup))
            })
        } else {
            resume
        };
        Ok((records, next))
    }
}

impl DynamoData {
    /// Lists the record's account among those with due records (before the record is
    /// written, so a due record is never in a partition the resend job does not read).
    /// Idempotent; each instance refreshes an account's entry at most once an hour.
    async fn register_due(&self, rec: &EventRecord) -> Result<(), StoreError> {
        if due_sk(rec).is_none() {
            return Ok(());
        }
        let now = crate::time::now_millis();
        let fresh = self
            .due_registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rec.account_id)
            .is_some_and(|at| now - at < DUE_ACCOUNT_REFRESH_MS);
        if fresh {
            return Ok(());
        }
        let mut item = key(DUE_ACCOUNTS_PK.to_string(), &rec.account_id);
        item.insert("expires_at".into(), n(now / 1000 + DUE_ACCOUNT_TTL_SECS));
        self.put(item).await?;
        self.due_registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.account_id.clone(), now);
        Ok(())
    }

    /// One partition of the due index: its records due before `now_ms`, oldest first.
    async fn due_in(
        &self,
        gsi2pk: String,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let items = self
            .pages(limit, |q| {
                q.index_name("gsi2")
                    .key_condition_expression("gsi2pk = :p AND gsi2sk < :t")
                    .expression_attribute_values(":p", s(gsi2pk.clone()))
                    .expression_attribute_values(":t", s(sortable_millis(now_ms)))
            })
            .await?;
        let mut due = Vec::new();
        for item in items {
            match event_from(&item) {
                Ok(r) => due.push(r),
                Err(e) => tracing::error!(error = %e, "unreadable event record skipped"),
            }
        }
        Ok(due)
    }
}
