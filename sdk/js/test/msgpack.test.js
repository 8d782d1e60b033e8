// The binary encoding in the SDK: its MessagePack codec against the golden frames shared with
// the Rust transcoder (crates/kilat-protocol/tests/fixtures/msgpack/frames.json, bytes written
// by @msgpack/msgpack), hostile input, and the same client scenario against a real
// `kilat serve --dev` over JSON and over kilat.msgpack.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import WebSocket from 'ws';
import { decode as referenceDecode } from '@msgpack/msgpack';
import { Kilat, encodeMsgpack, decodeMsgpack } from '../src/kilat.js';
import { KilatServer, skipReason } from './server.js';
import { toBinaryForm } from '../scripts/msgpack-golden-gen.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const golden = JSON.parse(readFileSync(join(here, '../../../crates/kilat-protocol/tests/fixtures/msgpack/frames.json'), 'utf8'));
const hex = (bytes) => Buffer.from(bytes).toString('hex');

test('golden: the SDK writes every golden frame byte for byte and reads it back', () => {
  assert.ok(golden.length > 50, `only ${golden.length} golden frames`);
  let binary = 0;
  for (const { json, msgpack } of golden) {
    const value = toBinaryForm(JSON.parse(json));
    assert.equal(hex(encodeMsgpack([value])), msgpack, json);
    const [back] = decodeMsgpack(new Uint8Array(Buffer.from(msgpack, 'hex')));
    assert.deepEqual(back, value, json);
    assert.deepEqual(referenceDecode(new Uint8Array(Buffer.from(msgpack, 'hex'))), value, `reference decoder: ${json}`);
    if (json.includes('b64data')) {
      binary++;
      assert.ok(JSON.stringify(back).includes('"data"'), 'bytes arrive as data');
    }
  }
  assert.ok(binary >= 4);
});

test('a batch is the frames one after another', () => {
  const frames = [{ id: 1, connect: {} }, {}, { id: 2, publish: { channel: 'a', data: new Uint8Array([1, 2]) } }];
  assert.deepEqual(decodeMsgpack(encodeMsgpack(frames)), frames);
});

test('hostile input throws a SyntaxError instead of hanging or allocating', () => {
  for (const bad of [
    [0xc1],
    [0xdd, 0xff, 0xff, 0xff, 0xff],
    [0xdf, 0xff, 0xff, 0xff, 0xff],
    [0xdb, 0xff, 0xff, 0xff, 0xff],
    [0x81, 0x01, 0x01],
    [0xa2, 0xff, 0xfe],
    [0xd4, 0, 0],
    new Array(200).fill(0x91),
  ]) {
    assert.throws(() => decodeMsgpack(new Uint8Array(bad)), SyntaxError, JSON.stringify(bad.slice(0, 8)));
  }
});

const skip = skipReason();
if (skip) test('kilat msgpack integration tests (server binary)', { skip }, () => {});

for (const encoding of ['json', 'msgpack']) {
  describe(`the client against a real server over ${encoding}`, { skip: skip ?? false }, () => {
    let server;
    const clients = [];
    const client = async () => {
      const c = new Kilat(server.wsUrl, { websocket: WebSocket, encoding, timeout: 4000, transports: ['websocket'] });
      clients.push(c);
      c.connect();
      await c.ready(5000);
      return c;
    };

    before(async () => {
      server = await new KilatServer().start();
    });
    after(async () => {
      for (const c of clients) c.disconnect();
      await server?.stop();
    });

    test('subscribe, publish, receive, history, rpc error, presence', async () => {
      const a = await client();
      const b = await client();
      const channel = `chat:${encoding}_${Date.now()}`;
      const sub = b.newSubscription(channel);
      const got = new Promise((resolve) => sub.on('publication', resolve));
      sub.subscribe();
      await sub.ready(5000);
      const doc = { price: 1.25, qty: -3, big: 5000000000, text: 'héllo\n', list: [true, null] };
      await a.publish(channel, doc);
      const pub = await got;
      assert.deepEqual(pub.data, doc);
      const history = await sub.history({ limit: 5 });
      assert.deepEqual(history.publications.at(-1).data, doc);
      const stats = await sub.presenceStats();
      assert.equal(stats.num_clients, 1, JSON.stringify(stats));
      await assert.rejects(a.rpc('nothing-handles-this', {}), (err) => typeof err.code === 'number');
    });
  });
}
