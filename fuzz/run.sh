#!/usr/bin/env bash
# Fuzzes the WebSocket frame decoder (needs nightly and cargo-fuzz: `cargo install cargo-fuzz`).
# Usage: fuzz/run.sh [seconds, default 60]
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo +nightly fuzz run frame_decoder -- -max_total_time="${1:-60}" -max_len=4096
