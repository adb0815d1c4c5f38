#!/usr/bin/env bash
# README command 2: every test, against real local servers.
# Starts DynamoDB Local and the Secrets Manager emulator (installing them if missing),
# builds the functions' release bootstraps (the end-to-end tests run them behind a local
# Lambda Runtime API, their AWS calls checked against template.yaml's IAM policies), runs
# the workspace's tests (unit, integration, end-to-end), prints the least-privilege
# report, then lints the SAM template with cfn-lint. Stops the servers it started. Extra
# arguments go to `cargo test` (e.g. `scripts/test.sh -p ctwa-tests --test e2e`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# The report page is tested in a real browser (headless Chromium, Debian's package).
chromium_bin="${CTWA_CHROMIUM:-chromium}"
command -v "$chromium_bin" >/dev/null 2>&1 || [ -x "$chromium_bin" ] || {
  echo "test: '$chromium_bin' is required for the report page's browser tests (apt-get install chromium, or set CTWA_CHROMIUM)" >&2
  exit 1
}
started_here=0
if [ ! -f .ctwa/run/dynamodb.pid ] && [ ! -f .ctwa/run/secrets.pid ]; then started_here=1; fi
scripts/services.sh
cleanup() { if [ "$started_here" = 1 ]; then scripts/services.sh stop; fi; }
trap cleanup EXIT
# shellcheck disable=SC1091
. .ctwa/env
scripts/build-functions.sh
log="$root/.ctwa/logs/cargo-test.log"
# Each test stack writes the IAM calls its functions made here (ctwa-iam-report reads them).
export CTWA_IAM_USAGE_DIR="$root/.ctwa/iam-usage"
rm -rf "$CTWA_IAM_USAGE_DIR" "$root/.ctwa/logs/tests"
status=0
if [ $# -gt 0 ]; then
  cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
else
  # Every test but the load test; then the load test on a DynamoDB Local of its own:
  # DynamoDB Local writes each stream record through one SQLite thread, at a cost that
  # grows with the stream records it holds (kept 24 h), so after the whole suite it is
  # several times slower than fresh.
  cargo test --workspace --locked --no-fail-fast -- --skip five_thousand_webhooks 2>&1 | tee "$log" || status=$?
  echo "== the load test (tests/load.rs), on a fresh DynamoDB Local and emulator"
  out="$root/.ctwa/logs/load-services"; mkdir -p "$out"
  # shellcheck source=scripts/fresh-services.sh
  ( . scripts/fresh-services.sh
    cargo test --locked -p ctwa-tests --test load 2>&1 ) | tee -a "$log" || status=$?
fi
echo "== least-privilege report (template.yaml grants vs the calls the tests made)"
cargo run --quiet --locked -p ctwa-local --bin ctwa-iam-report -- "$CTWA_IAM_USAGE_DIR"/*.jsonl | tee "$root/.ctwa/logs/iam-report.txt" || status=$?
echo "== cfn-lint template.yaml"
.ctwa/tools/venv/bin/cfn-lint template.yaml || status=$?
echo
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
