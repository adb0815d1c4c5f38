#!/usr/bin/env python3
"""Regenerates the derived seed corpora under fuzz/seeds/ from events/webhooks/*.

Whole webhook bodies are not copied: scripts/fuzz.sh hands events/webhooks/cloud and
events/webhooks/sinch to libFuzzer directly as read-only seed directories. This writes
what has to be cut out of them:
  stored_message/  one stored item each: selector byte, payload, NUL, contact
                   (selector bit 0: Sinch, bit 1: automatic event; see the target)
  sinch_metadata/  the `message.metadata` text of each Sinch fixture
  pii_normalize/   messy phone and email spellings (from shared/src/capi/pii.rs tests)
Run: python3 fuzz/seeds/generate.py
"""
import json
import pathlib
import shutil

root = pathlib.Path(__file__).resolve().parents[2]
seeds = root / "fuzz" / "seeds"
fixtures = root / "events" / "webhooks"


def reset(name):
    d = seeds / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()


stored = reset("stored_message")
for f in sorted((fixtures / "cloud").glob("*.json")):
    body = json.loads(f.read_text())
    n = 0
    for entry in body.get("entry", []):
        for change in entry.get("changes", []):
            value = change.get("value") or {}
            contacts = value.get("contacts") or []
            for m in value.get("messages") or []:
                c = next((c for c in contacts if c.get("wa_id") == m.get("from")), None)
                if c is None and len(contacts) == 1:
                    c = contacts[0]
                data = b"\x00" + compact(m) + (b"\x00" + compact(c) if c else b"")
                (stored / f"{f.stem}-{n}").write_bytes(data)
                n += 1
            for e in value.get("automatic_events") or []:
                (stored / f"{f.stem}-{n}").write_bytes(b"\x02" + compact(e))
                n += 1
metadata = reset("sinch_metadata")
for f in sorted((fixtures / "sinch").glob("*.json")):
    body = json.loads(f.read_text())
    if "message" in body:
        (stored / f"sinch-{f.stem}").write_bytes(b"\x01" + compact(body))
    m = (body.get("message") or {}).get("metadata")
    if m is not None:
        text = m if isinstance(m, str) else json.dumps(m)
        (metadata / f.stem).write_text(text)
        if isinstance(m, str) and m.strip():
            try:
                (metadata / f"{f.stem}-object").write_bytes(compact(json.loads(m)))
            except ValueError:
                pass

pii = reset("pii_normalize")
for i, s in enumerate([
    "+91 98765-43210", "(+91) 98765 43210", "0091 98765 43210", "0 98765 43210",
    "+0091-98765-43210", "  +1 (650) 555-1234 ", "+00000", "12345", "+91 98765 4321x",
    "  John.Doe@Example.COM ", "a@b.c", "a@b.c\nanything", "a\n@b.c", "@b.c", "a@.c",
    "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
    "0123456789abcdef0123456789abcdef", "İSTANBUL@ÖRNEK.COM.TR", "ΣΊΣΥΦΟΣ@example.gr",
]):
    (pii / f"seed-{i:02}").write_text(s)
