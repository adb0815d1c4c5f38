//! Issue 16's "done when": for the seeded month (3 campaigns, 10 ads, 2,000 clicks, 300
//! leads, 80 purchases in INR and USD), `GET /v1/reports/ads`, the real `ctwa report`
//! binary (JSON and `--table`) and the `/report` page in headless Chromium agree to the
//! cent, through the local stack; the page with a wrong key shows the API's message.
//! The page's screenshot is saved under `target/test-output/`.

use ctwa_local::report_seed::{AD_ACCOUNT, SINCE, UNTIL};
use ctwa_tests::TestApp;
use ctwa_tests::browser::{self, Browser};
use ctwa_tests::report::{assert_report_is_the_seeded_month, seeded_month_app};
use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;
use common::{Run, ctwa_as};

/// `ctwa args...` with the stack's URL and key in the environment, in an empty
/// directory that is its HOME (nothing of the machine leaks in).
async fn ctwa(app: &TestApp, args: &[&str]) -> Run {
    ctwa_as(&app.base, &app.api_key, args).await
}

fn without_time(mut v: Value) -> Value {
    v.as_object_mut().expect("an object").remove("generated_at");
    v
}

fn output_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&d).expect("test output dir");
    d
}

/// The line of the `--table` sheet that starts with `first` (the row's first column).
fn line_of<'a>(table: &'a str, needle: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{table}"))
}

#[tokio::test]
async fn the_json_report_the_cli_and_the_page_agree_to_the_cent_for_the_seeded_month() {
    let (app, expected) = seeded_month_app().await;
    for level in ["ad", "adset", "campaign"] {
        let path = format!(
            "/v1/reports/ads?since={SINCE}&until={UNTIL}&level={level}&ad_account_id={AD_ACCOUNT}"
        );
        let (s, json) = app.get(&path, &app.api_key).await;
        assert_eq!(s, 200, "{json}");
        if level == "ad" {
            assert_report_is_the_seeded_month(&json, &expected);
        }

        // The CLI's JSON is the API's.
        let args = [
            "report",
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--level",
            level,
            "--ad-account-id",
            AD_ACCOUNT,
        ];
        let run = ctwa(&app, &args).await;
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let cli: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
        assert_eq!(without_time(cli), without_time(json.clone()), "{level}");

        // The sheet shows every row's figures as the JSON gives them, and the totals.
        let mut table_args = vec!["--table"];
        table_args.extend(args);
        let run = ctwa(&app, &table_args).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let sheet = run.stdout;
        let name_field = format!("{level}_name");
        // The sheet's figure columns, in order, end each line (a null is `-`).
        let figures = [
            "spend",
            "impressions",
            "clicks",
            "clicks_without_clid",
            "conversations",
            "leads",
            "purchases",
            "revenue",
            "cost_per_conversation",
            "cost_per_lead",
            "cost_per_purchase",
            "roas",
        ];
        let shown = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let check_line = |line: &str, of: &Value, what: &str| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert!(cells.len() > figures.len(), "{what}: {line}");
            let tail = &cells[cells.len() - figures.len()..];
            for (f, cell) in figures.iter().zip(tail) {
                assert_eq!(*cell, shown(&of[*f]), "{level} {what}, column {f}: {line}");
            }
        };
        for row in json["rows"].as_array().expect("rows") {
            let name = row[&name_field].as_str().expect("a name");
            let line = line_of(&sheet, name);
            check_line(line, row, name);
        }
        check_line(line_of(&sheet, "Total"), &json["totals"], "total");
        let usd = &json["other_currencies"][0];
        assert!(
            sheet.contains(&format!(
                "Revenue in USD: {} ({} purchases: counted in Purchases, not in Revenue or ROAS)",
                usd["revenue"].as_str().unwrap(),
                usd["purchases"]
            )),
            "{sheet}"
        );
        if level == "ad" {
            std::fs::write(output_dir().join("report-table.txt"), &sheet).expect("write");
        }

        // The page, in a real browser, shows the JSON to the character.
        let b = Browser::launch().await.expect("chromium");
        browser::check_page_matches(&b, &app.base, &app.api_key, &json).await;
        if level == "ad" {
            b.screenshot_full_page(&output_dir().join("report-seeded-month.png"))
                .await
                .expect("screenshot");
        }
    }
    // A wrong key: the API's own message, never a blank page.
    let b = Browser::launch().await.expect("chromium");
    let shown =
        browser::check_refused_key_shows_error(&b, &app.base, "ctwa_wrong_key", "invalid API key")
            .await;
    assert!(shown.contains("invalid API key"), "{shown}");
    app.stack.stop().await;
}
