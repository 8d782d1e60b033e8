#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (redis-server,
# haproxy, nginx, Chromium, npm packages, kosoku), then runs formatting, lints, the
# dependency-boundary check, every Rust test, the JS SDK tests, the browser end-to-end tests
# and the Autobahn suite.
#
#   scripts/test.sh                              # everything
#   SKIP_CONFORMANCE=1 SKIP_E2E=1 scripts/test.sh  # skip the slow parts while iterating locally
#                                                # (ignored under CI=true)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;33m==> %s\033[0m\n' "$*"; }

# --- set-up -------------------------------------------------------------------------------
apt_updated=0
need_apt() { # need_apt COMMAND PACKAGE: install PACKAGE when COMMAND is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing $1 and not root: install the Debian package $2" >&2
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
step "set-up"
# A clean clone builds once: incremental caches would only take disk (several GiB) there.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
need_apt python3 python3
need_apt redis-server redis-server
need_apt haproxy haproxy
need_apt nginx nginx
need_apt prometheus prometheus
need_apt chromium chromium
need_apt node nodejs
# The SDK's `ws` package: the JS SDK tests and the deployment tests (SDK clients behind
# haproxy in crates/kilat-cli/tests/deploy.rs, run by `cargo test`) need it.
(cd sdk/js && { [ -d node_modules/ws ] || npm ci --no-audit --no-fund --loglevel=error; })
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
echo "toolchain: $(rustc --version)"

# --- static checks ------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "kilat-core stays blind to sockets, HTTP, Redis and JWT"
if cargo tree -p kilat-core -e normal --prefix none | grep -E '^(axum|hyper|tungstenite|tokio-tungstenite|redis|jsonwebtoken) ' ; then
  echo "kilat-core depends on a crate it must not know (see STYLE.md section 2)" >&2
  exit 1
fi
echo "ok"

step "no import cycle between the files of the crates that have none (docs/architecture.md)"
# kilat-server is left out while the Pusher and Socket.IO modules and their children share types
# both ways (docs/architecture.md lists those cycles and how to remove them).
for crate in kilat-protocol kilat-core kilat-client kilat-bench kilat-cli; do
  python3 scripts/module-graph.py "crates/$crate" >/dev/null
done
step "deploy/: the Prometheus scrape example and alert rules are valid"
promtool check config deploy/prometheus.yml

# --- tests --------------------------------------------------------------------------------
step "cargo test"
cargo test --workspace --all-features

# --- JavaScript SDK and browser end-to-end --------------------------------------------------
kilat_bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/kilat"
step "JS SDK tests (node --test) against target/debug/kilat"
cargo build -p kilat-cli
# npm test type-checks src/kilat.d.ts with the typescript devDependency, then runs node --test
(cd sdk/js && { { [ -d node_modules/ws ] && [ -d node_modules/typescript ] && [ -d node_modules/yjs ] && [ -d node_modules/y-protocols ] && [ -d node_modules/fossil-delta ] && [ -d node_modules/@msgpack/msgpack ]; } || npm ci --no-audit --no-fund --loglevel=error; } && KILAT_BIN="$kilat_bin" npm test)

step "Pusher compatibility (pusher-js, laravel-echo, the pusher server SDK) against target/debug/kilat"
(cd e2e/pusher && { { [ -d node_modules/pusher-js ] && [ -d node_modules/laravel-echo ] && [ -d node_modules/pusher ]; } || npm ci --no-audit --no-fund --loglevel=error; } && KILAT_BIN="$kilat_bin" npm test)
step "Pusher compatibility: the Python server SDK (pusher from PyPI) in e2e/pusher/.venv"
# Debian's python3 has venv only with python3-venv (ensurepip).
python3 -c 'import ensurepip' 2>/dev/null || need_apt __no_such_command__ python3-venv
(cd e2e/pusher && { .venv/bin/python -c 'import pusher, websockets' 2>/dev/null || { python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt; }; } && KILAT_BIN="$kilat_bin" .venv/bin/python -m unittest test_python_sdk.py)
step "Socket.IO compatibility: the real socket.io-client (npm) against target/debug/kilat"
(cd compat/socketio && { [ -d node_modules/socket.io-client ] || npm ci --no-audit --no-fund --loglevel=error; } && KILAT_BIN="$kilat_bin" npm test)
step "Socket.IO compatibility: the real python-socketio client (PyPI) against target/debug/kilat"
if [ ! -x compat/socketio/.venv/bin/python ]; then
  # Debian splits venv's pip bootstrap into python3-venv.
  if ! python3 -c 'import ensurepip' 2>/dev/null && [ "$(id -u)" = 0 ]; then
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  python3 -m venv compat/socketio/.venv
  compat/socketio/.venv/bin/pip install -q -r compat/socketio/requirements.txt
fi
KILAT_BIN="$kilat_bin" compat/socketio/.venv/bin/python -m unittest discover -s compat/socketio -p 'test_*.py'

if [ "${SKIP_E2E:-0}" = 1 ] && [ "${CI:-}" != true ]; then
  echo "SKIPPING the browser end-to-end tests (SKIP_E2E=1)" >&2
else
  step "browser end-to-end tests (headless Chromium)"
  KILAT_BIN="$kilat_bin" e2e/run.sh
fi

# --- conformance --------------------------------------------------------------------------
if [ "${SKIP_CONFORMANCE:-0}" = 1 ] && [ "${CI:-}" != true ]; then
  echo "SKIPPING the Autobahn conformance suite (SKIP_CONFORMANCE=1)" >&2
else
  step "Autobahn WebSocket conformance (kosoku)"
  scripts/conformance.sh
fi

step "all checks passed"
