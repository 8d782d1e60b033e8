#!/usr/bin/env python3
"""Presence at scale: N members joining one channel with presence and join/leave on (batched
`presence_diff`, the default), against join/leave off, in one invocation. Optionally also
single join/leave pushes (`presence_diff_ms = 0`, what kilat did before: the square of the
members).

  bench/presence.py KILAT_BIN [ROUNDS]

Modes: `off` (presence on, join/leave off), `diff` (join/leave as `presence_diff`, the
defaults: listed up to `presence_diff_max` = 1000 members, then one `presence_count` per
window), `listed` (diffs to every member, `presence_diff_max = 0`), `single` (one push per
change, `presence_diff_ms = 0`).

Each run gets a fresh `kilat serve` with a namespace per mode and one
`kilat bench fanout` whose N subscribers connect and subscribe to `<mode>:bench0` at
CONNECT_RATE a second, then one publisher sends 10 messages in a second (every member must get
every one). Reported per run: the time until every member was in (`setup_s`), the server's CPU
meanwhile, and its CPU until it went quiet after the members left (leaves included).

Environment [default]: MEMBERS [10000], CONNECT_RATE [2000], LISTED [0] and SINGLE [0] (1:
also run those modes). Exits non-zero when a run failed or lost messages.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from _common import Process, env_int, free_port, raise_nofile

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
[node]
allow_anonymous = true
client_command_rate = 0.0
[node.namespaces.diff]
presence = true
join_leave = true
presence_diff_ms = 100
allow_subscribe = "public"
allow_publish = "any"
allow_presence = true
[node.namespaces.listed]
presence = true
join_leave = true
presence_diff_ms = 100
presence_diff_max = 0
allow_subscribe = "public"
allow_publish = "any"
allow_presence = true
[node.namespaces.single]
presence = true
join_leave = true
presence_diff_ms = 0
allow_subscribe = "public"
allow_publish = "any"
allow_presence = true
[node.namespaces.off]
presence = true
join_leave = false
allow_subscribe = "public"
allow_publish = "any"
allow_presence = true
"""


def start(binary: str, config_dir: str) -> Process:
    """`kilat serve --config` with CONFIG on a free loopback port."""
    port = free_port()
    path = os.path.join(config_dir, f"kilat-{port}.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(port=port))
    return Process([binary, "serve", "--config", path], port, dict(os.environ, RUST_LOG="warn"))


def run(binary: str, mode: str, members: int, rate: int, config_dir: str) -> dict:
    server = start(binary, config_dir)
    try:
        cpu0 = server.cpu()
        started = time.time()
        out = subprocess.run(
            [binary, "bench", "fanout", "--url", server.url, "-n", str(members), "-c", "1",
             "--channel-prefix", f"{mode}:bench", "-p", "1", "-r", "10", "-d", "1",
             "--drain", "5", "--connect-rate", str(rate), "--server-pid", str(server.pid),
             "--json"],
            capture_output=True, text=True, timeout=900, preexec_fn=raise_nofile)
        if out.returncode != 0:
            raise RuntimeError(f"bench failed ({mode}): {out.stderr.strip()[-2000:]}")
        report = json.loads(out.stdout)
        total = server.quiet_cpu() - cpu0
        return {
            "mode": mode,
            "members": report["subscribers"],
            "setup_s": report["setup_s"],
            "setup_cpu_s": report["setup_server_cpu_s"],
            "total_cpu_s": total,
            "wall_s": time.time() - started,
            "lost": report["lost"],
            "delivered": report["delivered"],
        }
    finally:
        server.stop()


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    members = env_int("MEMBERS", 10000)
    rate = env_int("CONNECT_RATE", 2000)
    modes = (["off", "diff"] + (["listed"] if env_int("LISTED", 0) else [])
             + (["single"] if env_int("SINGLE", 0) else []))
    results = []
    failed = False
    with tempfile.TemporaryDirectory() as config_dir:
        for _ in range(rounds):
            for mode in modes:
                r = run(binary, mode, members, rate, config_dir)
                results.append(r)
                print(json.dumps(r), flush=True)
                if r["lost"] or r["members"] != members:
                    failed = True
    print(f"\n{members} members of one channel, {rate} new connections/s, {rounds} round(s)")
    print(f"{'mode':8} {'setup s':>8} {'setup CPU s':>12} {'CPU s to quiet':>15}")
    for mode in modes:
        rs = [r for r in results if r["mode"] == mode]
        best = min(rs, key=lambda r: r["setup_cpu_s"])
        print(f"{mode:8} {best['setup_s']:8.2f} {best['setup_cpu_s']:12.2f} "
              f"{best['total_cpu_s']:15.2f}")
    off = min((r for r in results if r["mode"] == "off"), key=lambda r: r["total_cpu_s"])
    diff = min((r for r in results if r["mode"] == "diff"), key=lambda r: r["total_cpu_s"])
    print(f"diff/off: setup CPU {diff['setup_cpu_s'] / max(off['setup_cpu_s'], 1e-9):.2f}x, "
          f"CPU to quiet {diff['total_cpu_s'] / max(off['total_cpu_s'], 1e-9):.2f}x, "
          f"setup time {diff['setup_s'] / max(off['setup_s'], 1e-9):.2f}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
