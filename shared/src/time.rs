//! Time helpers: unix seconds/millis and RFC 3339 text, in one place.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// RFC 3339 with millisecond precision and a `Z`, e.g. `2026-04-27T09:18:44.991Z`.
pub fn rfc3339_millis(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp_millis())
}

/// Zero-padded so that string order is time order in sort keys.
pub fn sortable_millis(ms: i64) -> String {
    format!("{:015}", ms.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seed() {
        assert_eq!(
            rfc3339_millis(1_777_281_524_991),
            "2026-04-27T09:18:44.991Z"
        );
        assert_eq!(
            parse_rfc3339_millis("2020-10-01T12:10:53.991Z"),
            Some(1_601_554_253_991)
        );
        assert!(sortable_millis(9) < sortable_millis(10));
    }
}
