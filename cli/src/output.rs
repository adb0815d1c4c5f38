//! stdout: the API's JSON, pretty (pipeable to jq), or with `--table` a table for list
//! answers and key/value lines for objects.

use serde_json::Value;
use std::io::Write;

const MAX_CELL: usize = 48;

/// Writes to stdout; a closed pipe (`ctwa conversions | head`) is not an error.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

pub fn render(v: &Value, table: bool) -> String {
    if !table {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        s.push('\n');
        return s;
    }
    match list_field(v) {
        Some((name, rows)) => {
            let mut out = render_table(name, rows);
            // The rest of the answer (paging cursors, counts) below the table.
            if let Value::Object(m) = v {
                // A field that repeats the list under another name (`ads` beside
                // `data`) is not shown twice.
                let rest: serde_json::Map<String, Value> = m
                    .iter()
                    .filter(|(k, v)| {
                        k.as_str() != name && v.as_array().is_none_or(|a| a.as_slice() != rows)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !rest.is_empty() {
                    out.push('\n');
                    out.push_str(&render_key_values(&Value::Object(rest)));
                }
            }
            out
        }
        None => render_key_values(v),
    }
}

/// The list an answer carries: a top-level array (of objects), or the one array field of
/// objects of an object (`data`, `events`, `conversations`, `results`).
fn list_field(v: &Value) -> Option<(&str, &[Value])> {
    match v {
        Value::Array(rows) => Some(("", rows)),
        Value::Object(m) => {
            let lists: Vec<(&String, &Vec<Value>)> = m
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::Array(a) if a.iter().all(Value::is_object) => Some((k, a)),
                    _ => None,
                })
                .collect();
            let preferred = ["data", "events", "conversations", "results"];
            preferred
                .iter()
                .find_map(|p| lists.iter().find(|(k, _)| k.as_str() == *p))
                .or_else(|| (lists.len() == 1 && m.len() <= 3).then(|| &lists[0]))
                .map(|(k, a)| (k.as_str(), a.as_slice()))
        }
        _ => None,
    }
}

fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|i| !i.is_object() && !i.is_array()) => {
            a.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        Value::Array(a) => format!("[{}]", a.len()),
        other => other.to_string(),
    };
    let s = s.replace(['\n', '\t'], " ");
    if s.chars().count() > MAX_CELL {
        let mut t: String = s.chars().take(MAX_CELL - 1).collect();
        t.push('…');
        t
    } else {
        s
    }
}

fn path<'a>(v: &'a Value, dotted: &str) -> &'a Value {
    dotted.split('.').fold(v, |acc, k| &acc[k])
}

/// The customer's id columns of conversation rows: WhatsApp's wa_id, Messenger's PSID,
/// Instagram's IGSID, those the rows carry (wa_id when none does).
fn customer_columns(rows: &[Value]) -> Vec<String> {
    let present: Vec<String> = ["customer.wa_id", "customer.psid", "customer.igsid"]
        .iter()
        .filter(|c| rows.iter().any(|r| !path(r, c).is_null()))
        .map(|c| c.to_string())
        .collect();
    if present.is_empty() {
        vec!["customer.wa_id".into()]
    } else {
        present
    }
}

/// Columns: a chosen set for the answers whose rows are large, else every top-level key
/// in the order first seen.
fn columns(name: &str, rows: &[Value]) -> Vec<String> {
    if name == "conversations" {
        let mut cols: Vec<String> = vec!["id".into(), "channel".into()];
        let ids = customer_columns(rows);
        // Messenger and Instagram send no name: no column of dashes for them.
        let names =
            ids == ["customer.wa_id"] || rows.iter().any(|r| !path(r, "customer.name").is_null());
        cols.extend(ids);
        if names {
            cols.push("customer.name".into());
        }
        cols.extend(
            [
                "metadata.ctwa_source_id",
                "metadata.ctwa_clicked_at",
                "clicks",
                "updated_at",
            ]
            .map(String::from),
        );
        return cols;
    }
    let fixed: &[&str] = match name {
        "events" => &[
            "timestamp",
            "event_id",
            "event_name",
            "status",
            "attempts",
            "events_received",
            "conversation_id",
            "fbtrace_id",
        ],
        "automatic_events" => &[
            "occurred_at",
            "event_name",
            "currency",
            "value",
            "value_raw",
            "ctwa_clid",
            "id",
        ],
        _ => &[],
    };
    if !fixed.is_empty() {
        return fixed.iter().map(|s| s.to_string()).collect();
    }
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        if let Value::Object(m) = r {
            for k in m.keys() {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    // Ids first, the way people scan them.
    cols.sort_by_key(|c| !matches!(c.as_str(), "id" | "ad_id" | "key_id" | "event_id"));
    cols
}

pub fn render_table(name: &str, rows: &[Value]) -> String {
    if rows.is_empty() {
        return format!("(no {})\n", if name.is_empty() { "items" } else { name });
    }
    let cols = columns(name, rows);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| match path(r, c) {
                    Value::Array(a) if c == "clicks" => a.len().to_string(),
                    v => cell(v),
                })
                .collect()
        })
        .collect();
    let headers: Vec<String> = cols.iter().map(|c| c.to_ascii_uppercase()).collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: &[String]| {
        let mut l = String::new();
        for (i, v) in vals.iter().enumerate() {
            if i + 1 == vals.len() {
                l.push_str(v);
            } else {
                l.push_str(v);
                l.push_str(&" ".repeat(widths[i] - v.chars().count() + 2));
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(&headers);
    for r in &cells {
        out.push_str(&line(r));
    }
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(a) if a.iter().any(|i| i.is_object() || i.is_array()) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        Value::Array(a) => out.push((
            prefix.to_string(),
            a.iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    o => o.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        )),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => out.push((prefix.to_string(), "-".into())),
        Value::Object(_) => out.push((prefix.to_string(), "{}".into())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

pub fn render_key_values(v: &Value) -> String {
    let mut pairs = Vec::new();
    flatten("", v, &mut pairs);
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, val) in pairs {
        if k.is_empty() {
            out.push_str(&val);
        } else {
            out.push_str(&k);
            out.push_str(&" ".repeat(width - k.chars().count() + 2));
            out.push_str(&val.replace('\n', " "));
        }
        out.push('\n');
    }
    out
}

/// `ctwa report --table`: the report as a marketer's sheet. Every figure is the API's
/// own text (money exactly as the JSON gives it, never re-rounded), numbers aligned
/// right, a total line under the rows, revenue in other currencies apart.
pub fn render_report(v: &Value) -> String {
    let currency = v["currency"].as_str().unwrap_or("");
    let level = v["level"].as_str().unwrap_or("ad");
    let mut out = format!(
        "{} {} to {} ({}), {} per {}\n\n",
        v["ad_account_id"].as_str().unwrap_or("-"),
        v["since"].as_str().unwrap_or("-"),
        v["until"].as_str().unwrap_or("-"),
        v["timezone"].as_str().unwrap_or("-"),
        currency,
        level
    );
    let names: &[(&str, &str, &str)] = match level {
        "campaign" => &[("Campaign", "campaign_name", "campaign_id")],
        "adset" => &[
            ("Campaign", "campaign_name", "campaign_id"),
            ("Ad set", "adset_name", "adset_id"),
        ],
        _ => &[
            ("Campaign", "campaign_name", "campaign_id"),
            ("Ad set", "adset_name", "adset_id"),
            ("Ad", "ad_name", "ad_id"),
        ],
    };
    let figures: [(&str, &str); 12] = [
        ("Spend", "spend"),
        ("Impr.", "impressions"),
        ("Clicks", "clicks"),
        ("w/o clid", "clicks_without_clid"),
        ("Chats", "conversations"),
        ("Leads", "leads"),
        ("Purchases", "purchases"),
        ("Revenue", "revenue"),
        ("Cost/chat", "cost_per_conversation"),
        ("Cost/lead", "cost_per_lead"),
        ("Cost/purch.", "cost_per_purchase"),
        ("ROAS", "roas"),
    ];
    let mut header: Vec<String> = names.iter().map(|(h, _, _)| h.to_string()).collect();
    header.extend(figures.iter().map(|(h, _)| h.to_string()));
    let row_cells = |r: &Value, label: Option<&str>| -> Vec<String> {
        let mut c: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, (_, name, id))| match label {
                Some(l) if i == 0 => l.to_string(),
                Some(_) => String::new(),
                None => {
                    let s = r[*name]
                        .as_str()
                        .or_else(|| r[*id].as_str())
                        .unwrap_or("-")
                        .to_string();
                    truncate(&s, 28)
                }
            })
            .collect();
        c.extend(figures.iter().map(|(_, k)| cell(&r[*k])));
        c
    };
    let mut rows: Vec<Vec<String>> = vec![header];
    for r in v["rows"].as_array().into_iter().flatten() {
        rows.push(row_cells(r, None));
    }
    rows.push(row_cells(&v["totals"], Some("Total")));
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |r: &[String]| -> String {
        r.iter()
            .enumerate()
            .map(|(i, c)| {
                if i < names.len() {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let n = rows.len();
    for (i, r) in rows.iter().enumerate() {
        if i == n - 1 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
        out.push_str(&line(r));
        out.push('\n');
    }
    for o in v["other_currencies"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nRevenue in {}: {} ({} purchases: counted in Purchases, not in Revenue or ROAS)",
            o["currency"].as_str().unwrap_or("?"),
            o["revenue"].as_str().unwrap_or("?"),
            o["purchases"]
        ));
    }
    if v["other_currencies"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        out.push('\n');
    }
    if v["truncated"] == Value::Bool(true) {
        out.push_str(
            "\nSome ads had more activity than a report reads: counts are a lower bound.\n",
        );
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_pretty() {
        assert_eq!(render(&json!({"a": 1}), false), "{\n  \"a\": 1\n}\n");
    }

    #[test]
    fn lists_become_tables_with_the_rest_below() {
        let v = json!({"data":[
            {"ad_id":"1","name":"Summer","status":"PAUSED","daily_budget":100000},
            {"ad_id":"22","name":"Winter sale with a very long name that goes on and on","status":"ACTIVE","daily_budget":5}
        ],"paging":{"after":null}});
        let t = render(&v, true);
        let lines: Vec<&str> = t.lines().collect();
        let name_col = format!("NAME{}STATUS", " ".repeat(MAX_CELL - 4 + 2));
        assert_eq!(lines[0], format!("AD_ID  DAILY_BUDGET  {name_col}"));
        assert!(
            lines[1].starts_with("1      100000        Summer   "),
            "{t}"
        );
        assert!(lines[1].ends_with("  PAUSED"), "{t}");
        assert!(lines[2].contains("…  ACTIVE"), "{t}");
        assert_eq!(lines[4], "paging.after  -");
    }

    #[test]
    fn a_list_under_two_names_is_shown_once() {
        let rows = json!([{"ad_id":"1","name":"Summer","status":"PAUSED","daily_budget":100000}]);
        let v = json!({"ads": rows, "data": rows, "paging": {"after": null}});
        let t = render(&v, true);
        assert!(t.starts_with("AD_ID "), "{t}");
        assert_eq!(t.matches("Summer").count(), 1, "{t}");
        assert!(t.ends_with("paging.after  -\n"), "{t}");
    }

    #[test]
    fn conversation_rows_pick_their_columns() {
        let v = json!({"conversations":[{"id":"c_1","channel":"cloud","customer":{"wa_id":"91987","name":"A"},
            "metadata":{"ctwa_source_id":"120","ctwa_clicked_at":"2026-01-01T00:00:00.000Z"},"clicks":[{},{}],"updated_at":"x"}]});
        let t = render(&v, true);
        assert!(t.starts_with("ID   CHANNEL  CUSTOMER.WA_ID"), "{t}");
        assert!(t.contains("c_1  cloud    91987"), "{t}");
        assert!(t.lines().nth(1).unwrap().contains("  2  "), "{t}");
        // A Messenger conversation: its PSID, no empty WhatsApp column.
        let v = json!({"conversations":[{"id":"c_2","channel":"messenger","customer":{"psid":"2000"},
            "metadata":{"ctwa_source_id":"120"},"clicks":[{}],"updated_at":"x"}]});
        let t = render(&v, true);
        assert!(
            t.starts_with("ID   CHANNEL    CUSTOMER.PSID  METADATA.CTWA_SOURCE_ID"),
            "{t}"
        );
        assert!(t.contains("c_2  messenger  2000"), "{t}");
        assert_eq!(
            render(&json!({"events": [], "next_cursor": null}), true),
            "(no events)\n\nnext_cursor  -\n"
        );
    }

    #[test]
    fn objects_become_key_values() {
        let v = json!({"success":true,"capi":{"dataset_id":"88","lead_event_enabled":false},"scopes":["a","b"]});
        assert_eq!(
            render(&v, true),
            "capi.dataset_id          88\ncapi.lead_event_enabled  false\nscopes                   a, b\nsuccess                  true\n"
        );
    }
}
