// Binary publications (`b64data`, docs/socketio.md "Binary arguments") reaching the real
// socket.io-client (npm, 4.x) through a spawned kilat: each arrives as the event `message`
// whose argument is the bytes (a Buffer in Node), over long polling and WebSocket, in order
// with the JSON publications around it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

import { KilatServer } from '../../e2e/lib/server.js';

let server;

before(async () => {
  server = await KilatServer.start('socketio-binary-publication');
});

after(async () => {
  await server?.stop();
});

async function api(method, body) {
  const res = await fetch(`${server.url}/api/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = await res.json();
  assert.equal(res.status, 200, JSON.stringify(answer));
  assert.equal(answer.error, undefined, JSON.stringify(answer));
  return answer.result;
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
}

for (const [name, transports] of [
  ['long polling', ['polling']],
  ['websocket', ['websocket']],
]) {
  test(`a binary publication arrives as a Buffer over ${name}`, async () => {
    const a = io(server.url, { transports, upgrade: false, reconnection: false, forceNew: true });
    const b = io(`${server.url}/files`, { transports, upgrade: false, reconnection: false, forceNew: true });
    try {
      await Promise.all([connected(a), connected(b)]);
      const seen = [];
      const done = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${JSON.stringify(seen)}`)), 10000);
        a.on('message', (value) => {
          seen.push(value);
          if (seen.length === 3) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const atB = new Promise((resolve) => b.once('message', resolve));
      const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
      await api('publish', { channel: 'sio:/', data: 'before' });
      await api('publish', { channel: 'sio:/', b64data: bytes.toString('base64') });
      await api('publish', { channel: 'sio:/', data: 'after' });
      await api('publish', { channel: 'sio:/files', b64data: Buffer.from('in /files').toString('base64') });
      await done;
      assert.equal(seen[0], 'before');
      assert.ok(Buffer.isBuffer(seen[1]), `a Buffer, not ${typeof seen[1]}: ${JSON.stringify(seen[1])}`);
      assert.deepEqual([...seen[1]], [...bytes]);
      assert.equal(seen[2], 'after');
      const inFiles = await atB;
      assert.ok(Buffer.isBuffer(inFiles));
      assert.equal(inFiles.toString(), 'in /files');
    } finally {
      a.close();
      b.close();
    }
  });
}
