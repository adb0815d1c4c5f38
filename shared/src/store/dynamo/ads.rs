//! The AdInventory port: linked ad accounts, objects made here, per-ad counts, idempotency keys.

use super::*;

fn ad_account_pk(ad_account_id: &str) -> String {
    format!("ADACCT#{ad_account_id}")
}
fn ad_accounts_gsi(account_id: &str) -> String {
    format!("ACCT#{account_id}#ADACCTS")
}
fn request_pk(account_id: &str, key: &str) -> String {
    format!("IDEM#{account_id}#{key}")
}

/// A day's insights are kept 400 days: a year of reports, then asked again.
const INSIGHTS_TTL_SECS: i64 = 400 * 86_400;

/// Meta's insights rows of one ad account, one item per day that is over.
fn insights_pk(ad_account_id: &str) -> String {
    format!("INSIGHTS#{ad_account_id}")
}

/// Idempotency records are kept a day: long enough for any client retry.
const REQUEST_TTL_SECS: i64 = 86_400;

pub(super) fn link_item(link: &AdAccountLink) -> Item {
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
impl AdInventory for DynamoData {
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

    async fn ad_activity(
        &self,
        account_id: &str,
        ad_id: &str,
        w: ActivityWindow,
    ) -> Result<AdActivity, StoreError> {
        let pk = ad_gsi(account_id, ad_id);
        let ms = crate::time::sortable_millis;
        // `CLICK#<ms>#<message>` and `CONV#<ms>#<conversation>` sort by time: BETWEEN
        // `<prefix><from>` and `<prefix><to>` holds `[from, to)` exactly.
        let between = |index: &'static str,
                       prefix: &str,
                       from: i64,
                       to: i64,
                       projection: &'static [&'static str]| {
            let (lo, hi) = (
                format!("{prefix}{}", ms(from)),
                format!("{prefix}{}", ms(to)),
            );
            let pk = pk.clone();
            self.pages(w.limit + 1, move |q| {
                q.index_name(index)
                    .key_condition_expression("#p = :p AND #s BETWEEN :lo AND :hi")
                    .expression_attribute_values(":p", s(pk.clone()))
                    .expression_attribute_values(":lo", s(lo.clone()))
                    .expression_attribute_values(":hi", s(hi.clone()))
                    .projection_expression(
                        (0..projection.len())
                            .map(|k| format!("#a{k}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                    .set_expression_attribute_names(Some(
                        [
                            ("#p".to_string(), format!("{index}pk")),
                            ("#s".to_string(), format!("{index}sk")),
                        ]
                        .into_iter()
                        .chain(
                            projection
                                .iter()
                                .enumerate()
                                .map(|(k, a)| (format!("#a{k}"), a.to_string())),
                        )
                        .collect(),
                    ))
            })
        };
        let (clicks, conversations, events) = tokio::try_join!(
            between(
                "gsi2",
                "CLICK#",
                w.from_ms,
                w.to_ms,
                &["clicked_at", "ctwa_clid"]
            ),
            between("gsi2", "CONV#", w.from_ms, w.to_ms, &["ctwa_clicked_at"]),
            between(
                "gsi3",
                "EVT#",
                w.conversions_from_ms,
                w.conversions_to_ms,
                &["status", "record"]
            ),
        )?;
        let truncated = [&clicks, &conversations, &events]
            .iter()
            .any(|v| v.len() > w.limit);
        let mut out = AdActivity {
            truncated,
            ..AdActivity::default()
        };
        for i in clicks.iter().take(w.limit) {
            out.clicks.push(ActivityClick {
                clicked_at_ms: get_n(i, "clicked_at").unwrap_or_default(),
                has_clid: i.contains_key("ctwa_clid"),
            });
        }
        out.conversations = conversations
            .iter()
            .take(w.limit)
            .filter_map(|i| get_n(i, "ctwa_clicked_at"))
            .collect();
        for i in events.iter().take(w.limit) {
            if get_s(i, "status").as_deref() != Some(EventStatus::Delivered.as_str()) {
                continue;
            }
            let raw = req_s(i, "record")?;
            let r: EventRecord =
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.conversions.push(ActivityConversion::from_record(&r));
        }
        Ok(out)
    }

    async fn cached_insights(
        &self,
        ad_account_id: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let pk = insights_pk(ad_account_id);
        let (lo, hi) = (format!("DAY#{since}"), format!("DAY#{until}"));
        let items = self
            .pages(1000, |q| {
                q.key_condition_expression("pk = :p AND sk BETWEEN :lo AND :hi")
                    .expression_attribute_values(":p", s(pk.clone()))
                    .expression_attribute_values(":lo", s(lo.clone()))
                    .expression_attribute_values(":hi", s(hi.clone()))
            })
            .await?;
        items
            .iter()
            .map(|i| Ok((req_s(i, "day")?, req_s(i, "rows")?)))
            .collect()
    }

    async fn cache_insights(
        &self,
        ad_account_id: &str,
        day: &str,
        rows_json: &str,
    ) -> Result<(), StoreError> {
        let mut item = key(insights_pk(ad_account_id), &format!("DAY#{day}"));
        item.insert("day".into(), s(day));
        item.insert("rows".into(), s(rows_json));
        item.insert("cached_at".into(), n(crate::time::now_millis()));
        item.insert(
            "expires_at".into(),
            n(crate::time::now_secs() + INSIGHTS_TTL_SECS),
        );
        self.put(item).await
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
