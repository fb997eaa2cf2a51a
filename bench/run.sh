#!/usr/bin/env bash
# Measures meterapi against its references, side by side on loopback in one run, and writes
# bench/RESULTS.md. Everything it needs is installed when missing (nginx from Debian's packages,
# oha from crates.io), PostgreSQL and Redis are started when not running.
#
#   bench/run.sh          the full run (a few minutes)
#   bench/run.sh --quick  one short round of everything, as a smoke test
#   ARMS="nginx gateway" THROUGHPUT_ONLY=1 bench/run.sh --quick   just those arms' throughput
#   ACCOUNTS_ONLY=1 bench/run.sh   only the many-accounts arm (N = 1, 200, 2,000, 10,000 cold
#                                  and again warm; ACCOUNT_NS="1 10000" chooses others;
#                                  ACCOUNT_CONNECTIONS=1 calls one at a time, so the first
#                                  pass times a lone cold call instead of a crowd's)
#   FLOOD_ONLY=1 bench/run.sh   only the gateway's p99 at 500 requests/s without and during a
#                               login flood, FLOOD_ROUNDS times (3)
#   WEBHOOKS_ONLY=1 bench/run.sh   only the signed webhook deliveries, WEBHOOK_ROUNDS times (3)
#   LATENCY_ONLY=1 bench/run.sh   only nginx's and the gateway's latency at a fixed 2,000
#                                 requests/s, LATENCY_ROUNDS times (3)
#   INSTRUCTIONS_ONLY=1 bench/run.sh   the gateway's instructions per call, counted by
#                                      callgrind over INSTRUCTION_CALLS (5,000) calls after a
#                                      warm-up: compare two builds with BENCH_BIN; then nginx
#                                      proxy_pass's per request, counted the same way
#   WORKERS=2 bench/run.sh   nginx's proxy and meterapi with two workers each (default one;
#                            with fewer workers than cores the throughput arms also run with
#                            as many as cores, as `nginx-wN` and `gateway-wN`)
#   BENCH_BIN=... BENCH_LOADGEN=... bench/run.sh   measures those copies of meterapi and the
#                            load tool instead of building the checkout (an A/B of two builds)
#   PROFILE=1 bench/run.sh   also samples the gateway arm (and each pass of the many-accounts
#                            arm, to $WORK/perf-accounts-<N>.data) with perf (linux-perf) and writes
#                            the hottest functions to $WORK/profile.txt
#
# Arms: `direct` (the load tool against the upstream nginx), `nginx` (an nginx proxy_pass with
# upstream keep-alive in front of it), `gateway` (meterapi with every check on, forwarding to
# the same upstream) and `gateway+redis` (the same with REDIS_URL). The proxy and meterapi get
# the same number of workers (nginx worker_processes, meterapi HTTP_WORKERS: $WORKERS, one unless
# set), the arms are interleaved round by round, and the tables give medians. The figures are ratios measured in the same run; the absolute
# numbers are only context.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export WORKERS=${WORKERS:-1}
ROUNDS=3 SECS=8 CONNECTIONS=64 RATE_SECS=10 LOGIN_SECS=5 WEBHOOK_EVENTS=5000 ORDER_SECS=5
if [ "${1:-}" = "--quick" ]; then
  ROUNDS=1 SECS=2 RATE_SECS=2 LOGIN_SECS=2 WEBHOOK_EVENTS=500 ORDER_SECS=2
fi
UP=18081 PROXY=18082 GW=18083 GWR=18084 STRIPE=18085 PROXY_ALL=18086 GW_ALL=18087
NGINX_COUNTED=18088
# With fewer workers than cores, the throughput arms run a second time with as many workers as
# cores (`nginx-wN`, `gateway-wN`), each pair on its own nginx and gateway: issue 13 sets its
# targets for both.
CORES=$(nproc)
ALL_CORE_ARMS=""
ONLY_OTHER_ARMS=${ACCOUNTS_ONLY:-0}${FLOOD_ONLY:-0}${WEBHOOKS_ONLY:-0}${LATENCY_ONLY:-0}${INSTRUCTIONS_ONLY:-0}
if [ "$WORKERS" -lt "$CORES" ] && [ "$ONLY_OTHER_ARMS" = 00000 ]; then
  ALL_CORE_ARMS="nginx-w$CORES gateway-w$CORES"
fi
# A key of the form the service issues ("mk_" and 43 URL-safe base64 characters): any other
# form is refused before any look-up.
KEY="mk_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | head -c 43)"
PASSWORD="bench password 123"
WORK=$(mktemp -d /tmp/meterapi-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for conf in upstream proxy proxy-all; do
    [ -f "$WORK/$conf.pid" ] && kill "$(cat "$WORK/$conf.pid")" 2>/dev/null || true
  done
}
trap cleanup EXIT

log() { printf '\n== %s\n' "$*" >&2; }

# --- Tools and services ------------------------------------------------------------------
if ! command -v nginx >/dev/null; then
  log "installing nginx"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx
fi
if ! command -v oha >/dev/null; then
  log "installing oha from crates.io"
  cargo install oha --version 1.16.0 --locked
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
fi
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

# BENCH_BIN and BENCH_LOADGEN (copies of earlier builds) skip the build: an A/B then measures
# the two copies, whatever the checkout holds meanwhile.
if [ -z "${BENCH_BIN:-}" ] || [ -z "${BENCH_LOADGEN:-}" ]; then
  log "building the release binary"
  cargo build --release --quiet --bin meterapi --example loadgen
fi
BIN=${BENCH_BIN:-$ROOT/target/release/meterapi}
LOADGEN=${BENCH_LOADGEN:-$ROOT/target/release/examples/loadgen}

# --- The upstream and the nginx proxy ---------------------------------------------------
mkdir -p "$WORK/www"
python3 - "$WORK/www/data.json" <<'PY'
import json, sys
body = json.dumps({"data": ""})
body = json.dumps({"data": "x" * (1024 - len(body))})
assert len(body) == 1024
open(sys.argv[1], "w").write(body)
PY
chmod -R o+rX "$WORK/www"
cat > "$WORK/upstream.conf" <<EOF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream.err;
events { worker_connections 8192; }
http {
  log_format hits '\$request_uri';
  access_log $WORK/upstream.log hits buffer=256k flush=1s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP;
    location / { root $WORK/www; default_type application/json; }
  }
}
EOF
proxy_conf() { # workers, port, name
cat > "$WORK/$3.conf" <<EOF
worker_processes $1;
pid $WORK/$3.pid;
error_log $WORK/$3.err;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}
nginx -c "$WORK/upstream.conf"
proxy_conf "$WORKERS" "$PROXY" proxy
nginx -c "$WORK/proxy.conf"
if [ -n "$ALL_CORE_ARMS" ]; then
  proxy_conf "$CORES" "$PROXY_ALL" proxy-all
  nginx -c "$WORK/proxy-all.conf"
fi

python3 "$ROOT/bench/fake_stripe.py" "$STRIPE" "$ROOT/tests/fixtures/stripe/fixtures3.json" &
PIDS+=($!)

# --- The service, twice on one database -------------------------------------------------
DB=meterapi_bench
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
DBURL="postgres://postgres@127.0.0.1:5432/$DB"
start_gateway() { # port, extra env...; sets STARTED to the pid
  local port=$1; shift
  env APP_ENV=development DATABASE_URL="$DBURL" LISTEN_ADDR="127.0.0.1:$port" \
    HTTP_WORKERS="$WORKERS" DATA_DIR="$WORK/data-$port" AUTH_LOGIN_PER_IP_PER_MINUTE=100000 \
    TRUSTED_PROXIES=127.0.0.1/32 \
    STRIPE_SECRET_KEY=sk_test_bench STRIPE_WEBHOOK_SECRET=whsec_bench \
    STRIPE_API_BASE="http://127.0.0.1:$STRIPE/" "$@" "${WRAP[@]}" "$BIN" >"$WORK/gateway-$port.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}
# Up to a minute: under callgrind (INSTRUCTIONS_ONLY) the service starts some twenty times slower.
wait_up() { for _ in $(seq 600); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done; echo "port $1 never came up" >&2; exit 1; }
# INSTRUCTIONS_ONLY runs the in-process gateway under callgrind, which starts counting only
# when told (after a warm-up).
WRAP=()
if [ "${INSTRUCTIONS_ONLY:-0}" = 1 ]; then
  WRAP=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.%p")
fi
start_gateway $GW
GW_PID=$STARTED
WRAP=()
wait_up $GW
start_gateway $GWR REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX="bench-$$"
GWR_PID=$STARTED
wait_up $GWR
if [ -n "$ALL_CORE_ARMS" ]; then
  # `env` applies its assignments in order: this one overrides start_gateway's own.
  start_gateway $GW_ALL HTTP_WORKERS="$CORES"
  GW_ALL_PID=$STARTED
  wait_up $GW_ALL
fi

USER_ID=00000000-0000-0000-0000-0000000000b1
HASH=$("$LOADGEN" hash "$PASSWORD")
FUNDS=1000000000
psql "$DBURL" -v ON_ERROR_STOP=1 -q <<SQL >/dev/null
INSERT INTO users (id, email, password_hash) VALUES ('$USER_ID', 'bench@example.com', '$HASH');
INSERT INTO credit_accounts (user_id, balance) VALUES ('$USER_ID', $FUNDS);
INSERT INTO ledger_entries (user_id, amount, balance_after, reason, idempotency_key)
  VALUES ('$USER_ID', $FUNDS, $FUNDS, 'adjustment', 'bench-funding');
UPDATE plans SET rps_limit = 100000000, rph_limit = 2000000000, monthly_quota = NULL
  WHERE plan_type = 'free';
INSERT INTO plans (name, plan_type, amount_cents, credits, rps_limit, rph_limit)
  VALUES ('Bench pack', 'one_time', 500, 1000, 10, 1000);
INSERT INTO providers (slug, base_url, cost, timeout_ms) VALUES ('bench', 'http://127.0.0.1:$UP', 1, 10000);
INSERT INTO api_keys (user_id, name, prefix, key_hash)
  VALUES ('$USER_ID', 'bench', left('$KEY', 11), sha256(convert_to('$KEY', 'UTF8')));
INSERT INTO users (email, password_hash)
  SELECT 'login' || i || '@example.com', '$HASH' FROM generate_series(0, 15) AS i;
SQL
sleep 1.5 # the gateways reload providers every second

# --- Many accounts ----------------------------------------------------------------------
# Issue 18's arm: every call with the key of an account drawn at random from N funded
# accounts (each its own key), against the in-process gateway; requests/s at each N as a
# share of N = 1, and how long after the load stopped the charges were all settled.
accounts_arm() {
  local max=10000
  psql "$DBURL" -v ON_ERROR_STOP=1 -q <<SQL >/dev/null
INSERT INTO users (id, email, password_hash)
  SELECT ('00000000-0000-0000-0001-' || lpad(to_hex(i), 12, '0'))::uuid, 'acct' || i || '@example.com', '$HASH'
  FROM generate_series(1, $max) AS i;
INSERT INTO credit_accounts (user_id, balance)
  SELECT ('00000000-0000-0000-0001-' || lpad(to_hex(i), 12, '0'))::uuid, $FUNDS FROM generate_series(1, $max) AS i;
INSERT INTO ledger_entries (user_id, amount, balance_after, reason, idempotency_key)
  SELECT ('00000000-0000-0000-0001-' || lpad(to_hex(i), 12, '0'))::uuid, $FUNDS, $FUNDS, 'adjustment', 'bench-acct-' || i
  FROM generate_series(1, $max) AS i;
INSERT INTO api_keys (user_id, name, prefix, key_hash)
  SELECT ('00000000-0000-0000-0001-' || lpad(to_hex(i), 12, '0'))::uuid, 'acct',
         left('mk_acct' || lpad(i::text, 39, '0'), 11),
         sha256(convert_to('mk_acct' || lpad(i::text, 39, '0'), 'UTF8'))
  FROM generate_series(1, $max) AS i;
SQL
  : > "$WORK/accounts.tsv"
  local total_ok=0 base_rps=""
  # The last N runs twice: first with accounts this instance has not seen (cold), then again
  # with the same accounts loaded and holding leases (warm).
  local seen=" "
  for n in ${ACCOUNT_NS:-1 200 2000 10000 10000}; do
    local label=$n
    case "$seen" in *" $n "*) label="$n (again)" ;; esac
    seen="$seen$n "
    seq 1 "$n" | awk '{ printf "mk_acct%039d\n", $1 }' > "$WORK/keys-$n.txt"
    log "many accounts: N=$n"
    local perf_pid=""
    if [ "${PROFILE:-0}" = 1 ]; then
      local profile="$WORK/perf-accounts-${label// /-}"
      perf record -F 999 -g -p "$GW_PID" -o "$profile.data" -- sleep "$ACCOUNT_SECS" 2>/dev/null &
      perf_pid=$!
    fi
    read -r rps ok other first_ms later_ms < <("$LOADGEN" accounts "http://127.0.0.1:$GW/api/v1/bench/data.json" \
      "$WORK/keys-$n.txt" "$ACCOUNT_SECS" "$ACCOUNT_CONNECTIONS")
    if [ -n "$perf_pid" ]; then
      wait "$perf_pid" || true
      echo "profile of N=$label: $profile.data" >&2
    fi
    local stop_ns
    stop_ns=$(date +%s%N)
    total_ok=$((total_ok + ok))
    # Settled when every successful call of these accounts is charged.
    local lag_ms=""
    for _ in $(seq 1 1200); do
      local charged
      charged=$(psql "$DBURL" -tAc "SELECT COALESCE(-sum(amount), 0) FROM ledger_entries
        WHERE reason = 'usage' AND user_id::text LIKE '00000000-0000-0000-0001-%'")
      if [ "$charged" -ge "$total_ok" ]; then
        lag_ms=$(( ($(date +%s%N) - stop_ns) / 1000000 ))
        break
      fi
      sleep 0.05
    done
    base_rps=${base_rps:-$rps}
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$label" "$rps" \
      "$(python3 -c "print(f'{$rps / $base_rps:.2f}')")" "${lag_ms:-none}" "$first_ms" "$later_ms" \
      "$ok" "$other" >> "$WORK/accounts.tsv"
  done
  charged=$(psql "$DBURL" -tAc "SELECT COALESCE(-sum(amount), 0) FROM ledger_entries
    WHERE reason = 'usage' AND user_id::text LIKE '00000000-0000-0000-0001-%'")
  echo "accounts: successful=$total_ok charged=$charged" > "$WORK/accounts-exactness.txt"
  { printf "N\trequests/s\tshare of N=1\tsettled after (ms)\tfirst call (ms)\tlater calls (ms)\tok\tother\n"
    cat "$WORK/accounts.tsv"; } \
    | column -t -s $'\t' >&2
  cat "$WORK/accounts-exactness.txt" >&2
}
ACCOUNT_SECS=${ACCOUNT_SECS:-15} ACCOUNT_CONNECTIONS=${ACCOUNT_CONNECTIONS:-32}
if [ "${ACCOUNTS_ONLY:-0}" = 1 ]; then
  sleep 1.5 # the gateways reload providers every second
  accounts_arm
  exit 0
fi

# --- Instructions per call ---------------------------------------------------------------
# Instructions are counted, not timed: the same build, inputs and calls give the same count
# whatever else the machine does, so a change too small for the throughput arms' spread
# (about 15 % from run to run) still shows, as a before -> after of two builds (`BENCH_BIN`).
if [ "${INSTRUCTIONS_ONLY:-0}" = 1 ]; then
  calls=${INSTRUCTION_CALLS:-5000}
  call_url="http://127.0.0.1:$GW/api/v1/bench/data.json"
  sleep 1.5 # the gateways reload providers every second
  # The warm-up loads the key and the account, reserves a lease and opens the connections.
  oha --no-tui -n 500 -c 8 -H "X-API-Key: $KEY" "$call_url" > /dev/null
  callgrind_control -i on "$GW_PID" > /dev/null
  oha --no-tui -n "$calls" -c 8 -H "X-API-Key: $KEY" "$call_url" > "$WORK/instructions-oha.txt"
  callgrind_control -d "$GW_PID" > /dev/null
  dump=$(ls "$WORK"/callgrind."$GW_PID".* | head -1)
  callgrind_annotate --inclusive=yes "$dump" > "$WORK/instructions-all.txt" 2>/dev/null || true
  head -80 "$WORK/instructions-all.txt" > "$WORK/instructions.txt"
  total=$(sed -n 's/^summary: *//p; s/^totals: *//p' "$dump" | head -1 | awk '{print $1}')
  ok=$(grep -o '\[200\] *[0-9]* responses' "$WORK/instructions-oha.txt" | awk '{print $2}' || true)
  # A count over refusals or errors would measure another path than a metered call's.
  if [ "${ok:-0}" != "$calls" ]; then
    echo "only ${ok:-0} of $calls calls answered 200: see $WORK/instructions-oha.txt" >&2
    exit 1
  fi
  echo "instructions per call: $((total / calls)) ($total over $calls calls, all answered 200; the gateway's every thread, settlement ticks included)"
  echo "the heaviest functions, inclusive: $WORK/instructions.txt"
  # The reference counted the same way: nginx's proxy_pass in one process (no master), the
  # same upstream, body, warm-up and calls.
  { echo "daemon off;"; echo "master_process off;"; grep -v '^pid' "$WORK/proxy.conf" \
      | sed "s/listen 127.0.0.1:$PROXY;/listen 127.0.0.1:$NGINX_COUNTED;/"; } > "$WORK/counted.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/nginx-callgrind.%p" \
    nginx -c "$WORK/counted.conf" -g "pid $WORK/counted.pid;" > "$WORK/nginx-callgrind.log" 2>&1 &
  counted=$!
  PIDS+=("$counted")
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_COUNTED/data.json" && break; sleep 0.1; done
  nginx_url="http://127.0.0.1:$NGINX_COUNTED/data.json"
  oha --no-tui -n 500 -c 8 -H "X-API-Key: $KEY" "$nginx_url" > /dev/null
  callgrind_control -i on "$counted" > /dev/null
  oha --no-tui -n "$calls" -c 8 -H "X-API-Key: $KEY" "$nginx_url" > "$WORK/nginx-instructions-oha.txt"
  callgrind_control -d "$counted" > /dev/null
  dump=$(ls "$WORK"/nginx-callgrind."$counted".* | head -1)
  total=$(sed -n 's/^summary: *//p; s/^totals: *//p' "$dump" | head -1 | awk '{print $1}')
  ok=$(grep -o '\[200\] *[0-9]* responses' "$WORK/nginx-instructions-oha.txt" | awk '{print $2}' || true)
  echo "nginx proxy_pass, instructions per request: $((total / calls)) (${ok:-0} of $calls answered 200)"
  exit 0
fi

# --- Measuring --------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pids...: user + system ticks
  local total=0
  for pid in "$@"; do
    read -r -a stat < "/proc/$pid/stat"
    total=$((total + stat[13] + stat[14]))
  done
  echo $total
}
workers_of() { pgrep -P "$(cat "$WORK/$1.pid")" | tr '\n' ' '; }
url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$UP/data.json" ;;
    nginx) echo "http://127.0.0.1:$PROXY/data.json" ;;
    nginx-w*) echo "http://127.0.0.1:$PROXY_ALL/data.json" ;;
    gateway-w*) echo "http://127.0.0.1:$GW_ALL/api/v1/bench/data.json" ;;
    gateway) echo "http://127.0.0.1:$GW/api/v1/bench/data.json" ;;
    gateway+redis) echo "http://127.0.0.1:$GWR/api/v1/bench/data.json" ;;
  esac
}
pids_of() {
  case $1 in
    direct) workers_of upstream ;;
    nginx) workers_of proxy ;;
    gateway) echo "$GW_PID" ;;
    gateway+redis) echo "$GWR_PID" ;;
    nginx-w*) workers_of proxy-all ;;
    gateway-w*) echo "$GW_ALL_PID" ;;
  esac
}
oha_json() { oha --no-tui --output-format json --wait-ongoing-requests-after-deadline "$@"; }

read -r -a ARMS <<< "${ARMS:-direct nginx gateway gateway+redis $ALL_CORE_ARMS}"
REPORT="python3 $ROOT/bench/report.py"
: > "$WORK/throughput.tsv"
usage_charged() { psql "$DBURL" -tAc "SELECT COALESCE(-sum(amount), 0) FROM ledger_entries WHERE reason = 'usage'"; }
upstream_hits() { wc -l < "$WORK/upstream.log" 2>/dev/null || echo 0; }

# The gateway's latency at 500 requests/s while 16 connections sign in as fast as they can
# (Argon2 on every core), after the same load without the flood as the reference.
log_flood() { log "gateway latency during a login flood"; }
flood_arm() {
  oha_json -z "${LOGIN_SECS}s" -q 500 --latency-correction -c 16 -H "X-API-Key: $KEY" \
    "$(url_of gateway)" > "$WORK/oha.json"
  $REPORT oha "$WORK/oha.json" "gateway-without-flood" 0 "$CLK_TCK"
  "$LOADGEN" logins "http://127.0.0.1:$GW/myapi/auth/login" "$PASSWORD" "$((LOGIN_SECS + 2))" 16 \
    flood > /dev/null &
  local flood=$!
  sleep 1
  oha_json -z "${LOGIN_SECS}s" -q 500 --latency-correction -c 16 -H "X-API-Key: $KEY" \
    "$(url_of gateway)" > "$WORK/oha.json"
  $REPORT oha "$WORK/oha.json" "gateway-during-flood" 0 "$CLK_TCK"
  wait $flood
}
if [ "${FLOOD_ONLY:-0}" = 1 ]; then
  sleep 1.5 # the gateways reload providers every second
  for round in $(seq 1 "${FLOOD_ROUNDS:-3}"); do
    log_flood
    flood_arm
  done
  exit 0
fi
if [ "${WEBHOOKS_ONLY:-0}" = 1 ]; then
  for round in $(seq 1 "${WEBHOOK_ROUNDS:-3}"); do
    log "webhooks, round $round: events per second, failed deliveries"
    "$LOADGEN" webhooks "http://127.0.0.1:$GW" whsec_bench "$WEBHOOK_EVENTS" 32 >&2
  done
  exit 0
fi
fixed_rate_arms() {
  log "latency at a fixed 2000 requests/s"
  for arm in nginx gateway; do
    oha_json -z "${RATE_SECS}s" -q 2000 --latency-correction -c "$CONNECTIONS" \
      -H "X-API-Key: $KEY" "$(url_of "$arm")" > "$WORK/oha.json"
    $REPORT oha "$WORK/oha.json" "$arm" 0 "$CLK_TCK"
  done
}
if [ "${LATENCY_ONLY:-0}" = 1 ]; then
  sleep 1.5 # the gateways reload providers every second
  for round in $(seq 1 "${LATENCY_ROUNDS:-3}"); do
    fixed_rate_arms
  done
  exit 0
fi
charged_before=$(usage_charged)
gateway_ok=0 gateway_hits=0
for round in $(seq "$ROUNDS"); do
  for arm in "${ARMS[@]}"; do
    log "round $round/$ROUNDS: $arm"
    pids=$(pids_of "$arm")
    sleep 1.2 # the upstream's access log is flushed every second
    hits_before=$(upstream_hits)
    # One unmeasured second first: connection pools, caches and leases are warm in every arm.
    # Its calls still count for the exactness check below.
    oha_json -z 1s -c "$CONNECTIONS" -H "X-API-Key: $KEY" "$(url_of "$arm")" > "$WORK/warmup.json"
    warm_ok=$($REPORT oha "$WORK/warmup.json" warmup 0 "$CLK_TCK" | cut -f7)
    before=$(cpu_ticks $pids)
    if [ "${PROFILE:-0}" = 1 ] && [ "$arm" = gateway ] && [ "$round" = 1 ]; then
      perf record -F 1999 -g -p "$GW_PID" -o "$WORK/perf.data" -- sleep "$SECS" 2>/dev/null &
      PERF=$!
    fi
    oha_json -z "${SECS}s" -c "$CONNECTIONS" -H "X-API-Key: $KEY" "$(url_of "$arm")" > "$WORK/oha.json"
    after=$(cpu_ticks $pids)
    if [ -n "${PERF:-}" ]; then
      wait "$PERF" || true
      perf report -i "$WORK/perf.data" --stdio --no-children --percent-limit 0.7 2>/dev/null \
        | grep -v '^$' | head -150 > "$WORK/profile.txt" || true
      echo "profile: $WORK/profile.txt" >&2
      PERF=
    fi
    line=$($REPORT oha "$WORK/oha.json" "$arm" "$((after - before))" "$CLK_TCK")
    echo "$line" >> "$WORK/throughput.tsv"
    # An arm whose answers are errors measures how fast it refuses, not how fast it serves.
    if [ "$(echo "$line" | cut -f7)" -lt "$(( $(echo "$line" | cut -f8) * 99 / 100 ))" ]; then
      echo "the $arm arm answered errors: $line" >&2
      exit 1
    fi
    if [[ $arm == gateway* ]]; then
      sleep 1.2
      gateway_ok=$((gateway_ok + warm_ok + $(echo "$line" | cut -f7)))
      gateway_hits=$((gateway_hits + $(upstream_hits) - hits_before))
    fi
  done
done

if [ "${THROUGHPUT_ONLY:-0}" = 1 ]; then
  column -t "$WORK/throughput.tsv" >&2
  exit 0
fi

log "exactness after load"
sleep 2.5 # every gateway settles once a second
charged=$(( $(usage_charged) - charged_before ))
balance=$(psql "$DBURL" -tAc "SELECT balance FROM credit_accounts WHERE user_id = '$USER_ID'")
ledger_sum=$(psql "$DBURL" -tAc "SELECT sum(amount) FROM ledger_entries WHERE user_id = '$USER_ID'")
echo "successful=$gateway_ok upstream_hits=$gateway_hits charged=$charged balance=$balance ledger_sum=$ledger_sum" > "$WORK/exactness.txt"
cat "$WORK/exactness.txt" >&2
if [ "$charged" -ne "$gateway_ok" ] || [ "$gateway_hits" -ne "$gateway_ok" ] || [ "$balance" -ne "$ledger_sum" ]; then
  echo "EXACTNESS FAILED: the credits charged differ from the successful calls times the cost" >&2
  EXACT=failed
else
  EXACT=exact
fi
# The all-core pair is done (and settled): stopped, so that it takes nothing from the arms
# that follow.
if [ -n "$ALL_CORE_ARMS" ]; then
  kill "$GW_ALL_PID" "$(cat "$WORK/proxy-all.pid")" 2>/dev/null || true
fi


fixed_rate_arms > "$WORK/fixed.tsv"

log "login against the Argon2 limit"
T_HASH_MS=$("$LOADGEN" argon2 40)
LOGIN_BODY="{\"email\": \"bench@example.com\", \"password\": \"$PASSWORD\"}"
# Each connection signs in as its own user from its own address (loadgen logins): one account
# logging in many times at once is what the captcha rule is there to stop.
: > "$WORK/login.tsv"
for c in 1 2 4 8 16; do
  "$LOADGEN" logins "http://127.0.0.1:$GW/myapi/auth/login" "$PASSWORD" "$LOGIN_SECS" "$c" "c=$c" \
    >> "$WORK/login.tsv"
done
log_flood
flood_arm > "$WORK/flood.tsv"

log "payments"
WEBHOOKS=$("$LOADGEN" webhooks "http://127.0.0.1:$GW" whsec_bench "$WEBHOOK_EVENTS" 32)
TOKEN=$(curl -sf -X POST -H "content-type: application/json" -d "$LOGIN_BODY" \
  "http://127.0.0.1:$GW/myapi/auth/login" | python3 -c "import json,sys; print(json.load(sys.stdin)['data']['token'])")
PLAN_ID=$(psql "$DBURL" -tAc "SELECT id FROM plans WHERE name = 'Bench pack'")
oha_json -z "${ORDER_SECS}s" -c 16 -m POST -H "content-type: application/json" \
  -H "Authorization: Bearer $TOKEN" -d "{\"plan_id\": $PLAN_ID}" \
  "http://127.0.0.1:$GW/myapi/orders" > "$WORK/oha.json"
$REPORT oha "$WORK/oha.json" orders 0 "$CLK_TCK" > "$WORK/orders.tsv"

log "many accounts"
ACCOUNT_SECS=10
accounts_arm

$REPORT render "$WORK" "$T_HASH_MS" "$WEBHOOKS" "$EXACT" "$ROUNDS" "$SECS" "$CONNECTIONS" \
  > "$ROOT/bench/RESULTS.md"
log "wrote bench/RESULTS.md"
cat "$ROOT/bench/RESULTS.md"
[ "$EXACT" = exact ]
