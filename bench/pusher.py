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
    """A server process on a free loopback port, ready once the port accepts and (for kilat)
    /health answers 200."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], health: bool):
        self.port = port
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited at start ({self.proc.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if not health:
                        break
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{argv[0]} did not come up within 30 s")

    @staticmethod
    def kilat(binary: str) -> "Server":
        port = free_port()
        env = dict(os.environ, KILAT_NODE_CLIENT_COMMAND_RATE="0", RUST_LOG="warn")
        return Server([binary, "serve", "--dev", "--listen", f"127.0.0.1:{port}",
                       "--max-connections", "20000"], port, env, True)

    @staticmethod
    def soketi(command: str) -> "Server":
        port = free_port()
        env = dict(os.environ, SOKETI_PORT=str(port), SOKETI_DEBUG="0")
        return Server([*command.split(), "start"], port, env, False)

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
                         timeout=600, preexec_fn=raise_nofile)
    if out.returncode != 0:
        raise RuntimeError(f"kilat bench {args[0]} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def target_args(target: str, port: int) -> list[str]:
    base = f"ws://127.0.0.1:{port}"
    if target == "native-ws":
        return ["--url", f"{base}/connection/websocket", "--protocol", "kilat"]
    if target == "native-http":
        return ["--url", f"{base}/connection/websocket", "--protocol", "kilat",
                "--publish-via", "http"]
    return ["--url", f"{base}/app/app-key?protocol=7", "--protocol", "pusher",
            "--publish-via", "http"]


def start(target: str, kilat: str) -> Server:
    if target == "soketi":
        return Server.soketi(os.environ["SOKETI"])
    if target == "pusher-baseline":
        return Server.kilat(os.environ["BASELINE"])
    return Server.kilat(kilat)


def fanout(client: str, kilat: str, target: str) -> dict:
    server = start(target, kilat)
    try:
        r = bench(client, ["fanout", *target_args(target, server.port),
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


def idle(client: str, kilat: str, target: str) -> dict:
    server = start(target, kilat)
    try:
        r = bench(client, ["idle", *target_args(target, server.port)[:4],
                           "-n", str(env_int("IDLE_N", 5000)), "--subscribe", "100",
                           "--settle", "3", "--server-pid", str(server.proc.pid)])
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
