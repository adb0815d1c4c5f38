#!/usr/bin/env bash
# README command 1: the whole system on this machine, no AWS account needed.
# Installs what is missing (DynamoDB Local, moto), starts them, builds and runs every
# function behind one HTTP port (CTWA_LOCAL_PORT, default 3000), seeds a demo account
# and writes its connection details to .ctwa/local.json. Ctrl-C stops everything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v cargo >/dev/null || { echo "local: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
started_here=0
if [ ! -f .ctwa/run/dynamodb.pid ] && [ ! -f .ctwa/run/secrets.pid ]; then started_here=1; fi
scripts/services.sh
cleanup() { [ "$started_here" = 1 ] && scripts/services.sh stop; }
trap cleanup EXIT
# shellcheck disable=SC1091
. .ctwa/env
cargo build --release --locked -p ctwa-local --quiet
exec_status=0
target/release/ctwa-local || exec_status=$?
exit "$exec_status"
