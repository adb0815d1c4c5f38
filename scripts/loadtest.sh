#!/usr/bin/env bash
# Load test with accounting: 100,000 signed Meta webhooks by default, of the three
# channels (60% WhatsApp Cloud API, 20% Messenger `object: "page"`, 20% Instagram
# `object: "instagram"`; 10% exact re-sends, 30% of the messages with an ad's referral;
# text / image / button / interactive messages and status updates on WhatsApp, text /
# attachment / quick-reply messages, several events per delivery, echoes and receipts on
# Messenger and Instagram; several customers per account, several accounts each with its
# own phone number id, Facebook Page and Instagram account), posted concurrently over
# loopback to a release build of the local stack on fresh tables, as fast as it answers.
# Then the tables are read back, every channel by the same rules: every unique message
# in the inbox once (echoes and receipts never), every referral a click once on its own
# customer's conversation, every conversation's first touch its earliest click. Prints
# the report (rate, lost, duplicated, per channel) and exits 1 unless nothing was lost
# or duplicated. Bounded in time: the run stops itself at --timeout (and is killed 90 s
# after that at the latest).
# Needs nothing running: starts its own DynamoDB Local, emulator and ctwa-local.
# Usage: scripts/loadtest.sh [--webhooks N] [--concurrency C] [--accounts A]
#                            [--customers K] [--messenger-share S] [--instagram-share S]
#                            [--timeout SECONDS] [--seed N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
webhooks=100000; concurrency=32; accounts=5; customers=400; timeout_s=900; seed=""
messenger_share=0.2; instagram_share=0.2
usage="usage: scripts/loadtest.sh [--webhooks N] [--concurrency C] [--accounts A] [--customers K] [--messenger-share S] [--instagram-share S] [--timeout SECONDS] [--seed N]"
while [ $# -gt 0 ]; do
  case "$1" in
    --webhooks) webhooks="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --accounts) accounts="$2"; shift 2 ;;
    --customers) customers="$2"; shift 2 ;;
    --messenger-share) messenger_share="$2"; shift 2 ;;
    --instagram-share) instagram_share="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
case "$webhooks$concurrency$accounts$customers$timeout_s$seed" in
  *[!0-9]*) echo "$usage (numbers only)" >&2; exit 2 ;;
esac
for share in "$messenger_share" "$instagram_share"; do
  [[ "$share" =~ ^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$ ]] || { echo "$usage (shares from 0 to 1)" >&2; exit 2; }
done
out="$root/.ctwa/loadtest"; mkdir -p "$out"

echo "== release build (ctwa-local, ctwa-loadtest)" >&2
scripts/build-functions.sh --quiet
cargo build -q --release --locked -p ctwa-local --bin ctwa-local --bin ctwa-loadtest
case "${CARGO_TARGET_DIR:-target}" in
  /*) bin="${CARGO_TARGET_DIR:-target}/release" ;;
  *) bin="$root/${CARGO_TARGET_DIR:-target}/release" ;;
esac

# A fresh DynamoDB Local (in memory; 1 GiB of heap for 100,000 inbox items and their
# stream) and Secrets Manager emulator for this run only, on free ports, stopped at the end.
fresh_heap=1g
# shellcheck source=scripts/fresh-services.sh
. scripts/fresh-services.sh

port=$(free_port)
suffix="$(date +%s)-$$"
export INBOX_TABLE="loadtest-inbox-$suffix" DATA_TABLE="loadtest-data-$suffix" WEBHOOK_SECRET_ID="loadtest/webhook-$suffix"
rm -f "$out/local.json"
CTWA_LOCAL_PORT=$port CTWA_STATE_DIR="$out" "$bin/ctwa-local" >"$out/local.log" 2>&1 &
local_pid=$!; pids+=("$local_pid")
for _ in $(seq 1 150); do
  [ -f "$out/local.json" ] && grep -q "127.0.0.1:$port" "$out/local.json" && break
  kill -0 "$local_pid" 2>/dev/null || { echo "ctwa-local exited; log: $out/local.log" >&2; tail -20 "$out/local.log" >&2; exit 1; }
  sleep 0.2
done
grep -q "127.0.0.1:$port" "$out/local.json" || { echo "ctwa-local did not start in 30 s; log: $out/local.log" >&2; exit 1; }

echo "== $webhooks webhooks ($messenger_share Messenger, $instagram_share Instagram, the rest WhatsApp), $concurrency concurrent, $accounts accounts x $customers customers (stops by itself within ${timeout_s} s)" >&2
args=(--state "$out/local.json" --webhooks "$webhooks" --concurrency "$concurrency" --accounts "$accounts"
      --customers "$customers" --messenger-share "$messenger_share" --instagram-share "$instagram_share"
      --timeout "$timeout_s")
[ -n "$seed" ] && args+=(--seed "$seed")
status=0
timeout --kill-after=10 $(( timeout_s + 90 )) "$bin/ctwa-loadtest" "${args[@]}" >"$out/report.json" || status=$?
if [ ! -s "$out/report.json" ]; then
  echo "loadtest: no report (exit $status); stack log: $out/local.log" >&2
  exit 1
fi
python3 - "$out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
w, p, a = r["workload"], r["post"], r["accounting"]
print(f"webhooks: {w['sent']} posted ({w['unique']} unique + {w['duplicate_resends']} exact re-sends; "
      f"{w['status_updates']} without a message: status updates, echoes, receipts), {w['messages']} messages, {w['referrals']} referrals "
      f"({w['referrals_without_clid']} without ctwa_clid), {w['accounts']} accounts, {w['conversations']} conversations")
print(f"rate: {p['per_second']}/s over {p['seconds']} s (p50 {p['latency_ms']['p50']} ms, p99 {p['latency_ms']['p99']} ms); "
      f"5xx {p['http_5xx']}, 4xx {p['http_4xx']}, transport errors {p['transport_errors']}, gave up {p['gave_up']}")
print(f"capture drained {r['capture_drain_seconds']} s after the last post")
print(f"tables: {a['inbox_items']} inbox items, {a['clicks']} clicks, {a['conversations']} conversations")
print(f"lost: {r['lost']} {a['lost']}")
print(f"duplicated: {r['duplicated']} {a['duplicated']}")
print(f"first touch not the earliest click: {r['first_touch_wrong']}; clicks misfiled: {a['misfiled_clicks']}")
for name in ("whatsapp", "messenger", "instagram"):
    c = r["channels"][name]
    print(f"  {name}: {c['messages']} messages, {c['referrals']} referrals -> {c['inbox_items']} inbox items, "
          f"{c['clicks']} clicks, {c['conversations']}/{c['conversations_expected']} conversations; lost {c['lost']}, "
          f"duplicated {c['duplicated']}, first touch wrong {c['first_touch_wrong']}, misfiled {c['misfiled_clicks']}, "
          f"attribution wrong {c['attribution_wrong']} of {c['attribution_checks']}")
for e in a["examples"]:
    print(f"  e.g. {e}")
print("OK" if r["ok"] else "FAILED")
PY
echo "report: $out/report.json" >&2
exit "$status"
