#!/usr/bin/env python3
"""Presence of one big channel across nodes on Redis: MEMBERS members of one channel, spread
over NODES `kilat serve --engine redis` processes on one fresh `redis-server`, joining from
several client processes (`kilat bench fanout`, PROCS_PER_NODE per node) at once.

  bench/presence-cluster.py KILAT_BIN

Reported, in one invocation:
- the time until every member is in (from the client processes' start until the server API's
  `presence_stats` on node 0 counts them all), and each node's CPU meanwhile;
- `presence_stats` round trips through node 0's server API (HTTP keep-alive) while the members
  join (under load: every node adding presence at full connect rate) and once all are in;
- paging through the whole member list with the server API's `presence` (limit 1000) on node 0
  and on the last node: pages, seconds, and that every member came exactly once;
- Redis memory per member: `MEMORY USAGE` of the channel's presence keys (hash, expiry zset,
  users hash and the per-node owner sets) divided by the members, and `used_memory` grown.

The namespace is `big` (presence and join/leave on, the default `presence_diff_max` = 1000, so
members get one `presence_count` per window instead of the changes). Members are anonymous
(one user id), so the users hash holds one entry. Nothing is published but one message per
client process at the start of its hold (`kilat bench fanout` needs a publisher, which does not
subscribe).

Environment [default]: MEMBERS [30000], NODES [3], PROCS_PER_NODE [2], CONNECT_RATE [1000]
(new connections per second per client process), HOLD [60 + MEMBERS/1000] (seconds each client
process stays connected once its members are in: long enough for the measurements after the
last join), PING_INTERVAL [25] and PONG_TIMEOUT [10] and HANDSHAKE_TIMEOUT [10] (the nodes'
`node.ping_interval`, `node.pong_timeout`, `node.handshake_timeout`, seconds: a machine shared
with other work may need more time to answer a ping or finish a handshake under the join burst),
PRESENCE_TTL [60] (`node.presence_ttl`: every member's entry is re-added at each ping, so
PING_INTERVAL sets the refresh load on Redis, MEMBERS / PING_INTERVAL adds a second; keep the
TTL above the interval), MAX_HANDSHAKES [512] (`server.max_handshakes`; `kilat bench fanout` counts a refused upgrade as
a failed connection instead of retrying it, so a slow shared machine may need 0: no bound),
REDIS_SERVER [redis-server], NODE_LOG [warn] (the nodes' KILAT_LOG, e.g. `warn,kilat_server::transport::driver=debug`
to log each connection's end). Exits non-zero when not every member got in, the pages missed or
repeated one, or the count fell while the members were held (refreshes failing: entries expired).
Each node's `kilat_connection_drops_total` and `kilat_disconnects_total` at the time of the
measurement are in the JSON (`node_connection_ends_when_measured`).

Limits checked before anything starts: a node holds MEMBERS/NODES sockets and a client process
MEMBERS/(NODES*PROCS_PER_NODE), each under the open-files limit (`ulimit -Hn`) less a margin;
each node listens on its own loopback address (127.0.0.2, 127.0.0.3, ...), so the clients of one
node have the ephemeral port range (net.ipv4.ip_local_port_range) to themselves; connect() takes
the even half of it quickly, so a node can have about half the range of members. Progress
(members counted, join rate, node RSS, load average) goes to stderr every two seconds; the
joining phase gives up when the count has not reached a new high for QUIET seconds (15, or one per 2,000
members if more) or after one second per 100 members (at least 600 s).
"""
from __future__ import annotations

import http.client
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from _common import cpu_seconds, env_int, free_port, metric_series, raise_nofile

API_KEY = "bench-presence-cluster"
CHANNEL = "big:room0"

CONFIG = """
[server]
listen = "{host}:{port}"
max_handshakes = {max_handshakes}
[engine]
kind = "redis"
redis_url = "redis://127.0.0.1:{redis_port}"
[api]
key = "{api_key}"
[node]
allow_anonymous = true
client_command_rate = 0.0
ping_interval = {ping_interval}
pong_timeout = {pong_timeout}
handshake_timeout = {handshake_timeout}
presence_ttl = {presence_ttl}
[node.namespaces.big]
presence = true
join_leave = true
allow_subscribe = "public"
allow_publish = "any"
allow_presence = true
"""


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def port_range() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return high - low + 1
    except OSError:
        return 28232


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_for(what: str, ready, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout} s")


class Redis:
    """A throwaway `redis-server` without persistence, driven through `redis-cli`."""

    def __init__(self, binary: str):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("redis-server", lambda: self.cli("PING") == "PONG")

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                             text=True, timeout=60)
        return out.stdout.strip()

    def used_memory(self) -> int:
        for line in self.cli("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        raise RuntimeError("no used_memory in INFO")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Node:
    """`kilat serve --config` on the shared Redis, ready when /ready answers 200."""

    def __init__(self, binary: str, redis_port: int, config_dir: str, host: str,
                 timeouts: dict, log_dir: str):
        self.host = host
        self.port = free_port(host)
        path = os.path.join(config_dir, f"kilat-{host}-{self.port}.toml")
        with open(path, "w") as f:
            f.write(CONFIG.format(host=host, port=self.port, redis_port=redis_port,
                                  api_key=API_KEY, **timeouts))
        env = dict(os.environ, KILAT_LOG=os.environ.get("NODE_LOG", "warn"))
        with open(os.path.join(log_dir, f"node-{host}.log"), "w") as log:
            self.proc = subprocess.Popen([binary, "serve", "--config", path], env=env,
                                         stdout=log, stderr=log, preexec_fn=raise_nofile)
        wait_for(f"kilat on {host}:{self.port}", self.ready)
        self.url = f"ws://{host}:{self.port}/connection/websocket"
        self.api = self.connect_api()

    def connect_api(self) -> http.client.HTTPConnection:
        api = http.client.HTTPConnection(self.host, self.port, timeout=60)
        api.connect()
        api.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return api

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"kilat exited at start ({self.proc.returncode})")
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")

    def call(self, method: str, body: dict) -> dict:
        headers = {"Authorization": f"apikey {API_KEY}", "Content-Type": "application/json"}
        try:
            self.api.request("POST", f"/api/{method}", json.dumps(body), headers)
            response = self.api.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection: once more on a fresh one.
            self.api.close()
            self.api = self.connect_api()
            self.api.request("POST", f"/api/{method}", json.dumps(body), headers)
            response = self.api.getresponse()
        answer = json.loads(response.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


STATS_ERRORS: list[str] = []


def timed_stats(node: Node, last: int = 0) -> tuple[float, int]:
    """The round trip in ms and the count; an error answer (503 when Redis did not answer
    within `redis_timeout`) is kept in STATS_ERRORS and counts as the last count."""
    t = time.perf_counter()
    try:
        count = node.call("presence_stats", {"channel": CHANNEL})["num_clients"]
    except RuntimeError as e:
        STATS_ERRORS.append(str(e))
        count = last
    return (time.perf_counter() - t) * 1000, count


def page_all(node: Node) -> dict:
    seen: dict[str, int] = {}
    pages = 0
    body = {"channel": CHANNEL, "limit": 1000}
    retries = 0
    t = time.perf_counter()
    while True:
        try:
            r = node.call("presence", body)
        except RuntimeError as e:
            # 503 when Redis did not answer within `engine.redis_timeout` (a starved machine):
            # the same page again, a few times, counted.
            if "503" not in str(e) or retries >= 20:
                raise
            retries += 1
            time.sleep(0.2)
            continue
        pages += 1
        for client in r["clients"]:
            seen[client] = seen.get(client, 0) + 1
        if not r.get("cursor"):
            break
        body["cursor"] = r["cursor"]
    return {"pages": pages, "seconds": time.perf_counter() - t, "members": len(seen),
            "repeated": sum(1 for n in seen.values() if n > 1), "retried_503": retries}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    members = env_int("MEMBERS", 30000)
    nodes_n = env_int("NODES", 3)
    per_node = env_int("PROCS_PER_NODE", 2)
    rate = env_int("CONNECT_RATE", 1000)
    hold = env_int("HOLD", 60 + members // 1000)
    timeouts = {"ping_interval": env_int("PING_INTERVAL", 25),
                "pong_timeout": env_int("PONG_TIMEOUT", 10),
                "handshake_timeout": env_int("HANDSHAKE_TIMEOUT", 10),
                "max_handshakes": env_int("MAX_HANDSHAKES", 512),
                "presence_ttl": env_int("PRESENCE_TTL", 60)}
    quiet = max(15, members // 2000)
    procs_n = nodes_n * per_node
    share = [members // procs_n + (1 if i < members % procs_n else 0) for i in range(procs_n)]
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_node_members = -(-members // nodes_n)
    if per_node_members > files - 500:
        print(f"{per_node_members} members per node do not fit the open-files limit ({files}, "
              f"less 500 for the rest): raise NODES to at least "
              f"{-(-members // (files - 500))}", file=sys.stderr)
        return 2
    if max(share) > files - 1000:
        print(f"{max(share)} members per client process do not fit the open-files limit "
              f"({files}, less 1000): raise PROCS_PER_NODE", file=sys.stderr)
        return 2
    # Linux gives connect() the even ports of the range first and scans them all before it
    # tries an odd one: past half the range per destination, every further connect crawls
    # (measured here: joins stall at about 14,100 per node address with 28,232 ports).
    if per_node_members > port_range() // 2 - 500:
        print(f"{per_node_members} connections to one node address need more ephemeral ports "
              f"than connect() takes quickly (half of net.ipv4.ip_local_port_range, "
              f"{port_range() // 2}): raise NODES to at least "
              f"{-(-members // (port_range() // 2 - 500))}", file=sys.stderr)
        return 2
    load_start = load_average()
    log_dir = os.environ.get("LOG_DIR") or tempfile.mkdtemp(prefix="presence-cluster-logs-")
    os.makedirs(log_dir, exist_ok=True)
    print(f"node logs and client processes' stderr in {log_dir}", file=sys.stderr, flush=True)

    redis = Redis(os.environ.get("REDIS_SERVER", "redis-server"))
    nodes: list[Node] = []
    clients: list[subprocess.Popen] = []
    failed = False
    try:
        with tempfile.TemporaryDirectory() as config_dir:
            nodes = [Node(binary, redis.port, config_dir, f"127.0.0.{2 + i}", timeouts,
                          log_dir) for i in range(nodes_n)]
            mem0 = redis.used_memory()
            rss0 = [rss_mib(n.proc.pid) for n in nodes]
            cpu0 = [cpu_seconds(n.proc.pid) for n in nodes]
            started = time.time()
            client_logs = [os.path.join(log_dir, f"client-{i}.err") for i in range(procs_n)]
            for i, n in enumerate(share):
                node = nodes[i % nodes_n]
                with open(client_logs[i], "w") as log:
                    clients.append(subprocess.Popen(
                        [binary, "bench", "fanout", "--url", node.url, "-n", str(n), "-c", "1",
                         "--channel-prefix", "big:room", "-p", "1", "-r", "0.01", "-d",
                         str(hold), "--drain", "1", "--connect-rate", str(rate), "--json"],
                        stdout=subprocess.PIPE, stderr=log, text=True,
                        preexec_fn=raise_nofile))

            def tail(i: int) -> str:
                with open(client_logs[i]) as f:
                    return f.read()[-2000:]

            # Joining: presence_stats on node 0 until every member is in (the client
            # processes' publishers do not subscribe), or the count has not moved for `quiet`
            # seconds (connections the client processes failed to make, counted in their
            # reports' connect_failed, never come).
            expected = members
            joining_rtts: list[float] = []
            count, best, last_change = 0, -1, time.time()
            all_in_at = started
            limit_s = max(600, members // 100)
            deadline = started + limit_s
            next_progress = started
            while count < expected and time.time() - last_change < quiet:
                if time.time() > deadline:
                    raise RuntimeError(f"only {count} of {expected} in after {limit_s} s")
                if any(c.poll() not in (None, 0) for c in clients):
                    raise RuntimeError("a client process failed: " + next(
                        tail(i) for i, c in enumerate(clients) if c.poll() not in (None, 0)))
                rtt, count = timed_stats(nodes[0], count)
                # Progress is a new highest count: members that leave (a client process that
                # gave up and ended its hold) do not keep the wait going.
                if count > best:
                    best, last_change, all_in_at = count, time.time(), time.time()
                if count < expected:
                    joining_rtts.append(rtt)
                if time.time() >= next_progress:
                    elapsed = time.time() - started
                    print(f"{elapsed:6.1f} s: {count} of {expected} in "
                          f"({count / max(elapsed, 0.001):.0f}/s), node RSS "
                          f"{', '.join(f'{rss_mib(n.proc.pid):.0f}' for n in nodes)} MiB, "
                          f"presence_stats {rtt:.0f} ms, load {load_average()}",
                          file=sys.stderr, flush=True)
                    next_progress += 2
                time.sleep(0.2)
            expected = count
            all_in_s = all_in_at - started
            cpu_in = [cpu_seconds(n.proc.pid) - c for n, c in zip(nodes, cpu0)]
            # All in: the same round trip at rest, then paging on two nodes.
            idle_rtts = [timed_stats(nodes[0])[0] for _ in range(200)]
            pages = [page_all(nodes[0]), page_all(nodes[-1])]
            mem1 = redis.used_memory()
            keys = redis.cli("--scan", "--pattern", "{kilat:ch:" + CHANNEL + "}:presence*")
            key_bytes = {k: int(redis.cli("MEMORY", "USAGE", k, "SAMPLES", "0") or 0)
                         for k in keys.split()}
            rss = [rss_mib(n.proc.pid) for n in nodes]
            # How connections ended so far on each node: with a code, or dropped without one.
            ends = [metric_series(n.port, ("kilat_connection_drops_total",
                                           "kilat_disconnects_total"), host=n.host)
                    for n in nodes]
            load_end = load_average()
            print(f"measured; waiting for the client processes to end their hold ({hold} s), "
                  "counting the members meanwhile", file=sys.stderr, flush=True)
            # Members must stay while held: their entries are refreshed at every ping and
            # expire after PRESENCE_TTL without one, so a refresh load Redis cannot carry shows
            # here as a falling count. Counted until 5 s before the first hold can end (a
            # client process holds HOLD seconds from the end of its own setup).
            held = []
            while time.time() < started + hold - 5 and all(c.poll() is None for c in clients):
                held.append(timed_stats(nodes[0])[1])
                time.sleep(2)
            reports = []
            for i, c in enumerate(clients):
                out, _ = c.communicate(timeout=hold + 300)
                if c.returncode != 0:
                    raise RuntimeError(f"client process failed: {tail(i)}")
                reports.append(json.loads(out))
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
        for n in nodes:
            n.stop()
        redis.stop()

    presence_bytes = sum(key_bytes.values())
    result = {
        "members": members, "nodes": nodes_n, "client_processes": procs_n,
        "connect_rate_per_process": rate,
        "all_in_s": round(all_in_s, 2),
        "members_in": expected,
        "client_subscribed": sum(r["subscribers"] for r in reports),
        "client_connect_failed": sum(r["connect_failed"] for r in reports),
        "client_first_errors": [r["first_error"] for r in reports if r.get("first_error")],
        "client_setup_s": [round(r["setup_s"], 2) for r in reports],
        "node_cpu_s_until_all_in": [round(c, 2) for c in cpu_in],
        "stats_rtt_ms_joining": {"n": len(joining_rtts), "p50": pct(joining_rtts, 50),
                                 "p99": pct(joining_rtts, 99), "max": max(joining_rtts, default=0)},
        "stats_errors": STATS_ERRORS,
        "stats_rtt_ms_all_in": {"n": len(idle_rtts), "p50": pct(idle_rtts, 50),
                                "p99": pct(idle_rtts, 99), "max": max(idle_rtts)},
        "paging": pages,
        "held": {"samples": len(held), "min": min(held, default=0), "max": max(held, default=0),
                 "seconds": round(2.0 * len(held), 0)},
        "redis_presence_key_bytes": key_bytes,
        "redis_presence_bytes_per_member": round(presence_bytes / expected, 1),
        "redis_used_memory_grown_per_member": round((mem1 - mem0) / expected, 1),
        "node_rss_mib_before": [round(r, 1) for r in rss0],
        "node_rss_mib": [round(r, 1) for r in rss],
        "node_rss_grown_per_member_bytes": [
            round((r - r0) * 1048576 / max(1, m), 0)
            for r, r0, m in zip(rss, rss0, [sum(share[i::nodes_n]) for i in range(nodes_n)])],
        "node_connection_ends_when_measured": ends,
        "node_timeouts_s": timeouts,
        "load_average_start": load_start,
        "load_average_end": load_end,
    }
    print(json.dumps(result, indent=2))
    subscribed = sum(r["subscribers"] for r in reports)
    if expected != subscribed:
        print(f"presence counted {expected} but the clients subscribed {subscribed}")
        failed = True
    for p in pages:
        if p["members"] != expected or p["repeated"]:
            failed = True
    if held and min(held) != expected:
        print(f"members fell to {min(held)} of {expected} while held (refreshes failed?)")
        failed = True
    print(f"\n{expected} of {members} members in (the rest failed to connect: "
          f"{result['client_connect_failed']}) of {CHANNEL} on {nodes_n} nodes, {procs_n} "
          f"client processes at {rate} connections/s each")
    print(f"all in after {all_in_s:.1f} s; node CPU meanwhile "
          f"{', '.join(f'{c:.1f}' for c in cpu_in)} s")
    print(f"presence_stats round trip: joining p50 {pct(joining_rtts, 50):.1f} ms "
          f"p99 {pct(joining_rtts, 99):.1f} ms ({len(joining_rtts)} calls); all in p50 "
          f"{pct(idle_rtts, 50):.1f} ms p99 {pct(idle_rtts, 99):.1f} ms")
    for label, p in zip(("node 0", f"node {nodes_n - 1}"), pages):
        print(f"paging on {label}: {p['members']} members in {p['pages']} pages, "
              f"{p['seconds']:.2f} s, {p['repeated']} repeated")
    print(f"held {2 * len(held)} s: the count stayed within {min(held, default=0)}-"
          f"{max(held, default=0)} (pings every {timeouts['ping_interval']} s refresh each entry)")
    print(f"Redis presence: {presence_bytes / expected:.0f} bytes per member (MEMORY USAGE of "
          f"the channel's presence keys), used_memory grew {(mem1 - mem0) / expected:.0f} "
          f"bytes per member")
    print(f"node RSS grew {', '.join(f'{b:.0f}' for b in result['node_rss_grown_per_member_bytes'])}"
          f" bytes per member (connection, session and subscription; no presence entry lives "
          f"on a node with Redis)")
    print(f"load average {load_start} at the start, {load_end} once measured (shared machine)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
