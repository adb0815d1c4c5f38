//! The report page in headless Chromium against the JSON contract of
//! `GET /v1/reports/ads`: a small HTTP server in the test serves the page's real files
//! (`report_page::asset`, with the headers the ads function sends) and answers the
//! report route with a fixture of the contract, so the page is proved on its own: the
//! numbers it shows are the JSON's to the character, its charts draw, its table sorts, a
//! refused key or a dead server shows a clear error, and nothing breaks the CSP.

use ctwa_shared::report_page::{self, CONTENT_SECURITY_POLICY};
use ctwa_tests::browser::{self, Browser};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GOOD_KEY: &str = "ctwa_test_key";
/// A key for which the stand-in closes the connection unanswered (a network failure).
const DROP_KEY: &str = "ctwa_drop_connection";
const REFUSED_MESSAGE: &str = "invalid API key";

/// `cents` as the contract's decimal string with two decimals.
fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// `total` spread over `n` days by uneven weights, summing exactly to `total`.
fn spread(total: i64, n: usize, seed: usize) -> Vec<i64> {
    let weights: Vec<i64> = (0..n).map(|i| 4 + ((i * seed + 3) % 9) as i64).collect();
    let sum: i64 = weights.iter().sum();
    let mut out: Vec<i64> = weights.iter().map(|w| total * w / sum).collect();
    let rest = total - out.iter().sum::<i64>();
    *out.last_mut().expect("a day") += rest;
    out
}

/// A report of the contract at ad level: four ads in three campaigns (one ad, one ad set
/// and one campaign without a name), spends whose text order differs from their number
/// order, nulls where there is nothing to divide by, revenue in another currency kept
/// apart, and every day of November 2026.
fn fixture() -> Value {
    let rows = json!([
        {
            "campaign_id": "120210000000000101", "campaign_name": "Diwali sale",
            "adset_id": "120210000000000201", "adset_name": "Mumbai 25-44",
            "ad_id": "120210000000000301", "ad_name": "Diwali offer - video",
            "spend": "10250.00", "impressions": 180000, "meta_clicks": 2100, "meta_conversations": 600,
            "clicks": 950, "clicks_with_clid": 930, "clicks_without_clid": 20,
            "conversations": 700, "leads": 120, "purchases": 30, "revenue": "61500.00",
            "cost_per_conversation": "14.64", "cost_per_lead": "85.42",
            "cost_per_purchase": "341.67", "roas": "6.00"
        },
        {
            "campaign_id": "120210000000000101", "campaign_name": "Diwali sale",
            "adset_id": "120210000000000201", "adset_name": "Mumbai 25-44",
            "ad_id": "120210000000000302", "ad_name": "Diwali offer - carousel",
            "spend": "2480.50", "impressions": 52000, "meta_clicks": 640, "meta_conversations": 180,
            "clicks": 300, "clicks_with_clid": 296, "clicks_without_clid": 4,
            "conversations": 210, "leads": 35, "purchases": 9, "revenue": "18900.00",
            "cost_per_conversation": "11.81", "cost_per_lead": "70.87",
            "cost_per_purchase": "275.61", "roas": "7.62",
            "revenue_other_currencies": {"USD": "12.50"}
        },
        {
            "campaign_id": "120210000000000102", "campaign_name": "Wedding season",
            "adset_id": "120210000000000202", "adset_name": "Pune retarget",
            "ad_id": "120210000000000303", "ad_name": null,
            "spend": "950.00", "impressions": 21000, "meta_clicks": 260, "meta_conversations": 20,
            "clicks": 120, "clicks_with_clid": 118, "clicks_without_clid": 2,
            "conversations": 80, "leads": 12, "purchases": 0, "revenue": "0.00",
            "cost_per_conversation": "11.88", "cost_per_lead": "79.17",
            "cost_per_purchase": null, "roas": "0.00"
        },
        {
            "campaign_id": "120210000000000103", "campaign_name": null,
            "adset_id": "120210000000000203", "adset_name": null,
            "ad_id": "120210000000000304", "ad_name": "Test creative",
            "spend": "0.00", "impressions": 0, "meta_clicks": 0, "meta_conversations": 0,
            "clicks": 3, "clicks_with_clid": 3, "clicks_without_clid": 0,
            "conversations": 2, "leads": 0, "purchases": 0, "revenue": "0.00",
            "cost_per_conversation": "0.00", "cost_per_lead": null,
            "cost_per_purchase": null, "roas": null
        }
    ]);
    let days = 30;
    let spend = spread(1_368_050, days, 5);
    let revenue = spread(8_040_000, days, 7);
    let clicks = spread(1373, days, 2);
    let conversations = spread(992, days, 4);
    let leads = spread(167, days, 8);
    let purchases = spread(39, days, 3);
    let daily: Vec<Value> = (0..days)
        .map(|i| {
            json!({
                "date": format!("2026-11-{:02}", i + 1),
                "spend": money(spend[i]),
                "revenue": money(revenue[i]),
                "clicks": clicks[i],
                "conversations": conversations[i],
                "leads": leads[i],
                "purchases": purchases[i],
            })
        })
        .collect();
    json!({
        "ad_account_id": "act_1001",
        "currency": "INR",
        "timezone": "Asia/Kolkata",
        "since": "2026-11-01",
        "until": "2026-11-30",
        "level": "ad",
        "totals": {
            "spend": "13680.50", "impressions": 253000, "meta_clicks": 3000, "meta_conversations": 800,
            "clicks": 1373, "clicks_with_clid": 1347, "clicks_without_clid": 26,
            "conversations": 992, "leads": 167, "purchases": 39, "revenue": "80400.00",
            "cost_per_conversation": "13.79", "cost_per_lead": "81.92",
            "cost_per_purchase": "350.78", "roas": "5.88"
        },
        "rows": rows,
        "daily": daily,
        "truncated": false,
        "other_currencies": [{"currency": "USD", "revenue": "12.50", "purchases": 1}],
        "generated_at": "2026-12-02T06:00:00Z"
    })
}

/// One request the stand-in saw on the report route.
#[derive(Debug, Clone)]
struct Seen {
    query: String,
    authorization: Option<String>,
}

/// The stand-in: the page's files with the ads function's headers, and the report route
/// answering from `report`.
struct StandIn {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stand_in(report: Value) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base_url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let report = Arc::new(report.to_string());
    let log = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(answer(conn, report.clone(), log.clone()));
        }
    });
    StandIn {
        base_url,
        seen,
        task,
    }
}

/// One HTTP/1.1 exchange, then the connection closes.
async fn answer(mut conn: TcpStream, report: Arc<String>, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request.next().unwrap_or_default(),
        request.next().unwrap_or_default(),
    );
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_string());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let json_error = |code: &str, message: &str| {
        json!({"error": {"code": code, "message": message}})
            .to_string()
            .into_bytes()
    };
    let (status, headers, body): (&str, Vec<(&str, String)>, Vec<u8>) = if method != "GET" {
        (
            "405 Method Not Allowed",
            vec![("content-type", "application/json".into())],
            json_error("method_not_allowed", "GET only"),
        )
    } else if let Some(asset) = report_page::asset(path) {
        (
            "200 OK",
            vec![
                ("content-type", asset.content_type.into()),
                ("cache-control", asset.cache_control.into()),
                ("content-security-policy", CONTENT_SECURITY_POLICY.into()),
                ("x-content-type-options", "nosniff".into()),
                ("referrer-policy", "no-referrer".into()),
            ],
            asset.body.to_vec(),
        )
    } else if path == "/v1/reports/ads" {
        seen.lock().expect("seen").push(Seen {
            query: query.to_string(),
            authorization: authorization.clone(),
        });
        match authorization.as_deref() {
            Some(a) if a == format!("Bearer {GOOD_KEY}") => (
                "200 OK",
                vec![("content-type", "application/json".into())],
                report.as_bytes().to_vec(),
            ),
            Some(a) if a == format!("Bearer {DROP_KEY}") => return,
            _ => (
                "401 Unauthorized",
                vec![("content-type", "application/json".into())],
                json_error("unauthorized", REFUSED_MESSAGE),
            ),
        }
    } else {
        (
            "404 Not Found",
            vec![("content-type", "application/json".into())],
            json_error("not_found", "no such route"),
        )
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    let _ = conn.write_all(&bytes).await;
    let _ = conn.shutdown().await;
}

fn workspace_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

#[tokio::test]
async fn page_against_contract_refused_key_and_dead_server_show_an_error() {
    let server = stand_in(fixture()).await;
    let browser = Browser::launch().await.expect("Chromium starts");

    let shown = browser::check_refused_key_shows_error(
        &browser,
        &server.base_url,
        "ctwa_wrong_key",
        REFUSED_MESSAGE,
    )
    .await;
    assert!(shown.contains("refused"), "{shown}");
    let seen = server.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "one request: {seen:?}");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer ctwa_wrong_key")
    );
    assert!(
        !seen[0].query.contains("ctwa_"),
        "the key is never in the URL: {seen:?}"
    );

    // The connection dies unanswered: a network error, said so, never a blank page.
    browser::open_report(&browser, &server.base_url)
        .await
        .expect("the page opens");
    let state = browser::submit_form(&browser, DROP_KEY, "2026-11-01", "2026-11-30", "ad", None)
        .await
        .expect("the form submits");
    assert_eq!(state, "error");
    let shown = browser::visible_error(&browser)
        .await
        .expect("read #error")
        .expect("#error is visible");
    assert!(shown.contains("Could not reach the server"), "{shown}");

    // No key at all: said before anything is sent.
    browser::open_report(&browser, &server.base_url)
        .await
        .expect("the page opens");
    browser
        .eval("sessionStorage.clear(); document.getElementById('api-key').value = ''")
        .await
        .expect("clear");
    browser.click("#load").await.expect("Load");
    browser
        .wait_for(
            "document.body.dataset.state === 'error'",
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("error state");
    let shown = browser::visible_error(&browser)
        .await
        .expect("read")
        .expect("visible");
    assert!(shown.contains("Paste an API key"), "{shown}");
    assert_eq!(
        server.seen.lock().expect("seen").len(),
        2,
        "nothing sent without a key"
    );
    assert!(browser.csp_violations().await.expect("csp").is_empty());
}

#[tokio::test]
async fn page_against_contract_shows_the_json_to_the_cent_and_draws_its_charts() {
    let report = fixture();
    let server = stand_in(report.clone()).await;
    let browser = Browser::launch().await.expect("Chromium starts");

    // The page as served: the headers the ads function sends.
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/report", server.base_url))
        .send()
        .await
        .expect("GET /report");
    assert_eq!(
        page.headers()["content-security-policy"],
        CONTENT_SECURITY_POLICY
    );
    assert_eq!(page.headers()["cache-control"], "no-cache");

    browser::check_page_matches(&browser, &server.base_url, GOOD_KEY, &report).await;

    // What the page asked for: the form's range, level and account, the key as a bearer.
    let seen = server.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].query,
        "since=2026-11-01&until=2026-11-30&level=ad&ad_account_id=act_1001"
    );
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer ctwa_test_key")
    );

    // The screenshot (the README's): largest spend first, from the top, the whole page.
    browser
        .click("#rows thead button[data-sort='spend']")
        .await
        .expect("sort by spend");
    browser.eval("window.scrollTo(0, 0)").await.expect("scroll");
    let shot = workspace_dir().join("target/test-output/report.png");
    browser
        .screenshot_full_page(&shot)
        .await
        .expect("screenshot");
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a PNG of the page"
    );

    // The CSP is enforced and the watch sees a violation: an injected inline script is
    // blocked and reported (so "no violation" above could have failed).
    browser
        .eval(
            "(() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; \
             document.body.appendChild(s); })()",
        )
        .await
        .expect("inject");
    browser
        .wait_for(
            "window.__ctwaCsp.length > 0",
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("the inline script is reported");
    assert_eq!(
        browser
            .eval("window.__ran === undefined")
            .await
            .expect("ran"),
        json!(true)
    );

    // Reopened in the same tab, the key is there; "Forget key" removes it.
    browser::open_report(&browser, &server.base_url)
        .await
        .expect("the page opens");
    assert_eq!(
        browser
            .eval("document.getElementById('api-key').value")
            .await
            .expect("key"),
        json!(GOOD_KEY)
    );
    browser.click("#forget-key").await.expect("Forget key");
    assert_eq!(
        browser
            .eval("[sessionStorage.length, document.getElementById('api-key').value]")
            .await
            .expect("forgotten"),
        json!([0, ""])
    );
}
