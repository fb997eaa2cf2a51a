#!/usr/bin/env bash
# Clones this repository into a fresh directory that only its owner can enter (as root: what
# a checkout under root's home looks like), starts the built service there with nothing
# configured, and waits until it answers /readyz: the private PostgreSQL cluster must start
# from such a checkout. Usage: scripts/private-checkout.sh [path of the built binary]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-target/debug/meterapi}")
private=$(mktemp -d)
chmod 700 "$private"
log="$private/service.log"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  # The cluster may live outside the checkout (said in the log); it goes with the checkout.
  moved=$(grep -o 'location=[^ ]*' "$log" 2>/dev/null | head -1 | cut -d= -f2 || true)
  [ -n "$moved" ] && rm -rf "$(dirname "$moved")"
  rm -rf "$private"
}
trap cleanup EXIT
git clone -q . "$private/meterapi"
cd "$private/meterapi"
# Nothing configured but the port, so that a service already on 8080 cannot answer for it.
env -i PATH="$PATH" HOME="$private" NO_COLOR=1 LISTEN_ADDR=127.0.0.1:18080 "$binary" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 240); do
  if curl -fsS http://127.0.0.1:18080/readyz >/dev/null 2>&1; then
    echo "private checkout: the service started from a 0700 directory and is ready"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.5
done
echo "private checkout: the service did not become ready; its log:" >&2
cat "$log" >&2
exit 1
