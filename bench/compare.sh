#!/usr/bin/env bash
# Same scenarios against kilat, a bare Rust broadcaster, Node ws, Socket.IO and Python websockets;
# writes docs/benchmarks.md and docs/img/bench-*.svg. Sizes via env (see bench/compare.py);
# QUICK=1 for a run of a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/compare.py "$@"
