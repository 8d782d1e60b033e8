"""Broadcast server on Python `websockets`: every message a client sends goes to every client.

PORT=9103 python server.py
"""
import asyncio
import os

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def handler(ws):
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(ws)


async def main():
    port = int(os.environ.get("PORT", "9103"))
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None, ping_interval=None) as server:
        print(f"python websockets broadcast on ws://127.0.0.1:{port}/", flush=True)
        await server.serve_forever()


asyncio.run(main())
