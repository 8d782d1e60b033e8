// Binary payloads (docs/protocol.md, binary payloads): publish(channel, Uint8Array|ArrayBuffer)
// sends bytes (`b64data` on JSON, bin on MessagePack) and subscribers get a Uint8Array, checked
// against the golden frames and against a real kilat server in both encodings.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { Kilat } from '../src/kilat.js';
import { encodeFrames, fromBase64, toBase64 } from '../src/codec.js';
import { encodeMsgpack } from '../src/msgpack.js';
import { KilatServer, skipReason } from './server.js';
import { until } from './fake.js';

const golden = JSON.parse(
  readFileSync(new URL('../../../crates/kilat-protocol/tests/fixtures/msgpack/frames.json', import.meta.url), 'utf8'),
);
const hex = (bytes) => Buffer.from(bytes).toString('hex');

/** Every byte value, a NUL and a newline: what text would corrupt. */
const chunk = () => Uint8Array.from([...Array(256).keys()].reverse().concat([10, 0]));

describe('binary payloads in the codec', () => {
  test('a publish with bytes is the golden frame in both encodings', () => {
    const entry = golden.find((f) => f.source === 'binary payloads' && f.direction === 'client');
    const bytes = fromBase64(JSON.parse(entry.json).publish.b64data);
    const frame = { id: 2, publish: { channel: 'media:cam', data: bytes } };
    assert.equal(encodeFrames([frame]), entry.json);
    assert.equal(hex(encodeMsgpack([frame])), entry.msgpack);
  });

  test('base64 round trips every byte and large payloads', () => {
    const big = new Uint8Array(200_000).map((_, i) => (i * 7) & 0xff);
    for (const bytes of [new Uint8Array(0), chunk(), big]) {
      const text = toBase64(bytes);
      assert.equal(text, Buffer.from(bytes).toString('base64'));
      assert.deepEqual(fromBase64(text), bytes);
    }
  });
});

const skip = skipReason();
if (skip) test('binary payloads against a server (server binary)', { skip }, () => {});

describe('binary payloads against a real server', { skip: skip ?? false }, () => {
  let server;
  const clients = [];
  before(async () => {
    server = await new KilatServer().start();
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await server?.stop();
  });

  async function connected(encoding) {
    const c = new Kilat(server.wsUrl, { websocket: WebSocket, encoding, timeout: 4000 });
    clients.push(c);
    c.connect();
    await c.ready(5000);
    return c;
  }

  test('bytes published on JSON and on MessagePack arrive as Uint8Array in both, in history too', async () => {
    const channel = `media:b${process.pid}_${Date.now()}`;
    const json = await connected('json');
    const bin = await connected('msgpack');
    const seen = { json: [], bin: [] };
    for (const [name, c] of [['json', json], ['bin', bin]]) {
      const sub = c.newSubscription(channel);
      sub.on('publication', (ctx) => seen[name].push(ctx.data));
      sub.subscribe();
      await sub.ready(5000);
    }
    const bytes = chunk();
    await bin.publish(channel, bytes);
    await json.publish(channel, bytes.buffer.slice(0, 3)); // an ArrayBuffer: 255, 254, 253
    await json.publish(channel, { still: 'json' });
    await until(() => seen.json.length === 3 && seen.bin.length === 3, 5000);
    for (const got of [seen.json, seen.bin]) {
      assert.ok(got[0] instanceof Uint8Array, `a Uint8Array, got ${got[0]}`);
      assert.deepEqual(got[0], bytes);
      assert.deepEqual(got[1], Uint8Array.from([255, 254, 253]));
      assert.deepEqual(got[2], { still: 'json' });
    }
    for (const c of [json, bin]) {
      const history = await c.history(channel, { limit: 10 });
      assert.deepEqual(history.publications[0].data, bytes);
      assert.deepEqual(history.publications[2].data, { still: 'json' });
    }
  });

  test('a JSON connection puts b64data on the wire, and bad base64 is a 400 with a hint', async () => {
    const channel = `media:w${process.pid}_${Date.now()}`;
    const ws = new WebSocket(server.wsUrl);
    const frames = [];
    ws.on('message', (m) => frames.push(...String(m).split('\n').map((l) => JSON.parse(l))));
    await new Promise((resolve) => ws.once('open', resolve));
    ws.send(`{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"${channel}"}}`);
    await until(() => frames.some((f) => f.id === 2), 5000);
    const c = await connected('json');
    await c.publish(channel, Uint8Array.from([0, 1, 255]));
    await until(() => frames.some((f) => f.push?.pub), 5000);
    const pub = frames.find((f) => f.push?.pub).push.pub;
    assert.equal(pub.b64data, 'AAH/');
    assert.equal(pub.data, undefined);
    ws.send('{"id":3,"publish":{"channel":"' + channel + '","b64data":"AA*"}}');
    await until(() => frames.some((f) => f.id === 3), 5000);
    const error = frames.find((f) => f.id === 3).error;
    assert.equal(error.code, 400);
    assert.match(error.message, /standard base64/);
    ws.close();
  });
});
