#!/usr/bin/env python3
"""Encodings and deltas in one invocation: JSON, MessagePack, JSON with fossil deltas and
MessagePack with deltas, alternating, on the ticker feed (17 quotes of about 1 KB, one changing
per publication) to 1,000 subscribers, each run against a fresh `serve --dev`.

  bench/encodings.py target/release/kilat [ROUNDS]
"""
from __future__ import annotations

import sys

from _common import Process, bench_json

MODES = [
    ("json", []),
    ("msgpack", ["--encoding", "msgpack"]),
    ("json+delta", ["--delta"]),
    ("msgpack+delta", ["--encoding", "msgpack", "--delta"]),
]


def run(binary: str, extra: list[str]) -> dict:
    server = Process.kilat_dev(binary)
    try:
        return bench_json(binary, ["fanout", "--url", server.url, "-n", "1000", "-r", "100",
                                   "-d", "8", "--feed", "ticker", "-s", "1000",
                                   "--server-pid", str(server.pid), *extra])
    finally:
        server.stop()


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    rows = []
    failed = False
    for r in range(rounds):
        for name, extra in MODES:
            try:
                j = run(binary, extra)
            except RuntimeError as e:
                print(name, "FAILED", e, flush=True)
                failed = True
                continue
            row = (r + 1, name, j.get("bytes_per_delivery"),
                   j.get("server_cpu_s_per_million_deliveries"), j.get("delivered"),
                   j.get("lost"), j.get("duplicated"))
            failed |= bool(j.get("lost") or j.get("duplicated"))
            rows.append(row)
            print(*row, flush=True)
    print("| round | mode | bytes per delivery | server CPU s per M deliveries | delivered | lost | dup |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(f"{x:.1f}" if isinstance(x, float) else str(x) for x in row) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
