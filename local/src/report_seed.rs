//! A month of ad activity for the per-ad report (`GET /v1/reports/ads`): 3 campaigns,
//! 10 ads, 2,000 clicks (about 5% without a click id; about one in five a returning
//! customer's second click), 300 leads and 80 purchases (60 in the ad account's INR, 20 in USD),
//! and Meta's daily spend of each ad. Written with the store adapter capture and the
//! conversions function use (the same items and indexes), and the simulator's insights;
//! what the report must say is computed here independently (`Expected`), so a test or a
//! benchmark can hold the report to it.

use ctwa_shared::domain::{Channel, Click, Customer, FirstTouch, Referral, conversation_id};
use ctwa_shared::store::dynamo::DynamoData;
use ctwa_shared::store::{
    ClickRecord, ConversationUpsert, Conversations, ConversionEvents, EventRecord, EventStatus,
    StoreError,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const AD_ACCOUNT: &str = "act_7700000000001";
pub const CURRENCY: &str = "INR";
pub const TIMEZONE: &str = "Asia/Kolkata";
/// November 2026: 2026-11-01T00:00+05:30.
pub const MONTH_START_MS: i64 = 1_793_471_400_000;
pub const SINCE: &str = "2026-11-01";
pub const UNTIL: &str = "2026-11-30";
pub const DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;

/// (campaign, ad set, ad) of each of the 10 ads.
pub fn ads() -> Vec<(String, String, String)> {
    let layout = [
        (1, 1),
        (1, 1),
        (1, 2),
        (1, 2),
        (2, 3),
        (2, 3),
        (2, 3),
        (3, 4),
        (3, 4),
        (3, 5),
    ];
    layout
        .iter()
        .enumerate()
        .map(|(i, (c, s))| {
            (
                format!("77000000000{c}"),
                format!("77100000000{s}"),
                format!("7720000000{i:02}"),
            )
        })
        .collect()
}

/// What the report of the month must say, per ad id and in total (money in paise or
/// cents).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    pub clicks: BTreeMap<String, u64>,
    pub clicks_without_clid: BTreeMap<String, u64>,
    pub conversations: BTreeMap<String, u64>,
    pub leads: BTreeMap<String, u64>,
    pub purchases: BTreeMap<String, u64>,
    /// INR paise per ad.
    pub revenue: BTreeMap<String, i64>,
    /// USD cents, all ads.
    pub revenue_usd: i64,
    pub purchases_usd: u64,
    /// INR paise per ad.
    pub spend: BTreeMap<String, i64>,
}

/// Deterministic numbers (a linear congruential generator), so every run seeds the same.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// `POST /_sim/ad_accounts` body for the month's ad account.
pub fn sim_ad_account() -> Value {
    json!({"id": AD_ACCOUNT, "page_ids": ["7790000000001"], "whatsapp_numbers": ["+919876500000"],
           "currency": CURRENCY, "timezone_name": TIMEZONE, "name": "Seeded month"})
}

/// `POST /_sim/insights` body: each ad's daily spend, impressions and clicks.
pub fn sim_insights(expected: &mut Expected) -> Value {
    let mut rows = Vec::new();
    for (i, (c, s, a)) in ads().iter().enumerate() {
        for d in 0..DAYS {
            // 120.00 to ~800 INR a day, with paise.
            let paise = 9_000
                + (i as i64 * 2_300)
                + ((d * 37 + i as i64 * 11) % 23) * 900
                + (d * 7 + i as i64) % 100;
            *expected.spend.entry(a.clone()).or_default() += paise;
            let date = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).expect("a date")
                + chrono::Days::new(d as u64);
            rows.push(json!({
                "date": date.to_string(),
                "campaign_id": c, "campaign_name": format!("Campaign {}", &c[c.len() - 1..]),
                "adset_id": s, "adset_name": format!("Ad set {}", &s[s.len() - 1..]),
                "ad_id": a, "ad_name": format!("Ad {:02}", i + 1),
                "spend": format!("{}.{:02}", paise / 100, paise % 100),
                "impressions": 2_000 + i as i64 * 150 + d * 11,
                "clicks": 40 + (i as i64 + d) % 25,
                "conversations": 5 + (i as i64 * d) % 9,
            }));
        }
    }
    json!({"ad_account_id": AD_ACCOUNT, "rows": rows})
}

/// Writes the month's clicks, conversations and conversions of `account_id` into the
/// data table, 16 writes at a time; returns what the report must say of them.
pub async fn seed_activity(
    store: &DynamoData,
    account_id: &str,
    business_id: &str,
) -> Result<Expected, StoreError> {
    let ads = ads();
    let mut rng = Lcg(16);
    let mut ex = Expected::default();
    let mut clicks: Vec<ClickRecord> = Vec::new();
    let mut convs: Vec<(ConversationUpsert, FirstTouch)> = Vec::new();
    let mut firsts: Vec<(String, String, i64, String)> = Vec::new(); // (conv, clid, at, ad)
    let mut with_clid_firsts: Vec<usize> = Vec::new();
    // Ads draw clicks unevenly (weights out of 100).
    let weights = [16u64, 14, 12, 11, 10, 9, 9, 8, 6, 5];
    for n in 0..2_000u64 {
        let mut pick = rng.next(100);
        let mut a = 0;
        while pick >= weights[a] {
            pick -= weights[a];
            a += 1;
        }
        let ad = &ads[a].2;
        // About one click in five is a returning customer's second click (a later one:
        // the first touch stays the earlier click).
        let returning = rng.next(5) == 0 && !with_clid_firsts.is_empty();
        let (conv_id, customer_key, at) = if returning {
            let k = with_clid_firsts[rng.next(with_clid_firsts.len() as u64) as usize];
            let (conv, _, at0, _) = &firsts[k];
            let cust = format!("wa:9198{:08}", k);
            (
                conv.clone(),
                cust,
                (*at0 + 3_600_000).min(MONTH_START_MS + DAYS * DAY_MS - 1),
            )
        } else {
            let k = firsts.len();
            let cust = format!("wa:9198{k:08}");
            let at = MONTH_START_MS + (rng.next((DAYS * DAY_MS - 2 * 3_600_000) as u64) as i64);
            (conversation_id(account_id, business_id, &cust), cust, at)
        };
        let with_clid = rng.next(20) != 0;
        let clid = with_clid.then(|| format!("SEED-CLID-{n}"));
        let referral = Referral {
            ctwa_clid: clid.clone(),
            source_id: Some(ad.clone()),
            source_type: Some("ad".into()),
            source_url: Some("https://fb.me/seed".into()),
            ..Referral::default()
        };
        *ex.clicks.entry(ad.clone()).or_default() += 1;
        if !with_clid {
            *ex.clicks_without_clid.entry(ad.clone()).or_default() += 1;
        }
        let message_id = format!("wamid.SEED.{n}");
        clicks.push(ClickRecord {
            account_id: account_id.into(),
            customer_key: customer_key.clone(),
            click: Click {
                conversation_id: conv_id.clone(),
                message_id: message_id.clone(),
                channel: Channel::Cloud,
                clicked_at_ms: at,
                time_unverified: false,
                referral: referral.clone(),
            },
        });
        if !returning && let Some(clid) = clid {
            *ex.conversations.entry(ad.clone()).or_default() += 1;
            with_clid_firsts.push(firsts.len());
            firsts.push((conv_id.clone(), clid.clone(), at, ad.clone()));
            convs.push((
                ConversationUpsert {
                    id: conv_id,
                    account_id: account_id.into(),
                    channel: Channel::Cloud,
                    business_id: business_id.into(),
                    customer_key: customer_key.clone(),
                    customer: Customer {
                        wa_id: Some(customer_key.trim_start_matches("wa:").into()),
                        ..Customer::default()
                    },
                    now_ms: at + 1_000,
                },
                FirstTouch {
                    ctwa_clid: Some(clid),
                    captured_at_ms: at + 1_000,
                    clicked_at_ms: at,
                    message_id,
                    referral,
                },
            ));
        } else if !returning {
            // A first message without a click id: a conversation with no first touch,
            // as capture keeps it (not an ad's conversation), and no later conversion.
            firsts.push((conv_id, String::new(), at, ad.clone()));
        }
    }
    // 300 leads and 80 purchases (60 INR, 20 USD) on first touches with a click id,
    // an hour or two after the click.
    let credited: Vec<&(String, String, i64, String)> =
        firsts.iter().filter(|f| !f.1.is_empty()).collect();
    let mut events = Vec::new();
    for n in 0..380usize {
        let (conv, clid, at, ad) = credited[rng.next(credited.len() as u64) as usize];
        let event_time_ms =
            (*at + 3_600_000 + (n as i64 % 4) * 900_000).min(MONTH_START_MS + DAYS * DAY_MS - 1);
        let (name, custom) = if n < 300 {
            *ex.leads.entry(ad.clone()).or_default() += 1;
            ("LeadSubmitted", json!({}))
        } else if n < 360 {
            let paise = [249_900i64, 499_900, 799_950, 1_299_900][rng.next(4) as usize];
            *ex.purchases.entry(ad.clone()).or_default() += 1;
            *ex.revenue.entry(ad.clone()).or_default() += paise;
            (
                "Purchase",
                json!({"currency": "INR", "value": serde_json::Number::from_f64(paise as f64 / 100.0)}),
            )
        } else {
            let cents = [4_999i64, 8_999, 14_999][rng.next(3) as usize];
            *ex.purchases.entry(ad.clone()).or_default() += 1;
            ex.revenue_usd += cents;
            ex.purchases_usd += 1;
            (
                "Purchase",
                json!({"currency": "USD", "value": serde_json::Number::from_f64(cents as f64 / 100.0)}),
            )
        };
        let event_id = format!("seed-{n}");
        let payload = json!({"event_name": name, "event_time": event_time_ms / 1000,
            "action_source": "business_messaging", "messaging_channel": "whatsapp",
            "event_id": event_id, "user_data": {"ctwa_clid": clid}, "custom_data": custom});
        events.push(EventRecord {
            account_id: account_id.into(),
            event_id,
            event_name: name.into(),
            conversation_id: Some(conv.clone()),
            ctwa_clid: clid.clone(),
            dataset_id: "seed-dataset".into(),
            status: EventStatus::Delivered,
            attempts: 1,
            created_at_ms: event_time_ms + 120_000,
            updated_at_ms: event_time_ms + 121_000,
            event_time: event_time_ms / 1000,
            events_received: Some(1),
            fbtrace_id: None,
            duration_ms: Some(40),
            error: None,
            payload: payload.to_string(),
            test_event_code: None,
            next_attempt_at_ms: None,
            lease_id: "seed".into(),
            warnings: Vec::new(),
            expires_at: None,
            ad_id: Some(ad.clone()),
            waiting_for: None,
        });
    }
    // Conversations first (their first touches), then clicks and events.
    let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(convs)
        .map(|(c, ft)| async move { store.upsert_conversation(&c, Some(&ft)).await.map(drop) })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(clicks)
        .map(|c| async move { store.record_click(&c).await.map(drop) })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(events)
        .map(|e| async move { store.claim_event(&e).await.map(drop) })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(ex)
}
