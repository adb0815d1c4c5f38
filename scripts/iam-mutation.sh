#!/usr/bin/env bash
# Least privilege, the other way round: takes one action away from one function's
# policy in a copy of template.yaml and runs tests against that copy (CTWA_TEMPLATE), to
# show which tests fail and that they name the AccessDenied. Not in CI (each run is a
# test run); used for the report in the README.
#   scripts/iam-mutation.sh FUNCTION ACTION [cargo test arguments...]
#   scripts/iam-mutation.sh DatasetFunction dynamodb:UpdateItem -p ctwa-tests --test conversions
# Needs the services (scripts/services.sh) and the bootstraps (scripts/build-functions.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ $# -ge 2 ] || { sed -n 2,8p "$0" >&2; exit 2; }
fn="$1"; action="$2"; shift 2
copy="$(mktemp -t "template-without-$fn-XXXX.yaml")"
python3 - "$fn" "$action" "$copy" <<'PY'
import re, sys
fn, action, out = sys.argv[1:4]
text = open("template.yaml").read()
start = text.index(f"\n  {fn}:\n")
m = re.compile(r"\n  [A-Za-z0-9]+:\n").search(text, start + 1)
end = m.start() if m else len(text)
block = text[start:end]
line = f"- {action}\n"
if block.count(line) != 1:
    sys.exit(f"{fn} does not grant {action} exactly once in template.yaml")
# Replaced by an action nothing calls: the statement stays valid, the grant is gone.
open(out, "w").write(text[:start] + block.replace(line, "- none:Removed\n") + text[end:])
PY
# shellcheck disable=SC1091
. .ctwa/env
echo "== $fn without $action ($copy)" >&2
status=0
CTWA_TEMPLATE="$copy" cargo test --locked "$@" 2>&1 | tee "$root/.ctwa/logs/iam-mutation.log" | grep -E "^test .*(FAILED|ok)$|AccessDenied|^test result" || status=$?
rm -f "$copy"
exit 0
