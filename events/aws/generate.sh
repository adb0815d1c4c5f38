#!/usr/bin/env bash
# Regenerates the AWS-generated sample events in this directory.
# Needs: sam (aws-sam-cli), jq, python3. Works offline. See README.md.
set -euo pipefail
cd "$(dirname "$0")"
export SAM_CLI_TELEMETRY=0
SAM="${SAM:-sam}"

# Raw, as generated.
"$SAM" local generate-event apigateway http-api-proxy > apigw-http-proxy.json
"$SAM" local generate-event dynamodb update > dynamodb-stream-generated.json
"$SAM" local generate-event cloudwatch scheduled-event > schedule.json

# _webhook_body.json is checked in (Meta's CTWA example, one line, no trailing newline).
SIG="sha256=$(python3 -c 'import hmac,hashlib,sys; print(hmac.new(b"local-app-secret", open(sys.argv[1],"rb").read(), hashlib.sha256).hexdigest())' _webhook_body.json)"
LEN="$(wc -c < _webhook_body.json | tr -d ' ')"

"$SAM" local generate-event apigateway http-api-proxy --method GET --path webhook --body '' \
  | jq '.routeKey="GET /webhook" | .requestContext.routeKey="GET /webhook"
        | .rawQueryString="hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=local-verify-token"
        | .queryStringParameters={"hub.mode":"subscribe","hub.challenge":"1158201444","hub.verify_token":"local-verify-token"}
        | .headers={"accept":"*/*"}
        | del(.pathParameters) | del(.body) | .isBase64Encoded=false' > apigw-webhook-verify.json

# sam base64-encodes --body itself and sets isBase64Encoded=true.
"$SAM" local generate-event apigateway http-api-proxy --method POST --path webhook --body "$(cat _webhook_body.json)" \
  | jq --arg sig "$SIG" --arg len "$LEN" '.routeKey="POST /webhook" | .requestContext.routeKey="POST /webhook"
        | .rawQueryString="" | del(.queryStringParameters)
        | .headers={"content-type":"application/json","content-length":$len,"x-hub-signature-256":$sig}
        | del(.pathParameters)' > apigw-webhook-post-base64.json

jq --rawfile b _webhook_body.json '.body=$b | .isBase64Encoded=false' \
  apigw-webhook-post-base64.json > apigw-webhook-post-plain.json

"$SAM" local generate-event apigateway http-api-proxy --method GET --path v1/conversations --body '' \
  | jq '.routeKey="GET /v1/conversations" | .requestContext.routeKey="GET /v1/conversations"
        | .rawQueryString="phone=16505551234" | .queryStringParameters={"phone":"16505551234"}
        | .headers={"accept":"application/json","authorization":"Bearer ctwa_test_key"}
        | del(.pathParameters) | del(.body) | .isBase64Encoded=false' > apigw-conversations-list.json

"$SAM" local generate-event apigateway http-api-proxy --method GET --path v1/conversations/c_example --body '' \
  | jq '.routeKey="GET /v1/conversations/{id}" | .requestContext.routeKey="GET /v1/conversations/{id}"
        | .rawQueryString="" | del(.queryStringParameters)
        | .headers={"accept":"application/json","authorization":"Bearer ctwa_test_key"}
        | .pathParameters={"id":"c_example"} | del(.body) | .isBase64Encoded=false' > apigw-conversation-get.json

# Check: both webhook POST bodies are exactly _webhook_body.json and the signature verifies.
python3 - <<'PY'
import base64, hashlib, hmac, json
raw = open("_webhook_body.json", "rb").read()
assert not raw.endswith(b"\n"), "_webhook_body.json must not end with a newline"
for name, b64 in (("apigw-webhook-post-base64.json", True), ("apigw-webhook-post-plain.json", False)):
    ev = json.load(open(name))
    assert ev["isBase64Encoded"] is b64, name
    body = base64.b64decode(ev["body"], validate=True) if b64 else ev["body"].encode()
    assert body == raw, name + ": body differs from _webhook_body.json"
    want = "sha256=" + hmac.new(b"local-app-secret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(ev["headers"]["x-hub-signature-256"], want), name + ": bad signature"
    print(f"{name}: body == _webhook_body.json ({len(body)} bytes), signature verifies")
PY

# The ads and admin functions' sample requests, from the status request.
for spec in "ads-list|GET /v1/ads|/v1/ads" "api-keys-list|GET /v1/api-keys|/v1/api-keys"; do
  IFS='|' read -r name route path <<<"$spec"
  jq --arg r "$route" --arg p "$path" '.routeKey=$r | .rawPath=$p | .requestContext.routeKey=$r | .requestContext.http.path=$p' \
    apigw-status.json > "apigw-$name.json"
done
