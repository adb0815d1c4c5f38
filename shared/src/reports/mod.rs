//! What each ad earned (`GET /v1/reports/ads`): Meta's spend and delivery (the ad
//! account's insights, per ad and day) beside this deployment's own funnel of the same
//! ads (clicks captured, conversations first touched, leads and purchases delivered to
//! Meta, revenue), per campaign, ad set or ad, for a range of days in the ad account's
//! time zone.
//!
//! - Meta's rows are read at `level=ad` with `time_increment=1` and rolled up here, so
//!   campaign and ad set figures are the exact sums of their ads' (no second rounding).
//!   A day is kept in the data table once Meta no longer changes it ([`FINAL_AFTER_DAYS`]
//!   after it: spend is final the next day, but the actions Meta attributes to a day's
//!   impressions keep coming for its attribution windows), and then never asked again;
//!   younger days, today among them, are asked every time. A range Meta finds too big
//!   ("Please reduce the amount of data") is asked again in halves.
//! - Our side is read per ad from its index partitions (`gsi2`: clicks and first
//!   touches by click time; `gsi3`: conversions by the time they were recorded), by key
//!   range, at most [`ACTIVITY_LIMIT`] items of each kind per ad, [`CONCURRENCY`] ads at
//!   once.
//! - Money is integers of the currency's minor unit ([`money`]). Revenue in a currency
//!   other than the ad account's is reported apart, never added to it.

pub mod money;

use crate::ads::{AdsError, CallKind, Session};
use crate::error::ApiError;
use crate::store::{ActivityWindow, AdAccountLink, AdActivity, AdInventory};
use chrono::{Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use futures_util::StreamExt;
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// The longest range one report covers.
pub const MAX_RANGE_DAYS: u64 = 93;
/// Items of each kind (clicks, first touches, conversions) read per ad.
pub const ACTIVITY_LIMIT: usize = 20_000;
/// Ads read at once.
pub const CONCURRENCY: usize = 8;
/// Ads in one report (Meta's rows beyond it are refused with a clear error).
pub const MAX_ADS: usize = 1_000;
/// Insights rows per Graph page.
const INSIGHTS_PAGE: &str = "500";
/// A conversion is recorded up to 7 days after its `event_time` (Meta's limit), plus
/// the clock skew allowed: how far past the range conversions are read.
const LATE_RECORDING_MS: i64 = 7 * 86_400_000 + 3_600_000;
/// Days after which Meta's figures of a day no longer change (its attribution windows,
/// meta-api.md section 9): only then is the day cached.
pub const FINAL_AFTER_DAYS: u64 = 28;

/// Whether Meta's figures of `day` are final on `today` (the ad account's).
pub fn is_final(day: NaiveDate, today: NaiveDate) -> bool {
    day + Days::new(FINAL_AFTER_DAYS) < today
}

/// The first day (`YYYY-MM-DD`) whose figures are not yet final, in the time zone
/// `tz_name`, at `now_ms`: the report asks Meta for it and every later day each time.
pub fn first_unsettled_day(tz_name: &str, now_ms: i64) -> String {
    let tz: Tz = tz_name.parse().unwrap_or(Tz::UTC);
    let today = local_day(tz, now_ms).unwrap_or_else(|| Utc::now().date_naive());
    (today - Days::new(FINAL_AFTER_DAYS)).to_string()
}

/// A cached day's rows larger than this are not kept (a DynamoDB item holds 400 KB).
const MAX_CACHED_DAY_BYTES: usize = 350_000;
/// Meta's action for a messaging conversation started (7-day click window).
pub const CONVERSATION_ACTION: &str = "onsite_conversion.messaging_conversation_started_7d";
/// The conversions counted as leads and as purchases.
pub const LEAD_EVENTS: [&str; 1] = ["LeadSubmitted"];
pub const PURCHASE_EVENTS: [&str; 1] = ["Purchase"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Campaign,
    Adset,
    Ad,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "campaign" => Some(Self::Campaign),
            "adset" => Some(Self::Adset),
            "ad" => Some(Self::Ad),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Campaign => "campaign",
            Self::Adset => "adset",
            Self::Ad => "ad",
        }
    }
}

/// A report's range and level, as asked (`since`/`until` default to the 30 days through
/// yesterday in the ad account's time zone, known only once Meta answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportQuery {
    pub since: Option<NaiveDate>,
    pub until: Option<NaiveDate>,
    pub level: Level,
}

fn parse_day(name: &str, v: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    v.map(|d| {
        NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()
            .filter(|_| d.len() == 10)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a date YYYY-MM-DD")))
    })
    .transpose()
}

impl ReportQuery {
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        level: Option<&str>,
    ) -> Result<Self, ApiError> {
        let level = match level {
            None => Level::Ad,
            Some(l) => Level::parse(l)
                .ok_or_else(|| ApiError::bad_request("level must be campaign, adset or ad"))?,
        };
        let q = Self {
            since: parse_day("since", since)?,
            until: parse_day("until", until)?,
            level,
        };
        if let (Some(s), Some(u)) = (q.since, q.until) {
            check_range(s, u)?;
        }
        Ok(q)
    }

    /// The range, defaults filled in against `today` (the ad account's).
    pub fn range(&self, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), ApiError> {
        let yesterday = today - Days::new(1);
        let (since, until) = match (self.since, self.until) {
            (Some(s), Some(u)) => (s, u),
            (Some(s), None) => (s, (s + Days::new(MAX_RANGE_DAYS - 1)).min(today)),
            (None, Some(u)) => (u - Days::new(29), u),
            (None, None) => (yesterday - Days::new(29), yesterday),
        };
        check_range(since, until)?;
        if since > today {
            return Err(ApiError::bad_request(format!(
                "since {since} is after today ({today} in the ad account's time zone)"
            )));
        }
        Ok((since, until.min(today)))
    }
}

fn check_range(since: NaiveDate, until: NaiveDate) -> Result<(), ApiError> {
    if until < since {
        return Err(ApiError::bad_request("until must not be before since"));
    }
    if (until - since).num_days() >= MAX_RANGE_DAYS as i64 {
        return Err(ApiError::bad_request(format!(
            "a report covers at most {MAX_RANGE_DAYS} days; ask for a shorter range"
        )));
    }
    Ok(())
}

/// One ad's delivery on one day, as Meta's insights gave it (numbers kept as Meta's
/// text where they are money).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightRow {
    pub day: String,
    pub campaign_id: String,
    #[serde(default)]
    pub campaign_name: Option<String>,
    pub adset_id: String,
    #[serde(default)]
    pub adset_name: Option<String>,
    pub ad_id: String,
    #[serde(default)]
    pub ad_name: Option<String>,
    pub spend: String,
    pub impressions: u64,
    pub clicks: u64,
    /// Meta's own count of messaging conversations started ([`CONVERSATION_ACTION`]).
    pub meta_conversations: u64,
}

fn count(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.trim().parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

impl InsightRow {
    /// A row of `GET /act_{id}/insights?level=ad&time_increment=1`; `None` without an ad
    /// id or a day.
    pub fn from_meta(v: &Value) -> Option<Self> {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let meta_conversations = v["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["action_type"] == CONVERSATION_ACTION)
            .map(|a| count(&a["value"]))
            .sum();
        Some(Self {
            day: s("date_start")?,
            campaign_id: s("campaign_id").unwrap_or_default(),
            campaign_name: s("campaign_name"),
            adset_id: s("adset_id").unwrap_or_default(),
            adset_name: s("adset_name"),
            ad_id: s("ad_id")?,
            ad_name: s("ad_name"),
            spend: s("spend").unwrap_or_else(|| "0".into()),
            impressions: count(&v["impressions"]),
            clicks: count(&v["clicks"]),
            meta_conversations,
        })
    }
}

/// The ad account's currency and time zone (`GET /act_{id}?fields=currency,timezone_name`).
pub async fn ad_account_settings(s: &Session<'_>, act: &str) -> Result<(String, String), AdsError> {
    let (v, _) = s
        .call(
            act,
            Method::GET,
            act,
            &[("fields", "name,currency,timezone_name")],
            None,
            CallKind::Read,
        )
        .await?;
    let currency = v["currency"].as_str().unwrap_or("USD").to_ascii_uppercase();
    let tz = v["timezone_name"].as_str().unwrap_or("UTC").to_string();
    Ok((currency, tz))
}

/// Every insights row of `[since, until]`, following Meta's paging; a range Meta
/// refuses as too big is asked in halves (down to single days).
async fn insights_span(
    s: &Session<'_>,
    act: &str,
    since: NaiveDate,
    until: NaiveDate,
) -> Result<Vec<InsightRow>, AdsError> {
    let mut stack = vec![(since, until)];
    let mut rows = Vec::new();
    let path = format!("{act}/insights");
    while let Some((a, b)) = stack.pop() {
        let range = json!({"since": a.to_string(), "until": b.to_string()}).to_string();
        let mut after: Option<String> = None;
        let mut span_rows = Vec::new();
        let outcome = loop {
            let mut q = vec![
                ("level", "ad"),
                (
                    "fields",
                    "campaign_id,campaign_name,adset_id,adset_name,ad_id,ad_name,spend,impressions,clicks,actions,account_currency",
                ),
                ("time_range", range.as_str()),
                ("time_increment", "1"),
                ("limit", INSIGHTS_PAGE),
            ];
            if let Some(c) = &after {
                q.push(("after", c.as_str()));
            }
            match s
                .call(act, Method::GET, &path, &q, None, CallKind::Read)
                .await
            {
                Ok((v, _)) => {
                    span_rows.extend(
                        v["data"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(InsightRow::from_meta),
                    );
                    if span_rows.len() > MAX_ADS * MAX_RANGE_DAYS as usize {
                        break Err(AdsError::Invalid(format!(
                            "the ad account has more than {MAX_ADS} ads with delivery in this range: ask for a shorter range"
                        )));
                    }
                    match (
                        v["paging"]["next"].as_str(),
                        v["paging"]["cursors"]["after"].as_str(),
                    ) {
                        (Some(_), Some(c)) if after.as_deref() != Some(c) => {
                            after = Some(c.to_string());
                        }
                        _ => break Ok(()),
                    }
                }
                Err(AdsError::Meta(e)) if e.is_too_much_data() && a < b => {
                    let mid = a + Days::new(((b - a).num_days() / 2) as u64);
                    stack.push((mid + Days::new(1), b));
                    stack.push((a, mid));
                    span_rows.clear();
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        outcome?;
        rows.extend(span_rows);
    }
    Ok(rows)
}

/// Meta's rows for `[since, until]`: the final days ([`is_final`]) from the cache, the
/// rest from Meta; final days Meta answered are cached.
pub async fn insights(
    s: &Session<'_>,
    store: &dyn AdInventory,
    act: &str,
    since: NaiveDate,
    until: NaiveDate,
    today: NaiveDate,
) -> Result<Vec<InsightRow>, ApiError> {
    let mut by_day: BTreeMap<NaiveDate, Vec<InsightRow>> = BTreeMap::new();
    for (day, rows) in store
        .cached_insights(act, &since.to_string(), &until.to_string())
        .await?
    {
        let (Ok(d), Ok(rows)) = (
            NaiveDate::parse_from_str(&day, "%Y-%m-%d"),
            serde_json::from_str::<Vec<InsightRow>>(&rows),
        ) else {
            continue; // an unreadable cached day is asked again
        };
        if is_final(d, today) {
            by_day.insert(d, rows);
        }
    }
    // Contiguous spans of the days not cached.
    let mut spans: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    let mut d = since;
    while d <= until {
        if !by_day.contains_key(&d) {
            match spans.last_mut() {
                Some((_, end)) if *end + Days::new(1) == d => *end = d,
                _ => spans.push((d, d)),
            }
        }
        d = d + Days::new(1);
    }
    for (a, b) in spans {
        let rows = insights_span(s, act, a, b).await?;
        let mut fetched: BTreeMap<NaiveDate, Vec<InsightRow>> = BTreeMap::new();
        let mut day = a;
        while day <= b {
            fetched.insert(day, Vec::new());
            day = day + Days::new(1);
        }
        for r in rows {
            if let Some(v) = NaiveDate::parse_from_str(&r.day, "%Y-%m-%d")
                .ok()
                .and_then(|d| fetched.get_mut(&d))
            {
                v.push(r);
            }
        }
        for (day, rows) in fetched {
            if is_final(day, today) {
                let text = serde_json::to_string(&rows).unwrap_or_default();
                if text.len() <= MAX_CACHED_DAY_BYTES
                    && let Err(e) = store.cache_insights(act, &day.to_string(), &text).await
                {
                    tracing::warn!(ad_account = act, %day, error = %e, "could not cache a day's insights");
                }
            }
            by_day.insert(day, rows);
        }
    }
    Ok(by_day.into_values().flatten().collect())
}

/// Midnight of `day` in `tz`, as Unix milliseconds (the first instant of the day where a
/// time-zone change skips midnight).
pub fn day_start_ms(tz: Tz, day: NaiveDate) -> i64 {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    match tz.from_local_datetime(&midnight).earliest() {
        Some(t) => t.timestamp_millis(),
        None => {
            // Midnight skipped (a DST change at 00:00): the day starts an hour later.
            let one = day.and_hms_opt(1, 0, 0).expect("01:00 exists");
            tz.from_local_datetime(&one)
                .earliest()
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(|| Utc.from_utc_datetime(&midnight).timestamp_millis())
        }
    }
}

/// The day (in `tz`) of an instant.
pub fn local_day(tz: Tz, ms: i64) -> Option<NaiveDate> {
    tz.timestamp_millis_opt(ms).single().map(|t| t.date_naive())
}

/// Everything a report is made of, read; [`assemble`] makes the answer.
pub struct ReportInput {
    pub ad_account_id: String,
    pub currency: String,
    pub tz: Tz,
    pub since: NaiveDate,
    pub until: NaiveDate,
    pub level: Level,
    pub insights: Vec<InsightRow>,
    /// Per ad id.
    pub activity: HashMap<String, AdActivity>,
    pub generated_at_ms: i64,
}

/// Sums of one row (or of the totals, or of a day), money in minor units.
#[derive(Debug, Clone, Default)]
struct Tally {
    spend: i128,
    impressions: u64,
    meta_clicks: u64,
    meta_conversations: u64,
    clicks: u64,
    clicks_with_clid: u64,
    conversations: u64,
    leads: u64,
    purchases: u64,
    revenue: i128,
    /// Per other currency: (revenue in its minor units, purchases).
    other: BTreeMap<String, (i128, u64)>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.spend += o.spend;
        self.impressions += o.impressions;
        self.meta_clicks += o.meta_clicks;
        self.meta_conversations += o.meta_conversations;
        self.clicks += o.clicks;
        self.clicks_with_clid += o.clicks_with_clid;
        self.conversations += o.conversations;
        self.leads += o.leads;
        self.purchases += o.purchases;
        self.revenue += o.revenue;
        for (c, (r, p)) in &o.other {
            let e = self.other.entry(c.clone()).or_default();
            e.0 += r;
            e.1 += p;
        }
    }

    fn metrics(&self, currency: &str) -> Map<String, Value> {
        let e = money::exponent(currency);
        let m = |v: i128| money::format_minor(v, e);
        let per = |n: u64| (n > 0).then(|| m(money::div_round(self.spend, i128::from(n))));
        let roas = (self.spend > 0)
            .then(|| money::format_minor(money::div_round(self.revenue * 100, self.spend), 2));
        let mut out = Map::new();
        out.insert("spend".into(), json!(m(self.spend)));
        out.insert("impressions".into(), json!(self.impressions));
        out.insert("meta_clicks".into(), json!(self.meta_clicks));
        out.insert("meta_conversations".into(), json!(self.meta_conversations));
        out.insert("clicks".into(), json!(self.clicks));
        out.insert("clicks_with_clid".into(), json!(self.clicks_with_clid));
        out.insert(
            "clicks_without_clid".into(),
            json!(self.clicks - self.clicks_with_clid),
        );
        out.insert("conversations".into(), json!(self.conversations));
        out.insert("leads".into(), json!(self.leads));
        out.insert("purchases".into(), json!(self.purchases));
        out.insert("revenue".into(), json!(m(self.revenue)));
        out.insert(
            "cost_per_conversation".into(),
            json!(per(self.conversations)),
        );
        out.insert("cost_per_lead".into(), json!(per(self.leads)));
        out.insert("cost_per_purchase".into(), json!(per(self.purchases)));
        out.insert("roas".into(), json!(roas));
        if !self.other.is_empty() {
            out.insert(
                "revenue_other_currencies".into(),
                Value::Object(
                    self.other
                        .iter()
                        .map(|(c, (r, _))| {
                            (
                                c.clone(),
                                json!(money::format_minor(*r, money::exponent(c))),
                            )
                        })
                        .collect(),
                ),
            );
        }
        out
    }
}

/// One ad's funnel, by local day.
fn ad_tallies(
    a: &AdActivity,
    tz: Tz,
    currency: &str,
    in_range: impl Fn(NaiveDate) -> bool,
) -> BTreeMap<NaiveDate, Tally> {
    let mut days: BTreeMap<NaiveDate, Tally> = BTreeMap::new();
    let at = |ms: i64| local_day(tz, ms).filter(|d| in_range(*d));
    let mut cells: Vec<(NaiveDate, Tally)> = Vec::new();
    for c in &a.clicks {
        if let Some(d) = at(c.clicked_at_ms) {
            cells.push((
                d,
                Tally {
                    clicks: 1,
                    clicks_with_clid: u64::from(c.has_clid),
                    ..Tally::default()
                },
            ));
        }
    }
    for ms in &a.conversations {
        if let Some(d) = at(*ms) {
            cells.push((
                d,
                Tally {
                    conversations: 1,
                    ..Tally::default()
                },
            ));
        }
    }
    for c in &a.conversions {
        let Some(d) = at(c.event_time_ms) else {
            continue;
        };
        let mut t = Tally::default();
        if LEAD_EVENTS.contains(&c.event_name.as_str()) {
            t.leads = 1;
        } else if PURCHASE_EVENTS.contains(&c.event_name.as_str()) {
            t.purchases = 1;
            let cur = c.currency.clone().unwrap_or_else(|| currency.to_string());
            let minor = c
                .value
                .as_ref()
                .and_then(|v| money::parse_minor(&v.to_string(), money::exponent(&cur)))
                .unwrap_or(0);
            if cur == currency {
                t.revenue = minor;
            } else {
                t.other.insert(cur, (minor, 1));
            }
        } else {
            continue;
        }
        cells.push((d, t));
    }
    for (d, t) in cells {
        days.entry(d).or_default().add(&t);
    }
    days
}

/// The row key and names of an ad at `level`.
fn row_key(level: Level, r: &InsightRow) -> String {
    match level {
        Level::Campaign => r.campaign_id.clone(),
        Level::Adset => r.adset_id.clone(),
        Level::Ad => r.ad_id.clone(),
    }
}

fn row_names(level: Level, r: &InsightRow) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("campaign_id".into(), json!(r.campaign_id));
    m.insert("campaign_name".into(), json!(r.campaign_name));
    if level != Level::Campaign {
        m.insert("adset_id".into(), json!(r.adset_id));
        m.insert("adset_name".into(), json!(r.adset_name));
    }
    if level == Level::Ad {
        m.insert("ad_id".into(), json!(r.ad_id));
        m.insert("ad_name".into(), json!(r.ad_name));
    }
    m
}

/// The report: totals, rows of the level (spend descending), every day of the range,
/// and revenue in other currencies apart.
pub fn assemble(input: &ReportInput) -> Value {
    let ReportInput {
        tz, since, until, ..
    } = *input;
    let currency = input.currency.as_str();
    let e = money::exponent(currency);
    let in_range = |d: NaiveDate| d >= since && d <= until;
    // Each ad's latest names and place (the last day's row), its spend by day.
    let mut ads: BTreeMap<String, &InsightRow> = BTreeMap::new();
    let mut per_ad: BTreeMap<String, Tally> = BTreeMap::new();
    let mut per_day: BTreeMap<NaiveDate, Tally> = BTreeMap::new();
    let mut d = since;
    while d <= until {
        per_day.insert(d, Tally::default());
        d = d + Days::new(1);
    }
    for r in &input.insights {
        let Some(day) = NaiveDate::parse_from_str(&r.day, "%Y-%m-%d")
            .ok()
            .filter(|d| in_range(*d))
        else {
            continue;
        };
        let t = Tally {
            spend: money::parse_minor(&r.spend, e).unwrap_or(0),
            impressions: r.impressions,
            meta_clicks: r.clicks,
            meta_conversations: r.meta_conversations,
            ..Tally::default()
        };
        per_ad.entry(r.ad_id.clone()).or_default().add(&t);
        per_day.entry(day).or_default().add(&t);
        match ads.get(&r.ad_id) {
            Some(prev) if prev.day > r.day => {}
            _ => {
                ads.insert(r.ad_id.clone(), r);
            }
        }
    }
    for (ad, a) in &input.activity {
        if !ads.contains_key(ad) {
            continue;
        }
        for (day, t) in ad_tallies(a, tz, currency, in_range) {
            per_ad.entry(ad.clone()).or_default().add(&t);
            per_day.entry(day).or_default().add(&t);
        }
    }
    let mut rows: BTreeMap<String, (Map<String, Value>, Tally)> = BTreeMap::new();
    let mut totals = Tally::default();
    for (ad, t) in &per_ad {
        let Some(r) = ads.get(ad) else { continue };
        let entry = rows
            .entry(row_key(input.level, r))
            .or_insert_with(|| (row_names(input.level, r), Tally::default()));
        entry.1.add(t);
        totals.add(t);
    }
    let mut rows: Vec<(String, Map<String, Value>, Tally)> =
        rows.into_iter().map(|(k, (n, t))| (k, n, t)).collect();
    rows.sort_by(|a, b| b.2.spend.cmp(&a.2.spend).then(a.0.cmp(&b.0)));
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(_, mut names, t)| {
            names.extend(t.metrics(currency));
            Value::Object(names)
        })
        .collect();
    let daily: Vec<Value> = per_day
        .iter()
        .map(|(d, t)| {
            json!({
                "date": d.to_string(),
                "spend": money::format_minor(t.spend, e),
                "revenue": money::format_minor(t.revenue, e),
                "clicks": t.clicks,
                "conversations": t.conversations,
                "leads": t.leads,
                "purchases": t.purchases,
            })
        })
        .collect();
    let other: Vec<Value> = totals
        .other
        .iter()
        .map(|(c, (r, p))| {
            json!({"currency": c, "revenue": money::format_minor(*r, money::exponent(c)), "purchases": p})
        })
        .collect();
    let truncated = input.activity.values().any(|a| a.truncated);
    let generated = Utc
        .timestamp_millis_opt(input.generated_at_ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    json!({
        "ad_account_id": input.ad_account_id,
        "currency": currency,
        "timezone": tz.name(),
        "since": since.to_string(),
        "until": until.to_string(),
        "level": input.level.as_str(),
        // The totals' revenue in other currencies is `other_currencies` (with counts).
        "totals": Value::Object({
            let mut m = totals.metrics(currency);
            m.remove("revenue_other_currencies");
            m
        }),
        "rows": rows,
        "daily": daily,
        "other_currencies": other,
        "truncated": truncated,
        "generated_at": generated,
    })
}

/// The whole report for the caller's ad account.
pub async fn ad_report(
    s: &Session<'_>,
    store: &dyn AdInventory,
    link: &AdAccountLink,
    q: &ReportQuery,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let act = link.ad_account_id.as_str();
    let (currency, tz_name) = ad_account_settings(s, act).await?;
    let tz: Tz = tz_name.parse().unwrap_or(Tz::UTC);
    let today = local_day(tz, now_ms).unwrap_or_else(|| Utc::now().date_naive());
    let (since, until) = q.range(today)?;
    let rows = insights(s, store, act, since, until, today).await?;
    let mut ad_ids: Vec<String> = rows.iter().map(|r| r.ad_id.clone()).collect();
    ad_ids.sort();
    ad_ids.dedup();
    if ad_ids.len() > MAX_ADS {
        return Err(ApiError::bad_request(format!(
            "the ad account has {} ads with delivery in this range, more than the {MAX_ADS} a report reads: ask for a shorter range",
            ad_ids.len()
        )));
    }
    let from_ms = day_start_ms(tz, since);
    let to_ms = day_start_ms(tz, until + Days::new(1));
    let window = ActivityWindow {
        from_ms,
        to_ms,
        // A conversion's event_time may precede its recording by up to 7 days (and
        // follow it by the clock skew allowed).
        conversions_from_ms: from_ms - 3_600_000,
        conversions_to_ms: to_ms + LATE_RECORDING_MS,
        limit: ACTIVITY_LIMIT,
    };
    let account = link.account_id.as_str();
    let activity: HashMap<String, AdActivity> = futures_util::stream::iter(ad_ids)
        .map(|ad| async move {
            let a = store.ad_activity(account, &ad, window).await;
            a.map(|a| (ad, a))
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(assemble(&ReportInput {
        ad_account_id: act.to_string(),
        currency,
        tz,
        since,
        until,
        level: q.level,
        insights: rows,
        activity,
        generated_at_ms: now_ms,
    }))
}

#[cfg(test)]
mod tests;
