//! The command tree (seed 001's `ctwa` commands, plus the rest of this API).

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Connection settings, first found wins: flags, then CTWA_API_URL / CTWA_API_KEY, then the
config file (--config, else ~/.config/ctwa/config.json; JSON or TOML with api_url and
api_key), then .ctwa/local.json of a local run (scripts/local.sh), searched from the
current directory upwards.

Seed 001 spells the command group `ctwa` (alias `meta-ads`): `ctwa meta-ads ads` and
`ctwa ctwa ads` are `ctwa ads`.

Output: the API's JSON on stdout (--table for a human view); messages on stderr.
Exit codes: 0 ok, 1 the API answered 4xx, 2 usage error, 3 the API answered 5xx or
could not be reached, 4 no API URL or key configured.";

#[derive(Debug, Parser)]
#[command(
    name = "ctwa",
    version,
    about = "Command-line client of the ctwa Click-to-WhatsApp attribution API",
    after_help = AFTER_HELP,
    subcommand_value_name = "COMMAND"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    /// Without a command: `status`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Global options that take a value (the next argument is theirs).
const VALUE_OPTIONS: [&str; 4] = ["--api-url", "--api-key", "--config", "--timeout"];

/// Seed 001's spelling: its command group is `ctwa` with the alias `meta-ads`, so
/// `<cli> meta-ads ads` (or `<cli> ctwa ads`) is `ctwa ads`. The group's name is dropped
/// when it is the first positional argument.
pub fn seed_spelling<I: IntoIterator<Item = std::ffi::OsString>>(
    args: I,
) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = args.into_iter().collect();
    let mut i = 1;
    while i < v.len() {
        let a = v[i].to_string_lossy();
        if VALUE_OPTIONS.contains(&a.as_ref()) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            if a == "meta-ads" || a == "ctwa" {
                v.remove(i);
            }
            break;
        }
    }
    v
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Base URL of the API (the stack's ApiUrl output).
    #[arg(long, env = "CTWA_API_URL", global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// API key (sent as `Authorization: Bearer`; never printed).
    #[arg(
        long,
        env = "CTWA_API_KEY",
        global = true,
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Config file (JSON or TOML: api_url, api_key, app_secret).
    #[arg(long, env = "CTWA_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Human-readable output: a table for lists, key/value lines for objects.
    #[arg(long, global = true)]
    pub table: bool,
    /// Print each request and its answer status on stderr (never the key or a secret).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Request timeout in seconds [default: 30; 120 for `ads create`].
    #[arg(long, global = true, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=900))]
    pub timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// show CAPI status (default)
    Status,
    /// show CAPI config; `capi save` updates it, `capi send-event` fires an event
    Capi {
        #[command(subcommand)]
        cmd: Option<CapiCmd>,
    },
    /// finish the OAuth handshake with the code Meta appended to your redirect URI
    ExchangeCode(ExchangeArgs),
    /// refresh the stored Meta token
    RefreshToken,
    /// show the CAPI dataset; `dataset create` provisions it on Meta
    Dataset {
        #[command(subcommand)]
        cmd: Option<DatasetCmd>,
    },
    /// the conversion audit trail, newest first
    Conversions(ConversionsArgs),
    /// purchases and leads Meta detected in your CTWA chats, newest first
    AutomaticEvents(AutomaticEventsArgs),
    /// conversations of one customer, with the captured click
    Conversations(ConversationsArgs),
    /// one conversation
    Conversation {
        /// Conversation id (c_...)
        id: String,
    },
    /// list ads on the connected Meta account; `ads create` creates a CTWA ad
    Ads(AdsArgs),
    /// what each ad earned: Meta's spend beside clicks, chats, leads, purchases, revenue,
    /// costs and ROAS, per campaign, ad set or ad (`--table` for a sheet)
    Report(ReportArgs),
    /// show one ad, with its clicks and conversions
    Ad {
        /// Meta ad id
        ad_id: String,
    },
    /// simulate Meta's webhooks (a signed click-to-WhatsApp, -Messenger or -Instagram message)
    Webhook {
        #[command(subcommand)]
        cmd: WebhookCmd,
    },
    /// this account's API keys
    ApiKey {
        #[command(subcommand)]
        cmd: ApiKeyCmd,
    },
    /// operator commands: accounts, ad accounts, any account's API keys (operator key)
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum CapiCmd {
    /// show CAPI config (the default)
    #[command(alias = "status")]
    Show,
    /// update CAPI config: only the flags given change
    Save(CapiSaveArgs),
    /// manually fire a conversion event (test)
    SendEvent(SendEventArgs),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct CapiSaveArgs {
    /// Existing Meta dataset id; omit to auto-create one (when Meta is connected)
    #[arg(long, value_name = "ID")]
    pub dataset_id: Option<String>,
    /// true | false
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub lead_enabled: Option<bool>,
    /// Event name in your workflow that fires the lead conversion (e.g. form_submitted)
    #[arg(long, value_name = "NAME")]
    pub lead_trigger: Option<String>,
    /// Contact tag to apply when the lead event matches
    #[arg(long, value_name = "TAG")]
    pub lead_tag: Option<String>,
    /// true | false
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub purchase_enabled: Option<bool>,
    /// Event name that fires the purchase conversion (e.g. order_placed)
    #[arg(long, value_name = "NAME")]
    pub purchase_trigger: Option<String>,
    /// Contact tag to apply on purchase
    #[arg(long, value_name = "TAG")]
    pub purchase_tag: Option<String>,
    /// ISO 4217 code (e.g. INR, USD)
    #[arg(long, value_name = "CODE")]
    pub purchase_currency: Option<String>,
    /// Default monetary value when an event carries none
    #[arg(long, value_name = "AMOUNT")]
    pub purchase_value: Option<f64>,
    /// true | false: send Meta-detected purchases and leads (automatic events) as
    /// conversions, deduplicated by Meta's event id
    #[arg(long, value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub forward_automatic_events: Option<bool>,
}

/// The messaging channels of Meta's Conversions API for Business Messaging.
pub const CHANNELS: [&str; 3] = ["whatsapp", "messenger", "instagram"];

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("customer").required(true).args(["phone", "conversation_id", "psid", "igsid"])))]
pub struct SendEventArgs {
    /// lead | purchase, or any business-messaging event name (e.g. OrderCreated)
    #[arg(long, value_name = "TYPE")]
    pub event_type: String,
    /// E.164 phone of the customer who clicked (the last click is used)
    #[arg(long, value_name = "E164")]
    pub phone: Option<String>,
    /// Or the conversation whose last click is used
    #[arg(long, value_name = "ID")]
    pub conversation_id: Option<String>,
    /// Or the Messenger customer: the PSID (sender.id of the Page's webhook)
    #[arg(long, value_name = "ID")]
    pub psid: Option<String>,
    /// Or the Instagram customer: the IGSID (sender.id of the Instagram webhook)
    #[arg(long, value_name = "ID")]
    pub igsid: Option<String>,
    /// The customer's channel, sent as messaging_channel (refused if it is not theirs)
    #[arg(long, value_name = "CHANNEL", value_parser = CHANNELS)]
    pub channel: Option<String>,
    /// Monetary value (purchase: defaults to the CAPI config's purchase value)
    #[arg(long, value_name = "AMOUNT")]
    pub value: Option<f64>,
    /// ISO 4217 code (purchase: defaults to the CAPI config's currency)
    #[arg(long, value_name = "CODE")]
    pub currency: Option<String>,
    /// Your id for deduplication (generated by the API when absent)
    #[arg(long, value_name = "ID")]
    pub event_id: Option<String>,
    /// Meta Events Manager test code: the event shows under Test events only
    #[arg(long, value_name = "CODE")]
    pub test_event_code: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExchangeArgs {
    /// Authorization code from the redirect (a local run's demo code when omitted)
    #[arg(long)]
    pub code: Option<String>,
    /// Granted scope names: a JSON array, or comma-separated
    #[arg(long, value_name = "SCOPES", value_parser = parse_scopes)]
    pub granted_scopes: Option<Scopes>,
    /// Must match the URI registered on the Meta app
    #[arg(long, value_name = "URI")]
    pub redirect_uri: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Scopes(pub Vec<String>);

fn parse_scopes(raw: &str) -> Result<Scopes, String> {
    let t = raw.trim();
    if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t)
            .map(Scopes)
            .map_err(|e| format!("not a JSON array of strings: {e}"))
    } else {
        Ok(Scopes(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum DatasetCmd {
    /// show the dataset id (the default)
    Show,
    /// provision the dataset on Meta (GET first: an existing one is reused); with
    /// --page-id / --instagram-account-id that Page's or Instagram account's dataset
    Create(DatasetCreateArgs),
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct DatasetCreateArgs {
    /// Use this existing Meta dataset id instead (the WABA's dataset only)
    #[arg(long, value_name = "ID")]
    pub dataset_id: Option<String>,
    /// The dataset of this linked Facebook Page (Messenger conversions)
    #[arg(long, value_name = "ID")]
    pub page_id: Option<String>,
    /// The dataset of this linked Instagram account (Instagram conversions)
    #[arg(long, value_name = "ID")]
    pub instagram_account_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConversionsArgs {
    /// delivered | pending | failed | in_flight
    #[arg(long)]
    pub status: Option<String>,
    /// 1 to 200 [server default: 50]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// next_cursor of the previous page
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Args)]
pub struct AutomaticEventsArgs {
    /// Only events at or after this time: unix seconds or RFC 3339
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events at or before this time: unix seconds or RFC 3339
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Purchase | LeadSubmitted
    #[arg(long, value_name = "NAME")]
    pub event_name: Option<String>,
    /// 1 to 200 [server default: 50]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// next_cursor of the previous page
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ConversationsArgs {
    /// Customer phone, E.164 with or without +
    #[arg(long, value_name = "E164")]
    pub phone: Option<String>,
    /// Business-scoped user id (when Meta sent no phone)
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,
    /// Messenger customer: the PSID (sender.id of the Page's webhook)
    #[arg(long, value_name = "ID")]
    pub psid: Option<String>,
    /// Instagram customer: the IGSID (sender.id of the Instagram webhook)
    #[arg(long, value_name = "ID")]
    pub igsid: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// First day, YYYY-MM-DD in the ad account's time zone [default: 30 days before --until]
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Last day, YYYY-MM-DD [default: yesterday]
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Rows per campaign, ad set or ad
    #[arg(long, value_parser = ["campaign", "adset", "ad"], default_value = "ad")]
    pub level: String,
    /// Ad account (act_...); needed when the account has several
    #[arg(long, value_name = "ACT")]
    pub ad_account_id: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AdsArgs {
    #[command(subcommand)]
    pub cmd: Option<AdsCmd>,
    #[command(flatten)]
    pub list: AdsListArgs,
}

#[derive(Debug, Args)]
pub struct AdsListArgs {
    /// Ad account (act_...); default: the account's
    #[arg(long, value_name = "ID")]
    pub ad_account_id: Option<String>,
    /// Ads per page
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// paging.after of the previous page
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdsCmd {
    /// create a Click-to-WhatsApp ad: campaign, ad set, image, creative, ad
    Create(AdsCreateArgs),
}

#[derive(Debug, Args)]
pub struct AdsCreateArgs {
    /// Name of the campaign, ad set and ad
    #[arg(long)]
    pub name: String,
    /// Daily budget in the ad account's minor units (e.g. 100000 = INR 1,000.00)
    #[arg(long, value_name = "MINOR_UNITS")]
    pub daily_budget: u64,
    /// The WhatsApp number the ad opens a chat with (E.164)
    #[arg(long, value_name = "E164")]
    pub whatsapp_number: String,
    /// Facebook Page that runs the ad [default: the ad account's]
    #[arg(long, value_name = "ID")]
    pub page_id: Option<String>,
    /// Target countries, ISO 3166 codes, comma-separated
    #[arg(long, value_name = "CC,..", value_delimiter = ',', required = true)]
    pub countries: Vec<String>,
    #[arg(long, value_name = "AGE")]
    pub age_min: Option<u8>,
    #[arg(long, value_name = "AGE")]
    pub age_max: Option<u8>,
    #[arg(long, default_value = "OUTCOME_ENGAGEMENT")]
    pub objective: String,
    #[arg(long, default_value = "CONVERSATIONS")]
    pub optimization_goal: String,
    /// Primary text of the ad
    #[arg(long)]
    pub message: Option<String>,
    /// Link of the creative (e.g. https://wa.me/<number>)
    #[arg(long, value_name = "URL")]
    pub link: Option<String>,
    /// Image file (PNG or JPEG), uploaded with the ad
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Ad account (act_...); default: the account's
    #[arg(long, value_name = "ID")]
    pub ad_account_id: Option<String>,
    /// Comma-separated (e.g. HOUSING); empty for none
    #[arg(long, value_name = "LIST", default_value = "")]
    pub special_ad_categories: String,
    /// Create it ACTIVE (it goes to review); default PAUSED
    #[arg(long)]
    pub publish: bool,
    /// Makes a retry safe: the same key answers the first outcome [default: random, printed]
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// post a signed Meta webhook with an ad click: a Cloud API message
    /// (Click-to-WhatsApp), or with --channel a Messenger / Instagram Direct message
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// whatsapp (a Cloud API webhook), messenger (object "page") or instagram
    /// (object "instagram")
    #[arg(long, value_name = "CHANNEL", value_parser = CHANNELS, default_value = "whatsapp")]
    pub channel: String,
    /// Business phone number id (metadata.phone_number_id) [default: the local run's]
    #[arg(long, value_name = "ID", conflicts_with_all = ["page_id", "instagram_account_id"])]
    pub phone_number_id: Option<String>,
    /// Messenger: the Facebook Page (entry id, recipient; required)
    #[arg(long, value_name = "ID", conflicts_with = "instagram_account_id")]
    pub page_id: Option<String>,
    /// Instagram: the Instagram professional account (entry id, recipient; required)
    #[arg(long, value_name = "ID")]
    pub instagram_account_id: Option<String>,
    /// The customer: WhatsApp id (phone digits, + allowed), Messenger PSID or Instagram
    /// IGSID (the sender.id)
    #[arg(long, value_name = "ID")]
    pub from: String,
    /// Click id on the referral (WhatsApp) [default: a new random one]
    #[arg(long, value_name = "CLID", conflicts_with_all = ["page_id", "instagram_account_id"])]
    pub ctwa_clid: Option<String>,
    /// Ad id on the referral
    #[arg(long, value_name = "AD_ID", default_value = "120226305854810726")]
    pub source_id: String,
    /// Message text
    #[arg(long, default_value = "Hi! I saw your ad")]
    pub text: String,
    /// Customer's profile name (WhatsApp: Messenger and Instagram send none)
    #[arg(long, default_value = "WhatsApp User")]
    pub name: String,
    /// A plain message: no referral, no click
    #[arg(long, conflicts_with = "ctwa_clid")]
    pub no_referral: bool,
    /// WABA id of the entry [default: the local run's]
    #[arg(long, value_name = "ID", conflicts_with_all = ["page_id", "instagram_account_id"])]
    pub waba_id: Option<String>,
    /// Meta app secret that signs the body [default: config app_secret, the local run's]
    #[arg(
        long,
        env = "CTWA_APP_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub app_secret: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCmd {
    /// list this account's keys
    List,
    /// create a key (shown once)
    Create {
        #[arg(long)]
        name: Option<String>,
        /// What the key may do: read, conversions, ads, connect, keys (repeat or
        /// comma-separate) [default: read]; never more than the key you use holds
        #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// a new key replacing this one; the old one keeps working for the grace period
    Rotate(RotateArgs),
    /// revoke a key now
    Revoke { key_id: String },
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    pub key_id: String,
    /// How long the old key keeps working
    #[arg(long, value_name = "N")]
    pub grace_seconds: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// client accounts
    Account {
        #[command(subcommand)]
        cmd: AdminAccountCmd,
    },
    /// link Meta ad accounts to an account
    AdAccount {
        #[command(subcommand)]
        cmd: AdminAdAccountCmd,
    },
    /// any account's API keys
    ApiKey {
        #[command(subcommand)]
        cmd: AdminApiKeyCmd,
    },
    /// phone number routes: link (checked with Meta), verify, show, move, remove
    PhoneNumber {
        #[command(subcommand)]
        cmd: AdminPhoneNumberCmd,
    },
    /// Facebook Page routes (Messenger): link, verified with the account's token
    #[command(alias = "pages")]
    Page {
        #[command(subcommand)]
        cmd: AdminPageCmd,
    },
    /// Instagram account routes (Instagram Direct): link, verified with the account's token
    #[command(alias = "instagram-accounts")]
    InstagramAccount {
        #[command(subcommand)]
        cmd: AdminInstagramAccountCmd,
    },
    /// run capture again: inbox items by message id, by time range (and account), or
    /// the capture's dead-letter queue; idempotent, page by page, with progress
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["message_id", "since", "dead_letters"])))]
pub struct ReplayArgs {
    /// an inbox message (wamid... or a Sinch message id); repeat for more (up to 100)
    #[arg(long = "message-id", value_name = "ID", conflicts_with_all = ["since", "dead_letters"])]
    pub message_id: Vec<String>,
    /// replay the inbox items received from this time (RFC 3339)
    #[arg(long, value_name = "TIME", conflicts_with = "dead_letters")]
    pub since: Option<String>,
    /// ... until this time (RFC 3339; default now)
    #[arg(long, value_name = "TIME", requires = "since")]
    pub until: Option<String>,
    /// with --since: only the items routed to this account
    #[arg(long, value_name = "ACCOUNT_ID", requires = "since")]
    pub account: Option<String>,
    /// replay the capture's on-failure (dead-letter) queue
    #[arg(long)]
    pub dead_letters: bool,
    /// per request: inbox items read (time range, default 200) or queue messages (default 5)
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// resume a time range from a cursor printed by an earlier run
    #[arg(long, value_name = "CURSOR", requires = "since")]
    pub cursor: Option<String>,
    /// stop after this many requests (the cursor to resume from is printed)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_requests: u32,
}

#[derive(Debug, Subcommand)]
pub enum AdminPhoneNumberCmd {
    /// link a phone number id to an account (refused if Meta lists it under another WABA)
    Link {
        #[arg(long, value_name = "ID")]
        account: String,
        phone_number_id: String,
    },
    /// check an account's unverified phone number ids with Meta now
    Verify {
        #[arg(long, value_name = "ID")]
        account: String,
    },
    /// the route, its audit trail and the messages quarantined for it
    Show { phone_number_id: String },
    /// give the phone number id to another account
    Move {
        phone_number_id: String,
        /// The account to give it to
        #[arg(long, value_name = "ID")]
        to: String,
        /// The account believed to hold it now (refused if another does)
        #[arg(long, value_name = "ID")]
        from: Option<String>,
    },
    /// unlink the phone number id
    Remove {
        phone_number_id: String,
        /// The account believed to hold it now (refused if another does)
        #[arg(long, value_name = "ID")]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminPageCmd {
    /// link a Facebook Page to an account (refused if the account's Meta token does not
    /// reach it)
    Link {
        #[arg(long, value_name = "ID")]
        account: String,
        page_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminInstagramAccountCmd {
    /// link an Instagram professional account to an account (refused if the account's
    /// Meta token does not reach it)
    Link {
        #[arg(long, value_name = "ID")]
        account: String,
        instagram_account_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminAccountCmd {
    /// create an account
    Create(AccountCreateArgs),
    /// show an account
    Show { id: String },
}

#[derive(Debug, Args)]
pub struct AccountCreateArgs {
    #[arg(long)]
    pub name: String,
    /// Account id [default: chosen by the API]
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long, value_name = "ID")]
    pub waba_id: Option<String>,
    /// Repeat for each business number
    #[arg(long, value_name = "ID")]
    pub phone_number_id: Vec<String>,
    #[arg(long, value_name = "ID")]
    pub sinch_app_id: Option<String>,
    /// A file holding the Sinch app's webhook secret (never given on the command line:
    /// shell history and `ps` would show it)
    #[arg(long, value_name = "PATH", requires = "sinch_app_id")]
    pub sinch_webhook_secret_file: Option<std::path::PathBuf>,
    /// Repeat for each ad account (act_...)
    #[arg(long, value_name = "ID")]
    pub ad_account_id: Vec<String>,
    #[arg(long, value_name = "ID")]
    pub page_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AdminAdAccountCmd {
    /// link an ad account to an account
    Link {
        #[arg(long, value_name = "ID")]
        account: String,
        /// act_...
        #[arg(long, value_name = "ID")]
        ad_account_id: String,
        /// The Page its ads run as (the default of `ads create --page-id`)
        #[arg(long, value_name = "ID")]
        page_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminApiKeyCmd {
    /// create a key for an account (shown once)
    Create {
        #[arg(long, value_name = "ID")]
        account: String,
        #[arg(long)]
        name: Option<String>,
        /// What the key may do: read, conversions, ads, connect, keys (repeat or
        /// comma-separate) [default: read]
        #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// list an account's keys
    List {
        #[arg(long, value_name = "ID")]
        account: String,
    },
    /// a new key replacing this one; the old one keeps working for the grace period
    Rotate(RotateArgs),
    /// revoke a key now
    Revoke { key_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_group_name_and_alias_are_dropped() {
        let spelled = |a: &[&str]| -> Vec<String> {
            seed_spelling(a.iter().map(std::ffi::OsString::from))
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(spelled(&["ctwa", "meta-ads", "ads"]), ["ctwa", "ads"]);
        assert_eq!(spelled(&["ctwa", "ctwa", "ads"]), ["ctwa", "ads"]);
        assert_eq!(
            spelled(&["ctwa", "--api-key", "k", "--table", "meta-ads", "ad", "1"]),
            ["ctwa", "--api-key", "k", "--table", "ad", "1"]
        );
        // A value of an option is never taken for the group's name.
        assert_eq!(
            spelled(&["ctwa", "--api-key", "ctwa", "ads"]),
            ["ctwa", "--api-key", "ctwa", "ads"]
        );
        assert_eq!(spelled(&["ctwa", "ads", "ctwa"]), ["ctwa", "ads", "ctwa"]);
        let cli = Cli::try_parse_from(spelled(&["ctwa", "meta-ads"])).unwrap();
        assert!(cli.command.is_none());
    }

    #[test]
    fn scopes_json_or_commas() {
        assert_eq!(parse_scopes(r#"["a","b"]"#).unwrap().0, ["a", "b"]);
        assert_eq!(parse_scopes("a, b,").unwrap().0, ["a", "b"]);
        assert!(parse_scopes("[1]").is_err());
    }

    #[test]
    fn no_command_is_status_and_subcommands_default() {
        let cli = Cli::try_parse_from(["ctwa"]).unwrap();
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["ctwa", "capi"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Capi { cmd: None })));
        let cli = Cli::try_parse_from(["ctwa", "ads", "--limit", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Ads(AdsArgs { cmd: None, .. }))
        ));
        let cli = Cli::try_parse_from([
            "ctwa",
            "ads",
            "create",
            "--name",
            "n",
            "--daily-budget",
            "1",
            "--whatsapp-number",
            "+1",
            "--page-id",
            "p",
            "--countries",
            "IN,AE",
        ])
        .unwrap();
        let Some(Command::Ads(AdsArgs {
            cmd: Some(AdsCmd::Create(c)),
            ..
        })) = cli.command
        else {
            panic!("ads create")
        };
        assert_eq!(c.countries, ["IN", "AE"]);
        assert!(Cli::try_parse_from(["ctwa", "conversations"]).is_err());
        assert!(
            Cli::try_parse_from(["ctwa", "conversations", "--phone", "1", "--user-id", "u"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["ctwa", "capi", "save", "--lead-enabled", "maybe"]).is_err());
    }

    fn parses(a: &[&str]) -> bool {
        Cli::try_parse_from(a).is_ok()
    }

    #[test]
    fn messenger_and_instagram_customers_are_one_of_the_ids() {
        // conversations: exactly one of phone, user id, PSID, IGSID.
        assert!(parses(&["ctwa", "conversations", "--psid", "2000"]));
        assert!(parses(&["ctwa", "conversations", "--igsid", "IG1"]));
        for bad in [
            &["ctwa", "conversations", "--psid", "1", "--igsid", "2"][..],
            &["ctwa", "conversations", "--psid", "1", "--phone", "+1"],
            &["ctwa", "conversations", "--igsid", "1", "--user-id", "u"],
        ] {
            assert!(!parses(bad), "{bad:?}");
        }
        // send-event: seed 001's spellings as written, or a PSID / IGSID, exactly one.
        let send = |extra: &[&'static str]| {
            let mut a = vec!["ctwa", "capi", "send-event", "--event-type", "purchase"];
            a.extend_from_slice(extra);
            Cli::try_parse_from(a)
        };
        assert!(send(&["--phone", "+919876543210"]).is_ok());
        assert!(send(&["--conversation-id", "c_1"]).is_ok());
        let Some(Command::Capi {
            cmd: Some(CapiCmd::SendEvent(a)),
        }) = send(&["--psid", "2000", "--channel", "messenger"])
            .unwrap()
            .command
        else {
            panic!("send-event")
        };
        assert_eq!(
            (a.psid.as_deref(), a.channel.as_deref()),
            (Some("2000"), Some("messenger"))
        );
        assert!(send(&["--igsid", "IG1", "--channel", "instagram"]).is_ok());
        for bad in [
            &[][..],
            &["--channel", "messenger"],
            &["--psid", "1", "--phone", "+1"],
            &["--psid", "1", "--conversation-id", "c_1"],
            &["--psid", "1", "--igsid", "2"],
            &["--igsid", "1", "--phone", "+1"],
            &["--phone", "+1", "--conversation-id", "c_1"],
            &["--psid", "1", "--channel", "telegram"],
        ] {
            assert!(send(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn channel_datasets_simulations_and_links() {
        assert!(parses(&["ctwa", "dataset", "create"]));
        assert!(parses(&["ctwa", "dataset", "create", "--page-id", "11"]));
        assert!(parses(&[
            "ctwa",
            "dataset",
            "create",
            "--instagram-account-id",
            "178"
        ]));
        assert!(!parses(&[
            "ctwa",
            "dataset",
            "create",
            "--page-id",
            "11",
            "--instagram-account-id",
            "178"
        ]));
        assert!(!parses(&[
            "ctwa",
            "dataset",
            "create",
            "--dataset-id",
            "88",
            "--page-id",
            "11"
        ]));

        let sim = |extra: &[&'static str]| {
            let mut a = vec!["ctwa", "webhook", "simulate", "--from", "2000"];
            a.extend_from_slice(extra);
            Cli::try_parse_from(a)
        };
        let Some(Command::Webhook {
            cmd: WebhookCmd::Simulate(a),
        }) = sim(&[]).unwrap().command
        else {
            panic!("simulate")
        };
        assert_eq!(a.channel, "whatsapp", "today's behaviour by default");
        assert!(sim(&["--channel", "messenger", "--page-id", "11"]).is_ok());
        assert!(sim(&["--channel", "instagram", "--instagram-account-id", "178"]).is_ok());
        assert!(sim(&["--channel", "messenger", "--page-id", "11", "--no-referral"]).is_ok());
        for bad in [
            &["--channel", "sms"][..],
            &["--page-id", "11", "--instagram-account-id", "178"],
            &["--page-id", "11", "--phone-number-id", "1"],
            &["--page-id", "11", "--waba-id", "1"],
            &["--instagram-account-id", "178", "--ctwa-clid", "Aff"],
        ] {
            assert!(sim(bad).is_err(), "{bad:?}");
        }

        for ok in [
            &["ctwa", "admin", "page", "link", "--account", "a", "11"][..],
            &["ctwa", "admin", "pages", "link", "--account", "a", "11"],
            &[
                "ctwa",
                "admin",
                "instagram-account",
                "link",
                "--account",
                "a",
                "178",
            ],
            &[
                "ctwa",
                "admin",
                "instagram-accounts",
                "link",
                "--account",
                "a",
                "178",
            ],
        ] {
            assert!(parses(ok), "{ok:?}");
        }
        assert!(!parses(&["ctwa", "admin", "page", "link", "11"]));
    }
}
