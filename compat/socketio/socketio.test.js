// The real socket.io-client (npm, 4.x) against a spawned `kilat serve --dev`: Engine.IO long
// polling, WebSocket and the upgrade between them, the Socket.IO chat tutorial's flow, acks,
// namespaces, a token's rooms, server API publications as events, and refused connects
// (docs/socketio.md).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { io } from 'socket.io-client';

import { KilatServer, kilatBin } from '../../e2e/lib/server.js';

const SECRET = 'socketio-compat-test-secret-0123456789';
let server;

before(async () => {
  server = await KilatServer.start('socketio', { args: ['--token-secret', SECRET] });
});

after(async () => {
  await server?.stop();
});

/** A client that never reconnects on its own (a test sees every failure). */
function client(options = {}, namespace = '/') {
  return io(`${server.url}${namespace === '/' ? '' : namespace}`, {
    reconnection: false,
    forceNew: true,
    ...options,
  });
}

/** Resolves on `event` (with its first argument), rejects on connect_error or after `ms`. */
function once(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (value) => {
      clearTimeout(timer);
      resolve(value);
    });
    if (event !== 'connect_error') {
      emitter.once?.('connect_error', (err) => {
        clearTimeout(timer);
        reject(new Error(`connect_error: ${err.message}`));
      });
    }
  });
}

/** Collects the arguments of `event` until `count` have arrived. */
function collect(socket, event, count, ms = 5000) {
  const seen = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${seen.length}/${count} ${event} events within ${ms} ms: ${JSON.stringify(seen)}`)),
      ms,
    );
    socket.on(event, (...args) => {
      seen.push(args.length === 1 ? args[0] : args);
      if (seen.length === count) {
        clearTimeout(timer);
        resolve(seen);
      }
    });
  });
}

function token(user, ...subscribe) {
  const args = ['token', '--token-secret', SECRET, '--user', user, '--ttl', '1h'];
  for (const channel of subscribe) args.push('--subscribe', channel);
  return execFileSync(kilatBin(), args, { encoding: 'utf8' }).trim();
}

async function publish(channel, data) {
  const res = await fetch(`${server.url}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** The chat tutorial's flow between two sockets: every message reaches both, once, in order. */
async function chat(a, b) {
  const atA = collect(a, 'chat message', 3);
  const atB = collect(b, 'chat message', 3);
  a.emit('chat message', 'one');
  b.emit('chat message', 'two');
  // An ack comes back once the hub has taken the publication.
  await a.timeout(5000).emitWithAck('chat message', 'three');
  const [seenA, seenB] = await Promise.all([atA, atB]);
  assert.deepEqual(new Set(seenA), new Set(['one', 'two', 'three']));
  assert.deepEqual(seenA, seenB, 'both sockets see the same order');
}

for (const [name, transports] of [
  ['long polling only', ['polling']],
  ['websocket only', ['websocket']],
]) {
  test(`the chat tutorial works over ${name}`, async () => {
    const a = client({ transports, upgrade: false });
    const b = client({ transports, upgrade: false });
    try {
      await Promise.all([once(a, 'connect'), once(b, 'connect')]);
      assert.equal(a.io.engine.transport.name, transports[0]);
      assert.ok(a.id && a.id !== b.id, 'each socket has its own id');
      await chat(a, b);
      assert.equal(a.io.engine.transport.name, transports[0]);
    } finally {
      a.close();
      b.close();
    }
  });
}

test('a polling session upgrades to websocket and loses or repeats nothing meanwhile', async () => {
  const a = client();
  const b = client({ transports: ['polling'], upgrade: false });
  try {
    const upgraded = new Promise((resolve) => a.io.on('open', () => a.io.engine.once('upgrade', resolve)));
    await Promise.all([once(a, 'connect'), once(b, 'connect')]);
    // b publishes throughout a's upgrade: a must see each message exactly once, in order.
    const count = 60;
    const atA = collect(a, 'chat message', count, 10000);
    for (let i = 0; i < count; i++) {
      b.emit('chat message', i);
      if (i % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    await upgraded;
    assert.equal(a.io.engine.transport.name, 'websocket');
    const seen = await atA;
    assert.deepEqual(seen, [...Array(count).keys()]);
    // After the upgrade both directions still work.
    const reply = collect(b, 'after', 1);
    a.emit('after', 'after upgrade');
    assert.deepEqual(await reply, ['after upgrade']);
  } finally {
    a.close();
    b.close();
  }
});

test('namespaces share one Engine.IO connection and stay apart', async () => {
  const root = client({ transports: ['polling'] });
  await once(root, 'connect');
  const chatNs = root.io.socket('/chat');
  const other = client({}, '/chat');
  try {
    // The manager's second socket connects on its own (a second CONNECT would close the
    // session, as on the reference server).
    await Promise.all([once(chatNs, 'connect'), once(other, 'connect')]);
    let leaked = 0;
    root.on('hello', () => leaked++);
    const atOther = collect(other, 'hello', 1);
    const atChat = collect(chatNs, 'hello', 1);
    chatNs.emit('hello', { from: 'chat' });
    assert.deepEqual(await atOther, [{ from: 'chat' }]);
    assert.deepEqual(await atChat, [{ from: 'chat' }]);
    // The root namespace's own message arrives after, and nothing from /chat before it.
    const atRoot = collect(root, 'ping-root', 1);
    root.emit('ping-root', 1);
    await atRoot;
    assert.equal(leaked, 0, 'an event of /chat reached /');
  } finally {
    chatNs.close();
    root.close();
    other.close();
  }
});

test('a token is the auth: its channels are rooms, and the server API publishes events into them', async () => {
  const alice = client({ auth: { token: token('alice', 'room:lobby') } });
  const stranger = client();
  try {
    await Promise.all([once(alice, 'connect'), once(stranger, 'connect')]);
    let leaked = 0;
    stranger.on('news', () => leaked++);
    const news = collect(alice, 'news', 1);
    await publish('room:lobby', { event: 'news', args: ['hello', { n: 1 }] });
    assert.deepEqual(await news, [['hello', { n: 1 }]]);
    // Data without an event name arrives as `message`.
    const plain = collect(alice, 'message', 1);
    await publish('room:lobby', { text: 'plain' });
    assert.deepEqual(await plain, [{ text: 'plain' }]);
    // A publication to the namespace's channel reaches every socket of it (io.emit).
    const everyone = Promise.all([collect(alice, 'all', 1), collect(stranger, 'all', 1)]);
    await publish('sio:/', { event: 'all', args: [1] });
    assert.deepEqual(await everyone, [[1], [1]]);
    assert.equal(leaked, 0, 'a room publication reached a socket outside the room');
  } finally {
    alice.close();
    stranger.close();
  }
});

test('a refused token is a connect_error with the reason, and nobody else notices', async () => {
  const bystander = client({ transports: ['polling'] });
  await once(bystander, 'connect');
  for (const transports of [['polling'], ['websocket']]) {
    const refused = client({ transports, auth: { token: 'not-a-token' } });
    try {
      const error = await once(refused, 'connect_error');
      assert.match(error.message, /token/i);
      assert.equal(refused.connected, false);
    } finally {
      refused.close();
    }
  }
  const echo = collect(bystander, 'chat message', 1);
  bystander.emit('chat message', 'still here');
  assert.deepEqual(await echo, ['still here']);
  bystander.close();
});
