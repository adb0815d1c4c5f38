#!/usr/bin/env bash
# schemathesis (PyPI) against the local stack with the published contract,
# docs/openapi.yaml: no 5xx, every status documented, answers of the documented type
# and shape. Starts DynamoDB Local, the Secrets Manager emulator and the local stack
# (with the Graph simulator) on its own tables, runs, stops what it started.
#   scripts/schemathesis.sh [--max-examples N]     (default 15 per operation)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
max_examples=15
while [ $# -gt 0 ]; do
  case "$1" in
    --max-examples) max_examples="$2"; shift 2 ;;
    *) echo "usage: scripts/schemathesis.sh [--max-examples N]" >&2; exit 2 ;;
  esac
done
started_here=0
if [ ! -f .ctwa/run/dynamodb.pid ] && [ ! -f .ctwa/run/secrets.pid ]; then started_here=1; fi
scripts/services.sh
eval "$(scripts/deps.sh)"   # VENV
# shellcheck disable=SC1091
. .ctwa/env
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "schemathesis: installing schemathesis into $VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5' >&2
fi
scripts/build-functions.sh --quiet
cargo build --locked -p ctwa-local --quiet
state="$root/.ctwa/schemathesis"
rm -rf "$state"; mkdir -p "$state"
port="${CTWA_SCHEMATHESIS_PORT:-3077}"
run_id="st$$"
CTWA_STATE_DIR="$state" CTWA_LOCAL_PORT="$port" DATA_TABLE="$run_id-data" INBOX_TABLE="$run_id-inbox" \
  WEBHOOK_SECRET_ID="ctwa/$run_id/webhook" CTWA_STACK_NAME="$run_id" \
  RUST_LOG=warn target/debug/ctwa-local >"$state/local.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$started_here" = 1 ]; then scripts/services.sh stop; fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  [ -s "$state/local.json" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "schemathesis: the local stack exited:" >&2; tail -20 "$state/local.log" >&2; exit 1; }
  sleep 0.2
done
[ -s "$state/local.json" ] || { echo "schemathesis: the local stack did not start" >&2; exit 1; }
key="$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$state/local.json")"
echo "== schemathesis $("$VENV/bin/schemathesis" --version | awk '{print $NF}') on docs/openapi.yaml against http://127.0.0.1:$port ($max_examples examples per operation)"
"$VENV/bin/schemathesis" --no-color run docs/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$max_examples" \
  --workers 2 \
  --seed 20261122 \
  --generation-database none \
  --report junit --report-dir "$state/report"
