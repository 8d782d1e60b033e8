"""What the benchmark scripts under bench/ share: free ports, the open-file limit, a server
process that is ready once it answers, its CPU time from /proc, and `kilat bench ... --json`.

Import it from a script in bench/ (Python puts the script's folder first on the path):

    from _common import Process, bench_json, env_int, free_port
"""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def raise_nofile() -> None:
    """Lift this process's open-file limit to its hard limit (a `preexec_fn` for children that
    hold thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(port: int, path: str, timeout: float = 5, host: str = "127.0.0.1") -> str:
    """The body of a plain HTTP/1.1 GET to HOST:PORT."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace").split("\r\n\r\n", 1)[-1]


def metric_series(port: int, prefixes: tuple[str, ...], host: str = "127.0.0.1") -> dict:
    """Every series of kilat's /metrics on HOST:PORT whose name starts with one of `prefixes`,
    with its labels as printed: {"kilat_x_total{a=\"b\"}": 3.0, ...}."""
    series = {}
    for line in http_get(port, "/metrics", host=host).splitlines():
        if line.startswith(prefixes):
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
    return series


def metric(port: int, name: str) -> float:
    """One unlabelled series from kilat's /metrics on 127.0.0.1:PORT."""
    for line in http_get(port, "/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{name} not in /metrics")


class Process:
    """A server process listening on a loopback port: started with `argv`, ready once the
    port accepts and, with `health`, `GET /health` answers 200 (kilat). Stopped with SIGTERM,
    then SIGKILL after 10 s."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None,
                 health: bool = True, timeout: float = 30):
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/connection/websocket"
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited at start ({self.proc.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if not health:
                        return
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{argv[0]} did not come up on port {port} within {timeout:.0f} s")

    @staticmethod
    def kilat_dev(binary: str, *extra: str) -> "Process":
        """`kilat serve --dev` on a free port, without the per-client command rate limit (a
        benchmark client sends faster than a person) and with quiet logs."""
        port = free_port()
        env = dict(os.environ, KILAT_NODE_CLIENT_COMMAND_RATE="0", RUST_LOG="warn")
        return Process([binary, "serve", "--dev", "--listen", f"127.0.0.1:{port}", *extra],
                       port, env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def quiet_cpu(self) -> float:
        """The CPU seconds once the process has stopped using CPU (0.5 s without a tick)."""
        last = self.cpu()
        while True:
            time.sleep(0.5)
            now = self.cpu()
            if now - last < 0.02:
                return now
            last = now

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s; nothing for a process already gone."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_json(client: str, args: list[str], timeout: float = 600) -> dict:
    """Run `CLIENT bench ARGS --json` and return its JSON report; a failed run raises with the
    end of its stderr."""
    out = subprocess.run([client, "bench", *args, "--json"], capture_output=True, text=True,
                         timeout=timeout, preexec_fn=raise_nofile)
    if out.returncode != 0:
        raise RuntimeError(f"kilat bench {args[0]} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout[out.stdout.index("{"):])


def fanout_summary(report: dict) -> dict:
    """The figures the comparison scripts print from a `kilat bench fanout --json` report."""
    return {
        "deliveries_per_s": report["deliveries_per_s"],
        "lost": report["lost"],
        "duplicated": report["duplicated"],
        "p50_ms": report["latency"]["p50_ms"],
        "p99_ms": report["latency"]["p99_ms"],
        "cpu_s_per_m": report["server_cpu_s_per_million_deliveries"],
    }


def fanout_args() -> list[str]:
    """The fan-out load from the environment [default]: FANOUT_SUBS [1000] subscribers,
    FANOUT_RATE [200] msg/s for FANOUT_SECS [5] s, PAYLOAD [100] bytes."""
    return ["-n", str(env_int("FANOUT_SUBS", 1000)), "-r", str(env_int("FANOUT_RATE", 200)),
            "-d", str(env_int("FANOUT_SECS", 5)), "-s", str(env_int("PAYLOAD", 100))]
