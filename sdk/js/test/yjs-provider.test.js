// The Yjs provider (src/yjs-provider.js) with the real `yjs` and `y-protocols` from npm against
// real kilat servers: one node on the memory engine, and two nodes sharing a real redis-server.
// Skipped loudly without the kilat binary or redis-server; under CI=true both must be there.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import * as Y from 'yjs';
import * as awarenessProtocol from 'y-protocols/awareness';
import { Kilat, KilatYjsProvider, fromBase64, toBase64 } from '../src/kilat.js';
import { KilatServer, skipReason } from './server.js';
import { redisSkipReason, startRedis } from './redis.js';
import { until } from './fake.js';

const skip = skipReason();
const redisSkip = skip ?? redisSkipReason();

let n = 0;
const docChannel = (ns = 'docs') => `${ns}:y${process.pid}_${++n}_${Date.now()}`;

/**
 * A WebSocket class whose network can be cut: `drop()` terminates the live sockets (no close
 * handshake, like a lost network) and sends new ones to a closed port until `restore()`.
 */
function switchableNetwork() {
  const net = { down: false, sockets: new Set() };
  net.WebSocket = class extends WebSocket {
    constructor(url) {
      super(net.down ? 'ws://127.0.0.1:9/connection/websocket' : url);
      net.sockets.add(this);
      this.on('close', () => net.sockets.delete(this));
    }
  };
  net.drop = () => {
    net.down = true;
    for (const s of net.sockets) s.terminate();
  };
  net.restore = () => {
    net.down = false;
  };
  return net;
}

/** Everything one test opened, closed after it. */
function harness() {
  const open = [];
  return {
    /** A connected client with a provider on `channel` for a fresh Y.Doc. */
    async peer(server, channel, { network, awareness = false, snapshotEvery } = {}) {
      const client = new Kilat(server.wsUrl, {
        websocket: network?.WebSocket ?? WebSocket,
        transports: ['websocket'], // no SSE fallback around a cut network
        minReconnectDelay: 50,
        maxReconnectDelay: 300,
        timeout: 4000,
      });
      const doc = new Y.Doc();
      const aw = awareness ? new awarenessProtocol.Awareness(doc) : undefined;
      const provider = new KilatYjsProvider(client, channel, doc, { Y, awareness: aw, awarenessProtocol: aw && awarenessProtocol, snapshotEvery });
      const errors = [];
      provider.on('error', (e) => errors.push(e));
      client.connect();
      const p = { client, doc, provider, awareness: aw, errors };
      open.push(p);
      await until(() => provider.synced, 8000, 'provider synced');
      return p;
    },
    close(p) {
      p.provider.destroy();
      p.client.disconnect();
      p.awareness?.destroy();
    },
    closeAll() {
      for (const p of open.splice(0)) this.close(p);
    },
  };
}

const text = (p) => p.doc.getText('t').toString();
const state = (p) => JSON.stringify({ t: text(p), m: p.doc.getMap('m').toJSON() });

async function converged(peers, what = 'documents to converge', timeout = 8000) {
  await until(() => peers.every((p) => state(p) === state(peers[0]) && p.provider.status === 'synced'), timeout, what);
  return state(peers[0]);
}

function configFile(toml) {
  const file = join(mkdtempSync(join(tmpdir(), 'kilat-yjs-')), 'kilat.toml');
  writeFileSync(file, toml);
  return file;
}

// a short history (6 publications) for the late-joiner tests, and a namespace nobody may write
const CONFIG = `
[node.namespaces.short]
history_size = 6
history_ttl = 600
allow_subscribe = "public"
allow_publish = "any"
allow_history = true

[node.namespaces.ro]
history_size = 100
history_ttl = 600
allow_subscribe = "public"
allow_publish = "none"
allow_history = true
`;

if (skip) test('Yjs provider against kilat (server binary)', { skip }, () => {});

test('base64 helpers round-trip every byte value', () => {
  const bytes = new Uint8Array(70000).map((_, i) => (i * 7919) & 255);
  assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
  assert.throws(() => fromBase64('not base64!'));
});

test('the provider refuses to start without the Y namespace', () => {
  const client = new Kilat('ws://127.0.0.1:9/connection/websocket', { websocket: WebSocket });
  assert.throws(() => new KilatYjsProvider(client, 'docs:x', new Y.Doc(), {}), /opts\.Y/);
});

describe('Yjs provider on one kilat node (memory engine)', { skip: skip ?? false }, () => {
  let server;
  const h = harness();
  before(async () => {
    server = await new KilatServer({ args: ['--config', configFile(CONFIG)] }).start();
  });
  after(async () => {
    h.closeAll();
    await server?.stop();
  });

  test('two documents converge through a real kilat', async () => {
    const ch = docChannel();
    const a = await h.peer(server, ch);
    const b = await h.peer(server, ch);
    a.doc.getText('t').insert(0, 'Hello world');
    await until(() => text(b) === 'Hello world', 5000, 'B to receive A');
    // concurrent edits in the same place and the same map key
    a.doc.transact(() => {
      a.doc.getText('t').insert(5, ', dear');
      a.doc.getMap('m').set('title', 'from A');
    });
    b.doc.transact(() => {
      b.doc.getText('t').insert(5, ' there');
      b.doc.getMap('m').set('title', 'from B');
    });
    const s = JSON.parse(await converged([a, b]));
    assert.ok(['Hello, dear there world', 'Hello there, dear world'].includes(s.t), s.t);
    assert.ok(['from A', 'from B'].includes(s.m.title));
    assert.deepEqual(a.errors, []);
    h.closeAll();
  });

  test('a document edited offline merges after the reconnect, from history', async () => {
    const ch = docChannel();
    const a = await h.peer(server, ch);
    const network = switchableNetwork();
    const b = await h.peer(server, ch, { network });
    a.doc.getText('t').insert(0, 'shared');
    await until(() => text(b) === 'shared', 5000, 'B to receive A');

    network.drop();
    await until(() => b.provider.status === 'offline', 3000, 'B to notice the drop');
    b.doc.getText('t').insert(6, ' (B offline)');
    a.doc.getText('t').insert(0, 'A: ');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(text(a), 'A: shared', 'A sees nothing of B while B is offline');

    let recovered = null;
    b.provider.sub.once('subscribed', (ctx) => (recovered = ctx.recovered));
    network.restore();
    const s = JSON.parse(await converged([a, b], 'the offline edits to merge'));
    assert.equal(s.t, 'A: shared (B offline)');
    assert.equal(recovered, true, "B's missed updates came back through kilat's recovery");
    h.closeAll();
  });

  test('a late joiner gets the full state though history holds only the last 6 publications', async () => {
    const ch = docChannel('short');
    const a = await h.peer(server, ch);
    const b = await h.peer(server, ch);
    for (let i = 0; i < 20; i++) {
      (i % 2 ? a : b).doc.getText('t').insert(0, `${i},`);
      await new Promise((r) => setTimeout(r, 30)); // separate publications, not one batch
    }
    a.doc.getMap('m').set('k', 'v');
    const want = await converged([a, b]);
    const c = await h.peer(server, ch);
    assert.equal(await converged([a, b, c], 'the late joiner to get everything'), want);

    // nobody online any more: a new joiner rebuilds it from the snapshot the history kept
    h.closeAll();
    const d = await h.peer(server, ch);
    await until(() => state(d) === want, 5000, 'D, alone, to rebuild the document from history');
    h.closeAll();
  });

  test('awareness: names travel to the others and vanish when their client leaves', async () => {
    const ch = docChannel();
    const a = await h.peer(server, ch, { awareness: true });
    a.awareness.setLocalStateField('user', { name: 'Ana' });
    const b = await h.peer(server, ch, { awareness: true });
    b.awareness.setLocalStateField('user', { name: 'Bo' });
    const names = (p) => [...p.awareness.getStates().values()].map((s) => s.user?.name).filter(Boolean).sort();
    await until(() => names(a).join() === 'Ana,Bo' && names(b).join() === 'Ana,Bo', 5000, 'both names on both sides');
    // Ana's connection goes away without a goodbye: kilat's leave removes her
    a.client.disconnect();
    await until(() => names(b).join() === 'Bo', 5000, "Ana's awareness state removed at her leave");
    h.closeAll();
  });

  test('malformed publications are ignored and reported; the document goes on', async () => {
    const ch = docChannel();
    const a = await h.peer(server, ch);
    const b = await h.peer(server, ch);
    for (const junk of ['text', { t: 'zzz' }, { t: 'u', r: 'x', u: 'not base64!' }, { t: 'u', r: 'x', u: toBase64(new Uint8Array([1, 2, 3, 4, 5, 250])) }]) {
      await a.client.publish(ch, junk);
    }
    await until(() => b.provider.rejected >= 4, 5000, 'B to reject the junk');
    assert.ok(b.errors.every((e) => e.kind === 'malformed'), JSON.stringify(b.errors));
    b.doc.getText('t').insert(0, 'still fine');
    assert.equal(JSON.parse(await converged([a, b])).t, 'still fine');
    h.closeAll();
  });

  test('on a channel the user may not write, an edit is refused with a clear error', async () => {
    const ch = docChannel('ro');
    const a = await h.peer(server, ch);
    const b = await h.peer(server, ch);
    a.doc.getText('t').insert(0, 'nope');
    await until(() => a.errors.some((e) => e.kind === 'forbidden'), 5000, 'a forbidden error');
    assert.match(a.errors.find((e) => e.kind === 'forbidden').message, /may not write/);
    assert.equal(a.provider.readOnly, true);
    await b.provider.sub.history({ limit: 1 }); // a round trip on B's connection
    assert.equal(text(b), '');
    h.closeAll();
  });

  test('memory engine restart: the replicas still online put the document back', async () => {
    const ch = docChannel();
    const a = await h.peer(server, ch);
    const b = await h.peer(server, ch);
    a.doc.getText('t').insert(0, 'survives in the clients');
    const want = await converged([a, b]);
    await server.restart();
    // history is gone with the process; A and B resubscribe unrecovered and publish snapshots
    await until(() => a.provider.status === 'synced' && b.provider.status === 'synced', 10000, 'A and B back');
    const c = await h.peer(server, ch);
    assert.equal(await converged([a, b, c], 'C to get the document from A or B'), want);
    h.closeAll();
  });
});

describe('Yjs provider on two kilat nodes sharing Redis', { skip: redisSkip ?? false }, () => {
  let redis;
  let node1;
  let node2;
  const h = harness();
  before(async () => {
    redis = await startRedis();
    const args = ['--engine', 'redis', '--redis-url', redis.url];
    node1 = await new KilatServer({ args }).start();
    node2 = await new KilatServer({ args }).start();
  });
  after(async () => {
    h.closeAll();
    await node1?.stop();
    await node2?.stop();
    await redis?.stop();
  });

  test('two documents on two nodes converge; offline edits merge; a late joiner gets the full state', async () => {
    const ch = docChannel();
    const a = await h.peer(node1, ch);
    const network = switchableNetwork();
    const b = await h.peer(node2, ch, { network });
    a.doc.getText('t').insert(0, 'node one');
    b.doc.getMap('m').set('from', 'node two');
    await converged([a, b], 'the two nodes to converge');

    network.drop();
    await until(() => b.provider.status === 'offline', 3000, 'B to notice the drop');
    b.doc.getText('t').insert(8, ' + offline');
    a.doc.getText('t').insert(0, '> ');
    network.restore();
    const s = JSON.parse(await converged([a, b], 'the offline edits to merge across nodes'));
    assert.equal(s.t, '> node one + offline');

    const c = await h.peer(node2, ch);
    assert.equal(await converged([a, b, c], 'the late joiner on node two'), JSON.stringify(s));
    h.closeAll();
  });

  test('the document survives a restart of both nodes: Redis keeps the history', async () => {
    const ch = docChannel();
    const a = await h.peer(node1, ch);
    a.doc.getText('t').insert(0, 'kept in redis');
    a.doc.getMap('m').set('n', 1);
    const b = await h.peer(node2, ch);
    const want = await converged([a, b]);
    h.closeAll();
    await node1.restart();
    await node2.restart();
    // nobody was online through the restart: the document comes from Redis alone
    const c = await h.peer(node2, ch);
    await until(() => state(c) === want, 5000, 'the document read back from Redis after the restart');
    h.closeAll();
  });
});
