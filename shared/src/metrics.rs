//! CloudWatch metrics as Embedded Metric Format (EMF) lines: the one place they are
//! made. A function writes one JSON line to stdout per invocation (or per run); CloudWatch
//! Logs turns the named fields into metrics, with no API call and no extra IAM.
//!
//! Namespace `ctwa`. Two kinds of lines:
//! - **per function** ([`MetricLine::for_function`]): dimension `Function` = the
//!   function's own name (`AWS_LAMBDA_FUNCTION_NAME`, what `!Ref <Function>` gives in
//!   the template), so two stacks in one account never mix: the HTTP answers by status
//!   class (`Requests`, `Http2xx`, `Http4xx`, `Http5xx`), capture's records
//!   (`RecordsCaptured`, `RecordsFailed`), the resend backlog;
//! - **deployment-wide** ([`MetricLine::new`], no dimension): the older report metrics
//!   (`ConversionsFailed`, `TokenRefreshFailures`, `AdCleanupIncomplete`, ...).
//!
//! The alarms in `template.yaml` read exactly these names; `tests/faults.rs` provokes
//! an outage and finds the line the webhook's 5xx alarm reads.

use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "ctwa";
/// The dimension of per-function metrics.
pub const FUNCTION_DIMENSION: &str = "Function";

/// Every metric the code emits: the alarms in `template.yaml` may read these and no
/// other (`tests/aws_parity.rs` checks every alarm of namespace `ctwa` against this list
/// and its dimension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// HTTP functions, per answer.
    Requests,
    Http2xx,
    Http4xx,
    Http5xx,
    /// Capture, per stream batch: records in it, and those reported back to the stream
    /// (a failed record and the later records of its customer, held so they stay in
    /// order; retried by the stream, dead-lettered when they keep failing).
    Records,
    RecordsFailed,
    /// The resend job's run.
    ConversionsResent,
    ConversionsFailed,
    ConversionsPending,
    ResendBacklogAgeSeconds,
    /// The token refresh's run.
    TokenRefreshFailures,
    TokensRefreshed,
    TokensBroken,
    /// A one-call ad creation that could not clean up after itself.
    AdCleanupIncomplete,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::Requests,
        Metric::Http2xx,
        Metric::Http4xx,
        Metric::Http5xx,
        Metric::Records,
        Metric::RecordsFailed,
        Metric::ConversionsResent,
        Metric::ConversionsFailed,
        Metric::ConversionsPending,
        Metric::ResendBacklogAgeSeconds,
        Metric::TokenRefreshFailures,
        Metric::TokensRefreshed,
        Metric::TokensBroken,
        Metric::AdCleanupIncomplete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "Requests",
            Metric::Http2xx => "Http2xx",
            Metric::Http4xx => "Http4xx",
            Metric::Http5xx => "Http5xx",
            Metric::Records => "Records",
            Metric::RecordsFailed => "RecordsFailed",
            Metric::ConversionsResent => "ConversionsResent",
            Metric::ConversionsFailed => "ConversionsFailed",
            Metric::ConversionsPending => "ConversionsPending",
            Metric::ResendBacklogAgeSeconds => "ResendBacklogAgeSeconds",
            Metric::TokenRefreshFailures => "TokenRefreshFailures",
            Metric::TokensRefreshed => "TokensRefreshed",
            Metric::TokensBroken => "TokensBroken",
            Metric::AdCleanupIncomplete => "AdCleanupIncomplete",
        }
    }

    /// Emitted with the `Function` dimension (else with none).
    pub fn per_function(self) -> bool {
        matches!(
            self,
            Metric::Requests
                | Metric::Http2xx
                | Metric::Http4xx
                | Metric::Http5xx
                | Metric::Records
                | Metric::RecordsFailed
        )
    }
}

/// EMF units we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF line being built: metrics, dimensions and extra (non-metric) fields.
#[derive(Debug, Clone, Default)]
pub struct MetricLine {
    metrics: Vec<(Metric, f64, Unit)>,
    dimensions: Vec<(&'static str, String)>,
    fields: Map<String, Value>,
}

impl MetricLine {
    /// A deployment-wide line (no dimension).
    pub fn new() -> Self {
        Self::default()
    }

    /// A line of this function's metrics (dimension `Function`): its Lambda name, or
    /// `fallback` outside Lambda.
    pub fn for_function(fallback: &str) -> Self {
        let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| fallback.to_string());
        Self::default().dimension(FUNCTION_DIMENSION, name)
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    pub fn count(self, name: Metric, value: u64) -> Self {
        self.metric(name, value as f64, Unit::Count)
    }

    pub fn metric(mut self, name: Metric, value: f64, unit: Unit) -> Self {
        self.metrics.push((name, value, unit));
        self
    }

    /// A field kept in the log line for people (a report), not a metric.
    pub fn field(mut self, name: &str, value: impl serde::Serialize) -> Self {
        self.fields.insert(
            name.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// The line (one JSON object) stamped `now_ms`.
    pub fn to_line(&self, now_ms: i64) -> String {
        let dims: Vec<&str> = self.dimensions.iter().map(|(n, _)| *n).collect();
        let mut root = self.fields.clone();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dims],
                    "Metrics": self.metrics.iter().map(|(n, _, u)| json!({"Name": n.name(), "Unit": u.as_str()})).collect::<Vec<_>>(),
                }]
            }),
        );
        for (n, v) in &self.dimensions {
            root.insert((*n).to_string(), Value::String(v.clone()));
        }
        for (n, v, _) in &self.metrics {
            let value = if v.fract() == 0.0 && v.abs() < 9.0e15 {
                json!(*v as i64)
            } else {
                json!(v)
            };
            root.insert(n.name().to_string(), value);
        }
        Value::Object(root).to_string()
    }

    /// Writes the line to stdout, where Lambda hands it to CloudWatch Logs. Not through
    /// `tracing`: its JSON format nests fields, and EMF wants the object as the line.
    pub fn emit(&self) {
        println!("{}", self.to_line(crate::time::now_millis()));
    }
}

/// An HTTP function's answer as metrics: `Requests` and the status class it falls in.
pub fn http_answer(function: &str, status: u16) -> MetricLine {
    let class = |c: u16| u64::from(status / 100 == c);
    MetricLine::for_function(function)
        .count(Metric::Requests, 1)
        .count(Metric::Http2xx, class(2))
        .count(Metric::Http4xx, class(4))
        .count(Metric::Http5xx, class(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_emf_with_its_dimension_and_values() {
        let line = MetricLine::new()
            .dimension(FUNCTION_DIMENSION, "stack-WebhookFunction")
            .count(Metric::Http5xx, 1)
            .metric(Metric::ResendBacklogAgeSeconds, 1.5, Unit::Seconds)
            .field("report", json!({"n": 2}))
            .to_line(7);
        let v: Value = serde_json::from_str(&line).unwrap();
        let meta = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 7);
        assert_eq!(meta["Namespace"], "ctwa");
        assert_eq!(meta["Dimensions"], json!([["Function"]]));
        assert_eq!(
            meta["Metrics"],
            json!([{"Name": "Http5xx", "Unit": "Count"}, {"Name": "ResendBacklogAgeSeconds", "Unit": "Seconds"}])
        );
        assert_eq!(v["Function"], "stack-WebhookFunction");
        assert_eq!(v["Http5xx"], 1);
        assert_eq!(v["ResendBacklogAgeSeconds"], 1.5);
        assert_eq!(v["report"]["n"], 2);
    }

    #[test]
    fn a_deployment_wide_line_has_the_empty_dimension_set() {
        let v: Value =
            serde_json::from_str(&MetricLine::new().count(Metric::Records, 0).to_line(1)).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    }

    #[test]
    fn an_answer_counts_in_its_status_class_only() {
        for (status, classes) in [(200, [1, 0, 0]), (404, [0, 1, 0]), (503, [0, 0, 1])] {
            let v: Value = serde_json::from_str(&http_answer("f", status).to_line(0)).unwrap();
            assert_eq!(
                [&v["Http2xx"], &v["Http4xx"], &v["Http5xx"]],
                classes.map(|c| json!(c)).each_ref(),
                "{status}"
            );
            assert_eq!(v["Requests"], 1);
        }
    }
}
