#!/usr/bin/env bash
# arm64 smoke (not part of CI: slow). Builds the artifacts that `sam deploy` uploads
# (`sam build`, BuildMethod rust-cargolambda: arm64 bootstraps, ~13 min on 2 cores) and
# runs the end-to-end tests through those exact bootstraps under qemu-user: the local
# stack is pointed at .aws-sam/build (CTWA_BOOTSTRAP_DIR, CTWA_BOOTSTRAP_LAYOUT=sam) and
# puts `qemu-aarch64 -L /usr/aarch64-linux-gnu` before each bootstrap
# (CTWA_BOOTSTRAP_LAUNCHER), then scripts/test.sh runs the e2e, conversions and
# aws_parity tests (it also builds the x86_64 release bootstraps and runs cfn-lint).
# Installs, if missing: Debian's qemu-user (qemu-aarch64) and libc6-arm64-cross (the
# aarch64 glibc qemu loads), and aws-sam-cli + cargo-lambda (which brings zig) in a venv
# under .ctwa/tools/sam-venv. The Rust target aarch64-unknown-linux-gnu must already be
# installed (rustup target add aarch64-unknown-linux-gnu): no package registry ships it.
# Honours CARGO_TARGET_DIR. Exits non-zero if anything fails; prints a summary at the end.
# Usage: scripts/arm64-smoke.sh [--skip-build]   (--skip-build reuses .aws-sam/build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
skip_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) skip_build=1; shift ;;
    *) echo "usage: scripts/arm64-smoke.sh [--skip-build]" >&2; exit 2 ;;
  esac
done
mkdir -p .ctwa/logs .ctwa/tools
log="$root/.ctwa/logs/arm64-smoke.log"
build_dir="$root/.aws-sam/build"
venv="$root/.ctwa/tools/sam-venv"
sysroot=/usr/aarch64-linux-gnu
target=aarch64-unknown-linux-gnu
step() { echo "== [$(date '+%H:%M:%S')] $*"; }
die() { echo "arm64-smoke: $*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then step "apt-get update"; $sudo apt-get update; apt_updated=1; fi
  step "apt-get install $*"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
has_candidate() { local p; p="$(LC_ALL=C apt-cache policy "$1" 2>/dev/null)"; grep -q 'Candidate: [^(]' <<<"$p"; }
qemu=""
find_qemu() { qemu="$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)"; }
find_qemu
if [ -z "$qemu" ]; then
  if [ "$apt_updated" = 0 ]; then step "apt-get update"; $sudo apt-get update; apt_updated=1; fi
  # Debian ships qemu-aarch64 in qemu-user; some releases only in qemu-user-static.
  if has_candidate qemu-user; then apt_install qemu-user
  elif has_candidate qemu-user-static; then apt_install qemu-user-static
  else die "neither qemu-user nor qemu-user-static is available from apt"; fi
  find_qemu
  [ -n "$qemu" ] || die "qemu-aarch64 not found after installing qemu-user"
fi
if [ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ]; then apt_install libc6-arm64-cross; fi
launcher="$(basename "$qemu") -L $sysroot"
# qemu-user and the aarch64 glibc: the dynamic loader runs and prints glibc's version.
$qemu -L "$sysroot" "$sysroot/lib/ld-linux-aarch64.so.1" --version >/dev/null 2>&1 \
  || die "'$launcher' cannot run the aarch64 dynamic loader $sysroot/lib/ld-linux-aarch64.so.1"

# ---------------------------------------------------------------- sam + cargo-lambda venv
if [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/cargo-lambda" ]; then
  py="$(command -v python3.11 || command -v python3)" || die "python3 is required"
  step "creating $venv ($($py --version)) with aws-sam-cli and cargo-lambda"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check --progress-bar on 'aws-sam-cli>=1,<2' 'cargo-lambda>=1,<2'
fi
export PATH="$venv/bin:$PATH"   # first, so that sam finds cargo-lambda (and its zig)
export SAM_CLI_TELEMETRY=0
cargo lambda --version >/dev/null 2>&1 || die "'cargo lambda --version' fails with $venv/bin on PATH"
sam_version="$(sam --version)"
lambda_version="$(cargo lambda --version)"
zig_version="$("$venv/bin/python" -m ziglang version 2>/dev/null || echo '?')"
qemu_version="$($qemu --version | head -n1)"
step "tools: $sam_version; $lambda_version; zig $zig_version; $qemu_version; $(rustc --version)"

# ---------------------------------------------------------------- sam build
build_time="skipped (--skip-build)"
if [ "$skip_build" = 0 ]; then
  # cargo-lambda would otherwise try `rustup target add` itself, which needs the Rust
  # distribution server, not a package registry: check first and say what is missing.
  libdir="$(rustc --print target-libdir --target "$target")"
  compgen -G "$libdir/libstd-*.rlib" >/dev/null \
    || die "the Rust standard library for $target is not installed ($libdir has no libstd): run 'rustup target add $target' where the Rust distribution server is reachable, or reuse an existing .aws-sam/build with --skip-build"
  [ -n "${CARGO_TARGET_DIR:-}" ] && step "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
  step "sam build (rust-cargolambda, arm64): ~13 min on 2 cores, slower when other builds run; log: .ctwa/logs/sam-build.log"
  start=$SECONDS
  status=0
  sam build --template-file template.yaml --build-dir "$build_dir" --beta-features 2>&1 | tee "$root/.ctwa/logs/sam-build.log" || status=$?
  secs=$((SECONDS - start))
  build_time="$((secs / 60)) min $((secs % 60)) s"
  [ "$status" = 0 ] || die "sam build failed after $build_time (log: .ctwa/logs/sam-build.log)"
  step "sam build took $build_time"
fi

# ---------------------------------------------------------------- the arm64 bootstraps
# Every AWS::Serverless::Function of the template, as sam build names its folder.
functions="$(awk '/^  [A-Za-z0-9]+:$/ { id = substr($1, 1, length($1) - 1) }
                  /^    Type: AWS::Serverless::Function$/ { print id }' template.yaml)"
[ -n "$functions" ] || die "no AWS::Serverless::Function found in template.yaml"
step "arm64 bootstraps in $build_dir"
sizes=""; bad=0
for f in $functions; do
  b="$build_dir/$f/bootstrap"
  if [ ! -f "$b" ]; then echo "  $f: MISSING ($b)"; bad=1; continue; fi
  desc="$(file -b "$b")"
  kib=$(( $(stat -c %s "$b") / 1024 ))
  printf '  %-28s %6d KiB  %s\n' "$f" "$kib" "$desc"
  sizes="$sizes $f=${kib}KiB"
  case "$desc" in
    ELF*ARM\ aarch64*) ;;
    *) echo "  $f: not an ARM aarch64 ELF" >&2; bad=1 ;;
  esac
done
[ "$bad" = 0 ] || die "the arm64 bootstraps are missing or not ARM aarch64 ELF (run without --skip-build)"

# ---------------------------------------------------------------- end-to-end smoke
tests=(--test e2e --test conversions --test aws_parity)
if [ ! -f tests/aws_parity.rs ]; then
  echo "arm64-smoke: tests/aws_parity.rs does not exist yet: running without --test aws_parity" >&2
  tests=(--test e2e --test conversions)
fi
step "scripts/test.sh -p ctwa-tests ${tests[*]} through the arm64 bootstraps under '$launcher'; log: $log"
status=0
CTWA_BOOTSTRAP_DIR="$build_dir" CTWA_BOOTSTRAP_LAYOUT=sam CTWA_BOOTSTRAP_LAUNCHER="$launcher" \
  scripts/test.sh -p ctwa-tests "${tests[@]}" 2>&1 | tee "$log" || status=$?

echo
echo "== arm64 smoke summary"
echo "tools:      $sam_version; $lambda_version; zig $zig_version; $qemu_version"
echo "sam build:  $build_time"
echo "bootstraps:$sizes"
echo "launcher:   $launcher"
grep '^test result:' "$log" || echo "(no 'test result:' line: see $log)"
tail -n 1 "$log"
if [ "$status" = 0 ]; then echo "arm64 smoke: PASSED"; else echo "arm64 smoke: FAILED (exit $status; log: $log)"; fi
exit "$status"
