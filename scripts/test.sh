#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs formatting,
# lints, every Rust test, the dependency-boundary check and the WebSocket conformance suite.
#
#   scripts/test.sh            # everything
#   SKIP_CONFORMANCE=1 scripts/test.sh   # skip the Autobahn run while iterating locally
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
need_apt python3 python3
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

# --- tests --------------------------------------------------------------------------------
step "cargo test"
cargo test --workspace --all-features

# --- conformance --------------------------------------------------------------------------
if [ "${SKIP_CONFORMANCE:-0}" = 1 ] && [ "${CI:-}" != true ]; then
  echo "SKIPPING the Autobahn conformance suite (SKIP_CONFORMANCE=1)" >&2
else
  step "Autobahn WebSocket conformance (kosoku)"
  scripts/conformance.sh
fi

step "all checks passed"
