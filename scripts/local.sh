#!/usr/bin/env bash
# README command 1: the whole system on this machine, no AWS account needed.
# Installs what is missing (DynamoDB Local, moto), starts them, builds every function's
# release bootstrap and the local run (progress shown; ~5 min the first time), then
# deploys template.yaml locally: each function behind a local Lambda Runtime API, its
# routes on one HTTP port (CTWA_LOCAL_PORT, default 3000), the inbox stream mapping, the
# schedules, and its IAM policy enforced on every AWS call. Seeds a demo account and
# writes its connection details to .ctwa/local.json. Ctrl-C stops everything.
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
scripts/build-functions.sh
# Built apart from the functions: together, cargo would unify their features with the
# local run's and rebuild the bootstraps unlike scripts/test.sh (and `sam build`) does.
echo "== building the local run (release)" >&2
cargo build --release --locked -p ctwa-local --bin ctwa-local
case "${CARGO_TARGET_DIR:-}" in
  "") bin="$root/target/release/ctwa-local" ;;
  /*) bin="$CARGO_TARGET_DIR/release/ctwa-local" ;;
  *) bin="$root/$CARGO_TARGET_DIR/release/ctwa-local" ;;
esac
exec_status=0
"$bin" || exec_status=$?
exit "$exec_status"
