#!/usr/bin/env bash
# How many connections one kilat process holds on this machine, then three nodes on one Redis,
# with server memory and idle CPU per connection, extrapolated to 1,000,000 connections.
#
# Every connection is subscribed to one of CHANNELS channels and the connections are held for
# HOLD seconds (more than one 25 s ping round) while the load generator answers the pings, so
# the CPU figure is what an idle-but-alive audience costs. Clients are spread over several
# `kilat bench` worker processes because each process here may open at most 20,000 files.
#
#   bench/scale.sh                        # one node at the open-files cap, then 3 x 18,400
#   ONE=5000 THREE=15000 HOLD=30 bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
one="${ONE:-19900}"; three="${THREE:-55200}"; hold="${HOLD:-35}"; channels="${CHANNELS:-1000}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p kilat-cli >&2
bin="${CARGO_TARGET_DIR:-target}/release/kilat"
out="bench/results/scale-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p bench/results
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 200); do curl -sf "http://$1/ready" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

start_node() { # start_node PORT ENGINE [REDIS_PORT]
  KILAT_LOG=warn "$bin" serve --dev --engine "$2" --redis-url "redis://127.0.0.1:${3:-6379}" \
    --listen "127.0.0.1:$1" --max-connections 19900 &
  pids+=($!)
  wait_http "127.0.0.1:$1"
}

echo "== one process, memory engine: $one connections, $channels channels, held ${hold}s" >&2
p=$(free_port)
start_node "$p" memory
"$bin" bench idle --url "ws://127.0.0.1:$p/connection/websocket" -n "$one" --workers 2 \
  --subscribe "$channels" --settle 3 --hold "$hold" --server-pid "${pids[-1]}" --json > "$out-one.json"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; pids=()

echo "== three nodes on one Redis: $three connections, $channels channels, held ${hold}s" >&2
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis=$!; pids+=("$redis")
for _ in $(seq 1 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
urls=(); nodes=()
for _ in 1 2 3; do
  p=$(free_port)
  start_node "$p" redis "$rport"
  urls+=(--url "ws://127.0.0.1:$p/connection/websocket"); nodes+=(--server-pid "${pids[-1]}")
done
redis_rss0=$(rss_kib "$redis"); redis_cpu0=$(cpu_ticks "$redis")
"$bin" bench idle "${urls[@]}" "${nodes[@]}" -n "$three" --workers 3 --subscribe "$channels" \
  --settle 3 --hold "$hold" --json > "$out-three.json"
redis_rss1=$(rss_kib "$redis"); redis_cpu1=$(cpu_ticks "$redis")
echo "{\"redis_rss_before_kib\": $redis_rss0, \"redis_rss_after_kib\": $redis_rss1," \
  "\"redis_cpu_s\": $(( (redis_cpu1 - redis_cpu0) ))e-2}" > "$out-redis.json"

python3 - "$out" "$hold" <<'PY'
import json, sys
out, hold = sys.argv[1], float(sys.argv[2])
one = json.load(open(f"{out}-one.json"))
three = json.load(open(f"{out}-three.json"))
redis = json.load(open(f"{out}-redis.json"))
M = 1_000_000
def row(label, r, extra_kib=0.0):
    n = r["connections"]
    kib = r["server_rss_per_connection_kib"] + extra_kib
    cpu = r["server_cpu_percent_per_1000"]
    print(f"| {label} | {n:,} of {n + r['failed']:,} | {r['dropped_during_hold']} | {kib:.2f} KiB | "
          f"{cpu:.3f}% | {kib * M / 1024 / 1024:.1f} GiB | {cpu * M / 1000 / 100:.2f} |")
redis_kib = (redis["redis_rss_after_kib"] - redis["redis_rss_before_kib"]) / max(three["connections"], 1)
print(f"Result files: {out}-*.json\n")
print("| setup | connections held | dropped while held | server RSS per connection | "
      "server CPU while idle, per 1,000 connections (of one core) | RSS for 1,000,000 | cores for 1,000,000 |")
print("|---|---|---|---|---|---|---|")
row("one process, memory engine", one)
row("three nodes on one Redis (kilat only)", three)
row("three nodes on one Redis (kilat + Redis)", three, redis_kib)
print(f"\nRedis: RSS grew {redis['redis_rss_after_kib'] - redis['redis_rss_before_kib']:,} KiB "
      f"({redis_kib:.2f} KiB per connection), CPU {redis['redis_cpu_s']:.2f} s over the whole run "
      f"(connect, subscribe, {hold:.0f} s hold).")
PY
