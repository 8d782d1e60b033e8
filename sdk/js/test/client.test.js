// The client driven through an in-memory WebSocket double (see fake.js): no server needed.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Kilat, KilatError, ErrorCode } from '../src/kilat.js';
import { resolveEndpoints } from '../src/transports.js';
import { fakeWebSocket, autoConnect, until, nextEvent, sleep } from './fake.js';

const URL = 'ws://test.invalid/connection/websocket';
const fast = { minReconnectDelay: 5, maxReconnectDelay: 20 };

async function connected(server, options = {}) {
  const WS = fakeWebSocket({ server });
  const client = new Kilat(URL, { websocket: WS, ...fast, ...options });
  client.connect();
  await client.ready(2000);
  return { client, WS, socket: WS.last() };
}

test('endpoints are derived from a base URL or a transport URL', () => {
  assert.deepEqual(resolveEndpoints('http://h:8000'), { ws: 'ws://h:8000/connection/websocket', http: 'http://h:8000' });
  assert.deepEqual(resolveEndpoints('wss://h/app/connection/websocket'), {
    ws: 'wss://h/app/connection/websocket',
    http: 'https://h/app',
  });
});

test('connect is the first frame with id 1; state goes connecting -> connected', async () => {
  const states = [];
  const WS = fakeWebSocket({ server: autoConnect() });
  const client = new Kilat(URL, { websocket: WS, token: 't0k', name: 'unit', data: { a: 1 } });
  client.on('state', (s) => states.push(s.newState));
  const conn = nextEvent(client, 'connected');
  client.connect();
  assert.equal(client.state, 'connecting');
  const ctx = await conn;
  assert.equal(ctx.client, 'c1');
  assert.equal(ctx.transport, 'websocket');
  assert.deepEqual(WS.last().frames()[0], { id: 1, connect: { token: 't0k', name: 'unit', version: '0.1.0', data: { a: 1 } } });
  assert.deepEqual(states, ['connecting', 'connected']);
  client.disconnect();
  assert.equal(client.state, 'disconnected');
});

test('commands issued in the same tick go out as one message with increasing ids', async () => {
  const { client, socket } = await connected(
    autoConnect({
      publish: (f, s) => queueMicrotask(() => s.push({ id: f.id, publish: { offset: f.id } })),
      presence: (f, s) => queueMicrotask(() => s.push({ id: f.id, presence: { clients: {} } })),
    }),
  );
  const before = socket.sent.length;
  const [a, b, c] = await Promise.all([
    client.publish('ch', { n: 1 }),
    client.publish('ch', { n: 2 }),
    client.presence('ch'),
  ]);
  assert.equal(socket.sent.length, before + 1, 'one message for three commands');
  const lines = socket.sent[before].split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((f) => f.id), [2, 3, 4]);
  assert.deepEqual(lines[0], { id: 2, publish: { channel: 'ch', data: { n: 1 } } });
  assert.deepEqual([a, b, c], [{ offset: 2 }, { offset: 3 }, { clients: {} }]);
  client.disconnect();
});

test('replies are matched by id, in any order and inside one batched message', async () => {
  const held = [];
  const { client, socket } = await connected(autoConnect({ rpc: (f) => held.push(f) }));
  const p1 = client.rpc('one', {});
  const p2 = client.rpc('two', {});
  await until(() => held.length === 2);
  socket.push({ id: held[1].id, rpc: { data: 'second' } }, { id: held[0].id, rpc: { data: 'first' } });
  assert.deepEqual(await p1, { data: 'first' });
  assert.deepEqual(await p2, { data: 'second' });
  client.disconnect();
});

test('an error reply rejects with a KilatError carrying code, message, temporary', async () => {
  const { client } = await connected(
    autoConnect({
      publish: (f, s) => s.push({ id: f.id, error: { code: 403, message: 'permission denied', temporary: false } }),
      history: (f, s) => s.push({ id: f.id, error: { code: 503, message: 'unavailable', temporary: true } }),
    }),
  );
  await assert.rejects(client.publish('x', 1), (e) => e instanceof KilatError && e.code === 403 && !e.temporary && e.message === 'permission denied');
  await assert.rejects(client.history('x', { limit: 1 }), (e) => e.code === 503 && e.temporary === true);
  client.disconnect();
});

test('a command without reply times out; the late reply is ignored', async () => {
  const held = [];
  const { client, socket } = await connected(autoConnect({ presence_stats: (f) => held.push(f) }), { timeout: 50 });
  await assert.rejects(client.presenceStats('x'), (e) => e.code === ErrorCode.TIMEOUT);
  socket.push({ id: held[0].id, presence_stats: { num_clients: 1, num_users: 1 } }); // no crash
  assert.equal(client.state, 'connected');
  client.disconnect();
});

test('calls made while connecting wait for the connection; while disconnected they reject', async () => {
  const WS = fakeWebSocket({ server: autoConnect({ publish: (f, s) => s.push({ id: f.id, publish: {} }) }) });
  const client = new Kilat(URL, { websocket: WS });
  await assert.rejects(client.publish('x', 1), (e) => e.code === ErrorCode.CLIENT_DISCONNECTED);
  client.connect();
  assert.deepEqual(await client.publish('x', 1), {});
  client.disconnect();
});

test('the server ping {} is answered with {}', async () => {
  const { client, socket } = await connected(autoConnect());
  socket.push({});
  await until(() => socket.frames().some((f) => Object.keys(f).length === 0));
  client.disconnect();
});

test('send() has no id and expects no reply; history passes since/limit/reverse', async () => {
  const { client, socket } = await connected(autoConnect({ history: (f, s) => s.push({ id: f.id, history: { publications: [], offset: 0, epoch: 'e' } }) }));
  await client.send({ hello: 1 });
  await client.history('ch', { limit: 5, since: { offset: 3, epoch: 'e' }, reverse: true });
  const frames = socket.frames();
  assert.ok(frames.some((f) => f.send && f.id === undefined && f.send.data.hello === 1));
  const h = frames.find((f) => f.history);
  assert.deepEqual(h.history, { channel: 'ch', limit: 5, since: { offset: 3, epoch: 'e' }, reverse: true });
  client.disconnect();
});

test('ids are u32 and wrap from 4294967295 back to 1', () => {
  const client = new Kilat(URL, { websocket: fakeWebSocket() });
  client._nextId = 0xffffffff;
  assert.equal(client._allocId(), 0xffffffff);
  assert.equal(client._allocId(), 1);
});

test('message pushes are emitted on the client', async () => {
  const { client, socket } = await connected(autoConnect());
  const got = nextEvent(client, 'message');
  socket.push({ push: { message: { data: { x: 1 } } } });
  assert.deepEqual(await got, { data: { x: 1 } });
  client.disconnect();
});

test('close codes 3000-3499 and 1006 reconnect; 3500-3999 do not', async () => {
  const { client, WS } = await connected(autoConnect());
  const connecting = nextEvent(client, 'connecting');
  WS.last().serverClose(3001, 'slow consumer');
  assert.deepEqual(await connecting, { code: 3001, reason: 'slow consumer' });
  await client.ready(2000);
  assert.equal(WS.instances.length, 2);
  WS.last().serverClose(1006);
  await nextEvent(client, 'connecting');
  await client.ready(2000);
  assert.equal(WS.instances.length, 3);
  const disc = nextEvent(client, 'disconnected');
  WS.last().serverClose(3503, 'forced');
  assert.deepEqual(await disc, { code: 3503, reason: 'forced' });
  await sleep(60);
  assert.equal(client.state, 'disconnected');
  assert.equal(WS.instances.length, 3, 'no reconnect after 35xx');
});

test('a disconnect push decides even when the socket closes with a generic code', async () => {
  const { client, socket } = await connected(autoConnect());
  const disc = nextEvent(client, 'disconnected');
  socket.push({ push: { disconnect: { code: 3501, reason: 'unauthorized', reconnect: false } } });
  socket.serverClose(1000);
  assert.deepEqual(await disc, { code: 3501, reason: 'unauthorized' });
});

test('pending commands reject with a temporary error when the transport drops', async () => {
  const { client, socket } = await connected(autoConnect({ rpc: () => {} }));
  const p = client.rpc('m', {});
  await sleep(5);
  socket.serverClose(3000, 'shutdown');
  await assert.rejects(p, (e) => e.code === ErrorCode.TRANSPORT_CLOSED && e.temporary);
  client.disconnect();
});

test('refresh push: getToken is called and a refresh command sent', async () => {
  let calls = 0;
  const getToken = async () => `tok${++calls}`;
  const { client, socket } = await connected(autoConnect({ refresh: (f, s) => s.push({ id: f.id, refresh: { expires: true, ttl: 600 } }) }), { getToken });
  assert.equal(socket.frames()[0].connect.token, 'tok1');
  socket.push({ push: { refresh: {} } });
  await until(() => socket.frames().some((f) => f.refresh));
  assert.deepEqual(socket.frames().find((f) => f.refresh).refresh, { token: 'tok2' });
  client.disconnect();
});

test('after disconnect 3005 (token expired) the reconnect fetches a new token', async () => {
  let calls = 0;
  const { client, WS } = await connected(autoConnect(), { getToken: async () => `tok${++calls}` });
  WS.last().serverClose(3005, 'token expired');
  await nextEvent(client, 'connecting');
  await client.ready(2000);
  assert.equal(WS.last().frames()[0].connect.token, 'tok2');
  // an ordinary reconnect keeps the still-valid token
  WS.last().serverClose(3000);
  await nextEvent(client, 'connecting');
  await client.ready(2000);
  assert.equal(WS.last().frames()[0].connect.token, 'tok2');
  client.disconnect();
});

test('a connect error 410 refreshes the token and retries', async () => {
  let calls = 0;
  const WS = fakeWebSocket({
    server: (f, s) => {
      if (!f.connect) return;
      if (f.connect.token === 'old') s.push({ id: f.id, error: { code: 410, message: 'token expired', temporary: false } });
      else s.push({ id: f.id, connect: { client: 'ok' } });
    },
  });
  const client = new Kilat(URL, { websocket: WS, ...fast, token: 'old', getToken: async () => `new${++calls}` });
  client.connect();
  await client.ready(2000).catch(() => {});
  await until(() => client.state === 'connected');
  assert.equal(WS.last().frames()[0].connect.token, 'new1');
  client.disconnect();
});

test('a non-temporary connect error ends in disconnected without retry', async () => {
  const WS = fakeWebSocket({ server: (f, s) => f.connect && s.push({ id: f.id, error: { code: 401, message: 'unauthorized' } }) });
  const client = new Kilat(URL, { websocket: WS, ...fast });
  const disc = nextEvent(client, 'disconnected');
  const err = nextEvent(client, 'error');
  client.connect();
  assert.equal((await err).error.code, 401);
  assert.equal((await disc).code, 3501);
  await sleep(40);
  assert.equal(WS.instances.length, 1);
});

test('no server ping within ping + maxServerPingDelay: the client reconnects', async () => {
  const WS = fakeWebSocket({ server: autoConnect({}, { ping: 0.02 }) });
  const client = new Kilat(URL, { websocket: WS, ...fast, maxServerPingDelay: 10 });
  client.connect();
  await client.ready(2000);
  const c = await nextEvent(client, 'connecting');
  assert.equal(c.reason, 'no ping');
  await client.ready(2000);
  client.disconnect();
});

test("the browser 'online' event ends a backoff wait at once", async (t) => {
  const target = new EventTarget();
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  t.after(() => {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  });
  const WS = fakeWebSocket({ server: autoConnect() });
  const client = new Kilat(URL, { websocket: WS, minReconnectDelay: 60_000, maxReconnectDelay: 60_000 });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  WS.last().serverClose(1006);
  await nextEvent(client, 'connecting');
  await sleep(20);
  assert.equal(WS.instances.length, 1, 'waiting out a 60 s backoff');
  target.dispatchEvent(new Event('online'));
  await client.ready(2000);
  assert.equal(WS.instances.length, 2);
});

test('a connect error 410 without getToken is terminal (3501), not a reconnect loop', async (t) => {
  const WS = fakeWebSocket({ server: (f, s) => f.connect && s.push({ id: f.id, error: { code: 410, message: 'token expired' } }) });
  const client = new Kilat(URL, { websocket: WS, ...fast, token: 'expired' });
  t.after(() => client.disconnect());
  const disc = nextEvent(client, 'disconnected');
  client.connect();
  assert.deepEqual(await disc, { code: 3501, reason: 'token expired' });
  await sleep(40);
  assert.equal(WS.instances.length, 1);
});

/**
 * A server that accepts every connect and ends the session at once with `code`, as a kilat
 * does with 3001 when a recovery reply is too large. Returns the fake WebSocket class.
 */
function dropsEverySession(code, reason) {
  return fakeWebSocket({
    server: (f, s) => {
      if (!f.connect) return;
      s.push({ id: f.id, connect: { client: 'c', ping: 25 } });
      s.serverClose(code, reason);
    },
  });
}

/** Gaps (ms) between the sockets the client opened. */
const gaps = (WS) => WS.instances.slice(1).map((s, i) => s.createdAt - WS.instances[i].createdAt);

test('issue 20: the backoff grows across reconnects that end the same way (no loop at the floor)', async (t) => {
  t.mock.method(Math, 'random', () => 0.9999); // every wait is its window's ceiling
  const WS = dropsEverySession(3001, 'slow consumer');
  const client = new Kilat(URL, { websocket: WS, minReconnectDelay: 20, maxReconnectDelay: 5000 });
  t.after(() => client.disconnect());
  client.connect();
  await until(() => WS.instances.length >= 6, 5000, 'six sessions');
  const got = gaps(WS).slice(0, 5);
  // each session connected and was dropped at once: attempts 0..4, windows 20, 40, 80, 160, 320
  got.forEach((gap, i) => assert.ok(gap >= 20 * 2 ** i - 1, `gap ${i}: ${got.map(Math.round)}`));
});

test('the backoff starts over after a connection stayed up for backoffResetAfter', async (t) => {
  t.mock.method(Math, 'random', () => 0.9999);
  let sessions = 0;
  const WS = fakeWebSocket({
    server: (f, s) => {
      if (!f.connect) return;
      s.push({ id: f.id, connect: { client: 'c', ping: 25 } });
      if (++sessions <= 2) s.serverClose(3001, 'slow consumer'); // the third one stays up
    },
  });
  const client = new Kilat(URL, { websocket: WS, minReconnectDelay: 100, maxReconnectDelay: 5000, backoffResetAfter: 150 });
  t.after(() => client.disconnect());
  client.connect();
  await until(() => sessions === 3 && client.state === 'connected', 5000, 'a third session that stays');
  await sleep(200); // longer than backoffResetAfter
  const closed = performance.now();
  WS.last().serverClose(3001, 'slow consumer');
  await until(() => WS.instances.length >= 4, 5000, 'a fourth session');
  const [first, second] = gaps(WS);
  const afterHealthy = WS.instances[3].createdAt - closed;
  assert.ok(first >= 99 && second >= 199, `the backoff grew while sessions were dropped at once: ${first}, ${second}`);
  assert.ok(afterHealthy >= 99 && afterHealthy < 199, `reset after a healthy connection: ${afterHealthy}`);
});

/** Measures the wait between a disconnect push with `delay_ms: hint` and the next socket. */
async function waitAfterHint(t, random, hint, options) {
  t.mock.method(Math, 'random', () => random);
  const WS = fakeWebSocket({ server: autoConnect() });
  const client = new Kilat(URL, { websocket: WS, ...options });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  const pushed = performance.now();
  WS.last().push({ push: { disconnect: { code: 3000, reason: 'shutdown', reconnect: true, delay_ms: hint } } });
  await client.ready(10_000);
  assert.equal(WS.instances.length, 2);
  return WS.last().createdAt - pushed;
}

test('issue 18: a delay_ms hint spreads the reconnect over [floor, floor + hint]', async (t) => {
  const options = { minReconnectDelay: 20, maxReconnectDelay: 5000 };
  const top = await waitAfterHint(t, 0.9999, 400, options);
  assert.ok(top >= 20 + 399, `top of the window: ${top} ms`);
  assert.ok(top < 2000, `top of the window: ${top} ms`);
});

test('issue 18: the random share of delay_ms can be zero, leaving the backoff floor', async (t) => {
  const bottom = await waitAfterHint(t, 0, 400, { minReconnectDelay: 20, maxReconnectDelay: 5000 });
  assert.ok(bottom >= 19 && bottom < 300, `bottom of the window: ${bottom} ms`);
});

test('issue 18: a delay_ms larger than maxReconnectDelay is capped at it', async (t) => {
  const capped = await waitAfterHint(t, 0.9999, 4_000_000_000, { minReconnectDelay: 20, maxReconnectDelay: 300 });
  assert.ok(capped >= 299 && capped < 1500, `capped: ${capped} ms`);
});
