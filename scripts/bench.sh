#!/usr/bin/env bash
# Benchmarks (figures, not pass/fail): prints a Markdown table with the machine it ran on.
#   - CPU per webhook (verify + parse + extract) for ~1 KB and ~100 KB bodies, beside the
#     bare HMAC-SHA256 + serde_json::Value parse of the same bytes (criterion)
#   - release binary size of each function: x86_64 (host) and arm64 (cargo-lambda, as
#     `sam build` makes it; skipped with a note when cargo-lambda cannot be installed)
#   - cold start of each bootstrap: process start to first answered invocation, with the
#     real runtime client against a local Runtime API (ctwa-coldstart), its peak RSS,
#     each doing real I/O against DynamoDB Local / the Secrets Manager emulator
# Usage: scripts/bench.sh [--runs N] [--no-arm64]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=20; arm64=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --no-arm64) arm64=0; shift ;;
    *) echo "usage: scripts/bench.sh [--runs N] [--no-arm64]" >&2; exit 2 ;;
  esac
done
out="$root/.ctwa/bench"; mkdir -p "$out"

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
machine="$(uname -m), $(nproc) cores, ${cpu:-unknown CPU}, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), rustc $(rustc --version | cut -d' ' -f2)"
echo "machine: $machine" >&2

echo "== criterion (cargo bench -p ctwa-shared --bench webhook)" >&2
cargo bench -q -p ctwa-shared --bench webhook -- --noplot >"$out/criterion.log" 2>&1
est() { python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["mean"]["point_estimate"]/1000))' "target/criterion/webhook/$1/$2/new/estimates.json"; }

echo "== release builds" >&2
functions="webhook capture api connect token-refresh dataset conversions conversions-resend"
cargo build -q --release --locked $(for f in $functions; do printf -- '-p %s ' "$f"; done) -p ctwa-local
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

echo "== cold starts (services + seeded tables)" >&2
started_here=0
if [ ! -f .ctwa/run/dynamodb.pid ] && [ ! -f .ctwa/run/secrets.pid ]; then started_here=1; fi
scripts/services.sh
. .ctwa/env
port=$(( 20000 + RANDOM % 10000 ))
suffix=$(date +%s)
export INBOX_TABLE="bench-inbox-$suffix" DATA_TABLE="bench-data-$suffix" WEBHOOK_SECRET_ID="bench/webhook-$suffix"
CTWA_LOCAL_PORT=$port CTWA_STATE_DIR="$out" target/release/ctwa-local >"$out/local.log" 2>&1 &
local_pid=$!
cleanup() { kill "$local_pid" 2>/dev/null || true; if [ "$started_here" = 1 ]; then scripts/services.sh stop; fi; }
trap cleanup EXIT
for _ in $(seq 1 100); do [ -f "$out/local.json" ] && grep -q "$port" "$out/local.json" && break; sleep 0.2; done
graph_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["meta_graph_url"])' "$out/local.json")
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

echo "== load (ctwa-load against the local stack)" >&2
load() { target/release/ctwa-load "$@" --state "$out/local.json" --server-pid "$local_pid"; }
load conversions --count 300 --concurrency 1 --customers 50 >"$out/load-conv-1.json"
load conversions --count 3000 --concurrency 32 --customers 200 >"$out/load-conv-32.json"
load webhooks --count 5000 --concurrency 32 >"$out/load-webhooks-32.json"
lj() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.1f/s (p50 %.1f ms, p99 %.1f ms, %d errors; local server CPU %.3f ms per request)" % (d["per_second"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["errors"], d["server_cpu_ms_per_request"] or 0))' "$out/$1"; }
cj() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2] % {"med": d["cold_start_ms"]["median"], "p90": d["cold_start_ms"]["p90"], "rss": d["peak_rss_kb"]/1024, "ans": d["answer"][:60]})' "$out/cold-$1.json" "$2"; }

echo
echo "Machine: $machine. Date: $(date -u +%Y-%m-%d). Command: \`scripts/bench.sh --runs $runs\`."
echo
echo "| figure | value |"
echo "| --- | --- |"
for sz in 1KB 100KB; do
  ours=$(est verify_parse_extract "$sz"); base=$(est baseline_hmac_plus_serde_value "$sz")
  ratio=$(python3 -c "print('%.2f' % ($ours / $base))")
  echo "| CPU per webhook, $sz body: verify + parse + extract | $ours µs (bare HMAC + serde_json::Value parse: $base µs; ratio $ratio) |"
done
for f in $functions; do
  echo "| release binary size, $f | x86_64 $(size_kb target/release/$f), arm64 ${arm[$f]:-n/a} |"
done
echo "| cold start, webhook (GET /webhook handshake: Secrets Manager read) | $(cj webhook-verify 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
echo "| cold start, webhook (POST /webhook, base64 body: secret + inbox PutItem) | $(cj webhook-post 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
echo "| cold start, capture (one stream record: route GetItem, click PutItem, conversation UpdateItem) | $(cj capture 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
echo "| cold start, api (GET /v1/conversations: API key GetItem) | $(cj api 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
for f in connect:"GET /v1/status" dataset:"GET /v1/dataset" conversions:"GET /v1/conversions" token-refresh:"schedule event: connections query" conversions-resend:"schedule event: due-events query"; do
  echo "| cold start, ${f%%:*} (${f#*:}) | $(cj "${f%%:*}" 'median %(med).2f ms, p90 %(p90).2f ms; peak RSS %(rss).1f MiB') |"
done
echo "| conversions through the local stack, 1 client (Graph simulator) | $(lj load-conv-1.json) |"
echo "| conversions through the local stack, 32 concurrent | $(lj load-conv-32.json) |"
echo "| signed webhooks through the local stack, 32 concurrent | $(lj load-webhooks-32.json) |"
