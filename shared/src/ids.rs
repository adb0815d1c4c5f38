//! Ids, parsed once: an [`AccountId`] of this deployment, and the Meta ids an account is
//! made of ([`WabaId`], [`PhoneNumberId`], [`DatasetId`], [`PageId`], [`AdAccountId`]).
//! A value of one of these types has passed its rule; code that holds one checks
//! nothing again. Each parses from text (trimmed), prints and serializes as its text,
//! and deserializes through the same parse (`#[serde(try_from = "String")]`).
//!
//! The rules are written here only: the digit rule of Meta ids ([`is_object_id`], which
//! `ads::spec` re-exports) and the account id rule.

use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The most digits of a Graph object id ([`WabaId`], [`PhoneNumberId`], [`PageId`], and
/// the ids of the Marketing API's objects).
pub const OBJECT_ID_MAX_DIGITS: usize = 30;
/// The most digits of a [`DatasetId`] (the CAPI routes' rule).
pub const DATASET_ID_MAX_DIGITS: usize = 32;
/// The most digits of an [`AdAccountId`] (after `act_`).
pub const AD_ACCOUNT_ID_MAX_DIGITS: usize = 20;
/// The longest [`AccountId`].
pub const ACCOUNT_ID_MAX_LEN: usize = 64;

/// A text that is not an id of its kind. The message names the field and the rule.
/// `value` is the text as it was given (before trimming).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not 1 to 64 ASCII letters, digits, `-` or `_`.
    #[error("{field}: 1 to 64 letters, digits, - or _")]
    Account { field: &'static str, value: String },
    /// Not 1 to [`OBJECT_ID_MAX_DIGITS`] ASCII digits.
    #[error("{field} {value:?} must be digits")]
    Digits { field: &'static str, value: String },
    /// Not 1 to [`DATASET_ID_MAX_DIGITS`] ASCII digits.
    #[error("{field} must be a Meta id (digits)")]
    MetaId { field: &'static str, value: String },
    /// Neither `act_<digits>` nor `<digits>` (1 to [`AD_ACCOUNT_ID_MAX_DIGITS`]).
    #[error("{field} {value:?} is not an ad account id (act_<digits>)")]
    AdAccount { field: &'static str, value: String },
}

impl IdError {
    /// The same error for another field name (e.g. `phone_number_ids[]`).
    pub fn in_field(self, name: &'static str) -> Self {
        match self {
            Self::Account { value, .. } => Self::Account { field: name, value },
            Self::Digits { value, .. } => Self::Digits { field: name, value },
            Self::MetaId { value, .. } => Self::MetaId { field: name, value },
            Self::AdAccount { value, .. } => Self::AdAccount { field: name, value },
        }
    }

    /// The field the message names.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Account { field, .. }
            | Self::Digits { field, .. }
            | Self::MetaId { field, .. }
            | Self::AdAccount { field, .. } => field,
        }
    }

    /// The rejected text, as it was given.
    pub fn value(&self) -> &str {
        match self {
            Self::Account { value, .. }
            | Self::Digits { value, .. }
            | Self::MetaId { value, .. }
            | Self::AdAccount { value, .. } => value,
        }
    }
}

/// 1 to `max` ASCII digits (nothing trimmed).
fn is_digits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
}

/// A Graph object id: 1 to [`OBJECT_ID_MAX_DIGITS`] ASCII digits, nothing trimmed (safe
/// as a path segment of a Graph call).
pub fn is_object_id(s: &str) -> bool {
    is_digits(s, OBJECT_ID_MAX_DIGITS)
}

/// What every id type has: its text, `Display`, `Serialize` as that text,
/// `Deserialize`/`TryFrom<String>`/`FromStr` through `parse`.
macro_rules! id_text {
    ($name:ident) => {
        impl $name {
            /// The id's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

/// An id of this deployment's account: 1 to 64 ASCII letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct AccountId(String);

id_text!(AccountId);

impl AccountId {
    /// The account id in `raw` (trimmed).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let id = raw.trim();
        if id.is_empty()
            || id.len() > ACCOUNT_ID_MAX_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(IdError::Account {
                field: "account id",
                value: raw.to_string(),
            });
        }
        Ok(Self(id.to_string()))
    }

    /// A new random id, `acct_` and 16 hex digits (for an account created without one).
    pub fn generate() -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        Self(format!("acct_{}", hex::encode(b)))
    }
}

/// A Meta id of digits: the type, its doc, the field its errors name, its most digits
/// and the error variant.
macro_rules! meta_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $variant:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        id_text!($name);

        impl $name {
            #[doc = concat!("The id in `raw` (trimmed): 1 to `", stringify!($max), "` ASCII digits.")]
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                let id = raw.trim();
                if !is_digits(id, $max) {
                    return Err(IdError::$variant {
                        field: $field,
                        value: raw.to_string(),
                    });
                }
                Ok(Self(id.to_string()))
            }
        }
    };
}

meta_id!(
    /// A WhatsApp Business Account id.
    WabaId,
    "waba_id",
    OBJECT_ID_MAX_DIGITS,
    Digits
);
meta_id!(
    /// A WhatsApp Business phone number id (the route of an account's webhooks).
    PhoneNumberId,
    "phone_number_id",
    OBJECT_ID_MAX_DIGITS,
    Digits
);
meta_id!(
    /// A Facebook Page id.
    PageId,
    "page_id",
    OBJECT_ID_MAX_DIGITS,
    Digits
);
meta_id!(
    /// A Meta dataset (pixel) id, where an account's conversions go.
    DatasetId,
    "dataset_id",
    DATASET_ID_MAX_DIGITS,
    MetaId
);

/// An ad account id, held as `act_<digits>`; parsed from `act_123` or `123`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct AdAccountId(String);

id_text!(AdAccountId);

impl AdAccountId {
    /// The ad account id in `raw` (trimmed): `act_` and 1 to
    /// [`AD_ACCOUNT_ID_MAX_DIGITS`] digits, or the digits alone.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let t = raw.trim();
        let digits = t.strip_prefix("act_").unwrap_or(t);
        if !is_digits(digits, AD_ACCOUNT_ID_MAX_DIGITS) {
            return Err(IdError::AdAccount {
                field: "ad_account_id",
                value: raw.to_string(),
            });
        }
        Ok(Self(format!("act_{digits}")))
    }

    /// `act_<digits>` (the same as [`AdAccountId::as_str`]).
    pub fn as_act(&self) -> &str {
        &self.0
    }

    /// The digits, without `act_`.
    pub fn digits(&self) -> &str {
        &self.0["act_".len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        for good in ["acme", "a", "A-b_9", &"x".repeat(64)] {
            assert_eq!(AccountId::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(AccountId::parse("  acme\n").unwrap(), "acme");
        for bad in ["", "  ", "a b", "a/b", "é", "acme.", &"x".repeat(65)] {
            let e = AccountId::parse(bad).unwrap_err();
            assert_eq!(e.to_string(), "account id: 1 to 64 letters, digits, - or _");
            assert_eq!(e.value(), bad);
        }
        let g = AccountId::generate();
        assert!(
            g.as_str().starts_with("acct_") && g.as_str().len() == 21,
            "{g}"
        );
        assert_eq!(AccountId::parse(g.as_str()).unwrap(), g);
        assert_ne!(AccountId::generate(), g);
    }

    #[test]
    fn meta_ids() {
        assert_eq!(WabaId::parse("102290129340398").unwrap(), "102290129340398");
        assert_eq!(PhoneNumberId::parse(" 777000111 ").unwrap(), "777000111");
        assert_eq!(PageId::parse(&"9".repeat(30)).unwrap().as_str().len(), 30);
        assert!(PageId::parse(&"9".repeat(31)).is_err());
        assert_eq!(
            DatasetId::parse(&"1".repeat(32)).unwrap().as_str().len(),
            32
        );
        assert!(DatasetId::parse(&"1".repeat(33)).is_err());
        for bad in ["", " ", "12a", "-1", "+1", "1 2", "12/../x", "１２"] {
            assert!(WabaId::parse(bad).is_err(), "{bad:?}");
            assert!(PhoneNumberId::parse(bad).is_err(), "{bad:?}");
            assert!(PageId::parse(bad).is_err(), "{bad:?}");
            assert!(DatasetId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            WabaId::parse("x1").unwrap_err().to_string(),
            r#"waba_id "x1" must be digits"#
        );
        assert_eq!(
            PageId::parse("p").unwrap_err().to_string(),
            r#"page_id "p" must be digits"#
        );
        assert_eq!(
            PhoneNumberId::parse("5a")
                .unwrap_err()
                .in_field("phone_number_ids[]")
                .to_string(),
            r#"phone_number_ids[] "5a" must be digits"#
        );
        assert_eq!(
            DatasetId::parse("abc").unwrap_err().to_string(),
            "dataset_id must be a Meta id (digits)"
        );
        assert!(is_object_id("123") && !is_object_id(" 123") && !is_object_id(""));
        assert!(!is_object_id(&"1".repeat(31)));
    }

    #[test]
    fn ad_account_ids() {
        for raw in ["act_123", "123", " act_123 ", "\t123"] {
            let a = AdAccountId::parse(raw).unwrap();
            assert_eq!(a.as_act(), "act_123");
            assert_eq!(a.as_str(), "act_123");
            assert_eq!(a.digits(), "123");
            assert_eq!(a.to_string(), "act_123");
        }
        assert!(AdAccountId::parse(&"1".repeat(20)).is_ok());
        assert!(AdAccountId::parse(&format!("act_{}", "1".repeat(20))).is_ok());
        for bad in [
            "",
            "act_",
            "act_x",
            "act_act_1",
            "ACT_1",
            "act 1",
            "act_-1",
            "x1",
            &"1".repeat(21),
        ] {
            let e = AdAccountId::parse(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("ad_account_id {bad:?} is not an ad account id (act_<digits>)")
            );
        }
    }

    #[test]
    fn serde_goes_through_parse() {
        #[derive(Debug, Deserialize, Serialize)]
        struct B {
            account: AccountId,
            act: AdAccountId,
            page: Option<PageId>,
        }
        let b: B = serde_json::from_value(serde_json::json!(
            {"account": "acme", "act": "42", "page": "7"}
        ))
        .unwrap();
        assert_eq!(b.act.as_act(), "act_42");
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"account": "acme", "act": "act_42", "page": "7"})
        );
        let e = serde_json::from_value::<B>(serde_json::json!(
            {"account": "a b", "act": "42", "page": null}
        ))
        .unwrap_err();
        assert!(e.to_string().contains("account id: 1 to 64"), "{e}");
        assert!(serde_json::from_value::<PageId>(serde_json::json!("p")).is_err());
        assert!(serde_json::from_value::<PageId>(serde_json::json!(7)).is_err());
        assert_eq!("55".parse::<WabaId>().unwrap().into_string(), "55");
        assert_eq!(String::from(DatasetId::parse("9").unwrap()), "9");
    }
}
