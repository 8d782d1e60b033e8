#!/usr/bin/env python3
"""Server RSS per idle emulated connection (SSE or HTTP streaming), on either serving path.

    target/release/kilat serve --dev --listen 127.0.0.1:18099 --max-connections 20000 &
    bench/emulated-idle.py 18099 6000 $! sse          # first request of a connection: the socket path
    bench/emulated-idle.py 18099 6000 $! sse-hyper    # after a GET /health on the same connection: hyper

MODE is sse, ndjson, sse-hyper or ndjson-hyper. Opens N raw sockets, sends each stream request,
checks every connect reply, waits 2 s and prints the growth of the server's VmRSS divided by N.
`kilat bench idle --transport sse` is the main instrument; this covers HTTP streaming and the
hyper path, which it does not. Start a fresh server per run: freed memory is reused.
"""
import json
import socket
import sys
import time
import urllib.parse

port, n, pid, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
hyper = mode.endswith("-hyper")
kind = mode.removesuffix("-hyper")


def rss_kib() -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


connect = json.dumps({"id": 1, "connect": {}})
if kind == "ndjson":
    request = (f"POST /connection/stream HTTP/1.1\r\nHost: x\r\n"
               f"Content-Length: {len(connect)}\r\n\r\n{connect}").encode()
elif kind == "sse":
    request = (f"GET /connection/sse?connect={urllib.parse.quote(connect)} HTTP/1.1\r\n"
               f"Host: x\r\n\r\n").encode()
else:
    raise SystemExit("MODE: sse, ndjson, sse-hyper or ndjson-hyper")

before = rss_kib()
sockets = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    if hyper:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        if b"ok" not in s.recv(4096):
            raise SystemExit("GET /health failed")
    s.sendall(request)
    sockets.append(s)
    if len(sockets) % 200 == 0 or i == n - 1:
        for t in sockets[-200:]:
            data = t.recv(4096)
            while b"connect" not in data:
                more = t.recv(4096)
                if not more:
                    raise SystemExit(f"stream closed: {data[:200]!r}")
                data += more
            if b" 200 " not in data:
                raise SystemExit(f"stream refused: {data[:200]!r}")
time.sleep(2)
print(f"{mode}: {n} connections, {(rss_kib() - before) / n:.2f} KiB per connection")
