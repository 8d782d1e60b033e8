// Integration tests against a real `kilat serve --dev` (see server.js). Skipped loudly when
// the binary is missing (failed under CI=true). Every transport route, /sdk/, the server API
// and token verification must exist: a 404 or a refusal there fails the tests, it never
// skips them.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { Kilat, KilatError } from '../src/kilat.js';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilatServer, skipReason } from './server.js';
import { until, nextEvent, sleep } from './fake.js';

const skip = skipReason();
let server;
/** @type {Kilat[]} */
let clients = [];

function client(options = {}) {
  const c = new Kilat(server.wsUrl, { websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 300, timeout: 4000, ...options });
  clients.push(c);
  return c;
}

async function connected(options) {
  const c = client(options);
  c.connect();
  await c.ready(5000);
  return c;
}

async function subscribed(c, channel, options) {
  const sub = c.newSubscription(channel, options);
  sub.subscribe();
  await sub.ready(5000);
  return sub;
}

let n = 0;
/** A fresh channel per test so history from other tests does not interfere. */
const channel = (prefix = 'chat') => `${prefix}:t${process.pid}_${++n}_${Date.now()}`;

// node --test does not count a skipped describe as skipped; a skipped placeholder test does
if (skip) test('kilat integration tests (server binary)', { skip }, () => {});

describe('kilat server (websocket)', { skip: skip ?? false }, () => {
  before(async () => {
    server = await new KilatServer().start();
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    clients = [];
    await server?.stop();
  });

  test('every transport route exists: a 404 fails here instead of skipping the transport tests', async () => {
    // GET without `connect` and an empty POST: refused as bad requests, but not 404
    for (const [path, init] of [
      ['/connection/sse', undefined],
      ['/connection/stream', { method: 'POST', body: '' }],
      ['/connection/emulation', { method: 'POST', body: '' }],
    ]) {
      const status = await server.status(path, init);
      assert.notEqual(status, 404, `${path} answers 404: the transport is missing from the server`);
      assert.ok(status >= 200 && status < 500, `${path} answers ${status}`);
    }
  });

  test('the server serves the SDK at /sdk/kilat.js with every module it imports', async () => {
    const res = await fetch(`${server.httpUrl}/sdk/kilat.js`);
    assert.equal(res.status, 200, '/sdk/kilat.js');
    const seen = new Set();
    const queue = ['kilat.js'];
    while (queue.length > 0) {
      const file = queue.shift();
      if (seen.has(file)) continue;
      seen.add(file);
      const r = await fetch(`${server.httpUrl}/sdk/${file}`);
      assert.equal(r.status, 200, `/sdk/${file}`);
      assert.match(r.headers.get('content-type') ?? '', /javascript/, `/sdk/${file} content-type`);
      const text = await r.text();
      for (const m of text.matchAll(/(?:import|export)[^'"]*from\s+'\.\/([\w.-]+\.js)'/g)) queue.push(m[1]);
    }
    assert.ok(seen.size >= 7, `modules: ${[...seen].join(', ')}`);
    await res.arrayBuffer();
  });

  test('connects over WebSocket and gets a client id', async () => {
    const c = client();
    const ctx = nextEvent(c, 'connected', 5000);
    c.connect();
    const info = await ctx;
    assert.equal(info.transport, 'websocket');
    assert.match(info.client, /^[0-9a-f-]{36}$/);
    assert.equal(c.state, 'connected');
    assert.ok(info.ping > 0);
  });

  test('publish from one client reaches a subscriber of another', async () => {
    const ch = channel();
    const a = await connected();
    const b = await connected();
    const sub = await subscribed(a, ch);
    const got = nextEvent(sub, 'publication');
    const res = await b.publish(ch, { text: 'hello', n: [1, 2.5, null] });
    const p = await got;
    assert.deepEqual(p.data, { text: 'hello', n: [1, 2.5, null] });
    assert.equal(p.channel, ch);
    if (res.offset !== undefined) assert.equal(p.offset, res.offset);
    // and through the subscription's own publish
    const got2 = nextEvent(sub, 'publication');
    await sub.publish('second');
    assert.equal((await got2).data, 'second');
  });

  test('presence, presence stats, join and leave', async () => {
    const ch = channel();
    const a = await connected();
    const b = await connected();
    const subA = await subscribed(a, ch, { joinLeave: true });
    const joins = [];
    subA.on('join', (j) => joins.push(j.info.client));
    const leaves = [];
    subA.on('leave', (l) => leaves.push(l.info.client));
    const subB = await subscribed(b, ch, { joinLeave: true });
    await until(() => joins.includes(b.clientId), 3000, "B's join");
    const presence = await subA.presence();
    assert.deepEqual(Object.keys(presence.clients).sort(), [a.clientId, b.clientId].sort());
    const stats = await a.presenceStats(ch);
    assert.equal(stats.num_clients, 2);
    subB.unsubscribe();
    await until(() => leaves.includes(b.clientId), 3000, "B's leave");
    const after = await a.presence(ch);
    assert.deepEqual(Object.keys(after.clients), [a.clientId]);
  });

  test('presence diffs through real sockets: 12 clients join and 6 leave at once; members and events match the server, in order per member', async () => {
    const ch = channel();
    const watcher = await connected();
    const sub = await subscribed(watcher, ch, { joinLeave: true });
    const events = [];
    sub.on('join', (j) => events.push(['join', j.info.client]));
    sub.on('leave', (l) => events.push(['leave', l.info.client]));
    const others = await Promise.all(Array.from({ length: 12 }, () => connected()));
    const subs = await Promise.all(others.map((c) => subscribed(c, ch)));
    const leaving = others.slice(0, 6).map((c) => c.clientId);
    subs.slice(0, 6).forEach((s) => s.unsubscribe());
    await until(() => events.filter(([kind]) => kind === 'leave').length === 6, 5000, 'six leaves');
    // every change once; each member's join before its leave
    for (const c of others) {
      const mine = events.filter(([, id]) => id === c.clientId).map(([kind]) => kind);
      assert.deepEqual(mine, leaving.includes(c.clientId) ? ['join', 'leave'] : ['join'], c.clientId);
    }
    const expected = [watcher.clientId, ...others.slice(6).map((c) => c.clientId)].sort();
    // the members map kept from diffs alone equals the server's list
    assert.deepEqual([...sub.members.keys()].sort(), expected);
    const listed = await sub.presence();
    assert.deepEqual(Object.keys(listed.clients).sort(), expected);
    // a late subscriber loads the state, then follows diffs
    const late = await connected();
    const lateSub = await subscribed(late, ch, { joinLeave: true });
    await lateSub.syncMembers();
    assert.deepEqual([...lateSub.members.keys()].sort(), [...expected, late.clientId].sort());
    subs[6].unsubscribe();
    await until(() => !lateSub.members.has(others[6].clientId), 5000, 'the leave reaches the late member map');
  });

  test('presence pages: 3 members at a time while others join, every member once; presence() merges every page', async () => {
    const ch = channel();
    const members = await Promise.all(Array.from({ length: 10 }, () => connected()));
    await Promise.all(members.map((c) => subscribed(c, ch)));
    const seen = new Map();
    let cursor;
    let pages = 0;
    const late = [];
    do {
      const page = await members[0].presencePage(ch, { cursor, limit: 3 });
      pages += 1;
      assert.ok(Object.keys(page.clients).length <= 3, 'at most the limit');
      for (const id of Object.keys(page.clients)) seen.set(id, (seen.get(id) ?? 0) + 1);
      // a join between pages
      const c = await connected();
      await subscribed(c, ch);
      late.push(c.clientId);
      cursor = page.cursor;
    } while (cursor);
    assert.ok(pages >= 4, `10 members in pages of 3: ${pages} pages`);
    for (const c of members) assert.equal(seen.get(c.clientId), 1, `${c.clientId} once`);
    const all = await members[0].presence(ch);
    assert.deepEqual(Object.keys(all.clients).sort(), [...members.map((c) => c.clientId), ...late].sort());
    await assert.rejects(members[0].presencePage(ch, { cursor: 'x'.repeat(300) }), (e) => e instanceof KilatError && e.code === 400);
  });

  test('history: limit, since, reverse, limit 0', async () => {
    const ch = channel();
    const c = await connected();
    for (let i = 1; i <= 5; i++) await c.publish(ch, i);
    const last3 = await c.history(ch, { limit: 3 });
    assert.deepEqual(last3.publications.map((p) => p.data), [3, 4, 5]);
    assert.equal(last3.offset, 5);
    assert.equal(typeof last3.epoch, 'string');
    const since = await c.history(ch, { limit: 2, since: { offset: 1, epoch: last3.epoch } });
    assert.deepEqual(since.publications.map((p) => p.offset), [2, 3]);
    const rev = await c.history(ch, { limit: 2, reverse: true });
    assert.deepEqual(rev.publications.map((p) => p.data), [5, 4]);
    const none = await c.history(ch, { limit: 0 });
    assert.deepEqual(none.publications, []);
    assert.equal(none.offset, 5);
    await assert.rejects(c.history(ch, { since: { offset: 1, epoch: 'not-the-epoch' } }), (e) => e instanceof KilatError && e.code === 503);
  });

  test('recovery after a client-side reconnect: nothing lost, nothing duplicated', async () => {
    const ch = channel();
    const a = await connected({ minReconnectDelay: 400, maxReconnectDelay: 400 });
    const b = await connected();
    const sub = await subscribed(a, ch);
    const seen = [];
    sub.on('publication', (p) => seen.push(p.data));
    await b.publish(ch, 'before');
    await until(() => seen.length === 1, 3000, 'live publication');
    // drop A's socket as a network failure would (no close handshake)
    a._transport._ws.terminate();
    await until(() => a.state === 'connecting', 2000, 'A notices the drop');
    for (const m of ['gap1', 'gap2', 'gap3']) await b.publish(ch, m);
    const ctx = await nextEvent(sub, 'subscribed', 5000);
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true, 'same server, same epoch: recovered');
    await b.publish(ch, 'after');
    await until(() => seen.length === 5, 3000, 'all publications');
    assert.deepEqual(seen, ['before', 'gap1', 'gap2', 'gap3', 'after']);
  });

  /** Calls the server HTTP API (open without a key in --dev). */
  async function api(method, body) {
    const res = await fetch(`${server.httpUrl}/api/${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, `/api/${method}`);
    const json = await res.json();
    assert.equal(json.error, undefined, `/api/${method}: ${JSON.stringify(json.error)}`);
    return json.result;
  }

  test('a publication through the server API reaches the subscriber', async () => {
    const ch = channel();
    const c = await connected();
    const sub = await subscribed(c, ch);
    const got = nextEvent(sub, 'publication');
    await api('publish', { channel: ch, data: { from: 'backend' } });
    assert.deepEqual((await got).data, { from: 'backend' });
  });

  test('forced disconnect with reconnect (3004): the client reconnects and recovers', async () => {
    const ch = channel();
    const c = await connected();
    const sub = await subscribed(c, ch);
    const connecting = nextEvent(c, 'connecting');
    const resubscribed = nextEvent(sub, 'subscribed', 5000);
    await api('disconnect', { user: '', client: c.clientId, reconnect: true });
    assert.equal((await connecting).code, 3004);
    const ctx = await resubscribed;
    assert.equal(ctx.recovered, true);
    assert.equal(c.state, 'connected');
  });

  for (const name of ['websocket', 'sse']) {
    test(`forced disconnect without reconnect (3503) over ${name}: the client stays disconnected`, async () => {
      const c = client({ transports: [name] });
      c.connect();
      await c.ready(5000);
      const disc = nextEvent(c, 'disconnected');
      await api('disconnect', { user: '', client: c.clientId });
      const ctx = await disc;
      assert.equal(ctx.code, 3503);
      await sleep(300);
      assert.equal(c.state, 'disconnected', 'no reconnect after 35xx');
    });
  }

  test('200 publishes issued in one tick go out batched and arrive in order', async () => {
    const ch = channel();
    const a = await connected();
    const b = await connected();
    const sub = await subscribed(a, ch);
    const seen = [];
    sub.on('publication', (p) => seen.push(p));
    const sock = b._transport._ws;
    let messages = 0;
    const origSend = sock.send.bind(sock);
    sock.send = (data, ...rest) => {
      messages++;
      return origSend(data, ...rest);
    };
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => b.publish(ch, i)));
    assert.ok(messages <= 2, `${messages} WebSocket messages for 200 commands`);
    await until(() => seen.length === 200, 5000, '200 publications');
    assert.deepEqual(seen.map((p) => p.data), Array.from({ length: 200 }, (_, i) => i));
    const offsets = seen.map((p) => p.offset);
    for (let i = 1; i < offsets.length; i++) assert.equal(offsets[i], offsets[i - 1] + 1);
    assert.deepEqual(results.map((r) => r.offset), offsets);
  });

  test('recovery over SSE after the stream drops', async () => {
    const ch = channel();
    const c = client({ transports: ['sse'], minReconnectDelay: 300, maxReconnectDelay: 300 });
    c.connect();
    await c.ready(5000);
    const b = await connected();
    const sub = await subscribed(c, ch);
    const seen = [];
    sub.on('publication', (p) => seen.push(p.data));
    await b.publish(ch, 'live');
    await until(() => seen.length === 1, 3000, 'live publication over SSE');
    c._transport._abort.abort(); // the stream dies as if the network dropped it
    await until(() => c.state === 'connecting', 2000, 'the drop is noticed');
    await b.publish(ch, 'missed1');
    await b.publish(ch, 'missed2');
    const ctx = await nextEvent(sub, 'subscribed', 5000);
    assert.equal(ctx.recovered, true);
    await until(() => seen.length === 3, 3000, 'recovered publications');
    assert.deepEqual(seen, ['live', 'missed1', 'missed2']);
    assert.equal(c.transportName, 'sse');
  });

  test('publishing while the subscriber keeps dropping: every publication once, in order', async () => {
    const ch = channel();
    const a = await connected({ minReconnectDelay: 10, maxReconnectDelay: 50 });
    const b = await connected();
    const sub = await subscribed(a, ch);
    const seen = [];
    sub.on('publication', (p) => seen.push(p.data));
    let recoveries = 0;
    sub.on('subscribed', (ctx) => {
      assert.equal(ctx.recovered, true, 'recovered within the history window');
      recoveries++;
    });
    let sent = 0;
    for (let round = 0; round < 8; round++) {
      const burst = [];
      for (let i = 0; i < 15; i++) burst.push(b.publish(ch, sent++));
      if (round % 2 === 0) setTimeout(() => a._transport?._ws?.terminate(), round);
      await Promise.all(burst);
      await sleep(15);
    }
    await until(() => seen.length >= sent && a.state === 'connected', 8000, `${sent} publications`);
    await sleep(50);
    assert.deepEqual(seen, Array.from({ length: sent }, (_, i) => i));
    assert.ok(recoveries >= 1, 'at least one drop and recovery happened');
  });

  test('an application ping is answered: the connection survives several ping intervals', async (t) => {
    const fastPing = new KilatServer({ args: ['--ping-interval', '0.3', '--pong-timeout', '0.3'] });
    await fastPing.start();
    t.after(() => fastPing.stop());
    const c = new Kilat(fastPing.wsUrl, { websocket: WebSocket, minReconnectDelay: 50 });
    clients.push(c);
    c.connect();
    await c.ready(5000);
    const drops = [];
    c.on('connecting', (e) => drops.push(e));
    c.on('disconnected', (e) => drops.push(e));
    await sleep(2000);
    assert.deepEqual(drops, [], 'no disconnect while pings are answered');
    assert.equal(c.state, 'connected');
    c.disconnect();
  });

  test('send() is fire-and-forget; rpc without a backend is a KilatError', async () => {
    const c = await connected();
    await c.send({ typing: true });
    await assert.rejects(c.rpc('getUser', { id: 1 }), (e) => e instanceof KilatError && e.code >= 400);
    assert.equal(c.state, 'connected');
  });

  test('fallback: a refused WebSocket falls back to SSE', async () => {
    // the server answers 404 to the upgrade on this path, so the socket never opens
    const c = new Kilat(server.httpUrl, {
      websocket: WebSocket,
      transports: [{ transport: 'websocket', endpoint: `${server.httpUrl}/nowhere` }, 'sse', 'http_stream'],
      minReconnectDelay: 50,
    });
    clients.push(c);
    c.connect();
    await c.ready(5000);
    assert.equal(c.transportName, 'sse');
  });

  for (const name of ['sse', 'http_stream']) {
    test(`${name}: 200 commands issued in one tick go out in as few emulation POSTs as the body limit allows, in order`, async () => {
      const bodies = [];
      const counting = (url, init) => {
        if (String(url).endsWith('/connection/emulation')) bodies.push(new TextEncoder().encode(init.body).length);
        return fetch(url, init);
      };
      const ch = channel();
      const reader = await connected();
      const sub = await subscribed(reader, ch);
      const seen = [];
      sub.on('publication', (p) => seen.push(p.data.n));
      const c = new Kilat(server.httpUrl, { transports: [name], fetch: counting, timeout: 8000 });
      clients.push(c);
      c.connect();
      await c.ready(5000);
      const pad = 'x'.repeat(500); // 200 x ~550 bytes: more than one 64 KiB body
      const results = await Promise.all(Array.from({ length: 200 }, (_, n) => c.publish(ch, { n, pad })));
      assert.ok(bodies.length >= 2 && bodies.length <= 3, `${bodies.length} POSTs for 200 commands (largest ${Math.max(...bodies)} bytes)`);
      assert.ok(bodies.every((b) => b <= 64 * 1024), `bodies within the server's limit: ${bodies.join(', ')}`);
      await until(() => seen.length === 200, 5000, '200 publications');
      assert.deepEqual(seen, Array.from({ length: 200 }, (_, n) => n));
      const offsets = results.map((r) => r.offset);
      for (let i = 1; i < offsets.length; i++) assert.equal(offsets[i], offsets[i - 1] + 1);
    });

    test(`${name}: subscribe, publish, presence and history over the emulated transport`, async () => {
      const ch = channel();
      const c = new Kilat(server.httpUrl, { transports: [name], minReconnectDelay: 50, timeout: 4000 });
      clients.push(c);
      c.connect();
      await c.ready(5000);
      assert.equal(c.transportName, name);
      const sub = await subscribed(c, ch);
      const got = nextEvent(sub, 'publication');
      const other = await connected();
      await other.publish(ch, { via: name });
      assert.deepEqual((await got).data, { via: name });
      const own = nextEvent(sub, 'publication');
      await c.publish(ch, 'from emulated');
      assert.equal((await own).data, 'from emulated');
      assert.ok(Object.keys((await c.presence(ch)).clients).includes(c.clientId));
      assert.equal((await c.history(ch, { limit: 1 })).publications[0].data, 'from emulated');
    });
  }

});

describe('kilat server-side subscriptions', { skip: skip ?? false }, () => {
  test('a subscription made through the server API is reported on the client and recovered through connect.subs', async (t) => {
    const srv = new KilatServer();
    await srv.start();
    t.after(() => srv.stop());
    const api = async (method, body) => {
      const res = await fetch(`${srv.httpUrl}/api/${method}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
      const json = await res.json();
      return json;
    };
    const c = new Kilat(srv.wsUrl, { websocket: WebSocket, minReconnectDelay: 300, maxReconnectDelay: 300, timeout: 4000 });
    t.after(() => c.disconnect());
    c.connect();
    await c.ready(5000);
    const ch = `chat:server_side_${Date.now()}`;
    const subscribed = nextEvent(c, 'subscribed');
    const r = await api('subscribe', { user: '', channel: ch });
    assert.equal(r.error, undefined, `server API subscribe: ${JSON.stringify(r.error)}`);
    assert.equal((await subscribed).channel, ch);
    const seen = [];
    c.on('publication', (p) => p.channel === ch && seen.push(p.data));
    await api('publish', { channel: ch, data: 'one' });
    await until(() => seen.length === 1, 3000, 'server-side publication');
    c._transport._ws.terminate();
    await until(() => c.state === 'connecting', 2000, 'drop noticed');
    await api('publish', { channel: ch, data: 'two' });
    await api('publish', { channel: ch, data: 'three' });
    const again = await nextEvent(c, 'subscribed', 5000);
    assert.equal(again.channel, ch);
    assert.equal(again.recovered, true, 'recovered through connect.subs');
    await until(() => seen.length === 3, 3000, 'recovered server-side publications');
    assert.deepEqual(seen, ['one', 'two', 'three']);
  });
});

describe('kilat server restart', { skip: skip ?? false }, () => {
  test('graceful drain (SIGTERM) sends 3000 and the client reconnects to the next server', async (t) => {
    const srv = new KilatServer();
    await srv.start();
    t.after(() => srv.stop());
    const c = new Kilat(srv.wsUrl, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 300, timeout: 4000 });
    t.after(() => c.disconnect());
    c.connect();
    await c.ready(5000);
    const connecting = nextEvent(c, 'connecting', 10_000);
    const reconnected = new Promise((r) => c.on('connected', r));
    await srv.restart({ hard: false });
    const ctx = await connecting;
    assert.equal(ctx.code, 3000, `drain disconnect code (got ${ctx.code} ${ctx.reason})`);
    await reconnected;
    assert.equal(c.state, 'connected');
    assert.equal(c.transportName, 'websocket', 'issue 22: a drain does not move the client to SSE');
  });

  test('recovery after a server restart is honest: history is gone, recovered is false', async (t) => {
    const srv = new KilatServer();
    await srv.start();
    t.after(() => srv.stop());
    const mk = () => {
      const c = new Kilat(srv.wsUrl, { websocket: WebSocket, minReconnectDelay: 100, maxReconnectDelay: 300, timeout: 4000 });
      t.after(() => c.disconnect());
      return c;
    };
    const ch = `chat:restart_${Date.now()}`;
    const a = mk();
    a.connect();
    await a.ready(5000);
    const sub = a.newSubscription(ch);
    sub.subscribe();
    await sub.ready(5000);
    const seen = [];
    sub.on('publication', (p) => seen.push(p.data));
    await a.publish(ch, 'one');
    await a.publish(ch, 'two');
    await until(() => seen.length === 2, 3000, 'live publications');
    const epochBefore = sub.epoch;
    const resubscribed = nextEvent(sub, 'subscribed', 15000);
    await srv.restart(); // SIGKILL: the in-memory history and epoch are lost
    const ctx = await resubscribed;
    assert.equal(ctx.wasRecovering, true, 'the SDK asked to recover from its offset');
    assert.equal(ctx.recovered, false, 'a restarted in-memory server cannot recover: the app must reload');
    assert.notEqual(sub.epoch, epochBefore, 'a new epoch');
    // live delivery works again, and the new stream's offsets are not mistaken for duplicates
    await a.publish(ch, 'three');
    await until(() => seen.length === 3, 3000, 'publication after restart');
    assert.deepEqual(seen, ['one', 'two', 'three']);
  });
});

/** An HS256 JWT (what an application backend would mint). */
function hs256(claims, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

describe('kilat server with tokens', { skip: skip ?? false }, () => {
  const secret = 'sdk-js-test-secret';
  let srv;
  before(async () => {
    srv = await new KilatServer({ env: { KILAT_TOKEN_SECRET: secret } }).start();
  });
  after(() => srv?.stop());

  test('an expiring connection token is refreshed through getToken without a disconnect', async (t) => {
    const issued = [];
    const getToken = async () => {
      const now = Math.floor(Date.now() / 1000);
      const token = hs256({ sub: 'alice', iat: now, exp: now + 2 }, secret);
      issued.push(token);
      return token;
    };
    const c = new Kilat(srv.wsUrl, { websocket: WebSocket, getToken, minReconnectDelay: 50, timeout: 4000 });
    t.after(() => c.disconnect());
    c.connect();
    await c.ready(5000);
    const drops = [];
    c.on('disconnected', (e) => drops.push(e));
    c.on('connecting', (e) => drops.push(e));
    const errors = [];
    c.on('error', (e) => errors.push(e));
    await until(() => issued.length >= 3, 10_000, 'two token refreshes');
    assert.deepEqual(drops, [], 'refreshed in place, no reconnect');
    assert.equal(c.state, 'connected');
    assert.deepEqual(errors, []);
    const ch = `chat:tok_${Date.now()}`;
    const sub = await subscribed(c, ch);
    const p = await sub.presence();
    assert.equal(p.clients[c.clientId].user, 'alice');
  });

  test('a bad token is a terminal disconnect (no reconnect loop)', async (t) => {
    const c = new Kilat(srv.wsUrl, { websocket: WebSocket, token: hs256({ sub: 'mallory' }, 'wrong-secret'), minReconnectDelay: 50 });
    t.after(() => c.disconnect());
    const disc = nextEvent(c, 'disconnected', 5000);
    c.connect();
    const ctx = await disc;
    assert.ok(ctx.code >= 3500 && ctx.code <= 3999, `code ${ctx.code}`);
  });

  test('subscription tokens: getToken supplies one for a token-only namespace; without one it is 403', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'kilat-sdk-'));
    const config = join(dir, 'kilat.toml');
    writeFileSync(config, `[token]\nsecret = "${secret}"\n\n[node.namespaces.private]\nallow_subscribe = "token"\n`);
    const priv = new KilatServer({ args: ['-c', config] });
    await priv.start();
    t.after(() => priv.stop());
    const now = () => Math.floor(Date.now() / 1000);
    const c = new Kilat(priv.wsUrl, {
      websocket: WebSocket,
      getToken: async () => hs256({ sub: 'bob', exp: now() + 60 }, secret),
      timeout: 4000,
    });
    t.after(() => c.disconnect());
    c.connect();
    await c.ready(5000);
    const asked = [];
    const ok = c.newSubscription('private:report', {
      getToken: async ({ channel }) => {
        asked.push(channel);
        return hs256({ sub: 'bob', channel, exp: now() + 60 }, secret);
      },
    });
    ok.subscribe();
    await ok.ready(5000);
    assert.deepEqual(asked, ['private:report']);
    assert.equal(c.transportName, 'websocket');
    const denied = c.newSubscription('private:other');
    const un = nextEvent(denied, 'unsubscribed');
    denied.subscribe();
    assert.equal((await un).code, 403);
  });
});
