// Server-requested acks and server `send`s with the real socket.io-client (npm, 4.x) against
// spawned kilat nodes (docs/socketio.md "Server acks"): the server API's `send` with
// `"ack": true` waits for the client's callback and answers with its arguments, over long
// polling and WebSocket, binary answers included; a client that does not answer is a 504; a
// client on the other node of a Redis cluster answers through that node.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

import { KilatServer } from '../../e2e/lib/server.js';
import { redisSkipReason, startRedis } from '../../sdk/js/test/redis.js';

let server;

before(async () => {
  server = await KilatServer.start('socketio-ack');
});

after(async () => {
  await server?.stop();
});

function client(url, options = {}, namespace = '') {
  return io(`${url}${namespace}`, { reconnection: false, forceNew: true, ...options });
}

function once(emitter, event, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
    if (event !== 'connect_error') {
      emitter.once('connect_error', (err) => {
        clearTimeout(timer);
        reject(new Error(`connect_error: ${err.message}`));
      });
    }
  });
}

/** `POST /api/send` on `url`; the parsed answer (HTTP 200 either way). */
async function send(url, body) {
  const res = await fetch(`${url}/api/send`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

for (const [name, transports] of [
  ['long polling', ['polling']],
  ['websocket', ['websocket']],
]) {
  test(`the server's send with ack gets the client's callback arguments over ${name}`, async () => {
    const socket = client(server.url, { transports, upgrade: false });
    try {
      await once(socket, 'connect');
      const asked = [];
      socket.on('question', (x, cb) => {
        asked.push(x);
        cb(x * 2, 'twice');
      });
      for (const x of [21, 5]) {
        const answer = await send(server.url, {
          client: socket.id,
          data: { event: 'question', args: [x] },
          ack: true,
        });
        assert.deepEqual(answer, { result: { connections: 1, args: [x * 2, 'twice'] } });
      }
      assert.deepEqual(asked, [21, 5], 'each question asked once');
      // Several at once: each answer goes to its own caller.
      const answers = await Promise.all(
        [1, 2, 3, 4].map((x) =>
          send(server.url, { client: socket.id, data: { event: 'question', args: [x] }, ack: true }),
        ),
      );
      assert.deepEqual(
        answers.map((a) => a.result.args[0]),
        [2, 4, 6, 8],
      );
      assert.equal(socket.io.engine.transport.name, transports[0]);
    } finally {
      socket.close();
    }
  });
}

test('a binary ack comes back as placeholders and base64 attachments', async () => {
  const socket = client(server.url, { transports: ['websocket'] });
  try {
    await once(socket, 'connect');
    socket.on('file', (name, cb) => cb(name, Buffer.from([1, 2, 3, 254])));
    const answer = await send(server.url, {
      client: socket.id,
      data: { event: 'file', args: ['a.bin'] },
      ack: true,
    });
    assert.deepEqual(answer.result.args, ['a.bin', { _placeholder: true, num: 0 }]);
    assert.deepEqual(answer.result.attachments, [Buffer.from([1, 2, 3, 254]).toString('base64')]);
  } finally {
    socket.close();
  }
});

test('binary arguments in a send reach the client as a Buffer, and the ack id is kept', async () => {
  const socket = client(server.url, { transports: ['polling'], upgrade: false });
  try {
    await once(socket, 'connect');
    socket.on('blob', (bytes, cb) => cb(Buffer.isBuffer(bytes) ? [...bytes] : `not a buffer: ${typeof bytes}`));
    const answer = await send(server.url, {
      client: socket.id,
      data: { event: 'blob', args: [{ _placeholder: true, num: 0 }], attachments: ['CQgH'] },
      ack: true,
    });
    assert.deepEqual(answer.result.args, [[9, 8, 7]]);
  } finally {
    socket.close();
  }
});

test('a client that does not answer in time is a 504, and the connection goes on', async () => {
  const socket = client(server.url, { transports: ['websocket'] });
  try {
    await once(socket, 'connect');
    const asked = once(socket, 'question');
    socket.on('question', () => {});
    const started = Date.now();
    const answer = await send(server.url, {
      client: socket.id,
      data: { event: 'question', args: [1] },
      ack: true,
      timeout_ms: 400,
    });
    const took = Date.now() - started;
    await asked;
    assert.equal(answer.error?.code, 504, JSON.stringify(answer));
    assert.match(answer.error.message, /did not answer within 400 ms/);
    assert.ok(took >= 350 && took < 5000, `answered after ${took} ms`);
    // The connection is fine: the next question is answered.
    socket.off('question');
    socket.on('question', (x, cb) => cb(x));
    const again = await send(server.url, { client: socket.id, data: { event: 'question', args: [7] }, ack: true });
    assert.deepEqual(again.result.args, [7]);
  } finally {
    socket.close();
  }
});

test('send without ack: events in a namespace, other data as `message`; refusals are clear', async () => {
  const root = client(server.url, { transports: ['websocket'] });
  try {
    await once(root, 'connect');
    // Another namespace on the same connection (the Manager connects it on creation).
    const chat = root.io.socket('/chat');
    await once(chat, 'connect');
    const inChat = once(chat, 'hello');
    const plain = once(root, 'message');
    let sent = await send(server.url, {
      client: root.id,
      data: { event: 'hello', namespace: '/chat', args: ['there', 1] },
    });
    assert.deepEqual(sent, { result: { connections: 1 } });
    assert.deepEqual(await inChat, ['there', 1]);
    sent = await send(server.url, { client: root.id, data: { text: 'hi' } });
    assert.deepEqual(sent, { result: { connections: 1 } });
    assert.deepEqual(await plain, [{ text: 'hi' }]);
    // An ack in a namespace the socket has not connected is refused at once.
    const refused = await send(server.url, {
      client: root.id,
      data: { event: 'x', namespace: '/elsewhere' },
      ack: true,
    });
    assert.equal(refused.error?.code, 503, JSON.stringify(refused));
    assert.match(refused.error.message, /namespace/);
    // No such client; ack without client; a timeout out of bounds.
    const unknown = await send(server.url, {
      client: '00000000-0000-4000-8000-000000000000',
      data: 1,
      ack: true,
    });
    assert.equal(unknown.error?.code, 404);
    assert.deepEqual(await send(server.url, { client: '00000000-0000-4000-8000-000000000000', data: 1 }), {
      result: { connections: 0 },
    });
    assert.equal((await send(server.url, { user: '', data: 1, ack: true })).error?.code, 400);
    assert.equal((await send(server.url, { client: root.id, data: 1, ack: true, timeout_ms: 600000 })).error?.code, 400);
    assert.equal((await send(server.url, { client: root.id })).error?.code, 400);
  } finally {
    root.close();
  }
});

test('the pending acks of a connection that closes fail at once', async () => {
  const socket = client(server.url, { transports: ['websocket'] });
  await once(socket, 'connect');
  socket.on('question', () => socket.close());
  const started = Date.now();
  const answer = await send(server.url, {
    client: socket.id,
    data: { event: 'question', args: [1] },
    ack: true,
    timeout_ms: 20000,
  });
  assert.equal(answer.error?.code, 503, JSON.stringify(answer));
  assert.ok(Date.now() - started < 10000, 'not held until the timeout');
});

describe('server acks on two nodes sharing Redis', { skip: redisSkipReason() ?? false }, () => {
  let redis;
  let nodeA;
  let nodeB;
  before(async () => {
    redis = await startRedis();
    const args = ['--engine', 'redis', '--redis-url', redis.url];
    nodeA = await KilatServer.start('socketio-ack-a', { args });
    nodeB = await KilatServer.start('socketio-ack-b', { args });
  });
  after(async () => {
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.stop();
  });

  test('the API call on node A gets the answer of a client on node B', async () => {
    for (const transports of [['websocket'], ['polling']]) {
      const socket = client(nodeB.url, { transports, upgrade: false });
      try {
        await once(socket, 'connect');
        socket.on('question', (x, cb) => cb(x * 2));
        // Node A learns of B from the node registry's heartbeat: until then B is not asked.
        let answer;
        const deadline = Date.now() + 15000;
        do {
          answer = await send(nodeA.url, {
            client: socket.id,
            data: { event: 'question', args: [21] },
            ack: true,
          });
        } while (answer.error?.code === 404 && Date.now() < deadline);
        assert.deepEqual(answer, { result: { connections: 1, args: [42] } });
        const late = await send(nodeA.url, {
          client: socket.id,
          data: { event: 'question-nobody-answers' },
          ack: true,
          timeout_ms: 300,
        });
        assert.equal(late.error?.code, 504, JSON.stringify(late));
        const plain = once(socket, 'note');
        const sent = await send(nodeA.url, { client: socket.id, data: { event: 'note', args: ['from A'] } });
        assert.deepEqual(sent, { result: { connections: 1 } });
        assert.deepEqual(await plain, ['from A']);
      } finally {
        socket.close();
      }
    }
  });
});
