#!/usr/bin/env bash
# A zero-loss rolling deploy, end to end with real processes: one redis-server, three
# `kilat serve --engine redis` nodes behind haproxy (deploy/haproxy.cfg as shipped, with its
# ports and a third server line), SUBSCRIBERS `kilat sub` processes (the Rust client: it
# reconnects with the drain's delay hint and recovers from history) following one channel
# through haproxy, and a publisher posting PUBLISH_RATE publications/s to /api/publish through
# haproxy. While it publishes, each node in turn gets SIGTERM (the drain: /ready 503 for
# server.drain_grace, then 3000 with a reconnect spread to its clients, then exit) and is
# started again on the same port once it has exited and before the next one goes.
#
# At the end every subscriber must have every publication exactly once and in order (offsets
# 1..N and the data's own numbers 1..N), and every publish must have been accepted.
#
#   bench/rolling-deploy.sh                 # 30 subscribers, 50 publications/s
#   SUBSCRIBERS=100 KILAT=target/release/kilat bench/rolling-deploy.sh
#
# Needs haproxy, redis-server, curl and python3. Prints a summary and exits 1 on any loss.
set -euo pipefail
cd "$(dirname "$0")/.."

KILAT=${KILAT:-target/release/kilat}
SUBSCRIBERS=${SUBSCRIBERS:-30}
PUBLISH_RATE=${PUBLISH_RATE:-50}
DRAIN_GRACE=${DRAIN_GRACE:-3}
for cmd in haproxy redis-server curl python3 "$KILAT"; do
  command -v "$cmd" >/dev/null || { echo "rolling-deploy: $cmd not found" >&2; exit 2; }
done

work=$(mktemp -d /tmp/kilat-rolling.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${node_pid[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { # URL, what
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
    sleep 0.05
  done
  echo "rolling-deploy: $2 did not answer $1" >&2; exit 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

declare -a node_port node_pid
start_node() { # index
  local i=$1
  KILAT_LOG=info KILAT_SERVER_DRAIN_GRACE=$DRAIN_GRACE "$KILAT" serve --dev --engine redis \
    --redis-url "redis://127.0.0.1:$redis_port" --listen "127.0.0.1:${node_port[$i]}" \
    >>"$work/node$i.log" 2>&1 &
  node_pid[$i]=$!
  wait_http "http://127.0.0.1:${node_port[$i]}/ready" "node $i"
}
for i in 0 1 2; do node_port[$i]=$(free_port); start_node "$i"; done

lb_port=$(free_port)
stats_port=$(free_port)
python3 - "$lb_port" "${node_port[@]}" "$stats_port" >"$work/haproxy.cfg" <<'PY'
import sys, re
lb, a, b, c, stats = sys.argv[1:]
cfg = open("deploy/haproxy.cfg").read()
cfg = cfg.replace("127.0.0.1:8000", f"127.0.0.1:{lb}")
cfg = cfg.replace("server node1 127.0.0.1:8001", f"server node1 127.0.0.1:{a}")
cfg = cfg.replace("server node2 127.0.0.1:8002", f"server node2 127.0.0.1:{b}\n    server node3 127.0.0.1:{c}")
cfg += f"\nlisten stats\n    bind 127.0.0.1:{stats}\n    stats enable\n    stats uri /stats\n"
print(cfg)
PY
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
lb="127.0.0.1:$lb_port"
wait_http "http://$lb/health" haproxy
up() { # node name -> whether haproxy has it UP
  curl -s "http://127.0.0.1:$stats_port/stats;csv" | awk -F, -v n="$1" '$1=="kilat_nodes" && $2==n {print $18}' | grep -q '^UP'
}

channel="rolling$(date +%s)"
sub_pids=()
for s in $(seq 1 "$SUBSCRIBERS"); do
  KILAT_LOG=warn "$KILAT" sub --url "ws://$lb/connection/websocket" "$channel" >"$work/sub$s.out" 2>"$work/sub$s.err" &
  sub_pids+=($!)
done
pids+=("${sub_pids[@]}")
# Every subscriber is subscribed when the server's presence counts it.
for _ in $(seq 1 200); do
  n=$(curl -s "http://$lb/api/presence_stats" -d "{\"channel\":\"$channel\"}" | python3 -c 'import sys,json;print(json.load(sys.stdin)["result"]["num_clients"])' 2>/dev/null || echo 0)
  [ "$n" -ge "$SUBSCRIBERS" ] && break
  sleep 0.1
done
[ "$n" -ge "$SUBSCRIBERS" ] || { echo "rolling-deploy: only $n of $SUBSCRIBERS subscribers subscribed" >&2; exit 1; }

# The publisher: one publication every 1/PUBLISH_RATE s through haproxy, numbered, until told to stop.
python3 - "$lb" "$channel" "$PUBLISH_RATE" "$work" <<'PY' &
import http.client, json, sys, time, os
lb, channel, rate, work = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
host, port = lb.split(":")
n, failed, start = 0, 0, time.time()
conn = None
while not os.path.exists(f"{work}/stop"):
    due = int((time.time() - start) * rate) + 1
    if n >= due:
        time.sleep(0.002)
        continue
    body = json.dumps({"channel": channel, "data": {"n": n + 1}}, separators=(",", ":"))
    try:
        if conn is None:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/api/publish", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        reply = r.read()
        if r.status == 200 and b'"error"' not in reply:
            n += 1
            continue
        failed += 1
        print(f"publish {n + 1}: HTTP {r.status} {reply[:200]!r}", file=sys.stderr)
    except Exception as e:  # the outcome is unknown: a retry could duplicate, so stop counting here
        failed += 1
        print(f"publish {n + 1}: {e}", file=sys.stderr)
        conn = None
    time.sleep(0.05)
open(f"{work}/published", "w").write(f"{n} {failed}\n")
PY
pub_pid=$!
pids+=("$pub_pid")

sleep 3
started=$(date +%s.%N)
for i in 0 1 2; do
  name="node$((i + 1))"
  t0=$(date +%s.%N)
  kill -TERM "${node_pid[$i]}"
  while kill -0 "${node_pid[$i]}" 2>/dev/null; do sleep 0.05; done
  t1=$(date +%s.%N)
  start_node "$i"
  # Wait for haproxy to see it up again before the next node goes, as a deploy tool would.
  for _ in $(seq 1 200); do up "$name" && break; sleep 0.1; done
  t2=$(date +%s.%N)
  printf 'node %s: drained and exited in %.1f s, back in haproxy after %.1f s\n' "$name" \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t1" | bc)"
done
sleep 3
touch "$work/stop"
wait "$pub_pid"
read -r published publish_failed <"$work/published"
# Wait (bounded) for every subscriber to print the last publication.
for _ in $(seq 1 300); do
  done_n=0
  for s in $(seq 1 "$SUBSCRIBERS"); do
    tail -n 1 "$work/sub$s.out" 2>/dev/null | grep -q "\"n\":$published}" && done_n=$((done_n + 1))
  done
  [ "$done_n" = "$SUBSCRIBERS" ] && break
  sleep 0.1
done
elapsed=$(echo "$(date +%s.%N) - $started" | bc)

python3 - "$work" "$SUBSCRIBERS" "$published" "$publish_failed" "$elapsed" <<'PY'
import json, sys, glob
work, subs, published, failed, elapsed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
lost = dup = disorder = 0
reconnects = 0
for s in range(1, subs + 1):
    offsets, numbers = [], []
    for line in open(f"{work}/sub{s}.out"):
        p = json.loads(line)
        offsets.append(p["offset"]); numbers.append(p["data"]["n"])
    seen = set(numbers)
    lost += published - len(seen & set(range(1, published + 1)))
    dup += len(numbers) - len(seen)
    disorder += sum(1 for a, b in zip(numbers, numbers[1:]) if b != a + 1)
    if offsets != list(range(offsets[0], offsets[0] + len(offsets))):
        disorder += 1
    reconnects += sum(1 for l in open(f"{work}/sub{s}.err") if "connection lost" in l)
print(f"subscribers {subs}, published {published} ({failed} publish errors); restarts to last delivery {elapsed:.1f} s")
print(f"reconnects {reconnects} (each subscriber moved {reconnects / subs:.1f} times)")
print(f"lost {lost}, duplicated {dup}, out of order {disorder}")
ok = lost == 0 and dup == 0 and disorder == 0 and failed == 0 and published > 0
print("result: " + ("pass" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
