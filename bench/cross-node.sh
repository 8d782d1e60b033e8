#!/usr/bin/env bash
# Cross-node fan-out: two `kilat serve --engine redis` nodes on one redis-server; subscribers on
# node A, publications through node B's server API, so every delivery crosses Redis pub/sub.
# The same run measures the single-node figure (subscribers and API on node A, same engine) and
# the memory engine (no Redis at all) as baselines.
#
#   bench/cross-node.sh            # 1,000 subscribers, 200 msg/s, 10 s
#   SUBS=500 RATE=100 SECS=5 bench/cross-node.sh
set -euo pipefail
cd "$(dirname "$0")/.."
subs="${SUBS:-1000}"; rate="${RATE:-200}"; secs="${SECS:-10}"
ulimit -n 20000 2>/dev/null || true
cargo build --release -p kilat-cli >&2
bin="${CARGO_TARGET_DIR:-target}/release/kilat"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 200); do curl -sf "http://$1/ready" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done

start_node() { # start_node PORT ENGINE
  KILAT_LOG=warn KILAT_NODE_CLIENT_COMMAND_RATE=0 "$bin" serve --dev --engine "$2" \
    --redis-url "redis://127.0.0.1:$rport" --listen "127.0.0.1:$1" --max-connections 20000 &
  pids+=($!)
  wait_http "127.0.0.1:$1"
}
a=$(free_port); b=$(free_port); m=$(free_port)
start_node "$a" redis; a_pid=${pids[-1]}
start_node "$b" redis
start_node "$m" memory; m_pid=${pids[-1]}

run() { # run LABEL SUB_PORT API_PORT SERVER_PID
  "$bin" bench fanout --url "ws://127.0.0.1:$2/connection/websocket" -n "$subs" -c 1 -r "$rate" \
    -d "$secs" --publish-via http --api-url "http://127.0.0.1:$3/api/publish" \
    --server-pid "$4" --json > "target/cross-node-$1.json"
  python3 - "$1" "target/cross-node-$1.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
lat = r["latency"]
cpu = r.get("server_cpu_s_per_million_deliveries")
print(f'{sys.argv[1]:<12} deliveries/s {r["deliveries_per_s"]:>10,.0f}  p50 {lat["p50_ms"]:7.2f} ms  '
      f'p99 {lat["p99_ms"]:7.2f} ms  lost {r["lost"]}  dup {r["duplicated"]}  '
      f'subscriber-node CPU s/M {cpu if cpu is None else round(cpu, 2)}')
PY
}
mkdir -p target
echo "fan-out: $subs subscribers, $rate msg/s, ${secs}s, publish via the server API"
run memory "$m" "$m" "$m_pid"
run one-node "$a" "$a" "$a_pid"
run cross-node "$a" "$b" "$a_pid"
