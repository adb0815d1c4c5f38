//! Each command: the request it makes, and what it says besides the JSON.

use crate::args::*;
use crate::client::{Answer, Api, Body, Req, segment};
use crate::config::{self, NO_URL, Settings};
use crate::error::CliError;
use crate::output;
use crate::webhook;
use base64::Engine;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::time::Duration;

const DEFAULT_TIMEOUT: u64 = 30;
/// Creating an ad is five Graph calls and an upload.
const ADS_CREATE_TIMEOUT: u64 = 120;
/// The API takes 4 MiB of base64 for an image (a Lambda request body is 6 MB): 3 MiB.
const MAX_IMAGE_BYTES: usize = 3 * 1024 * 1024;

struct Ctx {
    api: Api,
    settings: Settings,
    table: bool,
}

impl Ctx {
    fn print(&self, v: &Value) {
        output::print_stdout(&output::render(v, self.table));
    }
    async fn show(&self, req: Req) -> Result<Answer, CliError> {
        let a = self.api.send(req).await?;
        self.print(&a.body);
        Ok(a)
    }
}

fn note(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

/// `Some(v)` fields only.
fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    let m: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
    Value::Object(m)
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let Global {
        api_url,
        api_key,
        config,
        table,
        verbose,
        timeout,
    } = cli.global;
    let command = cli.command.unwrap_or(Command::Status);
    let secret_flag = match &command {
        Command::Webhook {
            cmd: WebhookCmd::Simulate(a),
        } => a.app_secret.clone(),
        _ => None,
    };
    let settings = config::resolve(api_url, api_key, secret_flag, config.as_deref())?;
    let (base, origin) = settings
        .api_url
        .clone()
        .ok_or_else(|| CliError::Config(NO_URL.into()))?;
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(CliError::Config(format!(
            "the API URL must start with http:// or https:// (got {base:?})"
        )));
    }
    let timeout_secs = timeout.unwrap_or(match &command {
        Command::Ads(AdsArgs {
            cmd: Some(AdsCmd::Create(_)),
            ..
        }) => ADS_CREATE_TIMEOUT,
        _ => DEFAULT_TIMEOUT,
    });
    let api = Api::new(
        base,
        origin,
        settings.api_key.clone(),
        verbose,
        Duration::from_secs(timeout_secs),
    )?;
    let ctx = Ctx {
        api,
        settings,
        table,
    };
    match command {
        Command::Status => ctx.show(Req::get("/v1/status")).await.map(drop),
        Command::Capi { cmd } => match cmd.unwrap_or(CapiCmd::Show) {
            CapiCmd::Show => ctx.show(Req::get("/v1/capi")).await.map(drop),
            CapiCmd::Save(a) => capi_save(&ctx, a).await,
            CapiCmd::SendEvent(a) => send_event(&ctx, a).await,
        },
        Command::ExchangeCode(a) => exchange_code(&ctx, a).await,
        Command::RefreshToken => ctx
            .show(Req::post("/v1/oauth/refresh-token", json!({})))
            .await
            .map(drop),
        Command::Dataset { cmd } => match cmd.unwrap_or(DatasetCmd::Show) {
            DatasetCmd::Show => ctx.show(Req::get("/v1/dataset")).await.map(drop),
            DatasetCmd::Create(a) => ctx
                .show(Req::post(
                    "/v1/dataset",
                    object(vec![
                        ("dataset_id", a.dataset_id.map(Value::String)),
                        ("page_id", a.page_id.map(Value::String)),
                        (
                            "instagram_account_id",
                            a.instagram_account_id.map(Value::String),
                        ),
                    ]),
                ))
                .await
                .map(drop),
        },
        Command::Conversions(a) => ctx
            .show(
                Req::get("/v1/conversions")
                    .query("status", a.status)
                    .query("limit", a.limit)
                    .query("cursor", a.cursor),
            )
            .await
            .map(drop),
        Command::AutomaticEvents(a) => ctx
            .show(
                Req::get("/v1/automatic-events")
                    .query("since", a.since)
                    .query("until", a.until)
                    .query("event_name", a.event_name)
                    .query("limit", a.limit)
                    .query("cursor", a.cursor),
            )
            .await
            .map(drop),
        Command::Conversations(a) => ctx
            .show(
                Req::get("/v1/conversations")
                    .query("phone", a.phone)
                    .query("user_id", a.user_id)
                    .query("psid", a.psid)
                    .query("igsid", a.igsid),
            )
            .await
            .map(drop),
        Command::Conversation { id } => ctx
            .show(Req::get(format!("/v1/conversations/{}", segment(&id))))
            .await
            .map(drop),
        Command::Ads(AdsArgs { cmd: None, list }) => ctx
            .show(
                Req::get("/v1/ads")
                    .query("ad_account_id", list.ad_account_id)
                    .query("limit", list.limit)
                    .query("after", list.after),
            )
            .await
            .map(drop),
        Command::Ads(AdsArgs {
            cmd: Some(AdsCmd::Create(a)),
            ..
        }) => ads_create(&ctx, a).await,
        Command::Report(a) => {
            let answer = ctx
                .api
                .send(
                    Req::get("/v1/reports/ads")
                        .query("since", a.since)
                        .query("until", a.until)
                        .query("level", Some(a.level))
                        .query("ad_account_id", a.ad_account_id),
                )
                .await?;
            if ctx.table {
                output::print_stdout(&output::render_report(&answer.body));
            } else {
                ctx.print(&answer.body);
            }
            Ok(())
        }
        Command::Ad { ad_id } => ctx
            .show(Req::get(format!("/v1/ads/{}", segment(&ad_id))))
            .await
            .map(drop),
        Command::Webhook {
            cmd: WebhookCmd::Simulate(a),
        } => simulate(&ctx, a).await,
        Command::ApiKey { cmd } => api_keys(&ctx, cmd).await,
        Command::Admin { cmd } => admin(&ctx, cmd).await,
    }
}

async fn capi_save(ctx: &Ctx, a: CapiSaveArgs) -> Result<(), CliError> {
    let s = |v: Option<String>| v.map(Value::String);
    let body = object(vec![
        ("dataset_id", s(a.dataset_id)),
        ("lead_event_enabled", a.lead_enabled.map(Value::Bool)),
        ("lead_event_trigger", s(a.lead_trigger)),
        ("lead_event_tag", s(a.lead_tag)),
        (
            "purchase_event_enabled",
            a.purchase_enabled.map(Value::Bool),
        ),
        ("purchase_event_trigger", s(a.purchase_trigger)),
        ("purchase_event_tag", s(a.purchase_tag)),
        ("purchase_event_currency", s(a.purchase_currency)),
        ("purchase_event_value", a.purchase_value.map(|v| json!(v))),
        (
            "forward_automatic_events",
            a.forward_automatic_events.map(Value::Bool),
        ),
    ]);
    let answer = ctx.show(Req::post("/v1/capi", body)).await?;
    let capi = &answer.body["capi"];
    if capi["connected"] == false && capi["dataset_id"].is_null() {
        note(
            "note: saved; Meta is not connected, so no dataset yet: run `ctwa exchange-code --code <code>`, then save again",
        );
    }
    Ok(())
}

/// `lead` and `purchase` (seed 001's event types) to Meta's names; others as given.
pub fn event_name(event_type: &str) -> String {
    match event_type.trim().to_ascii_lowercase().as_str() {
        "lead" => "LeadSubmitted".into(),
        "purchase" => "Purchase".into(),
        _ => event_type.trim().to_string(),
    }
}

async fn send_event(ctx: &Ctx, a: SendEventArgs) -> Result<(), CliError> {
    let name = event_name(&a.event_type);
    let (mut value, mut currency) = (a.value, a.currency);
    // A purchase without an amount takes the CAPI config's defaults (seed 001).
    if name == "Purchase" && (value.is_none() || currency.is_none()) {
        let capi = ctx.api.send(Req::get("/v1/capi")).await?.body;
        if value.is_none() {
            value = capi["capi"]["purchase_event_value"].as_f64();
        }
        if currency.is_none() {
            currency = capi["capi"]["purchase_event_currency"]
                .as_str()
                .map(String::from);
        }
        if let (Some(v), Some(c)) = (value, &currency) {
            note(format!(
                "note: value/currency not given: the CAPI config's {v} {c}"
            ));
        }
    }
    let body = object(vec![
        ("event_name", Some(Value::String(name))),
        ("phone", a.phone.map(Value::String)),
        ("conversation_id", a.conversation_id.map(Value::String)),
        ("psid", a.psid.map(Value::String)),
        ("igsid", a.igsid.map(Value::String)),
        ("messaging_channel", a.channel.map(Value::String)),
        ("value", value.map(|v| json!(v))),
        ("currency", currency.map(Value::String)),
        ("event_id", a.event_id.map(Value::String)),
        ("test_event_code", a.test_event_code.map(Value::String)),
    ]);
    let answer = ctx.show(Req::post("/v1/conversions", body)).await?;
    let b = &answer.body;
    if b["reason"] == "waiting_for_click" {
        note(format!(
            "note: no click for this customer yet: the event is kept and sent when its click is captured (until {}); if none comes, nothing is sent",
            b["wait_until"].as_str().unwrap_or("the end of the wait")
        ));
    } else if let Some(reason) = b["reason"].as_str() {
        let why = match reason {
            "no_ctwa_click_id_for_phone" => {
                "no Click-to-WhatsApp click is known for this phone (try `ctwa webhook simulate` locally)"
            }
            "no_ctwa_click_id_for_conversation" => {
                "this conversation has no Click-to-WhatsApp click"
            }
            "no_conversation_for_customer" => {
                "this customer never wrote to a linked Page or Instagram account (try `ctwa webhook simulate --channel messenger` locally)"
            }
            "no_ad_click_for_conversation" => "this conversation has no ad click",
            _ => reason,
        };
        note(format!("note: nothing sent to Meta: {why}"));
    } else if b["duplicate"] == true {
        note("note: this event_id was sent before: its first outcome, nothing sent again");
    } else if answer.status == 202 {
        note("note: Meta is unavailable: the event is kept and re-sent automatically");
    }
    for w in b["warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            note(format!("warning: {w}"));
        }
    }
    Ok(())
}

async fn exchange_code(ctx: &Ctx, a: ExchangeArgs) -> Result<(), CliError> {
    let code = match a.code {
        Some(c) => c,
        None => match ctx
            .settings
            .local
            .as_ref()
            .and_then(|l| l.oauth_code.clone().map(|c| (c, l.path.clone())))
        {
            Some((c, path)) => {
                note(format!(
                    "using the local run's demo OAuth code from {}",
                    path.display()
                ));
                c
            }
            None => {
                return Err(CliError::Usage(
                    "--code <CODE> is required: the ?code= Meta appended to your redirect URI"
                        .into(),
                ));
            }
        },
    };
    let body = object(vec![
        ("code", Some(Value::String(code))),
        ("granted_scopes", a.granted_scopes.map(|s| json!(s.0))),
        ("redirect_uri", a.redirect_uri.map(Value::String)),
    ]);
    ctx.show(Req::post("/v1/oauth/exchange-code", body))
        .await
        .map(drop)
}

/// `✓ 2/5 campaign 2385… (12 ms)`: numbered by position (the API numbers the optional
/// image upload 0).
fn step_line(n: usize, total: usize, step: &Value) -> String {
    let mut line = format!("✓ {n}/{total} {}", step["name"].as_str().unwrap_or("step"));
    if let Some(id) = step["id"].as_str() {
        line.push(' ');
        line.push_str(id);
    }
    if let Some(ms) = step["duration_ms"].as_u64() {
        line.push_str(&format!(" ({ms} ms)"));
    }
    line
}

pub fn ads_create_body(a: &AdsCreateArgs) -> Result<Value, CliError> {
    if let (Some(min), Some(max)) = (a.age_min, a.age_max)
        && min > max
    {
        return Err(CliError::Usage(format!(
            "--age-min {min} is above --age-max {max}"
        )));
    }
    let countries: Vec<String> = a
        .countries
        .iter()
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .collect();
    if countries.is_empty() {
        return Err(CliError::Usage(
            "--countries needs at least one country code (e.g. IN,AE)".into(),
        ));
    }
    let image = match &a.image {
        None => None,
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("--image {}: {e}", path.display())))?;
            if bytes.len() > MAX_IMAGE_BYTES {
                return Err(CliError::Usage(format!(
                    "--image {}: {} bytes; at most {MAX_IMAGE_BYTES} bytes go through the API",
                    path.display(),
                    bytes.len()
                )));
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            Some(json!({
                "bytes": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "name": name,
            }))
        }
    };
    let special: Vec<String> = a
        .special_ad_categories
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let targeting = object(vec![
        ("geo_locations", Some(json!({ "countries": countries }))),
        ("age_min", a.age_min.map(|v| json!(v))),
        ("age_max", a.age_max.map(|v| json!(v))),
    ]);
    let creative = object(vec![
        ("message", a.message.clone().map(Value::String)),
        ("link", a.link.clone().map(Value::String)),
        ("image", image),
    ]);
    Ok(object(vec![
        ("ad_account_id", a.ad_account_id.clone().map(Value::String)),
        ("name", Some(json!(a.name))),
        ("objective", Some(json!(a.objective))),
        ("optimization_goal", Some(json!(a.optimization_goal))),
        ("special_ad_categories", Some(json!(special))),
        ("daily_budget", Some(json!(a.daily_budget))),
        ("page_id", a.page_id.clone().map(Value::String)),
        ("whatsapp_phone_number", Some(json!(a.whatsapp_number))),
        ("targeting", Some(targeting)),
        ("creative", Some(creative)),
        ("publish", Some(json!(a.publish))),
    ]))
}

async fn ads_create(ctx: &Ctx, a: AdsCreateArgs) -> Result<(), CliError> {
    let body = ads_create_body(&a)?;
    let key = a
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("ctwa-cli-{}", hex::encode(webhook::random_bytes::<16>())));
    note(format!(
        "idempotency key: {key} (if no answer comes, run again with --idempotency-key {key}: it never creates twice; the same key replays the first outcome)"
    ));
    let mut req = Req::post("/v1/ads/ctwa", body);
    req.headers.push(("idempotency-key", key));
    req.retry = true;
    let answer = ctx.api.send(req).await?;
    let steps = answer.body["steps"].as_array().cloned().unwrap_or_default();
    for (i, s) in steps.iter().enumerate() {
        note(step_line(i + 1, steps.len(), s));
    }
    ctx.print(&answer.body);
    Ok(())
}

/// Where `webhook simulate` posts to: a WhatsApp business number, or a Page /
/// Instagram account (`object` of the webhook, the business's id).
#[derive(Debug, PartialEq, Eq)]
pub enum SimulateTarget {
    WhatsApp,
    Messaging {
        object: &'static str,
        business_id: String,
    },
}

/// The channel's target, refusing the flags of another channel.
pub fn simulate_target(a: &SimulateArgs) -> Result<SimulateTarget, CliError> {
    let whatsapp_flags = [
        ("--phone-number-id", a.phone_number_id.is_some()),
        ("--waba-id", a.waba_id.is_some()),
        ("--ctwa-clid", a.ctwa_clid.is_some()),
    ];
    let given = |flags: &[(&'static str, bool)]| -> Option<&'static str> {
        flags.iter().find(|(_, on)| *on).map(|(f, _)| *f)
    };
    let (object, id, flag, other) = match a.channel.as_str() {
        "messenger" => (
            "page",
            &a.page_id,
            "--page-id",
            [("--instagram-account-id", a.instagram_account_id.is_some())],
        ),
        "instagram" => (
            "instagram",
            &a.instagram_account_id,
            "--instagram-account-id",
            [("--page-id", a.page_id.is_some())],
        ),
        _ => {
            return match given(&[
                ("--page-id", a.page_id.is_some()),
                ("--instagram-account-id", a.instagram_account_id.is_some()),
            ]) {
                Some(f) => Err(CliError::Usage(format!(
                    "{f} goes with --channel messenger or instagram, not whatsapp"
                ))),
                None => Ok(SimulateTarget::WhatsApp),
            };
        }
    };
    if let Some(f) = given(&whatsapp_flags).or(given(&other)) {
        return Err(CliError::Usage(format!(
            "{f} does not go with --channel {}",
            a.channel
        )));
    }
    let business_id = id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{flag} <ID> is required with --channel {} (the id Meta puts in entry[].id)",
                a.channel
            ))
        })?
        .to_string();
    Ok(SimulateTarget::Messaging {
        object,
        business_id,
    })
}

async fn simulate(ctx: &Ctx, a: SimulateArgs) -> Result<(), CliError> {
    let target = simulate_target(&a)?;
    let (body, said) = match target {
        SimulateTarget::WhatsApp => whatsapp_body(ctx, &a)?,
        SimulateTarget::Messaging {
            object,
            business_id,
        } => {
            let sender = a.from.trim();
            if sender.is_empty() || sender.contains(char::is_whitespace) {
                return Err(CliError::Usage(format!(
                    "--from {:?}: the customer's {} (sender.id of the webhook)",
                    a.from,
                    if object == "page" { "PSID" } else { "IGSID" }
                )));
            }
            let mid = webhook::new_mid();
            let timestamp_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default();
            let ad_id = (!a.no_referral).then_some(a.source_id.as_str());
            let body = webhook::messaging_body(&webhook::MessagingMessage {
                object,
                business_id: &business_id,
                sender_id: sender,
                mid: &mid,
                text: &a.text,
                timestamp_ms,
                ad_id,
            });
            let to = if object == "page" {
                "Page"
            } else {
                "Instagram account"
            };
            let said = match ad_id {
                Some(ad) => format!(
                    "simulated {} message {mid} from {sender} to {to} {business_id}: ad {ad}",
                    a.channel
                ),
                None => format!(
                    "simulated {} message {mid} from {sender} to {to} {business_id} (no referral)",
                    a.channel
                ),
            };
            (body, said)
        }
    };
    let secret = ctx.settings.app_secret.clone().ok_or_else(|| {
        CliError::Config(
            "no app secret to sign the webhook: pass --app-secret, set CTWA_APP_SECRET, or put app_secret in the config file".into(),
        )
    })?;
    let signature = webhook::sign(&secret, &body);
    let mut req = Req::new(Method::POST, "/webhook");
    req.auth = false;
    req.body = Some(Body::Raw(body));
    req.headers.push(("x-hub-signature-256", signature));
    let answer = ctx.api.send(req).await?;
    note(said);
    ctx.print(&answer.body);
    Ok(())
}

/// The Click-to-WhatsApp webhook and the line that says what it is.
fn whatsapp_body(ctx: &Ctx, a: &SimulateArgs) -> Result<(Vec<u8>, String), CliError> {
    let local = ctx.settings.local.as_ref();
    let phone_number_id = a
        .phone_number_id
        .clone()
        .or_else(|| local.and_then(|l| l.phone_number_id.clone()))
        .ok_or_else(|| {
            CliError::Usage(
                "--phone-number-id <ID> is required (the business number's id; no local run found)"
                    .into(),
            )
        })?;
    let waba_id = a
        .waba_id
        .clone()
        .or_else(|| local.and_then(|l| l.waba_id.clone()));
    let wa_id: String = a.from.chars().filter(char::is_ascii_digit).collect();
    if wa_id.is_empty() {
        return Err(CliError::Usage(format!(
            "--from {:?}: a WhatsApp id is the customer's phone digits",
            a.from
        )));
    }
    let clid = match (&a.ctwa_clid, a.no_referral) {
        (_, true) => None,
        (Some(c), false) => Some(c.clone()),
        (None, false) => Some(webhook::new_clid()),
    };
    let wamid = webhook::new_wamid();
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let body = webhook::body(&webhook::Message {
        phone_number_id: &phone_number_id,
        waba_id: waba_id.as_deref(),
        wa_id: &wa_id,
        name: &a.name,
        text: &a.text,
        wamid: &wamid,
        timestamp,
        referral: clid.as_deref().map(|c| (c, a.source_id.as_str())),
    });
    let said = match &clid {
        Some(c) => format!(
            "simulated {wamid} from {wa_id} to {phone_number_id}: ctwa_clid {c}, ad {}",
            a.source_id
        ),
        None => format!("simulated {wamid} from {wa_id} to {phone_number_id} (no referral)"),
    };
    Ok((body, said))
}

/// The `scopes` of a new key: absent when none was given (the API's default, read).
fn scopes_field(scopes: Vec<String>) -> Option<Value> {
    (!scopes.is_empty()).then(|| json!(scopes))
}

fn key_created_note() {
    note("note: the new key is shown once: store it now");
}

async fn rotate(ctx: &Ctx, a: RotateArgs) -> Result<(), CliError> {
    ctx.show(Req::post(
        format!("/v1/api-keys/{}/rotate", segment(&a.key_id)),
        object(vec![("grace_seconds", a.grace_seconds.map(|g| json!(g)))]),
    ))
    .await?;
    key_created_note();
    Ok(())
}

async fn revoke(ctx: &Ctx, key_id: &str) -> Result<(), CliError> {
    let answer = ctx
        .api
        .send(Req::new(
            Method::DELETE,
            format!("/v1/api-keys/{}", segment(key_id)),
        ))
        .await?;
    if answer.body.is_null() {
        ctx.print(&json!({"revoked": true, "key_id": key_id}));
    } else {
        ctx.print(&answer.body);
    }
    Ok(())
}

async fn api_keys(ctx: &Ctx, cmd: ApiKeyCmd) -> Result<(), CliError> {
    match cmd {
        ApiKeyCmd::List => ctx.show(Req::get("/v1/api-keys")).await.map(drop),
        ApiKeyCmd::Create { name, scopes } => {
            ctx.show(Req::post(
                "/v1/api-keys",
                object(vec![
                    ("name", name.map(Value::String)),
                    ("scopes", scopes_field(scopes)),
                ]),
            ))
            .await?;
            key_created_note();
            Ok(())
        }
        ApiKeyCmd::Rotate(a) => rotate(ctx, a).await,
        ApiKeyCmd::Revoke { key_id } => revoke(ctx, &key_id).await,
    }
}

/// `ctwa admin phone-number ...`: the operator's phone number routes.
async fn phone_number(ctx: &Ctx, cmd: AdminPhoneNumberCmd) -> Result<(), CliError> {
    let req = match cmd {
        AdminPhoneNumberCmd::Link {
            account,
            phone_number_id,
        } => Req::post(
            format!("/v1/admin/accounts/{}/phone-numbers", segment(&account)),
            json!({ "phone_number_id": phone_number_id }),
        ),
        AdminPhoneNumberCmd::Verify { account } => Req::post(
            format!(
                "/v1/admin/accounts/{}/phone-numbers/verify",
                segment(&account)
            ),
            json!({}),
        ),
        AdminPhoneNumberCmd::Show { phone_number_id } => Req::get(format!(
            "/v1/admin/phone-numbers/{}",
            segment(&phone_number_id)
        )),
        AdminPhoneNumberCmd::Move {
            phone_number_id,
            to,
            from,
        } => Req::post(
            format!("/v1/admin/phone-numbers/{}/move", segment(&phone_number_id)),
            object(vec![
                ("account_id", Some(Value::String(to))),
                ("from_account_id", from.map(Value::String)),
            ]),
        ),
        AdminPhoneNumberCmd::Remove {
            phone_number_id,
            account,
        } => Req::new(
            Method::DELETE,
            format!("/v1/admin/phone-numbers/{}", segment(&phone_number_id)),
        )
        .query("account_id", account),
    };
    ctx.show(req).await.map(drop)
}

async fn admin(ctx: &Ctx, cmd: AdminCmd) -> Result<(), CliError> {
    match cmd {
        AdminCmd::Account {
            cmd: AdminAccountCmd::Create(a),
        } => {
            let s = |v: Option<String>| v.map(Value::String);
            let sinch_secret = match &a.sinch_webhook_secret_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            CliError::Usage(format!(
                                "--sinch-webhook-secret-file {}: {e}",
                                path.display()
                            ))
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                ),
                None => None,
            };
            let body = object(vec![
                ("id", s(a.id)),
                ("name", Some(Value::String(a.name))),
                ("waba_id", s(a.waba_id)),
                ("phone_number_ids", Some(json!(a.phone_number_id))),
                ("sinch_app_id", s(a.sinch_app_id)),
                ("sinch_webhook_secret", s(sinch_secret)),
                ("ad_account_ids", Some(json!(a.ad_account_id))),
                ("page_id", s(a.page_id)),
            ]);
            ctx.show(Req::post("/v1/admin/accounts", body))
                .await
                .map(drop)
        }
        AdminCmd::Account {
            cmd: AdminAccountCmd::Show { id },
        } => ctx
            .show(Req::get(format!("/v1/admin/accounts/{}", segment(&id))))
            .await
            .map(drop),
        AdminCmd::AdAccount {
            cmd:
                AdminAdAccountCmd::Link {
                    account,
                    ad_account_id,
                    page_id,
                },
        } => ctx
            .show(Req::post(
                format!("/v1/admin/accounts/{}/ad-accounts", segment(&account)),
                object(vec![
                    ("ad_account_id", Some(Value::String(ad_account_id))),
                    ("page_id", page_id.map(Value::String)),
                ]),
            ))
            .await
            .map(drop),
        AdminCmd::PhoneNumber { cmd } => phone_number(ctx, cmd).await,
        AdminCmd::Page {
            cmd: AdminPageCmd::Link { account, page_id },
        } => ctx
            .show(Req::post(
                format!("/v1/admin/accounts/{}/pages", segment(&account)),
                json!({ "page_id": page_id }),
            ))
            .await
            .map(drop),
        AdminCmd::InstagramAccount {
            cmd:
                AdminInstagramAccountCmd::Link {
                    account,
                    instagram_account_id,
                },
        } => ctx
            .show(Req::post(
                format!(
                    "/v1/admin/accounts/{}/instagram-accounts",
                    segment(&account)
                ),
                json!({ "instagram_account_id": instagram_account_id }),
            ))
            .await
            .map(drop),
        AdminCmd::Replay(a) => replay(ctx, a).await,
        AdminCmd::ApiKey { cmd } => match cmd {
            AdminApiKeyCmd::Create {
                account,
                name,
                scopes,
            } => {
                ctx.show(Req::post(
                    "/v1/api-keys",
                    object(vec![
                        ("account_id", Some(Value::String(account))),
                        ("name", name.map(Value::String)),
                        ("scopes", scopes_field(scopes)),
                    ]),
                ))
                .await?;
                key_created_note();
                Ok(())
            }
            AdminApiKeyCmd::List { account } => ctx
                .show(Req::get("/v1/api-keys").query("account_id", Some(account)))
                .await
                .map(drop),
            AdminApiKeyCmd::Rotate(a) => rotate(ctx, a).await,
            AdminApiKeyCmd::Revoke { key_id } => revoke(ctx, &key_id).await,
        },
    }
}

/// `admin replay`: one request per page (time range) or a few queue messages (dead
/// letters) until the API says it is done; a progress line per request on stderr, and
/// at the end one JSON summary: totals, and the items that changed or failed.
async fn replay(ctx: &Ctx, a: ReplayArgs) -> Result<(), CliError> {
    let n = |v: Option<u32>| v.map(|v| json!(v));
    let s = |v: Option<String>| v.map(Value::String);
    let mut cursor = a.cursor.clone();
    let (mut requests, mut scanned, mut replayed, mut changed, mut failed) = (0u64, 0, 0, 0, 0);
    let (mut received, mut deleted) = (0u64, 0u64);
    let mut items: Vec<Value> = Vec::new();
    let mut not_found: Vec<Value> = Vec::new();
    let mut kept: Vec<Value> = Vec::new();
    let mut mode: Value;
    let mut waiting = Value::Null;
    let done = loop {
        let body = object(vec![
            (
                "message_ids",
                (!a.message_id.is_empty()).then(|| json!(a.message_id)),
            ),
            ("since", s(a.since.clone())),
            ("until", s(a.until.clone())),
            ("account_id", s(a.account.clone())),
            ("dead_letters", a.dead_letters.then_some(Value::Bool(true))),
            ("limit", n(a.limit)),
            ("cursor", s(cursor.clone())),
        ]);
        let answer = ctx.api.send(Req::post("/v1/admin/replay", body)).await?;
        let v = answer.body;
        requests += 1;
        let num = |k: &str| v[k].as_u64().unwrap_or(0);
        scanned += num("scanned");
        replayed += num("replayed");
        changed += num("changed");
        failed += num("failed");
        mode = v["mode"].clone();
        for it in v["items"].as_array().into_iter().flatten() {
            if !matches!(
                it["outcome"].as_str(),
                Some("already_captured" | "unchanged")
            ) {
                items.push(it.clone());
            }
        }
        not_found.extend(v["not_found"].as_array().into_iter().flatten().cloned());
        let dl = &v["dead_letters"];
        if dl.is_object() {
            received += dl["received"].as_u64().unwrap_or(0);
            deleted += dl["deleted"].as_u64().unwrap_or(0);
            kept.extend(dl["kept"].as_array().into_iter().flatten().cloned());
            waiting = dl["waiting"].clone();
        }
        cursor = v["next_cursor"].as_str().map(str::to_string);
        let finished = v["done"].as_bool().unwrap_or(true);
        let queue = if dl.is_object() {
            format!(
                ", dead letters {received} taken, {deleted} deleted, {} waiting",
                scalar(&waiting)
            )
        } else {
            String::new()
        };
        note(format!(
            "replay: request {requests}: {scanned} read, {replayed} replayed ({changed} changed, {failed} failed){queue}"
        ));
        if finished {
            break true;
        }
        if requests >= u64::from(a.max_requests) {
            break false;
        }
    };
    let mut summary = json!({
        "mode": mode,
        "requests": requests,
        "scanned": scanned,
        "replayed": replayed,
        "changed": changed,
        "failed": failed,
        "items": items,
        "done": done,
    });
    if !not_found.is_empty() {
        summary["not_found"] = Value::Array(not_found);
    }
    if a.dead_letters {
        summary["dead_letters"] =
            json!({"received": received, "deleted": deleted, "kept": kept, "waiting": waiting});
    }
    if !done {
        summary["next_cursor"] = json!(cursor);
    }
    ctx.print(&summary);
    if !done {
        if let Some(c) = &cursor {
            note(format!(
                "replay: stopped after {requests} requests (--max-requests); resume with --cursor {c}"
            ));
        }
        return Err(CliError::Incomplete(
            "the replay stopped before the end (--max-requests)".into(),
        ));
    }
    if failed > 0 || !kept.is_empty() {
        return Err(CliError::Incomplete(format!(
            "{failed} items failed and {} dead-letter messages were kept: see items[] and dead_letters.kept[]; run it again once the cause is fixed",
            kept.len()
        )));
    }
    Ok(())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn create_args(extra: &[&str]) -> AdsCreateArgs {
        let mut argv = vec![
            "ctwa",
            "ads",
            "create",
            "--name",
            "Summer",
            "--daily-budget",
            "100000",
            "--whatsapp-number",
            "+919876543210",
            "--page-id",
            "111",
            "--countries",
            "in, ae",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Ads(AdsArgs {
                cmd: Some(AdsCmd::Create(a)),
                ..
            })) => a,
            _ => panic!("ads create"),
        }
    }

    #[test]
    fn seed_event_types_map_to_meta_names() {
        assert_eq!(event_name("lead"), "LeadSubmitted");
        assert_eq!(event_name("Purchase"), "Purchase");
        assert_eq!(event_name("OrderCreated"), "OrderCreated");
    }

    #[test]
    fn ads_create_body_follows_the_contract() {
        let dir = std::env::temp_dir().join(format!(
            "ctwa-cli-unit-{}",
            hex::encode(webhook::random_bytes::<6>())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("ad.png");
        std::fs::write(&img, b"\x89PNG").unwrap();
        let img_s = img.to_string_lossy().into_owned();
        let a = create_args(&[
            "--age-min",
            "25",
            "--age-max",
            "34",
            "--image",
            &img_s,
            "--message",
            "Hi",
            "--publish",
        ]);
        let b = ads_create_body(&a).unwrap();
        assert_eq!(
            b,
            json!({
                "name": "Summer", "objective": "OUTCOME_ENGAGEMENT", "optimization_goal": "CONVERSATIONS",
                "special_ad_categories": [], "daily_budget": 100000, "page_id": "111",
                "whatsapp_phone_number": "+919876543210",
                "targeting": {"geo_locations": {"countries": ["IN", "AE"]}, "age_min": 25, "age_max": 34},
                "creative": {"message": "Hi", "image": {"bytes": "iVBORw==", "name": "ad.png"}},
                "publish": true
            })
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let a = create_args(&["--age-min", "40", "--age-max", "30"]);
        assert!(matches!(ads_create_body(&a), Err(CliError::Usage(_))));
        let a = create_args(&["--image", "/nonexistent/x.png"]);
        assert!(matches!(ads_create_body(&a), Err(CliError::Usage(_))));
    }

    fn simulate_args(extra: &[&str]) -> SimulateArgs {
        let mut argv = vec!["ctwa", "webhook", "simulate", "--from", "2000"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Webhook {
                cmd: WebhookCmd::Simulate(a),
            }) => a,
            _ => panic!("webhook simulate"),
        }
    }

    #[test]
    fn simulate_targets_the_channels_business() {
        assert_eq!(
            simulate_target(&simulate_args(&[])).unwrap(),
            SimulateTarget::WhatsApp
        );
        assert_eq!(
            simulate_target(&simulate_args(&[
                "--channel",
                "messenger",
                "--page-id",
                "11"
            ]))
            .unwrap(),
            SimulateTarget::Messaging {
                object: "page",
                business_id: "11".into()
            }
        );
        assert_eq!(
            simulate_target(&simulate_args(&[
                "--channel",
                "instagram",
                "--instagram-account-id",
                "178"
            ]))
            .unwrap(),
            SimulateTarget::Messaging {
                object: "instagram",
                business_id: "178".into()
            }
        );
        // The business is required; another channel's flags are refused.
        for bad in [
            &["--channel", "messenger"][..],
            &["--channel", "instagram"],
            &["--channel", "messenger", "--page-id", " "],
            &["--channel", "instagram", "--page-id", "11"],
            &["--channel", "messenger", "--instagram-account-id", "178"],
            &["--page-id", "11"],
            &["--channel", "whatsapp", "--instagram-account-id", "178"],
            &["--channel", "messenger", "--waba-id", "1"],
            &["--channel", "instagram", "--phone-number-id", "1"],
            &["--channel", "messenger", "--ctwa-clid", "Aff"],
        ] {
            let r = simulate_target(&simulate_args(bad));
            assert!(matches!(r, Err(CliError::Usage(_))), "{bad:?}: {r:?}");
        }
    }

    #[test]
    fn steps_read_as_progress() {
        let s = json!({"step": 1, "name": "campaign", "id": "2385", "duration_ms": 12});
        assert_eq!(step_line(2, 5, &s), "✓ 2/5 campaign 2385 (12 ms)");
    }
}
