//! The Connections port: each account's Meta connection (metadata, never the token).

use super::*;

fn connection_from(item: &Item) -> Result<MetaConnection, StoreError> {
    let status = req_s(item, "status")?;
    let scopes = get_strings(item, "scopes");
    Ok(MetaConnection {
        account_id: req_s(item, "account_id")?,
        status: ConnectionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        token_type: get_s(item, "token_type"),
        scopes,
        waba_id: get_s(item, "waba_id"),
        waba_ids: get_strings(item, "waba_ids"),
        expires_at: get_n(item, "expires_at_s"),
        connected_at_ms: get_n(item, "connected_at").unwrap_or_default(),
        refreshed_at_ms: get_n(item, "refreshed_at"),
        last_error: get_s(item, "last_error"),
        secret_id: req_s(item, "secret_id")?,
        token_version: get_n(item, "token_version").unwrap_or_default(),
    })
}

const CONNECTIONS_INDEX_PK: &str = "META_CONNECTIONS";

fn connection_item(c: &MetaConnection) -> Item {
    let mut item = key(format!("ACCT#{}", c.account_id), "META_CONNECTION");
    item.insert("account_id".into(), s(&c.account_id));
    item.insert("status".into(), s(c.status.as_str()));
    if let Some(t) = &c.token_type {
        item.insert("token_type".into(), s(t));
    }
    item.insert(
        "scopes".into(),
        AttributeValue::L(c.scopes.iter().map(s).collect()),
    );
    if let Some(w) = &c.waba_id {
        item.insert("waba_id".into(), s(w));
    }
    if !c.waba_ids.is_empty() {
        item.insert(
            "waba_ids".into(),
            AttributeValue::L(c.waba_ids.iter().map(s).collect()),
        );
    }
    if let Some(e) = c.expires_at {
        // Not `expires_at`: that name is the table's TTL attribute.
        item.insert("expires_at_s".into(), n(e));
        item.insert("gsi2pk".into(), s(CONNECTIONS_INDEX_PK));
        item.insert(
            "gsi2sk".into(),
            s(format!("{:015}#{}", e.max(0), c.account_id)),
        );
    }
    item.insert("connected_at".into(), n(c.connected_at_ms));
    if let Some(r) = c.refreshed_at_ms {
        item.insert("refreshed_at".into(), n(r));
    }
    if let Some(e) = &c.last_error {
        item.insert("last_error".into(), s(e));
    }
    item.insert("secret_id".into(), s(&c.secret_id));
    item.insert("token_version".into(), n(c.token_version));
    item
}

#[async_trait]
impl Connections for DynamoData {
    async fn put_connection(&self, c: &MetaConnection) -> Result<(), StoreError> {
        self.put(connection_item(c)).await
    }

    async fn update_connection(
        &self,
        c: &MetaConnection,
        expected: i64,
    ) -> Result<bool, StoreError> {
        put_if(&self.client, &self.table, connection_item(c), |p| {
            p.condition_expression("token_version = :v")
                .expression_attribute_values(":v", n(expected))
        })
        .await
    }

    async fn get_connection(&self, account_id: &str) -> Result<Option<MetaConnection>, StoreError> {
        self.get(format!("ACCT#{account_id}"), "META_CONNECTION")
            .await?
            .map(|i| connection_from(&i))
            .transpose()
    }

    async fn connections_expiring_before(
        &self,
        before: i64,
    ) -> Result<Vec<MetaConnection>, StoreError> {
        let items = self
            .pages(usize::MAX, |query| {
                query
                    .index_name("gsi2")
                    .key_condition_expression("gsi2pk = :p AND gsi2sk < :t")
                    .expression_attribute_values(":p", s(CONNECTIONS_INDEX_PK))
                    .expression_attribute_values(":t", s(format!("{:015}", before.max(0))))
            })
            .await?;
        items.iter().map(connection_from).collect()
    }
}
