#!/usr/bin/env bash
# Socket.IO fan-out: kilat's Engine.IO/Socket.IO endpoint (/socket.io/) against the Node
# Socket.IO 4 server (bench/servers/socketio), driven by the same `kilat bench fanout
# --protocol socketio` in one invocation, alternating, a fresh server process per run.
# Reports server CPU per million deliveries and publish-to-deliver p99 for each (median of the
# rounds), and their ratio.
#
#   bench/socketio.sh                       defaults below, target/release/kilat
#   KILAT=path N=1000 RATE=200 DURATION=10 ROUNDS=3 bench/socketio.sh
#   NATIVE=1 bench/socketio.sh              also kilat's own protocol at the same load, for
#                                           reference (`kilat-native`)
#   BASELINE=path bench/socketio.sh         also another kilat binary's /socket.io/ (before/after)
#   WRITE_DELAY_MS=20 bench/socketio.sh     also kilat's /socket.io/ with node.write_delay_ms set
#                                           (`kilat-delayed`: pushes held that long to share a
#                                           write; replies are not held)
#
# kilat runs `serve --dev` (a client `emit` is a publication to the namespace's channel, which
# reaches every socket: what the Node server's `io.emit` does) with
# KILAT_NODE_CLIENT_COMMAND_RATE=0 so the publisher's emits are not rate-limited. Results:
# bench/results/socketio-<time>.json (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
KILAT="${KILAT:-target/release/kilat}"
N="${N:-1000}"
RATE="${RATE:-200}"
DURATION="${DURATION:-10}"
SIZE="${SIZE:-100}"
ROUNDS="${ROUNDS:-3}"
NATIVE="${NATIVE:-0}"
BASELINE="${BASELINE:-}"
WRITE_DELAY_MS="${WRITE_DELAY_MS:-0}"
servers="kilat node-socketio"
[ "$WRITE_DELAY_MS" != 0 ] && servers="$servers kilat-delayed"
[ "$NATIVE" = 1 ] && servers="$servers kilat-native"
[ -n "$BASELINE" ] && servers="$servers kilat-baseline"
[ -x "$KILAT" ] || { echo "no kilat binary at $KILAT (cargo build --release -p kilat-cli)" >&2; exit 1; }
[ -d bench/servers/socketio/node_modules/socket.io ] ||
  (cd bench/servers/socketio && npm ci --no-audit --no-fund --loglevel=error)
mkdir -p bench/results
out="bench/results/socketio-$(date -u +%Y%m%dT%H%M%SZ).json"
tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  return 1
}

run() { # name round
  local name="$1" round="$2" port bin="$KILAT" protocol=socketio delay=0
  port="$(free_port)"
  case "$name" in
    kilat | kilat-native | kilat-baseline | kilat-delayed)
      [ "$name" = kilat-baseline ] && bin="$BASELINE"
      [ "$name" = kilat-native ] && protocol=kilat
      [ "$name" = kilat-delayed ] && delay="$WRITE_DELAY_MS"
      KILAT_NODE_CLIENT_COMMAND_RATE=0 KILAT_NODE_WRITE_DELAY_MS="$delay" RUST_LOG=warn \
        "$bin" serve --dev --listen "127.0.0.1:$port" >"$tmp/$name-$round.log" 2>&1 &
      ;;
    node-socketio)
      (cd bench/servers/socketio && PORT="$port" exec node server.js) >"$tmp/$name-$round.log" 2>&1 &
      ;;
  esac
  server_pid=$!
  wait_port "$port"
  "$KILAT" bench fanout --protocol "$protocol" --url "ws://127.0.0.1:$port" -n "$N" -r "$RATE" \
    -d "$DURATION" -s "$SIZE" --server-pid "$server_pid" --json >"$tmp/$name-$round.json"
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  python3 - "$tmp/$name-$round.json" "$name" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} round {sys.argv[3]}: {r['server_cpu_s_per_million_deliveries']:.3f} CPU s/M deliveries,"
      f" p99 {r['latency']['p99_ms']} ms, {r['delivered']}/{r['expected_deliveries']} delivered")
EOF
}

echo "Socket.IO fan-out: $N subscribers, $RATE msg/s for $DURATION s, $SIZE B, $ROUNDS rounds; load $(cut -d' ' -f1 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  for name in $servers; do
    run "$name" "$round"
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$tmp" "$ROUNDS" "$out" $servers <<'EOF'
import json, os, statistics, sys
tmp, rounds, out, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
runs = {n: [json.load(open(f"{tmp}/{n}-{r}.json")) for r in range(1, rounds + 1)]
        for n in names}
med = lambda n, f: statistics.median(f(r) for r in runs[n])
cpu = {n: med(n, lambda r: r["server_cpu_s_per_million_deliveries"]) for n in runs}
p99 = {n: med(n, lambda r: r["latency"]["p99_ms"]) for n in runs}
lost = {n: sum(r["lost"] + r["duplicated"] for r in runs[n]) for n in runs}
print(f"| metric (median of {rounds}) | kilat /socket.io/ | Node Socket.IO 4 | Node / kilat |")
print("|---|---|---|---|")
print(f"| server CPU s / M deliveries | {cpu['kilat']:.3f} | {cpu['node-socketio']:.3f} | {cpu['node-socketio'] / cpu['kilat']:.1f}x |")
print(f"| fan-out p99 (ms) | {p99['kilat']:.2f} | {p99['node-socketio']:.2f} | {p99['node-socketio'] / p99['kilat']:.1f}x |")
print(f"| lost + duplicated (all rounds) | {lost['kilat']} | {lost['node-socketio']} | |")
for n in names[2:]:
    label = {"kilat-native": "kilat's own protocol (reference)",
             "kilat-baseline": "kilat /socket.io/, BASELINE binary",
             "kilat-delayed": f"kilat /socket.io/ with write_delay_ms = {os.environ.get('WRITE_DELAY_MS')}"}[n]
    print(f"{label}: {cpu[n]:.3f} CPU s / M deliveries (Node / it {cpu['node-socketio'] / cpu[n]:.1f}x),"
          f" p99 {p99[n]:.2f} ms, lost + duplicated {lost[n]}")
json.dump(runs, open(out, "w"), indent=1)
print(f"raw results: {out}")
EOF
