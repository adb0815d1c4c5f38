//! Click-to-Messenger and click-to-Instagram-Direct through the real `ctwa` binary and
//! the real local stack: a Page with its Instagram account registered in the Graph
//! simulator, the account connected with a code granted on them and both linked by the
//! operator, then only the CLI: each channel's dataset, a signed `page` / `instagram`
//! webhook with an ad click, the conversation by PSID / IGSID with its first touch, and
//! a purchase sent to Meta once with the channel's keys.
//!
//! Every run starts from an empty environment, in an empty temporary directory that is
//! its HOME, so nothing of the machine leaks in.

use ctwa_shared::meta::connection::REQUIRED_SCOPES;
use ctwa_tests::{FIXTURE_WABA, TestApp, eventually, spawn_app, unique};
use serde_json::{Value, json};
use std::time::Duration;

mod common;
use common::{Run, ctwa_as};

const PAGE: &str = "1122334455";
const IG: &str = "17841400000000001";
const PAGE_AD: &str = "120000000000000011";
const IG_AD: &str = "120000000000000012";

/// `ctwa args...` with `url` and `key` in the environment, in an empty directory that
/// is its HOME. Prints the command and what it wrote (`--nocapture` shows it).
async fn ctwa(url: &str, key: &str, args: &[&str]) -> Run {
    let run = ctwa_as(url, key, args).await;
    // The command as typed, without the secrets it carries.
    let shown: Vec<&str> = args
        .iter()
        .enumerate()
        .map(|(i, a)| match i.checked_sub(1).map(|p| args[p]) {
            Some("--app-secret" | "--code") => "<redacted>",
            _ => a,
        })
        .collect();
    println!("$ ctwa {}\n{}{}", shown.join(" "), run.stderr, run.stdout);
    run
}

/// A new PSID / IGSID shaped like Meta's (digits), unique to this run.
fn scoped_id(prefix: &str) -> String {
    let u = unique("x");
    let hex = u.rsplit('-').next().expect("hex");
    let n = u64::from_str_radix(hex, 16).expect("unique ends in hex");
    format!("{prefix}{n:015}")
}

/// The conversation of a Messenger (`--psid`) or Instagram (`--igsid`) customer, once
/// its ad click is captured.
async fn wait_for_first_touch(app: &TestApp, flag: &str, id: &str, ad: &str) -> Value {
    let (url, key) = (app.base.clone(), app.api_key.clone());
    eventually("the ad click is captured", Duration::from_secs(30), || {
        let (url, key) = (url.clone(), key.clone());
        let (flag, id) = (flag.to_string(), id.to_string());
        async move {
            let v = ctwa(&url, &key, &["conversations", &flag, &id])
                .await
                .ok()
                .json();
            let conv = v["conversations"][0].clone();
            (conv["metadata"]["ctwa_source_id"] == ad).then_some(conv)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn messenger_and_instagram_through_the_cli() {
    let app = spawn_app().await;
    let (url, key, secret) = (
        app.base.clone(),
        app.api_key.clone(),
        app.cfg.app_secret.clone(),
    );
    let op = app.operator_key().await;
    let mut outputs: Vec<String> = Vec::new();
    let mut run = async |key: &str, args: &[&str]| {
        let r = ctwa(&url, key, args).await;
        outputs.push(format!("{}{}", r.stdout, r.stderr));
        r
    };

    // Meta's side: the Page and its Instagram account, a code granted on both with each
    // channel's events permission.
    app.sim
        .sim
        .add_page(&json!({"page_id": PAGE, "name": "Succulents", "instagram_account_id": IG}))
        .expect("page");
    let mut scopes: Vec<&str> = REQUIRED_SCOPES.to_vec();
    scopes.extend(["page_events", "instagram_manage_events"]);
    let code = app.sim.sim.create_code(&json!({
        "scopes": scopes, "waba_id": FIXTURE_WABA,
        "page_ids": [PAGE], "instagram_account_ids": [IG],
    }))["code"]
        .as_str()
        .expect("code")
        .to_string();
    let v = run(&key, &["exchange-code", "--code", &code])
        .await
        .ok()
        .json();
    assert_eq!(v["connected"], true, "{v}");

    // The operator links both, verified with the tenant's token.
    let v = run(
        &op,
        &["admin", "page", "link", "--account", &app.account_id, PAGE],
    )
    .await
    .ok()
    .json();
    assert_eq!(v["route"]["status"], "verified", "{v}");
    let v = run(
        &op,
        &[
            "admin",
            "instagram-accounts",
            "link",
            "--account",
            &app.account_id,
            IG,
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(v["route"]["status"], "verified", "{v}");
    // An account key is not an operator key.
    run(
        &key,
        &["admin", "page", "link", "--account", &app.account_id, PAGE],
    )
    .await
    .exit(1);

    // Each channel's dataset, once.
    let page_ds = run(&key, &["dataset", "create", "--page-id", PAGE])
        .await
        .ok()
        .json();
    assert_eq!(
        (&page_ds["created"], &page_ds["page_id"]),
        (&json!(true), &json!(PAGE)),
        "{page_ds}"
    );
    let again = run(&key, &["dataset", "create", "--page-id", PAGE])
        .await
        .ok()
        .json();
    assert_eq!(
        (&again["dataset_id"], &again["created"]),
        (&page_ds["dataset_id"], &json!(false))
    );
    let ig_ds = run(&key, &["dataset", "create", "--instagram-account-id", IG])
        .await
        .ok()
        .json();
    assert_eq!(ig_ds["instagram_account_id"], IG, "{ig_ds}");
    assert_ne!(ig_ds["dataset_id"], page_ds["dataset_id"]);

    // The customers tap the ads: signed Messenger and Instagram webhooks.
    let psid = scoped_id("24");
    let igsid = scoped_id("17");
    let r = run(
        &key,
        &[
            "webhook",
            "simulate",
            "--channel",
            "messenger",
            "--page-id",
            PAGE,
            "--from",
            &psid,
            "--source-id",
            PAGE_AD,
            "--app-secret",
            &secret,
        ],
    )
    .await
    .ok();
    assert_eq!(r.json()["stored"], 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("simulated messenger message m_")
            && r.stderr
                .contains(&format!("from {psid} to Page {PAGE}: ad {PAGE_AD}")),
        "{}",
        r.stderr
    );
    let r = run(
        &key,
        &[
            "webhook",
            "simulate",
            "--channel",
            "instagram",
            "--instagram-account-id",
            IG,
            "--from",
            &igsid,
            "--source-id",
            IG_AD,
            "--app-secret",
            &secret,
        ],
    )
    .await
    .ok();
    assert_eq!(r.json()["stored"], 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "from {igsid} to Instagram account {IG}: ad {IG_AD}"
        )),
        "{}",
        r.stderr
    );

    // The first touch of each, found by PSID / IGSID.
    let conv = wait_for_first_touch(&app, "--psid", &psid, PAGE_AD).await;
    assert_eq!(conv["channel"], "messenger", "{conv}");
    assert_eq!(conv["business_id"], PAGE);
    assert_eq!(conv["customer"]["psid"], psid.as_str());
    assert_eq!(conv["metadata"]["ctwa_source_type"], "ADS");
    let ig_conv = wait_for_first_touch(&app, "--igsid", &igsid, IG_AD).await;
    assert_eq!(ig_conv["channel"], "instagram", "{ig_conv}");
    assert_eq!(ig_conv["customer"]["igsid"], igsid.as_str());
    // A plain message later: acknowledged and stored, no new click.
    let r = run(
        &key,
        &[
            "webhook",
            "simulate",
            "--channel",
            "messenger",
            "--page-id",
            PAGE,
            "--from",
            &psid,
            "--no-referral",
            "--text",
            "Do you deliver?",
            "--app-secret",
            &secret,
        ],
    )
    .await
    .ok();
    assert_eq!(r.json()["stored"], 1, "{}", r.stderr);
    assert!(r.stderr.contains("(no referral)"), "{}", r.stderr);
    let t = run(&key, &["conversations", "--psid", &psid, "--table"])
        .await
        .ok();
    assert!(
        t.stdout.starts_with("ID ") && t.stdout.contains("CUSTOMER.PSID"),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout.contains(&psid) && t.stdout.contains(PAGE_AD),
        "{}",
        t.stdout
    );

    // The purchase: one event at Meta, to the Page's dataset with the Page's keys.
    let r = run(
        &key,
        &[
            "capi",
            "send-event",
            "--event-type",
            "purchase",
            "--psid",
            &psid,
            "--value",
            "1499",
            "--currency",
            "INR",
            "--channel",
            "messenger",
        ],
    )
    .await
    .ok();
    let v = r.json();
    assert_eq!(
        (&v["success"], &v["status"], &v["event_name"]),
        (&json!(true), &json!("delivered"), &json!("Purchase")),
        "{v}\n{}",
        r.stderr
    );
    assert_eq!(v["attribution"]["conversation_id"], conv["id"], "{v}");
    let at_meta = app.sim.sim.received_events();
    assert_eq!(at_meta.len(), 1, "{at_meta:?}");
    let sent = &at_meta[0];
    assert_eq!(sent["dataset_id"], page_ds["dataset_id"]);
    let e = &sent["event"];
    assert_eq!(
        (&e["event_name"], &e["messaging_channel"]),
        (&json!("Purchase"), &json!("messenger")),
        "{e}"
    );
    assert_eq!(
        e["user_data"],
        json!({"page_id": PAGE, "page_scoped_user_id": psid}),
        "{e}"
    );
    assert_eq!(e["custom_data"]["currency"], "INR", "{e}");

    // A channel that is not the customer's is refused by the API: nothing sent.
    let r = run(
        &key,
        &[
            "capi",
            "send-event",
            "--event-type",
            "lead",
            "--igsid",
            &igsid,
            "--channel",
            "messenger",
        ],
    )
    .await
    .exit(1);
    assert!(r.stderr.contains("HTTP 400"), "{}", r.stderr);
    assert_eq!(app.sim.sim.received_events().len(), 1);
    // Its own channel: sent with the Instagram account's keys.
    let v = run(
        &key,
        &[
            "capi",
            "send-event",
            "--event-type",
            "lead",
            "--igsid",
            &igsid,
            "--channel",
            "instagram",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(v["status"], "delivered", "{v}");
    let at_meta = app.sim.sim.received_events();
    assert_eq!(at_meta.len(), 2, "{at_meta:?}");
    assert_eq!(at_meta[1]["dataset_id"], ig_ds["dataset_id"]);
    assert_eq!(
        at_meta[1]["event"]["user_data"],
        json!({"instagram_business_account_id": IG, "ig_sid": igsid})
    );
    // A PSID that never wrote to the Page: said so, nothing sent.
    let r = run(
        &key,
        &[
            "capi",
            "send-event",
            "--event-type",
            "lead",
            "--psid",
            "31337",
        ],
    )
    .await
    .ok();
    assert_eq!(r.json()["reason"], "no_conversation_for_customer");
    assert!(r.stderr.contains("never wrote"), "{}", r.stderr);
    assert_eq!(app.sim.sim.received_events().len(), 2);

    // Usage errors before any request: the channel's business is required, another
    // channel's flags are refused.
    for args in [
        &[
            "webhook",
            "simulate",
            "--channel",
            "instagram",
            "--from",
            "1",
        ][..],
        &[
            "webhook",
            "simulate",
            "--channel",
            "messenger",
            "--from",
            "1",
            "--instagram-account-id",
            IG,
        ],
        &[
            "capi",
            "send-event",
            "--event-type",
            "lead",
            "--psid",
            "1",
            "--phone",
            "+1",
        ],
    ] {
        let r = run(&key, args).await.exit(2);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
    for out in &outputs {
        for s in [&key, &op, &secret] {
            assert!(!out.contains(s.as_str()), "a secret was printed:\n{out}");
        }
    }
    app.stack.stop().await;
}
