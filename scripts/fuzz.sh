#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer) of what sees untrusted bytes: the Cloud API webhook
# parser and the capture step behind it, the Sinch callback and metadata parsers, the
# PII normalisers, and both signature checks. The targets live in fuzz/ (its own
# workspace); each asserts properties, not only "no panic" (see fuzz/fuzz_targets/*.rs).
#
#   scripts/fuzz.sh                      build, then every target for 20 s
#   scripts/fuzz.sh --seconds 600        longer runs
#   scripts/fuzz.sh cloud_webhook ...    only these targets
#   scripts/fuzz.sh --asan               with AddressSanitizer (slower; the code is safe Rust)
#   scripts/fuzz.sh --list               the targets
#
# Needs a Rust toolchain (stable is enough: without --asan cargo-fuzz passes no -Z flag;
# with --asan, RUSTC_BOOTSTRAP=1 lets stable take -Zsanitizer). Installs cargo-fuzz with
# `cargo install --locked` when it is missing. Exits non-zero when a target crashes,
# fails an assertion, times out or runs out of memory, and prints the reproducer.
# Corpus (fuzz/corpus/, kept between local runs) and crashes (fuzz/artifacts/) are
# git-ignored; seeds: events/webhooks/{cloud,messenger,instagram,sinch}/ and fuzz/seeds/<target>/; inputs that
# once failed stay in fuzz/regressions/<target>/ and are replayed on every run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

all_targets="cloud_webhook stored_message sinch_callback sinch_metadata pii_normalize meta_signature sinch_signature adimages_multipart"
cargo_fuzz_version="0.13.2"
seconds=20
sanitizer=none
targets=()
usage() { echo "usage: scripts/fuzz.sh [--seconds N] [--asan] [--list] [target...]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || usage; seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --asan) sanitizer=address; shift ;;
    --list) tr ' ' '\n' <<<"$all_targets"; exit 0 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$root/scripts/fuzz.sh"; exit 0 ;;
    -*) usage ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: --seconds takes a positive whole number" >&2; exit 2; }
[ ${#targets[@]} -gt 0 ] || read -r -a targets <<<"$all_targets"
for t in "${targets[@]}"; do
  [[ " $all_targets " == *" $t "* ]] || { echo "fuzz: no target $t (try --list)" >&2; exit 2; }
done

command -v cargo >/dev/null || { echo "fuzz: cargo is required (a Rust toolchain)" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz $cargo_fuzz_version (cargo install --locked)"
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
if [ "$sanitizer" != none ] && ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1 # stable rustc, but -Zsanitizer is an unstable flag
fi
fuzz_flags=(--sanitizer "$sanitizer")
# Other RUSTFLAGS: a target dir of its own, so switching does not rebuild the other.
[ "$sanitizer" = none ] || fuzz_flags+=(--target-dir "target/$sanitizer")
echo "== $(cargo fuzz --version), $(rustc --version), sanitizer: $sanitizer"

echo "== build (cargo fuzz build: optimised, debug assertions and overflow checks on)"
cargo fetch --locked --quiet # fails if fuzz/Cargo.lock is out of date
start=$(date +%s)
cargo fuzz build "${fuzz_flags[@]}"
echo "   built in $(( $(date +%s) - start )) s"

# Bodies are capped by the webhook handler; 256 KiB covers Meta's large batches while
# keeping runs fast. Headers and PII fields are short.
max_len() {
  case "$1" in
    cloud_webhook|sinch_callback|stored_message|sinch_metadata) echo 262144 ;;
    meta_signature|sinch_signature) echo 65536 ;;
    pii_normalize) echo 4096 ;;
    adimages_multipart) echo 65537 ;;
  esac
}
seed_dirs() {
  case "$1" in
    cloud_webhook) printf '%s\n' "$root/events/webhooks/cloud" "$root/events/webhooks/messenger" "$root/events/webhooks/instagram" ;;
    sinch_callback) echo "$root/events/webhooks/sinch" ;;
  esac
  # fuzz/regressions/<target>/: inputs that once failed, replayed on every run.
  for d in "seeds/$1" "regressions/$1"; do [ -d "$d" ] && echo "$d"; done
  return 0
}
dict() {
  case "$1" in
    cloud_webhook|sinch_callback|stored_message|sinch_metadata) echo dict/webhook.dict ;;
    meta_signature|sinch_signature) echo dict/signature.dict ;;
  esac
}

logs="target/fuzz-logs"; mkdir -p "$logs"
failed=()
echo "== run: ${#targets[@]} target(s), $seconds s each (-rss_limit_mb=512, -timeout=10)"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  mapfile -t seeds < <(seed_dirs "$t")
  args=(-max_total_time="$seconds" -rss_limit_mb=512 -timeout=10 -max_len="$(max_len "$t")" -print_final_stats=1)
  [ -z "$(dict "$t")" ] || args+=(-dict="$(dict "$t")")
  log="$logs/$t.log"
  if cargo fuzz run "${fuzz_flags[@]}" "$t" "corpus/$t" "${seeds[@]}" -- "${args[@]}" >"$log" 2>&1; then
    done_line=$(grep -a 'DONE' "$log" | tail -1)
    runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$done_line")
    secs=$(grep -a '^Done [0-9]* runs in' "$log" | tail -1 | awk '{print $5}')
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/\([0-9a-zA-Z]*\).*/\1 inputs, \2/p' <<<"$done_line")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    printf '%-16s ok     %10s runs in %3s s (%6s/s), corpus %s, cov %s\n' \
      "$t" "$runs" "$secs" "$(( runs / (secs > 0 ? secs : 1) ))" "$corp" "$cov"
  else
    failed+=("$t")
    artifact=$(grep -a -o 'Test unit written to .*' "$log" | tail -1 | sed 's/^Test unit written to //')
    printf '%-16s FAILED (log: fuzz/%s)\n' "$t" "$log"
    grep -a -m1 -A1 -E 'panicked at|ERROR: libFuzzer|ALARM|out-of-memory' "$log" | sed 's/^/    /' || true
    if [ -n "$artifact" ]; then
      echo "    reproducer: ${artifact#"$root/"}"
      echo "    reproduce:  (cd fuzz && cargo fuzz run ${fuzz_flags[*]} $t ${artifact#"$root/fuzz/"})"
    else
      tail -n 20 "$log" | sed 's/^/    /'
    fi
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) ran clean"
