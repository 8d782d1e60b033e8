"""The real python-socketio client (PyPI) against a spawned `kilat serve --dev`: the core flow of
a Flask-SocketIO app's clients over polling, WebSocket and the upgrade, with acks, and a refused
connect (docs/socketio.md). Run: compat/socketio/.venv/bin/python -m unittest discover compat/socketio
"""

import json
import os
import queue
import socket
import subprocess
import time
import unittest
import urllib.request

import socketio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "python-socketio-compat-secret-0123456789"
WAIT = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KilatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.path.join(ROOT, os.environ.get("KILAT_BIN", "target/debug/kilat"))
        port = free_port()
        cls.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "KILAT_BIN"}
        os.makedirs(os.path.join(ROOT, "target", "e2e"), exist_ok=True)
        cls.log = open(os.path.join(ROOT, "target", "e2e", "socketio-python-server.log"), "w")
        cls.server = subprocess.Popen(
            [binary, "serve", "--dev", "--listen", f"127.0.0.1:{port}", "--token-secret", SECRET],
            stdout=cls.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{cls.url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if cls.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kilat did not become healthy")
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=10)
        cls.log.close()

    def client(self, transports, **kwargs):
        sio = socketio.Client(reconnection=False)
        inbox = queue.Queue()
        sio.on("chat message", lambda msg: inbox.put(msg))
        sio.connect(self.url, transports=transports, wait_timeout=WAIT, **kwargs)
        self.addCleanup(sio.disconnect)
        return sio, inbox

    def chat(self, transports):
        a, at_a = self.client(transports)
        b, at_b = self.client(transports)
        self.assertNotEqual(a.get_sid(), b.get_sid())
        a.emit("chat message", "from a")
        # call() waits for the ack, which comes once the hub has the publication.
        self.assertIsNone(b.call("chat message", {"from": "b"}, timeout=WAIT))
        for inbox in (at_a, at_b):
            got = [inbox.get(timeout=WAIT), inbox.get(timeout=WAIT)]
            self.assertCountEqual(got, ["from a", {"from": "b"}])
        return a

    def test_polling_only(self):
        a = self.chat(["polling"])
        self.assertEqual(a.transport(), "polling")

    def test_websocket_only(self):
        a = self.chat(["websocket"])
        self.assertEqual(a.transport(), "websocket")

    def test_polling_upgraded_to_websocket(self):
        a = self.chat(["polling", "websocket"])
        deadline = time.monotonic() + WAIT
        while a.transport() != "websocket" and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(a.transport(), "websocket")
        self.chat(["polling", "websocket"])

    def test_refused_token(self):
        for transports in (["polling"], ["websocket"]):
            sio = socketio.Client(reconnection=False)
            reasons = queue.Queue()
            sio.on("connect_error", lambda data: reasons.put(data))
            with self.assertRaises(socketio.exceptions.ConnectionError):
                sio.connect(self.url, transports=transports, auth={"token": "forged"}, wait_timeout=WAIT)
            reason = reasons.get(timeout=WAIT)
            self.assertIn("token", reason["message"].lower())

    def api(self, method, body):
        request = urllib.request.Request(
            f"{self.url}/api/{method}", data=json.dumps(body).encode(),
            headers={"content-type": "application/json"}, method="POST",
        )
        with urllib.request.urlopen(request, timeout=WAIT * 2) as r:
            self.assertEqual(r.status, 200)
            return json.loads(r.read())

    def test_server_send_with_ack(self):
        """The server API's send with ack waits for the handler's return value (docs/socketio.md
        "Server acks"), over each transport."""
        for transports in (["polling"], ["websocket"]):
            sio = socketio.Client(reconnection=False)
            asked = queue.Queue()

            def question(x):
                asked.put(x)
                return x * 2, "twice"

            sio.on("question", question)
            sio.on("silent", lambda x: asked.put(("silent", x)))
            sio.connect(self.url, transports=transports, wait_timeout=WAIT)
            self.addCleanup(sio.disconnect)
            sid = sio.get_sid()
            answer = self.api("send", {"client": sid, "data": {"event": "question", "args": [21]}, "ack": True})
            self.assertEqual(answer, {"result": {"connections": 1, "args": [42, "twice"]}})
            self.assertEqual(asked.get(timeout=WAIT), 21)
            # A handler returning nothing still acks (python-socketio sends an empty ACK).
            answer = self.api("send", {"client": sid, "data": {"event": "silent", "args": [1]}, "ack": True, "timeout_ms": 2000})
            self.assertEqual(answer, {"result": {"connections": 1, "args": []}})
            self.assertEqual(asked.get(timeout=WAIT), ("silent", 1))
            self.assertEqual(sio.transport(), transports[0])


if __name__ == "__main__":
    unittest.main()
