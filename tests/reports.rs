//! What each ad earned (`GET /v1/reports/ads`) through the local stack: a seeded month
//! (3 campaigns, 10 ads, 2,000 clicks, 300 leads, 80 purchases in INR and USD) against
//! Meta's insights at the Graph simulator, rolled up per ad set and campaign, cached for
//! the days that are over, asked again in halves when Meta finds a range too big, and
//! walled off per tenant.

use ctwa_local::report_seed::{AD_ACCOUNT, SINCE, UNTIL};
use ctwa_shared::reports::money::parse_minor;
use ctwa_tests::report::{
    assert_report_is_the_seeded_month, seeded_month_app, seeded_month_app_with,
};
use ctwa_tests::*;
use serde_json::Value;

fn month(level: &str) -> String {
    format!("/v1/reports/ads?since={SINCE}&until={UNTIL}&level={level}&ad_account_id={AD_ACCOUNT}")
}

/// The insights requests Meta (the simulator) received, oldest first.
fn insights_requests(app: &TestApp) -> Vec<Value> {
    app.sim
        .sim
        .requests()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/insights")))
        .collect()
}

fn insights_calls(app: &TestApp) -> usize {
    insights_requests(app).len()
}

#[tokio::test]
async fn the_seeded_month_is_reported_per_ad_to_the_paisa_and_final_days_cached() {
    let (app, expected) = seeded_month_app().await;
    let (s, v) = app.get(&month("ad"), &app.api_key).await;
    assert_eq!(s, 200, "{v}");
    assert_report_is_the_seeded_month(&v, &expected);
    let first = insights_calls(&app);
    assert!(first >= 1, "Meta was asked");

    // The second report asks Meta only for the days whose figures may still change
    // (the last 28); the month's final days come from the cache.
    let seen = insights_calls(&app);
    let (s, again) = app.get(&month("ad"), &app.api_key).await;
    assert_eq!(s, 200);
    let unsettled = ctwa_shared::reports::first_unsettled_day(
        ctwa_local::report_seed::TIMEZONE,
        ctwa_shared::time::now_millis(),
    );
    let asked: Vec<String> = insights_requests(&app)[seen..]
        .iter()
        .map(|r| {
            let range: Value =
                serde_json::from_str(r["params"]["time_range"].as_str().unwrap()).unwrap();
            range["since"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        asked.iter().all(|since| *since >= unsettled),
        "only days from {unsettled} on are asked again: {asked:?}"
    );
    if UNTIL < unsettled.as_str() {
        assert!(asked.is_empty(), "a final month comes from the cache");
    } else {
        assert!(
            !asked.is_empty(),
            "days that may still change are asked again"
        );
    }
    assert!(insights_calls(&app) <= 2 * first);
    assert_eq!(again["rows"], v["rows"]);
    assert_eq!(again["totals"], v["totals"]);

    // Ad sets and campaigns are the exact sums of their ads.
    for (level, rows) in [("adset", 5), ("campaign", 3)] {
        let (s, r) = app.get(&month(level), &app.api_key).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["totals"], v["totals"], "{level}");
        let list = r["rows"].as_array().unwrap();
        assert_eq!(list.len(), rows, "{level}: {r}");
        for field in ["spend", "revenue"] {
            let total: i128 = list
                .iter()
                .map(|x| parse_minor(x[field].as_str().unwrap(), 2).unwrap())
                .sum();
            assert_eq!(
                total,
                parse_minor(v["totals"][field].as_str().unwrap(), 2).unwrap(),
                "{level} {field}"
            );
        }
        for field in ["clicks", "conversations", "leads", "purchases"] {
            let total: u64 = list.iter().map(|x| x[field].as_u64().unwrap()).sum();
            assert_eq!(
                total,
                v["totals"][field].as_u64().unwrap(),
                "{level} {field}"
            );
        }
        assert!(list.iter().all(|x| x.get("ad_id").is_none()), "{level}");
    }
    // With one ad account linked, ad_account_id may be left out.
    let (s, r) = app
        .get(
            &format!("/v1/reports/ads?since={SINCE}&until={UNTIL}"),
            &app.api_key,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["totals"], v["totals"]);
    app.stack.stop().await;
}

#[tokio::test]
async fn a_range_meta_finds_too_big_is_asked_again_in_halves() {
    // 10 ads x 30 days = 300 daily rows; Meta refuses more than 100 at once.
    let (app, expected) = seeded_month_app_with(Some(100)).await;
    let (s, v) = app.get(&month("ad"), &app.api_key).await;
    assert_eq!(s, 200, "{v}");
    assert_report_is_the_seeded_month(&v, &expected);
    let refused = insights_calls(&app);
    assert!(refused > 2, "the month was split: {refused} insights calls");
    app.stack.stop().await;
}

#[tokio::test]
async fn bad_queries_and_other_tenants_ad_accounts_are_refused_before_meta() {
    let (app, _) = seeded_month_app().await;
    let before = app.sim.sim.requests().len();
    for (q, status, needle) in [
        ("since=2026-13-01", 400, "since must be a date"),
        (
            "since=2026-11-30&until=2026-11-01",
            400,
            "until must not be before since",
        ),
        ("since=2026-01-01&until=2026-11-30", 400, "at most 93 days"),
        ("level=account", 400, "level must be"),
        ("ad_account_id=act_1", 403, "does not belong"),
        ("ad_account_id=nope", 400, "not an ad account id"),
    ] {
        let (s, v) = app.get(&format!("/v1/reports/ads?{q}"), &app.api_key).await;
        assert_eq!(s, status, "{q}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{q}: {v}"
        );
    }
    // Another tenant cannot read this account's ad account's report.
    let (other, other_key) = app.add_account("990000000000777").await;
    let (s, v) = app
        .get(
            &format!("/v1/reports/ads?ad_account_id={AD_ACCOUNT}"),
            &other_key,
        )
        .await;
    assert_eq!(s, 403, "{other}: {v}");
    // ... and without an ad account of its own it is told how to get one.
    let (s, v) = app.get("/v1/reports/ads", &other_key).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no ad account"),
        "{v}"
    );
    assert_eq!(app.sim.sim.requests().len(), before, "nothing reached Meta");
    let (s, _): (u16, Value) = app.get("/v1/reports/ads", "ctwa_wrong").await;
    assert_eq!(s, 401);
    app.stack.stop().await;
}
