"""The official Python server SDK (`pusher` from PyPI) against a spawned `kilat serve --dev`:
trigger, batch trigger, channel and presence user queries, with a WebSocket subscriber (the
`websockets` package) speaking the Pusher protocol and authorised with the SDK's own
`authenticate`.

Run: e2e/pusher/.venv/bin/python -m unittest e2e/pusher/test_python_sdk.py
The kilat binary comes from KILAT_BIN (default target/debug/kilat); without it the test skips
loudly, or fails under CI=true.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

import pusher
import websockets

ROOT = Path(__file__).resolve().parents[2]
KILAT_BIN = Path(os.environ.get("KILAT_BIN", ROOT / "target" / "debug" / "kilat"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PythonSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not KILAT_BIN.exists():
            message = f"kilat binary not found at {KILAT_BIN}: cargo build -p kilat-cli"
            if os.environ.get("CI") == "true":
                raise RuntimeError(message)
            print(f"\n!!! SKIPPING the Python SDK tests: {message}\n", file=sys.stderr)
            raise unittest.SkipTest(message)
        cls.port = free_port()
        # The Python SDK accepts numeric app ids only, so this app is configured rather than
        # the --dev default `app-id`.
        cls.config = Path(tempfile.mkdtemp(prefix="kilat-pusher-py-")) / "kilat.toml"
        cls.config.write_text(
            '[[pusher.apps]]\nid = "1001"\nkey = "app-key"\nsecret = "app-secret"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILAT_")}
        cls.proc = subprocess.Popen(
            [str(KILAT_BIN), "serve", "--dev", "--listen", f"127.0.0.1:{cls.port}", "--config", str(cls.config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{cls.port}/health") as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                cls.proc.kill()
                raise RuntimeError("kilat did not become healthy")
            time.sleep(0.05)
        cls.sdk = pusher.Pusher(
            app_id="1001", key="app-key", secret="app-secret",
            host="127.0.0.1", port=cls.port, ssl=False,
        )

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)

    async def open(self):
        ws = await websockets.connect(f"ws://127.0.0.1:{self.port}/app/app-key?protocol=7")
        established = json.loads(await ws.recv())
        self.assertEqual(established["event"], "pusher:connection_established")
        return ws, json.loads(established["data"])["socket_id"]

    async def next_event(self, ws):
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if event["event"] != "pusher:ping":
                return event

    async def subscribe(self, ws, channel, **extra):
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, **extra}}))
        event = await self.next_event(ws)
        self.assertEqual(event["event"], "pusher_internal:subscription_succeeded", event)
        return event

    def test_trigger_batch_and_queries(self):
        asyncio.run(self.trigger_batch_and_queries())

    async def trigger_batch_and_queries(self):
        ws, _ = await self.open()
        await self.subscribe(ws, "py-news")
        self.sdk.trigger("py-news", "headline", {"text": "from python"})
        event = await self.next_event(ws)
        self.assertEqual(event["event"], "headline")
        self.assertEqual(json.loads(event["data"]), {"text": "from python"})

        self.sdk.trigger_batch([
            {"channel": "py-news", "name": "b", "data": {"i": i}} for i in range(3)
        ])
        got = [json.loads((await self.next_event(ws))["data"])["i"] for _ in range(3)]
        self.assertEqual(got, [0, 1, 2])

        # A presence member authorised by the SDK's own signature.
        member, socket_id = await self.open()
        channel_data = {"user_id": "py-1", "user_info": {"lang": "python"}}
        auth = self.sdk.authenticate(channel="presence-py", socket_id=socket_id, custom_data=channel_data)
        await self.subscribe(member, "presence-py", **auth)

        channels = self.sdk.channels_info(prefix_filter="py-")
        self.assertIn("py-news", channels["channels"])
        info = self.sdk.channel_info("presence-py", ["user_count"])
        self.assertEqual(info["occupied"], True)
        self.assertEqual(info["user_count"], 1)
        users = self.sdk.users_info("presence-py")
        self.assertEqual(users["users"], [{"id": "py-1"}])
        await ws.close()
        await member.close()

    def test_wrong_secret_is_refused(self):
        forged = pusher.Pusher(
            app_id="1001", key="app-key", secret="not-the-secret",
            host="127.0.0.1", port=self.port, ssl=False,
        )
        with self.assertRaises(pusher.errors.PusherBadAuth):
            forged.trigger("py-news", "x", {})


if __name__ == "__main__":
    unittest.main()
