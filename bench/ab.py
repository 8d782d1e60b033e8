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
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """`kilat serve --dev` on a free loopback port, ready when /health answers."""

    def __init__(self, binary: str):
        self.port = free_port()
        env = dict(os.environ, KILAT_NODE_CLIENT_COMMAND_RATE="0", RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [binary, "serve", "--dev", "--listen", f"127.0.0.1:{self.port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{binary} exited at start ({self.proc.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{binary} did not answer /health within 20 s")
        self.url = f"ws://127.0.0.1:{self.port}/connection/websocket"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench(client: str, args: list[str]) -> dict:
    out = subprocess.run([client, "bench", *args, "--json"], capture_output=True, text=True,
                         timeout=300, preexec_fn=raise_nofile)
    if out.returncode != 0:
        raise RuntimeError(f"kilat bench {args[0]} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def fanout(client: str, binary: str) -> dict:
    server = Server(binary)
    try:
        r = bench(client, ["fanout", "--url", server.url,
                           "-n", str(env_int("FANOUT_SUBS", 1000)),
                           "-r", str(env_int("FANOUT_RATE", 200)),
                           "-d", str(env_int("FANOUT_SECS", 5)),
                           "-s", str(env_int("PAYLOAD", 100)),
                           "--drain", "10", "--server-pid", str(server.proc.pid)])
    finally:
        server.stop()
    return {
        "deliveries_per_s": r["deliveries_per_s"],
        "lost": r["lost"],
        "duplicated": r["duplicated"],
        "p50_ms": r["latency"]["p50_ms"],
        "p99_ms": r["latency"]["p99_ms"],
        "cpu_s_per_m": r["server_cpu_s_per_million_deliveries"],
    }


def idle(client: str, binary: str) -> dict:
    server = Server(binary)
    try:
        r = bench(client, ["idle", "--url", server.url, "-n", str(env_int("IDLE_N", 2000)),
                           "--settle", "3", "--server-pid", str(server.proc.pid)])
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
