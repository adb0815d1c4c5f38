//! Load with accounting: a realistic mix of signed Meta webhooks of the three channels
//! (several accounts, each with its own phone number id, Facebook Page and Instagram
//! account, several customers each). WhatsApp Cloud API deliveries: text, image,
//! button, interactive messages and status updates, a share with Click-to-WhatsApp
//! referrals. Messenger (`object: "page"`) and Instagram (`object: "instagram"`)
//! deliveries: text, attachment and quick-reply messages, a share with an ad's
//! referral (the click), a few with a link's referral (no ad: no click), some with
//! several events, echoes of the business's own messages and read / delivery receipts
//! (acknowledged, never stored). A share of exact re-sends. Posted concurrently over
//! loopback like Meta does (a non-200 answer is retried), then the tables read back,
//! every channel by the same rules: every unique message in the inbox once, every
//! referral a click once on its own customer's conversation, every conversation's first
//! touch its earliest attributable click (timestamp, then message id:
//! `click_precedes`), every last click credited right. Figures per channel.
//!
//! Used by `ctwa-loadtest` (scripts/loadtest.sh), tests/load.rs and tests/faults.rs;
//! [`LocalState`], [`envelope`] and [`latency_ms`] by `ctwa-load` too.

use aws_sdk_dynamodb::types::AttributeValue;
use ctwa_shared::domain::{Account, Channel, Route, conversation_id, igsid_key, psid_key};
use ctwa_shared::signature::sign_meta;
use ctwa_shared::store::dynamo::DynamoData;
use ctwa_shared::store::{
    Accounts, AuditRecord, RouteRecord, RouteStatus, RouteStore, StoreError, click_precedes,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The state file of a running local stack (`.ctwa/local.json`): its base URL, keys,
/// secrets and table names.
#[derive(Debug, Clone)]
pub struct LocalState {
    path: String,
    value: Value,
}

impl LocalState {
    pub fn read(path: &str) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("{path}: {e} (start the local stack first: scripts/local.sh)"))?;
        Ok(Self {
            path: path.to_string(),
            value: serde_json::from_slice(&bytes).map_err(|e| e.to_string())?,
        })
    }

    /// The text of `key`.
    pub fn get(&self, key: &str) -> Result<String, String> {
        self.value[key]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("{key} missing in {}", self.path))
    }
}

/// The `p` quantile (0 to 1, nearest rank) of `sorted` (ascending), to 0.01; 0 for none.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i.min(sorted.len() - 1)] * 100.0).round() / 100.0
}

/// `{"p50", "p99", "max"}` of latencies (ms, ascending).
pub fn latency_ms(sorted: &[f64]) -> Value {
    json!({"p50": percentile(sorted, 0.5), "p99": percentile(sorted, 0.99), "max": percentile(sorted, 1.0)})
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Webhooks posted, re-sends included.
    pub webhooks: usize,
    pub accounts: usize,
    /// Customers per account and channel (the same phone numbers write to every
    /// account; PSIDs and IGSIDs are scoped to their Page / Instagram account, as Meta's are).
    pub customers: usize,
    /// Share of the posts that are exact re-sends of an earlier webhook (same bytes).
    pub duplicate_share: f64,
    /// Share of the messages that carry an ad's referral (Click-to-WhatsApp,
    /// -Messenger, -Instagram Direct).
    pub referral_share: f64,
    /// Share of the unique webhooks that are Messenger deliveries (`object: "page"`).
    pub messenger_share: f64,
    /// Share of the unique webhooks that are Instagram deliveries (`object: "instagram"`).
    pub instagram_share: f64,
    /// Share of the unique webhooks that hold no customer message: WhatsApp status
    /// updates, Messenger / Instagram echoes and receipts.
    pub status_share: f64,
    /// Share of the message webhooks that carry several messages (two on WhatsApp, two
    /// or three events on Messenger / Instagram).
    pub two_message_share: f64,
    /// Message timestamps spread over this many seconds (small: ties happen).
    pub time_window_secs: i64,
    pub concurrency: usize,
    pub seed: u64,
}

impl Plan {
    pub fn new(webhooks: usize) -> Self {
        Self {
            webhooks,
            accounts: 5,
            customers: 400,
            duplicate_share: 0.10,
            referral_share: 0.30,
            messenger_share: 0.20,
            instagram_share: 0.20,
            status_share: 0.10,
            two_message_share: 0.08,
            time_window_secs: 90,
            concurrency: 32,
            seed: ctwa_shared::time::now_millis() as u64,
        }
    }
}

/// Where to send and what to read back.
#[derive(Clone)]
pub struct Target {
    pub base_url: String,
    pub app_secret: String,
    pub inbox_table: String,
    pub data_table: String,
    /// Creates the accounts and reads the tables: straight to DynamoDB, never through a
    /// fault proxy.
    pub dynamodb: aws_sdk_dynamodb::Client,
}

/// SplitMix64: deterministic for a seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The channels of a workload, in the order figures are reported.
const CHANNELS: [Channel; 3] = [Channel::Cloud, Channel::Messenger, Channel::Instagram];

/// A channel's name in the report.
fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Cloud | Channel::Sinch => "whatsapp",
        Channel::Messenger => "messenger",
        Channel::Instagram => "instagram",
    }
}

/// An account of the load: its phone number id, Facebook Page and Instagram account,
/// each linked as its route.
#[derive(Debug, Clone)]
pub struct LoadAccount {
    pub id: String,
    pub phone_number_id: String,
    pub page_id: String,
    pub instagram_account_id: String,
}

impl LoadAccount {
    /// The id a message of `channel` comes to (the conversation's business id).
    fn business_id(&self, channel: Channel) -> &str {
        match channel {
            Channel::Messenger => &self.page_id,
            Channel::Instagram => &self.instagram_account_id,
            Channel::Cloud | Channel::Sinch => &self.phone_number_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Must,
    May,
    Never,
}

/// One customer message of the workload.
#[derive(Debug, Clone)]
struct Msg {
    channel: Channel,
    /// The wamid, or the Messenger / Instagram `mid`.
    id: String,
    account: usize,
    /// The wa_id, PSID or IGSID.
    sender: String,
    /// When the customer sent it (WhatsApp's are whole seconds).
    ts_ms: i64,
    /// An ad's referral, so a click: its `ctwa_clid` on WhatsApp (`None`: a Status ad,
    /// which has none); always `None` on Messenger and Instagram (no click id there: the
    /// ad's `ad_id` is the click).
    referral: Option<Option<String>>,
    /// Messenger / Instagram: a referral that is no ad's (an m.me / ig.me link): no click.
    link_referral: bool,
}

impl Msg {
    /// Its inbox item's id.
    fn inbox_id(&self) -> String {
        let prefix = match self.channel {
            Channel::Messenger => "fb",
            Channel::Instagram => "ig",
            Channel::Cloud | Channel::Sinch => "wa",
        };
        format!("{prefix}:{}", self.id)
    }

    /// Its customer's key (`wa:`, `psid:`, `igsid:`).
    fn customer_key(&self) -> String {
        match self.channel {
            Channel::Messenger => psid_key(&self.sender),
            Channel::Instagram => igsid_key(&self.sender),
            Channel::Cloud | Channel::Sinch => format!("wa:{}", self.sender),
        }
    }

    /// Whether its click can be a first touch and be credited with a conversion: one
    /// with a click id on WhatsApp, any ad's on Messenger and Instagram.
    fn attributable(&self) -> bool {
        match &self.referral {
            Some(clid) => clid.is_some() || self.channel != Channel::Cloud,
            None => false,
        }
    }
}

struct Body {
    channel: Channel,
    json: String,
    signature: String,
    messages: Vec<usize>,
    /// Posted at least once.
    sent: AtomicBool,
    /// Answered 200 at least once.
    acked: AtomicBool,
}

/// A generated workload: the bodies, the order they are posted in, and what they hold.
pub struct Workload {
    pub run: String,
    pub accounts: Vec<LoadAccount>,
    bodies: Vec<Body>,
    order: Vec<usize>,
    messages: Vec<Msg>,
    /// Unique webhooks with no customer message, per channel.
    statuses: BTreeMap<&'static str, usize>,
    /// Echoes and receipts (Messenger / Instagram events never stored), per channel.
    ignored_events: BTreeMap<&'static str, usize>,
    plan: Plan,
}

fn message_json(rng: &mut Rng, m: &Msg) -> Value {
    let ts = (m.ts_ms / 1000).to_string();
    let mut v = json!({"from": m.sender, "id": m.id, "timestamp": ts});
    let kind = if m.referral.is_some() {
        if rng.chance(0.25) { "image" } else { "text" }
    } else {
        match rng.below(10) {
            0..=3 => "text",
            4..=5 => "image",
            6..=7 => "button",
            _ => "interactive",
        }
    };
    v["type"] = json!(kind);
    match kind {
        "text" => v["text"] = json!({"body": "Hi! Is this still available?"}),
        "image" => {
            v["image"] = json!({"caption": "this one", "mime_type": "image/jpeg",
                "sha256": "dn24cE6TdXeWnw8vgRXm/3f9ca8waSH+pdC22x6JmNc=", "id": format!("{}", 2_378_196_749_396_389u64 + rng.below(1_000_000))})
        }
        "button" => {
            v["context"] = json!({"from": "15550783881", "id": "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI3MDQ0NTYxQUQzNTE0Rjk3QkEA"});
            v["button"] = json!({"payload": "YES_PLEASE", "text": "Yes please"});
        }
        _ => {
            v["interactive"] = if rng.chance(0.5) {
                json!({"type": "button_reply", "button_reply": {"id": "yes_deliver", "title": "Yes, deliver"}})
            } else {
                json!({"type": "list_reply", "list_reply": {"id": "size_m", "title": "Medium", "description": "M"}})
            };
        }
    }
    if let Some(clid) = &m.referral {
        let mut r = json!({"source_url": "https://fb.me/3cr4Wqqkv", "source_id": format!("1202263058548107{:02}", rng.below(20)),
            "source_type": "ad", "headline": "Chat with us", "body": "Summer Succulents are here!", "media_type": "image",
            "image_url": "https://scontent.xx.fbcdn.net/v/t45.1", "welcome_message": {"text": "Hi there!"}});
        if let Some(c) = clid {
            r["ctwa_clid"] = json!(c);
        }
        v["referral"] = r;
    }
    v
}

/// A Messenger / Instagram `messaging[]` event of a customer's message to `business`
/// (Meta's Messenger Platform "messages" webhook; Instagram's is the same shape).
fn messaging_json(rng: &mut Rng, m: &Msg, business: &str) -> Value {
    let mut message = json!({"mid": m.id});
    match rng.below(10) {
        0..=5 => message["text"] = json!("Hi! Is this still available?"),
        6..=7 => {
            message["attachments"] = json!([{"type": "image", "payload": {
                "url": format!("https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id={}", rng.below(1_000_000_000))}}])
        }
        _ => {
            message["text"] = json!("Yes, deliver");
            message["quick_reply"] = json!({"payload": "YES_DELIVER"});
        }
    }
    if m.referral.is_some() {
        message["referral"] = json!({"ref": "summer-sale", "ad_id": format!("1202263058548107{:02}", rng.below(20)),
            "source": "ADS", "type": "OPEN_THREAD", "ads_context_data": {"ad_title": "Summer Succulents",
            "photo_url": "https://scontent.xx.fbcdn.net/v/t45.1", "post_id": format!("{business}_9988776655")}});
    } else if m.link_referral {
        let source = if m.channel == Channel::Instagram {
            "IGME-SOURCE-LINK"
        } else {
            "SHORTLINK"
        };
        message["referral"] = json!({"ref": "bio-link", "source": source, "type": "OPEN_THREAD"});
    }
    json!({"sender": {"id": m.sender}, "recipient": {"id": business}, "timestamp": m.ts_ms, "message": message})
}

/// An event Meta sends beside the customers' messages that is never stored: the echo of
/// the business's own reply, a read receipt, a delivery receipt (Messenger).
/// `mid_tag` makes the echo's mid this run's (so an echo stored would be counted).
fn ignored_event_json(
    rng: &mut Rng,
    channel: Channel,
    business: &str,
    customer: &str,
    ts_ms: i64,
    mid_tag: &str,
) -> Value {
    let kinds = if channel == Channel::Messenger { 3 } else { 2 };
    match rng.below(kinds) {
        0 => json!({"sender": {"id": business}, "recipient": {"id": customer}, "timestamp": ts_ms,
            "message": {"mid": format!("m_echo{:012x}{mid_tag}", rng.next() >> 16), "is_echo": true,
                "app_id": 1_517_776_481_860_111u64, "text": "Thanks! It is: shall we deliver tomorrow?"}}),
        1 if channel == Channel::Instagram => {
            json!({"sender": {"id": customer}, "recipient": {"id": business},
            "timestamp": ts_ms, "read": {"mid": format!("aWdfZAGecho{:012x}{mid_tag}", rng.next() >> 16)}})
        }
        1 => json!({"sender": {"id": customer}, "recipient": {"id": business}, "timestamp": ts_ms,
            "read": {"watermark": ts_ms}}),
        _ => json!({"sender": {"id": customer}, "recipient": {"id": business}, "timestamp": ts_ms,
            "delivery": {"mids": [format!("m_echo{:012x}{mid_tag}", rng.next() >> 16)], "watermark": ts_ms}}),
    }
}

/// A Cloud API webhook body: one `messages` change with `value`, of the test WABA.
pub fn envelope(value: Value) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]})
        .to_string()
}

impl Workload {
    /// Builds every body (signed with `app_secret`) and the posting order.
    pub fn generate(plan: &Plan, app_secret: &str) -> Self {
        let mut rng = Rng(plan.seed);
        let run = format!("{:010x}", rng.next() >> 24);
        let pn_base = 900_000_000_000 + rng.below(90_000_000_000);
        // Ids of Meta's lengths: Pages 15 digits, Instagram accounts 17 (`1784...`),
        // PSIDs 16, IGSIDs 17; a PSID / IGSID is its Page's / account's own.
        let page_base = 1_000_000_000_000 + rng.below(8_000_000_000_000);
        let ig_base = 10_000_000_000 + rng.below(80_000_000_000);
        let psid_base = 1_000_000 + rng.below(8_000_000);
        let igsid_base = 10_000_000 + rng.below(80_000_000);
        let accounts: Vec<LoadAccount> = (0..plan.accounts.max(1))
            .map(|a| LoadAccount {
                id: format!("load-{run}-{a}"),
                phone_number_id: format!("{pn_base}{a:02}"),
                page_id: format!("{page_base}{a:02}"),
                instagram_account_id: format!("1784{ig_base}{a:02}"),
            })
            .collect();
        let sender = |channel: Channel, a: usize, c: u64| match channel {
            Channel::Messenger => format!("{psid_base}{a:02}{c:07}"),
            Channel::Instagram => format!("{igsid_base}{a:02}{c:07}"),
            Channel::Cloud | Channel::Sinch => format!("1555{c:07}"),
        };
        let duplicates = (plan.webhooks as f64 * plan.duplicate_share).round() as usize;
        let unique = plan.webhooks.saturating_sub(duplicates).max(1);
        let window = plan.time_window_secs.max(1) as u64;
        let base_ts = ctwa_shared::time::now_secs() - 3600;
        let customers = plan.customers.max(1) as u64;
        let mut messages = Vec::new();
        let mut bodies = Vec::with_capacity(unique);
        let mut statuses: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut ignored_events: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut seq = 0u64;
        for _ in 0..unique {
            let a = rng.below(accounts.len() as u64) as usize;
            let pick = rng.unit();
            let channel = if pick < plan.messenger_share {
                Channel::Messenger
            } else if pick < plan.messenger_share + plan.instagram_share {
                Channel::Instagram
            } else {
                Channel::Cloud
            };
            let no_message = rng.chance(plan.status_share);
            if no_message {
                *statuses.entry(channel_name(channel)).or_default() += 1;
            }
            if channel != Channel::Cloud {
                let business = accounts[a].business_id(channel).to_string();
                let mut events = Vec::new();
                let mut idx = Vec::new();
                let mut ignored = if no_message { 1 + rng.below(2) } else { 0 };
                if !no_message {
                    let n = if rng.chance(plan.two_message_share) {
                        2 + rng.below(2)
                    } else {
                        1
                    };
                    for _ in 0..n {
                        seq += 1;
                        let ad = rng.chance(plan.referral_share);
                        let m = Msg {
                            channel,
                            // A random part first: the tie-break by message id is not the
                            // posting order.
                            id: if channel == Channel::Messenger {
                                format!("m_{:016x}{run}{seq}", rng.next())
                            } else {
                                format!("aWdfZAG{:016x}{run}{seq}", rng.next())
                            },
                            account: a,
                            sender: sender(channel, a, rng.below(customers)),
                            // Milliseconds, half of them on a whole second: ties happen.
                            ts_ms: (base_ts + rng.below(window) as i64) * 1000
                                + if rng.chance(0.5) {
                                    0
                                } else {
                                    rng.below(1000) as i64
                                },
                            referral: ad.then_some(None),
                            link_referral: !ad && rng.chance(0.03),
                        };
                        events.push(messaging_json(&mut rng, &m, &business));
                        idx.push(messages.len());
                        messages.push(m);
                    }
                    ignored = u64::from(rng.chance(0.2));
                }
                // Echoes and receipts among the customers' messages.
                for _ in 0..ignored {
                    let customer = sender(channel, a, rng.below(customers));
                    let ts_ms = (base_ts + rng.below(window) as i64) * 1000;
                    let at = rng.below(events.len() as u64 + 1) as usize;
                    let tag = format!("{run}x{seq}");
                    events.insert(
                        at,
                        ignored_event_json(&mut rng, channel, &business, &customer, ts_ms, &tag),
                    );
                    *ignored_events.entry(channel_name(channel)).or_default() += 1;
                }
                // Meta may spread one delivery's events over several entries of the
                // same Page / account.
                let time = (base_ts + window as i64) * 1000;
                let entries = if events.len() > 1 && rng.chance(0.25) {
                    let rest = events.split_off(1);
                    vec![
                        json!({"id": business, "time": time, "messaging": events}),
                        json!({"id": business, "time": time, "messaging": rest}),
                    ]
                } else {
                    vec![json!({"id": business, "time": time, "messaging": events})]
                };
                let object = if channel == Channel::Messenger {
                    "page"
                } else {
                    "instagram"
                };
                let body = json!({"object": object, "entry": entries}).to_string();
                bodies.push((channel, body, idx));
                continue;
            }
            let pnid = &accounts[a].phone_number_id;
            let metadata = json!({"display_phone_number": "15550783881", "phone_number_id": pnid});
            let value = if no_message {
                let wa_id = sender(channel, a, rng.below(customers));
                let status = ["sent", "delivered", "read"][rng.below(3) as usize];
                let ts = base_ts + rng.below(window) as i64;
                json!({"messaging_product": "whatsapp", "metadata": metadata, "statuses": [{
                    "id": format!("wamid.OUT{run}{:016x}", rng.next()), "status": status, "timestamp": ts.to_string(),
                    "recipient_id": wa_id, "conversation": {"id": format!("{:032x}", rng.next()), "origin": {"type": "service"}},
                    "pricing": {"billable": true, "pricing_model": "PMP", "category": "service"}}]})
            } else {
                let n = if rng.chance(plan.two_message_share) {
                    2
                } else {
                    1
                };
                let mut contacts = Vec::new();
                let mut msgs = Vec::new();
                let mut idx = Vec::new();
                for _ in 0..n {
                    seq += 1;
                    let wa_id = sender(channel, a, rng.below(customers));
                    let referral = rng.chance(plan.referral_share).then(|| {
                        (!rng.chance(0.05))
                            .then(|| format!("Aff-{run}-{:012x}-{seq}", rng.next() >> 16))
                    });
                    let m = Msg {
                        channel,
                        // A random part first: the tie-break by message id is not the posting order.
                        id: format!("wamid.L{:016x}{run}{seq}", rng.next()),
                        account: a,
                        sender: wa_id.clone(),
                        ts_ms: (base_ts + rng.below(window) as i64) * 1000,
                        referral,
                        link_referral: false,
                    };
                    msgs.push(message_json(&mut rng, &m));
                    if !contacts
                        .iter()
                        .any(|c: &Value| c["wa_id"].as_str() == Some(&wa_id))
                    {
                        contacts.push(json!({"profile": {"name": format!("Customer {wa_id}")}, "wa_id": wa_id}));
                    }
                    idx.push(messages.len());
                    messages.push(m);
                }
                // Some changes name only one contact beside two customers' messages: each
                // message's click must still be filed on its own sender's conversation.
                if contacts.len() > 1 && rng.chance(0.25) {
                    contacts.truncate(1);
                }
                let v = json!({"messaging_product": "whatsapp", "metadata": metadata, "contacts": contacts, "messages": msgs});
                bodies.push((channel, envelope(v), idx));
                continue;
            };
            bodies.push((channel, envelope(value), Vec::new()));
        }
        let bodies: Vec<Body> = bodies
            .into_iter()
            .map(|(channel, json, messages)| Body {
                channel,
                signature: sign_meta(app_secret, json.as_bytes()),
                json,
                messages,
                sent: AtomicBool::new(false),
                acked: AtomicBool::new(false),
            })
            .collect();
        // Re-sends land after their original, a little later (up to ~200 posts).
        let mut keyed: Vec<(f64, usize)> = (0..bodies.len()).map(|i| (i as f64, i)).collect();
        for _ in 0..duplicates {
            let j = rng.below(bodies.len() as u64) as usize;
            keyed.push((j as f64 + 0.5 + rng.below(200) as f64, j));
        }
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            run,
            accounts,
            bodies,
            order: keyed.into_iter().map(|(_, i)| i).collect(),
            messages,
            statuses,
            ignored_events,
            plan: plan.clone(),
        }
    }

    /// Posts (re-sends included).
    pub fn sends(&self) -> usize {
        self.order.len()
    }

    /// Creates the accounts in the data table, each with its phone number id, and links
    /// its Page and Instagram account as routes (as the operator's link does; of every
    /// account one verified, the other pending: both are captured). Again: no change.
    pub async fn setup_accounts(&self, target: &Target) -> Result<(), String> {
        let data = DynamoData::new(target.dynamodb.clone(), &target.data_table);
        for (i, a) in self.accounts.iter().enumerate() {
            let account = Account {
                id: a.id.clone(),
                name: format!("Load {}", a.id),
                waba_id: Some("102290129340398".into()),
                phone_number_ids: vec![a.phone_number_id.clone()],
                sinch_app_id: None,
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: ctwa_shared::time::now_millis(),
            };
            match data.create_account(&account).await {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(format!("creating account {}: {e}", a.id)),
            }
            let now_ms = ctwa_shared::time::now_millis();
            let routes = [
                (Route::Page(a.page_id.clone()), i % 2 == 0),
                (Route::Instagram(a.instagram_account_id.clone()), i % 2 == 1),
            ];
            for (route, verified) in routes {
                let mut rec = RouteRecord::pending(route, &account, now_ms);
                if verified {
                    rec.status = RouteStatus::Verified;
                    rec.checked_at_ms = Some(now_ms);
                } else {
                    rec.note = Some(
                        "Meta is not connected for the account yet: verified when it connects"
                            .into(),
                    );
                }
                let audit = AuditRecord::new(
                    Some(&a.id),
                    "ctwa-admin",
                    None,
                    "route.link",
                    &rec.route.key(),
                    json!({"account_id": a.id, "status": rec.status.as_str(), "load_test": self.run}),
                )
                .map_err(|e| e.to_string())?;
                match data.link_route(&rec, &audit).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(format!("linking {} to {}: {e}", rec.route.key(), a.id)),
                }
            }
        }
        Ok(())
    }

    fn conversation_of(&self, m: &Msg) -> String {
        let a = &self.accounts[m.account];
        conversation_id(&a.id, a.business_id(m.channel), &m.customer_key())
    }

    /// Clicks and conversations expected (of `channel`, or of all): of every message
    /// (`all`), or of the messages whose webhook was answered 200.
    fn expected_counts(&self, all: bool, channel: Option<Channel>) -> (usize, usize) {
        let mut clicks = 0;
        let mut convs: HashSet<String> = HashSet::new();
        for b in self.bodies.iter().filter(|b| {
            (all || b.acked.load(Ordering::Relaxed)) && channel.is_none_or(|c| c == b.channel)
        }) {
            for &m in &b.messages {
                let m = &self.messages[m];
                clicks += usize::from(m.referral.is_some());
                convs.insert(self.conversation_of(m));
            }
        }
        (clicks, convs.len())
    }

    pub fn describe(&self) -> Value {
        let (clicks, conversations) = self.expected_counts(true, None);
        let mut channels = serde_json::Map::new();
        for c in CHANNELS {
            let name = channel_name(c);
            let (clicks, conversations) = self.expected_counts(true, Some(c));
            let msgs = || self.messages.iter().filter(move |m| m.channel == c);
            let mut v = json!({
                "unique": self.bodies.iter().filter(|b| b.channel == c).count(),
                "webhooks_without_messages": self.statuses.get(name).copied().unwrap_or(0),
                "messages": msgs().count(),
                "referrals": clicks,
                "conversations": conversations,
            });
            if c == Channel::Cloud {
                v["referrals_without_clid"] =
                    json!(msgs().filter(|m| matches!(m.referral, Some(None))).count());
            } else {
                v["link_referrals"] = json!(msgs().filter(|m| m.link_referral).count());
                v["echoes_and_receipts"] =
                    json!(self.ignored_events.get(name).copied().unwrap_or(0));
            }
            channels.insert(name.into(), v);
        }
        json!({
            "run": self.run,
            "sent": self.sends(),
            "unique": self.bodies.len(),
            "duplicate_resends": self.sends() - self.bodies.len(),
            "status_updates": self.statuses.values().sum::<usize>(),
            "messages": self.messages.len(),
            "referrals": clicks,
            "referrals_without_clid": self.messages.iter()
                .filter(|m| m.channel == Channel::Cloud && matches!(m.referral, Some(None))).count(),
            "accounts": self.accounts.len(),
            "customers_per_account": self.plan.customers,
            "conversations": conversations,
            "channels": channels,
            "seed": self.plan.seed,
        })
    }
}

/// How the posting went.
#[derive(Debug, Default, Clone)]
pub struct PostReport {
    pub posts: usize,
    pub seconds: f64,
    pub latencies_ms: Vec<f64>,
    pub http_5xx: usize,
    pub http_4xx: usize,
    pub transport_errors: usize,
    /// Posts that never got a 200 (attempts or the deadline ran out).
    pub gave_up: usize,
    pub stored_reported: usize,
    pub duplicates_reported: usize,
    /// A 200 for a webhook whose messages were not all in the inbox right after.
    pub acked_not_stored: usize,
    pub timed_out: bool,
}

impl PostReport {
    fn merge(&mut self, o: PostReport) {
        self.posts += o.posts;
        self.latencies_ms.extend(o.latencies_ms);
        self.http_5xx += o.http_5xx;
        self.http_4xx += o.http_4xx;
        self.transport_errors += o.transport_errors;
        self.gave_up += o.gave_up;
        self.stored_reported += o.stored_reported;
        self.duplicates_reported += o.duplicates_reported;
        self.acked_not_stored += o.acked_not_stored;
        self.timed_out |= o.timed_out;
    }

    pub fn to_json(&self) -> Value {
        let mut l = self.latencies_ms.clone();
        l.sort_by(|a, b| a.total_cmp(b));
        json!({
            "posts": self.posts,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "per_second": if self.seconds > 0.0 { ((self.posts as f64 / self.seconds) * 10.0).round() / 10.0 } else { 0.0 },
            "latency_ms": latency_ms(&l),
            "http_5xx": self.http_5xx,
            "http_4xx": self.http_4xx,
            "transport_errors": self.transport_errors,
            "gave_up": self.gave_up,
            "stored_reported": self.stored_reported,
            "duplicates_reported": self.duplicates_reported,
            "acked_not_stored": self.acked_not_stored,
            "timed_out": self.timed_out,
        })
    }
}

async fn in_inbox(target: &Target, id: &str) -> bool {
    target
        .dynamodb
        .get_item()
        .table_name(&target.inbox_table)
        .key("pk", AttributeValue::S(id.to_string()))
        .projection_expression("pk")
        .consistent_read(true)
        .send()
        .await
        .is_ok_and(|o| o.item.is_some())
}

impl Workload {
    /// Posts `range` of the sends with `concurrency` connections, as Meta would: a non-200
    /// answer or a broken connection is retried with backoff (up to 30 times, and not
    /// past `deadline`). With `verify_acks`, every 200 is checked against the inbox at once.
    pub async fn post(
        self: &Arc<Self>,
        target: &Target,
        range: Range<usize>,
        concurrency: usize,
        deadline: Instant,
        verify_acks: bool,
    ) -> PostReport {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let next = Arc::new(AtomicUsize::new(range.start));
        let end = range.end.min(self.order.len());
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (w, next, http, target) =
                (self.clone(), next.clone(), http.clone(), target.clone());
            workers.push(tokio::spawn(async move {
                let url = format!("{}/webhook", target.base_url);
                let mut r = PostReport::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    if Instant::now() > deadline {
                        r.timed_out = true;
                        break;
                    }
                    r.posts += 1;
                    let body = &w.bodies[w.order[i]];
                    body.sent.store(true, Ordering::Relaxed);
                    let mut backoff = Duration::from_millis(50);
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        let t = Instant::now();
                        let sent = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-hub-signature-256", &body.signature)
                            .body(body.json.clone())
                            .send()
                            .await;
                        let answer = match sent {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let v: Value = resp.json().await.unwrap_or(Value::Null);
                                Some((status, v))
                            }
                            Err(_) => None,
                        };
                        match answer {
                            Some((200, v)) => {
                                body.acked.store(true, Ordering::Relaxed);
                                r.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                                r.stored_reported += v["stored"].as_u64().unwrap_or(0) as usize;
                                r.duplicates_reported +=
                                    v["duplicates"].as_u64().unwrap_or(0) as usize;
                                if verify_acks {
                                    for &m in &body.messages {
                                        let id = w.messages[m].inbox_id();
                                        if !in_inbox(&target, &id).await {
                                            r.acked_not_stored += 1;
                                        }
                                    }
                                }
                                break;
                            }
                            Some((s, _)) if s >= 500 => r.http_5xx += 1,
                            Some(_) => {
                                // A 4xx for a well-formed signed webhook is a bug: not retried.
                                r.http_4xx += 1;
                                break;
                            }
                            None => r.transport_errors += 1,
                        }
                        if attempt >= 30 || Instant::now() + backoff > deadline {
                            r.gave_up += 1;
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                r
            }));
        }
        let mut report = PostReport::default();
        for w in workers {
            if let Ok(r) = w.await {
                report.merge(r);
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }
}

type Item = HashMap<String, AttributeValue>;

/// Every item of a table (parallel scan, 4 segments), with only `attrs`.
async fn scan_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    attrs: &[&str],
) -> Result<Vec<Item>, String> {
    const SEGMENTS: i32 = 4;
    let projection: Vec<String> = (0..attrs.len()).map(|i| format!("#p{i}")).collect();
    let segments = (0..SEGMENTS).map(|segment| {
        let projection = projection.join(", ");
        async move {
            let mut out = Vec::new();
            let mut start: Option<Item> = None;
            loop {
                let mut q = client
                    .scan()
                    .table_name(table)
                    .segment(segment)
                    .total_segments(SEGMENTS)
                    .projection_expression(&projection)
                    .set_exclusive_start_key(start.take());
                for (i, a) in attrs.iter().enumerate() {
                    q = q.expression_attribute_names(format!("#p{i}"), *a);
                }
                let page = q
                    .send()
                    .await
                    .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())?;
                out.extend(page.items.unwrap_or_default());
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
            Ok::<_, String>(out)
        }
    });
    let mut all = Vec::new();
    for part in ctwa_shared::run_bounded(segments, SEGMENTS as usize).await {
        all.extend(part?);
    }
    Ok(all)
}

fn s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// What the tables hold compared with what was sent: all channels, and each one in
/// [`Accounting::channels`].
#[derive(Debug, Default, Clone)]
pub struct Accounting {
    pub inbox_items: usize,
    pub clicks: usize,
    pub conversations: usize,
    pub lost_messages: usize,
    pub lost_clicks: usize,
    pub lost_conversations: usize,
    pub unexpected_inbox_items: usize,
    pub duplicate_clicks: usize,
    pub unexpected_conversations: usize,
    /// Messages reported `stored` more often than there are unique messages (all
    /// channels only: a webhook answer is not split by channel).
    pub duplicate_store_acks: usize,
    /// Clicks filed under another conversation (so another customer) than their
    /// message's sender's.
    pub misfiled_clicks: usize,
    pub first_touch_wrong: usize,
    /// Last-click attributions checked: per customer with clicks, a conversion at each
    /// click's second, just before the clock-skew tolerance, and before every click.
    pub attribution_checks: usize,
    /// Conversions that would be credited to a click made after their event_time.
    pub attributed_after_event_time: usize,
    /// Conversions that would be credited to another click than the newest before them.
    pub attribution_wrong: usize,
    /// The same figures per channel (`whatsapp`, `messenger`, `instagram`).
    pub channels: BTreeMap<&'static str, Accounting>,
    pub examples: Vec<String>,
}

impl Accounting {
    pub fn lost(&self) -> usize {
        self.lost_messages + self.lost_clicks + self.lost_conversations
    }
    pub fn duplicated(&self) -> usize {
        self.unexpected_inbox_items
            + self.duplicate_clicks
            + self.unexpected_conversations
            + self.duplicate_store_acks
    }
    /// Nothing lost, nothing twice, every first touch right.
    pub fn clean(&self) -> bool {
        self.lost() == 0
            && self.duplicated() == 0
            && self.first_touch_wrong == 0
            && self.misfiled_clicks == 0
            && self.attributed_after_event_time == 0
            && self.attribution_wrong == 0
    }
    /// Counts in the totals and in `channel`'s figures (`None`: an item of no channel
    /// of the load, in the totals only).
    fn count(&mut self, channel: Option<&'static str>, f: impl Fn(&mut Accounting)) {
        f(self);
        if let Some(c) = channel {
            f(self.channels.entry(c).or_default());
        }
    }
    fn counts_json(&self) -> Value {
        json!({
            "inbox_items": self.inbox_items,
            "clicks": self.clicks,
            "conversations": self.conversations,
            "lost": {"messages": self.lost_messages, "clicks": self.lost_clicks, "conversations": self.lost_conversations},
            "duplicated": {"inbox_items": self.unexpected_inbox_items, "clicks": self.duplicate_clicks,
                "conversations": self.unexpected_conversations},
            "misfiled_clicks": self.misfiled_clicks,
            "first_touch_wrong": self.first_touch_wrong,
            "attribution": {"checks": self.attribution_checks,
                "attributed_after_event_time": self.attributed_after_event_time,
                "wrong_click": self.attribution_wrong},
        })
    }
    pub fn to_json(&self) -> Value {
        let mut v = self.counts_json();
        v["duplicated"]["store_acks"] = json!(self.duplicate_store_acks);
        let channels: serde_json::Map<String, Value> = self
            .channels
            .iter()
            .map(|(c, a)| {
                let mut cv = a.counts_json();
                cv["lost_total"] = json!(a.lost());
                cv["duplicated_total"] = json!(a.duplicated());
                ((*c).to_string(), cv)
            })
            .collect();
        v["channels"] = Value::Object(channels);
        v["examples"] = json!(self.examples);
        v
    }
}

/// The channel of an inbox item by its id's prefix (`wa:`, `fb:` / `fb-…:`, `ig:` / `ig-…:`).
fn inbox_channel(id: &str) -> Option<&'static str> {
    let prefix = id.split_once(':')?.0;
    match prefix.split('-').next()? {
        "wa" => Some(channel_name(Channel::Cloud)),
        "fb" => Some(channel_name(Channel::Messenger)),
        "ig" => Some(channel_name(Channel::Instagram)),
        _ => None,
    }
}

/// The channel of a data table item by its `channel` attribute.
fn item_channel(item: &Item) -> Option<&'static str> {
    s(item, "channel")
        .and_then(Channel::parse)
        .map(channel_name)
}

impl Workload {
    /// Reads the inbox and data tables and accounts for every message, click and first
    /// touch of the webhooks answered 200, of every channel. `stored_reported` is the sum
    /// of the webhook answers' `stored` counts (None when unknown).
    pub async fn account(
        &self,
        target: &Target,
        stored_reported: Option<usize>,
    ) -> Result<Accounting, String> {
        let mut acc = Accounting::default();
        for c in CHANNELS {
            acc.channels.insert(channel_name(c), Accounting::default());
        }
        let note = |acc: &mut Accounting, what: String| {
            if acc.examples.len() < 10 {
                acc.examples.push(what);
            }
        };
        let mut expect = vec![Expect::Never; self.messages.len()];
        // `Must`: its webhook was answered 200, so it is stored and captured exactly once.
        // `May`: posted but never answered 200; it may be stored, at most once.
        for b in &self.bodies {
            let e = if b.acked.load(Ordering::Relaxed) {
                Expect::Must
            } else if b.sent.load(Ordering::Relaxed) {
                Expect::May
            } else {
                Expect::Never
            };
            for &m in &b.messages {
                expect[m] = e;
            }
        }
        let chan = |m: usize| Some(channel_name(self.messages[m].channel));
        let by_id: HashMap<String, usize> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.inbox_id(), i))
            .collect();
        // Inbox.
        let inbox = scan_all(&target.dynamodb, &target.inbox_table, &["pk"]).await?;
        let present: HashSet<&str> = inbox.iter().filter_map(|i| s(i, "pk")).collect();
        for item in &inbox {
            acc.count(s(item, "pk").and_then(inbox_channel), |a| {
                a.inbox_items += 1
            });
        }
        for (id, &m) in &by_id {
            if expect[m] == Expect::Must && !present.contains(id.as_str()) {
                acc.count(chan(m), |a| a.lost_messages += 1);
                note(
                    &mut acc,
                    format!("message {id} answered 200 but not in the inbox"),
                );
            }
        }
        // Items of this run (its message ids carry the run tag, so do the echoes') that
        // were never posted as a customer's message.
        for id in &present {
            if id.contains(&self.run) && by_id.get(*id).is_none_or(|m| expect[*m] == Expect::Never)
            {
                acc.count(inbox_channel(id), |a| a.unexpected_inbox_items += 1);
                note(
                    &mut acc,
                    format!("inbox item {id} was never posted as a message"),
                );
            }
        }
        if let Some(stored) = stored_reported {
            let acked = expect.iter().filter(|e| **e == Expect::Must).count();
            acc.duplicate_store_acks = stored.saturating_sub(acked);
        }
        // Data table: clicks and conversations of this run's accounts only.
        let data = scan_all(
            &target.dynamodb,
            &target.data_table,
            &[
                "sk",
                "account_id",
                "channel",
                "conversation_id",
                "message_id",
                "ctwa_clid",
                "ctwa_message_id",
            ],
        )
        .await?;
        let ours: HashSet<&str> = self.accounts.iter().map(|a| a.id.as_str()).collect();
        let by_msg: HashMap<&str, usize> = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.as_str(), i))
            .collect();
        // message id -> (clicks, the clicks' channel)
        let mut click_counts: HashMap<&str, (usize, Option<&'static str>)> = HashMap::new();
        // conversation id -> (first touch's message id, its click id, channel)
        type Stored<'a> = (Option<&'a str>, Option<&'a str>, Option<&'static str>);
        let mut convs: HashMap<&str, Stored> = HashMap::new();
        for item in data
            .iter()
            .filter(|i| s(i, "account_id").is_some_and(|a| ours.contains(a)))
        {
            let sk = s(item, "sk").unwrap_or_default();
            let ch = item_channel(item);
            if sk.starts_with("CLICK#") {
                acc.count(ch, |a| a.clicks += 1);
                let msg = s(item, "message_id").unwrap_or_default();
                let slot = click_counts.entry(msg).or_insert((0, ch));
                slot.0 += 1;
                if let Some(&m) = by_msg.get(msg)
                    && Some(self.conversation_of(&self.messages[m]).as_str())
                        != s(item, "conversation_id")
                {
                    acc.count(chan(m), |a| a.misfiled_clicks += 1);
                    note(
                        &mut acc,
                        format!("click of {msg} filed under another conversation"),
                    );
                }
            } else if sk == "CONV" {
                acc.count(ch, |a| a.conversations += 1);
                if let Some(id) = s(item, "conversation_id") {
                    convs.insert(id, (s(item, "ctwa_message_id"), s(item, "ctwa_clid"), ch));
                }
            }
        }
        for (msg, (n, ch)) in &click_counts {
            let m = by_msg.get(msg).copied();
            let referral = m.is_some_and(|m| self.messages[m].referral.is_some());
            let posted = m.is_some_and(|m| expect[m] != Expect::Never);
            if !referral || !posted {
                acc.count(*ch, |a| a.duplicate_clicks += n);
                note(
                    &mut acc,
                    format!("click for {msg}, never posted with an ad's referral"),
                );
            } else if *n > 1 {
                acc.count(*ch, |a| a.duplicate_clicks += n - 1);
                note(&mut acc, format!("{n} clicks for {msg}"));
            }
        }
        // Per conversation: the earliest attributable click (with a click id on
        // WhatsApp, any ad's on Messenger / Instagram) among the clicks that must exist
        // and those that may and do.
        // On an exact tie every click of that millisecond is a right answer (the stored
        // one stays, so which one depends on processing order).
        type Earliest = Option<(i64, Vec<(String, Option<String>)>)>;
        let mut conv_first: HashMap<String, (Earliest, &'static str)> = HashMap::new();
        let mut conv_must: HashSet<String> = HashSet::new();
        let mut conv_posted: HashSet<String> = HashSet::new();
        for (i, m) in self.messages.iter().enumerate() {
            if expect[i] == Expect::Never {
                continue;
            }
            let conv = self.conversation_of(m);
            conv_posted.insert(conv.clone());
            let (slot, _) = conv_first
                .entry(conv.clone())
                .or_insert((None, channel_name(m.channel)));
            if expect[i] == Expect::Must {
                conv_must.insert(conv);
            }
            let Some(clid) = &m.referral else { continue };
            let clicked = click_counts.contains_key(m.id.as_str());
            if expect[i] == Expect::Must && !clicked {
                acc.count(chan(i), |a| a.lost_clicks += 1);
                note(&mut acc, format!("no click for {}", m.id));
            }
            if m.attributable() && (expect[i] == Expect::Must || clicked) {
                let touch = (m.id.clone(), clid.clone());
                match slot {
                    Some((t, tied)) if *t == m.ts_ms => tied.push(touch),
                    Some((t, _)) if !click_precedes(m.ts_ms, *t) => {}
                    _ => *slot = Some((m.ts_ms, vec![touch])),
                }
            }
        }
        for (conv, (first, ch)) in &conv_first {
            let Some((got_msg, got_clid, _)) = convs.get(conv.as_str()) else {
                if conv_must.contains(conv) {
                    acc.count(Some(ch), |a| a.lost_conversations += 1);
                    note(&mut acc, format!("conversation {conv} missing"));
                }
                continue;
            };
            let got = got_msg.map(|m| (m, *got_clid));
            let right = match (first, got) {
                (None, None) => true,
                (Some((_, tied)), Some((m, c))) => {
                    tied.iter().any(|(tm, tc)| tm == m && tc.as_deref() == c)
                }
                _ => false,
            };
            if !right {
                acc.count(Some(ch), |a| a.first_touch_wrong += 1);
                let want = first.as_ref().map(|(_, tied)| tied);
                note(
                    &mut acc,
                    format!("conversation {conv}: first touch {got:?}, expected {want:?}"),
                );
            }
        }
        for (conv, (_, _, ch)) in &convs {
            if !conv_posted.contains(*conv) {
                acc.count(*ch, |a| a.unexpected_conversations += 1);
            }
        }
        // Last click: per customer, what a conversion at a few times would be credited
        // to, from the stored history through the conversions' own choice
        // (`last_click_before`), against the attributable clicks that exist; up to 100
        // customers of each channel.
        // (channel, account, customer key) -> (clicked at ms, message id)
        type History<'a> = Vec<(i64, &'a str)>;
        let mut histories: BTreeMap<(&'static str, usize, String), History> = BTreeMap::new();
        for m in &self.messages {
            if m.attributable() && click_counts.contains_key(m.id.as_str()) {
                histories
                    .entry((channel_name(m.channel), m.account, m.customer_key()))
                    .or_default()
                    .push((m.ts_ms, m.id.as_str()));
            }
        }
        let store = DynamoData::new(target.dynamodb.clone(), &target.data_table);
        let skew = ctwa_shared::capi::CLICK_CLOCK_SKEW_MS;
        let mut per_channel: HashMap<&'static str, usize> = HashMap::new();
        for ((channel, a, key), clicks) in histories {
            let seen = per_channel.entry(channel).or_default();
            if *seen >= 100 {
                continue;
            }
            *seen += 1;
            let ch = Some(channel);
            let stored = ctwa_shared::store::Conversations::clicks_for_customer(
                &store,
                &self.accounts[a].id,
                &key,
                100,
            )
            .await
            .map_err(|e| e.to_string())?;
            let earliest = clicks.iter().map(|c| c.0).min().unwrap_or_default();
            let mut times: Vec<i64> = vec![earliest - 86_400_000];
            for (ms, _) in &clicks {
                times.extend([*ms, ms - skew - 1000]);
            }
            for t_ms in times {
                acc.count(ch, |a| a.attribution_checks += 1);
                let want = clicks
                    .iter()
                    .filter(|c| c.0 <= t_ms + skew)
                    .max_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)))
                    .map(|c| c.1);
                let got = match ctwa_shared::capi::last_click_before(stored.clone(), t_ms) {
                    ctwa_shared::capi::LastClick::Found(f) => {
                        if f.click.clicked_at_ms > t_ms + skew {
                            acc.count(ch, |a| a.attributed_after_event_time += 1);
                        }
                        Some(f.click.message_id.clone())
                    }
                    _ => None,
                };
                if got.as_deref() != want {
                    acc.count(ch, |a| a.attribution_wrong += 1);
                    note(
                        &mut acc,
                        format!("{key} at {t_ms}: credited {got:?}, expected {want:?}"),
                    );
                }
            }
        }
        Ok(acc)
    }

    /// Clicks and conversations in the data table (a cheap progress probe).
    async fn captured_counts(&self, target: &Target) -> Result<(usize, usize), String> {
        let ours: HashSet<&str> = self.accounts.iter().map(|a| a.id.as_str()).collect();
        let mut items =
            scan_all(&target.dynamodb, &target.data_table, &["sk", "account_id"]).await?;
        items.retain(|i| s(i, "account_id").is_some_and(|a| ours.contains(a)));
        let clicks = items
            .iter()
            .filter(|i| s(i, "sk").is_some_and(|k| k.starts_with("CLICK#")))
            .count();
        let convs = items.iter().filter(|i| s(i, "sk") == Some("CONV")).count();
        Ok((clicks, convs))
    }

    /// Waits until capture has written what was sent (or made no progress for `stall`,
    /// or `deadline`), then accounts; a first touch still settling is read again a few
    /// times. Answers the accounting and how long the wait took.
    pub async fn settle_and_account(
        &self,
        target: &Target,
        stored_reported: Option<usize>,
        stall: Duration,
        deadline: Instant,
    ) -> Result<(Accounting, f64), String> {
        let started = Instant::now();
        let expected = self.expected_counts(false, None);
        let mut last = (usize::MAX, usize::MAX);
        let mut last_change = Instant::now();
        loop {
            let now = self.captured_counts(target).await?;
            // Messages posted without a 200 may add to the counts.
            if now.0 >= expected.0 && now.1 >= expected.1 {
                break;
            }
            if now != last {
                last = now;
                last_change = Instant::now();
            }
            if last_change.elapsed() > stall || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let drained = started.elapsed().as_secs_f64();
        let mut acc = self.account(target, stored_reported).await?;
        for _ in 0..5 {
            if acc.clean() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            acc = self.account(target, stored_reported).await?;
        }
        Ok((acc, drained))
    }
}

/// The whole load test: accounts, posts, waits for capture, accounts. One JSON report.
pub async fn run(plan: &Plan, target: &Target, deadline: Instant) -> Result<Value, String> {
    let w = Arc::new(Workload::generate(plan, &target.app_secret));
    w.setup_accounts(target).await?;
    let post = w
        .post(target, 0..w.sends(), plan.concurrency, deadline, false)
        .await;
    let stall = Duration::from_secs(60);
    let (acc, drain) = w
        .settle_and_account(target, Some(post.stored_reported), stall, deadline)
        .await?;
    let ok = acc.clean()
        && !post.timed_out
        && post.gave_up == 0
        && post.http_4xx == 0
        && post.posts == w.sends();
    let workload = w.describe();
    // Each channel's figures side by side: what was sent, what the tables hold, and
    // the same rules' outcome.
    let channels: serde_json::Map<String, Value> = CHANNELS
        .iter()
        .map(|c| {
            let name = channel_name(*c);
            let sent = &workload["channels"][name];
            let a = acc.channels.get(name).cloned().unwrap_or_default();
            let v = json!({
                "messages": sent["messages"],
                "referrals": sent["referrals"],
                "conversations_expected": sent["conversations"],
                "inbox_items": a.inbox_items,
                "clicks": a.clicks,
                "conversations": a.conversations,
                "lost": a.lost(),
                "duplicated": a.duplicated(),
                "first_touch_wrong": a.first_touch_wrong,
                "misfiled_clicks": a.misfiled_clicks,
                "attribution_checks": a.attribution_checks,
                "attribution_wrong": a.attribution_wrong + a.attributed_after_event_time,
            });
            (name.to_string(), v)
        })
        .collect();
    Ok(json!({
        "workload": workload,
        "channels": channels,
        "post": post.to_json(),
        "capture_drain_seconds": (drain * 100.0).round() / 100.0,
        "accounting": acc.to_json(),
        "lost": acc.lost(),
        "duplicated": acc.duplicated(),
        "first_touch_wrong": acc.first_touch_wrong,
        "attributed_after_event_time": acc.attributed_after_event_time,
        "attribution_wrong": acc.attribution_wrong,
        "ok": ok,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), 0.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[1.23456], 0.5), 1.23);
        assert_eq!(
            latency_ms(&v),
            json!({"p50": 51.0, "p99": 99.0, "max": 100.0})
        );
    }

    #[test]
    fn the_local_state_file() {
        let path =
            std::env::temp_dir().join(format!("ctwa-local-state-{}.json", std::process::id()));
        let path = path.to_str().unwrap();
        assert!(
            LocalState::read(path)
                .unwrap_err()
                .contains("start the local stack first")
        );
        std::fs::write(path, r#"{"base_url": "http://127.0.0.1:1", "n": 1}"#).unwrap();
        let s = LocalState::read(path).unwrap();
        assert_eq!(s.get("base_url").unwrap(), "http://127.0.0.1:1");
        assert_eq!(s.get("n").unwrap_err(), format!("n missing in {path}"));
        assert_eq!(s.get("x").unwrap_err(), format!("x missing in {path}"));
        std::fs::write(path, "{").unwrap();
        assert!(LocalState::read(path).is_err());
        let _ = std::fs::remove_file(path);
    }

    /// Every body is a signed Meta delivery of its channel that the webhook's own parser
    /// splits into exactly its customers' messages (echoes and receipts acknowledged,
    /// never items), each read by capture as the customer, time, referral and
    /// conversation the accounting expects; the three channels each hold messages,
    /// clicks, conversations and deliveries without a message.
    #[test]
    fn a_workload_mixes_the_three_channels() {
        use ctwa_shared::capture::inbound;
        use ctwa_shared::meta::webhook::parse_cloud_webhook;
        let mut plan = Plan::new(3_000);
        plan.accounts = 3;
        plan.customers = 40;
        plan.seed = 17;
        let w = Workload::generate(&plan, "app-secret");
        assert_eq!((w.sends(), w.sends() - w.bodies.len()), (3_000, 300));
        let now = ctwa_shared::time::now_millis();
        let mut several_events = 0;
        let mut several_entries = 0;
        let mut ignored_in_message_deliveries = 0;
        for b in &w.bodies {
            assert!(
                ctwa_shared::signature::verify_meta(
                    "app-secret",
                    Some(&b.signature),
                    b.json.as_bytes()
                )
                .is_ok()
            );
            let v: Value = serde_json::from_str(&b.json).unwrap();
            let object = match b.channel {
                Channel::Messenger => "page",
                Channel::Instagram => "instagram",
                _ => "whatsapp_business_account",
            };
            assert_eq!(v["object"], object);
            let parsed = parse_cloud_webhook(b.json.as_bytes(), now, now / 1000 + 86_400)
                .expect("a webhook the stack takes");
            let ids: Vec<String> = parsed.items.iter().map(|i| i.id.clone()).collect();
            let want: Vec<String> = b
                .messages
                .iter()
                .map(|&m| w.messages[m].inbox_id())
                .collect();
            assert_eq!(ids, want, "{}", b.json);
            if b.channel != Channel::Cloud {
                let events: usize = v["entry"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["messaging"].as_array().unwrap().len())
                    .sum();
                several_events += usize::from(b.messages.len() > 1);
                several_entries += usize::from(v["entry"].as_array().unwrap().len() > 1);
                if !b.messages.is_empty() && events > b.messages.len() {
                    ignored_in_message_deliveries += 1;
                }
                assert_eq!(events - b.messages.len(), parsed.statuses, "{}", b.json);
            }
            for (item, &m) in parsed.items.iter().zip(&b.messages) {
                let msg = &w.messages[m];
                let account = &w.accounts[msg.account];
                assert_eq!(item.channel, msg.channel);
                assert_eq!(item.route.business_id(), account.business_id(msg.channel));
                let got = inbound(item).unwrap();
                assert_eq!(got.customer.key(), Some(msg.customer_key()));
                assert_eq!(got.message_id, msg.id);
                assert_eq!(got.sent_at_ms, msg.ts_ms);
                assert_eq!(got.referral.is_some(), msg.referral.is_some(), "{}", b.json);
                if let Some(r) = &got.referral {
                    assert_eq!(r.ctwa_clid, msg.referral.clone().flatten());
                    assert_eq!(
                        ctwa_shared::domain::attributable(msg.channel, r),
                        msg.attributable()
                    );
                }
                assert_eq!(
                    conversation_id(
                        &account.id,
                        item.route.business_id(),
                        &got.customer.key().unwrap()
                    ),
                    w.conversation_of(msg)
                );
            }
        }
        let unique: HashSet<String> = w.messages.iter().map(Msg::inbox_id).collect();
        assert_eq!(unique.len(), w.messages.len(), "message ids are unique");
        assert!(
            several_events > 20 && several_entries > 5,
            "{several_events} {several_entries}"
        );
        assert!(ignored_in_message_deliveries > 20);
        let d = w.describe();
        for name in ["whatsapp", "messenger", "instagram"] {
            let c = &d["channels"][name];
            let unique = c["unique"].as_u64().unwrap() as f64;
            assert!(unique > 0.15 * w.bodies.len() as f64, "{name}: {c}");
            assert!(c["messages"].as_u64().unwrap() > 300, "{name}: {c}");
            assert!(c["referrals"].as_u64().unwrap() > 80, "{name}: {c}");
            assert!(c["conversations"].as_u64().unwrap() > 60, "{name}: {c}");
            assert!(
                c["webhooks_without_messages"].as_u64().unwrap() > 20,
                "{name}: {c}"
            );
            if name != "whatsapp" {
                assert!(
                    c["echoes_and_receipts"].as_u64().unwrap() > 40,
                    "{name}: {c}"
                );
                assert!(c["link_referrals"].as_u64().unwrap() > 2, "{name}: {c}");
            }
        }
        // The same seed, the same workload; no share of a channel, none of its bodies.
        let again = Workload::generate(&plan, "app-secret");
        let ids = |w: &Workload| w.messages.iter().map(Msg::inbox_id).collect::<Vec<_>>();
        assert_eq!(ids(&again), ids(&w));
        plan.messenger_share = 0.0;
        plan.instagram_share = 0.0;
        let wa_only = Workload::generate(&plan, "app-secret");
        assert!(wa_only.bodies.iter().all(|b| b.channel == Channel::Cloud));
    }

    #[test]
    fn a_webhook_envelope() {
        let v: Value = serde_json::from_str(&envelope(json!({"k": 1}))).unwrap();
        assert_eq!(v["object"], "whatsapp_business_account");
        assert_eq!(v["entry"][0]["changes"][0]["value"], json!({"k": 1}));
    }
}
