//! `ctwa-iam-report [USAGE.jsonl ...]`: the least-privilege report. Reads every
//! function's grants from template.yaml (its inline statements and what SAM adds for
//! its events) and the IAM gateway's usage files written by the test run
//! (`CTWA_IAM_USAGE_FILE`), and prints, per function, the granted actions that no test
//! exercised, then every AccessDenied the run saw. Exits 1 when any call was denied.

use ctwa_local::lambda::template;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;

fn main() -> ExitCode {
    let path = ctwa_local::lambda::workspace_dir().join("template.yaml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("iam-report: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let tpl = template::parse_raw(&text).and_then(|raw| {
        // Parameters without a default get a placeholder: only the grants are read.
        let given: HashMap<String, String> = raw["Parameters"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter(|(_, p)| p.get("Default").is_none())
            .filter_map(|(k, _)| k.as_str().map(|k| (k.to_string(), format!("<{k}>"))))
            .collect();
        let b = template::Bindings {
            stack_name: "stack".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            parameters: template::parameters(&raw, &given)?,
            placeholders: true,
            ..Default::default()
        };
        template::load(&raw, &b)
    });
    let tpl = match tpl {
        Ok(t) => t,
        Err(e) => {
            eprintln!("iam-report: {e}");
            return ExitCode::from(2);
        }
    };
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    // (function, action, statement index, resource index)
    let mut used_at: BTreeSet<(String, String, usize, usize)> = BTreeSet::new();
    let mut denied: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for file in std::env::args().skip(1) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let f = v["function"].as_str().unwrap_or("").to_string();
            let a = v["action"].as_str().unwrap_or("").to_ascii_lowercase();
            match v["kind"].as_str() {
                Some("allowed") => {
                    if let Some((si, ri)) = v["statement"].as_str().and_then(|s| s.split_once('/'))
                        && let (Ok(si), Ok(ri)) = (si.parse(), ri.parse())
                    {
                        used_at.insert((f.clone(), a.clone(), si, ri));
                    }
                    used.insert((f, a));
                }
                Some("denied") => {
                    *denied
                        .entry((f, a, v["resource"].as_str().unwrap_or("").to_string()))
                        .or_default() += 1;
                }
                _ => {}
            }
        }
    }
    let (mut granted_n, mut unused_n) = (0, 0);
    println!("least privilege: actions template.yaml grants that no test exercised");
    for f in &tpl.functions {
        let mut unused = Vec::new();
        let mut seen = BTreeSet::new();
        for s in f.statements.iter().filter(|s| s.allow) {
            // What SAM adds (the stream role's managed policy, the on-failure queue) is
            // not in the template's hands: named apart.
            let by_sam = s.sid.as_deref().is_some_and(|sid| sid.starts_with("SAM:"));
            for a in &s.actions {
                if !seen.insert(a.to_ascii_lowercase()) {
                    continue;
                }
                granted_n += 1;
                if !used.contains(&(f.logical_id.clone(), a.to_ascii_lowercase())) {
                    unused_n += 1;
                    unused.push(if by_sam {
                        format!(
                            "{a} (added by SAM: {})",
                            s.sid
                                .as_deref()
                                .unwrap_or_default()
                                .trim_start_matches("SAM:")
                        )
                    } else {
                        a.clone()
                    });
                }
            }
        }
        let line = if unused.is_empty() {
            "every granted action used".to_string()
        } else {
            unused.join(", ")
        };
        println!("  {:<28} {line}", f.logical_id);
    }
    println!(
        "  ({granted_n} actions granted, {} exercised, {unused_n} never exercised)",
        granted_n - unused_n
    );
    println!("least privilege: resources of exercised actions that no call reached");
    let mut none = true;
    for f in &tpl.functions {
        for (si, st) in f.statements.iter().enumerate().filter(|(_, s)| s.allow) {
            for a in &st.actions {
                let al = a.to_ascii_lowercase();
                if !used.contains(&(f.logical_id.clone(), al.clone())) {
                    continue;
                }
                for (ri, r) in st.resources.iter().enumerate() {
                    if !used_at.contains(&(f.logical_id.clone(), al.clone(), si, ri)) {
                        none = false;
                        println!("  {:<28} {a} on {r}", f.logical_id);
                    }
                }
            }
        }
    }
    if none {
        println!("  none");
    }
    if denied.is_empty() {
        println!("AccessDenied during the run: none");
        ExitCode::SUCCESS
    } else {
        println!("AccessDenied during the run:");
        for ((f, a, r), n) in &denied {
            println!("  {f}: {a} on {r} ({n}x)");
        }
        ExitCode::from(1)
    }
}
