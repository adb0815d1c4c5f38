use super::*;
use crate::store::{ActivityClick, ActivityConversion};

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn row(d: &str, campaign: &str, adset: &str, ad: &str, spend: &str) -> InsightRow {
    InsightRow {
        day: d.into(),
        campaign_id: campaign.into(),
        campaign_name: Some(format!("Campaign {campaign}")),
        adset_id: adset.into(),
        adset_name: Some(format!("Ad set {adset}")),
        ad_id: ad.into(),
        ad_name: Some(format!("Ad {ad}")),
        spend: spend.into(),
        impressions: 1000,
        clicks: 50,
        meta_conversations: 7,
    }
}

fn conv(name: &str, ms: i64, value: Option<&str>, currency: Option<&str>) -> ActivityConversion {
    ActivityConversion {
        event_name: name.into(),
        event_time_ms: ms,
        value: value.map(|v| v.parse().unwrap()),
        currency: currency.map(str::to_string),
    }
}

/// Asia/Kolkata is UTC+05:30: 2026-11-01 starts at 2026-10-31T18:30:00Z.
const NOV1_IST_MS: i64 = 1_793_471_400_000;
const H: i64 = 3_600_000;

fn input(level: Level) -> ReportInput {
    let tz: Tz = "Asia/Kolkata".parse().unwrap();
    let insights = vec![
        row("2026-11-01", "c1", "s1", "a1", "100.10"),
        row("2026-11-02", "c1", "s1", "a1", "200.05"),
        row("2026-11-01", "c1", "s2", "a2", "0.33"),
        row("2026-11-02", "c2", "s3", "a3", "50"),
        // Outside the range: not counted.
        row("2026-11-03", "c2", "s3", "a3", "999.99"),
    ];
    let a1 = AdActivity {
        clicks: vec![
            ActivityClick {
                clicked_at_ms: NOV1_IST_MS + H,
                has_clid: true,
            },
            ActivityClick {
                clicked_at_ms: NOV1_IST_MS + 30 * H,
                has_clid: false,
            },
            // 23:59 IST on Nov 2 is still Nov 2 (UTC already says Nov 2 18:29).
            ActivityClick {
                clicked_at_ms: NOV1_IST_MS + 48 * H - 60_000,
                has_clid: true,
            },
        ],
        conversations: vec![NOV1_IST_MS + H, NOV1_IST_MS + 30 * H],
        conversions: vec![
            conv("LeadSubmitted", NOV1_IST_MS + 2 * H, None, None),
            conv("Purchase", NOV1_IST_MS + 3 * H, Some("1499"), Some("INR")),
            conv("Purchase", NOV1_IST_MS + 31 * H, Some("14.99"), Some("USD")),
            // Not a lead nor a purchase: not counted.
            conv("ViewContent", NOV1_IST_MS + 3 * H, None, None),
            // After the range (Nov 3 IST).
            conv("Purchase", NOV1_IST_MS + 49 * H, Some("10"), Some("INR")),
        ],
        truncated: false,
    };
    let a3 = AdActivity {
        clicks: vec![ActivityClick {
            clicked_at_ms: NOV1_IST_MS + 26 * H,
            has_clid: true,
        }],
        conversations: vec![NOV1_IST_MS + 26 * H],
        conversions: vec![conv(
            "Purchase",
            NOV1_IST_MS + 27 * H,
            Some("0.5"),
            Some("INR"),
        )],
        truncated: false,
    };
    ReportInput {
        ad_account_id: "act_1".into(),
        currency: "INR".into(),
        tz,
        since: day("2026-11-01"),
        until: day("2026-11-02"),
        level,
        insights,
        activity: HashMap::from([
            ("a1".to_string(), a1),
            ("a3".to_string(), a3),
            // An ad Meta has no row for in the range: not in the report.
            ("a9".to_string(), AdActivity::default()),
        ]),
        generated_at_ms: NOV1_IST_MS,
    }
}

#[test]
fn the_report_adds_meta_s_spend_and_our_funnel_per_ad_exactly() {
    let v = assemble(&input(Level::Ad));
    let t = &v["totals"];
    assert_eq!(t["spend"], "350.48", "{v}");
    assert_eq!(t["impressions"], 4000);
    assert_eq!(t["clicks"], 4);
    assert_eq!(t["clicks_with_clid"], 3);
    assert_eq!(t["clicks_without_clid"], 1);
    assert_eq!(t["conversations"], 3);
    assert_eq!(t["leads"], 1);
    assert_eq!(t["purchases"], 3);
    // 1499 + 0.50 in INR; the USD purchase apart.
    assert_eq!(t["revenue"], "1499.50");
    assert!(
        t.get("revenue_other_currencies").is_none(),
        "apart, in other_currencies"
    );
    assert_eq!(
        v["rows"][0]["revenue_other_currencies"],
        json!({"USD": "14.99"})
    );
    assert_eq!(
        v["other_currencies"],
        json!([{"currency": "USD", "revenue": "14.99", "purchases": 1}])
    );
    assert_eq!(t["cost_per_conversation"], "116.83");
    assert_eq!(t["cost_per_lead"], "350.48");
    assert_eq!(t["cost_per_purchase"], "116.83");
    assert_eq!(t["roas"], "4.28");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["ad_id"], "a1");
    assert_eq!(rows[0]["spend"], "300.15");
    assert_eq!(rows[0]["ad_name"], "Ad a1");
    assert_eq!(rows[1]["ad_id"], "a3");
    assert_eq!(rows[2]["ad_id"], "a2");
    assert_eq!(rows[2]["cost_per_conversation"], Value::Null);
    assert_eq!(rows[2]["roas"], "0.00");
    let daily = v["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 2);
    assert_eq!(
        daily[0],
        json!({"date": "2026-11-01", "spend": "100.43", "revenue": "1499.00", "clicks": 1, "conversations": 1, "leads": 1, "purchases": 1})
    );
    assert_eq!(daily[1]["spend"], "250.05");
    assert_eq!(daily[1]["clicks"], 3);
    assert_eq!(daily[1]["revenue"], "0.50");
    assert_eq!(v["timezone"], "Asia/Kolkata");
    assert_eq!(v["generated_at"], "2026-10-31T18:30:00Z");
}

#[test]
fn campaign_and_ad_set_rows_are_the_sums_of_their_ads() {
    let ads = assemble(&input(Level::Ad));
    for level in [Level::Campaign, Level::Adset] {
        let v = assemble(&input(level));
        assert_eq!(v["totals"], ads["totals"], "{level:?}");
        let rows = v["rows"].as_array().unwrap();
        let spend: i128 = rows
            .iter()
            .map(|r| money::parse_minor(r["spend"].as_str().unwrap(), 2).unwrap())
            .sum();
        assert_eq!(money::format_minor(spend, 2), "350.48");
        assert!(rows.iter().all(|r| r.get("campaign_id").is_some()));
        assert!(!rows.iter().any(|r| r.get("ad_id").is_some()));
        assert_eq!(
            rows.iter().all(|r| r.get("adset_id").is_some()),
            level == Level::Adset
        );
    }
    let c = assemble(&input(Level::Campaign));
    assert_eq!(c["rows"][0]["campaign_id"], "c1");
    assert_eq!(c["rows"][0]["spend"], "300.48");
    assert_eq!(c["rows"][0]["purchases"], 2);
    assert_eq!(c["rows"][1]["spend"], "50.00");
}

#[test]
fn days_start_at_midnight_in_the_ad_account_s_time_zone() {
    let tz: Tz = "Asia/Kolkata".parse().unwrap();
    assert_eq!(day_start_ms(tz, day("2026-11-01")), NOV1_IST_MS);
    assert_eq!(local_day(tz, NOV1_IST_MS - 1), Some(day("2026-10-31")));
    // New York's day of the autumn change has 25 hours.
    let ny: Tz = "America/New_York".parse().unwrap();
    let a = day_start_ms(ny, day("2026-11-01"));
    let b = day_start_ms(ny, day("2026-11-02"));
    assert_eq!(b - a, 25 * H);
}

#[test]
fn the_query_is_checked_and_defaults_to_the_last_30_days() {
    let q = ReportQuery::parse(None, None, None).unwrap();
    assert_eq!(q.level, Level::Ad);
    let (s, u) = q.range(day("2026-12-02")).unwrap();
    assert_eq!((s, u), (day("2026-11-02"), day("2026-12-01")));
    for (since, until, level) in [
        (Some("2026-11-31"), None, None),
        (Some("2026-11-1"), None, None),
        (Some("2026-11-02"), Some("2026-11-01"), None),
        (Some("2026-01-01"), Some("2026-12-01"), None),
        (None, None, Some("account")),
    ] {
        assert!(
            ReportQuery::parse(since, until, level).is_err(),
            "{since:?} {until:?} {level:?}"
        );
    }
    let future = ReportQuery::parse(Some("2026-12-05"), Some("2026-12-06"), None).unwrap();
    assert!(future.range(day("2026-12-02")).is_err());
    // An until past today is today.
    let q = ReportQuery::parse(Some("2026-11-20"), Some("2026-12-20"), Some("campaign")).unwrap();
    assert_eq!(q.range(day("2026-12-02")).unwrap().1, day("2026-12-02"));
}

#[test]
fn meta_s_rows_are_read_with_numbers_as_text() {
    let r = InsightRow::from_meta(&json!({
        "campaign_id": "1", "campaign_name": "C", "adset_id": "2", "adset_name": "S",
        "ad_id": "3", "ad_name": "A", "spend": "12.34", "impressions": "1000", "clicks": "17",
        "actions": [{"action_type": "link_click", "value": "17"},
                    {"action_type": CONVERSATION_ACTION, "value": "9"}],
        "account_currency": "INR", "date_start": "2026-11-01", "date_stop": "2026-11-01"
    }))
    .unwrap();
    assert_eq!(
        (r.impressions, r.clicks, r.meta_conversations),
        (1000, 17, 9)
    );
    assert_eq!(r.spend, "12.34");
    assert!(InsightRow::from_meta(&json!({"date_start": "2026-11-01"})).is_none());
}

#[test]
fn a_day_is_cached_only_once_meta_no_longer_changes_it() {
    let today = day("2026-12-02");
    assert!(is_final(day("2026-11-03"), today));
    assert!(!is_final(day("2026-11-04"), today));
    assert!(!is_final(day("2026-12-01"), today));
    assert!(!is_final(today, today));
    // 2026-12-02T00:00+05:30 is 2026-12-01T18:30Z.
    assert_eq!(
        first_unsettled_day("Asia/Kolkata", 1_796_149_800_000),
        "2026-11-04"
    );
    assert_eq!(
        first_unsettled_day("Asia/Kolkata", 1_796_149_800_000 - 1),
        "2026-11-03"
    );
}
