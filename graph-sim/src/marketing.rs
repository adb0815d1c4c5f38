//! The Marketing API part of the simulator: ad accounts (registered through
//! `POST /_sim/ad_accounts`), campaigns, ad sets, ad images, ad creatives and ads, with
//! Meta's validations for ads that click to WhatsApp, Messenger, Instagram Direct or
//! several of them (meta-api.md section 6; Meta's "Ads that Click to ..." guides, see
//! [`messaging_apps`]), statuses
//! (PAUSED -> PENDING_REVIEW -> ACTIVE), deletion, cursor paging and the
//! `X-Business-Use-Case-Usage` header (code 80004 when an account is over its budget).

use serde_json::{Map, Value, json};
use std::collections::HashMap;

pub const OBJECTIVES: [&str; 6] = [
    "OUTCOME_ENGAGEMENT",
    "OUTCOME_LEADS",
    "OUTCOME_SALES",
    "OUTCOME_TRAFFIC",
    "OUTCOME_AWARENESS",
    "OUTCOME_APP_PROMOTION",
];

/// Optimisation goals Meta allows per objective for WhatsApp destinations.
pub fn goals_for(objective: &str) -> &'static [&'static str] {
    match objective {
        "OUTCOME_ENGAGEMENT" => &["CONVERSATIONS", "LINK_CLICKS"],
        "OUTCOME_LEADS" => &["CONVERSATIONS"],
        "OUTCOME_SALES" => &[
            "CONVERSATIONS",
            "OFFSITE_CONVERSIONS",
            "LINK_CLICKS",
            "IMPRESSIONS",
            "REACH",
        ],
        "OUTCOME_TRAFFIC" => &["LINK_CLICKS", "CONVERSATIONS"],
        _ => &[],
    }
}

/// The apps a messaging ad set's `destination_type` opens (`app_destination` values),
/// from Meta's "Ads that Click to Multidestination" guide
/// (<https://developers.facebook.com/documentation/ads-commerce/marketing-api/ad-creative/messaging-ads/click-to-multidestination>);
/// `None` for other destination types.
pub fn messaging_apps(destination_type: &str) -> Option<&'static [&'static str]> {
    Some(match destination_type {
        "WHATSAPP" => &["WHATSAPP"],
        "MESSENGER" => &["MESSENGER"],
        "INSTAGRAM_DIRECT" => &["INSTAGRAM_DIRECT"],
        "MESSAGING_MESSENGER_WHATSAPP" => &["MESSENGER", "WHATSAPP"],
        "MESSAGING_INSTAGRAM_DIRECT_MESSENGER" => &["MESSENGER", "INSTAGRAM_DIRECT"],
        "MESSAGING_INSTAGRAM_DIRECT_WHATSAPP" => &["WHATSAPP", "INSTAGRAM_DIRECT"],
        "MESSAGING_INSTAGRAM_DIRECT_MESSENGER_WHATSAPP" => {
            &["MESSENGER", "WHATSAPP", "INSTAGRAM_DIRECT"]
        }
        _ => return None,
    })
}

/// The `app_destination` of a messaging call to action type.
pub fn cta_app(cta_type: &str) -> Option<&'static str> {
    Some(match cta_type {
        "WHATSAPP_MESSAGE" => "WHATSAPP",
        "MESSAGE_PAGE" => "MESSENGER",
        "INSTAGRAM_MESSAGE" => "INSTAGRAM_DIRECT",
        _ => return None,
    })
}

const GENERAL_OBJECTIVES: [&str; 3] = ["OUTCOME_ENGAGEMENT", "OUTCOME_SALES", "OUTCOME_TRAFFIC"];

/// Optimisation goals per objective for the apps of a messaging ad set; `None` when
/// the objective is not allowed. WhatsApp: [`goals_for`]. Messenger ("Ads that Click to
/// Messenger"): OUTCOME_ENGAGEMENT, OUTCOME_SALES, OUTCOME_TRAFFIC "for general CTM Ads"
/// with CONVERSATIONS or IMPRESSIONS, OUTCOME_LEADS for Messenger lead ads with
/// LEAD_GENERATION or QUALITY_LEAD. Instagram ("Ads that Click to Instagram"): the
/// guide's table. Multidestination: the three general objectives, CONVERSATIONS only.
pub fn messaging_goals(apps: &[&str], objective: &str) -> Option<&'static [&'static str]> {
    match apps {
        ["WHATSAPP"] => Some(goals_for(objective)).filter(|g| !g.is_empty()),
        ["MESSENGER"] => match objective {
            "OUTCOME_LEADS" => Some(&["LEAD_GENERATION", "QUALITY_LEAD"]),
            o if GENERAL_OBJECTIVES.contains(&o) => Some(&["CONVERSATIONS", "IMPRESSIONS"]),
            _ => None,
        },
        ["INSTAGRAM_DIRECT"] => match objective {
            "OUTCOME_ENGAGEMENT" => Some(&["CONVERSATIONS", "LINK_CLICKS"]),
            "OUTCOME_SALES" => Some(&[
                "CONVERSATIONS",
                "OFFSITE_CONVERSIONS",
                "LINK_CLICKS",
                "IMPRESSIONS",
                "REACH",
            ]),
            "OUTCOME_TRAFFIC" => Some(&[
                "CONVERSATIONS",
                "LANDING_PAGE_VIEWS",
                "LINK_CLICKS",
                "IMPRESSIONS",
                "REACH",
                "POST_ENGAGEMENT",
            ]),
            _ => None,
        },
        _ => GENERAL_OBJECTIVES
            .contains(&objective)
            .then_some(&["CONVERSATIONS"][..]),
    }
}

#[derive(Debug, Clone)]
pub struct AdAccount {
    pub page_ids: Vec<String>,
    /// WhatsApp numbers (digits) linked to the pages.
    pub whatsapp_numbers: Vec<String>,
    pub funded: bool,
    /// Calls allowed per window before code 80004 (business use case rate limit).
    pub call_limit: u32,
    pub calls: u32,
    /// `GET /act_{id}?fields=currency,timezone_name`.
    pub currency: String,
    pub timezone_name: String,
    pub name: String,
    /// Insights rows one request may make before Meta's "reduce the amount of data".
    pub insights_row_limit: usize,
}

#[derive(Debug, Clone)]
pub struct Obj {
    pub kind: &'static str,
    pub account: String,
    pub fields: Map<String, Value>,
    pub status: String,
    pub created_time: i64,
    /// Reads since the ad was published: review takes two reads.
    pub reads_since_publish: u32,
}

#[derive(Default)]
pub struct Marketing {
    pub accounts: HashMap<String, AdAccount>,
    pub objects: HashMap<String, Obj>,
    pub images: HashMap<String, (String, String)>,
    /// Per ad account: the daily delivery rows insights are answered from.
    pub insights: HashMap<String, Vec<super::insights::DayRow>>,
    counter: u64,
    /// The token of the call being answered: Meta writes it into paging links, at every
    /// depth (`access_token=...`), which is why a proxy must never pass those on.
    pub caller_token: String,
}

/// `fields` split at its top-level commas (`id,adsets.limit(1){id,name}` is two fields).
pub(crate) fn top_level_fields(fields: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0usize);
    for (i, c) in fields.char_indices() {
        match c {
            '{' | '(' => depth += 1,
            '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(fields[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(fields[start..].trim());
    out.into_iter().filter(|f| !f.is_empty()).collect()
}

/// A field expansion of an edge: `adsets.limit(1){id,name}` -> ("adsets", 1, "id,name").
fn edge_expansion(field: &str) -> Option<(&str, usize, &str)> {
    let (head, sub) = match field.split_once('{') {
        Some((h, rest)) => (h, rest.strip_suffix('}')?),
        None => (field, "id"),
    };
    let (edge, limit) = match head.split_once(".limit(") {
        Some((e, l)) => (e, l.strip_suffix(')')?.parse().ok()?),
        None => (head, 25),
    };
    matches!(edge, "adsets" | "ads").then_some((edge, limit, sub))
}

pub type Answer = (u16, Value);

fn err(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    message: &str,
    user_msg: Option<&str>,
) -> Answer {
    let mut e = json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": super::fbtrace()});
    if let Some(s) = subcode {
        e["error_subcode"] = json!(s);
    }
    if let Some(m) = user_msg {
        e["error_user_title"] = json!("Invalid parameter");
        e["error_user_msg"] = json!(m);
    }
    (status, json!({ "error": e }))
}

/// Meta's answer for an object that does not exist or the token cannot see (100/33).
fn unknown_object(id: &str) -> Answer {
    err(
        400,
        100,
        Some(33),
        &format!(
            "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
        ),
        None,
    )
}

fn invalid(msg: &str) -> Answer {
    err(400, 100, None, "(#100) Invalid parameter", Some(msg))
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Marketing {
    fn new_id(&mut self) -> String {
        self.counter += 1;
        format!("{}", 23_857_890_000_000_000u64 + self.counter)
    }

    /// The usage header value for an account, after counting this call.
    pub fn count_call(&mut self, account: &str) -> Option<(String, bool)> {
        let a = self.accounts.get_mut(account)?;
        a.calls += 1;
        let pct = (a.calls as u64 * 100 / a.call_limit.max(1) as u64).min(100);
        let over = a.calls > a.call_limit;
        let header = json!({ account.trim_start_matches("act_"): [{
            "type": "ads_management",
            "call_count": pct,
            "total_cputime": pct / 2,
            "total_time": pct / 2,
            "estimated_time_to_regain_access": if over { 5 } else { 0 },
        }]})
        .to_string();
        Some((header, over))
    }

    pub fn owner_of(&self, id: &str) -> Option<&str> {
        self.objects.get(id).map(|o| o.account.as_str())
    }

    /// `instagram_of_page`: the Instagram professional account connected to a Page
    /// (`POST /_sim/pages`), if any.
    pub fn create(
        &mut self,
        account: &str,
        edge: &str,
        p: &Map<String, Value>,
        now: i64,
        instagram_of_page: &dyn Fn(&str) -> Option<String>,
    ) -> Answer {
        let Some(acct) = self.accounts.get(account).cloned() else {
            return err(
                400,
                100,
                Some(33),
                &format!(
                    "Unsupported post request. Object with ID '{account}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
                ),
                None,
            );
        };
        let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        let status = s("status").unwrap_or_else(|| "PAUSED".into());
        if !matches!(status.as_str(), "ACTIVE" | "PAUSED") {
            return invalid("status must be ACTIVE or PAUSED");
        }
        let (kind, fields) = match edge {
            "campaigns" => {
                if s("objective").is_none_or(|o| !OBJECTIVES.contains(&o.as_str())) {
                    return invalid("objective is required and must be a valid ODAX objective");
                }
                if s("name").is_none_or(|n| n.is_empty()) {
                    return invalid("name is required");
                }
                if !p.get("special_ad_categories").is_some_and(Value::is_array) {
                    return invalid(
                        "special_ad_categories is required (an empty list if none apply)",
                    );
                }
                ("campaign", p.clone())
            }
            "adsets" => {
                let Some(campaign) = s("campaign_id").and_then(|c| {
                    self.objects
                        .get(&c)
                        .filter(|o| o.kind == "campaign" && o.account == account)
                        .cloned()
                }) else {
                    return invalid("campaign_id must be a campaign of this ad account");
                };
                let budget = p.get("daily_budget").or(p.get("lifetime_budget"));
                let budget = budget.and_then(|b| {
                    b.as_i64()
                        .or_else(|| b.as_str().and_then(|x| x.parse().ok()))
                });
                if budget.is_none_or(|b| b < 100) {
                    return invalid("daily_budget (minor units, at least 100) is required");
                }
                let objective = campaign
                    .fields
                    .get("objective")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let goal = s("optimization_goal").unwrap_or_default();
                if s("billing_event").is_none() {
                    return invalid("billing_event is required");
                }
                if !p
                    .get("targeting")
                    .and_then(|t| t.get("geo_locations"))
                    .is_some_and(Value::is_object)
                {
                    return invalid("targeting.geo_locations is required");
                }
                let po = p.get("promoted_object");
                let page = po
                    .and_then(|o| o.get("page_id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let number = digits(
                    po.and_then(|o| o.get("whatsapp_phone_number"))
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                let destination = s("destination_type");
                // An ad set with a WhatsApp number and no destination type is taken as
                // a WhatsApp one (seed 000's body has none).
                let apps = match destination.as_deref() {
                    Some(d) => messaging_apps(d),
                    None if !number.is_empty() => messaging_apps("WHATSAPP"),
                    None => None,
                };
                let Some(apps) = apps else {
                    if !goals_for(objective).contains(&goal.as_str()) {
                        return invalid(&format!(
                            "optimization_goal {goal} is not valid for objective {objective}"
                        ));
                    }
                    return self.insert("adset", account, p.clone(), status, now);
                };
                // The error texts below are invented (Meta's own for these refusals are
                // not documented); the quoted sentences are the guides'.
                let Some(goals) = messaging_goals(apps, objective) else {
                    return invalid(&format!(
                        "objective {objective} is not valid for destination_type {}",
                        destination.as_deref().unwrap_or("WHATSAPP")
                    ));
                };
                if !goals.contains(&goal.as_str()) {
                    return invalid(&format!(
                        "optimization_goal {goal} is not valid for objective {objective}{}",
                        if apps.len() > 1 {
                            ": \"Must be set to CONVERSATIONS for ads that click to multidestination.\""
                        } else {
                            ""
                        }
                    ));
                }
                if s("billing_event").as_deref() != Some("IMPRESSIONS") {
                    return invalid(
                        "billing_event must be IMPRESSIONS for ads that click to a messaging app",
                    );
                }
                if apps.len() > 1 {
                    let none = campaign
                        .fields
                        .get("special_ad_categories")
                        .and_then(Value::as_array)
                        .is_none_or(|a| a.iter().all(|c| c.as_str() == Some("NONE")));
                    if !none {
                        return invalid(
                            "\"Currently we don't support special ad categories for ads that click to multidestination, so it needs to be NONE or empty array.\"",
                        );
                    }
                }
                if page.is_empty() {
                    return invalid(
                        "promoted_object.page_id is required for ads that click to a messaging app",
                    );
                }
                if !acct.page_ids.iter().any(|x| x == page) {
                    return err(
                        400,
                        200,
                        None,
                        "(#200) Permissions error",
                        Some("promoted_object.page_id is not a Page of this ad account"),
                    );
                }
                if apps.contains(&"WHATSAPP") {
                    // One destination: the number is required; several: the guide asks
                    // for "WhatsApp business number connected to your page".
                    if number.is_empty() && (apps.len() == 1 || acct.whatsapp_numbers.is_empty()) {
                        return invalid(
                            "promoted_object.page_id and promoted_object.whatsapp_phone_number are required for WhatsApp destinations",
                        );
                    }
                    if !number.is_empty() && !acct.whatsapp_numbers.contains(&number) {
                        return err(
                            400,
                            200,
                            None,
                            "(#200) Permissions error",
                            Some("The WhatsApp number is not linked to the Page"),
                        );
                    }
                } else if !number.is_empty() {
                    return invalid(&format!(
                        "promoted_object.whatsapp_phone_number is not valid for destination_type {}",
                        destination.as_deref().unwrap_or_default()
                    ));
                }
                if apps.contains(&"INSTAGRAM_DIRECT") && instagram_of_page(page).is_none() {
                    return invalid(
                        "Instagram Direct destinations need an Instagram business account connected to the Page",
                    );
                }
                ("adset", p.clone())
            }
            "adimages" => {
                let Some(bytes) = s("bytes").filter(|b| !b.is_empty()) else {
                    return invalid("bytes (base64 image) is required");
                };
                let name = s("name").unwrap_or_else(|| "image.png".into());
                let hash = format!(
                    "{:032x}",
                    bytes.len() as u128 * 2_654_435_761 + self.counter as u128
                );
                self.counter += 1;
                let url = format!("https://scontent.xx.fbcdn.net/v/sim/{hash}.png");
                self.images
                    .insert(hash.clone(), (account.to_string(), url.clone()));
                return (200, json!({"images": {name: {"hash": hash, "url": url}}}));
            }
            "adcreatives" => {
                let oss = p.get("object_story_spec");
                let page = oss
                    .and_then(|o| o.get("page_id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !acct.page_ids.iter().any(|x| x == page) {
                    return err(
                        400,
                        200,
                        None,
                        "(#200) Permissions error",
                        Some("object_story_spec.page_id is not a Page of this ad account"),
                    );
                }
                let ld = oss.and_then(|o| o.get("link_data"));
                let link = ld
                    .and_then(|l| l.get("link"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let cta = ld.and_then(|l| l.get("call_to_action"));
                let cta_type = cta
                    .and_then(|c| c.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                // Invented texts: Meta's own for these are not documented.
                let Some(app) = cta_app(cta_type) else {
                    return invalid(
                        "call_to_action.type must be WHATSAPP_MESSAGE, MESSAGE_PAGE or INSTAGRAM_MESSAGE",
                    );
                };
                let app_of = |c: Option<&Value>| {
                    c.and_then(|c| c.get("value"))
                        .and_then(|v| v.get("app_destination"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                if app_of(cta).is_some_and(|a| a != app) {
                    return invalid(&format!(
                        "call_to_action.value.app_destination must be {app} for {cta_type}"
                    ));
                }
                if app == "WHATSAPP"
                    && !(link.starts_with("https://wa.me/")
                        || link.starts_with("https://api.whatsapp.com/send"))
                {
                    return invalid(
                        "link_data.link must be a wa.me or api.whatsapp.com link for a WhatsApp call to action",
                    );
                }
                let mut apps = vec![app.to_string()];
                let afs = p.get("asset_feed_spec");
                if let Some(ctas) = afs.and_then(|a| a.get("call_to_actions")) {
                    if afs
                        .and_then(|a| a.get("optimization_type"))
                        .and_then(Value::as_str)
                        != Some("DOF_MESSAGING_DESTINATION")
                    {
                        return invalid(
                            "asset_feed_spec.optimization_type must be DOF_MESSAGING_DESTINATION for ads that click to multidestination",
                        );
                    }
                    apps.clear();
                    for c in ctas.as_array().map(Vec::as_slice).unwrap_or_default() {
                        let t = c.get("type").and_then(Value::as_str).unwrap_or_default();
                        let Some(a) = cta_app(t) else {
                            return invalid(
                                "asset_feed_spec.call_to_actions[].type must be WHATSAPP_MESSAGE, MESSAGE_PAGE or INSTAGRAM_MESSAGE",
                            );
                        };
                        if app_of(Some(c)).as_deref() != Some(a) || apps.iter().any(|x| x == a) {
                            return invalid(&format!(
                                "asset_feed_spec.call_to_actions: {t} needs app_destination {a}, once"
                            ));
                        }
                        apps.push(a.to_string());
                    }
                    if !apps.iter().any(|a| a == app) {
                        return invalid(
                            "link_data.call_to_action must be one of asset_feed_spec.call_to_actions",
                        );
                    }
                }
                if apps.iter().any(|a| a == "INSTAGRAM_DIRECT") {
                    // The multidestination guide names it `instagram_user_id`, the
                    // Instagram guide `instagram_actor_id`; which one v25.0 insists on is
                    // not documented, so either is taken.
                    let ig = ["instagram_user_id", "instagram_actor_id"]
                        .iter()
                        .find_map(|k| oss.and_then(|o| o.get(*k)).and_then(Value::as_str));
                    let Some(ig) = ig else {
                        return invalid(
                            "object_story_spec.instagram_user_id is required for an Instagram Direct call to action",
                        );
                    };
                    if instagram_of_page(page).as_deref() != Some(ig) {
                        return invalid(
                            "object_story_spec.instagram_user_id is not the Instagram account connected to the Page",
                        );
                    }
                }
                if let Some(h) = ld.and_then(|l| l.get("image_hash")).and_then(Value::as_str)
                    && self.images.get(h).is_none_or(|(a, _)| a != account)
                {
                    return invalid("image_hash is not an image of this ad account");
                }
                ("adcreative", p.clone())
            }
            "ads" => {
                let adset_ok = s("adset_id")
                    .and_then(|a| self.objects.get(&a))
                    .is_some_and(|o| o.kind == "adset" && o.account == account);
                if !adset_ok {
                    return invalid("adset_id must be an ad set of this ad account");
                }
                let creative = p
                    .get("creative")
                    .and_then(|c| c.get("creative_id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !self
                    .objects
                    .get(creative)
                    .is_some_and(|o| o.kind == "adcreative" && o.account == account)
                {
                    return invalid("creative.creative_id must be a creative of this ad account");
                }
                if let Some(e) = self.destination_mismatch(s("adset_id").as_deref(), creative) {
                    return e;
                }
                if status == "ACTIVE" && !acct.funded {
                    return err(400, 1_487_749, None, "(#1487749) Insufficient funds", None);
                }
                // Meta's ad carries its campaign's id too.
                let mut fields = p.clone();
                if let Some(c) = s("adset_id")
                    .and_then(|a| self.objects.get(&a))
                    .and_then(|a| a.fields.get("campaign_id"))
                {
                    fields.insert("campaign_id".into(), c.clone());
                }
                ("ad", fields)
            }
            _ => return err(400, 100, None, &format!("(#100) Unknown edge {edge}"), None),
        };
        self.insert(kind, account, fields, status, now)
    }

    fn insert(
        &mut self,
        kind: &'static str,
        account: &str,
        fields: Map<String, Value>,
        status: String,
        now: i64,
    ) -> Answer {
        let id = self.new_id();
        self.objects.insert(
            id.clone(),
            Obj {
                kind,
                account: account.to_string(),
                fields,
                status,
                created_time: now,
                reads_since_publish: 0,
            },
        );
        (200, json!({ "id": id }))
    }

    /// An ad joins an ad set and a creative: a messaging ad set's apps must be the
    /// creative's ("It needs to match with the destination_type specified in the ad
    /// set.", the multidestination guide; the error text is invented).
    fn destination_mismatch(&self, adset: Option<&str>, creative: &str) -> Option<Answer> {
        let adset = self.objects.get(adset?)?;
        let creative = self.objects.get(creative)?;
        let destination = adset.fields.get("destination_type")?.as_str()?;
        let want = messaging_apps(destination)?;
        let app_of = |c: &Value| cta_app(c.get("type")?.as_str()?).map(str::to_string);
        let feed = creative
            .fields
            .get("asset_feed_spec")
            .and_then(|a| a.get("call_to_actions"))
            .and_then(Value::as_array);
        let mut have: Vec<String> = match feed {
            Some(ctas) => ctas.iter().filter_map(app_of).collect(),
            None => creative
                .fields
                .get("object_story_spec")
                .and_then(|o| o.get("link_data"))
                .and_then(|l| l.get("call_to_action"))
                .and_then(app_of)
                .into_iter()
                .collect(),
        };
        have.sort();
        let mut want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
        want.sort();
        (have != want).then(|| {
            invalid(&format!(
                "the creative's calls to action ({}) do not match destination_type {destination}: \"It needs to match with the destination_type specified in the ad set.\"",
                have.join(", ")
            ))
        })
    }

    fn effective_status(&self, o: &Obj) -> String {
        if o.status == "DELETED" || o.status == "PAUSED" {
            return o.status.clone();
        }
        if o.kind == "ad" {
            if o.reads_since_publish < 2 {
                return "PENDING_REVIEW".into();
            }
            let adset = o
                .fields
                .get("adset_id")
                .and_then(Value::as_str)
                .and_then(|a| self.objects.get(a));
            if adset.is_some_and(|a| a.status == "PAUSED") {
                return "ADSET_PAUSED".into();
            }
            let campaign = adset
                .and_then(|a| a.fields.get("campaign_id"))
                .and_then(Value::as_str)
                .and_then(|c| self.objects.get(c));
            if campaign.is_some_and(|c| c.status == "PAUSED") {
                return "CAMPAIGN_PAUSED".into();
            }
        }
        o.status.clone()
    }

    fn view(&self, id: &str, o: &Obj, fields: &str) -> Value {
        let mut all = o.fields.clone();
        all.insert("id".into(), json!(id));
        all.insert(
            "account_id".into(),
            json!(o.account.trim_start_matches("act_")),
        );
        all.insert("status".into(), json!(o.status));
        all.insert("effective_status".into(), json!(self.effective_status(o)));
        all.insert("created_time".into(), json!(super::iso8601(o.created_time)));
        if o.kind == "ad"
            && let Some(c) = o.fields.get("creative")
        {
            all.insert(
                "creative".into(),
                json!({"id": c.get("creative_id").cloned().unwrap_or(Value::Null)}),
            );
        }
        if fields.trim().is_empty() {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            return Value::Object(m);
        }
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        for f in top_level_fields(fields) {
            if let Some(v) = all.get(f) {
                out.insert(f.to_string(), v.clone());
            } else if let Some((edge, limit, sub)) = edge_expansion(f) {
                out.insert(edge.to_string(), self.nested_edge(id, o, edge, limit, sub));
            }
        }
        Value::Object(out)
    }

    /// A campaign's ad sets or an ad set's ads, as a field expansion answers them: a page
    /// of `limit` with Meta's paging, whose `next` link carries the caller's token.
    fn nested_edge(&self, id: &str, o: &Obj, edge: &str, limit: usize, sub: &str) -> Value {
        let (kind, parent_field) = match (o.kind, edge) {
            ("campaign", "adsets") => ("adset", "campaign_id"),
            ("campaign", "ads") => ("ad", "campaign_id"),
            ("adset", "ads") => ("ad", "adset_id"),
            _ => return json!({"data": []}),
        };
        let mut children: Vec<(&String, &Obj)> = self
            .objects
            .iter()
            .filter(|(_, c)| {
                c.kind == kind
                    && c.status != "DELETED"
                    && c.fields
                        .get(parent_field)
                        .and_then(|p| {
                            p.as_str()
                                .map(str::to_string)
                                .or_else(|| p.as_u64().map(|n| n.to_string()))
                        })
                        .as_deref()
                        == Some(id)
            })
            .collect();
        children.sort_by(|a, b| b.1.created_time.cmp(&a.1.created_time).then(b.0.cmp(a.0)));
        let limit = limit.clamp(1, 100);
        let page: Vec<Value> = children
            .iter()
            .take(limit)
            .map(|(cid, c)| self.view(cid, c, sub))
            .collect();
        let mut paging = json!({});
        let shown = &children[..children.len().min(limit)];
        if let (Some(first), Some(last)) = (shown.first(), shown.last()) {
            paging["cursors"] = json!({"before": first.0, "after": last.0});
            if children.len() > limit {
                paging["next"] = json!(format!(
                    "https://graph.facebook.com/v25.0/{id}/{edge}?access_token={}&fields={sub}&limit={limit}&after={}",
                    self.caller_token, last.0
                ));
            }
        }
        json!({"data": page, "paging": paging})
    }

    /// `GET /act_{id}`: the ad account's own fields.
    pub fn account_view(&self, id: &str, fields: &str) -> Answer {
        let Some(a) = self.accounts.get(id) else {
            return unknown_object(id);
        };
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        for f in top_level_fields(fields) {
            let v = match f {
                "account_id" => json!(id.trim_start_matches("act_")),
                "name" => json!(a.name),
                "currency" => json!(a.currency),
                "timezone_name" => json!(a.timezone_name),
                "account_status" => json!(if a.funded { 1 } else { 3 }),
                _ => continue,
            };
            out.insert(f.to_string(), v);
        }
        (200, Value::Object(out))
    }

    pub fn read(&mut self, id: &str, fields: &str) -> Answer {
        let Some(o) = self.objects.get_mut(id) else {
            return unknown_object(id);
        };
        if o.kind == "ad" && o.status == "ACTIVE" {
            o.reads_since_publish += 1;
        }
        let o = o.clone();
        (200, self.view(id, &o, fields))
    }

    /// `GET /?ids=a,b`: `{"a": {...}, "b": {...}}`; one unknown id fails the call, as
    /// on Meta.
    pub fn read_many(&mut self, ids: &str, fields: &str) -> Answer {
        let mut out = Map::new();
        for id in ids.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (status, body) = self.read(id, fields);
            if status != 200 {
                return (status, body);
            }
            out.insert(id.to_string(), body);
        }
        (200, Value::Object(out))
    }

    pub fn update(&mut self, id: &str, p: &Map<String, Value>) -> Answer {
        let funded = self
            .objects
            .get(id)
            .and_then(|o| self.accounts.get(&o.account))
            .is_some_and(|a| a.funded);
        let Some(o) = self.objects.get_mut(id) else {
            return err(
                400,
                100,
                Some(33),
                &format!(
                    "Unsupported post request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
                ),
                None,
            );
        };
        if o.status == "DELETED" {
            return invalid("the object is deleted");
        }
        if let Some(st) = p.get("status").and_then(Value::as_str) {
            if !matches!(st, "ACTIVE" | "PAUSED" | "ARCHIVED") {
                return invalid("status must be ACTIVE, PAUSED or ARCHIVED");
            }
            if st == "ACTIVE" && o.kind == "ad" && !funded {
                return err(400, 1_487_749, None, "(#1487749) Insufficient funds", None);
            }
            if st == "ACTIVE" && o.status != "ACTIVE" {
                o.reads_since_publish = 0;
            }
            o.status = st.to_string();
        }
        for (k, v) in p {
            if k != "status" && k != "access_token" {
                o.fields.insert(k.clone(), v.clone());
            }
        }
        (200, json!({"success": true}))
    }

    pub fn delete(&mut self, id: &str) -> Answer {
        match self.objects.get_mut(id) {
            Some(o) if o.status != "DELETED" => {
                o.status = "DELETED".into();
                (200, json!({"success": true}))
            }
            _ => err(
                400,
                100,
                Some(33),
                &format!(
                    "Unsupported delete request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
                ),
                None,
            ),
        }
    }

    /// `GET /act_{id}/{edge}` with cursor paging (`limit`, `after`), newest first.
    pub fn list(
        &mut self,
        account: &str,
        edge: &str,
        fields: &str,
        limit: usize,
        after: Option<&str>,
        base: &str,
    ) -> Answer {
        let kind = match edge {
            "campaigns" => "campaign",
            "adsets" => "adset",
            "ads" => "ad",
            "adcreatives" => "adcreative",
            _ => return err(400, 100, None, &format!("(#100) Unknown edge {edge}"), None),
        };
        if !self.accounts.contains_key(account) {
            return unknown_object(account);
        }
        let mut ids: Vec<(String, i64)> = self
            .objects
            .iter()
            .filter(|(_, o)| o.kind == kind && o.account == account && o.status != "DELETED")
            .map(|(id, o)| (id.clone(), o.created_time))
            .collect();
        ids.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
        let start = after
            .and_then(|a| ids.iter().position(|(id, _)| id == a).map(|p| p + 1))
            .unwrap_or(0);
        let limit = limit.clamp(1, 100);
        let page: Vec<String> = ids
            .iter()
            .skip(start)
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect();
        let data: Vec<Value> = page
            .iter()
            .map(|id| {
                let o = self.objects.get(id).cloned();
                o.map(|o| self.view(id, &o, fields)).unwrap_or(Value::Null)
            })
            .collect();
        let mut paging = json!({});
        if let (Some(first), Some(last)) = (page.first(), page.last()) {
            paging["cursors"] = json!({"before": first, "after": last});
            if start + page.len() < ids.len() {
                paging["next"] = json!(format!(
                    "{base}/{account}/{edge}?access_token={}&fields={fields}&limit={limit}&after={last}",
                    self.caller_token
                ));
            }
        }
        (200, json!({"data": data, "paging": paging}))
    }
}
