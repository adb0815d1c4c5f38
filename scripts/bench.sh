#!/usr/bin/env bash
# Benchmarks (figures, not pass/fail): prints a Markdown table with the machine it ran on.
#   - CPU per webhook (verify + parse + extract) for ~1 KB and ~100 KB bodies, beside the
#     bare HMAC-SHA256 + serde_json::Value parse of the same bytes (criterion)
#   - release binary size of each function: x86_64 (host) and arm64 (cargo-lambda, as
#     `sam build` makes it; skipped with a note when cargo-lambda cannot be installed)
#   - cold start of each bootstrap: process start to first answered invocation, with the
#     real runtime client against a local Runtime API (ctwa-coldstart), its peak RSS,
#     each doing real I/O against DynamoDB Local / the Secrets Manager emulator
#   - peak memory of each function under load: one process answering --invocations
#     realistic events in a row (new messages / stream batches of 100 records / real API
#     keys), its VmHWM at the end (target < 32 MB)
#   - throughput of the local stack over loopback (ctwa-load): conversions, and signed
#     webhooks sustained (--sustained posts) as a ratio to the raw conditional PutItem
#     throughput of the same DynamoDB Local (same items, same concurrency, same condition),
#     measured in the same run (target >= 0.7)
#   - a 1,000-event batch (POST /v1/conversions/batch) through the local stack with the
#     Graph simulator answering after 300 ms, timed end to end by the client, beside the
#     conversions function's Timeout read from template.yaml (ctwa-load batch)
#   - GET /v1/reports/ads for a seeded month (3 campaigns, 10 ads, 2,000 clicks, 300
#     leads, 80 purchases, Meta's daily spend at the simulator): once cold (Meta asked,
#     the days cached), then 20 times warm, median / p95 / max (ctwa-load report; target
#     warm < 1 s)
# It starts its own DynamoDB Local and Secrets Manager emulator (fresh, on free ports) and
# a release ctwa-local, and stops them at the end.
# Usage: scripts/bench.sh [--runs N] [--no-arm64] [--invocations N] [--sustained N] [--only-batch] [--only-report]
#   --only-batch: the release builds and the 1,000-event batch row only
#   --only-report: the release builds and the report rows only
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=20; arm64=1; invocations=2000; sustained=20000; only_batch=0; only_report=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --no-arm64) arm64=0; shift ;;
    --invocations) invocations="$2"; shift 2 ;;
    --sustained) sustained="$2"; shift 2 ;;
    --only-batch) only_batch=1; arm64=0; shift ;;
    --only-report) only_report=1; arm64=0; shift ;;
    *) echo "usage: scripts/bench.sh [--runs N] [--no-arm64] [--invocations N] [--sustained N] [--only-batch] [--only-report]" >&2; exit 2 ;;
  esac
done
case "$runs$invocations$sustained" in *[!0-9]*) echo "--runs, --invocations and --sustained take numbers" >&2; exit 2 ;; esac
out="$root/.ctwa/bench"; mkdir -p "$out"

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
machine="$(uname -m), $(nproc) cores, ${cpu:-unknown CPU}, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), rustc $(rustc --version | cut -d' ' -f2)"
date_utc="$(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $machine" >&2

if [ "$only_batch$only_report" = 00 ]; then
  echo "== criterion (cargo bench -p ctwa-shared --bench webhook)" >&2
  cargo bench -q -p ctwa-shared --bench webhook -- --noplot >"$out/criterion.log" 2>&1
fi
est() { python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["mean"]["point_estimate"]/1000))' "target/criterion/webhook/$1/$2/new/estimates.json"; }

echo "== release builds" >&2
functions="webhook capture api connect token-refresh dataset conversions conversions-resend ads admin"
# The bootstraps as scripts/test.sh builds them, the local run apart (built together,
# cargo would unify their features and measure other binaries than the ones tested).
scripts/build-functions.sh --quiet
cargo build -q --release --locked -p ctwa-local
size_kb() { [ -f "$1" ] && echo "$(( $(stat -c %s "$1") / 1024 )) KiB" || echo "n/a"; }
declare -A arm
if [ "$arm64" = 1 ]; then
  if ! command -v cargo-lambda >/dev/null && [ ! -x .ctwa/tools/venv/bin/cargo-lambda ]; then
    scripts/deps.sh >/dev/null
    .ctwa/tools/venv/bin/pip install --quiet cargo-lambda >&2 || true
  fi
  export PATH="$root/.ctwa/tools/venv/bin:$PATH"
  if command -v cargo-lambda >/dev/null && cargo lambda build --release --arm64 --locked $(for f in $functions; do printf -- '-p %s ' "$f"; done) >"$out/cargo-lambda.log" 2>&1; then
    for f in $functions; do arm[$f]=$(size_kb "target/lambda/$f/bootstrap"); done
  else
    echo "arm64 build unavailable (see $out/cargo-lambda.log)" >&2
  fi
fi

# A fresh DynamoDB Local (in memory, the same settings as scripts/services.sh) and
# Secrets Manager emulator for this run only, on free ports: the figures never depend on
# what other runs left in a shared instance, and the run never disturbs them.
fresh_heap=512m
# shellcheck source=scripts/fresh-services.sh
. scripts/fresh-services.sh

[ "$only_batch$only_report" != 00 ] || echo "== cold starts (seeded tables)" >&2
port=$(free_port)
suffix=$(date +%s)
export INBOX_TABLE="bench-inbox-$suffix" DATA_TABLE="bench-data-$suffix" WEBHOOK_SECRET_ID="bench/webhook-$suffix"
rm -f "$out/local.json"
CTWA_LOCAL_PORT=$port CTWA_STATE_DIR="$out" target/release/ctwa-local >"$out/local.log" 2>&1 &
local_pid=$!; pids+=("$local_pid")
for _ in $(seq 1 100); do [ -f "$out/local.json" ] && grep -q "$port" "$out/local.json" && break; sleep 0.2; done
graph_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["meta_graph_url"])' "$out/local.json")
load() { target/release/ctwa-load "$@" --state "$out/local.json" --server-pid "$local_pid"; }
# The conversions function's Timeout, as template.yaml gives it to Lambda (and to the
# local stack, which stops an invocation there).
conv_timeout=$(python3 - template.yaml <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = text.split("\n  ConversionsFunction:\n", 1)[1]
print(re.search(r"^      Timeout: (\d+)$", block, re.M).group(1))
PY
)
batch() { # a 1,000-event batch, the simulator answering after 300 ms
  load batch --count 1000 --meta-delay-ms 300 >"$out/load-batch-1000.json"
}
bj() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t=float(sys.argv[2]); print("%.2f s end to end, %.0f%% of the conversions function'"'"'s Timeout (%d s, template.yaml); HTTP %d, %s delivered, %s unknown of %s" % (d["seconds"], 100 * d["seconds"] / t, t, d["http_status"], d["delivered"], d["unknown"], d["total"]))' "$out/load-batch-1000.json" "$conv_timeout"; }
batch_label="a 1,000-event batch through the local stack (POST /v1/conversions/batch, one customer and click per event; the Graph simulator answering after 300 ms)"
report() { # the seeded month's report, cold then 20 times warm
  load report --count 20 >"$out/load-report.json"
}
rj() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2] % d)' "$out/load-report.json" "$1"; }
report_label="GET /v1/reports/ads, the seeded month (3 campaigns, 10 ads, 2,000 clicks, 300 leads, 80 purchases; level=ad) through the local stack"
report_rows() {
  echo "| $report_label, cold (Meta asked for the 30 days; the days that are final, older than 28 days, cached) | $(rj '%(cold_ms).1f ms') |"
  echo "| $report_label, warm (Meta asked for the last 28 days each time; target < 1 s) | $(rj 'median %(warm_median_ms).1f ms, p95 %(warm_p95_ms).1f ms, max %(warm_max_ms).1f ms over %(warm_count)d requests; %(rows)s rows, %(clicks)s clicks, %(leads)s leads, %(purchases)s purchases') |"
}
if [ "$only_report" = 1 ]; then
  echo "== the per-ad report of a seeded month" >&2
  report
  echo
  echo "Machine: $machine. Date: $date_utc. Command: \`scripts/bench.sh --only-report\`."
  echo
  echo "| figure | value |"
  echo "| --- | --- |"
  echo "| machine | $machine |"
  echo "| date | $date_utc |"
  report_rows
  exit 0
fi
if [ "$only_batch" = 1 ]; then
  echo "== a 1,000-event batch, Meta answering in 300 ms" >&2
  batch
  echo
  echo "Machine: $machine. Date: $date_utc. Command: \`scripts/bench.sh --only-batch\`."
  echo
  echo "| figure | value |"
  echo "| --- | --- |"
  echo "| machine | $machine |"
  echo "| date | $date_utc |"
  echo "| $batch_label | $(bj) |"
  exit 0
fi
cold() { # name bin event
  target/release/ctwa-coldstart --runs "$runs" --bin "target/release/$2" --event "$3" \
    --env "INBOX_TABLE=$INBOX_TABLE" --env "DATA_TABLE=$DATA_TABLE" --env "WEBHOOK_SECRET_ID=$WEBHOOK_SECRET_ID" \
    --env "META_APP_ID=1234567890" --env "TOKEN_SECRET_PREFIX=ctwa/local/meta-token/" --env "META_GRAPH_URL=$graph_url" >"$out/cold-$1.json"
}
cold webhook-verify webhook events/aws/apigw-webhook-verify.json
cold webhook-post webhook events/aws/apigw-webhook-post-base64.json
cold capture capture events/dynamodb-stream-inbox-insert.json
cold api api events/aws/apigw-conversations-list.json
cold connect connect events/aws/apigw-status.json
cold dataset dataset events/aws/apigw-dataset-get.json
cold conversions conversions events/aws/apigw-conversions-audit.json
cold token-refresh token-refresh events/aws/schedule.json
cold conversions-resend conversions-resend events/aws/schedule.json
cold ads ads events/aws/apigw-ads-list.json
cold admin admin events/aws/apigw-api-keys-list.json

echo "== peak memory under load ($invocations invocations per function)" >&2
api_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$out/local.json")
app_secret=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["app_secret"])' "$out/local.json")
mem() { # name bin event invocations [ctwa-coldstart options]
  local name="$1" bin="$2" event="$3" n="$4"; shift 4
  target/release/ctwa-coldstart --runs 1 --invocations "$n" --bin "target/release/$bin" --event "$event" \
    --env "INBOX_TABLE=$INBOX_TABLE" --env "DATA_TABLE=$DATA_TABLE" --env "WEBHOOK_SECRET_ID=$WEBHOOK_SECRET_ID" \
    --env "META_APP_ID=1234567890" --env "TOKEN_SECRET_PREFIX=ctwa/local/meta-token/" --env "META_GRAPH_URL=$graph_url" \
    "$@" >"$out/mem-$name.json"
}
capture_batches=$(( (invocations + 9) / 10 ))
mem webhook webhook events/aws/apigw-webhook-post-base64.json "$invocations" --vary webhook --app-secret "$app_secret"
mem capture capture events/dynamodb-stream-inbox-insert.json "$capture_batches" --vary stream --batch 100
mem api api events/aws/apigw-conversations-list.json "$invocations" --bearer "$api_key"
mem connect connect events/aws/apigw-status.json "$invocations" --bearer "$api_key"
mem dataset dataset events/aws/apigw-dataset-get.json "$invocations" --bearer "$api_key"
mem conversions conversions events/aws/apigw-conversions-audit.json "$invocations" --bearer "$api_key"
mem token-refresh token-refresh events/aws/schedule.json "$invocations"
mem conversions-resend conversions-resend events/aws/schedule.json "$invocations"
mem ads ads events/aws/apigw-ads-list.json "$invocations" --bearer "$api_key"
mem admin admin events/aws/apigw-api-keys-list.json "$invocations" --bearer "$api_key"

echo "== load (ctwa-load against the local stack)" >&2
load conversions --count 300 --concurrency 1 --customers 50 >"$out/load-conv-1.json"
load conversions --count 3000 --concurrency 32 --customers 200 >"$out/load-conv-32.json"
load webhooks --count 5000 --concurrency 32 >"$out/load-webhooks-32.json"
echo "== a 1,000-event batch, Meta answering in 300 ms" >&2
batch
echo "== the per-ad report of a seeded month" >&2
report
# Sustained webhooks against raw conditional PutItem, same DynamoDB Local, same run: each
# starts with the stack idle (capture has drained what came before).
# ctwa-local, its function instances (child processes) and DynamoDB Local.
ticks() { { cat "/proc/$local_pid/stat" "/proc/$ddb_pid/stat"; for c in $(pgrep -P "$local_pid"); do cat "/proc/$c/stat" 2>/dev/null; done; } | awk '{t += $14 + $15} END {print t}'; }
quiet() { # waits (up to 120 s) until ctwa-local and DynamoDB Local use under 15% of a core
  local a b
  for _ in $(seq 1 120); do
    a=$(ticks); sleep 1; b=$(ticks)
    [ $((b - a)) -lt 15 ] && return 0
  done
}
# The raw PutItems go into the stack's own inbox table (the stream and capture work
# behind them is the same as behind the webhooks), half before and half after the
# webhooks, so a drift of DynamoDB Local over the run weighs on both sides alike.
half=$(( (sustained + 1) / 2 ))
quiet; load putitem --count "$half" --concurrency 32 >"$out/load-putitem-32-a.json"
quiet; load webhooks --count "$sustained" --concurrency 32 >"$out/load-webhooks-sustained.json"
quiet; load putitem --count "$half" --concurrency 32 >"$out/load-putitem-32-b.json"
python3 - "$out/load-putitem-32-a.json" "$out/load-putitem-32-b.json" >"$out/load-putitem-32.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
n, secs = a["count"] + b["count"], a["seconds"] + b["seconds"]
pct = lambda k: max(a["latency_ms"][k], b["latency_ms"][k])
print(json.dumps({"mode": "putitem", "count": n, "concurrency": a["concurrency"], "errors": a["errors"] + b["errors"],
    "seconds": secs, "per_second": round(n / secs, 1), "runs_per_second": [a["per_second"], b["per_second"]],
    "latency_ms": {"p50": (a["latency_ms"]["p50"] + b["latency_ms"]["p50"]) / 2, "p99": pct("p99"), "max": pct("max")},
    "server_cpu_ms_per_request": None}))
PY
# Cold starts through the stack itself: each instance the load started, process start to
# its first answer, behind the local Runtime API, API Gateway's mapping and the IAM gateway.
python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "http://127.0.0.1:$port/_local/stats" >"$out/stack-stats.json"
sj() { python3 -c '
import json, sys, statistics
d = json.load(open(sys.argv[1]))
for name in sorted(d):
    v = sorted(d[name]["cold_start_ms"])
    if v:
        print("| cold start through the local stack, %s (process start to first answer: Runtime API, API Gateway mapping, IAM gateway) | median %.2f ms, p90 %.2f ms over %d instances; %d invocations |" % (name, statistics.median(v), v[min(len(v) - 1, int(len(v) * 0.9))], len(v), d[name]["invocations"]))
' "$out/stack-stats.json"; }
lj() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d["server_cpu_ms_per_request"]; print("%.1f/s (p50 %.1f ms, p99 %.1f ms, %d errors%s)" % (d["per_second"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["errors"], "" if c is None else "; local server CPU %.3f ms per request" % c))' "$out/$1"; }
mj() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("peak RSS %.1f MiB after %d invocations (warm p50 %.2f ms, p99 %.2f ms; %d errors)" % (d["peak_rss_kb"]/1024, d["invocations_per_run"], d["warm_ms"]["p50"], d["warm_ms"]["p99"], d["errors"]))' "$out/mem-$1.json"; }
ratio=$(python3 -c 'import json,sys; w=json.load(open(sys.argv[1])); p=json.load(open(sys.argv[2])); print("%.2f (webhooks %.1f/s, %d errors / PutItem %.1f/s, %d errors)" % (w["per_second"]/p["per_second"], w["per_second"], w["errors"], p["per_second"], p["errors"]))' "$out/load-webhooks-sustained.json" "$out/load-putitem-32.json")
cj() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2] % {"med": d["cold_start_ms"]["median"], "p90": d["cold_start_ms"]["p90"], "rss": d["peak_rss_kb"]/1024, "ans": d["answer"][:60]})' "$out/cold-$1.json" "$2"; }

echo
echo "Machine: $machine. Date: $date_utc. Command: \`scripts/bench.sh --runs $runs --invocations $invocations --sustained $sustained\`."
echo
echo "| figure | value |"
echo "| --- | --- |"
echo "| machine | $machine |"
echo "| date | $date_utc |"
for sz in 1KB 100KB; do
  ours=$(est verify_parse_extract "$sz"); base=$(est baseline_hmac_plus_serde_value "$sz")
  cpu_ratio=$(python3 -c "print('%.2f' % ($ours / $base))")
  echo "| CPU per webhook, $sz body: verify + parse + extract | $ours µs (bare HMAC + serde_json::Value parse: $base µs; ratio $cpu_ratio) |"
done
for f in $functions; do
  echo "| release binary size, $f | x86_64 $(size_kb target/release/$f), arm64 ${arm[$f]:-n/a} |"
done
echo "| cold start, webhook (GET /webhook handshake: Secrets Manager read) | $(cj webhook-verify 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
echo "| cold start, webhook (POST /webhook, base64 body: secret + inbox PutItem) | $(cj webhook-post 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
echo "| cold start, capture (one stream record: route GetItem, click PutItem, conversation UpdateItem) | $(cj capture 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
echo "| cold start, api (GET /v1/conversations: API key GetItem) | $(cj api 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
for f in connect:"GET /v1/status" dataset:"GET /v1/dataset" conversions:"GET /v1/conversions" token-refresh:"schedule event: connections query" conversions-resend:"schedule event: due-events query" ads:"GET /v1/ads" admin:"GET /v1/api-keys"; do
  echo "| cold start, ${f%%:*} (${f#*:}) | $(cj "${f%%:*}" 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
done
sj
echo "| conversions through the local stack, 1 client (Graph simulator) | $(lj load-conv-1.json) |"
echo "| conversions through the local stack, 32 concurrent | $(lj load-conv-32.json) |"
echo "| signed webhooks through the local stack, 32 concurrent | $(lj load-webhooks-32.json) |"
echo "| raw conditional PutItem into the stack's inbox table (the same items, attribute_not_exists(pk)), 32 concurrent, $sustained items (half before, half after the webhooks) | $(lj load-putitem-32.json) |"
echo "| signed webhooks through the local stack sustained, 32 concurrent, $sustained posts (capture running) | $(lj load-webhooks-sustained.json) |"
echo "| sustained webhooks / raw conditional PutItem (target >= 0.7) | $ratio |"
echo "| $batch_label | $(bj) |"
report_rows
echo "| peak memory under load, webhook (POST /webhook, a new message each, 30% with referrals) | $(mj webhook) |"
echo "| peak memory under load, capture (stream batches of 100 new records, 30% with referrals) | $(mj capture) |"
echo "| peak memory under load, api (GET /v1/conversations, real API key) | $(mj api) |"
echo "| peak memory under load, connect (GET /v1/status, real API key) | $(mj connect) |"
echo "| peak memory under load, dataset (GET /v1/dataset, real API key) | $(mj dataset) |"
echo "| peak memory under load, conversions (GET /v1/conversions, real API key) | $(mj conversions) |"
echo "| peak memory under load, token-refresh (schedule event) | $(mj token-refresh) |"
echo "| peak memory under load, conversions-resend (schedule event) | $(mj conversions-resend) |"
echo "| peak memory under load, ads (GET /v1/ads, real API key) | $(mj ads) |"
echo "| peak memory under load, admin (GET /v1/api-keys, real API key) | $(mj admin) |"
