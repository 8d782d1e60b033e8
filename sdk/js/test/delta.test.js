// Fossil deltas (`delta: 'fossil'` subscriptions): the SDK's applier against the fossil-delta
// package from npm, its refusals of broken deltas, and a real kilat server: a delta subscriber
// and a plain one get the same documents while deltas travel on the wire, and after a dropped
// connection recovery brings full payloads before deltas resume.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDelta } from 'fossil-delta';
import { Kilat } from '../src/kilat.js';
import { applyDelta, applyTextDelta, DeltaError } from '../src/fossil.js';
import { KilatServer, skipReason } from './server.js';
import { fakeWebSocket, until } from './fake.js';

const enc = new TextEncoder();

/** A document that changes a little with each revision. */
const documentAt = (n) => ({
  title: 'Quarterly report',
  owner: 'alice',
  sections: ['intro', 'numbers', 'outlook', 'appendix'],
  revision: n,
  words: 1000 + 7 * n,
  status: 'draft',
});

describe('fossil delta applier', () => {
  test('applies what the fossil-delta package makes', () => {
    const pairs = [
      ['', ''],
      ['', 'abc'],
      [JSON.stringify(documentAt(1)), JSON.stringify(documentAt(2))],
      ['x'.repeat(1000), `${'x'.repeat(500)}y${'x'.repeat(600)}`],
      ['héllo wörld, ünïcode ✓ '.repeat(10), 'héllo wörld, ünïcode ✗ '.repeat(11)],
    ];
    // and pseudo-random byte strings with shared pieces
    let state = 12345;
    const next = () => (state = (state * 1103515245 + 12345) >>> 0);
    for (let i = 0; i < 200; i++) {
      const source = Uint8Array.from({ length: next() % 400 }, () => 97 + (next() % 4));
      const target = [];
      while (target.length < source.length) {
        const start = next() % (source.length + 1);
        target.push(...source.subarray(start, start + (next() % 40)));
        if (next() % 3 === 0) target.push(next() % 256);
      }
      pairs.push([source, Uint8Array.from(target)]);
    }
    for (const [a, b] of pairs) {
      const source = typeof a === 'string' ? enc.encode(a) : a;
      const target = typeof b === 'string' ? enc.encode(b) : b;
      const delta = Uint8Array.from(createDelta(source, target));
      assert.deepEqual(applyDelta(source, delta), target);
    }
  });

  test('applies the example of docs/protocol.md', () => {
    assert.equal(
      applyTextDelta('{"title":"Report","revision":8}', 'V\nT@0,2:9}35R1Lg;'),
      '{"title":"Report","revision":9}',
    );
  });

  test('refuses broken deltas with a DeltaError, never more than the limit', () => {
    const source = enc.encode('0123456789');
    for (const [delta, why] of [
      ['', /size header/],
      ['5', /size header/],
      ['5\n', /no checksum/],
      ['5\n5', /no checksum/],
      ['5\n5@0', /comma/],
      ['5\n5@8,', /outside the source/],
      ['5\n6@0,', /longer than announced/],
      ['5\n9:abc', /longer than announced/],
      ['5\n5:abc', /past the end/],
      ['5\n5@0,0;', /checksum/],
      ['5\n4@0,0;', /shorter/],
      ['5\n5@0,!', /unknown command/],
      ['~~~~~~~~~\n', /number too large/],
      ['~~~~~~~~\n', /larger than allowed/],
    ]) {
      assert.throws(() => applyDelta(source, enc.encode(delta), 1 << 20), (e) => e instanceof DeltaError && why.test(e.message), delta);
    }
    assert.throws(() => applyDelta(source, enc.encode('Z\n'), 10), /larger than allowed/);
  });
});

test('a delta that cannot be applied is an error event and a resubscribe that recovers', async (t) => {
  // an in-memory server: it grants deltas, then sends a delta with no base before it
  const server = (frame, socket) => {
    if (frame.connect) socket.push({ id: frame.id, connect: { client: 'c1', ping: 25 } });
    else if (frame.unsubscribe) socket.push({ id: frame.id, unsubscribe: {} });
    else if (frame.subscribe) {
      const again = frame.subscribe.offset === 1;
      socket.push({
        id: frame.id,
        subscribe: {
          recoverable: true, epoch: 'e', offset: again ? 2 : 0, recovered: again, positioned: true, delta: true,
          publications: again ? [{ data: documentAt(2), offset: 2 }] : [],
        },
      });
    }
  };
  const WS = fakeWebSocket({ server });
  const client = new Kilat('ws://test.invalid/connection/websocket', { websocket: WS, minReconnectDelay: 5, maxReconnectDelay: 20 });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  const sub = client.newSubscription('doc', { delta: 'fossil' });
  const seen = [];
  const errors = [];
  sub.on('publication', (p) => seen.push(p));
  sub.on('error', (e) => errors.push(e));
  sub.subscribe();
  await sub.ready(2000);
  const socket = WS.last();
  socket.push({ push: { channel: 'doc', pub: { data: JSON.stringify(documentAt(1)), offset: 1, delta: false } } });
  socket.push({ push: { channel: 'doc', pub: { data: '9\n9@0,0;', offset: 2, delta: true } } });
  await until(() => seen.length === 2, 2000, 'the recovered publication');
  assert.deepEqual(seen.map((p) => [p.offset, p.data]), [[1, documentAt(1)], [2, documentAt(2)]]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].type, 'delta');
  assert.ok(errors[0].error instanceof DeltaError, String(errors[0].error));
  const commands = socket.frames().filter((f) => f.subscribe || f.unsubscribe);
  assert.deepEqual(
    commands.map((f) => (f.subscribe ? ['subscribe', f.subscribe.delta, f.subscribe.offset] : ['unsubscribe'])),
    [['subscribe', 'fossil', undefined], ['unsubscribe'], ['subscribe', 'fossil', 1]],
    'unsubscribed, then subscribed again recovering from offset 1',
  );
});

const skip = skipReason();
if (skip) test('delta integration tests (server binary)', { skip }, () => {});

describe('delta subscriptions against a kilat server', { skip: skip ?? false }, () => {
  let server;
  const clients = [];
  let n = 0;
  const channel = () => `doc${process.pid}_${++n}_${Date.now()}`;

  before(async () => {
    // one namespace without history, for the refusal
    const dir = mkdtempSync(join(tmpdir(), 'kilat-delta-'));
    const config = join(dir, 'kilat.toml');
    writeFileSync(config, '[node.namespaces.live]\nhistory_size = 0\nallow_subscribe = "public"\n');
    server = await new KilatServer({ args: ['--config', config] }).start();
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    await server?.stop();
  });

  /** A connected client; `frames` collects every text frame its WebSocket receives. */
  async function connected(frames, options = {}) {
    class Spy extends WebSocket {
      constructor(...args) {
        super(...args);
        if (frames) this.on('message', (data) => frames.push(...String(data).split('\n').filter((l) => l.trim())));
      }
    }
    const c = new Kilat(server.wsUrl, { websocket: Spy, minReconnectDelay: 50, maxReconnectDelay: 300, timeout: 4000, ...options });
    clients.push(c);
    c.connect();
    await c.ready(5000);
    return c;
  }

  async function subscribed(c, ch, options) {
    const sub = c.newSubscription(ch, options);
    const seen = [];
    sub.on('publication', (p) => seen.push(p));
    sub.subscribe();
    await sub.ready(5000);
    return { sub, seen };
  }

  /** The `pub` bodies among raw frames. */
  const pubsIn = (frames) => frames.map((f) => JSON.parse(f)).filter((f) => f.push?.pub).map((f) => f.push.pub);

  test('a delta subscriber gets the same documents as a plain one, with deltas on the wire', async () => {
    const ch = channel();
    const wire = [];
    const plain = await subscribed(await connected(null), ch);
    const delta = await subscribed(await connected(wire), ch, { delta: 'fossil' });
    const writer = await connected(null);
    for (let i = 1; i <= 6; i++) await writer.publish(ch, documentAt(i));
    await until(() => plain.seen.length === 6 && delta.seen.length === 6, 5000, 'six publications each');
    const expected = [1, 2, 3, 4, 5, 6].map(documentAt);
    assert.deepEqual(plain.seen.map((p) => p.data), expected);
    assert.deepEqual(delta.seen.map((p) => p.data), expected);
    assert.deepEqual(delta.seen.map((p) => p.offset), plain.seen.map((p) => p.offset));
    const sent = pubsIn(wire);
    assert.deepEqual(sent.map((p) => p.delta), [false, true, true, true, true, true], 'the first in full, then deltas');
    for (const p of sent.slice(1)) assert.ok(p.data.length * 2 < sent[0].data.length, `a ${p.data.length}-byte delta`);
  });

  test('after a dropped connection recovery brings full payloads, then deltas resume', async () => {
    const ch = channel();
    const wire = [];
    const c = await connected(wire, { minReconnectDelay: 300, maxReconnectDelay: 300 });
    const { sub, seen } = await subscribed(c, ch, { delta: 'fossil' });
    const errors = [];
    sub.on('error', (e) => errors.push(e));
    const writer = await connected(null);
    for (let i = 1; i <= 3; i++) await writer.publish(ch, documentAt(i));
    await until(() => seen.length === 3, 3000, 'live publications');
    c._transport._ws.terminate();
    await until(() => c.state === 'connecting', 2000, 'the drop is noticed');
    for (let i = 4; i <= 6; i++) await writer.publish(ch, documentAt(i));
    await until(() => sub.state === 'subscribed' && seen.length === 6, 5000, 'recovered publications');
    wire.length = 0;
    for (let i = 7; i <= 9; i++) await writer.publish(ch, documentAt(i));
    await until(() => seen.length === 9, 3000, 'live publications after recovery');
    assert.deepEqual(seen.map((p) => p.data), [1, 2, 3, 4, 5, 6, 7, 8, 9].map(documentAt));
    assert.deepEqual(seen.map((p) => p.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(pubsIn(wire).map((p) => p.delta), [false, true, true], 'full after recovery, then deltas');
    assert.deepEqual(errors, [], 'no delta failed');
  });

  test('a channel without history refuses a delta subscription with 400', async () => {
    const c = await connected(null);
    const sub = c.newSubscription(`live:${channel()}`, { delta: 'fossil', recoverable: false });
    const failed = new Promise((resolve) => sub.on('error', resolve));
    sub.subscribe();
    const { error } = await failed;
    assert.equal(error.code, 400);
    assert.match(error.message, /history/);
  });
});
