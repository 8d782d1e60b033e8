// socket.io-client against kilat with backend hooks (docs/socketio.md, docs/proxy.md): the
// connect hook turns a Socket.IO `auth` object into a user and rooms, client events go to the
// rpc hook with their acks answered by the backend, and a refusal reaches the client.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { io } from 'socket.io-client';

import { KilatServer } from '../../e2e/lib/server.js';

let server;
let backend;
const calls = [];

/** The application backend: kilat's connect and rpc hooks. */
function startBackend() {
  return new Promise((resolve) => {
    const http = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk) => (body += chunk));
      req.on('end', () => {
        const call = JSON.parse(body);
        calls.push({ path: req.url, ...call });
        let answer;
        if (req.url === '/connect') {
          const auth = call.data ?? {};
          answer = auth.password === 'open sesame'
            ? { result: { user: auth.user, channels: [`room:${auth.room}`] } }
            : { disconnect: { code: 3501, reason: 'wrong password' } };
        } else if (call.method === 'reverse') {
          // Binary arguments arrive as base64 attachments beside their placeholders; a reply
          // of {args, attachments} is a BINARY_ACK (docs/socketio.md).
          const [label, placeholder] = call.data.args;
          const bytes = Buffer.from(call.data.attachments[placeholder.num], 'base64').reverse();
          answer = {
            result: {
              data: { args: [label, { _placeholder: true, num: 0 }], attachments: [bytes.toString('base64')] },
            },
          };
        } else if (call.method === 'add') {
          const [a, b] = call.data.args;
          answer = { result: { data: [a + b, call.user, call.data.namespace] } };
        } else {
          answer = { error: { code: 403, message: `no ${call.method} for you` } };
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(answer));
      });
    });
    http.listen(0, '127.0.0.1', () => resolve(http));
  });
}

before(async () => {
  backend = await startBackend();
  const base = `http://127.0.0.1:${backend.address().port}`;
  server = await KilatServer.start('socketio-rpc', {
    args: ['--proxy-connect-url', `${base}/connect`, '--proxy-rpc-url', `${base}/rpc`],
  });
});

after(async () => {
  await server?.stop();
  await new Promise((resolve) => backend?.close(resolve));
});

function client(auth, transports = ['polling', 'websocket']) {
  return io(server.url, { auth, transports, reconnection: false, forceNew: true });
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
}

test('the connect hook makes the auth object a user with rooms, and events are rpc calls with acks', async () => {
  const alice = client({ user: 'alice', room: 'lobby', password: 'open sesame' });
  try {
    await connected(alice);
    const connect = calls.find((c) => c.path === '/connect' && c.data?.user === 'alice');
    assert.ok(connect, 'the connect hook was asked');
    assert.equal(connect.transport, 'socketio');
    // Acks come back with the backend's data, spread as arguments.
    const answer = await alice.timeout(5000).emitWithAck('add', 2, 3);
    assert.equal(answer, 5);
    const all = await new Promise((resolve) => alice.emit('add', 4, 5, (...args) => resolve(args)));
    assert.deepEqual(all, [9, 'alice', '/']);
    // A refusal is the ack's `error`, and the connection stays.
    const refused = await alice.timeout(5000).emitWithAck('launch');
    assert.deepEqual(refused, { error: 'no launch for you' });
    assert.equal(alice.connected, true);
    // The room from the hook: a server API publication reaches it as an event.
    const got = new Promise((resolve) => alice.once('news', (...args) => resolve(args)));
    const res = await fetch(`${server.url}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel: 'room:lobby', data: { event: 'news', args: ['for the lobby'] } }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await got, ['for the lobby']);
  } finally {
    alice.close();
  }
});

test('events in rpc mode are not broadcast to the namespace', async () => {
  const a = client({ user: 'a', room: 'x', password: 'open sesame' });
  const b = client({ user: 'b', room: 'x', password: 'open sesame' });
  try {
    await Promise.all([connected(a), connected(b)]);
    let leaked = 0;
    b.on('add', () => leaked++);
    assert.equal(await a.timeout(5000).emitWithAck('add', 1, 1), 2);
    // A later event to b's own ack proves b's socket was live meanwhile.
    assert.equal(await b.timeout(5000).emitWithAck('add', 0, 1), 1);
    assert.equal(leaked, 0);
  } finally {
    a.close();
    b.close();
  }
});

test('a connect hook refusal is a connect_error with its reason', async () => {
  for (const transports of [['polling'], ['websocket']]) {
    const mallory = client({ user: 'mallory', room: 'lobby', password: 'guess' }, transports);
    try {
      const error = await connected(mallory).then(
        () => assert.fail('connected with a wrong password'),
        (err) => err,
      );
      assert.match(error.message, /wrong password|unauthorized/i);
    } finally {
      mallory.close();
    }
  }
});

for (const transports of [['polling'], ['websocket']]) {
  test(`binary arguments reach the rpc hook as base64 and its binary reply is the ack (${transports[0]})`, async () => {
    const alice = client({ user: 'alice', room: 'lobby', password: 'open sesame' }, transports);
    try {
      await connected(alice);
      const [label, reversed] = await new Promise((resolve) =>
        alice.emit('reverse', 'bytes', Buffer.from([1, 2, 3, 4]), (...args) => resolve(args)),
      );
      assert.equal(label, 'bytes');
      assert.ok(Buffer.isBuffer(reversed), 'the binary ack argument arrives as a Buffer');
      assert.deepEqual([...reversed], [4, 3, 2, 1]);
    } finally {
      alice.close();
    }
  });
}
