//! The Conversations port: conversations, clicks, unrouted items, automatic events.

use super::*;
use crate::domain::Referral;
use crate::time::sortable_millis;

fn conv_pk(id: &str) -> String {
    format!("CONV#{id}")
}
fn customer_gsi(account_id: &str, customer_key: &str) -> String {
    format!("ACCT#{account_id}#CUST#{customer_key}")
}
fn link_pk(account_id: &str, customer_key: &str) -> String {
    format!("ACCT#{account_id}#LINK#{customer_key}")
}
fn click_sk(ms: i64, msg: &str) -> String {
    format!("CLICK#{}#{msg}", sortable_millis(ms))
}

fn automatic_events_pk(account_id: &str) -> String {
    format!("ACCT#{account_id}#AUTOEVENT")
}

fn automatic_event_from(item: &Item) -> Result<AutomaticEvent, StoreError> {
    let custom_data = match get_s(item, "custom_data") {
        Some(raw) => Some(
            serde_json::from_str(&raw)
                .map_err(|e| StoreError::Corrupt(format!("custom_data: {e}")))?,
        ),
        None => None,
    };
    Ok(AutomaticEvent {
        id: req_s(item, "event_id")?,
        event_name: req_s(item, "event_name")?,
        occurred_at_ms: get_n(item, "occurred_at").unwrap_or_default(),
        ctwa_clid: get_s(item, "ctwa_clid"),
        custom_data,
    })
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
    // Every first touch has its click time (a WhatsApp one its click id too).
    let first_touch = match get_n(item, "ctwa_clicked_at") {
        Some(clicked_at_ms) => Some(FirstTouch {
            ctwa_clid: get_s(item, "ctwa_clid"),
            captured_at_ms: get_n(item, "ctwa_captured_at").unwrap_or_default(),
            clicked_at_ms,
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
            psid: get_s(item, "psid"),
            igsid: get_s(item, "igsid"),
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
        time_unverified: matches!(
            item.get("time_unverified"),
            Some(aws_sdk_dynamodb::types::AttributeValue::Bool(true))
        ),
        referral: referral_from(item, "referral")?,
    })
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
        if c.time_unverified {
            item.insert(
                "time_unverified".into(),
                aws_sdk_dynamodb::types::AttributeValue::Bool(true),
            );
        }
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
            if let Some(p) = &c.customer.psid {
                e.set("psid", s(p));
            }
            if let Some(i) = &c.customer.igsid {
                e.set("igsid", s(i));
            }
            if let Some(nm) = &c.customer.name {
                e.set("customer_name", s(nm));
            }
        };
        let update = |e: SetExpr, condition: Option<String>| {
            self.update(conv_pk(&c.id), "CONV", e)
                .set_condition_expression(condition)
                .send()
        };
        if let Some(ft) = first_touch {
            let mut e = SetExpr::default();
            base(&mut e);
            // A conversation is of one channel: its clicks all have an id or none do.
            if let Some(clid) = &ft.ctwa_clid {
                e.set("ctwa_clid", s(clid));
            }
            // When the conversation's first touch was first captured: an earlier click
            // that arrives later replaces the click, never this time.
            e.set_if_not_exists("ctwa_captured_at", n(ft.captured_at_ms));
            e.set("ctwa_message_id", s(&ft.message_id));
            e.set("ctwa_referral", s(referral_json(&ft.referral)));
            // Indexed under its first touch's ad (the per-ad report's "conversations"),
            // moving with the first touch when an earlier click replaces it.
            if let Some(ad) = &ft.referral.source_id {
                e.set("gsi2pk", s(ad_gsi(&c.account_id, ad)));
                e.set(
                    "gsi2sk",
                    s(format!(
                        "CONV#{}#{}",
                        sortable_millis(ft.clicked_at_ms),
                        c.id
                    )),
                );
            }
            let at = e.name("ctwa_clicked_at");
            let at_v = e.value(n(ft.clicked_at_ms));
            e.parts.push(format!("{at} = {at_v}"));
            // Strictly earlier only: on an exact tie the stored click stays.
            let cond = format!("attribute_not_exists({at}) OR {at} > {at_v}");
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

    async fn link_customer(
        &self,
        account_id: &str,
        user_key: &str,
        phone_key: &str,
    ) -> Result<(), StoreError> {
        for (from, to) in [(user_key, phone_key), (phone_key, user_key)] {
            let mut item = key(link_pk(account_id, from), "LINK");
            item.insert("account_id".into(), s(account_id));
            item.insert("linked".into(), s(to));
            self.put(item).await?;
        }
        Ok(())
    }

    async fn linked_customer(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(link_pk(account_id, key), "LINK")
            .await?
            .and_then(|i| get_s(&i, "linked")))
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

    async fn record_unrouted(&self, it: &InboxItem) -> Result<bool, StoreError> {
        self.keep_unrouted(it).await
    }

    async fn record_quarantined(&self, q: &Quarantined) -> Result<(), StoreError> {
        self.keep_quarantined(q).await
    }

    async fn record_automatic_event(
        &self,
        account_id: &str,
        ev: &AutomaticEvent,
    ) -> Result<bool, StoreError> {
        let mut item = key(automatic_events_pk(account_id), &automatic_event_cursor(ev));
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

    async fn automatic_events(
        &self,
        account_id: &str,
        q: &AutomaticEventQuery,
    ) -> Result<(Vec<AutomaticEvent>, Option<String>), StoreError> {
        let limit = q.limit.clamp(1, 200);
        let pk = automatic_events_pk(account_id);
        // The sort key is `<15-digit millis>#<event id>`: a time range is a key range.
        let lo = q
            .since_ms
            .map(sortable_millis)
            .unwrap_or_else(|| "0".into());
        let hi = q
            .until_ms
            .map(|u| format!("{}~", sortable_millis(u)))
            .unwrap_or_else(|| "~".into());
        // The cursor is rebuilt into a key of the caller's own partition.
        let mut start = q.cursor.as_deref().map(|c| key(pk.clone(), c));
        let mut items: Vec<Item> = Vec::new();
        let mut resume: Option<String> = None;
        // A name filter is applied after the read: at most ten pages per answer.
        for _ in 0..10 {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":p", s(&pk))
                .expression_attribute_values(":lo", s(&lo))
                .expression_attribute_values(":hi", s(&hi))
                .scan_index_forward(false)
                .limit(i32::try_from(limit).unwrap_or(200))
                .set_exclusive_start_key(start.take());
            if let Some(name) = &q.event_name {
                query = query
                    .filter_expression("event_name = :n")
                    .expression_attribute_values(":n", s(name));
            }
            let page = query.send().await.map_err(backend)?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => {
                    resume = get_s(&k, "sk");
                    if items.len() >= limit {
                        break;
                    }
                    start = Some(k);
                }
                _ => {
                    resume = None;
                    break;
                }
            }
        }
        if items.len() > limit {
            items.truncate(limit);
            resume = items.last().and_then(|i| get_s(i, "sk"));
        }
        let events = items
            .iter()
            .map(automatic_event_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((events, resume))
    }
}
