#!/usr/bin/env python3
"""Run the same `kilat bench` scenarios against kilat and comparison servers, in one invocation,
and write docs/benchmarks.md plus SVG charts under docs/img/.

Servers: kilat (`serve --dev`), bare-broadcaster (Rust, encode-once, the physical-limit
reference), Node `ws`, Socket.IO 4 and Python `websockets`. Each scenario gets a fresh server
process so memory and CPU are measured from a clean start.

Sizes come from the environment (defaults in brackets; QUICK=1 picks smaller ones):
  SERVERS        comma list [kilat,bare,node-ws,socketio,python-websockets]
  IDLE_N         idle connections [10000; quick 2000]
  CONNECT_N      connections for the handshake-rate test [5000; quick 2000]
  FANOUT_SUBS    subscribers [1000; quick 1000]
  FANOUT_RATE    messages/s in the fanout test [200]
  FANOUT_SECS    seconds of publishing [10; quick 5]
  SAT_RATE       messages/s in the saturation test [1000; quick 1000]
  SAT_SECS       seconds of the saturation test [5; quick 3]
  PAYLOAD        payload bytes [100]
  SWEEP_RATES    messages/s of the latency sweep (same subscribers) [25,50,100; quick 50]
  SWEEP_SECS     seconds per sweep point [5; quick 3]
  SKIP_INSTALL=1 / SKIP_BUILD=1 reuse what is installed / built
  CARGO_TARGET_DIR  where kilat is built [target]; the bare broadcaster goes to <that>-bare
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
QUICK = os.environ.get("QUICK") == "1"


def env_int(name: str, full: int, quick: int) -> int:
    return int(os.environ.get(name, quick if QUICK else full))


SIZES = {
    "idle_n": env_int("IDLE_N", 10000, 2000),
    "connect_n": env_int("CONNECT_N", 5000, 2000),
    "fanout_subs": env_int("FANOUT_SUBS", 1000, 1000),
    "fanout_rate": env_int("FANOUT_RATE", 200, 200),
    "fanout_secs": env_int("FANOUT_SECS", 10, 5),
    "sat_rate": env_int("SAT_RATE", 1000, 1000),
    "sat_secs": env_int("SAT_SECS", 5, 3),
    "payload": env_int("PAYLOAD", 100, 100),
    "sweep_rates": [int(r) for r in os.environ.get("SWEEP_RATES", "50" if QUICK else "25,50,100").split(",") if r],
    "sweep_secs": env_int("SWEEP_SECS", 5, 3),
}
ALL_SERVERS = ["kilat", "bare", "node-ws", "socketio", "python-websockets"]
SERVERS = [s for s in os.environ.get("SERVERS", ",".join(ALL_SERVERS)).split(",") if s]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BARE_TARGET = Path(str(TARGET) + "-bare")
VENV = BENCH / ".venv-bench"
KILAT = TARGET / "release" / "kilat"
LABELS = {
    "kilat": "kilat",
    "bare": "bare broadcaster (Rust)",
    "node-ws": "Node ws",
    "socketio": "Socket.IO 4",
    "python-websockets": "Python websockets",
}


def log(*a):
    print("[compare]", *a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$", " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


def install_and_build():
    if os.environ.get("SKIP_INSTALL") != "1":
        for d in ("node-ws", "socketio"):
            run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH / "servers" / d)
        if not VENV.exists():
            run([sys.executable, "-m", "venv", str(VENV)])
        run([str(VENV / "bin" / "pip"), "install", "-q", "-r",
             str(BENCH / "servers" / "python-websockets" / "requirements.txt")])
    if os.environ.get("SKIP_BUILD") != "1":
        run(["cargo", "build", "--release", "-p", "kilat-cli"], cwd=ROOT)
        env = dict(os.environ, CARGO_TARGET_DIR=str(BARE_TARGET))
        run(["cargo", "build", "--release"], cwd=BENCH / "bare-broadcaster", env=env)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def server_cmd(name: str, port: int, max_conn: int):
    """(argv, cwd, env, ws url, protocol) of a server."""
    env = dict(os.environ, PORT=str(port), KILAT_LOG="warn", NODE_ENV="production")
    base = f"ws://127.0.0.1:{port}"
    if name == "kilat":
        # The other servers have no per-connection command limit; lift kilat's (default 100
        # commands/s per connection) so one publisher connection can publish at the test rate.
        env["KILAT_NODE_CLIENT_COMMAND_RATE"] = "0"
        return ([str(KILAT), "serve", "--dev", "--listen", f"127.0.0.1:{port}",
                 "--max-connections", str(max_conn)], ROOT, env,
                f"{base}/connection/websocket", "kilat")
    if name == "bare":
        return ([str(BARE_TARGET / "release" / "bare-broadcaster")], ROOT, env, f"{base}/", "broadcast")
    if name == "node-ws":
        return (["node", "server.js"], BENCH / "servers" / "node-ws", env, f"{base}/", "broadcast")
    if name == "socketio":
        return (["node", "server.js"], BENCH / "servers" / "socketio", env,
                f"{base}/socket.io/?EIO=4&transport=websocket", "socketio")
    if name == "python-websockets":
        return ([str(VENV / "bin" / "python"), "server.py"], BENCH / "servers" / "python-websockets",
                env, f"{base}/", "broadcast")
    raise SystemExit(f"unknown server {name}")


class Server:
    def __init__(self, name: str, max_conn: int = 100_000):
        self.name = name
        self.port = free_port()
        argv, cwd, env, self.url, self.protocol = server_cmd(name, self.port, max_conn)
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start ({self.proc.returncode})")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"{name} did not listen within 20 s")
        time.sleep(0.5)  # let the runtime settle before the baseline is read

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def raise_nofile():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bench(args: list[str], timeout: float) -> dict:
    cmd = [str(KILAT), "bench", *args, "--json"]
    log("$", " ".join(cmd))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             preexec_fn=raise_nofile)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"error": "unparsable output"}


def workers_for(n: int) -> list[str]:
    # One process can hold ~20,000 sockets (open-files cap); spread beyond that.
    k = max(1, -(-n // 15000))
    return ["--workers", str(k)] if k > 1 else []


def measure(name: str) -> dict:
    s = SIZES
    res = {}
    with Server(name, s["idle_n"] + 1000) as srv:
        res["idle"] = bench(["idle", "--url", srv.url, "--protocol", srv.protocol,
                             "-n", str(s["idle_n"]), "--server-pid", str(srv.proc.pid),
                             "--settle", "3", *workers_for(s["idle_n"])], 300)
    with Server(name, s["connect_n"] + 1000) as srv:
        res["connect"] = bench(["connect", "--url", srv.url, "--protocol", srv.protocol,
                                "-n", str(s["connect_n"]), "--rate", "100000",
                                "--concurrency", "128", "--server-pid", str(srv.proc.pid),
                                *workers_for(s["connect_n"])], 300)
    # Like for like with the broadcast servers: the WebSocket upgrade alone, without kilat's
    # `connect` command round trip (Socket.IO's handshake always includes its `40` connect).
    if srv.protocol == "broadcast":
        res["connect_upgrade"] = res["connect"]
    elif name == "kilat":
        with Server(name, s["connect_n"] + 1000) as srv:
            res["connect_upgrade"] = bench(["connect", "--url", srv.url, "--protocol", "broadcast",
                                            "-n", str(s["connect_n"]), "--rate", "100000",
                                            "--concurrency", "128", "--server-pid", str(srv.proc.pid),
                                            *workers_for(s["connect_n"])], 300)
    for key, rate, secs in (("fanout", s["fanout_rate"], s["fanout_secs"]),
                            ("saturation", s["sat_rate"], s["sat_secs"])):
        with Server(name, s["fanout_subs"] + 1000) as srv:
            res[key] = bench(["fanout", "--url", srv.url, "--protocol", srv.protocol,
                              "-n", str(s["fanout_subs"]), "-r", str(rate), "-d", str(secs),
                              "-s", str(s["payload"]), "--drain", "10",
                              "--server-pid", str(srv.proc.pid)], secs + 120)
    # Latency against load: the fanout at lower rates (the 200 msg/s point is the fanout above).
    res["sweep"] = {}
    for rate in s["sweep_rates"]:
        with Server(name, s["fanout_subs"] + 1000) as srv:
            res["sweep"][str(rate)] = bench(
                ["fanout", "--url", srv.url, "--protocol", srv.protocol, "-n", str(s["fanout_subs"]),
                 "-r", str(rate), "-d", str(s["sweep_secs"]), "-s", str(s["payload"]), "--drain", "10",
                 "--server-pid", str(srv.proc.pid)], s["sweep_secs"] + 120)
    return res


def sweep_points(res: dict) -> list[tuple[int, dict]]:
    """(msg/s, fanout result) of the sweep plus the fanout itself, by rate."""
    points = {int(r): v for r, v in (res.get("sweep") or {}).items() if isinstance(v, dict)}
    if isinstance(res.get("fanout"), dict):
        points[SIZES["fanout_rate"]] = res["fanout"]
    return sorted(points.items())


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------- report


def get(d: dict, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def fmt(v, digits=1, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{digits}f}{unit}" if isinstance(v, float) else f"{v:,}{unit}"


def ratio(v, base, higher_better=True):
    if v is None or base in (None, 0) or v == 0:
        return "n/a"
    r = v / base
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024 // 1024} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Linux {platform.release()}"


def versions() -> dict:
    v = {}
    try:
        v["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    for pkg, d in (("ws", "node-ws"), ("socket.io", "socketio")):
        p = BENCH / "servers" / d / "node_modules" / pkg / "package.json"
        if p.exists():
            v[pkg] = json.loads(p.read_text())["version"]
    py = VENV / "bin" / "python"
    if py.exists():
        v["python websockets"] = subprocess.run(
            [str(py), "-c", "import websockets,sys;print(websockets.__version__, sys.version.split()[0])"],
            capture_output=True, text=True).stdout.strip()
    return v


def svg_bars(path: Path, title: str, unit: str, groups: list[str], series: list[tuple[str, list]],
             log_scale: bool = False):
    """A grouped bar chart: one group per entry in `groups`, one bar per series."""
    import math
    colors = ["#e4572e", "#29335c", "#f3a712", "#669bbc", "#a8c686", "#8d6a9f"]
    w, h, left, top, bottom = 900, 340, 70, 40, 70
    plot_w, plot_h = w - left - 20, h - top - bottom
    values = [v for _, vs in series for v in vs if isinstance(v, (int, float)) and v > 0]
    vmax = max(values) if values else 1
    vmin = min(values) if values else 1
    if log_scale:
        lo = 10 ** math.floor(math.log10(vmin))
        hi = 10 ** math.ceil(math.log10(vmax))
        if hi <= lo:
            hi = lo * 10

        def y(v):
            return top + plot_h - plot_h * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        ticks = []
        t = lo
        while t <= hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        hi = vmax * 1.1

        def y(v):
            return top + plot_h - plot_h * v / hi
        step = 10 ** math.floor(math.log10(hi / 5)) if hi > 0 else 1
        for m in (1, 2, 5, 10):
            if hi / (step * m) <= 6:
                step *= m
                break
        ticks = [i * step for i in range(int(hi / step) + 1)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="#fff"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>']
    for t in ticks:
        yy = y(t)
        label = f"{t:g}" if t < 1e6 else f"{t / 1e6:g}M"
        out.append(f'<line x1="{left}" x2="{w - 20}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
               f'text-anchor="middle">{unit}{" (log)" if log_scale else ""}</text>')
    gw = plot_w / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(series))
    for gi, g in enumerate(groups):
        gx = left + gi * gw + gw * 0.1
        out.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{g}</text>')
        for si, (_, vs) in enumerate(series):
            v = vs[gi] if gi < len(vs) else None
            if not isinstance(v, (int, float)) or v <= 0:
                continue
            x = gx + si * bw
            yy = y(v)
            out.append(f'<rect x="{x:.1f}" y="{yy:.1f}" width="{bw - 2:.1f}" height="{top + plot_h - yy:.1f}" '
                       f'fill="{colors[si % len(colors)]}"><title>{v:g}</title></rect>')
    finish_svg(path, out, [name for name, _ in series], colors, left, h - 28)


def finish_svg(path: Path, out: list[str], names: list[str], colors: list[str], left: int, y: int):
    """Adds a legend (one swatch per series, in a row at height `y`) and writes the SVG."""
    lx = left
    for si, name in enumerate(names):
        out.append(f'<rect x="{lx}" y="{y}" width="12" height="12" fill="{colors[si % len(colors)]}"/>')
        out.append(f'<text x="{lx + 16}" y="{y + 10}">{name}</text>')
        lx += 20 + 7 * len(name) + 10
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def svg_lines(path: Path, title: str, xlabel: str, ylabel: str,
              series: list[tuple[str, list[tuple[float, float]]]], hline: float | None = None):
    """Lines over a linear x axis and a log y axis; `hline` marks a target."""
    import math
    colors = ["#e4572e", "#29335c", "#f3a712", "#669bbc", "#a8c686", "#8d6a9f"]
    w, h, left, top, bottom = 900, 360, 70, 40, 80
    plot_w, plot_h = w - left - 30, h - top - bottom
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts if y > 0] + ([hline] if hline else [])
    if not xs or not ys:
        return
    xmax = max(xs) * 1.05
    lo = 10 ** math.floor(math.log10(min(ys)))
    hi = 10 ** math.ceil(math.log10(max(ys)))
    if hi <= lo:
        hi = lo * 10

    def px(x):
        return left + plot_w * x / xmax

    def py(y):
        return top + plot_h - plot_h * (math.log10(max(y, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="#fff"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>']
    t = lo
    while t <= hi * 1.0001:
        out.append(f'<line x1="{left}" x2="{w - 30}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        t *= 10
    step = 10 ** math.floor(math.log10(xmax / 5))
    for m in (1, 2, 5, 10):
        if xmax / (step * m) <= 8:
            step *= m
            break
    x = 0.0
    while x <= xmax:
        out.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x:,.0f}</text>')
        x += step
    out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">{xlabel}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
               f'text-anchor="middle">{ylabel} (log)</text>')
    if hline:
        out.append(f'<line x1="{left}" x2="{w - 30}" y1="{py(hline):.1f}" y2="{py(hline):.1f}" '
                   f'stroke="#2a9d8f" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{w - 34}" y="{py(hline) - 4:.1f}" text-anchor="end" fill="#2a9d8f">target {hline:g}</text>')
    for si, (name, pts) in enumerate(series):
        c = colors[si % len(colors)]
        pts = [(x, y) for x, y in pts if y > 0]
        if not pts:
            continue
        path_d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(pts))
        out.append(f'<path d="{path_d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{c}"><title>{name}: {y:g}</title></circle>')
    finish_svg(path, out, [name for name, _ in series], colors, left, h - 24)


def write_report(results: dict, command: str, started: str, seconds: float, load: list | None = None):
    docs = ROOT / "docs"
    load_text = " and ".join(f"{v:.2f}" for v in (load or []) if v is not None) or "unknown"
    img = docs / "img"
    img.mkdir(parents=True, exist_ok=True)
    names = [n for n in SERVERS if n in results]
    labels = [LABELS[n] for n in names]
    s = SIZES

    def col(n, *path):
        return get(results[n], *path)

    base = "node-ws" if "node-ws" in results else None
    rows = []
    metrics = [
        ("idle RSS / connection (KiB)", ("idle", "server_rss_per_connection_kib"), 2, False),
        ("handshakes/s (with the protocol's connect step)", ("connect", "handshakes_per_s"), 0, True),
        ("handshakes/s (WebSocket upgrade only)", ("connect_upgrade", "handshakes_per_s"), 0, True),
        ("server CPU ms / 1,000 handshakes (with connect step)", ("connect", "server_cpu_ms_per_1000_handshakes"), 1, False),
        ("server CPU ms / 1,000 handshakes (upgrade only)", ("connect_upgrade", "server_cpu_ms_per_1000_handshakes"), 1, False),
        ("connect p99 (ms)", ("connect", "latency", "p99_ms"), 2, False),
        (f"fanout deliveries/s (offered {s['fanout_subs'] * s['fanout_rate']:,})", ("fanout", "deliveries_per_s"), 0, True),
        ("fanout p50 (ms)", ("fanout", "latency", "p50_ms"), 3, False),
        ("fanout p99 (ms)", ("fanout", "latency", "p99_ms"), 3, False),
        ("fanout p99.9 (ms)", ("fanout", "latency", "p999_ms"), 3, False),
        ("fanout max (ms)", ("fanout", "latency", "max_ms"), 2, False),
        ("fanout lost / duplicated", None, 0, False),
        ("server CPU s / M deliveries", ("fanout", "server_cpu_s_per_million_deliveries"), 3, False),
        (f"saturation deliveries/s (offered {s['fanout_subs'] * s['sat_rate']:,})", ("saturation", "deliveries_per_s"), 0, True),
        ("saturation p99 (ms)", ("saturation", "latency", "p99_ms"), 2, False),
        ("saturation lost", ("saturation", "lost"), 0, False),
        ("saturation CPU s / M deliveries", ("saturation", "server_cpu_s_per_million_deliveries"), 3, False),
    ]
    head = "| metric | " + " | ".join(labels) + " |"
    rows.append(head)
    rows.append("|---" * (len(labels) + 1) + "|")
    for title, path, digits, _ in metrics:
        cells = []
        for n in names:
            if path is None:
                lost, dup = col(n, "fanout", "lost"), col(n, "fanout", "duplicated")
                cells.append("n/a" if lost is None else f"{lost:,} / {dup:,}")
                continue
            v = col(n, *path)
            err = get(results[n], path[0], "error")
            cells.append(f"error: {err}" if err else fmt(v, digits))
        rows.append(f"| {title} | " + " | ".join(cells) + " |")
    ratio_rows = []
    if base:
        ratio_rows.append("| ratio against Node ws (same run) | " + " | ".join(labels) + " |")
        ratio_rows.append("|---" * (len(labels) + 1) + "|")
        for title, path, _, higher in metrics:
            if path is None or "p99.9" in title or "max" in title or "lost" in title:
                continue
            b = col(base, *path)
            cells = [ratio(col(n, *path), b) for n in names]
            better = "higher is better" if higher else "lower is better"
            ratio_rows.append(f"| {title} ({better}) | " + " | ".join(cells) + " |")

    # Targets from the project brief, checked on kilat's numbers.
    targets = []
    if "kilat" in results:
        k = results["kilat"]
        idle = get(k, "idle", "server_rss_per_connection_kib")
        targets.append(("idle RSS per connection <= 4 KiB (goal 2)", fmt(idle, 2, " KiB"),
                        idle is not None and idle <= 4))
        fo = k.get("fanout", {})
        dps, p99 = fo.get("deliveries_per_s"), get(fo, "latency", "p99_ms")
        offered = s["fanout_subs"] * s["fanout_rate"]
        targets.append((f"fanout {s['fanout_subs']:,} subs x {s['fanout_rate']} msg/s: all {offered:,} deliveries/s, p99 <= 5 ms",
                        f"{fmt(dps, 0)} deliveries/s, lost {fo.get('lost', 'n/a')}, p99 {fmt(p99, 3)} ms",
                        dps is not None and p99 is not None and fo.get("lost") == 0 and p99 <= 5 and dps >= offered * 0.97))
        if base:
            kc = get(k, "saturation", "server_cpu_s_per_million_deliveries")
            nc = get(results[base], "saturation", "server_cpu_s_per_million_deliveries")
            targets.append(("saturation: CPU-seconds per million deliveries <= 1/5 of Node ws",
                            f"{fmt(kc, 3)} vs {fmt(nc, 3)} ({ratio(kc, nc)})",
                            kc is not None and nc not in (None, 0) and kc <= nc / 5))
        if "bare" in results:
            kc = get(k, "saturation", "server_cpu_s_per_million_deliveries")
            bc = get(results["bare"], "saturation", "server_cpu_s_per_million_deliveries")
            targets.append(("saturation: CPU-seconds per million deliveries within 2x of the bare broadcaster",
                            f"{fmt(kc, 3)} vs {fmt(bc, 3)} ({ratio(kc, bc)})",
                            kc is not None and bc not in (None, 0) and kc <= 2 * bc))
        if base:
            kc = get(k, "fanout", "server_cpu_s_per_million_deliveries")
            nc = get(results[base], "fanout", "server_cpu_s_per_million_deliveries")
            targets.append((f"(brief) at {s['fanout_rate']} msg/s: CPU-seconds per million deliveries <= 1/5 of Node ws",
                            f"{fmt(kc, 3)} vs {fmt(nc, 3)} ({ratio(kc, nc)})",
                            kc is not None and nc not in (None, 0) and kc <= nc / 5))
            nh = get(results[base], "connect", "handshakes_per_s")
            for what, key in (("WebSocket upgrade, like for like", "connect_upgrade"),
                              ("with kilat's connect command round trip", "connect")):
                kh = get(k, key, "handshakes_per_s")
                targets.append((f"handshakes/s >= 3x Node ws ({what})",
                                f"{fmt(kh, 0)} vs {fmt(nh, 0)} ({ratio(kh, nh)})",
                                kh is not None and nh not in (None, 0) and kh >= 3 * nh))
            kc = get(k, "connect_upgrade", "server_cpu_ms_per_1000_handshakes")
            nc = get(results[base], "connect", "server_cpu_ms_per_1000_handshakes")
            targets.append(("(client-independent) server CPU per handshake <= 1/3 of Node ws (upgrade only)",
                            f"{fmt(kc, 1)} vs {fmt(nc, 1)} ms per 1,000 ({ratio(kc, nc)})",
                            kc is not None and nc not in (None, 0) and kc * 3 <= nc))

    # Latency against load.
    sweep_rows = []
    sweep_series = []
    for n in names:
        pts = sweep_points(results[n])
        sweep_series.append((LABELS[n], [(r * s["fanout_subs"], get(v, "latency", "p99_ms") or 0) for r, v in pts]))
    rates = sorted({r for n in names for r, _ in sweep_points(results[n])})
    if rates:
        sweep_rows.append("| msg/s (deliveries/s offered) | " + " | ".join(labels) + " |")
        sweep_rows.append("|---" * (len(labels) + 1) + "|")
        for r in rates:
            cells = []
            for n in names:
                v = dict(sweep_points(results[n])).get(r)
                if not v or "latency" not in v:
                    cells.append(f"error: {v.get('error')}" if v else "n/a")
                    continue
                lost = v.get("lost", 0)
                cells.append(f"{fmt(get(v, 'latency', 'p50_ms'), 2)} / {fmt(get(v, 'latency', 'p99_ms'), 2)} ms"
                             + (f", lost {lost:,}" if lost else ""))
            sweep_rows.append(f"| {r} ({r * s['fanout_subs']:,}) | " + " | ".join(cells) + " |")
        svg_lines(img / "bench-sweep.svg",
                  f"Fanout p99 against load ({s['fanout_subs']:,} subscribers, one channel)",
                  "deliveries/s offered", "p99 ms", sweep_series, hline=5)
        if "kilat" in results:
            ok = [r for r, v in sweep_points(results["kilat"])
                  if (get(v, "latency", "p99_ms") or 1e9) <= 5 and v.get("lost") == 0]
            targets.append(("(sweep) highest rate with p99 <= 5 ms",
                            f"{max(ok) if ok else 'none'} msg/s x {s['fanout_subs']:,} subscribers", bool(ok)))

    # Charts.
    pcts = [("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")]
    svg_bars(img / "bench-latency.svg",
             f"Fanout publish-to-deliver latency ({s['fanout_subs']:,} subs, {s['fanout_rate']} msg/s)",
             "ms", [p for p, _ in pcts],
             [(LABELS[n], [col(n, "fanout", "latency", k) for _, k in pcts]) for n in names], log_scale=True)
    svg_bars(img / "bench-deliveries.svg", "Deliveries per second (fanout and saturation)", "deliveries/s",
             [f"{s['fanout_rate']} msg/s", f"{s['sat_rate']} msg/s"],
             [(LABELS[n], [col(n, "fanout", "deliveries_per_s"), col(n, "saturation", "deliveries_per_s")])
              for n in names])
    svg_bars(img / "bench-memory.svg", f"Server RSS per idle connection ({s['idle_n']:,} connections)", "KiB",
             ["KiB per connection"],
             [(LABELS[n], [col(n, "idle", "server_rss_per_connection_kib")]) for n in names])
    svg_bars(img / "bench-cpu.svg", "Server CPU-seconds per million deliveries", "CPU s",
             [f"{s['fanout_rate']} msg/s", f"{s['sat_rate']} msg/s"],
             [(LABELS[n], [col(n, "fanout", "server_cpu_s_per_million_deliveries"),
                           col(n, "saturation", "server_cpu_s_per_million_deliveries")]) for n in names])
    svg_bars(img / "bench-handshakes.svg", f"Handshakes per second ({s['connect_n']:,} connections)",
             "handshakes/s", ["with the protocol's connect step", "WebSocket upgrade only"],
             [(LABELS[n], [col(n, "connect", "handshakes_per_s"), col(n, "connect_upgrade", "handshakes_per_s")])
              for n in names])

    v = versions()
    md = [
        "# Benchmarks",
        "",
        "Generated by `bench/compare.sh` (which runs `bench/compare.py`): the same `kilat bench` scenarios against",
        "kilat and comparison servers, one after the other, in one invocation. Every scenario gets a fresh",
        "server process. Raw results: `bench/results/` (not committed; the JSON of this run is summarised below).",
        "",
        "## This run",
        "",
        f"- Command: `{command}`",
        f"- Date: {started} UTC, {seconds / 60:.1f} minutes",
        f"- Machine: {machine()}. The load generator runs on the same machine as the server (loopback),",
        f"  and the machine is shared: load average {load_text} (1-minute, at the start and the end of the run).",
        "  Absolute numbers are noisy; the ratios between servers in the same run are what matter.",
        f"- Versions: kilat {get(results, 'kilat', default={}) and 'HEAD'} built `--release`; " +
        ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Sizes: idle {s['idle_n']:,} connections; connect {s['connect_n']:,} connections as fast as possible "
        f"(128 handshakes in flight); fanout {s['fanout_subs']:,} subscribers on one channel, 1 publisher, "
        f"{s['fanout_rate']} msg/s for {s['fanout_secs']} s with {s['payload']}-byte payloads; saturation the same "
        f"at {s['sat_rate']} msg/s for {s['sat_secs']} s.",
        "",
        "How each server is driven: kilat with its own protocol (`connect`, `subscribe`, `publish` from a",
        "publisher connection; `serve --dev` with `KILAT_NODE_CLIENT_COMMAND_RATE=0`, as the per-connection",
        "command limit of 100/s would otherwise refuse the publisher); bare broadcaster, Node `ws` and Python `websockets` with",
        "`--protocol broadcast` (every message a client sends is broadcast to every client, so the publisher",
        "also receives its own messages); Socket.IO with `--protocol socketio` (`42[\"msg\",...]` re-emitted to",
        "all). Latency is publish-to-deliver, measured with one clock (the bench process both publishes and",
        "receives). Server CPU is utime+stime from `/proc/PID/stat` over the publishing and drain phase.",
        "",
        "## Results",
        "",
        *rows,
        "",
        *ratio_rows,
        "",
        "![latency](img/bench-latency.svg)",
        "",
        "![deliveries](img/bench-deliveries.svg)",
        "",
        "![cpu](img/bench-cpu.svg)",
        "",
        "![memory](img/bench-memory.svg)",
        "",
        "![handshakes](img/bench-handshakes.svg)",
        "",
        "### Latency against load",
        "",
        f"The fanout at several rates ({s['fanout_subs']:,} subscribers, {s['sweep_secs']} s per lower rate, the "
        f"{s['fanout_rate']} msg/s point is the fanout above): p50 / p99 publish-to-deliver. Where the line",
        "leaves the target, the two cores (server and load generator together) are running out.",
        "",
        *sweep_rows,
        "",
        "![sweep](img/bench-sweep.svg)",
        "",
        "## Targets (kilat)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in targets],
        "",
        "## Caveats",
        "",
        "- Client and server share two cores: at high rates the load generator itself (parsing every",
        "  delivery, recording latencies) competes with the server for CPU, which caps the saturation",
        "  numbers and inflates tail latency for every server alike.",
        "- The saturation test offers more than any server here delivers on this machine; its deliveries/s",
        "  is the sustained throughput, its latency includes queueing.",
        "- \"lost\" is expected minus delivered when the drain window (10 s after publishing stops, or 1 s of",
        "  silence) ends. kilat and the bare broadcaster never lost a message in these runs; for Node ws and",
        "  Python websockets, which queue without bound, \"lost\" is mostly what they still had queued when",
        "  the window closed (their latency grows to seconds first), not dropped frames.",
        "- kilat does more per message than the broadcast servers (JSON command parsing, channel lookup,",
        "  offsets and history in `--dev` mode); the bare broadcaster is the floor for any server on this box.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "bench/compare.sh                 # full sizes (~15-25 minutes)",
        "QUICK=1 bench/compare.sh         # a few minutes",
        "SERVERS=kilat,node-ws IDLE_N=20000 bench/compare.sh",
        "bench/idle.sh 10000              # kilat idle memory only",
        "bench/scale.sh                   # most connections per process, 3 nodes on one Redis",
        "bench/cross-node.sh              # fan-out through Redis between two nodes",
        "bench/callgrind.sh               # server instructions per delivery (no timing noise)",
        "kilat bench fanout --help        # every scenario explains its flags",
        "```",
        "",
    ]
    # Hand-written notes below the marker survive regeneration.
    marker = "<!-- notes: kept across runs of compare.py -->"
    previous = docs / "benchmarks.md"
    notes = ""
    if previous.exists() and marker in previous.read_text():
        notes = previous.read_text().split(marker, 1)[1]
    (docs / "benchmarks.md").write_text("\n".join(md) + marker + notes)
    log("wrote docs/benchmarks.md and docs/img/bench-*.svg")


def main():
    command = os.environ.get("COMPARE_COMMAND") or " ".join(
        [f"{k}={os.environ[k]}" for k in ("QUICK", "SERVERS", "IDLE_N", "CONNECT_N", "FANOUT_SUBS",
                                           "FANOUT_RATE", "FANOUT_SECS", "SAT_RATE", "SAT_SECS")
         if k in os.environ] + ["bench/compare.sh"])
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    t0 = time.time()
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        data = json.loads(Path(sys.argv[2]).read_text())
        write_report(data["results"], data["command"], data["started"], data["seconds"], data.get("load"))
        return
    install_and_build()
    load = [load_average()]
    if not shutil.which("node"):
        log("node not found: skipping Node servers")
    results = {}
    for name in SERVERS:
        log(f"=== {name}")
        try:
            results[name] = measure(name)
        except Exception as e:  # keep going with the other servers
            log(f"{name} failed: {e}")
            results[name] = {"error": str(e)}
        log(json.dumps(results[name])[:2000])
    seconds = time.time() - t0
    load.append(load_average())
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    (out / f"compare-{stamp}.json").write_text(json.dumps(
        {"command": command, "started": started, "seconds": seconds, "sizes": SIZES, "load": load,
         "results": results},
        indent=2))
    write_report(results, command, started, seconds, load)


if __name__ == "__main__":
    main()
