//! In-memory fakes of every storage port, for unit tests of the handlers and domain.
//! They follow the same rules as the DynamoDB adapters (one-shot, idempotent writes,
//! the same conditions, orders and cursors).

use super::dynamo::{due_sk, events_sk, list_cursor, parse_list_cursor};
use super::*;
use crate::time::sortable_millis;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Per conversation id: (clicked_at, message id) -> click.
type ClickHistory = HashMap<String, BTreeMap<(i64, String), ClickRecord>>;

/// An idempotency key's record (the adapter's `IDEM` item).
#[derive(Debug, Clone, Default)]
struct RequestRecord {
    /// `None` when `finish_request` made the record (no claim before it).
    request_hash: Option<String>,
    claimed_at_ms: Option<i64>,
    /// Set by `finish_request`: the key is done.
    answer: Option<(u16, serde_json::Value)>,
}

#[derive(Default)]
pub struct MemoryStore {
    inbox: Mutex<BTreeMap<String, InboxItem>>,
    accounts: Mutex<HashMap<String, Account>>,
    routes: Mutex<HashMap<Route, RouteRecord>>,
    pub quarantine: Mutex<Vec<Quarantined>>,
    pub audit: Mutex<Vec<AuditRecord>>,
    keys: Mutex<HashMap<String, ApiKeyRecord>>,
    /// Per account id: its live-key count (the adapter's counter item).
    live_keys: Mutex<HashMap<String, u32>>,
    conversations: Mutex<HashMap<String, Conversation>>,
    clicks: Mutex<ClickHistory>,
    pub unrouted: Mutex<Vec<InboxItem>>,
    /// Per route key: the drains owed (written with the route).
    drains: Mutex<BTreeMap<String, BacklogDrain>>,
    connections: Mutex<HashMap<String, MetaConnection>>,
    pub automatic_events: Mutex<Vec<(String, AutomaticEvent)>>,
    /// Per account id.
    capi: Mutex<HashMap<String, CapiSettings>>,
    /// Per (account id, dedup key).
    events: Mutex<BTreeMap<(String, String), EventRecord>>,
    /// Per ad account id.
    ad_links: Mutex<BTreeMap<String, AdAccountLink>>,
    ad_objects: Mutex<HashMap<String, AdObject>>,
    /// Per (account id, idempotency key).
    requests: Mutex<HashMap<(String, String), RequestRecord>>,
    /// Per (account id, customer key): the linked customer key.
    links: Mutex<HashMap<(String, String), String>>,
    /// Per (ad account id, day): Meta's insights rows as JSON.
    insights: Mutex<BTreeMap<(String, String), String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn inbox_items(&self) -> Vec<InboxItem> {
        lock(&self.inbox).values().cloned().collect()
    }
    pub fn click_count(&self) -> usize {
        lock(&self.clicks).values().map(|m| m.len()).sum()
    }
    pub fn conversation_count(&self) -> usize {
        lock(&self.conversations).len()
    }

    /// The account, its routes and `links`, all or nothing (one transaction in the
    /// adapter): `Conflict` when the id, a route or an ad account is taken.
    fn create_account_items(
        &self,
        account: &Account,
        links: &[AdAccountLink],
    ) -> Result<(), StoreError> {
        // Always in this order: accounts, routes, ad accounts.
        let mut accounts = lock(&self.accounts);
        let mut routes = lock(&self.routes);
        let mut ad_links = lock(&self.ad_links);
        if accounts.contains_key(&account.id) {
            return Err(StoreError::Conflict(format!(
                "account {} exists",
                account.id
            )));
        }
        for r in account.routes() {
            if routes.contains_key(&r) {
                return Err(StoreError::Conflict(format!("{} is claimed", r.key())));
            }
        }
        for l in links {
            if ad_links.contains_key(&l.ad_account_id) {
                return Err(StoreError::Conflict(format!(
                    "ad account {} is linked",
                    l.ad_account_id
                )));
            }
        }
        for r in account.routes() {
            lock(&self.drains).insert(
                r.key(),
                BacklogDrain {
                    route: r.clone(),
                    account_id: account.id.clone(),
                },
            );
            routes.insert(
                r.clone(),
                RouteRecord::pending(r, account, account.created_at_ms),
            );
        }
        for l in links {
            ad_links.insert(l.ad_account_id.clone(), l.clone());
        }
        accounts.insert(account.id.clone(), account.clone());
        Ok(())
    }
}

#[async_trait]
impl Inbox for MemoryStore {
    async fn put_once(&self, item: &InboxItem) -> Result<bool, StoreError> {
        let mut inbox = lock(&self.inbox);
        if inbox.contains_key(&item.id) {
            return Ok(false);
        }
        inbox.insert(item.id.clone(), item.clone());
        Ok(true)
    }
}

#[async_trait]
impl Accounts for MemoryStore {
    async fn create_account(&self, account: &Account) -> Result<(), StoreError> {
        self.create_account_items(account, &[])
    }
    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        Ok(lock(&self.accounts).get(id).cloned())
    }
    async fn account_for_route(&self, route: &Route) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.routes).get(route).map(|r| r.account_id.clone()))
    }
    async fn route_record(&self, route: &Route) -> Result<Option<RouteRecord>, StoreError> {
        Ok(lock(&self.routes).get(route).cloned())
    }
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut keys = lock(&self.keys);
        if keys.contains_key(&key.hash) {
            return Err(StoreError::Conflict("api key exists".into()));
        }
        // Outside the live-key count, as in the adapter.
        keys.insert(
            key.hash.clone(),
            ApiKeyRecord {
                counted: false,
                ..key.clone()
            },
        );
        Ok(())
    }
    async fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(lock(&self.keys).get(hash).cloned())
    }
    async fn api_keys(&self, account_id: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut v: Vec<ApiKeyRecord> = lock(&self.keys)
            .values()
            .filter(|k| match account_id {
                Some(a) => !k.operator && k.account_id == a,
                None => k.operator,
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at_ms, &a.key_id).cmp(&(b.created_at_ms, &b.key_id)));
        Ok(v)
    }
    async fn api_key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(lock(&self.keys)
            .values()
            .find(|k| k.key_id == key_id)
            .cloned())
    }
    async fn create_api_key(
        &self,
        key: &ApiKeyRecord,
        max_live: u32,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError> {
        let mut keys = lock(&self.keys);
        let mut live = lock(&self.live_keys);
        let n = live.entry(key.account_id.clone()).or_default();
        if *n >= max_live {
            return Ok(KeyWrite::LimitReached);
        }
        if keys.contains_key(&key.hash) {
            return Err(StoreError::Conflict("api key exists".into()));
        }
        *n += 1;
        keys.insert(
            key.hash.clone(),
            ApiKeyRecord {
                counted: true,
                ..key.clone()
            },
        );
        lock(&self.audit).push(audit.clone());
        Ok(KeyWrite::Done)
    }
    async fn rotate_api_key(
        &self,
        old: &ApiKeyRecord,
        new: &ApiKeyRecord,
        end: KeyEnd,
        max_live: u32,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError> {
        let mut keys = lock(&self.keys);
        let mut live = lock(&self.live_keys);
        let stored = keys
            .get(&old.hash)
            .ok_or_else(|| StoreError::Conflict("no such api key".into()))?;
        if stored.revoked
            || stored.counted != old.counted
            || stored.expires_at_ms != old.expires_at_ms
        {
            return Ok(KeyWrite::Changed);
        }
        let n = live.entry(new.account_id.clone()).or_default();
        if !old.counted && *n >= max_live {
            return Ok(KeyWrite::LimitReached);
        }
        if !old.counted {
            *n += 1;
        }
        let o = keys.get_mut(&old.hash).expect("read above");
        o.counted = false;
        match end {
            KeyEnd::RevokedAt(t) => {
                o.revoked = true;
                o.revoked_at_ms = Some(t);
            }
            KeyEnd::ExpiresAt(t) => o.expires_at_ms = Some(t),
        }
        keys.insert(
            new.hash.clone(),
            ApiKeyRecord {
                counted: true,
                ..new.clone()
            },
        );
        lock(&self.audit).push(audit.clone());
        Ok(KeyWrite::Done)
    }
    async fn revoke_api_key(
        &self,
        key: &ApiKeyRecord,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<KeyWrite, StoreError> {
        let mut keys = lock(&self.keys);
        let mut live = lock(&self.live_keys);
        let k = keys
            .get_mut(&key.hash)
            .ok_or_else(|| StoreError::Conflict("no such api key".into()))?;
        if k.revoked || k.counted != key.counted {
            return Ok(KeyWrite::Changed);
        }
        if k.counted {
            let n = live.entry(k.account_id.clone()).or_default();
            *n = n.saturating_sub(1);
        }
        k.revoked = true;
        k.revoked_at_ms = Some(at_ms);
        k.counted = false;
        lock(&self.audit).push(audit.clone());
        Ok(KeyWrite::Done)
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn record_audit(&self, rec: &AuditRecord) -> Result<(), StoreError> {
        lock(&self.audit).push(rec.clone());
        Ok(())
    }
    async fn audit_records(
        &self,
        account_id: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<AuditRecord>, Option<String>), StoreError> {
        let mut v: Vec<AuditRecord> = lock(&self.audit)
            .iter()
            .filter(|r| r.account_id.as_deref() == account_id)
            .filter(|r| cursor.is_none_or(|c| r.cursor().as_str() < c))
            .cloned()
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.cursor()));
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
        let mut v: Vec<AuditRecord> = lock(&self.audit)
            .iter()
            .filter(|r| r.target == target)
            .cloned()
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.cursor()));
        v.truncate(limit);
        Ok(v)
    }
}

#[async_trait]
impl Conversations for MemoryStore {
    async fn record_click(&self, rec: &ClickRecord) -> Result<bool, StoreError> {
        let mut clicks = lock(&self.clicks);
        let per = clicks.entry(rec.click.conversation_id.clone()).or_default();
        let key = (rec.click.clicked_at_ms, rec.click.message_id.clone());
        if per.contains_key(&key) {
            return Ok(false);
        }
        per.insert(key, rec.clone());
        Ok(true)
    }

    async fn upsert_conversation(
        &self,
        c: &ConversationUpsert,
        first_touch: Option<&FirstTouch>,
    ) -> Result<FirstTouchOutcome, StoreError> {
        let mut convs = lock(&self.conversations);
        let conv = convs.entry(c.id.clone()).or_insert_with(|| Conversation {
            id: c.id.clone(),
            account_id: c.account_id.clone(),
            channel: c.channel,
            business_id: c.business_id.clone(),
            customer_key: c.customer_key.clone(),
            customer: c.customer.clone(),
            created_at_ms: c.now_ms,
            updated_at_ms: c.now_ms,
            first_touch: None,
        });
        conv.updated_at_ms = c.now_ms;
        merge_customer(&mut conv.customer, &c.customer);
        let Some(ft) = first_touch else {
            return Ok(FirstTouchOutcome::NoClick);
        };
        let captured_at_ms = match &conv.first_touch {
            None => Some(ft.captured_at_ms),
            Some(cur) if click_precedes(ft.clicked_at_ms, cur.clicked_at_ms) => {
                Some(cur.captured_at_ms)
            }
            Some(_) => None,
        };
        if let Some(captured_at_ms) = captured_at_ms {
            conv.first_touch = Some(FirstTouch {
                captured_at_ms,
                ..ft.clone()
            });
            Ok(FirstTouchOutcome::Captured)
        } else {
            Ok(FirstTouchOutcome::Kept)
        }
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        Ok(lock(&self.conversations).get(id).cloned())
    }

    async fn link_customer(
        &self,
        account_id: &str,
        user_key: &str,
        phone_key: &str,
    ) -> Result<(), StoreError> {
        let mut links = lock(&self.links);
        links.insert((account_id.into(), user_key.into()), phone_key.into());
        links.insert((account_id.into(), phone_key.into()), user_key.into());
        Ok(())
    }

    async fn linked_customer(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.links)
            .get(&(account_id.to_string(), key.to_string()))
            .cloned())
    }

    async fn conversations_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
    ) -> Result<Vec<Conversation>, StoreError> {
        let mut v: Vec<Conversation> = lock(&self.conversations)
            .values()
            .filter(|c| c.account_id == account_id && c.customer_key == customer_key)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn clicks_for_conversation(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<Click>, StoreError> {
        Ok(lock(&self.clicks)
            .get(id)
            .map(|m| {
                m.values()
                    .rev()
                    .take(limit)
                    .map(|r| r.click.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn clicks_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
        limit: usize,
    ) -> Result<Vec<Click>, StoreError> {
        let mut all: Vec<Click> = lock(&self.clicks)
            .values()
            .flat_map(|m| m.values())
            .filter(|r| r.account_id == account_id && r.customer_key == customer_key)
            .map(|r| r.click.clone())
            .collect();
        all.sort_by(|a, b| (b.clicked_at_ms, &b.message_id).cmp(&(a.clicked_at_ms, &a.message_id)));
        all.truncate(limit);
        Ok(all)
    }

    async fn record_unrouted(&self, item: &InboxItem) -> Result<bool, StoreError> {
        // The route is checked under its lock, as the adapter's transaction does.
        let routes = lock(&self.routes);
        if routes.contains_key(&item.route) {
            return Ok(false);
        }
        let mut u = lock(&self.unrouted);
        if !u.iter().any(|i| i.id == item.id) {
            u.push(item.clone());
        }
        Ok(true)
    }

    async fn record_quarantined(&self, q: &Quarantined) -> Result<(), StoreError> {
        let mut held = lock(&self.quarantine);
        held.retain(|h| h.item.id != q.item.id);
        held.push(q.clone());
        Ok(())
    }

    async fn record_automatic_event(
        &self,
        account_id: &str,
        ev: &AutomaticEvent,
    ) -> Result<bool, StoreError> {
        let mut evs = lock(&self.automatic_events);
        if evs.iter().any(|(a, e)| a == account_id && e.id == ev.id) {
            return Ok(false);
        }
        evs.push((account_id.to_string(), ev.clone()));
        Ok(true)
    }

    async fn automatic_events(
        &self,
        account_id: &str,
        q: &AutomaticEventQuery,
    ) -> Result<(Vec<AutomaticEvent>, Option<String>), StoreError> {
        let mut all: Vec<(String, AutomaticEvent)> = lock(&self.automatic_events)
            .iter()
            .filter(|(a, e)| {
                a == account_id
                    && q.since_ms.is_none_or(|s| e.occurred_at_ms >= s)
                    && q.until_ms.is_none_or(|u| e.occurred_at_ms <= u)
                    && q.event_name.as_ref().is_none_or(|n| *n == e.event_name)
            })
            .map(|(_, e)| (automatic_event_cursor(e), e.clone()))
            .collect();
        all.sort_by(|a, b| b.0.cmp(&a.0));
        let after = all
            .into_iter()
            .filter(|(k, _)| q.cursor.as_ref().is_none_or(|c| k < c));
        let mut page: Vec<AutomaticEvent> = after.take(q.limit + 1).map(|(_, e)| e).collect();
        let next = if page.len() > q.limit {
            page.truncate(q.limit);
            page.last().map(automatic_event_cursor)
        } else {
            None
        };
        Ok((page, next))
    }
}

/// The account's phone number ids, Pages and Instagram accounts, as the adapter keeps
/// them on the account item.
fn with_phone_number(
    accounts: &mut HashMap<String, Account>,
    account_id: &str,
    route: &Route,
    add: bool,
) {
    let Some(a) = accounts.get_mut(account_id) else {
        return;
    };
    let (list, p) = match route {
        Route::PhoneNumberId(p) => (&mut a.phone_number_ids, p),
        Route::Page(p) => (&mut a.page_ids, p),
        Route::Instagram(i) => (&mut a.instagram_account_ids, i),
        Route::SinchApp(_) => return,
    };
    list.retain(|x| x != p);
    if add {
        list.push(p.clone());
    }
}

#[async_trait]
impl RouteStore for MemoryStore {
    async fn link_route(&self, rec: &RouteRecord, audit: &AuditRecord) -> Result<(), StoreError> {
        let mut accounts = lock(&self.accounts);
        let mut routes = lock(&self.routes);
        if !accounts.contains_key(&rec.account_id) || routes.contains_key(&rec.route) {
            return Err(StoreError::Conflict(format!(
                "{} is claimed, or account {} does not exist",
                rec.route.key(),
                rec.account_id
            )));
        }
        with_phone_number(&mut accounts, &rec.account_id, &rec.route, true);
        routes.insert(rec.route.clone(), rec.clone());
        lock(&self.drains).insert(
            rec.route.key(),
            BacklogDrain {
                route: rec.route.clone(),
                account_id: rec.account_id.clone(),
            },
        );
        lock(&self.audit).push(audit.clone());
        Ok(())
    }

    async fn move_route(
        &self,
        from: &RouteRecord,
        to: &RouteRecord,
        audits: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut accounts = lock(&self.accounts);
        let mut routes = lock(&self.routes);
        if routes.get(&from.route) != Some(from) || !accounts.contains_key(&to.account_id) {
            return Ok(false);
        }
        with_phone_number(&mut accounts, &from.account_id, &from.route, false);
        with_phone_number(&mut accounts, &to.account_id, &to.route, true);
        routes.insert(to.route.clone(), to.clone());
        lock(&self.audit).extend(audits.iter().cloned());
        Ok(true)
    }

    async fn remove_route(
        &self,
        current: &RouteRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut accounts = lock(&self.accounts);
        let mut routes = lock(&self.routes);
        if routes.get(&current.route) != Some(current) {
            return Ok(false);
        }
        with_phone_number(&mut accounts, &current.account_id, &current.route, false);
        routes.remove(&current.route);
        lock(&self.audit).push(audit.clone());
        Ok(true)
    }

    async fn set_route_status(
        &self,
        rec: &RouteRecord,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut routes = lock(&self.routes);
        match routes.get_mut(&rec.route) {
            Some(cur)
                if cur.account_id == rec.account_id && cur.linked_at_ms == rec.linked_at_ms =>
            {
                *cur = rec.clone();
                lock(&self.audit).push(audit.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn quarantined(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let mut v: Vec<Quarantined> = lock(&self.quarantine)
            .iter()
            .filter(|q| &q.item.route == route)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (b.item.received_at_ms, &b.item.id).cmp(&(a.item.received_at_ms, &a.item.id))
        });
        v.truncate(limit);
        Ok(v)
    }
}

#[async_trait]
impl UnroutedBacklog for MemoryStore {
    async fn pending_drains(&self, limit: usize) -> Result<Vec<BacklogDrain>, StoreError> {
        Ok(lock(&self.drains).values().take(limit).cloned().collect())
    }

    async fn unrouted_items(
        &self,
        route: &Route,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let mut items: Vec<InboxItem> = lock(&self.unrouted)
            .iter()
            .filter(|i| &i.route == route)
            .cloned()
            .collect();
        items.sort_by(|a, b| (a.received_at_ms, &a.id).cmp(&(b.received_at_ms, &b.id)));
        items.truncate(limit);
        Ok(items)
    }

    async fn remove_unrouted(&self, item: &InboxItem) -> Result<(), StoreError> {
        lock(&self.unrouted).retain(|i| i.id != item.id);
        Ok(())
    }

    async fn finish_drain(&self, route: &Route) -> Result<(), StoreError> {
        lock(&self.drains).remove(&route.key());
        Ok(())
    }
}

#[async_trait]
impl Connections for MemoryStore {
    async fn put_connection(&self, c: &MetaConnection) -> Result<(), StoreError> {
        lock(&self.connections).insert(c.account_id.clone(), c.clone());
        Ok(())
    }
    async fn update_connection(
        &self,
        c: &MetaConnection,
        expected: i64,
    ) -> Result<bool, StoreError> {
        let mut conns = lock(&self.connections);
        if conns.get(&c.account_id).map(|x| x.token_version) != Some(expected) {
            return Ok(false);
        }
        conns.insert(c.account_id.clone(), c.clone());
        Ok(true)
    }
    async fn get_connection(&self, account_id: &str) -> Result<Option<MetaConnection>, StoreError> {
        Ok(lock(&self.connections).get(account_id).cloned())
    }
    async fn connections_expiring_before(
        &self,
        before: i64,
    ) -> Result<Vec<MetaConnection>, StoreError> {
        let mut v: Vec<MetaConnection> = lock(&self.connections)
            .values()
            .filter(|c| c.expires_at.is_some_and(|e| e < before))
            .cloned()
            .collect();
        v.sort_by_key(|c| c.expires_at);
        Ok(v)
    }
}

fn event_key(account_id: &str, dedup_key: &str) -> (String, String) {
    (account_id.to_string(), dedup_key.to_string())
}

#[async_trait]
impl CapiSettingsStore for MemoryStore {
    async fn get_capi(&self, account_id: &str) -> Result<Option<CapiSettings>, StoreError> {
        Ok(lock(&self.capi).get(account_id).cloned())
    }

    async fn put_capi(&self, account_id: &str, config: &CapiSettings) -> Result<(), StoreError> {
        let mut capi = lock(&self.capi);
        let stored = capi.entry(account_id.to_string()).or_default();
        // The dataset id is written only when set, never removed.
        let dataset_id = config.dataset_id.clone().or(stored.dataset_id.take());
        let channel_datasets = std::mem::take(&mut stored.channel_datasets);
        *stored = CapiSettings {
            dataset_id,
            channel_datasets,
            ..config.clone()
        };
        Ok(())
    }

    async fn set_dataset_if_absent(
        &self,
        account_id: &str,
        dataset_id: &str,
    ) -> Result<String, StoreError> {
        let mut capi = lock(&self.capi);
        let stored = capi.entry(account_id.to_string()).or_default();
        Ok(stored
            .dataset_id
            .get_or_insert_with(|| dataset_id.to_string())
            .clone())
    }

    async fn set_channel_dataset_if_absent(
        &self,
        account_id: &str,
        route_key: &str,
        dataset_id: &str,
    ) -> Result<String, StoreError> {
        let mut capi = lock(&self.capi);
        let stored = capi.entry(account_id.to_string()).or_default();
        Ok(stored
            .channel_datasets
            .entry(route_key.to_string())
            .or_insert_with(|| dataset_id.to_string())
            .clone())
    }
}

#[async_trait]
impl ConversionEvents for MemoryStore {
    async fn claim_event(&self, rec: &EventRecord) -> Result<bool, StoreError> {
        let mut events = lock(&self.events);
        let k = event_key(&rec.account_id, &rec.dedup_key());
        if events.contains_key(&k) {
            return Ok(false);
        }
        events.insert(k, rec.clone());
        Ok(true)
    }

    async fn get_event(
        &self,
        account_id: &str,
        dedup_key: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        Ok(lock(&self.events)
            .get(&event_key(account_id, dedup_key))
            .cloned())
    }

    async fn save_event(&self, rec: &EventRecord, lease_id: &str) -> Result<bool, StoreError> {
        let mut events = lock(&self.events);
        let k = event_key(&rec.account_id, &rec.dedup_key());
        if events.get(&k).is_none_or(|r| r.lease_id != lease_id) {
            return Ok(false);
        }
        events.insert(k, rec.clone());
        Ok(true)
    }

    async fn lease_event(
        &self,
        rec: &EventRecord,
        new_lease_id: &str,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut events = lock(&self.events);
        let k = event_key(&rec.account_id, &rec.dedup_key());
        // As the adapter's condition: the caller's copy still holds the lease and the
        // record is not settled (whether it is due is the caller's check).
        let takeable = events.get(&k).is_some_and(|cur| {
            cur.lease_id == rec.lease_id
                && matches!(cur.status, EventStatus::Pending | EventStatus::InFlight)
        });
        if !takeable {
            return Ok(false);
        }
        let mut taken = rec.clone();
        taken.lease_id = new_lease_id.to_string();
        taken.status = EventStatus::InFlight;
        taken.next_attempt_at_ms = Some(lease_until_ms);
        events.insert(k, taken);
        Ok(true)
    }

    async fn take_waiting(
        &self,
        rec: &EventRecord,
        old_lease_id: &str,
    ) -> Result<bool, StoreError> {
        let mut events = lock(&self.events);
        let k = event_key(&rec.account_id, &rec.dedup_key());
        let takeable = events.get(&k).is_some_and(|cur| {
            cur.lease_id == old_lease_id && cur.status == EventStatus::WaitingForClick
        });
        if takeable {
            events.insert(k, rec.clone());
        }
        Ok(takeable)
    }

    async fn waiting_for_customer(
        &self,
        account_id: &str,
        customer_key: &str,
    ) -> Result<Vec<EventRecord>, StoreError> {
        Ok(lock(&self.events)
            .values()
            .filter(|r| {
                r.account_id == account_id
                    && r.status == EventStatus::WaitingForClick
                    && r.waiting_for.as_deref() == Some(customer_key)
            })
            .take(100)
            .cloned()
            .collect())
    }

    async fn due_events(
        &self,
        now_ms: i64,
        limit: usize,
        per_account: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // The due index: not settled, with a next attempt before now, oldest first,
        // per account; then the accounts in turn.
        let now = sortable_millis(now_ms);
        let mut by_account: BTreeMap<String, Vec<(String, EventRecord)>> = BTreeMap::new();
        for r in lock(&self.events).values() {
            if let Some(k) = due_sk(r).filter(|k| *k < now) {
                by_account
                    .entry(r.account_id.clone())
                    .or_default()
                    .push((k, r.clone()));
            }
        }
        let lists = by_account
            .into_values()
            .map(|mut l| {
                l.sort_by(|a, b| a.0.cmp(&b.0));
                l.truncate(per_account.max(1));
                l.into_iter().map(|(_, r)| r).collect()
            })
            .collect();
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
        let after = parse_list_cursor(cursor)?;
        let events = lock(&self.events);
        // The audit trail newest first, each row keyed as the adapter's index orders it.
        let mut rows: Vec<((String, String), &EventRecord)> = events
            .iter()
            .filter(|((a, _), _)| a == account_id)
            .map(|((_, dedup), r)| ((events_sk(r), dedup.clone()), r))
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0));
        let rows = rows.into_iter().filter(|((sk, dedup), _)| {
            after.is_none_or(|(a_sk, a_dedup)| (sk.as_str(), dedup.as_str()) < (a_sk, a_dedup))
        });
        // The adapter reads at most ten pages of 200 when filtering on the status.
        let max_read = if status.is_some() {
            10 * 200
        } else {
            usize::MAX
        };
        let (mut out, mut last_read, mut read) = (Vec::new(), None, 0usize);
        let mut resume = None;
        for (k, r) in rows {
            if read == max_read {
                resume = last_read.map(|(sk, dedup): (String, String)| list_cursor(&sk, &dedup));
                break;
            }
            read += 1;
            if status.is_none_or(|s| r.status == s) {
                out.push(r.clone());
            }
            last_read = Some(k);
            if out.len() == limit {
                break;
            }
        }
        // A next page exists when this one is full; the cursor is the last row's key.
        let next = match out.last() {
            Some(r) if out.len() == limit => Some(list_cursor(&events_sk(r), &r.dedup_key())),
            _ => resume,
        };
        Ok((out, next))
    }
}

#[async_trait]
impl AdInventory for MemoryStore {
    async fn create_account_with_ad_accounts(
        &self,
        account: &Account,
        links: &[AdAccountLink],
    ) -> Result<(), StoreError> {
        self.create_account_items(account, links)
    }

    async fn link_ad_account(&self, link: &AdAccountLink) -> Result<(), StoreError> {
        let mut links = lock(&self.ad_links);
        if links
            .get(&link.ad_account_id)
            .is_some_and(|cur| cur.account_id != link.account_id)
        {
            return Err(StoreError::Conflict(format!(
                "ad account {} is linked to another account",
                link.ad_account_id
            )));
        }
        // A repeat by the same account rewrites the link, as the adapter's put does.
        links.insert(link.ad_account_id.clone(), link.clone());
        Ok(())
    }

    async fn ad_account(&self, ad_account_id: &str) -> Result<Option<AdAccountLink>, StoreError> {
        Ok(lock(&self.ad_links).get(ad_account_id).cloned())
    }

    async fn ad_accounts(&self, account_id: &str) -> Result<Vec<AdAccountLink>, StoreError> {
        // By ad account id; the adapter's index query reads `act_` ids only.
        Ok(lock(&self.ad_links)
            .values()
            .filter(|l| l.account_id == account_id && l.ad_account_id.starts_with("act_"))
            .cloned()
            .collect())
    }

    async fn put_ad_object(&self, object: &AdObject) -> Result<(), StoreError> {
        lock(&self.ad_objects)
            .entry(object.id.clone())
            .or_insert_with(|| object.clone());
        Ok(())
    }

    async fn ad_object(&self, id: &str) -> Result<Option<AdObject>, StoreError> {
        Ok(lock(&self.ad_objects).get(id).cloned())
    }

    async fn ad_stats(&self, account_id: &str, ad_id: &str) -> Result<AdStats, StoreError> {
        let clicks = lock(&self.clicks)
            .values()
            .flat_map(|m| m.values())
            .filter(|r| {
                r.account_id == account_id && r.click.referral.source_id.as_deref() == Some(ad_id)
            })
            .count();
        let events = lock(&self.events);
        // Test sends are not the ad's conversions.
        let conversions: Vec<&EventRecord> = events
            .values()
            .filter(|r| {
                r.account_id == account_id
                    && r.ad_id.as_deref() == Some(ad_id)
                    && r.test_event_code.is_none()
            })
            .collect();
        let delivered = conversions
            .iter()
            .filter(|r| r.status == EventStatus::Delivered)
            .count();
        Ok(AdStats {
            clicks: clicks as u64,
            conversions: conversions.len() as u64,
            conversions_delivered: delivered as u64,
        })
    }

    async fn ad_activity(
        &self,
        account_id: &str,
        ad_id: &str,
        w: ActivityWindow,
    ) -> Result<AdActivity, StoreError> {
        let in_window = |ms: i64| ms >= w.from_ms && ms < w.to_ms;
        let mut out = AdActivity::default();
        let mut clicks: Vec<ActivityClick> = lock(&self.clicks)
            .values()
            .flat_map(|m| m.values())
            .filter(|r| {
                r.account_id == account_id
                    && r.click.referral.source_id.as_deref() == Some(ad_id)
                    && in_window(r.click.clicked_at_ms)
            })
            .map(|r| ActivityClick {
                clicked_at_ms: r.click.clicked_at_ms,
                has_clid: r.click.referral.ctwa_clid.is_some(),
            })
            .collect();
        clicks.sort_by_key(|c| c.clicked_at_ms);
        out.conversations = lock(&self.conversations)
            .values()
            .filter(|c| c.account_id == account_id)
            .filter_map(|c| c.first_touch.as_ref())
            .filter(|ft| {
                ft.referral.source_id.as_deref() == Some(ad_id) && in_window(ft.clicked_at_ms)
            })
            .map(|ft| ft.clicked_at_ms)
            .collect();
        out.conversions = lock(&self.events)
            .values()
            .filter(|r| {
                r.account_id == account_id
                    && r.ad_id.as_deref() == Some(ad_id)
                    && r.test_event_code.is_none()
                    && r.status == EventStatus::Delivered
                    && r.created_at_ms >= w.conversions_from_ms
                    && r.created_at_ms < w.conversions_to_ms
            })
            .map(ActivityConversion::from_record)
            .collect();
        out.truncated = clicks.len() > w.limit
            || out.conversations.len() > w.limit
            || out.conversions.len() > w.limit;
        clicks.truncate(w.limit);
        out.clicks = clicks;
        out.conversations.truncate(w.limit);
        out.conversions.truncate(w.limit);
        Ok(out)
    }

    async fn cached_insights(
        &self,
        ad_account_id: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(lock(&self.insights)
            .iter()
            .filter(|((a, d), _)| a == ad_account_id && d.as_str() >= since && d.as_str() <= until)
            .map(|((_, d), rows)| (d.clone(), rows.clone()))
            .collect())
    }

    async fn cache_insights(
        &self,
        ad_account_id: &str,
        day: &str,
        rows_json: &str,
    ) -> Result<(), StoreError> {
        lock(&self.insights).insert(
            (ad_account_id.to_string(), day.to_string()),
            rows_json.to_string(),
        );
        Ok(())
    }

    async fn claim_request(
        &self,
        account_id: &str,
        key: &str,
        request_hash: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<RequestClaim, StoreError> {
        let mut requests = lock(&self.requests);
        let k = (account_id.to_string(), key.to_string());
        let claim = RequestRecord {
            request_hash: Some(request_hash.to_string()),
            claimed_at_ms: Some(now_ms),
            answer: None,
        };
        let Some(cur) = requests.get(&k) else {
            requests.insert(k, claim);
            return Ok(RequestClaim::New);
        };
        let same_body = cur.request_hash.as_deref() == Some(request_hash);
        // A running claim older than the lease, for the same body, is taken over.
        if same_body
            && cur.answer.is_none()
            && cur.claimed_at_ms.is_some_and(|c| c < now_ms - lease_ms)
        {
            requests.insert(k, claim);
            return Ok(RequestClaim::New);
        }
        Ok(match (&cur.answer, same_body) {
            (_, false) => RequestClaim::Mismatch,
            (Some((status, body)), true) => RequestClaim::Done {
                status: *status,
                body: body.clone(),
            },
            (None, true) => RequestClaim::InProgress,
        })
    }

    async fn finish_request(
        &self,
        account_id: &str,
        key: &str,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        // An upsert, as the adapter's update (no claim before it leaves no request hash).
        lock(&self.requests)
            .entry((account_id.to_string(), key.to_string()))
            .or_default()
            .answer = Some((status, body.clone()));
        Ok(())
    }

    async fn release_request(&self, account_id: &str, key: &str) -> Result<(), StoreError> {
        // A claim from the epoch is stale for every lease: the next claim takes it.
        if let Some(cur) = lock(&self.requests).get_mut(&(account_id.to_string(), key.to_string()))
            && cur.answer.is_none()
        {
            cur.claimed_at_ms = Some(0);
        }
        Ok(())
    }
}

/// Fills customer fields a later message knows and an earlier one did not.
pub(crate) fn merge_customer(cur: &mut Customer, new: &Customer) {
    if new.wa_id.is_some() {
        cur.wa_id.clone_from(&new.wa_id);
    }
    if new.user_id.is_some() {
        cur.user_id.clone_from(&new.user_id);
    }
    if new.psid.is_some() {
        cur.psid.clone_from(&new.psid);
    }
    if new.igsid.is_some() {
        cur.igsid.clone_from(&new.igsid);
    }
    if new.name.is_some() {
        cur.name.clone_from(&new.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Referral;

    fn event(id: &str, created_at_ms: i64, status: EventStatus, next: Option<i64>) -> EventRecord {
        EventRecord {
            account_id: "acct1".into(),
            event_id: id.into(),
            event_name: "Purchase".into(),
            conversation_id: None,
            ctwa_clid: "clid".into(),
            dataset_id: "ds1".into(),
            status,
            attempts: 0,
            created_at_ms,
            updated_at_ms: created_at_ms,
            event_time: created_at_ms / 1000,
            events_received: None,
            fbtrace_id: None,
            duration_ms: None,
            error: None,
            payload: "{}".into(),
            test_event_code: None,
            next_attempt_at_ms: next,
            lease_id: "lease1".into(),
            warnings: Vec::new(),
            expires_at: None,
            ad_id: None,
            waiting_for: None,
        }
    }

    fn account(id: &str, pnid: &str) -> Account {
        Account {
            id: id.into(),
            name: id.into(),
            waba_id: None,
            phone_number_ids: vec![pnid.into()],
            sinch_app_id: None,
            page_ids: Vec::new(),
            instagram_account_ids: Vec::new(),
            created_at_ms: 0,
        }
    }

    fn link(ad_account_id: &str, account_id: &str) -> AdAccountLink {
        AdAccountLink {
            ad_account_id: ad_account_id.into(),
            account_id: account_id.into(),
            page_id: None,
            linked_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn claims_are_one_shot() {
        let store = MemoryStore::new();
        let rec = event("e1", 1_000, EventStatus::InFlight, Some(2_000));
        assert!(store.claim_event(&rec).await.unwrap());
        let again = EventRecord {
            lease_id: "other".into(),
            ..rec.clone()
        };
        assert!(!store.claim_event(&again).await.unwrap());
        assert_eq!(
            store.get_event("acct1", "e1").await.unwrap(),
            Some(rec.clone())
        );
        // A test send of the same event id has its own dedup key.
        let test = EventRecord {
            test_event_code: Some("TEST1".into()),
            ..rec
        };
        assert!(store.claim_event(&test).await.unwrap());
        assert!(
            store
                .get_event("acct1", "e1|test:TEST1")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn saving_needs_the_stored_lease() {
        let store = MemoryStore::new();
        let rec = event("e1", 1_000, EventStatus::InFlight, Some(2_000));
        let delivered = EventRecord {
            status: EventStatus::Delivered,
            next_attempt_at_ms: None,
            ..rec.clone()
        };
        // No record yet: nothing to hold a lease on.
        assert!(!store.save_event(&delivered, "lease1").await.unwrap());
        store.claim_event(&rec).await.unwrap();
        assert!(!store.save_event(&delivered, "someone-else").await.unwrap());
        assert_eq!(store.get_event("acct1", "e1").await.unwrap(), Some(rec));
        assert!(store.save_event(&delivered, "lease1").await.unwrap());
        assert_eq!(
            store.get_event("acct1", "e1").await.unwrap(),
            Some(delivered)
        );
    }

    #[tokio::test]
    async fn a_lease_takes_a_due_record_out_until_it_expires() {
        let store = MemoryStore::new();
        let pending = event("e1", 1_000, EventStatus::Pending, Some(5_000));
        store.claim_event(&pending).await.unwrap();
        store
            .claim_event(&event("e2", 1_000, EventStatus::Delivered, None))
            .await
            .unwrap();
        // Due strictly after its next attempt (the index key sorts before `now`).
        assert!(store.due_events(5_000, 10, 10).await.unwrap().is_empty());
        assert_eq!(
            store.due_events(5_001, 10, 10).await.unwrap(),
            vec![pending.clone()]
        );

        assert!(store.lease_event(&pending, "lease2", 9_000).await.unwrap());
        // The old copy no longer holds the lease.
        assert!(!store.lease_event(&pending, "lease3", 9_000).await.unwrap());
        let leased = store.get_event("acct1", "e1").await.unwrap().unwrap();
        assert_eq!(
            (
                leased.status,
                leased.lease_id.as_str(),
                leased.next_attempt_at_ms
            ),
            (EventStatus::InFlight, "lease2", Some(9_000))
        );
        assert!(store.due_events(6_000, 10, 10).await.unwrap().is_empty());
        // Past the lease, the in-flight record is due again and can be taken over.
        assert_eq!(
            store.due_events(9_001, 10, 10).await.unwrap(),
            vec![leased.clone()]
        );
        assert!(store.lease_event(&leased, "lease4", 20_000).await.unwrap());

        // A settled record is never due, nor leased.
        let done = EventRecord {
            status: EventStatus::Delivered,
            next_attempt_at_ms: None,
            lease_id: "lease4".into(),
            ..leased
        };
        assert!(store.save_event(&done, "lease4").await.unwrap());
        assert!(store.due_events(i64::MAX, 10, 10).await.unwrap().is_empty());
        assert!(!store.lease_event(&done, "lease5", 30_000).await.unwrap());
    }

    #[tokio::test]
    async fn due_events_are_oldest_first_and_limited() {
        let store = MemoryStore::new();
        for (id, next) in [("a", 300), ("b", 100), ("c", 200)] {
            store
                .claim_event(&event(id, 1, EventStatus::Pending, Some(next)))
                .await
                .unwrap();
        }
        let due = store.due_events(1_000, 2, 10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
    }

    /// One account's backlog, however old, takes its share of a run and no more: the
    /// other accounts are served in turn.
    #[tokio::test]
    async fn due_events_serve_accounts_in_turn_with_a_share_each() {
        let store = MemoryStore::new();
        for n in 0..50 {
            let mut e = event(&format!("busy{n:02}"), 1, EventStatus::Pending, Some(n));
            e.account_id = "busy".into();
            store.claim_event(&e).await.unwrap();
        }
        for (acct, next) in [("quiet", 900), ("other", 800)] {
            let mut e = event(&format!("{acct}1"), 1, EventStatus::Pending, Some(next));
            e.account_id = acct.into();
            store.claim_event(&e).await.unwrap();
        }
        let due = store.due_events(1_000, 5, 3).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["busy00", "other1", "quiet1", "busy01", "busy02"]);
    }

    #[tokio::test]
    async fn list_events_pages_newest_first() {
        let store = MemoryStore::new();
        for i in 1..=5 {
            let status = if i % 2 == 0 {
                EventStatus::Failed
            } else {
                EventStatus::Delivered
            };
            store
                .claim_event(&event(&format!("e{i}"), i * 1_000, status, None))
                .await
                .unwrap();
        }
        let mut other = event("x", 9_000, EventStatus::Delivered, None);
        other.account_id = "acct2".into();
        store.claim_event(&other).await.unwrap();

        let ids = |v: &[EventRecord]| v.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>();
        let (page, next) = store.list_events("acct1", 2, None, None).await.unwrap();
        assert_eq!(ids(&page), ["e5", "e4"]);
        let next = next.expect("a full page has a cursor");
        assert_eq!(next, format!("{}#e4|e4", sortable_millis(4_000)));
        let (page, next) = store
            .list_events("acct1", 2, Some(&next), None)
            .await
            .unwrap();
        assert_eq!(ids(&page), ["e3", "e2"]);
        let (page, next) = store
            .list_events("acct1", 2, next.as_deref(), None)
            .await
            .unwrap();
        assert_eq!((ids(&page), next), (vec!["e1".to_string()], None));

        // Filtered on the status; a page that ends exactly at the end still has a cursor.
        let (page, next) = store
            .list_events("acct1", 2, None, Some(EventStatus::Failed))
            .await
            .unwrap();
        assert_eq!(ids(&page), ["e4", "e2"]);
        let (page, next) = store
            .list_events("acct1", 2, next.as_deref(), Some(EventStatus::Failed))
            .await
            .unwrap();
        assert!(page.is_empty() && next.is_none());

        assert!(matches!(
            store.list_events("acct1", 2, Some("|e4"), None).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn the_first_dataset_id_is_kept() {
        let store = MemoryStore::new();
        assert_eq!(store.get_capi("acct1").await.unwrap(), None);
        assert_eq!(
            store.set_dataset_if_absent("acct1", "ds1").await.unwrap(),
            "ds1"
        );
        assert_eq!(
            store.set_dataset_if_absent("acct1", "ds2").await.unwrap(),
            "ds1"
        );
        // A save without a dataset id keeps the stored one.
        let config = CapiSettings {
            lead_event_enabled: true,
            ..CapiSettings::default()
        };
        store.put_capi("acct1", &config).await.unwrap();
        let stored = store.get_capi("acct1").await.unwrap().unwrap();
        assert_eq!(stored.dataset_id.as_deref(), Some("ds1"));
        assert!(stored.lead_event_enabled);
    }

    #[tokio::test]
    async fn ad_accounts_belong_to_one_account() {
        let store = MemoryStore::new();
        store
            .link_ad_account(&link("act_1", "acct1"))
            .await
            .unwrap();
        store
            .link_ad_account(&link("act_1", "acct1"))
            .await
            .unwrap();
        assert!(matches!(
            store.link_ad_account(&link("act_1", "acct2")).await,
            Err(StoreError::Conflict(_))
        ));
        // All or nothing: the taken ad account leaves no account behind.
        let res = store
            .create_account_with_ad_accounts(
                &account("acct2", "pn2"),
                &[link("act_2", "acct2"), link("act_1", "acct2")],
            )
            .await;
        assert!(matches!(res, Err(StoreError::Conflict(_))));
        assert!(store.get_account("acct2").await.unwrap().is_none());
        assert!(store.ad_account("act_2").await.unwrap().is_none());
        store
            .create_account_with_ad_accounts(&account("acct2", "pn2"), &[link("act_2", "acct2")])
            .await
            .unwrap();
        assert_eq!(
            store
                .account_for_route(&Route::PhoneNumberId("pn2".into()))
                .await
                .unwrap(),
            Some("acct2".into())
        );
        assert_eq!(
            store.ad_accounts("acct2").await.unwrap(),
            vec![link("act_2", "acct2")]
        );
    }

    #[tokio::test]
    async fn ad_stats_count_clicks_and_non_test_conversions() {
        let store = MemoryStore::new();
        let referral = Referral {
            source_id: Some("ad1".into()),
            ..Referral::default()
        };
        for (i, ad) in [(1, "ad1"), (2, "ad1"), (3, "ad2")] {
            let click = Click {
                conversation_id: "c1".into(),
                message_id: format!("m{i}"),
                channel: Channel::Cloud,
                clicked_at_ms: i,
                time_unverified: false,
                referral: Referral {
                    source_id: Some(ad.into()),
                    ..referral.clone()
                },
            };
            let rec = ClickRecord {
                account_id: "acct1".into(),
                customer_key: "k".into(),
                click,
            };
            store.record_click(&rec).await.unwrap();
        }
        let with_ad = |id: &str, status, test: Option<&str>| EventRecord {
            ad_id: Some("ad1".into()),
            test_event_code: test.map(str::to_string),
            ..event(id, 1, status, None)
        };
        for r in [
            with_ad("e1", EventStatus::Delivered, None),
            with_ad("e2", EventStatus::Failed, None),
            with_ad("e3", EventStatus::Delivered, Some("TEST1")),
        ] {
            store.claim_event(&r).await.unwrap();
        }
        assert_eq!(
            store.ad_stats("acct1", "ad1").await.unwrap(),
            AdStats {
                clicks: 2,
                conversions: 2,
                conversions_delivered: 1
            }
        );
        assert_eq!(
            store.ad_stats("acct2", "ad1").await.unwrap(),
            AdStats::default()
        );
    }

    #[tokio::test]
    async fn idempotency_keys_claim_finish_and_release() {
        let store = MemoryStore::new();
        let claim = |key: &'static str, hash: &'static str, now: i64| {
            let store = &store;
            async move {
                store
                    .claim_request("acct1", key, hash, now, 1_000)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(claim("k1", "h1", 10_000).await, RequestClaim::New);
        assert_eq!(claim("k1", "h1", 10_500).await, RequestClaim::InProgress);
        assert_eq!(claim("k1", "h2", 10_500).await, RequestClaim::Mismatch);
        // A claim past its lease is taken over.
        assert_eq!(claim("k1", "h1", 11_001).await, RequestClaim::New);
        let body = serde_json::json!({"id": "1"});
        store
            .finish_request("acct1", "k1", 201, &body)
            .await
            .unwrap();
        assert_eq!(
            claim("k1", "h1", 99_000).await,
            RequestClaim::Done { status: 201, body }
        );
        // A released key is taken by the next claim at once.
        assert_eq!(claim("k2", "h1", 10_000).await, RequestClaim::New);
        store.release_request("acct1", "k2").await.unwrap();
        assert_eq!(claim("k2", "h1", 10_001).await, RequestClaim::New);
        store.release_request("acct1", "none").await.unwrap();
    }

    #[tokio::test]
    async fn connection_updates_are_conditional_on_the_token_version() {
        let store = MemoryStore::new();
        let c = MetaConnection {
            account_id: "acct1".into(),
            status: ConnectionStatus::Connected,
            token_type: None,
            scopes: Vec::new(),
            waba_id: None,
            waba_ids: Vec::new(),
            expires_at: Some(100),
            connected_at_ms: 0,
            refreshed_at_ms: None,
            last_error: None,
            secret_id: "s".into(),
            token_version: 1,
        };
        assert!(!store.update_connection(&c, 1).await.unwrap());
        store.put_connection(&c).await.unwrap();
        let refreshed = MetaConnection {
            token_version: 2,
            ..c.clone()
        };
        assert!(store.update_connection(&refreshed, 1).await.unwrap());
        assert!(!store.update_connection(&c, 1).await.unwrap());
        assert_eq!(
            store.connections_expiring_before(100).await.unwrap(),
            vec![]
        );
        assert_eq!(
            store.connections_expiring_before(101).await.unwrap(),
            vec![refreshed]
        );
    }
}
