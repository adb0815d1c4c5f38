//! The Inbox port on the inbox table, and the one definition of an inbox item's
//! attributes: their names ([`attr`]) and their mapping, written once ([`write_fields`])
//! and read once ([`read_fields`]), for both forms the item takes: the SDK's
//! `AttributeValue` map (the webhook's PutItem) and the stream's DynamoDB JSON image
//! (`{"S": "..."}`, `{"N": "..."}`: the capture's `NewImage`).

use super::*;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The attribute names of an inbox item.
pub mod attr {
    /// The channel-prefixed id: the table's partition key.
    pub const ID: &str = "pk";
    pub const KIND: &str = "kind";
    pub const CHANNEL: &str = "channel";
    pub const ROUTE: &str = "route";
    pub const WABA_ID: &str = "waba_id";
    pub const PAYLOAD: &str = "payload";
    pub const CONTACT: &str = "contact";
    /// Millis.
    pub const RECEIVED_AT: &str = "received_at";
    /// The table's TTL attribute, unix seconds.
    pub const EXPIRES_AT: &str = "expires_at";
}

/// One attribute's value: a string (`S`) or a number (`N`).
enum Field<'a> {
    S(Cow<'a, str>),
    N(i64),
}

/// Hands every attribute of `item` to `put`: the one writer of the schema.
fn write_fields<'a>(item: &'a InboxItem, mut put: impl FnMut(&'static str, Field<'a>)) {
    let text = |v: &'a str| Field::S(Cow::Borrowed(v));
    put(attr::ID, text(&item.id));
    put(attr::KIND, text(item.kind.as_str()));
    put(attr::CHANNEL, text(item.channel.as_str()));
    put(attr::ROUTE, Field::S(Cow::Owned(item.route.key())));
    if let Some(w) = &item.waba_id {
        put(attr::WABA_ID, text(w));
    }
    put(attr::PAYLOAD, text(&item.payload));
    if let Some(c) = &item.contact {
        put(attr::CONTACT, text(c));
    }
    put(attr::RECEIVED_AT, Field::N(item.received_at_ms));
    put(attr::EXPIRES_AT, Field::N(item.expires_at));
}

/// A form an inbox item is read from.
trait Fields {
    /// A string attribute; absent or of another type is `None`.
    fn s(&self, k: &str) -> Option<&str>;
    /// A number attribute; absent, of another type or not an integer is `None`.
    fn n(&self, k: &str) -> Option<i64>;
}

impl Fields for Item {
    fn s(&self, k: &str) -> Option<&str> {
        match self.get(k) {
            Some(AttributeValue::S(v)) => Some(v),
            _ => None,
        }
    }
    fn n(&self, k: &str) -> Option<i64> {
        match self.get(k) {
            Some(AttributeValue::N(v)) => v.parse().ok(),
            _ => None,
        }
    }
}

impl Fields for Map<String, Value> {
    fn s(&self, k: &str) -> Option<&str> {
        self.get(k)?.get("S")?.as_str()
    }
    fn n(&self, k: &str) -> Option<i64> {
        self.get(k)?.get("N")?.as_str()?.parse().ok()
    }
}

/// The one reader of the schema; the error says what is missing or unknown.
fn read_fields(f: &impl Fields) -> Result<InboxItem, String> {
    let req = |k: &str| f.s(k).ok_or_else(|| format!("missing {k}"));
    let kind = req(attr::KIND)?;
    let channel = req(attr::CHANNEL)?;
    let route = req(attr::ROUTE)?;
    Ok(InboxItem {
        id: req(attr::ID)?.to_string(),
        kind: InboxKind::parse(kind).ok_or_else(|| format!("kind {kind}"))?,
        channel: Channel::parse(channel).ok_or_else(|| format!("channel {channel}"))?,
        route: Route::parse(route).ok_or_else(|| format!("route {route}"))?,
        waba_id: f.s(attr::WABA_ID).map(str::to_string),
        payload: req(attr::PAYLOAD)?.to_string(),
        contact: f.s(attr::CONTACT).map(str::to_string),
        received_at_ms: f.n(attr::RECEIVED_AT).unwrap_or_default(),
        expires_at: f.n(attr::EXPIRES_AT).unwrap_or_default(),
    })
}

/// The inbox item as the SDK writes it.
pub fn inbox_item_to_attrs(item: &InboxItem) -> Item {
    let mut m = Item::new();
    write_fields(item, |k, v| {
        let v = match v {
            Field::S(v) => s(v),
            Field::N(v) => n(v),
        };
        m.insert(k.into(), v);
    });
    m
}

/// The inbox item of an SDK item (a read of the inbox table).
pub fn inbox_item_from_attrs(item: &Item) -> Result<InboxItem, StoreError> {
    read_fields(item).map_err(StoreError::Corrupt)
}

/// The inbox item of a stream image (DynamoDB JSON); the error says what is wrong.
pub fn inbox_item_from_image(img: &Map<String, Value>) -> Result<InboxItem, String> {
    read_fields(img)
}

/// The stream image of an inbox item, as DynamoDB writes it (for tests and fixtures).
#[cfg(any(test, feature = "test-support"))]
pub fn inbox_item_to_image(item: &InboxItem) -> Map<String, Value> {
    let mut m = Map::new();
    write_fields(item, |k, v| {
        let v = match v {
            Field::S(v) => serde_json::json!({ "S": v }),
            Field::N(v) => serde_json::json!({ "N": v.to_string() }),
        };
        m.insert(k.into(), v);
    });
    m
}

#[async_trait]
impl Inbox for DynamoInbox {
    async fn put_once(&self, item: &InboxItem) -> Result<bool, StoreError> {
        put_if_absent(&self.client, &self.table, inbox_item_to_attrs(item)).await
    }
}

#[async_trait]
impl crate::replay::InboxReader for DynamoInbox {
    async fn get(&self, id: &str) -> Result<Option<InboxItem>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::ID, s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        out.item.as_ref().map(inbox_item_from_attrs).transpose()
    }

    /// A Scan page: the inbox has no time index (its only reader is the stream); a
    /// replay by time range reads it all, a page per request.
    async fn received_between(
        &self,
        since_ms: i64,
        until_ms: i64,
        cursor: Option<&str>,
        page: u32,
    ) -> Result<crate::replay::InboxPage, StoreError> {
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(page.clamp(1, 10_000) as i32)
            .filter_expression("#at BETWEEN :since AND :until")
            .expression_attribute_names("#at", attr::RECEIVED_AT)
            .expression_attribute_values(":since", n(since_ms))
            .expression_attribute_values(":until", n(until_ms))
            .set_exclusive_start_key(cursor.map(|c| Item::from([(attr::ID.to_string(), s(c))])))
            .send()
            .await
            .map_err(backend)?;
        let mut items = Vec::new();
        for it in out.items.unwrap_or_default() {
            match inbox_item_from_attrs(&it) {
                Ok(i) => items.push(i),
                // Unreadable items are the stream's to report (capture skips them).
                Err(e) => tracing::warn!(error = %e, "unreadable inbox item skipped by the replay"),
            }
        }
        Ok(crate::replay::InboxPage {
            items,
            scanned: out.scanned_count.max(0) as u64,
            next: out.last_evaluated_key.and_then(|k| match k.get(attr::ID) {
                Some(AttributeValue::S(v)) => Some(v.clone()),
                _ => None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(waba: bool) -> InboxItem {
        InboxItem {
            id: "wa:wamid.1".into(),
            kind: InboxKind::Message,
            channel: Channel::Cloud,
            route: Route::PhoneNumberId("1204727649384372".into()),
            waba_id: waba.then(|| "102290129340398".into()),
            payload: r#"{"id":"wamid.1"}"#.into(),
            contact: waba.then(|| r#"{"wa_id":"16505551234"}"#.into()),
            received_at_ms: 1_750_275_992_000,
            expires_at: 1_750_880_792,
        }
    }

    #[test]
    fn both_forms_carry_the_same_attributes_and_read_back() {
        for it in [item(true), item(false)] {
            let attrs = inbox_item_to_attrs(&it);
            let image = inbox_item_to_image(&it);
            let mut a: Vec<&String> = attrs.keys().collect();
            let mut b: Vec<&String> = image.keys().collect();
            a.sort();
            b.sort();
            assert_eq!(a, b);
            assert_eq!(inbox_item_from_attrs(&attrs).unwrap(), it);
            assert_eq!(inbox_item_from_image(&image).unwrap(), it);
        }
    }

    #[test]
    fn the_attribute_names_are_the_stored_ones() {
        let image = serde_json::to_value(inbox_item_to_image(&item(true))).unwrap();
        assert_eq!(image["pk"]["S"], "wa:wamid.1");
        assert_eq!(image["kind"]["S"], "message");
        assert_eq!(image["route"]["S"], "pnid:1204727649384372");
        assert_eq!(image["received_at"]["N"], "1750275992000");
        assert_eq!(image["expires_at"]["N"], "1750880792");
        let attrs = inbox_item_to_attrs(&item(false));
        assert!(!attrs.contains_key("waba_id") && !attrs.contains_key("contact"));
    }

    #[test]
    fn a_missing_or_unknown_attribute_is_named() {
        let mut image = inbox_item_to_image(&item(true));
        image.remove("payload");
        assert_eq!(
            inbox_item_from_image(&image).unwrap_err(),
            "missing payload"
        );
        image.insert("kind".into(), serde_json::json!({"S": "nope"}));
        assert_eq!(inbox_item_from_image(&image).unwrap_err(), "kind nope");
        let mut attrs = inbox_item_to_attrs(&item(true));
        attrs.remove("pk");
        assert!(
            matches!(inbox_item_from_attrs(&attrs), Err(StoreError::Corrupt(m)) if m == "missing pk")
        );
    }
}
