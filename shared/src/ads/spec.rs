//! `POST /v1/ads/ctwa`: the request, checked completely before the first Meta call, and
//! the plan of Graph calls it becomes (meta-api.md section 6, seed 000).

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
    pub whatsapp_phone_number: String,
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
        let objective = self
            .objective
            .clone()
            .unwrap_or_else(|| "OUTCOME_ENGAGEMENT".into());
        let goals = goals_for(&objective).ok_or_else(|| {
            format!("objective {objective} is not a Click-to-WhatsApp objective (OUTCOME_ENGAGEMENT, OUTCOME_LEADS, OUTCOME_SALES, OUTCOME_TRAFFIC)")
        })?;
        let goal = self
            .optimization_goal
            .clone()
            .unwrap_or_else(|| "CONVERSATIONS".into());
        if !goals.contains(&goal.as_str()) {
            return Err(format!(
                "optimization_goal {goal} is not allowed with {objective}: use one of {}",
                goals.join(", ")
            ));
        }
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
        let phone = crate::domain::Phone::parse_international(&self.whatsapp_phone_number);
        let phone_digits = phone.as_ref().map(|p| p.digits()).map_err(|_| {
            format!(
                "whatsapp_phone_number {:?} is not an E.164 number (+ then country code and number, e.g. +919876543210)",
                self.whatsapp_phone_number
            )
        })?;
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
        let link = match &c.link {
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
        if let Some(cta) = &c.call_to_action
            && cta.get("type").and_then(Value::as_str) != Some("WHATSAPP_MESSAGE")
        {
            return Err("creative.call_to_action.type must be WHATSAPP_MESSAGE".into());
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
        let mut adset = obj(json!({
            "name": format!("{name} — ad set"),
            "daily_budget": budget,
            "billing_event": "IMPRESSIONS",
            "optimization_goal": goal,
            "destination_type": "WHATSAPP",
            "promoted_object": {"page_id": page_id, "whatsapp_phone_number": format!("+{phone_digits}")},
            "targeting": targeting,
            "status": "PAUSED",
        }));
        if let Some(t) = &self.start_time {
            adset.insert("start_time".into(), json!(t));
        }
        let mut link_data = obj(json!({
            "message": c.message,
            "link": link,
            "call_to_action": {"type": "WHATSAPP_MESSAGE", "value": {"app_destination": "WHATSAPP"}},
        }));
        if let Some(h) = &c.headline {
            link_data.insert("name".into(), json!(h));
        }
        if let Some(h) = &c.image_hash {
            link_data.insert("image_hash".into(), json!(h));
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
            creative: obj(json!({
                "name": format!("{name} — creative"),
                "object_story_spec": {"page_id": page_id, "link_data": link_data},
            })),
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
