//! The Inbox port on the inbox table.

use super::*;

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
