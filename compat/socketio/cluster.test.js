// Socket.IO on two kilat nodes sharing a real redis-server (docs/socketio.md): long polling
// without sticky sessions, behind an HTTP proxy that sends each request to the other node in
// turn (the owner of the session forwards nothing; the other node forwards polls and posts to
// it through the engine), chatting with a client connected to one node directly.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest } from 'node:http';
import { io } from 'socket.io-client';

import { KilatServer } from '../../e2e/lib/server.js';
import { redisSkipReason, startRedis } from '../../sdk/js/test/redis.js';

/** An HTTP proxy that sends request i to `targets[i % 2]` (no stickiness at all). */
function startRoundRobin(targets) {
  const counts = targets.map(() => 0);
  let next = 0;
  const server = createServer((req, res) => {
    const i = next++ % targets.length;
    counts[i] += 1;
    const upstream = httpRequest(
      { host: '127.0.0.1', port: targets[i], method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      res.writeHead(502);
      res.end(String(err));
    });
    req.pipe(upstream);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        counts,
        stop: () => {
          server.closeAllConnections();
          return new Promise((r) => server.close(r));
        },
      }),
    ),
  );
}

function once(emitter, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
    if (event !== 'connect_error') {
      emitter.once('connect_error', (err) => {
        clearTimeout(timer);
        reject(new Error(`connect_error: ${err.message}`));
      });
    }
  });
}

function collect(socket, event, count, ms = 15000) {
  const seen = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${seen.length}/${count} ${event} events within ${ms} ms: ${JSON.stringify(seen)}`)),
      ms,
    );
    socket.on(event, (value) => {
      seen.push(value);
      if (seen.length === count) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
}

const redisSkip = redisSkipReason();

describe('Socket.IO on two nodes sharing Redis', { skip: redisSkip ?? false }, () => {
  let redis;
  let nodeA;
  let nodeB;
  let proxy;
  before(async () => {
    redis = await startRedis();
    const args = ['--engine', 'redis', '--redis-url', redis.url];
    nodeA = await KilatServer.start('socketio-cluster-a', { args });
    nodeB = await KilatServer.start('socketio-cluster-b', { args });
    proxy = await startRoundRobin([nodeA, nodeB].map((n) => Number(new URL(n.url).port)));
  });
  after(async () => {
    await proxy?.stop();
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.stop();
  });

  test('long polling works with every other request on the node that does not own the session', async () => {
    const roaming = io(proxy.url, { transports: ['polling'], upgrade: false, reconnection: false, forceNew: true });
    const fixed = io(nodeB.url, { transports: ['websocket'], reconnection: false, forceNew: true });
    try {
      await Promise.all([once(roaming, 'connect'), once(fixed, 'connect')]);
      const count = 40;
      const atRoaming = collect(roaming, 'chat message', count * 2);
      const atFixed = collect(fixed, 'chat message', count * 2);
      for (let i = 0; i < count; i++) {
        // Acks come back through forwarded polls too.
        await roaming.timeout(5000).emitWithAck('chat message', `r${i}`);
        fixed.emit('chat message', `f${i}`);
      }
      const [seenRoaming, seenFixed] = await Promise.all([atRoaming, atFixed]);
      for (const seen of [seenRoaming, seenFixed]) {
        assert.equal(new Set(seen).size, count * 2, 'every message once');
        const r = seen.filter((m) => m.startsWith('r'));
        const f = seen.filter((m) => m.startsWith('f'));
        assert.deepEqual(r, [...Array(count).keys()].map((i) => `r${i}`), "each sender's messages in order");
        assert.deepEqual(f, [...Array(count).keys()].map((i) => `f${i}`));
      }
      assert.equal(roaming.io.engine.transport.name, 'polling');
      assert.ok(proxy.counts[0] > 10 && proxy.counts[1] > 10, `requests reached both nodes: ${proxy.counts}`);
    } finally {
      roaming.close();
      fixed.close();
    }
  });

  test('an unknown session id is still refused through another node', async () => {
    const bogus = `${'0'.repeat(16)}${'1'.repeat(32)}`;
    for (const url of [nodeA.url, nodeB.url]) {
      const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling&sid=${bogus}`);
      assert.equal(res.status, 400);
      assert.deepEqual(await res.json(), { code: 1, message: 'Session ID unknown' });
    }
  });
});
