#!/usr/bin/env bash
# Server instructions per delivery, counted by callgrind instead of timed, so a hot-path
# regression shows up without timing noise.
#
# Runs `kilat serve --dev` under `valgrind --tool=callgrind` twice with the same subscribers and
# the same duration, once publishing few and once many messages (`kilat bench fanout`), stops
# the server with SIGTERM so callgrind writes its counts, and reports
#
#   (Ir_many - Ir_few) / (deliveries_many - deliveries_few)
#
# i.e. the server's user-space instructions per extra delivery (start-up, connects, timers and
# shutdown are the same in both runs and cancel out; the per-publication work of the publish
# command and the one-time encoding is shared by the SUBS subscribers of each publication and
# included). Then the top functions of the "many" run by self Ir, each with its growth per
# delivery, and kilat's own functions by inclusive Ir.
#
#   bench/callgrind.sh                     # 100 subscribers, 2 vs 20 msg/s for 20 s
#   SUBS=50 FEW_RATE=1 MANY_RATE=10 SECS=10 bench/callgrind.sh
#   bench/callgrind.sh --json              # the figures as one JSON object on stdout
#   ANALYSE_ONLY=1 bench/callgrind.sh      # report again from the files of the last run
#   PROTOCOL=socketio bench/callgrind.sh   # the same through kilat's /socket.io/ endpoint
#   KILAT=path/to/kilat bench/callgrind.sh # another binary (not rebuilt)
#
# Output files (callgrind.{few,many}.out, bench JSON, server logs, annotations) go to
# OUT (default: ${CARGO_TARGET_DIR:-target}/callgrind). Valgrind is about 50x slower than the
# native server: keep rates low enough that every delivery arrives in the drain window (the
# script fails if the bench reports lost deliveries).
set -euo pipefail
cd "$(dirname "$0")/.."

subs="${SUBS:-100}"
few_rate="${FEW_RATE:-2}"
many_rate="${MANY_RATE:-20}"
secs="${SECS:-20}"
drain="${DRAIN:-30}"
top="${TOP:-15}"
target_dir="${CARGO_TARGET_DIR:-target}"
out="${OUT:-$target_dir/callgrind}"
json=0
for arg in "$@"; do
  case "$arg" in
    --json) json=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "$*" >&2; }

# --- tools -----------------------------------------------------------------------------------
need() { # need COMMAND PACKAGE: under CI as root install PACKAGE, else fail with a hint
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    return 0
  fi
  say "missing $1: install the Debian package $2 (apt-get install $2)"
  exit 1
}
need valgrind valgrind
need callgrind_annotate valgrind
need curl curl
need python3 python3
need timeout coreutils

bin="${KILAT:-$target_dir/release/kilat}"
protocol="${PROTOCOL:-kilat}"
case "$protocol" in
  kilat) path=/connection/websocket ;;
  socketio) path="" ;; # the bench client adds /socket.io/?EIO=4&transport=websocket
  *) say "PROTOCOL must be kilat or socketio, not $protocol"; exit 2 ;;
esac
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run LABEL RATE: one server under callgrind, one bench, SIGTERM; leaves $out/LABEL.{out,json}
run() {
  local label="$1" rate="$2" port
  port=$(free_port)
  rm -f "$out/callgrind.$label.out"
  # No /metrics: rendering it reads the ELF auxiliary vector (procfs, through rustix), which
  # crashes under valgrind. Counting stays on (detailed_metrics), only the page is off.
  KILAT_NODE_CLIENT_COMMAND_RATE=0 KILAT_LOG=warn KILAT_SERVER_METRICS=false \
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$label.out" \
    "$bin" serve --dev --listen "127.0.0.1:$port" >"$out/server.$label.log" 2>&1 &
  server_pid=$!
  local ok=0
  for _ in $(seq 1 600); do # 120 s: valgrind reads the debug info before main
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.2
  done
  if [ "$ok" = 0 ]; then
    say "the server under valgrind did not answer /health; see $out/server.$label.log"
    exit 1
  fi
  say "$label: $subs subscribers, $rate msg/s for ${secs}s (server under callgrind on :$port)"
  timeout "$((${secs%.*} + ${drain%.*} + 300))" "$bin" bench fanout \
    --protocol "$protocol" --url "ws://127.0.0.1:$port$path" -n "$subs" -r "$rate" -d "$secs" \
    --drain "$drain" --json >"$out/bench.$label.json"
  kill -TERM "$server_pid"
  local waited=0
  while kill -0 "$server_pid" 2>/dev/null && [ "$waited" -lt 600 ]; do # 60 s
    sleep 0.1; waited=$((waited + 1))
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    say "the server did not exit within 60 s of SIGTERM; see $out/server.$label.log"
    exit 1
  fi
  local status=0
  wait "$server_pid" || status=$?
  server_pid=""
  if [ "$status" != 0 ]; then
    say "the server exited with status $status after SIGTERM; see $out/server.$label.log"
    exit 1
  fi
}

if [ "${ANALYSE_ONLY:-0}" != 1 ]; then
  if [ -z "${KILAT:-}" ]; then
    say "building kilat (release)"
    timeout 3600 cargo build --release -p kilat-cli >&2
  fi
  mkdir -p "$out"
  run few "$few_rate"
  run many "$many_rate"
fi

for label in few many; do
  callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$out/callgrind.$label.out" \
    >"$out/annotate.$label.inclusive.txt"
  callgrind_annotate --threshold=100 --auto=no "$out/callgrind.$label.out" \
    >"$out/annotate.$label.self.txt"
done

python3 - "$out" "$subs" "$few_rate" "$many_rate" "$secs" "$top" "$json" "$protocol" <<'PY'
import json, re, sys

out, subs, few_rate, many_rate, secs, top, as_json, protocol = sys.argv[1:]
top = int(top)

def total_ir(path):
    """The `totals:` (or `summary:`) line of a callgrind output file; Ir is the first event."""
    found = None
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                found = int(line.split()[1])
    if found is None:
        sys.exit(f"no totals in {path}")
    return found

def name_of(entry):
    """`file:function [object]` from callgrind_annotate -> the function name."""
    m = re.match(r"^(\S+?\.(?:rs|c|S|h|cc|cpp)|\?\?\?):(.*)$", entry)
    name = m.group(2) if m else entry
    return re.sub(r"\s\[[^\]]*\]$", "", name).strip()

def listing(path):
    """(Ir, file:function) rows of a callgrind_annotate listing, in its order (biggest first)."""
    rows = []
    for line in open(path):
        m = re.match(r"\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S.*)$", line)
        if m and ":" in m.group(2) and not m.group(2).startswith("PROGRAM TOTALS"):
            rows.append((int(m.group(1).replace(",", "")), m.group(2).strip()))
    return rows

runs = {}
for label in ("few", "many"):
    bench = json.load(open(f"{out}/bench.{label}.json"))
    if bench["lost"] or bench["duplicated"] or bench["publish_errors"] or bench["connect_failed"]:
        sys.exit(f"{label} run not clean (lost {bench['lost']}, duplicated {bench['duplicated']}, "
                 f"publish errors {bench['publish_errors']}, connect failed "
                 f"{bench['connect_failed']}): lower the rate or raise DRAIN")
    runs[label] = {
        "ir": total_ir(f"{out}/callgrind.{label}.out"),
        "published": bench["published"],
        "delivered": bench["delivered"],
    }
few, many = runs["few"], runs["many"]
deliveries = many["delivered"] - few["delivered"]
if deliveries <= 0:
    sys.exit("the many run delivered no more than the few run")
per_delivery = (many["ir"] - few["ir"]) / deliveries
# Inclusive: the runtime's frames (thread start, worker loop, task poll) include everything,
# so list kilat's own functions, where the time goes in our code.
# A function inlined into several files is listed once per file: keep its biggest entry.
inclusive, seen = [], set()
for ir, f in listing(f"{out}/annotate.many.inclusive.txt"):
    if "crates/kilat-" in f.split(":", 1)[0] and name_of(f) not in seen and len(inclusive) < top:
        seen.add(name_of(f))
        inclusive.append((ir, name_of(f)))
# Self: the many run's biggest, each with its growth per delivery over the few run.
few_self = {}
for ir, f in listing(f"{out}/annotate.few.self.txt"):
    few_self[f] = few_self.get(f, 0) + ir
self_ = [(ir, (ir - few_self.get(f, 0)) / deliveries, name_of(f))
         for ir, f in listing(f"{out}/annotate.many.self.txt")[:top]]
result = {
    "protocol": protocol,
    "subscribers": int(subs),
    "duration_s": float(secs),
    "few": {"rate": float(few_rate), **few},
    "many": {"rate": float(many_rate), **many},
    "ir_per_delivery": round(per_delivery, 1),
    "top_inclusive_kilat": [{"ir": ir, "function": f} for ir, f in inclusive],
    "top_self": [{"ir": ir, "per_delivery": round(d, 1), "function": f} for ir, d, f in self_],
}
if as_json == "1":
    print(json.dumps(result, indent=2))
    sys.exit(0)

def short(name, width=110):
    return name if len(name) <= width else name[: width - 3] + "..."

print(f"callgrind, {subs} subscribers, {secs} s per run, protocol {protocol}")
for label, r in runs.items():
    rate = few_rate if label == "few" else many_rate
    print(f"  {label:<4} {rate:>6} msg/s  published {r['published']:>6}  delivered "
          f"{r['delivered']:>8}  Ir {r['ir']:>15,}")
print(f"  instructions per delivery (server user space): {per_delivery:,.0f}")
print(f"\ntop {len(self_)} functions of the many run by self Ir (total {many['ir']:,}), "
      "with their growth per delivery over the few run:")
print(f"  {'self Ir':>15} {'share':>6} {'/delivery':>9}  function")
for ir, d, f in self_:
    print(f"  {ir:>15,} {100 * ir / many['ir']:5.1f}% {d:>9,.0f}  {short(f)}")
print(f"\ntop {len(inclusive)} kilat functions of the many run by inclusive Ir:")
for ir, f in inclusive:
    print(f"  {ir:>15,} {100 * ir / many['ir']:5.1f}%  {short(f)}")
print(f"\nfiles: {out}/ (callgrind.*.out, annotate.*.txt, bench.*.json, server.*.log)")
PY
