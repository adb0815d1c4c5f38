//! `ctwa-admin`: operator commands against a deployed stack's data table (or the local
//! one), with the standard AWS SDK environment (profile, region, credentials).
//!
//! ```text
//! ctwa-admin account create --table T --id acme --name "Acme" [--waba-id W]
//!            [--phone-number-id P]... [--sinch-app-id S]
//! ctwa-admin account show   --table T --id acme
//! ctwa-admin api-key create --table T --account acme
//! ctwa-admin ad-account link --table T --account acme --ad-account-id act_1 [--page-id P]
//! ctwa-admin operator-key create --table T
//! ```
//! The operator key (for `/v1/admin/...` and `/v1/api-keys`, `ctwa admin ...`) is the
//! bootstrap: everything else can then be done over HTTP.
//! The API key is printed once; only its SHA-256 hash is stored.

use ctwa_shared::auth::generate_key;
use ctwa_shared::domain::Account;
use ctwa_shared::store::dynamo::DynamoData;
use ctwa_shared::store::{Accounts, AdAccountLink, AdsStore};
use std::process::ExitCode;

const USAGE: &str = "usage:
  ctwa-admin account create --table DATA_TABLE --id ID --name NAME [--waba-id ID] [--phone-number-id ID]... [--sinch-app-id ID]
  ctwa-admin account show   --table DATA_TABLE --id ID
  ctwa-admin api-key create --table DATA_TABLE --account ID
  ctwa-admin ad-account link --table DATA_TABLE --account ID --ad-account-id act_ID [--page-id ID]
  ctwa-admin operator-key create --table DATA_TABLE
The table defaults to $DATA_TABLE (the DataTableName output of the stack).";

struct Args {
    words: Vec<String>,
    flags: Vec<(String, String)>,
}

fn parse(argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut words = Vec::new();
    let mut flags = Vec::new();
    let mut it = argv.peekable();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            flags.push((name.to_string(), v));
        } else {
            words.push(a);
        }
    }
    Ok(Args { words, flags })
}

impl Args {
    fn one(&self, name: &str) -> Option<String> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn required(&self, name: &str) -> Result<String, String> {
        self.one(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("--{name} is required"))
    }
}

fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "invalid id {id:?}: 1 to 64 letters, digits, - or _"
        ));
    }
    Ok(())
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let table = args
        .one("table")
        .or_else(|| std::env::var("DATA_TABLE").ok())
        .ok_or("--table (or DATA_TABLE) is required")?;
    let sdk = ctwa_shared::config::aws_sdk_config().await;
    let data = DynamoData::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["account", "create"] => {
            let id = args.required("id")?;
            valid_id(&id)?;
            let account = Account {
                id,
                name: args.required("name")?,
                waba_id: args.one("waba-id"),
                phone_number_ids: args.all("phone-number-id"),
                sinch_app_id: args.one("sinch-app-id"),
                created_at_ms: ctwa_shared::time::now_millis(),
            };
            data.create_account(&account)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::to_value(&account).map_err(|e| e.to_string())
        }
        ["account", "show"] => {
            let id = args.required("id")?;
            let account = data.get_account(&id).await.map_err(|e| e.to_string())?;
            let account = account.ok_or_else(|| format!("account {id} not found"))?;
            let links = data.ad_accounts(&id).await.map_err(|e| e.to_string())?;
            let mut v = serde_json::to_value(&account).map_err(|e| e.to_string())?;
            v["ad_accounts"] = serde_json::to_value(&links).map_err(|e| e.to_string())?;
            Ok(v)
        }
        ["ad-account", "link"] => {
            let account = args.required("account")?;
            let raw = args.required("ad-account-id")?;
            let ad_account_id = ctwa_shared::ads::spec::ad_account_id(&raw)
                .ok_or_else(|| format!("{raw:?} is not an ad account id (act_<digits>)"))?;
            let page_id = args.one("page-id");
            if page_id
                .as_deref()
                .is_some_and(|p| !ctwa_shared::ads::spec::is_object_id(p))
            {
                return Err("--page-id must be digits".into());
            }
            if data
                .get_account(&account)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!("account {account} not found"));
            }
            let link = AdAccountLink {
                ad_account_id,
                account_id: account,
                page_id,
                linked_at_ms: ctwa_shared::time::now_millis(),
            };
            data.link_ad_account(&link)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::to_value(&link).map_err(|e| e.to_string())
        }
        ["api-key", "create"] => {
            let account = args.required("account")?;
            if data
                .get_account(&account)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err(format!("account {account} not found"));
            }
            let (key, rec) = generate_key(&account, ctwa_shared::time::now_millis())
                .map_err(|e| e.to_string())?;
            data.put_api_key(&rec).await.map_err(|e| e.to_string())?;
            Ok(
                serde_json::json!({"account_id": account, "api_key": key, "prefix": rec.prefix,
                "note": "shown once: only its hash is stored"}),
            )
        }
        ["operator-key", "create"] => {
            let (key, rec) =
                ctwa_shared::auth::generate_operator_key(ctwa_shared::time::now_millis())
                    .map_err(|e| e.to_string())?;
            data.put_api_key(&rec).await.map_err(|e| e.to_string())?;
            Ok(
                serde_json::json!({"operator_key": key, "key_id": rec.key_id, "prefix": rec.prefix,
                "note": "shown once: only its hash is stored; revoke with DELETE /v1/api-keys/{key_id}"}),
            )
        }
        _ => Err(USAGE.to_string()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctwa-admin: {e}");
            ExitCode::FAILURE
        }
    }
}
