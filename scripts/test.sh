#!/usr/bin/env bash
# README command 2: every test, against real local servers.
# Starts DynamoDB Local and the Secrets Manager emulator (installing them if missing),
# runs the workspace's tests (unit, integration, end-to-end over HTTP), then lints the
# SAM template with cfn-lint. Stops the servers it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started_here=0
if [ ! -f .ctwa/run/dynamodb.pid ] && [ ! -f .ctwa/run/secrets.pid ]; then started_here=1; fi
scripts/services.sh
cleanup() { [ "$started_here" = 1 ] && scripts/services.sh stop; }
trap cleanup EXIT
# shellcheck disable=SC1091
. .ctwa/env
cargo test --workspace --locked "$@"
echo "cfn-lint template.yaml"
.ctwa/tools/venv/bin/cfn-lint template.yaml
echo "cfn-lint: no errors"
