#!/usr/bin/env bash
# End-to-end tests of the chat demo in headless Chromium against a real kilat server.
#
#   e2e/run.sh                 build the server if needed, install what is missing, run all
#   KILAT_BIN=path e2e/run.sh  use that binary instead of building
#   e2e/run.sh restart.test.js run some files only (paths relative to e2e/)
#
# Chromium is Debian's package (/usr/bin/chromium); playwright-core only drives it, no browser
# is ever downloaded. Under CI=true a missing Chromium that cannot be installed is an error;
# elsewhere the suite skips with a loud notice. Screenshots and server logs: target/e2e/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"

if [[ ! -x "$chromium" ]]; then
  echo "e2e: Chromium missing at $chromium; installing Debian's chromium package" >&2
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null || true
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
  fi
  if [[ ! -x "$chromium" ]]; then
    if [[ "${CI:-}" == "true" ]]; then
      echo "e2e: ERROR: Chromium is not installed and could not be installed (CI=true)" >&2
      exit 1
    fi
    echo "" >&2
    echo "*** e2e: SKIPPING browser tests: no Chromium at $chromium (apt-get install chromium) ***" >&2
    echo "" >&2
    exit 0
  fi
fi

if [[ ! -d "$here/node_modules/playwright-core" || ! -d "$here/node_modules/socket.io-client" ]]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [[ -z "${KILAT_BIN:-}" ]]; then
  (cd "$root" && cargo build -p kilat-cli)
  target_dir="${CARGO_TARGET_DIR:-$root/target}"
  export KILAT_BIN="$target_dir/debug/kilat"
fi
[[ -x "$KILAT_BIN" ]] || { echo "e2e: ERROR: no kilat binary at $KILAT_BIN" >&2; exit 1; }

mkdir -p "$root/target/e2e"
cd "$here"
if [[ $# -gt 0 ]]; then
  exec node --test --test-concurrency=1 "$@"
fi
exec node --test --test-concurrency=1
