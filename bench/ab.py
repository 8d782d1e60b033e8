#!/usr/bin/env python3
"""Before/after: `kilat bench fanout` and `kilat bench idle` against two kilat binaries, in one
invocation, alternating (A, B, A, B, ...) so both see the same machine load. Each run gets a
fresh `serve --dev` process; one bench client (the first binary's, or BENCH_BIN) drives both,
so only the server differs.

  bench/ab.py BEFORE_BIN AFTER_BIN [ROUNDS]

Sizes from the environment [default]: FANOUT_SUBS [1000], FANOUT_RATE [200], FANOUT_SECS [5],
PAYLOAD [100], IDLE_N [2000]. Prints one line per run and a summary table; exits non-zero when
a run failed or lost messages.
"""
from __future__ import annotations

import json
import os
import statistics
import sys

from _common import Process, bench_json, env_int, fanout_args, fanout_summary


def fanout(client: str, binary: str) -> dict:
    server = Process.kilat_dev(binary)
    try:
        r = bench_json(client, ["fanout", "--url", server.url, *fanout_args(),
                                "--drain", "10", "--server-pid", str(server.pid)], timeout=300)
    finally:
        server.stop()
    return fanout_summary(r)


def idle(client: str, binary: str) -> dict:
    server = Process.kilat_dev(binary)
    try:
        r = bench_json(client, ["idle", "--url", server.url, "-n", str(env_int("IDLE_N", 2000)),
                                "--settle", "3", "--server-pid", str(server.pid)], timeout=300)
    finally:
        server.stop()
    return {"kib_per_conn": r["server_rss_per_connection_kib"]}


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    client = os.environ.get("BENCH_BIN", before)
    runs: dict[tuple[str, str], list[dict]] = {}
    failed = False
    for i in range(rounds):
        for scenario, run in (("fanout", fanout), ("idle", idle)):
            for label, binary in (("before", before), ("after", after)):
                result = run(client, binary)
                runs.setdefault((scenario, label), []).append(result)
                print(f"round {i + 1} {scenario:6} {label:6} {json.dumps(result)}", flush=True)
                if result.get("lost") or result.get("duplicated"):
                    failed = True
    print()
    for scenario in ("fanout", "idle"):
        for label in ("before", "after"):
            rs = runs[(scenario, label)]
            cells = []
            for key in rs[0]:
                values = [r[key] for r in rs]
                if all(isinstance(v, (int, float)) for v in values):
                    cells.append(f"{key} " + " / ".join(f"{v:.3g}" for v in values)
                                 + f" (median {statistics.median(values):.3g})")
            print(f"{scenario:6} {label:6} " + "; ".join(cells))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
