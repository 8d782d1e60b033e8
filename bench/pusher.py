#!/usr/bin/env python3
"""kilat's Pusher endpoint against kilat's native protocol (and, when given, other servers
speaking Pusher), in one invocation, alternating, so every target sees the same machine load.
Each run gets a fresh server process; one bench client (KILAT, or BENCH_BIN) drives them all.

  bench/pusher.py KILAT [ROUNDS]

Targets, each measured for fan-out (FANOUT_SUBS [1000] subscribers on one channel, FANOUT_RATE
[200] msg/s for FANOUT_SECS [5] s, PAYLOAD [100] B) and idle memory (IDLE_N [5000] connections,
each subscribed to one of 100 channels):

- native-ws:   kilat protocol, published over a WebSocket (`publish` command)
- native-http: kilat protocol, published through kilat's server API (POST /api/publish)
- pusher:      kilat's /app/app-key (Pusher protocol 7), published through the Pusher HTTP API
               (POST /apps/app-id/events, signed), as a Pusher backend does
- BASELINE=BIN adds `pusher-baseline`: the same against another kilat binary (e.g. a release of
  main before a change), still driven by KILAT's bench client
- SOKETI=CMD adds `soketi`: a Pusher server started as `CMD start` with SOKETI_PORT set (its
  default app is app-id/app-key/app-secret, as kilat's --dev)

Prints one line per run and a summary; exits non-zero when a run failed or lost messages.
"""
from __future__ import annotations

import json
import os
import statistics
import sys

from _common import Process, bench_json, env_int, fanout_args, fanout_summary, free_port


def kilat_server(binary: str) -> Process:
    return Process.kilat_dev(binary, "--max-connections", "20000")


def soketi_server(command: str) -> Process:
    port = free_port()
    env = dict(os.environ, SOKETI_PORT=str(port), SOKETI_DEBUG="0")
    return Process([*command.split(), "start"], port, env, health=False)


def target_args(target: str, port: int) -> list[str]:
    base = f"ws://127.0.0.1:{port}"
    if target == "native-ws":
        return ["--url", f"{base}/connection/websocket", "--protocol", "kilat"]
    if target == "native-http":
        return ["--url", f"{base}/connection/websocket", "--protocol", "kilat",
                "--publish-via", "http"]
    return ["--url", f"{base}/app/app-key?protocol=7", "--protocol", "pusher",
            "--publish-via", "http"]


def start(target: str, kilat: str) -> Process:
    if target == "soketi":
        return soketi_server(os.environ["SOKETI"])
    if target == "pusher-baseline":
        return kilat_server(os.environ["BASELINE"])
    return kilat_server(kilat)


def fanout(client: str, kilat: str, target: str) -> dict:
    server = start(target, kilat)
    try:
        r = bench_json(client, ["fanout", *target_args(target, server.port), *fanout_args(),
                                "--drain", "10", "--server-pid", str(server.pid)])
    finally:
        server.stop()
    return fanout_summary(r)


def idle(client: str, kilat: str, target: str) -> dict:
    server = start(target, kilat)
    try:
        r = bench_json(client, ["idle", *target_args(target, server.port)[:4],
                                "-n", str(env_int("IDLE_N", 5000)), "--subscribe", "100",
                                "--settle", "3", "--server-pid", str(server.pid)])
    finally:
        server.stop()
    return {"kib_per_conn": r["server_rss_per_connection_kib"]}


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    kilat = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    client = os.environ.get("BENCH_BIN", kilat)
    targets = ["native-ws", "native-http", "pusher"]
    if os.environ.get("BASELINE"):
        targets.append("pusher-baseline")
    if os.environ.get("SOKETI"):
        targets.append("soketi")
    runs: dict[tuple[str, str], list[dict]] = {}
    failed = False
    for i in range(rounds):
        for scenario, run in (("fanout", fanout), ("idle", idle)):
            for target in targets:
                if scenario == "fanout" and target == "pusher-baseline":
                    continue  # the same code path as `pusher` for fan-out; idle is what changed
                if scenario == "idle" and target == "native-http":
                    continue  # the same connections as native-ws
                try:
                    result = run(client, kilat, target)
                except RuntimeError as error:
                    print(f"round {i + 1} {scenario:6} {target:15} FAILED {error}", flush=True)
                    failed = True
                    continue
                runs.setdefault((scenario, target), []).append(result)
                print(f"round {i + 1} {scenario:6} {target:15} {json.dumps(result)}", flush=True)
                if result.get("lost") or result.get("duplicated"):
                    failed = True
    print()
    for (scenario, target), rs in runs.items():
        cells = []
        for key in rs[0]:
            values = [r[key] for r in rs]
            if all(isinstance(v, (int, float)) for v in values):
                cells.append(f"{key} " + " / ".join(f"{v:.3g}" for v in values)
                             + f" (median {statistics.median(values):.3g})")
        print(f"{scenario:6} {target:15} " + "; ".join(cells))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
