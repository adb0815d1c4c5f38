//! Phone and email hashes equal those of Meta's official Python business SDK
//! (`facebook_business`, installed by scripts/deps.sh) on a battery of messy inputs.

use ctwa_shared::capi::pii::{hash_email, hash_phone};
use std::process::Command;

const PHONES: &[&str] = &[
    "+91 98765-43210",
    "919876543210",
    "(+91) 98765 43210",
    "0091 98765 43210",
    "+0091-98765-43210",
    "+1 (650) 555-1234",
    "  16505551234  ",
    "001-650-555-1234",
    "+44 20 7946 0958",
    "0044 (0)20 7946 0958",
    "+55 11 91234-5678",
    "+49-30-1234567",
    "1 650 555 1234",
    "+971 50 123 4567",
    "\t+62 812-3456-7890\n",
    "0 98765 43210",
    "12345",
    "+0000",
    "phone",
    "",
    "98765 4321x",
    "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
];

const EMAILS: &[&str] = &[
    "John.Doe@Example.COM",
    "  buyer@shop.in ",
    "UPPER@CASE.ORG",
    "a@b.c",
    "first.last+tag@sub.domain.co.uk",
    "no-at-sign.com",
    "@nolocal.com",
    "x@nodot",
    "x@.c",
    "",
    "a@b.c\nrest",
    "D41D8CD98F00B204E9800998ECF8427E",
];

fn python() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    format!("{root}/.ctwa/tools/venv/bin/python")
}

/// The SDK's `Normalize.normalize_field` for each input: the hash, or "ERROR".
fn sdk_hashes(field: &str, inputs: &[&str]) -> Vec<String> {
    let script = r#"
import json, sys
from facebook_business.adobjects.serverside.normalize import Normalize
field, values = sys.argv[1], json.loads(sys.stdin.read())
out = []
for v in values:
    try:
        h = Normalize.normalize_field(field, v)
        out.append(h if h is not None else "ERROR")
    except Exception:
        out.append("ERROR")
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script, field])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the venv python with facebook_business: run scripts/test.sh (scripts/deps.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(inputs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn phone_hashes_match_the_official_sdk() {
    let sdk = sdk_hashes("ph", PHONES);
    for (input, want) in PHONES.iter().zip(sdk) {
        let ours = hash_phone(input).unwrap_or_else(|_| "ERROR".into());
        assert_eq!(ours, want, "phone {input:?}");
    }
}

#[test]
fn email_hashes_match_the_official_sdk() {
    let sdk = sdk_hashes("em", EMAILS);
    for (input, want) in EMAILS.iter().zip(sdk) {
        let ours = hash_email(input).unwrap_or_else(|_| "ERROR".into());
        assert_eq!(ours, want, "email {input:?}");
    }
}
