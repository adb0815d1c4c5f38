//! `ctwa-admin`: operator commands against a deployed stack's data table (or the local
//! one), with the standard AWS SDK environment (profile, region, credentials).
//!
//! ```text
//! ctwa-admin account create --table T --id acme --name "Acme" [--waba-id W]
//!            [--phone-number-id P]... [--sinch-app-id S]
//! ctwa-admin account show   --table T --id acme
//! ctwa-admin api-key create --table T --account acme [--scope read,conversions,...]
//! ctwa-admin ad-account link --table T --account acme --ad-account-id act_1 [--page-id P]
//! ctwa-admin operator-key create --table T
//! ```
//! The operator key (for `/v1/admin/...` and `/v1/api-keys`, `ctwa admin ...`) is the
//! bootstrap: everything else can then be done over HTTP.
//! The API key is printed once; only its SHA-256 hash is stored; it holds the scopes
//! given (`read` when none), counts toward the account's live keys like one made over
//! HTTP. `account create` and `ad-account link` keep the rules of their HTTP routes
//! (`ctwa_shared::accounts`). Every command that changes something leaves an audit
//! record (actor `ctwa-admin`), readable with `GET /v1/admin/audit`.

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use ctwa_shared::accounts::{NewAccount, NewAdAccountLink};
use ctwa_shared::auth::{DEFAULT_SCOPES, Scope, generate_key};
use ctwa_shared::ids::AccountId;
use ctwa_shared::store::dynamo::DynamoData;
use ctwa_shared::store::{Accounts, AdInventory, AuditLog, AuditRecord, KeyWrite, MAX_LIVE_KEYS};
use std::process::ExitCode;

const USAGE: &str = "
  ctwa-admin account create --table DATA_TABLE --id ID --name NAME [--waba-id ID] [--phone-number-id ID]... [--sinch-app-id ID]
  ctwa-admin account show   --table DATA_TABLE --id ID
  ctwa-admin api-key create --table DATA_TABLE --account ID [--scope SCOPE]...
  ctwa-admin ad-account link --table DATA_TABLE --account ID --ad-account-id act_ID [--page-id ID]
  ctwa-admin operator-key create --table DATA_TABLE";

/// Operator commands against a stack's data table. An account is checked by the same
/// rules as `POST /v1/admin/accounts`.
#[derive(Debug, Parser)]
#[command(
    name = "ctwa-admin",
    override_usage = USAGE,
    after_help = "The table defaults to $DATA_TABLE (the DataTableName output of the stack).",
    // A flag given twice: the last one counts.
    args_override_self = true
)]
struct Cli {
    /// The stack's data table [default: $DATA_TABLE].
    #[arg(long, global = true, value_name = "DATA_TABLE")]
    table: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or show an account.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Create an API key for an account.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Link an ad account to an account.
    #[command(subcommand)]
    AdAccount(AdAccountCommand),
    /// Create an operator key (for /v1/admin/... and /v1/api-keys).
    #[command(subcommand)]
    OperatorKey(OperatorKeyCommand),
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create an account (its phone number ids route its webhooks).
    Create {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "NAME", allow_hyphen_values = true)]
        name: String,
        #[arg(long, value_name = "ID")]
        waba_id: Option<String>,
        /// Repeatable.
        #[arg(long = "phone-number-id", value_name = "ID")]
        phone_number_ids: Vec<String>,
        #[arg(long, value_name = "ID")]
        sinch_app_id: Option<String>,
    },
    /// Show an account and its ad accounts.
    Show {
        #[arg(long, value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create an API key (printed once; only its hash is stored).
    Create {
        #[arg(long, value_name = "ID")]
        account: String,
        /// read, conversions, ads, connect, keys; repeatable or comma-separated
        /// [default: read].
        #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',', value_parser = parse_scope)]
        scopes: Vec<Scope>,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s.trim())
        .ok_or_else(|| format!("unknown scope {s:?}: read, conversions, ads, connect or keys"))
}

#[derive(Debug, Subcommand)]
enum AdAccountCommand {
    /// Link an ad account (`act_<digits>` or `<digits>`) to an account.
    Link {
        #[arg(long, value_name = "ID")]
        account: String,
        #[arg(long, value_name = "act_ID")]
        ad_account_id: String,
        #[arg(long, value_name = "ID")]
        page_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorKeyCommand {
    /// Create an operator key (printed once; only its hash is stored).
    Create,
}

/// The exit code of a command line that does not parse: 1 where a required flag or
/// the command is missing or unknown, 2 where a flag is malformed (as before clap).
fn usage_exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        ErrorKind::MissingRequiredArgument
        | ErrorKind::MissingSubcommand
        | ErrorKind::InvalidSubcommand
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 1,
        _ => 2,
    }
}

async fn existing(data: &DynamoData, account: &AccountId) -> Result<(), String> {
    if data
        .get_account(account.as_str())
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err(format!("account {account} not found"));
    }
    Ok(())
}

/// An audit record of a `ctwa-admin` command (it acts with AWS credentials, no key).
async fn audit(
    data: &DynamoData,
    account: Option<&str>,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), String> {
    let rec = AuditRecord::new(account, "ctwa-admin", None, action, target, detail)
        .map_err(|e| e.to_string())?;
    data.record_audit(&rec).await.map_err(|e| e.to_string())
}

fn account_id(raw: &str) -> Result<AccountId, String> {
    AccountId::parse(raw).map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> Result<serde_json::Value, String> {
    let table = cli
        .table
        .or_else(|| std::env::var("DATA_TABLE").ok())
        .ok_or("--table (or DATA_TABLE) is required")?;
    let sdk = ctwa_shared::config::aws_sdk_config().await;
    let data = DynamoData::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    match cli.command {
        Command::Account(AccountCommand::Create {
            id,
            name,
            waba_id,
            phone_number_ids,
            sinch_app_id,
        }) => {
            let account = NewAccount {
                id: Some(id),
                name,
                waba_id,
                phone_number_ids,
                sinch_app_id,
                // A secret is not taken on a command line (shell history, `ps`).
                sinch_webhook_secret: None,
                ad_account_ids: Vec::new(),
                page_id: None,
            }
            .parse(ctwa_shared::time::now_millis())
            .map_err(|e| e.to_string())?
            .account;
            data.create_account(&account)
                .await
                .map_err(|e| e.to_string())?;
            audit(
                &data,
                Some(&account.id),
                "account.create",
                &account.id,
                serde_json::json!({"waba_id": account.waba_id,
                    "phone_number_ids": account.phone_number_ids,
                    "sinch_app_id": account.sinch_app_id}),
            )
            .await?;
            if account.sinch_app_id.is_some() {
                eprintln!(
                    "note: the Sinch app's callbacks are refused until its webhook secret is set: PUT /v1/admin/accounts/{}/sinch-webhook-secret with an operator key",
                    account.id
                );
            }
            serde_json::to_value(&account).map_err(|e| e.to_string())
        }
        Command::Account(AccountCommand::Show { id }) => {
            let id = account_id(&id)?;
            let account = data
                .get_account(id.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let account = account.ok_or_else(|| format!("account {id} not found"))?;
            let links = data
                .ad_accounts(id.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let mut v = serde_json::to_value(&account).map_err(|e| e.to_string())?;
            v["ad_accounts"] = serde_json::to_value(&links).map_err(|e| e.to_string())?;
            Ok(v)
        }
        Command::AdAccount(AdAccountCommand::Link {
            account,
            ad_account_id,
            page_id,
        }) => {
            let valid = NewAdAccountLink {
                ad_account_id,
                page_id,
            }
            .parse()
            .map_err(|e| e.to_string())?;
            let account = account_id(&account)?;
            existing(&data, &account).await?;
            let link = valid.link(&account, ctwa_shared::time::now_millis());
            data.link_ad_account(&link)
                .await
                .map_err(|e| e.to_string())?;
            audit(
                &data,
                Some(account.as_str()),
                "ad_account.link",
                &link.ad_account_id,
                serde_json::json!({"page_id": link.page_id}),
            )
            .await?;
            serde_json::to_value(&link).map_err(|e| e.to_string())
        }
        Command::ApiKey(ApiKeyCommand::Create { account, scopes }) => {
            let account = account_id(&account)?;
            existing(&data, &account).await?;
            let scopes = if scopes.is_empty() {
                DEFAULT_SCOPES.to_vec()
            } else {
                scopes
            };
            let (key, mut rec) =
                generate_key(account.as_str(), &scopes, ctwa_shared::time::now_millis())
                    .map_err(|e| e.to_string())?;
            rec.created_by = Some("ctwa-admin".into());
            let audit = AuditRecord::new(
                Some(account.as_str()),
                "ctwa-admin",
                None,
                "api_key.create",
                &rec.key_id,
                serde_json::json!({"scopes": rec.scopes}),
            )
            .map_err(|e| e.to_string())?;
            match data
                .create_api_key(&rec, MAX_LIVE_KEYS, &audit)
                .await
                .map_err(|e| e.to_string())?
            {
                KeyWrite::Done => {}
                _ => {
                    return Err(format!(
                        "account {account} already has {MAX_LIVE_KEYS} live API keys: revoke one first"
                    ));
                }
            }
            Ok(
                serde_json::json!({"account_id": account, "api_key": key, "key_id": rec.key_id,
                "prefix": rec.prefix, "scopes": rec.scopes,
                "note": "shown once: only its hash is stored"}),
            )
        }
        Command::OperatorKey(OperatorKeyCommand::Create) => {
            let (key, rec) =
                ctwa_shared::auth::generate_operator_key(ctwa_shared::time::now_millis())
                    .map_err(|e| e.to_string())?;
            data.put_api_key(&rec).await.map_err(|e| e.to_string())?;
            audit(
                &data,
                None,
                "operator_key.create",
                &rec.key_id,
                serde_json::json!({}),
            )
            .await?;
            Ok(
                serde_json::json!({"operator_key": key, "key_id": rec.key_id, "prefix": rec.prefix,
                "note": "shown once: only its hash is stored; revoke with DELETE /v1/api-keys/{key_id}"}),
            )
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(usage_exit_code(e.kind()));
        }
    };
    match run(cli).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ctwa-admin").chain(line.split_whitespace()))
    }

    #[test]
    fn every_documented_command_line_parses() {
        let c = parse("account create --table T --id acme --name Acme --waba-id 555 --phone-number-id 1 --phone-number-id 2 --sinch-app-id s1").unwrap();
        assert_eq!(c.table.as_deref(), Some("T"));
        match c.command {
            Command::Account(AccountCommand::Create {
                id,
                name,
                waba_id,
                phone_number_ids,
                sinch_app_id,
            }) => {
                assert_eq!((id.as_str(), name.as_str()), ("acme", "Acme"));
                assert_eq!(waba_id.as_deref(), Some("555"));
                assert_eq!(phone_number_ids, ["1", "2"]);
                assert_eq!(sinch_app_id.as_deref(), Some("s1"));
            }
            other => panic!("{other:?}"),
        }
        let c = parse("account create --id acme --name Acme").unwrap();
        assert_eq!(c.table, None, "the table then comes from $DATA_TABLE");
        assert!(matches!(
            parse("account show --table T --id acme").unwrap().command,
            Command::Account(AccountCommand::Show { id }) if id == "acme"
        ));
        assert!(matches!(
            parse("api-key create --table T --account acme").unwrap().command,
            Command::ApiKey(ApiKeyCommand::Create { account, scopes }) if account == "acme" && scopes.is_empty()
        ));
        assert!(matches!(
            parse("api-key create --account acme --scope read,conversions --scope keys").unwrap().command,
            Command::ApiKey(ApiKeyCommand::Create { scopes, .. })
                if scopes == [Scope::Read, Scope::Conversions, Scope::Keys]
        ));
        assert!(parse("api-key create --account acme --scope admin").is_err());
        match parse("ad-account link --table T --account acme --ad-account-id act_1 --page-id 9")
            .unwrap()
            .command
        {
            Command::AdAccount(AdAccountCommand::Link {
                account,
                ad_account_id,
                page_id,
            }) => {
                assert_eq!(
                    (account.as_str(), ad_account_id.as_str(), page_id.as_deref()),
                    ("acme", "act_1", Some("9"))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("ad-account link --account acme --ad-account-id 1")
                .unwrap()
                .command,
            Command::AdAccount(AdAccountCommand::Link { page_id: None, .. })
        ));
        // README.md: `target/release/ctwa-admin operator-key create --table <DataTableName>`.
        let c = parse("operator-key create --table ctwa-DataTable-1").unwrap();
        assert!(matches!(
            c.command,
            Command::OperatorKey(OperatorKeyCommand::Create)
        ));
        assert_eq!(c.table.as_deref(), Some("ctwa-DataTable-1"));
        // The table anywhere on the line; a flag given twice: the last one.
        let c = parse("--table A operator-key create --table B").unwrap();
        assert_eq!(c.table.as_deref(), Some("B"));
        assert!(
            parse("account create --id a --id b --name N --name -M")
                .is_ok_and(|c| matches!(c.command, Command::Account(AccountCommand::Create { id, name, .. }) if id == "b" && name == "-M"))
        );
    }

    #[test]
    fn bad_command_lines_exit_as_before() {
        let code = |line: &str| usage_exit_code(parse(line).unwrap_err().kind());
        assert_eq!(
            code("account create --table T --name Acme"),
            1,
            "--id is required"
        );
        assert_eq!(code("account delete --id a"), 1);
        assert_eq!(code("account"), 1);
        assert_eq!(code(""), 1);
        assert_eq!(code("account show --id"), 2, "a flag needs a value");
        assert_eq!(code("--help"), 0);
    }
}
