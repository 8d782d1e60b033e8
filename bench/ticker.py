#!/usr/bin/env python3
"""The ticker benchmark: the ticker demo's feed at full rate against 1,000 subscribers, with
per-key conflation on against off, in one invocation.

  bench/ticker.py [KILAT_BIN]        (default target/release/kilat; build it with
                                      `cargo build --release -p kilat-cli`)

For each mode a fresh `kilat serve` gets a `ticker` namespace keyed by `sym` with the latest
price of each symbol (`latest = true`, as the demo) and
- `on`:  `conflate_ms = 100` (what `kilat serve --dev` gives the demo);
- `off`: no conflation (every price to every subscriber).
Then `kilat demo feed ticker --url ... --api-key ...` runs as its own process (500 symbols,
about 500 prices a second plus bursts of 5 symbols at 100 a second each, through
`POST /api/publish` as a backend would), and `kilat bench ticker` connects SUBSCRIBERS
subscribers to `ticker:all`, waits WARMUP seconds and measures for DURATION seconds: prices
delivered per second, per subscriber, and the time from the feed's stamp (`t`, ms) to arrival
(p50/p99/max). The feed's publications/s and the server's CPU come from the server's /metrics
and /proc over the same window; the host's load average before each run is printed too, since
the machine may be shared.

Environment [default]: SUBSCRIBERS [1000], DURATION [20], WARMUP [5]. Exits non-zero when a run
failed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from _common import Process, env_int, free_port, metric, raise_nofile, stop

KEY = "bench-ticker"
CONFIG = """
[server]
listen = "127.0.0.1:{port}"
[api]
key = "{key}"
[node]
allow_anonymous = true
[node.namespaces.ticker]
history_size = 1
history_ttl = 600
conflate_key = "sym"
conflate_ms = {conflate_ms}
latest = true
allow_subscribe = "public"
"""


def run(binary: str, mode: str, conflate_ms: int, tmp: str) -> dict:
    port = free_port()
    path = os.path.join(tmp, f"ticker-{mode}.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(port=port, key=KEY, conflate_ms=conflate_ms))
    env = dict(os.environ, KILAT_LOG="warn")
    server = Process([binary, "serve", "--config", path], port, env, timeout=20)
    feed = None
    try:
        feed = subprocess.Popen([binary, "demo", "feed", "ticker", "--url", f"http://127.0.0.1:{port}",
                                 "--api-key", KEY], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        subscribers = env_int("SUBSCRIBERS", 1000)
        duration = env_int("DURATION", 20)
        warmup = env_int("WARMUP", 5)
        bench = subprocess.Popen([binary, "bench", "ticker", "-n", str(subscribers), "-d", str(duration),
                                  "--warmup", str(warmup), "--server-pid", str(server.pid), "--json",
                                  "--url", f"ws://127.0.0.1:{port}/connection/websocket"],
                                 stdout=subprocess.PIPE, preexec_fn=raise_nofile, text=True)
        # The feed's rate over the measured window (the bench measures after its warm-up).
        while metric(port, "kilat_connections") < subscribers and bench.poll() is None:
            time.sleep(0.05)
        time.sleep(warmup)
        pubs0, t0 = metric(port, "kilat_publications_total"), time.time()
        time.sleep(duration)
        pubs1, t1 = metric(port, "kilat_publications_total"), time.time()
        out, _ = bench.communicate(timeout=duration + 120)
        if bench.returncode != 0:
            raise RuntimeError(f"kilat bench ticker failed ({bench.returncode})")
        report = json.loads(out.strip().splitlines()[-1])
        report.update(mode=mode, conflate_ms=conflate_ms, load_before=load,
                      feed_publications_per_s=(pubs1 - pubs0) / (t1 - t0))
        return report
    finally:
        stop(feed)
        server.stop()


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/kilat"
    if not os.access(binary, os.X_OK):
        print(f"no kilat binary at {binary} (build it: cargo build --release -p kilat-cli)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, ms in (("on", 100), ("off", 0)):
            r = run(binary, mode, ms, tmp)
            results.append(r)
            print(json.dumps(r), flush=True)
    print()
    print("| conflation | feed publications/s | subscribers | deliveries/s | per subscriber/s | share of publications | p50 ms | p99 ms | max ms | server CPU s | disconnects | load before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = r["latency"]
        cpu = r.get("server_cpu_seconds")
        print(f"| {r['mode']} ({r['conflate_ms']} ms) | {r['feed_publications_per_s']:.0f} | {r['subscribers']} | "
              f"{r['deliveries_per_s']:.0f} | {r['per_subscriber_per_s']:.1f} | "
              f"{100 * r['per_subscriber_per_s'] / max(r['feed_publications_per_s'], 1):.0f}% | {lat['p50_ms']:.0f} | "
              f"{lat['p99_ms']:.0f} | {lat['max_ms']:.0f} | {cpu:.1f} | {r['disconnects']} | {r['load_before']} |")
    return 0 if all(r["disconnects"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
