#!/usr/bin/env bash
# The reconnect storm, end to end with real processes: one redis-server, three
# `kilat serve --engine redis` nodes (A, B, C), one haproxy per client process with
# deploy/haproxy.cfg as shipped (ports and the third server changed; one each because a process
# may hold at most `ulimit -n` sockets, each proxied client takes two, and the shipped
# maxconn is 9000), and PROCS
# `kilat bench reconnect` processes holding CLIENTS clients in total. Every client connects to
# A directly and subscribes with recovery to one of CHANNELS channels while a publisher posts
# RATE publications/s to B's /api/publish. Then A gets SIGKILL: every client reconnects
# through haproxy (to B or C) with jittered backoff and recovers what it missed from history.
#
# Measured: time from the kill until the last client has recovered; a bystander on B
# (`kilat bench fanout`, 50 subscribers on their own channel) whose p99 covers the storm;
# B's and C's /ready answering during it; failed reconnect attempts; lost and duplicated
# publications (must be 0).
#
#   CLIENTS=3000 bench/storm.sh            # a small storm first
#   bench/storm.sh                         # 15,000 clients in 3 processes
#
# Needs haproxy, redis-server, curl, python3 and a `kilat` (KILAT=..., default the release
# build). Exits 1 on a loss, a duplicate or a client that did not recover.
set -euo pipefail
cd "$(dirname "$0")/.."

KILAT=${KILAT:-target/release/kilat}
CLIENTS=${CLIENTS:-15000}
PROCS=${PROCS:-3}
CHANNELS=${CHANNELS:-300}
RATE=${RATE:-100}
FOLLOW=${FOLLOW:-80}  # seconds each client process follows after connecting
for cmd in haproxy redis-server redis-cli curl python3 "$KILAT"; do
  command -v "$cmd" >/dev/null || { echo "storm: $cmd not found" >&2; exit 2; }
done
if [ "$(ulimit -n)" -lt $((CLIENTS / PROCS + 1000)) ]; then
  echo "storm: ulimit -n is $(ulimit -n); raise it or use more PROCS" >&2; exit 2
fi

work=$(mktemp -d /tmp/kilat-storm.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.05
  done
  echo "storm: $2 did not answer $1" >&2; exit 1
}
now_us() { python3 -c 'import time;print(int(time.time()*1e6))'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --maxclients 10000 >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

declare -A port pid
for n in A B C; do
  port[$n]=$(free_port)
  KILAT_LOG=warn "$KILAT" serve --dev --engine redis --redis-url "redis://127.0.0.1:$redis_port" \
    --listen "127.0.0.1:${port[$n]}" >"$work/node$n.log" 2>&1 &
  pid[$n]=$!
  pids+=("${pid[$n]}")
done
for n in A B C; do wait_http "http://127.0.0.1:${port[$n]}/ready" "node $n"; done

lbs=()
for h in $(seq 1 "$PROCS"); do
  lb_port=$(free_port)
  python3 - "$lb_port" "${port[A]}" "${port[B]}" "${port[C]}" >"$work/haproxy$h.cfg" <<'PY'
import sys
lb, a, b, c = sys.argv[1:]
cfg = open("deploy/haproxy.cfg").read()
cfg = cfg.replace("127.0.0.1:8000", f"127.0.0.1:{lb}")
cfg = cfg.replace("server node1 127.0.0.1:8001", f"server nodeA 127.0.0.1:{a}")
cfg = cfg.replace("server node2 127.0.0.1:8002", f"server nodeB 127.0.0.1:{b}\n    server nodeC 127.0.0.1:{c}")
print(cfg)
PY
  haproxy -db -f "$work/haproxy$h.cfg" >"$work/haproxy$h.log" 2>&1 &
  pids+=($!)
  lbs+=("127.0.0.1:$lb_port")
done
for lb in "${lbs[@]}"; do wait_http "http://$lb/health" haproxy; done

prefix="storm$(date +%s)-"
per=$((CLIENTS / PROCS))
echo "storm: $CLIENTS clients in $PROCS processes on node A, $CHANNELS channels, $RATE publications/s"
for k in $(seq 0 $((PROCS - 1))); do
  lb=${lbs[$k]}
  "$KILAT" bench reconnect --url "ws://127.0.0.1:${port[A]}/connection/websocket" \
    --reconnect-url "ws://$lb/connection/websocket" -n "$per" --first $((k * per)) \
    -c "$CHANNELS" --channel-prefix "$prefix" --connect-rate 1500 -d "$FOLLOW" \
    --ready-file "$work/ready$k" --json >"$work/clients$k.json" 2>"$work/clients$k.err" &
  cpids[$k]=$!
  pids+=($!)
done
for _ in $(seq 1 1200); do
  ready=$(find "$work" -maxdepth 1 -name "ready*" | wc -l)
  [ "$ready" = "$PROCS" ] && break
  sleep 0.1
done
[ "$ready" = "$PROCS" ] || { echo "storm: client processes did not connect" >&2; tail "$work"/clients*.err >&2; exit 1; }
on_a=$(curl -s "http://127.0.0.1:${port[A]}/metrics" | awk '$1=="kilat_connections"{print $2}')
echo "storm: $on_a connections on node A"

# The publisher (to B directly), the /ready probes and the bystander.
python3 - "127.0.0.1:${port[B]}" "$prefix" "$CHANNELS" "$RATE" "$work" <<'PY' &
import http.client, json, sys, time, os
addr, prefix, channels, rate, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
host, port = addr.split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=10)
n, errors, start = 0, 0, time.time()
while not os.path.exists(f"{work}/stop"):
    if n >= int((time.time() - start) * rate) + 1:
        time.sleep(0.002); continue
    body = json.dumps({"channel": f"{prefix}{n % channels}", "data": {"n": n}}, separators=(",", ":"))
    try:
        conn.request("POST", "/api/publish", body, {"Content-Type": "application/json"})
        r = conn.getresponse(); reply = r.read()
        if r.status != 200 or b'"error"' in reply: errors += 1
    except Exception:
        errors += 1; conn = http.client.HTTPConnection(host, int(port), timeout=10)
    n += 1
open(f"{work}/published", "w").write(f"{n} {errors}\n")
PY
pub_pid=$!
pids+=($pub_pid)
python3 - "127.0.0.1:${port[B]}" "127.0.0.1:${port[C]}" "$work" <<'PY' &
import http.client, sys, time, os
addrs, work = sys.argv[1:3], sys.argv[3]
worst, bad, probes = 0.0, 0, 0
while not os.path.exists(f"{work}/stop"):
    for a in addrs:
        h, p = a.split(":")
        t = time.time()
        try:
            c = http.client.HTTPConnection(h, int(p), timeout=5)
            c.request("GET", "/ready"); r = c.getresponse(); r.read(); c.close()
            if r.status != 200: bad += 1
        except Exception:
            bad += 1
        worst = max(worst, time.time() - t); probes += 1
    time.sleep(0.1)
open(f"{work}/ready_probe", "w").write(f"{probes} {bad} {worst * 1000:.1f}\n")
PY
pids+=($!)
sleep 3
"$KILAT" bench fanout --url "ws://127.0.0.1:${port[B]}/connection/websocket" -n 50 -p 2 -r 100 -d 30 \
  --channel-prefix "bystander$(date +%s)-" --json >"$work/bystander.json" 2>"$work/bystander.err" &
by_pid=$!
pids+=($by_pid)
sleep 5
killed_us=$(now_us)
kill -9 "${pid[A]}"
echo "storm: node A killed"
wait "$by_pid" || true
# Publishing stops while the clients still follow, so each can reach its channel's top.
sleep $((FOLLOW - 50 > 5 ? FOLLOW - 50 : 5))
touch "$work/stop"
for k in $(seq 0 $((PROCS - 1))); do wait "${cpids[$k]}" || true; done
sleep 0.5
python3 - "$work" "$PROCS" "$killed_us" <<'PY'
import json, sys
work, procs, killed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tot = {}
last_rec, first_loss = 0, None
maxc = 0
for k in range(procs):
    r = json.load(open(f"{work}/clients{k}.json"))
    for key in ("clients", "connected", "connect_failed", "disconnected", "recovered", "not_recovered",
                "failed_attempts", "delivered", "lost", "duplicated"):
        tot[key] = tot.get(key, 0) + r[key]
    if r["last_recovery_us"]: last_rec = max(last_rec, r["last_recovery_us"])
    if r["first_loss_us"]: first_loss = min(first_loss or r["first_loss_us"], r["first_loss_us"])
    maxc = max(maxc, r["max_client_recovery_us"])
    if r.get("first_error"): print("first error:", r["first_error"])
    if r.get("first_refusal"): print("first refused reconnect:", r["first_refusal"])
pub_n, pub_err = open(f"{work}/published").read().split()
probes, bad, worst = open(f"{work}/ready_probe").read().split()
by = json.load(open(f"{work}/bystander.json"))
print(f"clients {tot['clients']} ({tot['connected']} connected to A), disconnected {tot['disconnected']}, "
      f"recovered {tot['recovered']}, not recovered {tot['not_recovered']}, failed reconnect attempts {tot['failed_attempts']}")
print(f"time from SIGKILL to the last recovery: {(last_rec - killed) / 1e6:.2f} s (slowest client {maxc / 1e6:.2f} s after its loss)")
print(f"published {pub_n} ({pub_err} errors); delivered {tot['delivered']}, lost {tot['lost']}, duplicated {tot['duplicated']}")
print(f"B/C /ready: {probes} probes, {bad} not 200, slowest {worst} ms")
l, s = by["latency"], by["latency_vs_schedule"]
print(f"bystander on B (50 subscribers, 100 msg/s, 30 s around the kill): p50 {l['p50_ms']:.1f} p99 {l['p99_ms']:.1f} max {l['max_ms']:.1f} ms; "
      f"from schedule p99 {s['p99_ms']:.1f} max {s['max_ms']:.1f} ms; lost {by['lost']}")
ok = (tot["lost"] == 0 and tot["duplicated"] == 0 and tot["recovered"] == tot["disconnected"] == tot["connected"]
      and tot["not_recovered"] == 0 and int(pub_err) == 0)
print("result: " + ("pass" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
