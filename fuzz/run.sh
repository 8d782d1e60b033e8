#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (needs nightly and cargo-fuzz:
# `cargo install cargo-fuzz`). Targets: frame_decoder (WebSocket read side), command_parser
# (client frames), token_parser (JWT verification), http_inputs (request heads read before
# hyper, browser origins), pusher_protocol (Pusher client messages and frame translation),
# socketio_packets (Engine.IO and Socket.IO packets), conflation_key (a namespace's
# conflate_key read from publication data), delta_apply (the fossil delta codec),
# msgpack_decoder (binary-encoding client messages), forwarded_for (the client address from
# X-Forwarded-For behind server.trusted_proxies).
#
#   fuzz/run.sh [seconds per target, default 60] [target ...]
# Results go to fuzz/logs/<target>.log; a crash leaves its input under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_decoder command_parser token_parser http_inputs pusher_protocol socketio_packets conflation_key delta_apply msgpack_decoder forwarded_for)
mkdir -p fuzz/logs
for target in "${targets[@]}"; do
  echo "==> fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096 \
    > "fuzz/logs/$target.log" 2>&1
  tail -n 2 "fuzz/logs/$target.log"
done
