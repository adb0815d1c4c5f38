//! The one log setup for every function: call [`init`] first thing in `main`.
//!
//! # Why not `lambda_runtime::tracing::init_default_subscriber`
//!
//! That subscriber turns the level Lambda asks for (`AWS_LAMBDA_LOG_LEVEL`, set from the
//! function's `LoggingConfig` / the template's `LogLevel`) into a *global* default, so at
//! DEBUG or TRACE every crate in the process logs at that level. Third-party debug/trace
//! output carries data that must never reach CloudWatch:
//!
//! - `lambda_runtime` logs every raw invocation event at TRACE ("raw JSON event received
//!   from Lambda"): API keys in `Authorization` headers, OAuth codes in query strings, raw
//!   phone numbers, wa_ids and e-mail addresses in webhook bodies;
//! - the AWS SDK (`aws_smithy_*`, `aws_sdk_*`, `aws_config`), `hyper`, `h2`, `reqwest`,
//!   `rustls` and `tower` log requests and responses, headers and bodies, at DEBUG/TRACE:
//!   Secrets Manager answers hold the Meta access tokens and the app secret, Graph API
//!   requests carry tokens, credential providers log credentials material.
//!
//! So the requested level applies to **our code only** (targets under [`OWN_CRATES`]:
//! `ctwa_shared` and the ten function binaries); every other target is capped at INFO,
//! whatever is asked. Asking for WARN or ERROR still quiets everything.
//!
//! # Level source (same precedence as `lambda_runtime` today)
//!
//! `lambda_runtime` uses `AWS_LAMBDA_LOG_LEVEL` (else `RUST_LOG`, else INFO) as the
//! *default* directive of an `EnvFilter` that is also built from `RUST_LOG`; an
//! `EnvFilter` only uses its default when its own directives are empty, so in effect a
//! non-empty, valid `RUST_LOG` wins, then `AWS_LAMBDA_LOG_LEVEL`, then INFO. [`init`] keeps
//! that order (see [`resolve_requested`]). `RUST_LOG` may hold `EnvFilter` directives
//! (`debug,ctwa_shared::store=trace,hyper=warn`); they pass through [`filter_directives`]
//! which applies the same cap to any directive that is not about our own crates. A bare
//! word that is not a level (EnvFilter would read `foo` as `foo=trace`) is ignored, and a
//! request with nothing valid in it falls back to INFO. Lambda's `FATAL` maps to ERROR.
//!
//! # Format (unchanged)
//!
//! As `init_default_subscriber`: `tracing_subscriber::fmt` to stdout, no timestamps
//! (CloudWatch stamps each line), no target, JSON (one object per line, fields nested
//! under `"fields"`, i.e. not flattened, with `"span"` / `"spans"` so the runtime's
//! `requestId` span is kept) when `AWS_LAMBDA_LOG_FORMAT` is `JSON` (any case), the default
//! text format otherwise. ANSI colours are always off (CloudWatch shows escapes as junk).
//!
//! Note: `EnvFilter` targets match by prefix, so `api=trace` also matches a target
//! `api_foo`. A unit test checks that no crate in `Cargo.lock` collides with our names.

use lambda_http::tracing::subscriber::{
    self as tracing_subscriber, EnvFilter, filter::LevelFilter, fmt::MakeWriter,
    util::SubscriberInitExt,
};
use std::str::FromStr;
use tracing::Subscriber;

/// Crate names (tracing targets) whose events follow the requested level.
pub const OWN_CRATES: [&str; 12] = [
    "ctwa_shared",
    "webhook",
    "capture",
    "capture_backlog",
    "api",
    "connect",
    "token_refresh",
    "dataset",
    "conversions",
    "conversions_resend",
    "ads",
    "admin",
];

/// The most any other crate may log at, whatever is requested.
const OTHERS_CAP: LevelFilter = LevelFilter::INFO;

/// Installs the process-wide subscriber from the Lambda environment
/// (`AWS_LAMBDA_LOG_LEVEL`, `RUST_LOG`, `AWS_LAMBDA_LOG_FORMAT`) writing to stdout. If a
/// global subscriber is already set, that one is kept and a note goes to stderr.
pub fn init() {
    let env = |name| std::env::var(name).ok();
    let requested = resolve_requested(
        env("AWS_LAMBDA_LOG_LEVEL").as_deref(),
        env("RUST_LOG").as_deref(),
    );
    let json = env("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.trim().eq_ignore_ascii_case("json"));
    if let Err(e) = subscriber(&requested, json, std::io::stdout).try_init() {
        eprintln!("telemetry::init: a global tracing subscriber is already set: {e}");
    }
}

/// Picks the request string from the environment values, in `lambda_runtime`'s effective
/// order: a `RUST_LOG` with at least one valid directive, else `AWS_LAMBDA_LOG_LEVEL` if it
/// is a valid request, else `"INFO"`.
pub fn resolve_requested(aws_lambda_log_level: Option<&str>, rust_log: Option<&str>) -> String {
    [rust_log, aws_lambda_log_level]
        .into_iter()
        .flatten()
        .find(|r| parse_request(r).is_some())
        .unwrap_or("INFO")
        .to_owned()
}

/// Builds the subscriber [`init`] installs, for `requested` (see [`filter_directives`]),
/// JSON or text, writing to `writer`. Public so tests can scope it with
/// `tracing::subscriber::with_default`.
pub fn subscriber<W>(requested: &str, json: bool, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse_lossy(filter_directives(requested));
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        Box::new(builder.json().finish())
    } else {
        Box::new(builder.finish())
    }
}

/// The `EnvFilter` directive string for a requested level (`TRACE`, `debug`, ...) or a
/// `RUST_LOG`-style directive list: our crates get what is asked, every other target at
/// most INFO. Garbage (or an empty request) gives `"info"`.
///
/// `filter_directives("TRACE")` is `"info,ctwa_shared=trace,webhook=trace,…"`;
/// `filter_directives("warn")` is `"warn"`.
pub fn filter_directives(requested: &str) -> String {
    parse_request(requested).unwrap_or_else(|| level_name(OTHERS_CAP).to_owned())
}

/// `None` when `requested` holds no valid directive.
fn parse_request(requested: &str) -> Option<String> {
    let mut base: Option<LevelFilter> = None;
    let mut explicit: Vec<String> = Vec::new();
    let mut explicit_own: Vec<&str> = Vec::new();
    for token in requested
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let Some((lhs, level)) = token.rsplit_once('=') else {
            // A bare level; a bare target (`foo` = `foo=trace` in EnvFilter) is dropped.
            if let Some(level) = parse_level(token) {
                base = Some(level);
            }
            continue;
        };
        let (lhs, Some(level)) = (lhs.trim(), parse_level(level)) else {
            continue;
        };
        if is_target(lhs) {
            if is_own(lhs) {
                explicit_own.push(lhs);
                explicit.push(format!("{lhs}={}", level_name(level)));
            } else {
                explicit.push(format!("{lhs}={}", level_name(capped(level))));
            }
        } else if lhs.contains('[') {
            // Span / field filter (`target[span{field=value}]=level`, `[span]=level`): it
            // can enable events from any target inside that span, so it is capped.
            explicit.push(format!("{lhs}={}", level_name(capped(level))));
        }
    }
    let mut out: Vec<String> = Vec::new();
    if let Some(level) = base {
        out.push(level_name(capped(level)).to_owned());
        if level > OTHERS_CAP {
            out.extend(
                OWN_CRATES
                    .iter()
                    .filter(|c| !explicit_own.contains(c))
                    .map(|c| format!("{c}={}", level_name(level))),
            );
        }
    }
    out.extend(explicit);
    (!out.is_empty()).then(|| out.join(","))
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("fatal") {
        return Some(LevelFilter::ERROR);
    }
    LevelFilter::from_str(s).ok()
}

/// LevelFilter ordering: more verbose is greater (TRACE > INFO > OFF).
fn capped(level: LevelFilter) -> LevelFilter {
    level.min(OTHERS_CAP)
}

fn level_name(level: LevelFilter) -> &'static str {
    match level.into_level() {
        Some(tracing::Level::TRACE) => "trace",
        Some(tracing::Level::DEBUG) => "debug",
        Some(tracing::Level::INFO) => "info",
        Some(tracing::Level::WARN) => "warn",
        Some(tracing::Level::ERROR) => "error",
        None => "off",
    }
}

/// A plain target path: `ident(::ident)*`.
fn is_target(s: &str) -> bool {
    !s.is_empty()
        && s.split("::").all(|seg| {
            let mut chars = seg.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// `target` is one of ours or a module inside one of ours.
fn is_own(target: &str) -> bool {
    OWN_CRATES.iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    fn own(level: &str) -> String {
        OWN_CRATES.iter().map(|c| format!(",{c}={level}")).collect()
    }

    #[test]
    fn trace_and_debug_reach_our_crates_only() {
        for req in ["TRACE", "trace", "Trace", " trace "] {
            assert_eq!(
                filter_directives(req),
                format!("info{}", own("trace")),
                "{req}"
            );
        }
        assert_eq!(filter_directives("DEBUG"), format!("info{}", own("debug")));
        assert!(filter_directives("TRACE").contains("token_refresh=trace"));
        assert!(filter_directives("TRACE").contains("conversions_resend=trace"));
    }

    #[test]
    fn info_and_quieter_apply_to_everything() {
        assert_eq!(filter_directives("INFO"), "info");
        assert_eq!(filter_directives("WARN"), "warn");
        assert_eq!(filter_directives("warn"), "warn");
        assert_eq!(filter_directives("ERROR"), "error");
        assert_eq!(filter_directives("FATAL"), "error");
        assert_eq!(filter_directives("off"), "off");
    }

    #[test]
    fn garbage_falls_back_to_info() {
        for req in [
            "",
            " ",
            "verbose",
            "lambda_runtime",
            "x=loud",
            ",,",
            "=trace",
        ] {
            assert_eq!(filter_directives(req), "info", "{req:?}");
        }
    }

    #[test]
    fn rust_log_directives_are_capped_for_other_crates() {
        assert_eq!(
            filter_directives("lambda_runtime=trace,aws_smithy_runtime=debug,hyper=warn"),
            "lambda_runtime=info,aws_smithy_runtime=info,hyper=warn"
        );
        assert_eq!(
            filter_directives("warn,ctwa_shared::store=trace,webhook=debug"),
            "warn,ctwa_shared::store=trace,webhook=debug"
        );
        // An explicit own directive replaces the expansion for that crate.
        assert_eq!(
            filter_directives("ctwa_shared=warn,trace,reqwest=trace"),
            format!(
                "info{},ctwa_shared=warn,reqwest=info",
                own("trace").replace(",ctwa_shared=trace", "")
            )
        );
        // Span filters can enable any target: capped.
        assert_eq!(filter_directives("[request]=trace"), "[request]=info");
        // Look-alikes of our names are not ours.
        assert_eq!(filter_directives("apistos=trace"), "apistos=info");
        assert_eq!(
            filter_directives("ctwa_shared_x=trace"),
            "ctwa_shared_x=info"
        );
    }

    #[test]
    fn rust_log_wins_then_aws_level_then_info() {
        assert_eq!(resolve_requested(Some("TRACE"), Some("warn")), "warn");
        assert_eq!(resolve_requested(Some("TRACE"), None), "TRACE");
        assert_eq!(resolve_requested(Some("DEBUG"), Some("")), "DEBUG");
        assert_eq!(resolve_requested(Some("DEBUG"), Some("nonsense")), "DEBUG");
        assert_eq!(resolve_requested(None, Some("debug")), "debug");
        assert_eq!(resolve_requested(Some("loud"), None), "INFO");
        assert_eq!(resolve_requested(None, None), "INFO");
    }

    /// `EnvFilter` targets are prefixes: no dependency may start with one of our names.
    #[test]
    fn no_locked_crate_shadows_our_targets() {
        let lock = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
        let Ok(lock) = std::fs::read_to_string(lock) else {
            return;
        };
        for line in lock.lines() {
            let Some(name) = line.strip_prefix("name = \"") else {
                continue;
            };
            let name = name.trim_end_matches('"').replace('-', "_");
            if OWN_CRATES.contains(&name.as_str()) {
                continue;
            }
            for c in OWN_CRATES {
                assert!(
                    !name.starts_with(c),
                    "crate `{name}` would get our log level through the `{c}` directive"
                );
            }
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn capture(requested: &str, json: bool) -> String {
        let out = Capture::default();
        let sub = subscriber(requested, json, out.clone());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(target: "lambda_runtime::layers::trace", "Lambda runtime invoke", requestId = "req-1");
            let _g = span.enter();
            tracing::trace!(target: "lambda_runtime", body = "Bearer SECRET-API-KEY", "raw JSON event received from Lambda");
            tracing::debug!(target: "lambda_runtime", "runtime-debug");
            tracing::trace!(target: "aws_smithy_runtime::client", "sdk-trace");
            tracing::debug!(target: "hyper::proto", "hyper-debug");
            tracing::info!(target: "lambda_runtime", "runtime-info");
            tracing::trace!(target: "ctwa_shared::x", "ours-trace");
            tracing::debug!(target: "webhook", "bin-debug");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn trace_subscriber_drops_runtime_debug_and_keeps_ours() {
        for json in [false, true] {
            let out = capture("TRACE", json);
            for dropped in [
                "SECRET-API-KEY",
                "raw JSON event",
                "runtime-debug",
                "sdk-trace",
                "hyper-debug",
            ] {
                assert!(
                    !out.contains(dropped),
                    "json={json}: {dropped} leaked:\n{out}"
                );
            }
            for kept in ["runtime-info", "ours-trace", "bin-debug"] {
                assert!(out.contains(kept), "json={json}: {kept} missing:\n{out}");
            }
            assert!(!out.contains('\x1b'), "json={json}: ANSI escapes:\n{out}");
        }
    }

    #[test]
    fn warn_subscriber_quiets_our_crates_too() {
        assert_eq!(capture("WARN", false), "");
    }

    #[test]
    fn json_is_one_object_per_line_with_runtime_layout() {
        let out = capture("TRACE", true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(out.ends_with('\n'));
        for line in lines {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("not an object: {line}"));
            assert!(obj["level"].is_string(), "{line}");
            assert!(
                obj["fields"]["message"].is_string(),
                "fields not nested: {line}"
            );
            assert!(!obj.contains_key("target"), "{line}");
            assert!(!obj.contains_key("timestamp"), "{line}");
            assert_eq!(obj["span"]["requestId"], "req-1", "{line}");
        }
    }
}
