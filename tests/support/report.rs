//! The seeded month of the per-ad report (`ctwa_local::report_seed`) on a test stack,
//! and the check of a report's JSON against what the seed says it must be.

use crate::{FIXTURE_PNID, TestApp, spawn_app};
use ctwa_local::report_seed::{self, AD_ACCOUNT, Expected};
use ctwa_shared::reports::money::format_minor;
use ctwa_shared::store::{AdAccountLink, AdInventory};
use serde_json::Value;

/// A connected stack with the month seeded: the ad account linked, its currency and time
/// zone and daily spend at the simulator, the clicks, conversations and conversions in
/// the data table.
pub async fn seeded_month_app() -> (TestApp, Expected) {
    seeded_month_app_with(None).await
}

/// As [`seeded_month_app`], the simulator refusing insights requests that would make
/// more than `row_limit` rows (Meta's "reduce the amount of data").
pub async fn seeded_month_app_with(row_limit: Option<u64>) -> (TestApp, Expected) {
    let app = spawn_app().await;
    app.connect_meta(&app.api_key).await;
    app.stack
        .data
        .link_ad_account(&AdAccountLink {
            ad_account_id: AD_ACCOUNT.into(),
            account_id: app.account_id.clone(),
            page_id: None,
            linked_at_ms: 0,
        })
        .await
        .expect("link the ad account");
    let mut account = report_seed::sim_ad_account();
    if let Some(l) = row_limit {
        account["insights_row_limit"] = l.into();
    }
    app.sim.sim.add_ad_account(&account);
    let mut expected = report_seed::seed_activity(&app.stack.data, &app.account_id, FIXTURE_PNID)
        .await
        .expect("seed the month");
    let rows = report_seed::sim_insights(&mut expected);
    let (s, v) = app.sim.sim.add_insights(&rows);
    assert_eq!(s, 200, "{v}");
    (app, expected)
}

fn sum<T: Copy + Into<i128>>(m: &std::collections::BTreeMap<String, T>) -> i128 {
    m.values().map(|v| (*v).into()).sum()
}

/// The ad-level report of the month says exactly what the seed wrote: per ad and in
/// total, counts, and money to the paisa; USD revenue apart.
#[track_caller]
pub fn assert_report_is_the_seeded_month(v: &Value, ex: &Expected) {
    assert_eq!(v["ad_account_id"], AD_ACCOUNT, "{v}");
    assert_eq!(v["currency"], "INR");
    assert_eq!(v["timezone"], "Asia/Kolkata");
    assert_eq!(v["since"], report_seed::SINCE);
    assert_eq!(v["until"], report_seed::UNTIL);
    assert_eq!(v["truncated"], false);
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 10, "{v}");
    let get =
        |m: &std::collections::BTreeMap<String, u64>, ad: &str| m.get(ad).copied().unwrap_or(0);
    for r in rows {
        let ad = r["ad_id"].as_str().expect("ad_id");
        let ctx = format!("ad {ad}: {r}");
        assert_eq!(r["spend"], format_minor(ex.spend[ad].into(), 2), "{ctx}");
        assert_eq!(r["clicks"], get(&ex.clicks, ad), "{ctx}");
        assert_eq!(
            r["clicks_without_clid"],
            get(&ex.clicks_without_clid, ad),
            "{ctx}"
        );
        assert_eq!(r["conversations"], get(&ex.conversations, ad), "{ctx}");
        assert_eq!(r["leads"], get(&ex.leads, ad), "{ctx}");
        assert_eq!(r["purchases"], get(&ex.purchases, ad), "{ctx}");
        assert_eq!(
            r["revenue"],
            format_minor(ex.revenue.get(ad).copied().unwrap_or(0).into(), 2),
            "{ctx}"
        );
    }
    let t = &v["totals"];
    assert_eq!(t["clicks"], 2_000);
    assert_eq!(t["leads"], 300);
    assert_eq!(t["purchases"], 80);
    assert_eq!(t["conversations"], sum(&ex.conversations) as u64);
    assert_eq!(
        t["clicks_without_clid"],
        sum(&ex.clicks_without_clid) as u64
    );
    assert_eq!(t["spend"], format_minor(sum(&ex.spend), 2));
    assert_eq!(t["revenue"], format_minor(sum(&ex.revenue), 2));
    assert_eq!(
        v["other_currencies"],
        serde_json::json!([{"currency": "USD", "revenue": format_minor(ex.revenue_usd.into(), 2), "purchases": ex.purchases_usd}])
    );
    let daily = v["daily"].as_array().expect("daily");
    assert_eq!(daily.len(), 30);
    let daily_clicks: u64 = daily.iter().map(|d| d["clicks"].as_u64().unwrap()).sum();
    assert_eq!(daily_clicks, 2_000);
    let daily_spend: i128 = daily
        .iter()
        .map(|d| ctwa_shared::reports::money::parse_minor(d["spend"].as_str().unwrap(), 2).unwrap())
        .sum();
    assert_eq!(daily_spend, sum(&ex.spend));
}
