#!/usr/bin/env bash
# README command 2: every test, against real local servers.
# Starts DynamoDB Local and the Secrets Manager emulator (installing them if missing),
# runs the workspace's tests (unit, integration, end-to-end over HTTP), then lints the
# SAM template with cfn-lint. Stops the servers it started. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh -p ctwa-tests --test e2e`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started_here=0
if [ ! -f .ctwa/run/dynamodb.pid ] && [ ! -f .ctwa/run/secrets.pid ]; then started_here=1; fi
scripts/services.sh
cleanup() { if [ "$started_here" = 1 ]; then scripts/services.sh stop; fi; }
trap cleanup EXIT
# shellcheck disable=SC1091
. .ctwa/env
log="$root/.ctwa/logs/cargo-test.log"
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
echo "== cfn-lint template.yaml"
.ctwa/tools/venv/bin/cfn-lint template.yaml || status=$?
echo
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
