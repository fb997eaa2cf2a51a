#!/usr/bin/env bash
# Fuzzes the API from its own OpenAPI document with schemathesis (from PyPI), in every phase
# (examples, coverage, fuzzing, stateful), three times: without credentials, with an admin's
# session and with an API key. It fails on any 5xx and on any answer that breaks the document
# (status code, content type, headers, body schema).
#
#   scripts/fuzz.sh [EXAMPLES]   examples per operation: 100 by default; CI runs fewer
#
# Two of schemathesis's checks are left out on purpose: `unsupported_method` (the contract
# answers an unknown method with the 404 envelope, not 405) and `positive_data_acceptance`
# (a schema-valid body can still be refused by business rules: a wrong captcha, a bad signature).
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES=${1:-100}
PORT=${FUZZ_PORT:-18099}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

command -v st >/dev/null || pip install -q schemathesis
cargo build -q --bin meterapi --example loadgen
WORK=$(mktemp -d /tmp/meterapi-fuzz.XXXXXX)
chmod 755 "$WORK"
APP_ENV=test RUST_LOG=warn DATA_DIR="$WORK" LISTEN_ADDR="127.0.0.1:$PORT" CAPTCHA_TEST_CODE=pass \
  STRIPE_WEBHOOK_SECRET=whsec_fuzz target/debug/meterapi >"$WORK/service.log" 2>&1 &
SERVICE=$!
trap 'kill $SERVICE 2>/dev/null || true; wait $SERVICE 2>/dev/null || true' EXIT
# The service starts its own PostgreSQL first: on a loaded machine that can take a while, so
# wait up to two minutes, and stop at once if the process died.
deadline=$((SECONDS + 120))
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do
  if ! kill -0 "$SERVICE" 2>/dev/null; then
    echo "the service exited before it served; its log:" >&2
    cat "$WORK/service.log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "the service did not answer /healthz within 120 s; its log:" >&2
    cat "$WORK/service.log" >&2
    exit 1
  fi
  sleep 0.2
done
BASE="http://127.0.0.1:$PORT"

# An admin with a session, credits and an API key, and a provider that points back at the
# service itself.
HASH=$(target/debug/examples/loadgen hash "fuzz password 1")
psql -h "$WORK/postgres" -U postgres meterapi -qc \
  "INSERT INTO users (email, password_hash, role) VALUES ('fuzz@example.com', '$HASH', 'admin')"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
TOKEN=$(curl -sf -X POST -H 'content-type: application/json' \
  -d '{"email": "fuzz@example.com", "password": "fuzz password 1"}' "$BASE/myapi/auth/login" | json "['data']['token']")
USER_ID=$(curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/myapi/user/profile" | json "['data']['id']")
curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"amount": 1000000, "reason": "fuzzing"}' "$BASE/myapi/admin/users/$USER_ID/credits" >/dev/null
KEY=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"name": "fuzz"}' "$BASE/myapi/keys" | json "['data']['key']")
curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d "{\"slug\": \"self\", \"base_url\": \"$BASE\", \"cost\": 1, \"timeout_ms\": 2000}" \
  "$BASE/myapi/admin/providers" >/dev/null

status=0
run() { # label, extra schemathesis arguments...
  local label=$1; shift
  echo "== schemathesis: $label"
  st run "$BASE/openapi.json" --checks "$CHECKS" --max-examples "$EXAMPLES" -w 2 \
    --phases examples,coverage,fuzzing,stateful --seed 1 "$@" || status=1
}
run "anonymous"
run "API key" -H "X-API-Key: $KEY"
# Last, since the stateful phase may log the session out or change its password.
run "admin session" -H "Authorization: Bearer $TOKEN"
if grep -q '"level":"ERROR"\| ERROR ' "$WORK/service.log"; then
  echo "the service logged errors while fuzzed:" >&2
  grep ' ERROR \|"level":"ERROR"' "$WORK/service.log" | head -20 >&2
  status=1
fi
exit $status
