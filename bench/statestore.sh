#!/usr/bin/env bash
# The request-path cost of the Redis StateStore (state-store) against the
# embedded one, end to end on the shared harness: the same daemon and config,
# with and without "state-store: redis://...", interleaved by round.
#
#   cp -r ../shared/bench /tmp/r17-bench && UPSTREAM_PORT=18280 /tmp/r17-bench/setup.sh
#   HARNESS=/tmp/r17-bench UPSTREAM_PORT=18280 bench/statestore.sh
#
# A redis-server (nothing saved to disk) is started on a free port in a temp
# dir and stopped at the end; the daemon listens on $PORT (default 18417).
# Knobs: ROUNDS [2], LEVELS ["1 32"], DURATION [10], WARMUP [3].
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
HARNESS="${HARNESS:-/tmp/r17-bench}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
PORT="${PORT:-18417}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
ROUNDS="${ROUNDS:-2}"
export LEVELS="${LEVELS:-1 32}" STREAM_LEVELS="${STREAM_LEVELS-}" UPSTREAM_PORT
export RUN_ID="${RUN_ID:-statestore-$(date -u +%Y%m%dT%H%M%SZ)}"
WORK="$(mktemp -d /tmp/r17-statestore.XXXXXX)"
REDIS_PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS=$!
"$HARNESS/upstream/upstream.sh" start
DAEMON=""
stop_daemon() { [ -n "$DAEMON" ] && { kill -TERM "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; }; DAEMON=""; }
cleanup() { stop_daemon; kill "$REDIS" 2>/dev/null || true; wait "$REDIS" 2>/dev/null || true
            "$HARNESS/upstream/upstream.sh" stop >/dev/null || true; }
trap cleanup EXIT

config() {  # $1: memory | redis
  sed -e "s/^port: 8317/port: $PORT/" -e "s#127.0.0.1:18080#127.0.0.1:$UPSTREAM_PORT#" "$HERE/cliproxyd-bench.yaml"
  [ "$1" = redis ] && echo "state-store: \"redis://127.0.0.1:$REDIS_PORT/0\""
  true
}

for round in $(seq "$ROUNDS"); do
  for kind in memory redis; do
    config "$kind" >"$WORK/$kind.yaml"
    PYTHONPATH="$ROOT" "$PYTHON" -c "from twisted.scripts.twistd import run; run()" \
      -n --pidfile= cliproxyd --config "$WORK/$kind.yaml" >"$WORK/daemon-$kind-$round.log" 2>&1 &
    DAEMON=$!
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break; sleep 0.1; done
    DESC="cliproxyd $(git -C "$ROOT" rev-parse --short HEAD), $kind store, round $round" \
      "$HARNESS/run.sh" "store-$kind" "http://127.0.0.1:$PORT/v1/chat/completions" "$DAEMON"
    if [ "$kind" = redis ]; then
      echo "redis counted: $(redis-cli -p "$REDIS_PORT" HGET '{cliproxyd}:usage' "$(printf 'gpt-4o-mini\x1frequests')")"
    fi
    stop_daemon
  done
done
python3 "$HARNESS/report.py"
echo "logs in $WORK"
