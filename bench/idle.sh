#!/usr/bin/env bash
# Server memory per idle WebSocket connection: starts `kilat serve --dev` on a free port, holds
# N connections with `kilat bench idle`, and prints the server's RSS growth per connection.
#
#   bench/idle.sh [N]      # default N = 10000
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
ulimit -n 20000 2>/dev/null || true
cargo build --release -p kilat-cli >&2
kilat="${CARGO_TARGET_DIR:-target}/release/kilat"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KILAT_LOG=warn "$kilat" serve --dev --listen "127.0.0.1:$port" --max-connections $((n + 100)) &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))" && break
  sleep 0.1
done
"$kilat" bench idle --url "ws://127.0.0.1:$port/connection/websocket" \
  --connections "$n" --server-pid "$server" "${@:2}"
