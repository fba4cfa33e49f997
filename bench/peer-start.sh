#!/usr/bin/env bash
# Start cliproxyd from this checkout as a peer of the shared harness (../shared/bench run_all.sh):
#   peer-start.sh CONFIG [SCRAPE_SECONDS]
# setsid'd, so run_all.sh stops the whole group (a scraper loop included) by the PID printed last.
# With SCRAPE_SECONDS, GET /metrics is fetched every that many seconds while it runs (with the
# management key of the config, "bench-mgmt"), as a Prometheus server would, only more often.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
CONFIG="$1"; SCRAPE="${2:-}"
PYTHON="${PYTHON:-${CLIPROXYD_VENV:-$ROOT/.venv}/bin/python}"
PORT="$(awk '/^port:/{print $2}' "$CONFIG")"
LOG="$(mktemp /tmp/cliproxyd-peer.XXXXXX.log)"
cd "$ROOT"
setsid bash -c '
  PYTHONPATH="$0" "$1" -c "from twisted.scripts.twistd import run; run()" -n --pidfile= cliproxyd --config "$2" &
  if [ -n "$4" ]; then
    while sleep "$4"; do curl -s -o /dev/null -H "Authorization: Bearer bench-mgmt" "http://127.0.0.1:$3/metrics"; done &
  fi
  wait' "$ROOT" "$PYTHON" "$CONFIG" "$PORT" "$SCRAPE" >"$LOG" 2>&1 </dev/null &
PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && { echo "$PID"; exit 0; }; sleep 0.1; done
echo "cliproxyd did not start; see $LOG" >&2; exit 1
