//! The rules of onboarding: what makes a new account (and its ad accounts) valid, in one
//! place for every way in (`POST /v1/admin/accounts`, `ctwa-admin account create`; the
//! ad account link route and `ctwa-admin ad-account link`). The input is the raw text
//! given; the output the [`Account`] and the [`AdAccountLink`]s to create.

use crate::domain::Account;
use crate::ids::{AccountId, AdAccountId, IdError, PageId, PhoneNumberId, WabaId};
use crate::store::AdAccountLink;
use serde::Deserialize;
use std::collections::HashSet;

/// Phone number ids or ad accounts per account creation: the account, its routes and
/// its ad accounts are written in one transaction (DynamoDB: at most 100 items).
pub const MAX_IDS_PER_LIST: usize = 25;
/// The longest account name.
pub const MAX_NAME_LEN: usize = 200;
/// The longest Sinch app id.
pub const MAX_SINCH_APP_ID_LEN: usize = 64;

/// A Sinch app id as it is linked (and as a callback must name it to be checked): 1 to
/// [`MAX_SINCH_APP_ID_LEN`] letters and digits, so it can name a secret safely.
pub fn is_sinch_app_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SINCH_APP_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A rule of onboarding that the input breaks. The messages are the HTTP API's answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountRuleError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("name is required (at most 200 characters)")]
    Name,
    #[error("{field}: at most {MAX_IDS_PER_LIST}")]
    TooMany { field: &'static str },
    #[error("{field}: {value} is given twice")]
    GivenTwice { field: &'static str, value: String },
    #[error("sinch_app_id must be letters and digits")]
    SinchAppId,
    #[error("sinch_webhook_secret is given without sinch_app_id")]
    SinchSecretWithoutApp,
    #[error("{0}")]
    SinchSecret(String),
    /// An element of a new account's `ad_account_ids`.
    #[error("ad_account_ids: {:?} is not an ad account id (act_<digits>)", .0.value())]
    AdAccountIds(IdError),
    /// The `ad_account_id` of a link.
    #[error("ad_account_id is not an ad account id (act_<digits>)")]
    LinkAdAccountId(IdError),
}

/// A new account as given (the body of `POST /v1/admin/accounts`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Generated (`acct_<hex>`) when not given.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub waba_id: Option<String>,
    #[serde(default)]
    pub phone_number_ids: Vec<String>,
    #[serde(default)]
    pub sinch_app_id: Option<String>,
    /// The secret of the Sinch app's webhook (the `secret` set on the webhook in Sinch):
    /// kept in Secrets Manager, never in the table, never shown again.
    #[serde(default)]
    pub sinch_webhook_secret: Option<SinchWebhookSecret>,
    #[serde(default)]
    pub ad_account_ids: Vec<String>,
    /// The Page of the ad accounts' ads.
    #[serde(default)]
    pub page_id: Option<String>,
}

/// A new account that keeps every rule: to be created all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAccount {
    pub account: Account,
    /// Its ad accounts, `act_<digits>` each, none twice.
    pub ad_account_links: Vec<AdAccountLink>,
    /// The webhook secret of its Sinch app, to keep in Secrets Manager.
    pub sinch_webhook_secret: Option<SinchWebhookSecret>,
}

/// A Sinch webhook secret as given; never printed. [`Self::checked`] applies the rules.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SinchWebhookSecret(String);

impl SinchWebhookSecret {
    pub fn checked(self) -> Result<Self, AccountRuleError> {
        crate::secrets::SinchAppSecret::check(&self.0).map_err(AccountRuleError::SinchSecret)?;
        Ok(self)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SinchWebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinchWebhookSecret(..)")
    }
}

impl NewAccount {
    /// The account and its ad account links, created at `now_ms`; the first rule broken
    /// otherwise. Ids are trimmed; the name too. No phone number id or ad account is
    /// given twice (one transaction writes them all, and may not hold an item twice).
    pub fn parse(self, now_ms: i64) -> Result<ValidAccount, AccountRuleError> {
        let id = match &self.id {
            Some(raw) => AccountId::parse(raw)?,
            None => AccountId::generate(),
        };
        let name = self.name.trim();
        if name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(AccountRuleError::Name);
        }
        let waba_id = self.waba_id.as_deref().map(WabaId::parse).transpose()?;
        let phone_number_ids = self
            .phone_number_ids
            .iter()
            .map(|p| PhoneNumberId::parse(p).map_err(|e| e.in_field("phone_number_ids[]")))
            .collect::<Result<Vec<_>, _>>()?;
        for (field, len) in [
            ("phone_number_ids", phone_number_ids.len()),
            ("ad_account_ids", self.ad_account_ids.len()),
        ] {
            if len > MAX_IDS_PER_LIST {
                return Err(AccountRuleError::TooMany { field });
            }
        }
        no_phone_number_id_twice(&phone_number_ids)?;
        if let Some(s) = &self.sinch_app_id
            && !is_sinch_app_id(s)
        {
            return Err(AccountRuleError::SinchAppId);
        }
        let sinch_webhook_secret = match (&self.sinch_app_id, self.sinch_webhook_secret) {
            (_, None) => None,
            (None, Some(_)) => return Err(AccountRuleError::SinchSecretWithoutApp),
            (Some(_), Some(secret)) => Some(secret.checked()?),
        };
        let page_id = self.page_id.as_deref().map(PageId::parse).transpose()?;
        let mut ad_account_ids: Vec<AdAccountId> = Vec::new();
        for raw in &self.ad_account_ids {
            let act = AdAccountId::parse(raw).map_err(AccountRuleError::AdAccountIds)?;
            if ad_account_ids.contains(&act) {
                return Err(AccountRuleError::GivenTwice {
                    field: "ad_account_ids",
                    value: act.into_string(),
                });
            }
            ad_account_ids.push(act);
        }

        let ad_account_links = ad_account_ids
            .into_iter()
            .map(|ad_account_id| {
                ValidAdAccountLink {
                    ad_account_id,
                    page_id: page_id.clone(),
                }
                .link(&id, now_ms)
            })
            .collect();
        Ok(ValidAccount {
            account: Account {
                id: id.into_string(),
                name: name.to_string(),
                waba_id: waba_id.map(WabaId::into_string),
                phone_number_ids: phone_number_ids
                    .into_iter()
                    .map(PhoneNumberId::into_string)
                    .collect(),
                sinch_app_id: self.sinch_app_id,
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: now_ms,
            },
            ad_account_links,
            sinch_webhook_secret,
        })
    }
}

/// The first phone number id given twice, as an error.
fn no_phone_number_id_twice(ids: &[PhoneNumberId]) -> Result<(), AccountRuleError> {
    let mut seen = HashSet::new();
    match ids.iter().find(|i| !seen.insert(i.as_str())) {
        Some(twice) => Err(AccountRuleError::GivenTwice {
            field: "phone_number_ids",
            value: twice.to_string(),
        }),
        None => Ok(()),
    }
}

/// An ad account to link to an existing account, as given (the body of
/// `POST /v1/admin/accounts/{account_id}/ad-accounts`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAdAccountLink {
    /// `act_<digits>` or `<digits>`.
    pub ad_account_id: String,
    #[serde(default)]
    pub page_id: Option<String>,
}

/// An ad account link that keeps the rules, for any account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAdAccountLink {
    pub ad_account_id: AdAccountId,
    pub page_id: Option<PageId>,
}

impl NewAdAccountLink {
    pub fn parse(self) -> Result<ValidAdAccountLink, AccountRuleError> {
        let ad_account_id =
            AdAccountId::parse(&self.ad_account_id).map_err(AccountRuleError::LinkAdAccountId)?;
        let page_id = self.page_id.as_deref().map(PageId::parse).transpose()?;
        Ok(ValidAdAccountLink {
            ad_account_id,
            page_id,
        })
    }
}

impl ValidAdAccountLink {
    /// The link of this ad account to `account`, made at `now_ms`.
    pub fn link(self, account: &AccountId, now_ms: i64) -> AdAccountLink {
        AdAccountLink {
            ad_account_id: self.ad_account_id.into_string(),
            account_id: account.as_str().to_string(),
            page_id: self.page_id.map(PageId::into_string),
            linked_at_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new(v: serde_json::Value) -> NewAccount {
        serde_json::from_value(v).unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        new(v.clone())
            .parse(0)
            .expect_err(&v.to_string())
            .to_string()
    }

    #[test]
    fn a_full_account_and_its_links() {
        let v = new(json!({
            "id": " acme ", "name": " Acme ", "waba_id": "555", "phone_number_ids": ["777", " 888"],
            "sinch_app_id": "app1", "ad_account_ids": ["act_42", "43"], "page_id": "99"
        }))
        .parse(1_000)
        .unwrap();
        assert_eq!(
            v.account,
            Account {
                id: "acme".into(),
                name: "Acme".into(),
                waba_id: Some("555".into()),
                phone_number_ids: vec!["777".into(), "888".into()],
                sinch_app_id: Some("app1".into()),
                page_ids: Vec::new(),
                instagram_account_ids: Vec::new(),
                created_at_ms: 1_000,
            }
        );
        let link = |act: &str| AdAccountLink {
            ad_account_id: act.into(),
            account_id: "acme".into(),
            page_id: Some("99".into()),
            linked_at_ms: 1_000,
        };
        assert_eq!(v.ad_account_links, vec![link("act_42"), link("act_43")]);
    }

    #[test]
    fn a_sinch_secret_needs_its_app_and_is_never_printed() {
        assert_eq!(
            err(json!({"name": "x", "sinch_webhook_secret": "0123456789abcdef"})),
            "sinch_webhook_secret is given without sinch_app_id"
        );
        assert!(
            err(json!({"name": "x", "sinch_app_id": "a1", "sinch_webhook_secret": "short"}))
                .contains("16 to 256")
        );
        let raw = new(
            json!({"name": "x", "sinch_app_id": "a1", "sinch_webhook_secret": "TOPSECRET-0123456789"}),
        );
        assert!(!format!("{raw:?}").contains("TOPSECRET"));
        let v = raw.parse(0).unwrap();
        assert!(!format!("{v:?}").contains("TOPSECRET"));
        assert_eq!(
            v.sinch_webhook_secret
                .as_ref()
                .map(SinchWebhookSecret::expose),
            Some("TOPSECRET-0123456789")
        );
    }

    #[test]
    fn the_least_account_gets_an_id() {
        let a = new(json!({"name": "x"})).parse(5).unwrap();
        assert!(a.account.id.starts_with("acct_"), "{}", a.account.id);
        assert!(AccountId::parse(&a.account.id).is_ok());
        assert_eq!(a.account.phone_number_ids, Vec::<String>::new());
        assert_eq!(a.account.waba_id, None);
        assert!(a.ad_account_links.is_empty());
    }

    #[test]
    fn limits() {
        let ids = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        assert!(
            new(json!({"name": "x", "phone_number_ids": ids(25), "ad_account_ids": ids(25)}))
                .parse(0)
                .is_ok()
        );
        assert_eq!(
            err(json!({"name": "x", "phone_number_ids": ids(26)})),
            "phone_number_ids: at most 25"
        );
        assert_eq!(
            err(json!({"name": "x", "ad_account_ids": ids(26)})),
            "ad_account_ids: at most 25"
        );
        assert!(new(json!({"name": "n".repeat(200)})).parse(0).is_ok());
        for name in ["", "  ", &"n".repeat(201)] {
            assert_eq!(
                err(json!({"name": name})),
                "name is required (at most 200 characters)"
            );
        }
        assert!(
            new(json!({"name": "x", "sinch_app_id": "a".repeat(64)}))
                .parse(0)
                .is_ok()
        );
        for s in ["", "a-b", " a", &"a".repeat(65)] {
            assert_eq!(
                err(json!({"name": "x", "sinch_app_id": s})),
                "sinch_app_id must be letters and digits"
            );
        }
    }

    #[test]
    fn duplicates() {
        assert_eq!(
            err(json!({"name": "x", "phone_number_ids": ["5", "6", "5"]})),
            "phone_number_ids: 5 is given twice"
        );
        assert_eq!(
            err(json!({"name": "x", "phone_number_ids": ["5", " 5"]})),
            "phone_number_ids: 5 is given twice"
        );
        assert_eq!(
            err(json!({"name": "x", "ad_account_ids": ["act_7", "7"]})),
            "ad_account_ids: act_7 is given twice"
        );
    }

    #[test]
    fn bad_ids() {
        let cases = [
            (
                json!({"name": "x", "id": "a b"}),
                "account id: 1 to 64 letters, digits, - or _",
            ),
            (
                json!({"name": "x", "id": ""}),
                "account id: 1 to 64 letters, digits, - or _",
            ),
            (
                json!({"name": "x", "waba_id": "w1"}),
                r#"waba_id "w1" must be digits"#,
            ),
            (
                json!({"name": "x", "phone_number_ids": ["1", "+1"]}),
                r#"phone_number_ids[] "+1" must be digits"#,
            ),
            (
                json!({"name": "x", "page_id": "p"}),
                r#"page_id "p" must be digits"#,
            ),
            (
                json!({"name": "x", "ad_account_ids": ["act_x"]}),
                r#"ad_account_ids: "act_x" is not an ad account id (act_<digits>)"#,
            ),
            // Checked in this order: the id before the name, the lists' lengths before
            // duplicates, duplicate ad accounts as they come.
            (
                json!({"name": "", "id": "a b"}),
                "account id: 1 to 64 letters, digits, - or _",
            ),
            (
                json!({"name": "x", "phone_number_ids": ["x"], "page_id": "p"}),
                r#"phone_number_ids[] "x" must be digits"#,
            ),
            (
                json!({"name": "x", "ad_account_ids": ["1", "1", "y"]}),
                "ad_account_ids: act_1 is given twice",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(err(v.clone()), want, "{v}");
        }
        assert!(serde_json::from_value::<NewAccount>(json!({"name": "x", "extra": 1})).is_err());
        assert!(serde_json::from_value::<NewAccount>(json!({"id": "x"})).is_err());
    }

    #[test]
    fn links() {
        let acme = AccountId::parse("acme").unwrap();
        let l: NewAdAccountLink =
            serde_json::from_value(json!({"ad_account_id": "43", "page_id": "7"})).unwrap();
        let link = l.parse().unwrap().link(&acme, 9);
        assert_eq!(
            link,
            AdAccountLink {
                ad_account_id: "act_43".into(),
                account_id: "acme".into(),
                page_id: Some("7".into()),
                linked_at_ms: 9,
            }
        );
        let parse = |v: serde_json::Value| {
            serde_json::from_value::<NewAdAccountLink>(v)
                .unwrap()
                .parse()
                .map(|l| l.link(&acme, 0))
        };
        assert_eq!(
            parse(json!({"ad_account_id": "act_1"})).unwrap().page_id,
            None
        );
        assert_eq!(
            parse(json!({"ad_account_id": "act_"}))
                .unwrap_err()
                .to_string(),
            "ad_account_id is not an ad account id (act_<digits>)"
        );
        assert_eq!(
            parse(json!({"ad_account_id": "1", "page_id": "x"}))
                .unwrap_err()
                .to_string(),
            r#"page_id "x" must be digits"#
        );
        assert!(
            serde_json::from_value::<NewAdAccountLink>(json!({"ad_account_id": "1", "x": 1}))
                .is_err()
        );
    }
}
