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

for (const [name, transports] of [
  ['long polling', ['polling']],
  ['websocket', ['websocket']],
]) {
  test(`binary arguments (BINARY_EVENT with attachments) go both ways over ${name}`, async () => {
    const a = client({ transports, upgrade: false });
    // The receiver on the other transport: attachments are re-encoded per transport.
    const b = client({ transports: transports[0] === 'polling' ? ['websocket'] : ['polling'], upgrade: false });
    try {
      await Promise.all([once(a, 'connect'), once(b, 'connect')]);
      const file = Buffer.from([0, 1, 2, 253, 254, 255]);
      const thumb = Buffer.alloc(30_000, 7);
      const atB = collect(b, 'upload', 1);
      // An ack still comes back once the hub has the publication (no arguments: no error).
      const ack = await a.timeout(5000).emitWithAck('upload', 'photo.jpg', file, { thumb, tags: ['x'] });
      assert.equal(ack, undefined, `the publication was refused: ${JSON.stringify(ack)}`);
      const [[label, gotFile, meta]] = await atB;
      assert.equal(label, 'photo.jpg');
      assert.ok(Buffer.isBuffer(gotFile), 'a binary argument arrives as a Buffer');
      assert.deepEqual(gotFile, file);
      assert.ok(Buffer.isBuffer(meta.thumb), 'a nested binary argument arrives as a Buffer');
      assert.deepEqual(meta.thumb, thumb);
      assert.deepEqual(meta.tags, ['x']);
      // The server API publishes binary arguments as base64 attachments with placeholders.
      const atA = collect(a, 'blob', 1);
      await publish('sio:/', {
        event: 'blob',
        args: [{ _placeholder: true, num: 0 }, 'after'],
        attachments: [Buffer.from('hello bytes').toString('base64')],
      });
      const [[blob, after]] = await atA;
      assert.ok(Buffer.isBuffer(blob));
      assert.equal(blob.toString(), 'hello bytes');
      assert.equal(after, 'after');
      // Attachments that do not match their placeholders are never sent as binary (a
      // client would drop its connection): the event arrives with the placeholder as data.
      const atA2 = collect(a, 'bad', 1);
      await publish('sio:/', {
        event: 'bad',
        args: [{ _placeholder: true, num: 3 }],
        attachments: ['AQID'],
      });
      assert.deepEqual(await atA2, [{ _placeholder: true, num: 3 }]);
      assert.ok(a.connected && b.connected);
    } finally {
      a.close();
      b.close();
    }
  });
}

test('a binary packet whose placeholder names no attachment closes only its own session', async () => {
  const bystander = client({ transports: ['polling'] });
  await once(bystander, 'connect');
  const sid = await rawOpen();
  await rawPost(sid, '40');
  // A BINARY_EVENT announcing one attachment but pointing at a second.
  await rawPost(sid, '451-["x",{"_placeholder":true,"num":1}]');
  const closed = await rawPoll(sid);
  assert.match(closed, /(^|\x1e)1$/, `the session ended: ${JSON.stringify(closed)}`);
  const echo = collect(bystander, 'chat message', 1);
  bystander.emit('chat message', 'unharmed');
  assert.deepEqual(await echo, ['unharmed']);
  bystander.close();
});

/** A raw Engine.IO polling session: its sid. */
async function rawOpen() {
  const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
  const text = await res.text();
  assert.equal(text[0], '0', text);
  return JSON.parse(text.slice(1)).sid;
}

async function rawPost(sid, body) {
  const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body });
  assert.equal(res.status, 200);
}

/** Polls until the session's close packet (or a 400 for a session already gone). */
async function rawPoll(sid) {
  let seen = '';
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
    if (res.status !== 200) return `${seen}\x1e1`;
    const text = await res.text();
    seen += seen ? `\x1e${text}` : text;
    if (text.split('\x1e').includes('1')) return text;
  }
  return seen;
}
