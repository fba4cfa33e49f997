#!/usr/bin/env bash
# Issue 18: what metrics cost. Runs, in one harness session, cliproxyd from this checkout with
# metrics on (and GET /metrics scraped every SCRAPE seconds, 1 by default: fifteen times what a
# usual Prometheus does) and with metrics.enabled: false, beside Twisted's floor relay, in
# alternating order (ROUNDS rounds: forward, then reversed, ...), and prints the harness's tables.
#
#   cp -r ../shared/bench /tmp/cliproxyd-bench && /tmp/cliproxyd-bench/setup.sh
#   bench/metrics-cost.sh        # HARNESS=/tmp/cliproxyd-bench  UPSTREAM_PORT=18080  ROUNDS=2
#
# Throughput cost = 1 - (req/s on) / (req/s off), per level and round; quote it from one session.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
HARNESS="${HARNESS:-/tmp/cliproxyd-bench}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18080}"
ROUNDS="${ROUNDS:-2}"
SCRAPE="${SCRAPE:-1}"
export UPSTREAM_PORT CLIPROXYD_VENV="${CLIPROXYD_VENV:-$ROOT/.venv}"
VAR="$HARNESS/var/metrics-cost"; mkdir -p "$VAR"
HASH='$2b$04$pkbB8Fqg3NUc.UqLMJD5c.3me50YcS3GiA4EhWIqDwFq5wEBZ2UDq'  # bcrypt of bench-mgmt

config() {  # config NAME PORT ENABLED
  cat > "$VAR/$1.yaml" <<YAML
host: "127.0.0.1"
port: $2
api-keys: ["sk-bench-client"]
remote-management:
  secret-key: "$HASH"
metrics:
  enabled: $3
openai-compatibility:
  - name: "bench"
    base-url: "http://127.0.0.1:$UPSTREAM_PORT/auto/v1"
    api-key-entries:
      - api-key: "sk-upstream-key-1"
      - api-key: "sk-upstream-key-2"
    models:
      - name: "gpt-4o-mini"
YAML
}
config metrics-on 18417 true
config metrics-off 18418 false
cat > "$HARNESS/peers/cpd-metrics-on.env" <<ENV
URL=http://127.0.0.1:18417/v1/chat/completions
START="$HERE/peer-start.sh $VAR/metrics-on.yaml $SCRAPE"
DESC="cliproxyd $(git -C "$ROOT" rev-parse --short HEAD), metrics on, /metrics scraped every ${SCRAPE}s"
ENV
cat > "$HARNESS/peers/cpd-metrics-off.env" <<ENV
URL=http://127.0.0.1:18418/v1/chat/completions
START="$HERE/peer-start.sh $VAR/metrics-off.yaml"
DESC="cliproxyd $(git -C "$ROOT" rev-parse --short HEAD), metrics.enabled false"
ENV
# The floor relay, on the same upstream port.
sed "s|http://127.0.0.1:18080/|http://127.0.0.1:$UPSTREAM_PORT/|" "$HARNESS/peers/floor/start.sh" > "$VAR/floor-start.sh"
sed "s|START=.*|START=\"bash $VAR/floor-start.sh\"|" "$HARNESS/peers/floor.env" > "$HARNESS/peers/floor-port.env"
# floor-start.sh resolves BENCH from its own place: give it the harness's.
sed -i "s|^BENCH=.*|BENCH=\"$HARNESS\"|" "$VAR/floor-start.sh"

[ -f "$HARNESS/upstream/nginx.conf" ] && grep -q "127.0.0.1:$UPSTREAM_PORT " "$HARNESS/upstream/nginx.conf" \
  || python3 "$HARNESS/upstream/gen_nginx_conf.py"
ORDER=(floor-port cpd-metrics-on cpd-metrics-off)
SESSION="$(date -u +%Y%m%dT%H%M%SZ)"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 == 0 )); then peers="${ORDER[2]} ${ORDER[1]} ${ORDER[0]}"; else peers="${ORDER[*]}"; fi
  ROUNDS=1 "$HARNESS/run_all.sh" $peers
done
python3 "$HARNESS/report.py" --all | grep -E "^\||^#|^$" | tail -60
echo "(sessions from $SESSION on; results in $HARNESS/results.csv)"
