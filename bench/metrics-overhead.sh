#!/usr/bin/env bash
# What detailed metrics cost on the fan-out path: the same release binary run with
# server.detailed_metrics = true and = false, alternating, ROUNDS rounds each, `kilat bench fanout`
# against each, one table at the end (deliveries/s, latency, server CPU per million deliveries).
#
#   bench/metrics-overhead.sh [ROUNDS] [extra `kilat bench fanout` flags]
#   bench/metrics-overhead.sh 3 -n 1000 -r 200 -d 10
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-n 1000 -r 200 -d 10 -s 100 --drain 10)
ulimit -n 20000 2>/dev/null || true
cargo build --release -p kilat-cli >&2
kilat="${CARGO_TARGET_DIR:-target}/release/kilat"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # run on|off ROUND
  local mode=$1 round=$2 port server
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  KILAT_LOG=warn KILAT_SERVER_DETAILED_METRICS=$([ "$mode" = on ] && echo true || echo false) \
    "$kilat" serve --dev --listen "127.0.0.1:$port" --max-connections 20000 &
  server=$!
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))" && break
    sleep 0.1
  done
  "$kilat" bench fanout --url "ws://127.0.0.1:$port/connection/websocket" \
    --server-pid "$server" --json "${args[@]}" >"$out/$mode-$round.json"
  # The series exist only with metrics on: a check that the switch did what it says.
  curl -sf "http://127.0.0.1:$port/metrics" | grep -c '^kilat_command_duration_seconds_count' \
    >"$out/$mode-$round.series" || true
  kill "$server"; wait "$server" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
  # Alternate which goes first, so a machine that slows down over the run favours neither.
  if [ $((round % 2)) = 1 ]; then run on "$round"; run off "$round"; else run off "$round"; run on "$round"; fi
done

python3 - "$out" "$rounds" <<'PY'
import json, sys, pathlib
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
print(f"{'metrics':8} {'round':>5} {'deliveries/s':>13} {'lost':>5} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/M':>8} {'series':>6}")
for mode in ("on", "off"):
    for r in range(1, rounds + 1):
        j = json.loads((out / f"{mode}-{r}.json").read_text())
        series = (out / f"{mode}-{r}.series").read_text().strip() or "0"
        cpu = j.get("server_cpu_s_per_million_deliveries")
        print(f"{mode:8} {r:>5} {j['deliveries_per_s']:>13,.0f} {j['lost']:>5} "
              f"{j['latency']['p50_ms']:>8.2f} {j['latency']['p99_ms']:>8.2f} "
              f"{cpu if cpu is None else round(cpu, 2)!s:>8} {series:>6}")
PY
