//! Ads Insights (meta-api.md section 9): `GET /act_{id}/insights` over daily rows
//! registered with `POST /_sim/insights`, with Meta's shapes: numbers as strings,
//! `date_start`/`date_stop`, `actions` as `{action_type, value}`, `level`
//! (account/campaign/adset/ad), `time_range` or `date_preset`, `time_increment=1` or the
//! whole range, `fields`, cursor paging (`limit`, `after`), and Meta's refusal of a
//! request too big to answer at once (HTTP 500, code 1, "Please reduce the amount of
//! data you're asking for, then retry your request") when it would make more rows than
//! the ad account's `insights_row_limit`.

use super::marketing::{AdAccount, Answer};
use base64::Engine;
use chrono::{Days, NaiveDate};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// Meta's action for a messaging conversation started (7-day click window).
pub const CONVERSATION_ACTION: &str = "onsite_conversion.messaging_conversation_started_7d";

/// One ad's delivery on one day, as registered.
#[derive(Debug, Clone)]
pub struct DayRow {
    pub date: NaiveDate,
    pub campaign_id: String,
    pub campaign_name: String,
    pub adset_id: String,
    pub adset_name: String,
    pub ad_id: String,
    pub ad_name: String,
    /// Hundredths of the account currency.
    pub spend_cents: i64,
    pub impressions: u64,
    pub clicks: u64,
    pub conversations: u64,
}

fn cents(v: &Value) -> Option<i64> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let frac = format!("{:0<2}", &frac[..frac.len().min(2)]);
    Some(int.parse::<i64>().ok()? * 100 + frac.parse::<i64>().ok()?)
}

/// `POST /_sim/insights {ad_account_id, rows: [{date, campaign_id, campaign_name,
/// adset_id, adset_name, ad_id, ad_name, spend, impressions, clicks, conversations}]}`.
pub fn parse_rows(req: &Value) -> Result<Vec<DayRow>, String> {
    let mut out = Vec::new();
    for r in req["rows"].as_array().ok_or("rows must be a list")? {
        let s = |k: &str| {
            r[k].as_str()
                .map(str::to_string)
                .ok_or(format!("{k} is required"))
        };
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        out.push(DayRow {
            date: NaiveDate::parse_from_str(&s("date")?, "%Y-%m-%d").map_err(|e| e.to_string())?,
            campaign_id: s("campaign_id")?,
            campaign_name: s("campaign_name").unwrap_or_default(),
            adset_id: s("adset_id")?,
            adset_name: s("adset_name").unwrap_or_default(),
            ad_id: s("ad_id")?,
            ad_name: s("ad_name").unwrap_or_default(),
            spend_cents: cents(&r["spend"]).ok_or("spend must be a decimal")?,
            impressions: n("impressions"),
            clicks: n("clicks"),
            conversations: n("conversations"),
        });
    }
    Ok(out)
}

fn err(status: u16, code: i64, message: &str) -> Answer {
    (
        status,
        json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": super::fbtrace()}}),
    )
}

fn day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The range a request asks for, as Meta reads `time_range` / `date_preset`.
fn range(
    params: &HashMap<String, String>,
    today: NaiveDate,
) -> Result<(NaiveDate, NaiveDate), Answer> {
    if let Some(tr) = params.get("time_range") {
        let v: Value = serde_json::from_str(tr).unwrap_or(Value::Null);
        return match (
            v["since"].as_str().and_then(day),
            v["until"].as_str().and_then(day),
        ) {
            (Some(a), Some(b)) if a <= b => Ok((a, b)),
            _ => Err(err(
                400,
                100,
                "(#100) Param time_range must be a JSON object with since and until dates (YYYY-MM-DD), since not after until",
            )),
        };
    }
    let preset = params
        .get("date_preset")
        .map(String::as_str)
        .unwrap_or("last_30d");
    let back = |n: u64| today - Days::new(n);
    Ok(match preset {
        "today" => (today, today),
        "yesterday" => (back(1), back(1)),
        "last_7d" => (back(7), back(1)),
        "last_14d" => (back(14), back(1)),
        "last_30d" => (back(30), back(1)),
        "last_90d" => (back(90), back(1)),
        other => {
            return Err(err(
                400,
                100,
                &format!(
                    "(#100) date_preset must be one of today, yesterday, last_7d, last_14d, last_30d, last_90d; got {other}"
                ),
            ));
        }
    })
}

#[derive(Default)]
struct Sum {
    first: Option<DayRow>,
    spend_cents: i64,
    impressions: u64,
    clicks: u64,
    conversations: u64,
}

/// `GET /act_{id}/insights`.
pub fn answer(
    account_id: &str,
    account: &AdAccount,
    rows: &[DayRow],
    params: &HashMap<String, String>,
    today: NaiveDate,
    caller_token: &str,
) -> Answer {
    let level = params.get("level").map(String::as_str).unwrap_or("account");
    if !["account", "campaign", "adset", "ad"].contains(&level) {
        return err(
            400,
            100,
            "(#100) level must be one of the following values: ad, adset, campaign, account",
        );
    }
    let (since, until) = match range(params, today) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let daily = match params.get("time_increment").map(String::as_str) {
        None | Some("all_days") => false,
        Some("1") => true,
        Some(other) => {
            return err(
                400,
                100,
                &format!(
                    "(#100) time_increment must be 1 or all_days in this simulator; got {other}"
                ),
            );
        }
    };
    // Group: (date bucket, object id at the level).
    let mut groups: BTreeMap<(NaiveDate, String), Sum> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.date >= since && r.date <= until) {
        let key = match level {
            "campaign" => r.campaign_id.clone(),
            "adset" => r.adset_id.clone(),
            "ad" => r.ad_id.clone(),
            _ => account_id.to_string(),
        };
        let bucket = if daily { r.date } else { since };
        let g = groups.entry((bucket, key)).or_default();
        g.first.get_or_insert_with(|| r.clone());
        g.spend_cents += r.spend_cents;
        g.impressions += r.impressions;
        g.clicks += r.clicks;
        g.conversations += r.conversations;
    }
    if groups.len() > account.insights_row_limit {
        return err(
            500,
            1,
            "Please reduce the amount of data you're asking for, then retry your request",
        );
    }
    let fields: Vec<&str> = params
        .get("fields")
        .map(|f| f.split(',').map(str::trim).collect())
        .unwrap_or_else(|| vec!["spend", "impressions"]);
    let all: Vec<Value> = groups
        .iter()
        .map(|((bucket, _), g)| {
            let r = g.first.as_ref().expect("a group has a row");
            let (start, stop) = if daily {
                (*bucket, *bucket)
            } else {
                (since, until)
            };
            let mut m = Map::new();
            for f in &fields {
                let v = match *f {
                    "spend" => json!(format!(
                        "{}.{:02}",
                        g.spend_cents / 100,
                        g.spend_cents % 100
                    )),
                    "impressions" => json!(g.impressions.to_string()),
                    "clicks" => json!(g.clicks.to_string()),
                    "account_currency" => json!(account.currency),
                    "account_id" => json!(account_id.trim_start_matches("act_")),
                    "actions" if g.conversations > 0 => json!([
                        {"action_type": CONVERSATION_ACTION, "value": g.conversations.to_string()}
                    ]),
                    "campaign_id" if level != "account" => json!(r.campaign_id),
                    "campaign_name" if level != "account" => json!(r.campaign_name),
                    "adset_id" if matches!(level, "adset" | "ad") => json!(r.adset_id),
                    "adset_name" if matches!(level, "adset" | "ad") => json!(r.adset_name),
                    "ad_id" if level == "ad" => json!(r.ad_id),
                    "ad_name" if level == "ad" => json!(r.ad_name),
                    _ => continue,
                };
                m.insert((*f).to_string(), v);
            }
            m.insert("date_start".into(), json!(start.to_string()));
            m.insert("date_stop".into(), json!(stop.to_string()));
            Value::Object(m)
        })
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let offset = params
        .get("after")
        .and_then(|a| b64.decode(a).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, 5000);
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let mut paging = json!({"cursors": {"before": b64.encode(offset.to_string()), "after": b64.encode((offset + page.len()).to_string())}});
    if offset + page.len() < all.len() {
        let mut next_params: Vec<String> = params
            .iter()
            .filter(|(k, _)| *k != "after" && *k != "access_token")
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        next_params.sort();
        paging["next"] = json!(format!(
            "https://graph.facebook.com/v25.0/{account_id}/insights?access_token={caller_token}&{}&after={}",
            next_params.join("&"),
            b64.encode((offset + page.len()).to_string())
        ));
    }
    (200, json!({"data": page, "paging": paging}))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
