#!/usr/bin/env bash
# Starts (if not already up) the real local servers the stack and the tests use:
#   DynamoDB Local (official jar, Java 17, in memory)  on 127.0.0.1:${CTWA_DYNAMODB_PORT:-18000}
#   moto's server (Secrets Manager emulator)            on 127.0.0.1:${CTWA_SECRETS_PORT:-15000}
# and writes .ctwa/env: the standard AWS SDK variables that point at them (dummy
# credentials, a region, AWS_EC2_METADATA_DISABLED so the SDK never probes the
# instance-metadata address). `scripts/services.sh stop` stops what it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.ctwa"; run="$state/run"; logs="$state/logs"
mkdir -p "$run" "$logs"
ddb_port="${CTWA_DYNAMODB_PORT:-18000}"
sm_port="${CTWA_SECRETS_PORT:-15000}"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop() {
  for name in dynamodb secrets; do
    if [ -f "$run/$name.pid" ]; then
      pid="$(cat "$run/$name.pid")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$run/$name.pid"
    fi
  done
}
if [ "${1:-start}" = "stop" ]; then stop; exit 0; fi

eval "$("$root/scripts/deps.sh")"   # DYNAMODB_LOCAL_JAR, VENV

wait_port() { # name port pid
  for _ in $(seq 1 150); do
    listening "$2" && return 0
    kill -0 "$3" 2>/dev/null || { echo "services: $1 exited; log: $logs/$1.log" >&2; tail -20 "$logs/$1.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "services: $1 did not open port $2 in 30 s; log: $logs/$1.log" >&2; exit 1
}

if listening "$ddb_port"; then
  echo "services: port $ddb_port already serves (reusing it as DynamoDB Local)" >&2
else
  lib="$(dirname "$DYNAMODB_LOCAL_JAR")/DynamoDBLocal_lib"
  nohup java -Xmx512m -Djava.library.path="$lib" -jar "$DYNAMODB_LOCAL_JAR" \
    -inMemory -disableTelemetry -port "$ddb_port" >"$logs/dynamodb.log" 2>&1 &
  echo $! >"$run/dynamodb.pid"
  wait_port dynamodb "$ddb_port" "$!"
  echo "services: DynamoDB Local on 127.0.0.1:$ddb_port" >&2
fi
if listening "$sm_port"; then
  echo "services: port $sm_port already serves (reusing it as the Secrets Manager emulator)" >&2
else
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$sm_port" >"$logs/secrets.log" 2>&1 &
  echo $! >"$run/secrets.pid"
  wait_port secrets "$sm_port" "$!"
  echo "services: Secrets Manager emulator (moto) on 127.0.0.1:$sm_port" >&2
fi

cat >"$state/env" <<ENV
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port
export AWS_ENDPOINT_URL_DYNAMODB_STREAMS=http://127.0.0.1:$ddb_port
export AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:$sm_port
export AWS_REGION=\${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-local}
export AWS_EC2_METADATA_DISABLED=true
ENV
