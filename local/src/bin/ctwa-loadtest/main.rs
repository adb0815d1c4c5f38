//! `ctwa-loadtest`: the load test with accounting, against a running local stack
//! (`scripts/loadtest.sh` starts one on fresh tables and runs this; loopback only).
//!
//! ```text
//! ctwa-loadtest [--state .ctwa/local.json] [--webhooks 100000] [--concurrency 32]
//!               [--accounts 5] [--customers 400] [--messenger-share 0.2]
//!               [--instagram-share 0.2] [--timeout 900] [--seed N] [--drop-tables]
//! ```
//! Creates the accounts in the stack's data table (each with its own phone number id,
//! and its Facebook Page and Instagram account linked as routes), posts the webhooks of
//! the three channels (by default 60% WhatsApp Cloud API, 20% Messenger, 20% Instagram
//! deliveries; 10% exact re-sends, 30% of the messages with an ad's referral; text,
//! image, button, interactive messages and status updates on WhatsApp, text, attachment
//! and quick-reply messages, several events per delivery, echoes and receipts on
//! Messenger and Instagram; signed), waits for capture, reads the tables back and
//! accounts for everything, per channel. Prints one JSON report; exits 1 when anything
//! was lost, duplicated or wrong, or the time ran out. The AWS SDK environment
//! (`.ctwa/env`) must point at the stack's DynamoDB Local.

use ctwa_local::loadgen::{self, LocalState};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Opts {
    state: String,
    plan: loadgen::Plan,
    timeout: Duration,
    drop_tables: bool,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        state: ".ctwa/local.json".into(),
        plan: loadgen::Plan::new(100_000),
        timeout: Duration::from_secs(900),
        drop_tables: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--drop-tables" {
            o.drop_tables = true;
            continue;
        }
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        let num = |name: &str| v.parse::<u64>().map_err(|_| format!("{name}: a number"));
        let share = |name: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or(format!("{name}: a share from 0 to 1"))
        };
        match a.as_str() {
            "--state" => o.state = v.clone(),
            "--webhooks" => o.plan.webhooks = num("--webhooks")? as usize,
            "--concurrency" => o.plan.concurrency = num("--concurrency")? as usize,
            "--accounts" => o.plan.accounts = num("--accounts")? as usize,
            "--customers" => o.plan.customers = num("--customers")? as usize,
            "--messenger-share" => o.plan.messenger_share = share("--messenger-share")?,
            "--instagram-share" => o.plan.instagram_share = share("--instagram-share")?,
            "--timeout" => o.timeout = Duration::from_secs(num("--timeout")?),
            "--seed" => o.plan.seed = num("--seed")?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let p = &o.plan;
    if !(1..=2_000_000).contains(&p.webhooks)
        || !(1..=1024).contains(&p.concurrency)
        || !(1..=100).contains(&p.accounts)
        || !(1..=1_000_000).contains(&p.customers)
    {
        return Err(
            "webhooks 1..=2000000, concurrency 1..=1024, accounts 1..=100, customers 1..=1000000"
                .into(),
        );
    }
    if p.messenger_share + p.instagram_share > 1.0 {
        return Err("--messenger-share + --instagram-share: at most 1".into());
    }
    Ok(o)
}

async fn main_inner(o: Opts) -> Result<Value, String> {
    let deadline = Instant::now() + o.timeout;
    let state = LocalState::read(&o.state)?;
    let base_url = state.get("base_url")?;
    if !(base_url.starts_with("http://127.0.0.1:") || base_url.starts_with("http://localhost:")) {
        return Err(format!("{base_url}: loopback only"));
    }
    let sdk = ctwa_shared::config::aws_sdk_config().await;
    let target = loadgen::Target {
        base_url,
        app_secret: state.get("app_secret")?,
        inbox_table: state.get("inbox_table")?,
        data_table: state.get("data_table")?,
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
    };
    let report = loadgen::run(&o.plan, &target, deadline).await;
    if o.drop_tables {
        for t in [&target.inbox_table, &target.data_table] {
            let _ = target.dynamodb.delete_table().table_name(t).send().await;
        }
    }
    report
}

#[tokio::main]
async fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "ctwa-loadtest: {e}\nusage: ctwa-loadtest [--state F] [--webhooks N] [--concurrency C] [--accounts A] [--customers K] [--messenger-share S] [--instagram-share S] [--timeout SECONDS] [--seed N] [--drop-tables]"
            );
            return ExitCode::from(2);
        }
    };
    let timeout = o.timeout;
    // The hard bound: whatever happens, the run ends (a minute of grace for the report).
    match tokio::time::timeout(timeout + Duration::from_secs(60), main_inner(o)).await {
        Ok(Ok(v)) => {
            println!("{v}");
            if v["ok"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("ctwa-loadtest: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("ctwa-loadtest: hard timeout ({timeout:?} + 60 s) reached");
            ExitCode::FAILURE
        }
    }
}
