#!/usr/bin/env python3
"""Encodings and deltas in one invocation: JSON, MessagePack, JSON with fossil deltas and
MessagePack with deltas, alternating, on the ticker feed (17 quotes of about 1 KB, one changing
per publication) to 1,000 subscribers, each run against a fresh `serve --dev`.

  bench/encodings.py target/release/kilat [ROUNDS]
"""
import json, os, socket, subprocess, sys, time, signal
BIN = sys.argv[1]; ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
MODES = [("json", []), ("msgpack", ["--encoding", "msgpack"]), ("json+delta", ["--delta"]), ("msgpack+delta", ["--encoding", "msgpack", "--delta"])]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
rows = []
for r in range(ROUNDS):
    for name, extra in MODES:
        port = free_port()
        srv = subprocess.Popen([BIN, "serve", "--dev", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close(); break
            except OSError: time.sleep(0.1)
        cmd = [BIN, "bench", "fanout", "--url", f"ws://127.0.0.1:{port}/connection/websocket", "-n", "1000", "-r", "100", "-d", "8", "--feed", "ticker", "-s", "1000", "--server-pid", str(srv.pid), "--json"] + extra
        out = subprocess.run(cmd, capture_output=True, text=True)
        srv.send_signal(signal.SIGKILL); srv.wait()
        try:
            j = json.loads(out.stdout[out.stdout.index("{"):])
        except Exception:
            print(name, "FAILED", out.stderr[-500:]); continue
        row = (r + 1, name, j.get("bytes_per_delivery"), j.get("server_cpu_s_per_million_deliveries"), j.get("delivered"), j.get("lost"), j.get("duplicated"))
        rows.append(row); print(*row, flush=True)
print("| round | mode | bytes per delivery | server CPU s per M deliveries | delivered | lost | dup |")
print("|---|---|---|---|---|---|---|")
for r in rows: print("| " + " | ".join(f"{x:.1f}" if isinstance(x, float) else str(x) for x in r) + " |")
