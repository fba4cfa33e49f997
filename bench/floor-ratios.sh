#!/usr/bin/env bash
# Issue 18's targets, as ratios to Twisted's floor in one harness session: nginx direct (for the
# added latency), the floor relay, cliproxyd with everything on (metrics on, /metrics scraped every
# SCRAPE s) with 2 keys and with KEYS keys (10,000 by default), and any EXTRA peers of the harness
# (e.g. EXTRA="portkey litellm-1w" after ../shared/bench/setup-peers.sh). ROUNDS rounds, the order
# reversed every other round (the peer that runs later in a round measures slower on this machine).
#
#   cp -r ../shared/bench /tmp/cliproxyd-bench && /tmp/cliproxyd-bench/setup.sh
#   ROUNDS=2 bench/floor-ratios.sh && python3 bench/ratios.py --csv /tmp/cliproxyd-bench/results.csv
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
HARNESS="${HARNESS:-/tmp/cliproxyd-bench}"
ROUNDS="${ROUNDS:-2}"
SCRAPE="${SCRAPE:-15}"
KEYS="${KEYS:-10000}"
EXTRA="${EXTRA:-}"
export CLIPROXYD_VENV="${CLIPROXYD_VENV:-$ROOT/.venv}"
export LEVELS="${LEVELS:-1 32 128}" STREAM_LEVELS="${STREAM_LEVELS-32}"
VAR="$HARNESS/var/floor-ratios"; mkdir -p "$VAR"
HASH='$2b$04$pkbB8Fqg3NUc.UqLMJD5c.3me50YcS3GiA4EhWIqDwFq5wEBZ2UDq'  # bcrypt of bench-mgmt
REV="$(git -C "$ROOT" rev-parse --short HEAD)"

config() {  # config NAME PORT NKEYS
  {
    printf 'host: "127.0.0.1"\nport: %s\napi-keys: ["sk-bench-client"]\n' "$2"
    printf 'remote-management:\n  secret-key: "%s"\nmetrics:\n  enabled: true\n' "$HASH"
    printf 'openai-compatibility:\n  - name: "bench"\n    base-url: "http://127.0.0.1:18080/auto/v1"\n'
    printf '    models:\n      - name: "gpt-4o-mini"\n    api-key-entries:\n'
    seq 1 "$3" | sed 's/.*/      - api-key: "sk-upstream-key-&"/'
  } > "$VAR/$1.yaml"
  cat > "$HARNESS/peers/$1.env" <<ENV
URL=http://127.0.0.1:$2/v1/chat/completions
START="$HERE/peer-start.sh $VAR/$1.yaml $SCRAPE"
DESC="cliproxyd $REV, $3 keys, metrics on, /metrics scraped every ${SCRAPE}s"
ENV
}
config cpd-2keys 18427 2
config cpd-manykeys 18428 "$KEYS"
ORDER=(direct floor cpd-2keys cpd-manykeys $EXTRA)
SESSION="$(date -u +%Y%m%dT%H%M%SZ)"
for round in $(seq 1 "$ROUNDS"); do
  peers=""
  if (( round % 2 == 0 )); then for ((i=${#ORDER[@]}-1; i>=0; i--)); do peers+="${ORDER[i]} "; done
  else peers="${ORDER[*]}"; fi
  ROUNDS=1 "$HARNESS/run_all.sh" $peers
done
python3 "$HERE/ratios.py" --csv "$HARNESS/results.csv" --since "$SESSION"
