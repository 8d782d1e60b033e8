// Connection state recovery (Socket.IO 4.6+) with the real socket.io-client against kilat with
// `[socketio] recovery` on (docs/socketio.md): a client whose connection is cut reconnects,
// `socket.recovered` is true and the events published meanwhile arrive once, in order. On one
// node (the engine closed under the client, on each transport) and across two nodes sharing a
// real redis-server (a TCP proxy in front cuts the connection and sends the reconnection to the
// other node).

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import { io } from 'socket.io-client';

import { KilatServer } from '../../e2e/lib/server.js';
import { redisSkipReason, startRedis } from '../../sdk/js/test/redis.js';

const RECOVERY = { KILAT_SOCKETIO_RECOVERY: 'true' };

/** A client that reconnects on its own, quickly. */
function client(url, options = {}) {
  return io(url, {
    forceNew: true,
    reconnectionDelay: 300,
    reconnectionDelayMax: 300,
    randomizationFactor: 0,
    ...options,
  });
}

function once(emitter, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** Every `event`'s first argument, as it arrives. */
function record(socket, event) {
  const seen = [];
  socket.on(event, (value) => seen.push(value));
  return seen;
}

async function until(fn, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Cuts `socket`'s connection with `cut()`, publishes `missed` through `sender` while it is
 * down, and returns once it is connected again.
 */
async function cutAndMiss(socket, sender, missed, cut) {
  const down = once(socket, 'disconnect');
  cut();
  await down;
  for (const n of missed) {
    // The ack comes once the hub has the publication.
    await sender.timeout(5000).emitWithAck('tick', n);
  }
  await once(socket, 'connect');
}

describe('connection state recovery on one node', () => {
  let server;
  before(async () => {
    server = await KilatServer.start('socketio-recovery', { env: RECOVERY });
  });
  after(async () => {
    await server?.stop();
  });

  for (const transports of [['websocket'], ['polling']]) {
    test(`a cut ${transports[0]} connection recovers the missed events once, in order`, async () => {
      const a = client(server.url, { transports });
      const sender = client(server.url, { transports: ['websocket'] });
      try {
        await Promise.all([once(a, 'connect'), once(sender, 'connect')]);
        assert.equal(a.recovered, false, 'a first connection recovers nothing');
        const seen = record(a, 'tick');
        await sender.timeout(5000).emitWithAck('tick', 1);
        await until(() => seen.length === 1, 'the first event');
        // The engine closed under the socket: Socket.IO reconnects and asks to recover.
        await cutAndMiss(a, sender, [2, 3, 4], () => a.io.engine.close());
        assert.equal(a.recovered, true, 'socket.recovered after the reconnection');
        await sender.timeout(5000).emitWithAck('tick', 5);
        await until(() => seen.length >= 5, 'the missed and the next events');
        assert.deepEqual(seen, [1, 2, 3, 4, 5]);
        assert.ok(a.id, 'the socket has an id again');
        // A second cut recovers again, from where the first recovery left off.
        await cutAndMiss(a, sender, [6], () => a.io.engine.close());
        assert.equal(a.recovered, true);
        await until(() => seen.length >= 6, 'the event missed in the second cut');
        assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
      } finally {
        a.close();
        sender.close();
      }
    });
  }

  test('a pid the server did not give recovers nothing', async () => {
    const stranger = client(server.url, {
      transports: ['websocket'],
      auth: { pid: '0123456789abcdef0123456789abcdef', offset: '7' },
    });
    try {
      await once(stranger, 'connect');
      assert.equal(stranger.recovered, false);
    } finally {
      stranger.close();
    }
  });
});

/** A TCP proxy in front of the nodes: `cut()` drops every connection, `target` picks the node. */
function startProxy(port) {
  const sockets = new Set();
  const proxy = { target: port, cut: () => sockets.forEach((s) => s.destroy()) };
  const server = createServer((inbound) => {
    const outbound = connect(proxy.target, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      proxy.url = `http://127.0.0.1:${server.address().port}`;
      proxy.stop = () => {
        proxy.cut();
        return new Promise((r) => server.close(r));
      };
      resolve(proxy);
    }),
  );
}

const redisSkip = redisSkipReason();

describe('connection state recovery across two nodes on Redis', { skip: redisSkip ?? false }, () => {
  let redis;
  let nodeA;
  let nodeB;
  let proxy;
  before(async () => {
    redis = await startRedis();
    const args = ['--engine', 'redis', '--redis-url', redis.url];
    nodeA = await KilatServer.start('socketio-recovery-a', { args, env: RECOVERY });
    nodeB = await KilatServer.start('socketio-recovery-b', { args, env: RECOVERY });
    proxy = await startProxy(Number(new URL(nodeA.url).port));
  });
  after(async () => {
    await proxy?.stop();
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.stop();
  });

  test('a client cut from one node recovers on the other', async () => {
    const a = client(proxy.url, { transports: ['websocket'] });
    // The sender stays on node B throughout.
    const sender = client(nodeB.url, { transports: ['websocket'] });
    try {
      await Promise.all([once(a, 'connect'), once(sender, 'connect')]);
      const seen = record(a, 'tick');
      await sender.timeout(5000).emitWithAck('tick', 1);
      await until(() => seen.length === 1, 'the first event across nodes');
      await cutAndMiss(a, sender, [2, 3, 4], () => {
        proxy.target = Number(new URL(nodeB.url).port);
        proxy.cut();
      });
      assert.equal(a.recovered, true, 'recovered on the other node');
      await sender.timeout(5000).emitWithAck('tick', 5);
      await until(() => seen.length >= 5, 'the missed and the next events');
      assert.deepEqual(seen, [1, 2, 3, 4, 5]);
    } finally {
      a.close();
      sender.close();
    }
  });
});
