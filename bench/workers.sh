#!/usr/bin/env bash
# 1 worker against --workers 2 (and more: WORKERS="1 2 4"), interleaved by
# round (the order reversed every other round: the peer that runs second in a
# round is measured slower on this machine), with nginx direct in the same run. The daemon's config is
# bench/cliproxyd-bench-workers.yaml: the shared state-store on a
# redis-server this script starts on 127.0.0.1:16379 (in a temporary
# directory, nothing saved), used by every count of workers alike.
#
#   cp -r ../shared/bench /tmp/cliproxyd-bench && /tmp/cliproxyd-bench/setup.sh
#   ROUNDS=2 bench/workers.sh
#
# CPU and RSS are summed over the daemon's process tree (parent and workers).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
HARNESS="${HARNESS:-/tmp/cliproxyd-bench}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
WORKERS="${WORKERS:-1 2}"
ROUNDS="${ROUNDS:-2}"
export LEVELS="${LEVELS:-8 32 128}" STREAM_LEVELS="${STREAM_LEVELS-32}"
RUN_ID="${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}"
export RUN_ID

REDIS_DIR="$(mktemp -d /tmp/cliproxyd-bench-redis.XXXXXX)"
redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no --dir "$REDIS_DIR" >/dev/null &
REDIS=$!
"$HARNESS/upstream/upstream.sh" start
DAEMON=""
stop_daemon() {
  if [ -n "$DAEMON" ]; then kill -TERM "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi
  DAEMON=""
}
cleanup() { stop_daemon; kill -TERM "$REDIS" 2>/dev/null || true; wait "$REDIS" 2>/dev/null || true
            rm -rf "$REDIS_DIR"; "$HARNESS/upstream/upstream.sh" stop >/dev/null || true; }
trap cleanup EXIT

REVERSED="$(echo $WORKERS | tr ' ' '\n' | tac | tr '\n' ' ')"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 0 ]; then ORDER="$REVERSED"; else ORDER="$WORKERS"; fi
  for n in $ORDER; do
    LOG="$(mktemp /tmp/cliproxyd-bench-daemon.XXXXXX.log)"
    PYTHONPATH="$ROOT" "$PYTHON" -c "from twisted.scripts.twistd import run; run()" \
      -n --pidfile= cliproxyd --config "$HERE/cliproxyd-bench-workers.yaml" --workers "$n" >"$LOG" 2>&1 &
    DAEMON=$!
    # Every worker up: each logs its line once it serves (1 worker: the daemon itself).
    for _ in $(seq 300); do
      if [ "$n" = 1 ]; then curl -fsS -o /dev/null http://127.0.0.1:8317/healthz 2>/dev/null && break
      elif [ "$(grep -c 'serves its listener' "$LOG")" = "$n" ]; then break; fi
      sleep 0.1
    done
    DESC="cliproxyd $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo dev), $n worker(s), round $round" \
      "$HARNESS/run.sh" "cliproxyd-w$n" http://127.0.0.1:8317/v1/chat/completions "$DAEMON"
    stop_daemon
    echo "daemon log ($n workers, round $round): $LOG"
  done
done
DESC="nginx direct" "$HARNESS/run.sh" direct http://127.0.0.1:18080/auto/v1/chat/completions
python3 "$HARNESS/report.py"
