#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn suite (kosoku, 517 cases) against `kilat echo`.
#
# Usage: scripts/conformance.sh [extra kosoku args, e.g. -p 2 or -i '9.*']
# Fails (exit 1) unless every case's behaviour is OK, NON-STRICT or INFORMATIONAL.
# Reports: target/autobahn/index.html (per case) and index.json (parsed below).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=target/autobahn

echo "==> building kilat (release)"
cargo build --release -p kilat-cli

if [[ ! -x .venv/bin/kosoku ]]; then
    echo "==> installing kosoku into .venv"
    [[ -d .venv ]] || python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet kosoku
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADDR="127.0.0.1:${PORT}"

echo "==> starting kilat echo on ${ADDR}"
target/release/kilat echo --listen "${ADDR}" > target/conformance-echo.log 2>&1 &
SERVER_PID=$!
cleanup() {
    kill "${SERVER_PID}" 2>/dev/null || true
    wait "${SERVER_PID}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', ${PORT}), 0.2)" 2>/dev/null; then
        break
    fi
    if ! kill -0 "${SERVER_PID}" 2>/dev/null; then
        echo "kilat echo exited early:" >&2
        cat target/conformance-echo.log >&2
        exit 1
    fi
    sleep 0.1
done

rm -rf "${OUT}"
echo "==> running kosoku $* against ${ADDR}"
# kosoku's own exit status is not the verdict; the index below is.
.venv/bin/kosoku -o "${OUT}" "$@" "${ADDR}" > target/conformance-kosoku.log 2>&1 || true
tail -n 3 target/conformance-kosoku.log

python3 - "${REPO}/${OUT}/index.json" <<'PY'
import collections
import json
import sys

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
try:
    with open(sys.argv[1]) as f:
        index = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"no kosoku report: {e}")

cases = {}
for agent in index.values():
    cases.update(agent)
if not cases:
    sys.exit("kosoku ran no cases")

def case_key(case_id):
    return [int(part) for part in case_id.split(".")]

behavior = collections.Counter(c["behavior"] for c in cases.values())
close = collections.Counter(c["behaviorClose"] for c in cases.values())
print(f"\n{len(cases)} cases")
print(f"{'result':<16}{'behavior':>10}{'close':>10}")
for name in sorted(set(behavior) | set(close)):
    print(f"{name:<16}{behavior[name]:>10}{close[name]:>10}")

not_ok = sorted(
    (k for k, c in cases.items() if c["behavior"] != "OK" or c["behaviorClose"] != "OK"),
    key=case_key,
)
if not_ok:
    print("\ncases not OK:")
    for k in not_ok:
        c = cases[k]
        print(f"  {k:<10} behavior={c['behavior']:<14} close={c['behaviorClose']:<14} code={c.get('remoteCloseCode')}")

bad = [k for k, c in cases.items() if c["behavior"] not in ACCEPTED or c["behaviorClose"] not in ACCEPTED]
if bad:
    print(f"\nFAIL: {len(bad)} case(s) not OK/NON-STRICT/INFORMATIONAL: {', '.join(sorted(bad, key=case_key))}")
    sys.exit(1)
print("\nPASS: every case is OK, NON-STRICT or INFORMATIONAL")
PY
