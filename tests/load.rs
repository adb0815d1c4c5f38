//! The load test with accounting, small enough for every CI run (scripts/loadtest.sh runs
//! the 100,000-webhook version against a release build): a realistic mix of signed
//! webhooks of the three channels (WhatsApp Cloud API, Messenger, Instagram Direct)
//! posted concurrently to the local stack, then every message, click and first touch
//! of each channel accounted for in the tables by the same rules.

use ctwa_local::loadgen;
use ctwa_tests::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_webhooks_of_three_channels_each_message_once_each_click_once_first_touch_the_earliest()
 {
    let app = spawn_app().await;
    let target = loadgen::Target {
        base_url: app.base.clone(),
        app_secret: app.cfg.app_secret.clone(),
        inbox_table: app.cfg.inbox_table.clone(),
        data_table: app.cfg.data_table.clone(),
        dynamodb: app.clients.dynamodb.clone(),
    };
    let mut plan = loadgen::Plan::new(5_000);
    plan.accounts = 3;
    plan.customers = 60;
    plan.concurrency = 16;
    // Bounded: the posting and the wait for capture stop by themselves. Generous: every
    // webhook goes through a function's bootstrap and the IAM gateway, on 2 cores shared
    // with DynamoDB Local; speed is measured by scripts/bench.sh, not here.
    let deadline = Instant::now() + Duration::from_secs(180);
    let report = loadgen::run(&plan, &target, deadline)
        .await
        .expect("load test runs");
    eprintln!("load test report: {report}");
    let w = &report["workload"];
    assert_eq!(
        report["post"]["timed_out"], false,
        "the stack took only {}/s, too slow to post 5,000 webhooks within the 180 s bound (is DynamoDB Local overloaded? scripts/services.sh stop, then start it again): {report}",
        report["post"]["per_second"]
    );
    assert_eq!(w["sent"], 5_000);
    assert_eq!(w["duplicate_resends"], 500, "10% exact re-sends");
    assert!(w["referrals"].as_u64().unwrap() > 1_000, "{w}");
    assert!(w["status_updates"].as_u64().unwrap() > 200, "{w}");
    // The mix: 20% Messenger, 20% Instagram deliveries (several events in some, echoes
    // and receipts among them), the rest WhatsApp.
    for (name, share) in [("whatsapp", 0.6), ("messenger", 0.2), ("instagram", 0.2)] {
        let c = &w["channels"][name];
        let unique = c["unique"].as_f64().unwrap() / w["unique"].as_f64().unwrap();
        assert!((unique - share).abs() < 0.05, "{name}: {c}");
        assert!(c["referrals"].as_u64().unwrap() > 150, "{name}: {c}");
        assert!(c["conversations"].as_u64().unwrap() > 50, "{name}: {c}");
        if name != "whatsapp" {
            assert!(
                c["echoes_and_receipts"].as_u64().unwrap() > 50,
                "{name}: {c}"
            );
        }
        // Each channel by the same rules: all its messages, clicks and conversations,
        // nothing twice, nothing misfiled, first touch the earliest ad, last click right.
        let got = &report["channels"][name];
        assert_eq!(got["lost"], 0, "{name} lost: {report}");
        assert_eq!(got["duplicated"], 0, "{name} duplicated: {report}");
        assert_eq!(got["first_touch_wrong"], 0, "{name}: {report}");
        assert_eq!(got["misfiled_clicks"], 0, "{name}: {report}");
        assert_eq!(got["attribution_wrong"], 0, "{name}: {report}");
        assert_eq!(got["clicks"], c["referrals"], "{name}: {report}");
        assert_eq!(got["conversations"], c["conversations"], "{name}: {report}");
        assert!(
            got["attribution_checks"].as_u64().unwrap() > 100,
            "{name}: {report}"
        );
    }
    assert_eq!(report["post"]["gave_up"], 0, "{report}");
    assert_eq!(report["post"]["http_4xx"], 0, "{report}");
    assert_eq!(report["lost"], 0, "nothing lost: {report}");
    assert_eq!(report["duplicated"], 0, "nothing twice: {report}");
    assert_eq!(report["first_touch_wrong"], 0, "{report}");
    assert_eq!(
        report["accounting"]["misfiled_clicks"], 0,
        "clicks filed on the wrong customer: {report}"
    );
    assert!(
        report["accounting"]["attribution"]["checks"]
            .as_u64()
            .unwrap()
            > 100,
        "{report}"
    );
    assert_eq!(
        report["attributed_after_event_time"], 0,
        "conversions attributed to a click after their event_time: {report}"
    );
    assert_eq!(report["attribution_wrong"], 0, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    // The webhook answers agree: each unique message reported stored exactly once.
    assert_eq!(report["post"]["stored_reported"], w["messages"], "{report}");
    app.stack.stop().await;
}
