//! Messenger and Instagram Direct in the simulator: Facebook Pages and their linked
//! Instagram professional accounts (registered through `POST /_sim/pages`), their Graph
//! objects (`GET /{page_id}`, `GET /{ig_id}`), and the per-channel `user_data` checks
//! of the Conversions API for Business Messaging.
//!
//! Sources: Meta's "Conversions API for Business Messaging" onboarding guide
//! (<https://developers.facebook.com/docs/marketing-api/conversions-api/business-messaging>)
//! gives the three channels' keys and permissions
//! (`page_id` + `page_scoped_user_id` with `page_events` for Messenger,
//! `instagram_business_account_id` + `ig_sid` with `instagram_manage_events` for
//! Instagram, `partner_agent` at the top level of the body); the subcodes 2804064,
//! 2804075, 2804079 and 2804133 are reported by practitioners, not documented by Meta.
//! Where Meta's answer is unknown (a key of another channel, a missing Messenger key,
//! `partner_agent` inside an event) the simulator refuses with errors of its own, each
//! marked INVENTED below.

use crate::marketing::top_level_fields;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// The permission a Page's dataset and its Messenger events require.
pub const PAGE_EVENTS: &str = "page_events";
/// The permission an Instagram account's dataset and its events require.
pub const INSTAGRAM_MANAGE_EVENTS: &str = "instagram_manage_events";
/// The permission a WABA's dataset requires.
pub const WHATSAPP_EVENTS: &str = "whatsapp_business_manage_events";

/// Subcodes of the simulator's own refusals, where Meta's are unknown. INVENTED: no Meta
/// document and no practitioner report gives these; they sit in an unused stretch of
/// Meta's 2804xxx range so a test (or a log) can tell them apart.
pub mod invented {
    /// A Messenger event without `user_data.page_id`. INVENTED.
    pub const MISSING_PAGE_ID: i64 = 2_804_901;
    /// A Messenger event whose `user_data.page_id` is not the dataset's Page. INVENTED.
    pub const PAGE_NOT_ASSOCIATED_TO_DATASET: i64 = 2_804_902;
    /// A Messenger event without `user_data.page_scoped_user_id`. INVENTED.
    pub const MISSING_PAGE_SCOPED_USER_ID: i64 = 2_804_903;
    /// A `user_data` key of another channel (`ctwa_clid` or `ig_sid` in a Messenger
    /// event, `ctwa_clid` or `page_scoped_user_id` in an Instagram one). INVENTED.
    pub const KEY_OF_ANOTHER_CHANNEL: i64 = 2_804_904;
    /// `partner_agent` inside an event instead of at the top level of the body. INVENTED.
    pub const PARTNER_AGENT_IN_EVENT: i64 = 2_804_905;
}

/// Meta's (practitioner-reported) subcode for an Instagram event to a dataset not
/// linked to that Instagram account.
pub const NO_IG_ACCOUNT_ASSOCIATED: i64 = 2_804_133;

/// What owns a dataset, and so which channel's events it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    Waba,
    Page,
    InstagramAccount,
}

impl OwnerKind {
    /// `whatsapp_business_account`, `page` or `instagram_account`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waba => "whatsapp_business_account",
            Self::Page => "page",
            Self::InstagramAccount => "instagram_account",
        }
    }

    /// The `messaging_channel` of the events the owner's dataset takes.
    pub fn channel(self) -> &'static str {
        match self {
            Self::Waba => "whatsapp",
            Self::Page => "messenger",
            Self::InstagramAccount => "instagram",
        }
    }

    /// The permission the owner's dataset requires.
    pub fn events_scope(self) -> &'static str {
        match self {
            Self::Waba => WHATSAPP_EVENTS,
            Self::Page => PAGE_EVENTS,
            Self::InstagramAccount => INSTAGRAM_MANAGE_EVENTS,
        }
    }
}

/// Page-level permissions: `debug_token` lists the token's Pages as their `target_ids`.
pub fn is_page_scope(scope: &str) -> bool {
    scope == PAGE_EVENTS || scope.starts_with("pages_")
}

/// Instagram permissions (`instagram_basic`, `instagram_manage_messages`,
/// `instagram_manage_events`, ...): their `target_ids` are the Instagram accounts.
pub fn is_instagram_scope(scope: &str) -> bool {
    scope.starts_with("instagram_")
}

#[derive(Debug, Clone)]
pub struct Page {
    pub name: String,
    pub instagram_account_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IgAccount {
    pub username: String,
    pub page_id: String,
}

/// The Pages and Instagram professional accounts the simulator knows.
#[derive(Default)]
pub struct Messaging {
    pub pages: HashMap<String, Page>,
    pub ig_accounts: HashMap<String, IgAccount>,
}

/// A string or a number as a non-empty string (Meta's samples send ids unquoted).
pub fn id_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Meta's answer for a field a node does not have.
fn nonexisting_field(field: &str, node: &str) -> (u16, Value) {
    super::graph_error(
        400,
        100,
        None,
        "OAuthException",
        &format!("(#100) Tried accessing nonexisting field ({field}) on node type ({node})"),
    )
}

impl Messaging {
    /// `POST /_sim/pages {page_id, name?, instagram_account_id?, instagram_username?}`:
    /// registers (or replaces) a Page and its linked Instagram professional account.
    pub fn register(&mut self, req: &Value) -> Result<Value, String> {
        let page_id = id_value(&req["page_id"]).ok_or("page_id is required")?;
        let ig = match &req["instagram_account_id"] {
            Value::Null => None,
            v => Some(id_value(v).ok_or("instagram_account_id must be a non-empty id")?),
        };
        if ig.is_none() && !req["instagram_username"].is_null() {
            return Err("instagram_username needs instagram_account_id".into());
        }
        if ig.as_deref() == Some(page_id.as_str()) {
            return Err("instagram_account_id must differ from page_id".into());
        }
        if self.ig_accounts.contains_key(&page_id) {
            return Err(format!("{page_id} is an Instagram account"));
        }
        if let Some(i) = &ig {
            if self.pages.contains_key(i) {
                return Err(format!("{i} is a Page"));
            }
            if let Some(other) = self.ig_accounts.get(i).filter(|a| a.page_id != page_id) {
                // An Instagram professional account is connected to one Page.
                return Err(format!(
                    "instagram account {i} is linked to page {}",
                    other.page_id
                ));
            }
        }
        let name = req["name"].as_str().unwrap_or("Sim Page").to_string();
        let username = req["instagram_username"]
            .as_str()
            .unwrap_or("sim_business")
            .to_string();
        if let Some(old) = self
            .pages
            .get(&page_id)
            .and_then(|p| p.instagram_account_id.clone())
            .filter(|old| Some(old) != ig.as_ref())
        {
            self.ig_accounts.remove(&old);
        }
        if let Some(i) = &ig {
            self.ig_accounts.insert(
                i.clone(),
                IgAccount {
                    username: username.clone(),
                    page_id: page_id.clone(),
                },
            );
        }
        self.pages.insert(
            page_id.clone(),
            Page {
                name: name.clone(),
                instagram_account_id: ig.clone(),
            },
        );
        Ok(json!({
            "page_id": page_id,
            "name": name,
            "instagram_account_id": ig,
            "instagram_username": ig.as_ref().map(|_| username),
        }))
    }

    /// Whether `id` is a registered Page or Instagram account.
    pub fn kind_of(&self, id: &str) -> Option<OwnerKind> {
        if self.pages.contains_key(id) {
            Some(OwnerKind::Page)
        } else if self.ig_accounts.contains_key(id) {
            Some(OwnerKind::InstagramAccount)
        } else {
            None
        }
    }

    /// `GET /{page_id}?fields=`: `id` always, then the asked fields among `name` and
    /// `instagram_business_account` (absent when no account is linked, as Meta leaves
    /// out empty fields; `instagram_business_account{id,username}` expands it).
    pub fn page_view(&self, id: &str, fields: &str) -> (u16, Value) {
        let Some(p) = self.pages.get(id) else {
            return unknown_object(id);
        };
        let fields = if fields.trim().is_empty() {
            "id,name"
        } else {
            fields
        };
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        for f in top_level_fields(fields) {
            let (name, sub) = match f.split_once('{') {
                Some((n, rest)) => (n.trim(), rest.strip_suffix('}').unwrap_or(rest)),
                None => (f, "id"),
            };
            match name {
                "id" => {}
                "name" => {
                    out.insert("name".into(), json!(p.name));
                }
                "instagram_business_account" => {
                    let Some(ig) = &p.instagram_account_id else {
                        continue;
                    };
                    match self.ig_fields(ig, sub) {
                        Ok(v) => {
                            out.insert(name.into(), v);
                        }
                        Err(e) => return e,
                    }
                }
                other => return nonexisting_field(other, "Page"),
            }
        }
        (200, Value::Object(out))
    }

    /// `GET /{ig_id}?fields=`: `id` always, then `username` if asked (default both).
    pub fn ig_view(&self, id: &str, fields: &str) -> (u16, Value) {
        let fields = if fields.trim().is_empty() {
            "id,username"
        } else {
            fields
        };
        match self.ig_fields(id, fields) {
            Ok(v) => (200, v),
            Err(e) => e,
        }
    }

    fn ig_fields(&self, id: &str, fields: &str) -> Result<Value, (u16, Value)> {
        let Some(a) = self.ig_accounts.get(id) else {
            return Err(unknown_object(id));
        };
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        for f in top_level_fields(fields) {
            match f {
                "id" => {}
                "username" => {
                    out.insert("username".into(), json!(a.username));
                }
                other => return Err(nonexisting_field(other, "IGUser")),
            }
        }
        Ok(Value::Object(out))
    }
}

/// Meta's answer for an object that does not exist or the token cannot see (100/33).
pub fn unknown_object(id: &str) -> (u16, Value) {
    super::graph_error(
        400,
        100,
        Some(33),
        "GraphMethodException",
        &format!(
            "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        ),
    )
}

/// Why one event is refused: the subcode, Meta's `error_user_title`, and the detail
/// the simulator adds to `error_user_msg`.
#[derive(Debug)]
pub struct Refusal {
    pub subcode: i64,
    pub title: String,
    pub detail: Option<String>,
}

fn refuse(subcode: i64, title: &str) -> Refusal {
    Refusal {
        subcode,
        title: title.to_string(),
        detail: None,
    }
}

fn refuse_because(subcode: i64, title: &str, detail: String) -> Refusal {
    Refusal {
        subcode,
        title: title.to_string(),
        detail: Some(detail),
    }
}

/// Whether `v` carries `key` with a value (a JSON `null` counts as absent).
fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// The checks of one event that depend on its channel and on the dataset's owner
/// (`owner`, of kind `kind`). The event's `messaging_channel` is already known to be
/// one of the three.
pub fn check_event(e: &Value, kind: OwnerKind, owner: &str) -> Result<(), Refusal> {
    if present(e, "partner_agent") {
        // INVENTED: Meta's samples put partner_agent beside `data`, never in an event;
        // its answer to one inside an event is unknown.
        return Err(refuse_because(
            invented::PARTNER_AGENT_IN_EVENT,
            "partner_agent goes at the top level of the request",
            "send partner_agent beside data, not inside an event".into(),
        ));
    }
    let channel = e["messaging_channel"].as_str().unwrap_or_default();
    if channel != kind.channel() {
        if channel == "instagram" {
            // Practitioner-reported: an Instagram event to a dataset no IG account is
            // linked to.
            return Err(refuse_because(
                NO_IG_ACCOUNT_ASSOCIATED,
                "No IG Account Associated To Dataset",
                format!("the dataset belongs to a {}", kind.as_str()),
            ));
        }
        // INVENTED use of a real subcode: Meta's answer to a Messenger event sent to a
        // WABA's dataset (and the like) is unknown; the simulator answers the subcode
        // of a wrong messaging_channel.
        return Err(refuse_because(
            2_804_050,
            "Messaging Event Invalid Action Source or Messaging Channel",
            format!(
                "messaging_channel {channel} does not match the dataset's owner (a {}, channel {})",
                kind.as_str(),
                kind.channel()
            ),
        ));
    }
    let u = &e["user_data"];
    match kind {
        OwnerKind::Waba => check_whatsapp(u),
        OwnerKind::Page => check_messenger(u, owner),
        OwnerKind::InstagramAccount => check_instagram(u, owner),
    }
}

/// A `user_data` key of another channel. INVENTED: Meta's answer is unknown.
fn foreign_key(u: &Value, keys: &[&str], channel: &str) -> Result<(), Refusal> {
    match keys.iter().find(|k| present(u, k)) {
        Some(k) => Err(refuse_because(
            invented::KEY_OF_ANOTHER_CHANNEL,
            &format!("Messaging Event Invalid Key {k} For Messaging Channel {channel}"),
            format!("{k} belongs to another messaging_channel"),
        )),
        None => Ok(()),
    }
}

/// WhatsApp: the WABA and a click id Meta knows (the simulator treats ids that start
/// with INVALID as unknown).
fn check_whatsapp(u: &Value) -> Result<(), Refusal> {
    if u["whatsapp_business_account_id"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err(refuse(
            2_804_019,
            "Messaging Event Missing WhatsApp Business Account Id",
        ));
    }
    if u["ctwa_clid"]
        .as_str()
        .is_none_or(|c| c.is_empty() || c.starts_with("INVALID"))
    {
        return Err(refuse(2_804_087, "Messaging Event Invalid Ctwa Clid"));
    }
    Ok(())
}

/// Messenger: `page_id` (the dataset's Page) and `page_scoped_user_id`; no WhatsApp or
/// Instagram customer key.
fn check_messenger(u: &Value, page: &str) -> Result<(), Refusal> {
    foreign_key(u, &["ctwa_clid", "ig_sid"], "messenger")?;
    let Some(p) = id_value(&u["page_id"]) else {
        // INVENTED: Meta's subcode for a missing page_id is unknown.
        return Err(refuse(invented::MISSING_PAGE_ID, "Missing page_id"));
    };
    if p != page {
        // INVENTED: Meta's answer to another Page's id is unknown.
        return Err(refuse_because(
            invented::PAGE_NOT_ASSOCIATED_TO_DATASET,
            "No Page Associated To Dataset",
            format!("page_id {p} is not the dataset's Page"),
        ));
    }
    if id_value(&u["page_scoped_user_id"]).is_none() {
        // INVENTED: Meta's subcode for a missing PSID is unknown.
        return Err(refuse(
            invented::MISSING_PAGE_SCOPED_USER_ID,
            "Missing page_scoped_user_id",
        ));
    }
    Ok(())
}

/// Instagram: `instagram_business_account_id` (the dataset's account) and `ig_sid`; no
/// WhatsApp or Messenger customer key, no `client_ip_address` / `client_user_agent`.
fn check_instagram(u: &Value, account: &str) -> Result<(), Refusal> {
    if let Some(k) = ["client_ip_address", "client_user_agent"]
        .iter()
        .find(|k| present(u, k))
    {
        // Practitioner-reported.
        return Err(refuse_because(
            2_804_064,
            "Messaging Event Invalid Argument",
            format!("{k} is not taken in an instagram event"),
        ));
    }
    foreign_key(u, &["ctwa_clid", "page_scoped_user_id"], "instagram")?;
    let Some(a) = id_value(&u["instagram_business_account_id"]) else {
        // Practitioner-reported.
        return Err(refuse(2_804_079, "Missing IG Account ID"));
    };
    if a != account {
        // Practitioner-reported subcode for a dataset not linked to the IG account.
        return Err(refuse_because(
            NO_IG_ACCOUNT_ASSOCIATED,
            "No IG Account Associated To Dataset",
            format!("instagram_business_account_id {a} is not the dataset's account"),
        ));
    }
    if id_value(&u["ig_sid"]).is_none() {
        // Practitioner-reported.
        return Err(refuse(2_804_075, "Missing ig_sid"));
    }
    Ok(())
}
