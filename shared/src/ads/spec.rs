//! `POST /v1/ads/ctwa`: the request, checked completely before the first Meta call, and
//! the plan of Graph calls it becomes (meta-api.md section 6, seed 000). An ad opens a
//! conversation in WhatsApp (the default), Messenger, Instagram Direct, or several of
//! them (multidestination), as Meta's Marketing API guides describe:
//! "Ads that Click to WhatsApp", "Ads that Click to Messenger"
//! (<https://developers.facebook.com/documentation/business-messaging/messenger-platform/ads>),
//! "Ads that Click to Instagram" and "Ads that Click to Multidestination"
//! (<https://developers.facebook.com/documentation/ads-commerce/marketing-api/ad-creative/messaging-ads/click-to-instagram>,
//! `.../click-to-multidestination`). Combinations a guide rules out are refused here with
//! the guide's sentence.

use crate::ids::AdAccountId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// CTWA objectives and the optimisation goals Meta allows with each for a WhatsApp
/// destination.
pub fn goals_for(objective: &str) -> Option<&'static [&'static str]> {
    Some(match objective {
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
        _ => return None,
    })
}

/// Where a click on the ad opens a conversation. The order is the guides' (Messenger,
/// WhatsApp, Instagram): a plan lists destinations in it whatever the request's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    Messenger,
    Whatsapp,
    Instagram,
}

impl Destination {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messenger => "messenger",
            Self::Whatsapp => "whatsapp",
            Self::Instagram => "instagram",
        }
    }

    /// The creative's call to action: `(type, app_destination)`.
    pub fn call_to_action(self) -> (&'static str, &'static str) {
        match self {
            Self::Messenger => ("MESSAGE_PAGE", "MESSENGER"),
            Self::Whatsapp => ("WHATSAPP_MESSAGE", "WHATSAPP"),
            Self::Instagram => ("INSTAGRAM_MESSAGE", "INSTAGRAM_DIRECT"),
        }
    }

    /// The link of this destination's entry in a multidestination creative's
    /// `asset_feed_spec.call_to_actions` (the multidestination guide's values).
    pub fn feed_link(self) -> &'static str {
        match self {
            Self::Messenger => MESSENGER_LINK,
            Self::Whatsapp => "https://api.whatsapp.com/send",
            Self::Instagram => "https://www.instagram.com",
        }
    }
}

/// `link_data.link` of a Messenger creative (the multidestination guide's example).
pub const MESSENGER_LINK: &str = "https://fb.com/messenger_doc/";

/// The ad set's `destination_type` for a set of destinations (in [`Destination`] order,
/// no repeats).
pub fn destination_type(dests: &[Destination]) -> Option<&'static str> {
    use Destination::*;
    Some(match dests {
        [Whatsapp] => "WHATSAPP",
        [Messenger] => "MESSENGER",
        [Instagram] => "INSTAGRAM_DIRECT",
        [Messenger, Whatsapp] => "MESSAGING_MESSENGER_WHATSAPP",
        [Messenger, Instagram] => "MESSAGING_INSTAGRAM_DIRECT_MESSENGER",
        [Whatsapp, Instagram] => "MESSAGING_INSTAGRAM_DIRECT_WHATSAPP",
        [Messenger, Whatsapp, Instagram] => "MESSAGING_INSTAGRAM_DIRECT_MESSENGER_WHATSAPP",
        _ => return None,
    })
}

/// Sentences of Meta's guides quoted in refusals.
pub mod guide {
    /// "Ads that Click to Multidestination", campaign `special_ad_categories`.
    pub const MULTI_SPECIAL_CATEGORIES: &str = "Currently we don't support special ad categories for ads that click to multidestination, so it needs to be NONE or empty array.";
    /// "Ads that Click to Multidestination", ad set `optimization_goal`.
    pub const MULTI_GOAL: &str =
        "Must be set to CONVERSATIONS for ads that click to multidestination.";
    /// "Ads that Click to Multidestination" and "Ads that Click to Instagram", campaign
    /// `objective`.
    pub const OBJECTIVES: &str =
        "Supported objectives are OUTCOME_ENGAGEMENT, OUTCOME_SALES, and OUTCOME_TRAFFIC.";
    /// "Ads that Click to Messenger", campaign `objective`.
    pub const MESSENGER_OBJECTIVES: &str =
        "OUTCOME_ENGAGEMENT, OUTCOME_SALES, and OUTCOME_TRAFFIC for general CTM Ads.";
    /// "Ads that Click to Messenger", ad set `optimization_goal`.
    pub const MESSENGER_GOALS: &str = "optimization_goal set to CONVERSATIONS, IMPRESSIONS, or LEAD_GENERATION or QUALITY_LEAD for lead ads";
    /// "Ads that Click to Instagram", ad set `optimization_goal`, per objective.
    pub const INSTAGRAM_ENGAGEMENT_GOALS: &str =
        "Engagement objective can optimize for CONVERSATIONS, and LINK_CLICKS.";
    pub const INSTAGRAM_SALES_GOALS: &str = "Sales objective can optimize for CONVERSATIONS, OFFSITE_CONVERSIONS, LINK_CLICKS, IMPRESSIONS, and REACH.";
    pub const INSTAGRAM_TRAFFIC_GOALS: &str = "Traffic objective can optimize for CONVERSATIONS, LANDING_PAGE_VIEWS, LINK_CLICKS, IMPRESSIONS, REACH, and POST_ENGAGEMENT.";
}

const GENERAL_OBJECTIVES: [&str; 3] = ["OUTCOME_ENGAGEMENT", "OUTCOME_SALES", "OUTCOME_TRAFFIC"];

/// The objective and optimisation goal checked against the destinations' guide (and, for
/// multidestination, the special ad categories); the refusal quotes the guide.
fn check_destination_rules(
    dests: &[Destination],
    objective: &str,
    goal: &str,
    categories: &[String],
) -> Result<(), String> {
    use Destination::*;
    let goals: &[&str] = match dests {
        [Whatsapp] => {
            let goals = goals_for(objective).ok_or_else(|| {
                format!("objective {objective} is not a Click-to-WhatsApp objective (OUTCOME_ENGAGEMENT, OUTCOME_LEADS, OUTCOME_SALES, OUTCOME_TRAFFIC)")
            })?;
            if !goals.contains(&goal) {
                return Err(format!(
                    "optimization_goal {goal} is not allowed with {objective}: use one of {}",
                    goals.join(", ")
                ));
            }
            return Ok(());
        }
        [Messenger] => {
            if !GENERAL_OBJECTIVES.contains(&objective) {
                return Err(format!(
                    "objective {objective} is not allowed for a Messenger destination; Meta's \"Ads that Click to Messenger\" guide: \"{}\" (OUTCOME_LEADS is for Messenger lead ads, which need a lead form this call does not make)",
                    guide::MESSENGER_OBJECTIVES
                ));
            }
            if !["CONVERSATIONS", "IMPRESSIONS"].contains(&goal) {
                return Err(format!(
                    "optimization_goal {goal} is not allowed for a Messenger destination: use CONVERSATIONS or IMPRESSIONS; Meta's \"Ads that Click to Messenger\" guide: \"{}\"",
                    guide::MESSENGER_GOALS
                ));
            }
            return Ok(());
        }
        [Instagram] => {
            let (goals, sentence): (&[&str], &str) = match objective {
                "OUTCOME_ENGAGEMENT" => (
                    &["CONVERSATIONS", "LINK_CLICKS"],
                    guide::INSTAGRAM_ENGAGEMENT_GOALS,
                ),
                "OUTCOME_SALES" => (
                    &[
                        "CONVERSATIONS",
                        "OFFSITE_CONVERSIONS",
                        "LINK_CLICKS",
                        "IMPRESSIONS",
                        "REACH",
                    ],
                    guide::INSTAGRAM_SALES_GOALS,
                ),
                "OUTCOME_TRAFFIC" => (
                    &[
                        "CONVERSATIONS",
                        "LANDING_PAGE_VIEWS",
                        "LINK_CLICKS",
                        "IMPRESSIONS",
                        "REACH",
                        "POST_ENGAGEMENT",
                    ],
                    guide::INSTAGRAM_TRAFFIC_GOALS,
                ),
                _ => {
                    return Err(format!(
                        "objective {objective} is not allowed for an Instagram Direct destination; Meta's \"Ads that Click to Instagram\" guide: \"{}\"",
                        guide::OBJECTIVES
                    ));
                }
            };
            if !goals.contains(&goal) {
                return Err(format!(
                    "optimization_goal {goal} is not allowed with {objective} for an Instagram Direct destination; Meta's \"Ads that Click to Instagram\" guide: \"{sentence}\""
                ));
            }
            return Ok(());
        }
        _ => &["CONVERSATIONS"],
    };
    // Multidestination.
    if !GENERAL_OBJECTIVES.contains(&objective) {
        return Err(format!(
            "objective {objective} is not allowed for a multidestination ad; Meta's \"Ads that Click to Multidestination\" guide: \"{}\"",
            guide::OBJECTIVES
        ));
    }
    if !goals.contains(&goal) {
        return Err(format!(
            "optimization_goal {goal} is not allowed for a multidestination ad; Meta's \"Ads that Click to Multidestination\" guide: \"{}\"",
            guide::MULTI_GOAL
        ));
    }
    if categories.iter().any(|c| c != "NONE") {
        return Err(format!(
            "special_ad_categories must be [] for a multidestination ad; Meta's \"Ads that Click to Multidestination\" guide: \"{}\"",
            guide::MULTI_SPECIAL_CATEGORIES
        ));
    }
    Ok(())
}

pub const SPECIAL_AD_CATEGORIES: [&str; 6] = [
    "NONE",
    "CREDIT",
    "EMPLOYMENT",
    "HOUSING",
    "ISSUES_ELECTIONS_POLITICS",
    "FINANCIAL_PRODUCTS_SERVICES",
];

/// Smallest daily budget accepted, in minor units (Meta's floor depends on the currency;
/// below this no currency is accepted).
pub const MIN_DAILY_BUDGET: i64 = 100;
pub const MAX_NAME_CHARS: usize = 400;
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// Base64 of an image: Meta takes up to 30 MB, but a Lambda request body is 6 MB.
pub const MAX_IMAGE_BASE64_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtwaAdRequest {
    #[serde(default)]
    pub ad_account_id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub objective: Option<String>,
    #[serde(default)]
    pub optimization_goal: Option<String>,
    pub special_ad_categories: Option<Vec<String>>,
    pub daily_budget: Option<Value>,
    #[serde(default)]
    pub page_id: Option<String>,
    /// Where a click opens a conversation: `whatsapp` (the default), `messenger`,
    /// `instagram`, or several.
    #[serde(default)]
    pub destinations: Option<Vec<Destination>>,
    /// Required when WhatsApp is a destination (and only then).
    #[serde(default)]
    pub whatsapp_phone_number: Option<String>,
    /// The Instagram professional account the ad speaks as; required when Instagram is
    /// a destination (and only then). Sent as `object_story_spec.instagram_user_id`.
    #[serde(default)]
    pub instagram_account_id: Option<String>,
    pub targeting: Option<Value>,
    #[serde(default)]
    pub start_time: Option<String>,
    pub creative: CreativeRequest,
    #[serde(default)]
    pub publish: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreativeRequest {
    pub message: String,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub headline: Option<String>,
    #[serde(default)]
    pub image_hash: Option<String>,
    #[serde(default)]
    pub image: Option<ImageRequest>,
    #[serde(default)]
    pub call_to_action: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// Base64 of the image file.
    pub bytes: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// The Graph calls a valid request becomes. Ids made by earlier steps are filled in as
/// the steps run (`campaign_id`, `adset_id`, `image_hash`, `creative_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `act_<digits>`.
    pub ad_account_id: String,
    pub image: Option<Map<String, Value>>,
    pub campaign: Map<String, Value>,
    pub adset: Map<String, Value>,
    pub creative: Map<String, Value>,
    pub ad: Map<String, Value>,
    pub publish: bool,
}

/// `act_<digits>` from `act_123` or `123`; `None` when it is not an ad account id
/// ([`AdAccountId`]'s rule).
pub fn ad_account_id(raw: &str) -> Option<String> {
    AdAccountId::parse(raw).ok().map(AdAccountId::into_string)
}

/// A Graph object id: 1 to 30 digits (the rule is [`crate::ids::is_object_id`]).
pub use crate::ids::is_object_id;

/// The number a WhatsApp click-to-chat link opens: `https://wa.me/<digits>[?text=..]` or
/// `https://api.whatsapp.com/send?phone=<digits>[&text=..]`.
pub fn link_number(link: &str) -> Option<String> {
    if let Some(rest) = link.strip_prefix("https://wa.me/") {
        let num: String = rest.split(['?', '/', '#']).next()?.to_string();
        return (!num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())).then_some(num);
    }
    let rest = link.strip_prefix("https://api.whatsapp.com/send")?;
    let query = rest.strip_prefix('?').or_else(|| rest.strip_prefix("/?"))?;
    query.split('&').find_map(|kv| {
        let v = kv.strip_prefix("phone=")?;
        let num: String = v
            .trim_start_matches("%2B")
            .trim_start_matches('+')
            .to_string();
        (!num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())).then_some(num)
    })
}

fn name_ok(what: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{what} is required"));
    }
    if v.chars().count() > MAX_NAME_CHARS {
        return Err(format!("{what} is longer than {MAX_NAME_CHARS} characters"));
    }
    Ok(())
}

fn check_targeting(t: &Value) -> Result<(), String> {
    let Value::Object(t) = t else {
        return Err("targeting must be an object (Meta's targeting spec)".into());
    };
    let Some(Value::Object(geo)) = t.get("geo_locations") else {
        return Err("targeting.geo_locations is required, e.g. {\"countries\":[\"IN\"]}".into());
    };
    let has_place = ["countries", "regions", "cities", "zips", "custom_locations"]
        .iter()
        .any(|k| {
            geo.get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
    if !has_place {
        return Err("targeting.geo_locations needs at least one of countries, regions, cities, zips, custom_locations".into());
    }
    if let Some(c) = geo.get("countries") {
        let ok = c.as_array().is_some_and(|a| {
            a.iter().all(|x| {
                x.as_str()
                    .is_some_and(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()))
            })
        });
        if !ok {
            return Err(
                "targeting.geo_locations.countries must be ISO 3166 alpha-2 codes, e.g. [\"IN\"]"
                    .into(),
            );
        }
    }
    let age = |k: &str| -> Result<Option<i64>, String> {
        match t.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_i64() {
                Some(a) if (18..=65).contains(&a) => Ok(Some(a)),
                _ => Err(format!(
                    "targeting.{k} must be a whole number from 18 to 65"
                )),
            },
        }
    };
    if let (Some(lo), Some(hi)) = (age("age_min")?, age("age_max")?)
        && lo > hi
    {
        return Err("targeting.age_min is above targeting.age_max".into());
    }
    Ok(())
}

fn looks_like_iso_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 16
        && b.len() <= 40
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
}

impl CtwaAdRequest {
    /// Every check, then the plan. `default_ad_account` is used when the request names
    /// none (the account has exactly one); `default_page` likewise for the Page.
    pub fn plan(
        self,
        default_ad_account: Option<&str>,
        default_page: Option<&str>,
    ) -> Result<Plan, String> {
        let ad_account_id = match &self.ad_account_id {
            Some(raw) => ad_account_id(raw).ok_or_else(|| {
                format!("ad_account_id {raw:?} is not an ad account id (act_<digits>)")
            })?,
            None => default_ad_account.map(str::to_string).ok_or(
                "ad_account_id is required (this account has several ad accounts, or none linked)",
            )?,
        };
        name_ok("name", &self.name)?;
        let mut dests = self
            .destinations
            .clone()
            .unwrap_or_else(|| vec![Destination::Whatsapp]);
        if dests.is_empty() {
            return Err(
                "destinations must name at least one of whatsapp, messenger, instagram".into(),
            );
        }
        dests.sort_unstable();
        if dests.windows(2).any(|w| w[0] == w[1]) {
            return Err("destinations names a destination twice".into());
        }
        let has = |d: Destination| dests.contains(&d);
        let objective = self
            .objective
            .clone()
            .unwrap_or_else(|| "OUTCOME_ENGAGEMENT".into());
        let goal = self
            .optimization_goal
            .clone()
            .unwrap_or_else(|| "CONVERSATIONS".into());
        let categories = self.special_ad_categories.clone().ok_or(
            "special_ad_categories is required: [] unless the ad is about credit, employment, housing, financial products or politics",
        )?;
        for c in &categories {
            if !SPECIAL_AD_CATEGORIES.contains(&c.as_str()) {
                return Err(format!(
                    "special_ad_categories: {c} is not one of {}",
                    SPECIAL_AD_CATEGORIES.join(", ")
                ));
            }
        }
        check_destination_rules(&dests, &objective, &goal, &categories)?;
        let budget = match &self.daily_budget {
            None | Some(Value::Null) => {
                return Err(
                    "daily_budget is required, in minor units (100000 = 1,000.00 a day)".into(),
                );
            }
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                format!(
                    "daily_budget is in minor units (paise, cents) as a whole number: {n} is not"
                )
            })?,
            Some(other) => {
                return Err(format!(
                    "daily_budget must be a whole number of minor units, not {other}"
                ));
            }
        };
        if !(MIN_DAILY_BUDGET..=1_000_000_000_000).contains(&budget) {
            return Err(format!(
                "daily_budget must be from {MIN_DAILY_BUDGET} to 1000000000000 minor units"
            ));
        }
        let phone_digits = match (&self.whatsapp_phone_number, has(Destination::Whatsapp)) {
            (Some(raw), true) => {
                let phone = crate::domain::Phone::parse_international(raw);
                phone.as_ref().map(|p| p.digits().to_string()).map_err(|_| {
                    format!(
                        "whatsapp_phone_number {raw:?} is not an E.164 number (+ then country code and number, e.g. +919876543210)"
                    )
                })?
            }
            (None, true) => {
                return Err(
                    "whatsapp_phone_number is required when whatsapp is a destination (E.164, e.g. +919876543210)"
                        .into(),
                );
            }
            (Some(_), false) => {
                return Err(
                    "whatsapp_phone_number is only for a WhatsApp destination: destinations has no whatsapp"
                        .into(),
                );
            }
            (None, false) => String::new(),
        };
        let instagram = match (&self.instagram_account_id, has(Destination::Instagram)) {
            (Some(i), true) if is_object_id(i) => Some(i.clone()),
            (Some(i), true) => {
                return Err(format!(
                    "instagram_account_id {i:?} is not an Instagram account id (digits)"
                ));
            }
            (None, true) => {
                return Err(
                    "instagram_account_id is required when instagram is a destination (the Instagram professional account connected to the Page)"
                        .into(),
                );
            }
            (Some(_), false) => {
                return Err(
                    "instagram_account_id is only for an Instagram destination: destinations has no instagram"
                        .into(),
                );
            }
            (None, false) => None,
        };
        let page_id = match self.page_id.as_deref().or(default_page) {
            Some(p) if is_object_id(p) => p.to_string(),
            Some(p) => return Err(format!("page_id {p:?} is not a Page id (digits)")),
            None => {
                return Err(
                    "page_id is required (the Facebook Page the ad runs for; none is linked to this ad account)"
                        .into(),
                );
            }
        };
        let targeting = self
            .targeting
            .clone()
            .ok_or("targeting is required, e.g. {\"geo_locations\":{\"countries\":[\"IN\"]},\"age_min\":25,\"age_max\":34}")?;
        check_targeting(&targeting)?;
        if let Some(t) = &self.start_time
            && !looks_like_iso_time(t)
        {
            return Err(format!(
                "start_time {t:?} must be ISO 8601, e.g. 2026-10-01T00:00:00+0530"
            ));
        }
        let c = &self.creative;
        if c.message.trim().is_empty() || c.message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(format!(
                "creative.message is required, at most {MAX_MESSAGE_CHARS} characters"
            ));
        }
        let whatsapp_only = dests == [Destination::Whatsapp];
        let wa_link = match &c.link {
            Some(_) if !whatsapp_only => {
                return Err(
                    "creative.link is only for a WhatsApp-only ad (a wa.me link): the links of Messenger, Instagram Direct and multidestination ads are the ones Meta's guides give"
                        .into(),
                );
            }
            Some(l) => {
                let num = link_number(l).ok_or_else(|| {
                    format!("creative.link {l:?} must be a https://wa.me/<number> (or api.whatsapp.com/send?phone=) link")
                })?;
                if num != phone_digits {
                    return Err(format!(
                        "creative.link opens a chat with {num}, but whatsapp_phone_number is +{phone_digits}"
                    ));
                }
                l.clone()
            }
            None => format!("https://wa.me/{phone_digits}"),
        };
        if let Some(cta) = &c.call_to_action {
            let types: Vec<&str> = dests.iter().map(|d| d.call_to_action().0).collect();
            if !cta
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| types.contains(&t))
            {
                return Err(format!(
                    "creative.call_to_action.type must be {}",
                    types.join(" or ")
                ));
            }
        }
        if c.image.is_some() && c.image_hash.is_some() {
            return Err("give creative.image or creative.image_hash, not both".into());
        }
        if let Some(h) = &c.image_hash
            && (h.is_empty() || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err("creative.image_hash is not an image hash".into());
        }
        let image = match &c.image {
            None => None,
            Some(img) => {
                if img.bytes.is_empty() || img.bytes.len() > MAX_IMAGE_BASE64_BYTES {
                    return Err(format!(
                        "creative.image.bytes must be base64, at most {MAX_IMAGE_BASE64_BYTES} bytes"
                    ));
                }
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(img.bytes.as_bytes())
                    .map_err(|_| "creative.image.bytes is not valid base64".to_string())?;
                let name = img.name.clone().unwrap_or_else(|| "image.png".into());
                if name.is_empty() || name.len() > 100 {
                    return Err("creative.image.name must be 1 to 100 characters".into());
                }
                let mut m = Map::new();
                m.insert("bytes".into(), json!(img.bytes));
                m.insert("name".into(), json!(name));
                Some(m)
            }
        };
        if let Some(h) = &c.headline {
            name_ok("creative.headline", h)?;
        }
        let name = self.name.trim();
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut promoted = Map::new();
        promoted.insert("page_id".into(), json!(page_id));
        if has(Destination::Whatsapp) {
            promoted.insert(
                "whatsapp_phone_number".into(),
                json!(format!("+{phone_digits}")),
            );
        }
        let mut adset = obj(json!({
            "name": format!("{name} — ad set"),
            "daily_budget": budget,
            "billing_event": "IMPRESSIONS",
            "optimization_goal": goal,
            "destination_type": destination_type(&dests),
            "promoted_object": promoted,
            "targeting": targeting,
            "status": "PAUSED",
        }));
        if let Some(t) = &self.start_time {
            adset.insert("start_time".into(), json!(t));
        }
        // The creative's own call to action is the first destination's (the guides'
        // order); a multidestination creative lists them all in `asset_feed_spec`.
        let primary = dests[0];
        let (cta_type, app) = primary.call_to_action();
        let mut link_data = obj(json!({
            "message": c.message,
            "call_to_action": {"type": cta_type, "value": {"app_destination": app}},
        }));
        match primary {
            Destination::Whatsapp => {
                link_data.insert("link".into(), json!(wa_link));
            }
            Destination::Messenger => {
                link_data.insert("link".into(), json!(MESSENGER_LINK));
            }
            // The Instagram guide's creative has no link.
            Destination::Instagram => {}
        }
        if let Some(h) = &c.headline {
            link_data.insert("name".into(), json!(h));
        }
        if let Some(h) = &c.image_hash {
            link_data.insert("image_hash".into(), json!(h));
        }
        let mut story = obj(json!({"page_id": page_id}));
        if let Some(ig) = &instagram {
            // The multidestination guide's name; the Instagram guide still shows
            // `instagram_actor_id` (see the README).
            story.insert("instagram_user_id".into(), json!(ig));
        }
        story.insert("link_data".into(), Value::Object(link_data));
        let mut creative = obj(json!({
            "name": format!("{name} — creative"),
            "object_story_spec": story,
        }));
        if dests.len() > 1 {
            let ctas: Vec<Value> = dests
                .iter()
                .map(|d| {
                    let (t, app) = d.call_to_action();
                    json!({"type": t, "value": {"app_destination": app, "link": d.feed_link()}})
                })
                .collect();
            creative.insert(
                "asset_feed_spec".into(),
                json!({"optimization_type": "DOF_MESSAGING_DESTINATION", "call_to_actions": ctas}),
            );
        }
        Ok(Plan {
            ad_account_id,
            image,
            campaign: obj(json!({
                "name": name,
                "objective": objective,
                "status": "PAUSED",
                "special_ad_categories": categories,
            })),
            adset,
            creative,
            ad: obj(json!({"name": format!("{name} — ad"), "status": "PAUSED"})),
            publish: self.publish,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<Plan, String> {
        serde_json::from_value::<CtwaAdRequest>(v)
            .map_err(|e| e.to_string())?
            .plan(Some("act_1"), Some("555"))
    }

    fn good() -> Value {
        json!({
            "name": "Diwali Sale 2026",
            "special_ad_categories": [],
            "daily_budget": 100000,
            "whatsapp_phone_number": "+919876543210",
            "targeting": {"geo_locations": {"countries": ["IN"]}, "age_min": 25, "age_max": 34},
            "creative": {"message": "30% off, tap to chat"},
        })
    }

    fn with(mut v: Value, path: &[&str], x: Value) -> Value {
        let mut cur = &mut v;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = x;
        v
    }

    #[test]
    fn a_good_request_becomes_the_seed_calls() {
        let p = req(good()).unwrap();
        assert_eq!(p.ad_account_id, "act_1");
        assert_eq!(p.campaign["objective"], "OUTCOME_ENGAGEMENT");
        assert_eq!(p.campaign["status"], "PAUSED");
        assert_eq!(p.adset["optimization_goal"], "CONVERSATIONS");
        assert_eq!(p.adset["daily_budget"], 100000);
        assert_eq!(p.adset["destination_type"], "WHATSAPP");
        assert_eq!(
            p.adset["promoted_object"]["whatsapp_phone_number"],
            "+919876543210"
        );
        let ld = &p.creative["object_story_spec"]["link_data"];
        assert_eq!(ld["link"], "https://wa.me/919876543210");
        assert_eq!(ld["call_to_action"]["type"], "WHATSAPP_MESSAGE");
        assert_eq!(p.ad["status"], "PAUSED");
        assert!(!p.publish);
    }

    #[test]
    fn every_mistake_is_named_before_any_call() {
        let cases: Vec<(Value, &str)> = vec![
            (
                with(good(), &["objective"], json!("OUTCOME_AWARENESS")),
                "not a Click-to-WhatsApp objective",
            ),
            (
                with(
                    with(good(), &["objective"], json!("OUTCOME_LEADS")),
                    &["optimization_goal"],
                    json!("LINK_CLICKS"),
                ),
                "not allowed with OUTCOME_LEADS",
            ),
            (
                with(good(), &["daily_budget"], json!(1000.5)),
                "whole number",
            ),
            (
                with(good(), &["daily_budget"], json!("100000")),
                "whole number",
            ),
            (with(good(), &["daily_budget"], json!(50)), "from 100"),
            (
                with(good(), &["whatsapp_phone_number"], json!("9876543210")),
                "E.164",
            ),
            (
                with(good(), &["whatsapp_phone_number"], json!("+0123456789")),
                "E.164",
            ),
            (
                with(
                    good(),
                    &["creative", "link"],
                    json!("https://wa.me/911111111111"),
                ),
                "but whatsapp_phone_number is",
            ),
            (
                with(
                    good(),
                    &["creative", "link"],
                    json!("https://example.com/x"),
                ),
                "wa.me",
            ),
            (
                with(
                    good(),
                    &["creative", "call_to_action"],
                    json!({"type": "LEARN_MORE"}),
                ),
                "WHATSAPP_MESSAGE",
            ),
            (
                with(good(), &["special_ad_categories"], json!(["GAMBLING"])),
                "not one of",
            ),
            (
                with(good(), &["special_ad_categories"], Value::Null),
                "special_ad_categories is required",
            ),
            (
                with(good(), &["targeting"], json!({"age_min": 20})),
                "geo_locations is required",
            ),
            (
                with(
                    good(),
                    &["targeting", "geo_locations", "countries"],
                    json!(["india"]),
                ),
                "alpha-2",
            ),
            (with(good(), &["targeting", "age_min"], json!(40)), "above"),
            (
                with(good(), &["targeting", "age_max"], json!(70)),
                "18 to 65",
            ),
            (with(good(), &["name"], json!("  ")), "name is required"),
            (
                with(good(), &["ad_account_id"], json!("12a")),
                "not an ad account id",
            ),
            (with(good(), &["start_time"], json!("tomorrow")), "ISO 8601"),
            (
                with(good(), &["creative", "image"], json!({"bytes": "@@@"})),
                "base64",
            ),
            (
                with(good(), &["creative", "surprise"], json!(1)),
                "unknown field",
            ),
        ];
        for (v, want) in cases {
            let e = req(v.clone()).expect_err(&v.to_string());
            assert!(e.contains(want), "{e:?} should mention {want:?} for {v}");
        }
    }

    fn on(dests: Value) -> Value {
        let mut v = good();
        let m = v.as_object_mut().unwrap();
        m.remove("whatsapp_phone_number");
        m.insert("destinations".into(), dests.clone());
        if dests.to_string().contains("whatsapp") {
            m.insert("whatsapp_phone_number".into(), json!("+919876543210"));
        }
        if dests.to_string().contains("instagram") {
            m.insert("instagram_account_id".into(), json!("17841400000000001"));
        }
        v
    }

    #[test]
    fn the_default_destination_is_whatsapp_and_an_explicit_one_plans_the_same() {
        let implicit = req(good()).unwrap();
        let explicit = req(on(json!(["whatsapp"]))).unwrap();
        assert_eq!(implicit, explicit);
        assert!(implicit.creative.get("asset_feed_spec").is_none());
        assert!(
            implicit.creative["object_story_spec"]
                .get("instagram_user_id")
                .is_none()
        );
    }

    #[test]
    fn messenger_only_plan() {
        let p = req(on(json!(["messenger"]))).unwrap();
        assert_eq!(p.adset["destination_type"], "MESSENGER");
        assert_eq!(p.adset["billing_event"], "IMPRESSIONS");
        assert_eq!(p.adset["promoted_object"], json!({"page_id": "555"}));
        let oss = &p.creative["object_story_spec"];
        assert!(oss.get("instagram_user_id").is_none());
        assert_eq!(oss["link_data"]["link"], MESSENGER_LINK);
        assert_eq!(
            oss["link_data"]["call_to_action"],
            json!({"type": "MESSAGE_PAGE", "value": {"app_destination": "MESSENGER"}})
        );
        assert!(p.creative.get("asset_feed_spec").is_none());
    }

    #[test]
    fn instagram_only_plan() {
        let v = with(
            with(
                on(json!(["instagram"])),
                &["objective"],
                json!("OUTCOME_TRAFFIC"),
            ),
            &["optimization_goal"],
            json!("LANDING_PAGE_VIEWS"),
        );
        let p = req(v).unwrap();
        assert_eq!(p.adset["destination_type"], "INSTAGRAM_DIRECT");
        assert_eq!(p.adset["optimization_goal"], "LANDING_PAGE_VIEWS");
        assert_eq!(p.adset["promoted_object"], json!({"page_id": "555"}));
        let oss = &p.creative["object_story_spec"];
        assert_eq!(oss["instagram_user_id"], "17841400000000001");
        assert!(oss.get("instagram_actor_id").is_none());
        assert!(
            oss["link_data"].get("link").is_none(),
            "the guide's creative has no link"
        );
        assert_eq!(
            oss["link_data"]["call_to_action"],
            json!({"type": "INSTAGRAM_MESSAGE", "value": {"app_destination": "INSTAGRAM_DIRECT"}})
        );
    }

    #[test]
    fn every_multidestination_set_plans_its_destination_type_and_calls_to_action() {
        let cases = [
            (
                json!(["whatsapp", "messenger"]),
                "MESSAGING_MESSENGER_WHATSAPP",
            ),
            (
                json!(["instagram", "messenger"]),
                "MESSAGING_INSTAGRAM_DIRECT_MESSENGER",
            ),
            (
                json!(["instagram", "whatsapp"]),
                "MESSAGING_INSTAGRAM_DIRECT_WHATSAPP",
            ),
            (
                json!(["instagram", "whatsapp", "messenger"]),
                "MESSAGING_INSTAGRAM_DIRECT_MESSENGER_WHATSAPP",
            ),
        ];
        for (dests, dt) in cases {
            let p = req(on(dests.clone())).unwrap();
            assert_eq!(p.adset["destination_type"], dt, "{dests}");
            assert_eq!(p.adset["optimization_goal"], "CONVERSATIONS");
            let text = dests.to_string();
            let wa = text.contains("whatsapp");
            let ig = text.contains("instagram");
            let ms = text.contains("messenger");
            assert_eq!(
                p.adset["promoted_object"]
                    .get("whatsapp_phone_number")
                    .is_some(),
                wa,
                "{dests}"
            );
            assert_eq!(
                p.creative["object_story_spec"]
                    .get("instagram_user_id")
                    .is_some(),
                ig
            );
            let afs = &p.creative["asset_feed_spec"];
            assert_eq!(afs["optimization_type"], "DOF_MESSAGING_DESTINATION");
            let apps: Vec<&str> = afs["call_to_actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["value"]["app_destination"].as_str().unwrap())
                .collect();
            let mut want = Vec::new();
            if ms {
                want.push("MESSENGER");
            }
            if wa {
                want.push("WHATSAPP");
            }
            if ig {
                want.push("INSTAGRAM_DIRECT");
            }
            assert_eq!(apps, want, "the guide's order, whatever the request's");
            // The creative's own call to action is the first destination's.
            assert_eq!(
                p.creative["object_story_spec"]["link_data"]["call_to_action"]["value"]["app_destination"],
                want[0]
            );
        }
        let p = req(on(json!(["messenger", "whatsapp", "instagram"]))).unwrap();
        assert_eq!(
            p.creative["asset_feed_spec"]["call_to_actions"],
            json!([
                {"type": "MESSAGE_PAGE", "value": {"app_destination": "MESSENGER", "link": "https://fb.com/messenger_doc/"}},
                {"type": "WHATSAPP_MESSAGE", "value": {"app_destination": "WHATSAPP", "link": "https://api.whatsapp.com/send"}},
                {"type": "INSTAGRAM_MESSAGE", "value": {"app_destination": "INSTAGRAM_DIRECT", "link": "https://www.instagram.com"}},
            ])
        );
        assert_eq!(
            p.creative["object_story_spec"]["link_data"]["link"],
            MESSENGER_LINK
        );
        // WhatsApp first when Messenger is not in: its wa.me link.
        let p = req(on(json!(["instagram", "whatsapp"]))).unwrap();
        assert_eq!(
            p.creative["object_story_spec"]["link_data"]["link"],
            "https://wa.me/919876543210"
        );
    }

    #[test]
    fn combinations_meta_does_not_support_are_refused_with_the_guides_reason() {
        let all = || on(json!(["messenger", "whatsapp", "instagram"]));
        let cases: Vec<(Value, &str)> = vec![
            (
                with(all(), &["special_ad_categories"], json!(["HOUSING"])),
                guide::MULTI_SPECIAL_CATEGORIES,
            ),
            (
                with(
                    with(all(), &["objective"], json!("OUTCOME_SALES")),
                    &["optimization_goal"],
                    json!("LINK_CLICKS"),
                ),
                guide::MULTI_GOAL,
            ),
            (
                with(all(), &["objective"], json!("OUTCOME_LEADS")),
                guide::OBJECTIVES,
            ),
            (
                with(
                    on(json!(["instagram"])),
                    &["objective"],
                    json!("OUTCOME_LEADS"),
                ),
                guide::OBJECTIVES,
            ),
            (
                with(
                    on(json!(["instagram"])),
                    &["optimization_goal"],
                    json!("REACH"),
                ),
                guide::INSTAGRAM_ENGAGEMENT_GOALS,
            ),
            (
                with(
                    with(
                        on(json!(["instagram"])),
                        &["objective"],
                        json!("OUTCOME_SALES"),
                    ),
                    &["optimization_goal"],
                    json!("LANDING_PAGE_VIEWS"),
                ),
                guide::INSTAGRAM_SALES_GOALS,
            ),
            (
                with(
                    with(
                        on(json!(["instagram"])),
                        &["objective"],
                        json!("OUTCOME_TRAFFIC"),
                    ),
                    &["optimization_goal"],
                    json!("OFFSITE_CONVERSIONS"),
                ),
                guide::INSTAGRAM_TRAFFIC_GOALS,
            ),
            (
                with(
                    on(json!(["messenger"])),
                    &["objective"],
                    json!("OUTCOME_LEADS"),
                ),
                guide::MESSENGER_OBJECTIVES,
            ),
            (
                with(
                    on(json!(["messenger"])),
                    &["optimization_goal"],
                    json!("LINK_CLICKS"),
                ),
                guide::MESSENGER_GOALS,
            ),
            (
                with(
                    on(json!(["messenger"])),
                    &["objective"],
                    json!("OUTCOME_AWARENESS"),
                ),
                guide::MESSENGER_OBJECTIVES,
            ),
        ];
        for (v, want) in cases {
            let e = req(v.clone()).expect_err(&v.to_string());
            assert!(
                e.contains(&format!("\"{want}\"")),
                "{e:?} should quote {want:?} for {v}"
            );
        }
        // A special ad category is fine for one destination.
        req(with(
            on(json!(["messenger"])),
            &["special_ad_categories"],
            json!(["HOUSING"]),
        ))
        .unwrap();
        // NONE is the guide's other way of saying none.
        req(with(all(), &["special_ad_categories"], json!(["NONE"]))).unwrap();
    }

    #[test]
    fn destination_fields_are_required_where_they_apply_and_only_there() {
        let drop = |mut v: Value, k: &str| {
            v.as_object_mut().unwrap().remove(k);
            v
        };
        let cases: Vec<(Value, &str)> = vec![
            (
                drop(good(), "whatsapp_phone_number"),
                "whatsapp_phone_number is required",
            ),
            (
                drop(
                    on(json!(["messenger", "whatsapp"])),
                    "whatsapp_phone_number",
                ),
                "whatsapp_phone_number is required",
            ),
            (
                with(
                    on(json!(["messenger"])),
                    &["whatsapp_phone_number"],
                    json!("+919876543210"),
                ),
                "only for a WhatsApp destination",
            ),
            (
                drop(on(json!(["instagram"])), "instagram_account_id"),
                "instagram_account_id is required",
            ),
            (
                with(
                    on(json!(["instagram"])),
                    &["instagram_account_id"],
                    json!("ig_1"),
                ),
                "not an Instagram account id",
            ),
            (
                with(
                    on(json!(["messenger"])),
                    &["instagram_account_id"],
                    json!("1784"),
                ),
                "only for an Instagram destination",
            ),
            (with(good(), &["destinations"], json!([])), "at least one"),
            (
                on(json!(["messenger", "messenger"])),
                "names a destination twice",
            ),
            (
                with(good(), &["destinations"], json!(["telegram"])),
                "unknown variant",
            ),
            (
                with(
                    on(json!(["messenger", "whatsapp"])),
                    &["creative", "link"],
                    json!("https://wa.me/919876543210"),
                ),
                "only for a WhatsApp-only ad",
            ),
            (
                with(
                    on(json!(["messenger"])),
                    &["creative", "call_to_action"],
                    json!({"type": "WHATSAPP_MESSAGE"}),
                ),
                "must be MESSAGE_PAGE",
            ),
        ];
        for (v, want) in cases {
            let e = req(v.clone()).expect_err(&v.to_string());
            assert!(e.contains(want), "{e:?} should mention {want:?} for {v}");
        }
        // A call to action of one of the destinations is accepted.
        req(with(
            on(json!(["messenger", "instagram"])),
            &["creative", "call_to_action"],
            json!({"type": "INSTAGRAM_MESSAGE"}),
        ))
        .unwrap();
    }

    #[test]
    fn links_and_numbers() {
        assert_eq!(
            link_number("https://wa.me/919876543210?text=hi").as_deref(),
            Some("919876543210")
        );
        assert_eq!(
            link_number("https://api.whatsapp.com/send?phone=919876543210&text=x").as_deref(),
            Some("919876543210")
        );
        assert_eq!(link_number("http://wa.me/91"), None);
        assert_eq!(ad_account_id("123").as_deref(), Some("act_123"));
        assert_eq!(ad_account_id("act_123").as_deref(), Some("act_123"));
        assert_eq!(ad_account_id("act_").as_deref(), None);
        assert!(!is_object_id("12/../x"));
    }
}
