//! In-memory fakes of the storage ports, for unit tests of the handlers and domain.
//! They follow the same rules as the DynamoDB adapters (one-shot, idempotent writes).

use super::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Per conversation id: (clicked_at, message id) -> click.
type ClickHistory = HashMap<String, BTreeMap<(i64, String), ClickRecord>>;

#[derive(Default)]
pub struct MemoryStore {
    inbox: Mutex<BTreeMap<String, InboxItem>>,
    accounts: Mutex<HashMap<String, Account>>,
    routes: Mutex<HashMap<Route, String>>,
    keys: Mutex<HashMap<String, ApiKeyRecord>>,
    conversations: Mutex<HashMap<String, Conversation>>,
    clicks: Mutex<ClickHistory>,
    pub unrouted: Mutex<Vec<InboxItem>>,
    connections: Mutex<HashMap<String, MetaConnection>>,
    pub automatic_events: Mutex<Vec<(String, AutomaticEvent)>>,
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
        let mut accounts = lock(&self.accounts);
        let mut routes = lock(&self.routes);
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
        for r in account.routes() {
            routes.insert(r, account.id.clone());
        }
        accounts.insert(account.id.clone(), account.clone());
        Ok(())
    }
    async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        Ok(lock(&self.accounts).get(id).cloned())
    }
    async fn account_for_route(&self, route: &Route) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.routes).get(route).cloned())
    }
    async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut keys = lock(&self.keys);
        if keys.contains_key(&key.hash) {
            return Err(StoreError::Conflict("api key exists".into()));
        }
        keys.insert(key.hash.clone(), key.clone());
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
    async fn retire_api_key(
        &self,
        hash: &str,
        revoked_at_ms: Option<i64>,
        expires_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut keys = lock(&self.keys);
        let k = keys
            .get_mut(hash)
            .ok_or_else(|| StoreError::Conflict("no such api key".into()))?;
        if revoked_at_ms.is_some() {
            k.revoked = true;
            k.revoked_at_ms = revoked_at_ms;
        }
        if let Some(x) = expires_at_ms
            && k.expires_at_ms.is_none_or(|e| e > x)
        {
            k.expires_at_ms = Some(x);
        }
        Ok(())
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
        let replace = match &conv.first_touch {
            None => true,
            Some(cur) => click_precedes(
                ft.clicked_at_ms,
                &ft.message_id,
                cur.clicked_at_ms,
                &cur.message_id,
            ),
        };
        if replace {
            conv.first_touch = Some(ft.clone());
            Ok(FirstTouchOutcome::Captured)
        } else {
            Ok(FirstTouchOutcome::Kept)
        }
    }

    async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        Ok(lock(&self.conversations).get(id).cloned())
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

    async fn record_unrouted(&self, item: &InboxItem) -> Result<(), StoreError> {
        let mut u = lock(&self.unrouted);
        if !u.iter().any(|i| i.id == item.id) {
            u.push(item.clone());
        }
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

/// Fills customer fields a later message knows and an earlier one did not.
pub(crate) fn merge_customer(cur: &mut Customer, new: &Customer) {
    if new.wa_id.is_some() {
        cur.wa_id.clone_from(&new.wa_id);
    }
    if new.user_id.is_some() {
        cur.user_id.clone_from(&new.user_id);
    }
    if new.name.is_some() {
        cur.name.clone_from(&new.name);
    }
}
