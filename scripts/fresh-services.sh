# Sourced by scripts/bench.sh and scripts/loadtest.sh: a fresh DynamoDB Local (in
# memory, heap $fresh_heap, default 512m) and Secrets Manager emulator for this run only,
# on free ports, logs in $out, killed on exit (with anything else added to $pids); the
# standard AWS SDK variables are exported to point at them. Sets ddb_pid, and defines
# free_port and listening for the caller.
echo "== services for this run (DynamoDB Local, Secrets Manager emulator)" >&2
eval "$(scripts/deps.sh)"   # DYNAMODB_LOCAL_JAR, VENV
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
ddb_port=$(free_port); sm_port=$(free_port)
java "-Xmx${fresh_heap:-512m}" -Djava.library.path="$(dirname "$DYNAMODB_LOCAL_JAR")/DynamoDBLocal_lib" -jar "$DYNAMODB_LOCAL_JAR" \
  -inMemory -disableTelemetry -port "$ddb_port" >"$out/dynamodb.log" 2>&1 &
ddb_pid=$!; pids+=("$ddb_pid")
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$sm_port" >"$out/secrets.log" 2>&1 &
pids+=("$!")
for p in "$ddb_port" "$sm_port"; do
  for _ in $(seq 1 150); do listening "$p" && break; sleep 0.2; done
  listening "$p" || { echo "a service did not open port $p in 30 s (logs: $out/dynamodb.log, $out/secrets.log)" >&2; exit 1; }
done
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port" AWS_ENDPOINT_URL_DYNAMODB_STREAMS="http://127.0.0.1:$ddb_port" \
  AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:$sm_port" AWS_REGION="${AWS_REGION:-us-east-1}" \
  AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}" AWS_EC2_METADATA_DISABLED=true
