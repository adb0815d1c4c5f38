#!/usr/bin/env bash
# Builds every function's bootstrap (the same main.rs that ships) in the release profile,
# with cargo's progress shown, into $CARGO_TARGET_DIR/release (default target/release).
# Extra arguments go to cargo build (--quiet). Build other packages apart: together,
# cargo would unify their features with the functions' and rebuild the bootstraps.
# A clean build takes about 5 minutes on 2 cores; an up-to-date one, a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
functions=(webhook capture capture-backlog api connect token-refresh dataset conversions conversions-resend ads admin)
args=()
for f in "${functions[@]}"; do args+=(-p "$f"); done
echo "== building the ${#functions[@]} function bootstraps (release)" >&2
cargo build --release --locked "${args[@]}" "$@"
