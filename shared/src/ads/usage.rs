//! Meta's rate-limit headers, read on every Marketing API answer, and the governor that
//! backs off before Meta throttles (meta-api.md section 7).
//!
//! `X-Business-Use-Case-Usage` is `{"<business or ad account id>": [{"type",
//! "call_count", "total_cputime", "total_time", "estimated_time_to_regain_access"}]}`
//! (percentages of the budget, minutes to wait); `X-Ad-Account-Usage` is
//! `{"acc_id_util_pct", "reset_time_duration"}`; `X-App-Usage` is `{"call_count",
//! "total_cputime", "total_time"}`. The governor keeps, per ad account, the highest
//! use and any wait Meta announced, and before each call says: go, slow down a little,
//! or do not call now (the caller answers 429 with `Retry-After`). The state lives in
//! the warm Lambda instance: every instance learns the usage from its own answers.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one answer said about the budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The highest percentage of any budget in use (0-100+).
    pub pct: u64,
    /// Seconds until Meta lets calls through again (0: not blocked).
    pub regain_secs: u64,
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f.max(0.0) as u64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn merge(into: &mut Usage, obj: &Value) {
    for k in [
        "call_count",
        "total_cputime",
        "total_time",
        "acc_id_util_pct",
    ] {
        into.pct = into.pct.max(num(&obj[k]));
    }
    // Business use case: minutes; ad account: `reset_time_duration` in seconds.
    into.regain_secs = into
        .regain_secs
        .max(num(&obj["estimated_time_to_regain_access"]) * 60)
        .max(if num(&obj["acc_id_util_pct"]) >= 100 {
            num(&obj["reset_time_duration"])
        } else {
            0
        });
}

/// The governor's key for the app-wide budget (`X-App-Usage`, code 4).
pub const APP_KEY: &str = "_app";

/// Reads the ad account and business use case usage headers of one answer;
/// unreadable headers count as no information.
pub fn parse(headers: &[(&'static str, String)]) -> Option<Usage> {
    parse_some(headers, |n| n != "x-app-usage")
}

/// Reads `X-App-Usage` (the app's budget, shared by every ad account).
pub fn parse_app(headers: &[(&'static str, String)]) -> Option<Usage> {
    parse_some(headers, |n| n == "x-app-usage")
}

fn parse_some(headers: &[(&'static str, String)], take: impl Fn(&str) -> bool) -> Option<Usage> {
    let mut u = Usage::default();
    let mut seen = false;
    for (name, raw) in headers.iter().filter(|(n, _)| take(n)) {
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            continue;
        };
        seen = true;
        if *name == "x-business-use-case-usage" {
            if let Value::Object(m) = &v {
                for entries in m.values() {
                    for e in entries.as_array().into_iter().flatten() {
                        merge(&mut u, e);
                    }
                }
            }
        } else {
            merge(&mut u, &v);
        }
    }
    seen.then_some(u)
}

/// The governor's answer before a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Near the limit: wait this long first, then call.
    SlowDown(Duration),
    /// Meta said to wait (or the budget is spent): do not call for this long.
    Blocked(Duration),
}

/// Above this share of the budget, calls are spaced out.
pub const SLOW_DOWN_FROM_PCT: u64 = 75;
/// The longest pause before a call (the HTTP API answers within API Gateway's 30 s).
pub const MAX_PAUSE: Duration = Duration::from_millis(2_000);
/// Usage older than this says nothing about now.
const STALE_AFTER: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct Governor {
    seen: Mutex<HashMap<String, (Usage, Instant)>>,
}

impl Governor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers what an answer for `key` (an ad account) said.
    pub fn record(&self, key: &str, usage: Usage) {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(key.to_string(), (usage, Instant::now()));
    }

    /// A rate-limit refusal (codes 4, 17, 32, 613, 80000-80014) without a usage header:
    /// block for `secs`.
    pub fn block(&self, key: &str, secs: u64) {
        self.record(
            key,
            Usage {
                pct: 100,
                regain_secs: secs,
            },
        );
    }

    pub fn admit(&self, key: &str) -> Admit {
        let m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Some((u, at)) = m.get(key) else {
            return Admit::Go;
        };
        let age = at.elapsed();
        if u.regain_secs > 0 {
            let until = Duration::from_secs(u.regain_secs);
            if age < until {
                return Admit::Blocked(until - age);
            }
            return Admit::Go;
        }
        if age > STALE_AFTER || u.pct < SLOW_DOWN_FROM_PCT {
            return Admit::Go;
        }
        if u.pct >= 100 {
            // Spent without a wait announced: one minute, Meta's smallest window.
            let until = Duration::from_secs(60);
            return if age < until {
                Admit::Blocked(until - age)
            } else {
                Admit::Go
            };
        }
        // 75% -> a short pause, growing to MAX_PAUSE at 100%.
        let share = (u.pct - SLOW_DOWN_FROM_PCT) as u32;
        let span = (100 - SLOW_DOWN_FROM_PCT) as u32;
        Admit::SlowDown(MAX_PAUSE * share / span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buc(pct: u64, regain_min: u64) -> Vec<(&'static str, String)> {
        vec![(
            "x-business-use-case-usage",
            format!(
                r#"{{"123":[{{"type":"ads_management","call_count":{pct},"total_cputime":1,"total_time":2,"estimated_time_to_regain_access":{regain_min}}}]}}"#
            ),
        )]
    }

    #[test]
    fn reads_meta_headers() {
        assert_eq!(
            parse(&buc(42, 0)),
            Some(Usage {
                pct: 42,
                regain_secs: 0
            })
        );
        assert_eq!(parse(&buc(100, 5)).unwrap().regain_secs, 300);
        let acct = vec![(
            "x-ad-account-usage",
            r#"{"acc_id_util_pct":100,"reset_time_duration":40}"#.to_string(),
        )];
        assert_eq!(
            parse(&acct),
            Some(Usage {
                pct: 100,
                regain_secs: 40
            })
        );
        let app = vec![(
            "x-app-usage",
            r#"{"call_count":12,"total_cputime":80,"total_time":3}"#.to_string(),
        )];
        assert_eq!(parse_app(&app).unwrap().pct, 80);
        assert_eq!(parse(&app), None, "the app's budget is kept apart");
        assert_eq!(parse(&[("x-app-usage", "not json".into())]), None);
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn backs_off_before_meta_throttles() {
        let g = Governor::new();
        assert_eq!(g.admit("act_1"), Admit::Go);
        g.record("act_1", parse(&buc(50, 0)).unwrap());
        assert_eq!(g.admit("act_1"), Admit::Go);
        g.record("act_1", parse(&buc(90, 0)).unwrap());
        match g.admit("act_1") {
            Admit::SlowDown(d) => assert!(d > Duration::ZERO && d <= MAX_PAUSE, "{d:?}"),
            other => panic!("{other:?}"),
        }
        g.record("act_1", parse(&buc(100, 5)).unwrap());
        match g.admit("act_1") {
            Admit::Blocked(d) => assert!(d > Duration::from_secs(290), "{d:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(g.admit("act_2"), Admit::Go, "per ad account");
        g.block("act_2", 30);
        assert!(matches!(g.admit("act_2"), Admit::Blocked(_)));
    }
}
