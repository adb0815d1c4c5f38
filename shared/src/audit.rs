//! Audit records: who did what to which target, and when. One generic shape for every
//! operator and key action (route links, moves, removals and verifications today), kept
//! in the data table under the target (`AUDIT#<target>` / `<ms15>#<id>`), newest first
//! when read. A record is written in the same transaction as the change it describes,
//! so there is no change without its record.

use crate::store::StoreError;
use async_trait::async_trait;
use serde::Serialize;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Random, so two records of one millisecond are two items.
    pub id: String,
    /// Who: `operator:<key id>`, `key:<key id>`, or the system step (`connect:<account>`).
    pub actor: String,
    /// What: `route.link`, `route.move`, `route.remove`, `route.verify`, ...
    pub action: String,
    /// On what: a route key (`pnid:<id>`), a key id, an account id.
    pub target: String,
    /// The action's particulars (from/to account, status, Meta's answer).
    pub detail: serde_json::Value,
    /// When (millis).
    pub at_ms: i64,
}

impl AuditRecord {
    pub fn new(
        actor: impl Into<String>,
        action: &str,
        target: impl Into<String>,
        detail: serde_json::Value,
        at_ms: i64,
    ) -> Self {
        let mut b = [0u8; 8];
        // A clock-derived id if the system's randomness fails (never fatal for a record).
        let id = match getrandom::fill(&mut b) {
            Ok(()) => hex::encode(b),
            Err(_) => format!("{at_ms:x}"),
        };
        Self {
            id,
            actor: actor.into(),
            action: action.to_string(),
            target: target.into(),
            detail,
            at_ms,
        }
    }

    /// The answer's shape: `at` as RFC 3339.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "at": crate::time::rfc3339_millis(self.at_ms),
        })
    }
}

/// The audit trail. Writes that change something carry their record in their own
/// transaction (see [`crate::store::RouteStore`]); this port reads the trail and writes
/// records of actions with nothing else to write.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn record(&self, rec: &AuditRecord) -> Result<(), StoreError>;
    /// The target's records, newest first, up to `limit`.
    async fn audit_trail(&self, target: &str, limit: usize)
    -> Result<Vec<AuditRecord>, StoreError>;
}
