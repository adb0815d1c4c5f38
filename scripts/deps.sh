#!/usr/bin/env bash
# Installs, once, what the local stack and the tests need, under .ctwa/ (git-ignored):
#   - DynamoDB Local: the official jar, shipped in the npm package amplify-dynamodb-simulator
#   - moto's server (Secrets Manager emulator) and cfn-lint, in a Python venv
# Idempotent: a second run only checks. Prints where things are.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.ctwa/tools"
mkdir -p "$tools"

need() { command -v "$1" >/dev/null 2>&1 || { echo "deps: '$1' is required but not installed ($2)" >&2; exit 1; }; }
need java "Java 17+: apt-get install openjdk-17-jre-headless"
need npm "Node.js + npm: apt-get install nodejs npm"
need python3 "Python 3: apt-get install python3 python3-venv"

jar=$(find "$tools/node_modules/amplify-dynamodb-simulator" -name DynamoDBLocal.jar 2>/dev/null | head -n1 || true)
if [ -z "$jar" ]; then
  echo "deps: installing DynamoDB Local (npm amplify-dynamodb-simulator)" >&2
  (cd "$tools" && npm install --no-audit --no-fund --silent --prefix "$tools" amplify-dynamodb-simulator@2 >&2)
  jar=$(find "$tools/node_modules/amplify-dynamodb-simulator" -name DynamoDBLocal.jar | head -n1)
fi

venv="$tools/venv"
if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/cfn-lint" ] || ! "$venv/bin/python" -c "import facebook_business" 2>/dev/null; then
  echo "deps: installing moto[server] and cfn-lint into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6' 'cfn-lint>=1,<2' 'facebook_business>=20' >&2
fi
echo "DYNAMODB_LOCAL_JAR=$jar"
echo "VENV=$venv"
