#!/usr/bin/env bash
# Benchmark cliproxyd against the shared harness, with the direct-to-upstream
# figures from the same run beside it.
#
#   cp -r ../shared/bench /tmp/cliproxyd-bench && /tmp/cliproxyd-bench/setup.sh
#   bench/run.sh                      # HARNESS=/tmp/cliproxyd-bench by default
#
# The daemon runs from this checkout (PYTHONPATH) with the interpreter in
# $PYTHON (default: .venv/bin/python), one process, on 127.0.0.1:8317.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
HARNESS="${HARNESS:-/tmp/cliproxyd-bench}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
RUN_ID="${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}"
export RUN_ID

"$HARNESS/upstream/upstream.sh" start
LOG="$(mktemp /tmp/cliproxyd-bench-daemon.XXXXXX.log)"
PYTHONPATH="$ROOT" "$PYTHON" -c "from twisted.scripts.twistd import run; run()" \
  -n --pidfile= cliproxyd --config "$HERE/cliproxyd-bench.yaml" >"$LOG" 2>&1 &
DAEMON=$!
cleanup() { kill -TERM "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true
            "$HARNESS/upstream/upstream.sh" stop >/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do curl -fsS -o /dev/null http://127.0.0.1:8317/healthz 2>/dev/null && break; sleep 0.1; done

DESC="cliproxyd $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo dev), 1 process, 2 upstream keys" \
  "$HARNESS/run.sh" cliproxyd http://127.0.0.1:8317/v1/chat/completions "$DAEMON"
DESC="nginx direct" "$HARNESS/run.sh" direct http://127.0.0.1:18080/auto/v1/chat/completions
python3 "$HARNESS/report.py"
echo "daemon log: $LOG"
