//! `ctwa-local`: the whole system on this machine (README command 1 starts it through
//! `scripts/local.sh`, which also starts DynamoDB Local and the Secrets Manager emulator).
//! Seeds a demo account and writes its connection details to `.ctwa/local.json`.

use ctwa_local::{Clients, LocalConfig, start};
use ctwa_shared::auth::generate_key;
use ctwa_shared::domain::Account;
use ctwa_shared::store::{Accounts, AdAccountLink, AdInventory, StoreError};
use std::path::PathBuf;

pub const DEMO_ACCOUNT: &str = "demo";
pub const DEMO_WABA_ID: &str = "102290129340398";
pub const DEMO_PHONE_NUMBER_ID: &str = "1204727649384372";
pub const DEMO_SINCH_APP_ID: &str = "01EB37HMH1M6SV18ASNS3G135H";
/// The demo ad account, its Page and the WhatsApp number its ads open (registered in
/// the simulator, linked to the demo account).
pub const DEMO_AD_ACCOUNT: &str = "act_100000000000001";
pub const DEMO_PAGE_ID: &str = "200000000000001";
pub const DEMO_WHATSAPP_NUMBER: &str = "+15550001234";
/// The demo Page's Instagram professional account (Instagram Direct).
pub const DEMO_INSTAGRAM_ACCOUNT_ID: &str = "17841400000000001";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn".into()
            }),
        )
        .with_target(false)
        .init();
    let port: u16 = env_or("CTWA_LOCAL_PORT", "3000")
        .parse()
        .map_err(|_| "CTWA_LOCAL_PORT must be a port number")?;
    let state_dir = PathBuf::from(env_or("CTWA_STATE_DIR", ".ctwa"));
    let mut lambda = ctwa_local::lambda::LambdaOptions::from_env();
    // Every function's log lines (JSON, as CloudWatch would hold them).
    lambda.log_file = Some(state_dir.join("logs").join("functions.log"));
    lambda.run_schedules = true;
    let cfg = LocalConfig {
        bind: ([127, 0, 0, 1], port).into(),
        stack_name: env_or("CTWA_STACK_NAME", "ctwa-local"),
        inbox_table: env_or("INBOX_TABLE", "ctwa-local-inbox"),
        data_table: env_or("DATA_TABLE", "ctwa-local-data"),
        webhook_secret_id: env_or("WEBHOOK_SECRET_ID", "ctwa-local/webhook"),
        app_secret: env_or("CTWA_LOCAL_APP_SECRET", "local-app-secret"),
        verify_token: env_or("CTWA_LOCAL_VERIFY_TOKEN", "local-verify-token"),
        sinch_webhook_secret: env_or("CTWA_LOCAL_SINCH_SECRET", "local-sinch-secret"),
        inbox_ttl_days: 30,
        graph_url: String::new(),
        meta_app_id: env_or("META_APP_ID", "1234567890"),
        log_level: std::env::var("CTWA_LOG_LEVEL")
            .ok()
            .filter(|v| !v.is_empty()),
        partner_agent: std::env::var("META_PARTNER_AGENT")
            .ok()
            .filter(|v| !v.is_empty()),
        retry_policy: Default::default(),
        lambda,
    };
    // The Meta Graph API: META_GRAPH_URL when set, else the simulator, in process.
    let mut cfg = cfg;
    let sim = match std::env::var("META_GRAPH_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => {
            cfg.graph_url = url;
            None
        }
        None => {
            let port: u16 = env_or("CTWA_GRAPH_SIM_PORT", "0")
                .parse()
                .map_err(|_| "CTWA_GRAPH_SIM_PORT must be a port number")?;
            let sim = graph_sim::start(
                ([127, 0, 0, 1], port).into(),
                graph_sim::SimConfig {
                    app_id: cfg.meta_app_id.clone(),
                    app_secret: cfg.app_secret.clone(),
                },
            )
            .await?;
            cfg.graph_url = sim.graph_url();
            Some(sim)
        }
    };
    let clients = Clients::from_env().await;
    let stack = match start(&clients, cfg.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("local: {e}");
            std::process::exit(1);
        }
    };

    let now = ctwa_shared::time::now_millis();
    let account = Account {
        id: DEMO_ACCOUNT.into(),
        name: "Demo business".into(),
        waba_id: Some(DEMO_WABA_ID.into()),
        phone_number_ids: vec![DEMO_PHONE_NUMBER_ID.into()],
        sinch_app_id: Some(DEMO_SINCH_APP_ID.into()),
        page_ids: Vec::new(),
        instagram_account_ids: Vec::new(),
        created_at_ms: now,
    };
    match stack.data.create_account(&account).await {
        Ok(()) | Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // The demo Sinch app's own webhook secret (each app has its own).
    ctwa_local::set_sinch_app_secret(
        &clients,
        &cfg.stack_name,
        DEMO_SINCH_APP_ID,
        &cfg.sinch_webhook_secret,
    )
    .await?;
    let link = AdAccountLink {
        ad_account_id: DEMO_AD_ACCOUNT.into(),
        account_id: DEMO_ACCOUNT.into(),
        page_id: Some(DEMO_PAGE_ID.into()),
        linked_at_ms: now,
    };
    stack.data.link_ad_account(&link).await?;
    if let Some(s) = &sim {
        // Meta lists the demo number under the demo WABA: connecting verifies its route.
        s.sim.set_phone_numbers(
            DEMO_WABA_ID,
            &serde_json::json!([{"id": DEMO_PHONE_NUMBER_ID, "display_phone_number": DEMO_WHATSAPP_NUMBER}]),
        );
        s.sim.add_ad_account(&serde_json::json!({
            "id": DEMO_AD_ACCOUNT,
            "page_ids": [DEMO_PAGE_ID],
            "whatsapp_numbers": [DEMO_WHATSAPP_NUMBER],
        }));
        // The demo Page (Messenger) and its Instagram account, for the walkthrough's
        // Messenger and Instagram steps.
        s.sim
            .add_page(&serde_json::json!({
                "page_id": DEMO_PAGE_ID, "name": "Demo Succulents",
                "instagram_account_id": DEMO_INSTAGRAM_ACCOUNT_ID,
                "instagram_username": "demo_succulents",
            }))
            .map_err(|e| format!("demo page: {e}"))?;
    }
    let (api_key, record) = generate_key(DEMO_ACCOUNT, &ctwa_shared::auth::Scope::ALL, now)?;
    stack.data.put_api_key(&record).await?;
    let (operator_key, record) = ctwa_shared::auth::generate_operator_key(now)?;
    stack.data.put_api_key(&record).await?;

    std::fs::create_dir_all(&state_dir)?;
    let details = serde_json::json!({
        "base_url": stack.base_url(),
        "api_key": api_key,
        "operator_key": operator_key,
        "account_id": DEMO_ACCOUNT,
        "app_secret": cfg.app_secret,
        "verify_token": cfg.verify_token,
        "sinch_webhook_secret": cfg.sinch_webhook_secret,
        "phone_number_id": DEMO_PHONE_NUMBER_ID,
        "waba_id": DEMO_WABA_ID,
        "sinch_app_id": DEMO_SINCH_APP_ID,
        "ad_account_id": DEMO_AD_ACCOUNT,
        "page_id": DEMO_PAGE_ID,
        "instagram_account_id": DEMO_INSTAGRAM_ACCOUNT_ID,
        "whatsapp_number": DEMO_WHATSAPP_NUMBER,
        "inbox_table": cfg.inbox_table,
        "data_table": cfg.data_table,
    });
    // A connectable demo: an authorization code as Meta's OAuth dialog would return it,
    // with every required scope, each channel's events permission, the demo WABA, Page
    // and Instagram account (single-use; mint more at the control URL).
    let oauth_code = sim.as_ref().map(|s| {
        let mut scopes: Vec<&str> = ctwa_shared::meta::connection::REQUIRED_SCOPES.to_vec();
        scopes.extend(["pages_messaging", "page_events", "instagram_manage_events"]);
        s.sim.create_code(&serde_json::json!({
            "scopes": scopes,
            "waba_id": DEMO_WABA_ID,
            "page_ids": [DEMO_PAGE_ID],
            "instagram_account_ids": [DEMO_INSTAGRAM_ACCOUNT_ID],
            "ttl_seconds": 86_400,
        }))["code"]
            .clone()
    });
    let mut details = details;
    details["meta_graph_url"] = serde_json::json!(cfg.graph_url);
    details["meta_app_id"] = serde_json::json!(cfg.meta_app_id);
    if let (Some(s), Some(code)) = (&sim, oauth_code) {
        details["graph_sim_control_url"] = serde_json::json!(s.control_url());
        details["oauth_code"] = code;
    }
    let path = state_dir.join("local.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&details)?)?;
    println!("ctwa local stack listening on {}", stack.base_url());
    println!(
        "connection details (demo account, API key, secrets): {}",
        path.display()
    );
    println!(
        "functions: {} from {} behind a local Runtime API, IAM enforced by template.yaml; logs: {}",
        stack.lambda.template.functions.len(),
        cfg.lambda.bootstraps.dir.display(),
        state_dir.join("logs").join("functions.log").display()
    );
    println!("walkthrough: README.md, section \"Run it locally\". Ctrl-C stops.");

    tokio::signal::ctrl_c().await?;
    println!("stopping");
    stack.stop().await;
    Ok(())
}
