// Transport fallback and the emulated transports (SSE, HTTP streaming) over a fetch double.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Kilat } from '../src/kilat.js';
import { PROVEN_OPEN_RETRIES } from '../src/client.js';
import { MAX_EMULATION_BODY } from '../src/transports.js';
import { fakeWebSocket, fakeFetch, until, nextEvent } from './fake.js';

const URL = 'http://test.invalid';
const fast = { minReconnectDelay: 5, maxReconnectDelay: 20 };

/** A server for the fetch double: connect result with session/node, echo of publish, pong log. */
function emulatedServer(log) {
  return (frame, conn) => {
    log.push(frame);
    if (frame.connect) conn.push({ id: frame.id, connect: { client: 'sse-client', ping: 25, session: conn.session, node: conn.node } });
    else if (frame.publish) conn.push({ id: frame.id, publish: { offset: 1 } }, { push: { channel: frame.publish.channel, pub: { data: frame.publish.data, offset: 1 } } });
    else if (frame.subscribe) conn.push({ id: frame.id, subscribe: { recoverable: true, epoch: 'e', offset: 0, recovered: false, publications: [] } });
  };
}

for (const name of ['sse', 'http_stream']) {
  test(`${name}: connect in the opening request, commands via /connection/emulation, replies on the stream`, async (t) => {
    const log = [];
    const fetch = fakeFetch({ server: emulatedServer(log) });
    const client = new Kilat(URL, { transports: [name], fetch, ...fast });
    t.after(() => client.disconnect());
    client.connect();
    await client.ready(2000);
    assert.equal(client.transportName, name);
    const open = fetch.state.requests[0];
    if (name === 'sse') {
      assert.equal(open.method, 'GET');
      assert.match(open.url, /^http:\/\/test\.invalid\/connection\/sse\?connect=/);
      assert.deepEqual(JSON.parse(new globalThis.URL(open.url).searchParams.get('connect')).connect.name, 'js');
    } else {
      assert.equal(open.method, 'POST');
      assert.equal(open.url, 'http://test.invalid/connection/stream');
      assert.equal(open.body.id, 1);
    }
    const sub = client.newSubscription('room');
    const got = nextEvent(sub, 'publication');
    sub.subscribe();
    await sub.ready(1000);
    assert.deepEqual(await client.publish('room', { hi: 1 }), { offset: 1 });
    assert.deepEqual((await got).data, { hi: 1 });
    const posts = fetch.state.requests.filter((r) => r.kind === 'emulation');
    assert.deepEqual(posts.map((p) => Object.keys(p.body.command).find((k) => k !== 'id')), ['subscribe', 'publish']);
    assert.equal(posts[0].body.session, 's1');
    assert.equal(posts[0].body.node, 'n1');
    // the application ping is answered through the emulation endpoint too
    fetch.state.conns[0].push({});
    await until(() => log.some((f) => Object.keys(f).length === 0));
  });
}

test('fallback order: websocket refused -> sse', async (t) => {
  const WS = fakeWebSocket({ refuse: true });
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { websocket: WS, fetch, ...fast });
  t.after(() => client.disconnect());
  const connected = nextEvent(client, 'connected');
  client.connect();
  assert.equal((await connected).transport, 'sse');
  assert.equal(WS.instances.length, 1);
  assert.equal(WS.instances[0].url, 'ws://test.invalid/connection/websocket');
});

test('a WebSocket that hangs without opening falls back after the timeout', async (t) => {
  const WS = fakeWebSocket({ hang: true });
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { websocket: WS, fetch, timeout: 100, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  assert.equal(client.transportName, 'sse');
  assert.equal(WS.instances[0].closedBy?.byClient, true, 'the hanging socket was closed');
});

test('fallback order: websocket refused, sse 404 -> http_stream', async (t) => {
  const WS = fakeWebSocket({ refuse: true });
  const fetch = fakeFetch({ server: emulatedServer([]), status: { sse: 404 } });
  const client = new Kilat(URL, { websocket: WS, fetch, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  assert.equal(client.transportName, 'http_stream');
  assert.deepEqual(fetch.state.requests.map((r) => r.kind), ['sse', 'stream']);
});

test('no WebSocket implementation at all (plain Node 20) falls back to sse', async (t) => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  t.after(() => (globalThis.WebSocket = saved));
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { fetch, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  assert.equal(client.transportName, 'sse');
});

test('when every transport fails the client backs off and starts again from the first', async (t) => {
  const WS = fakeWebSocket({ refuse: true });
  const fetch = fakeFetch({ status: { sse: 503, stream: 503 } });
  const client = new Kilat(URL, { websocket: WS, fetch, ...fast });
  t.after(() => client.disconnect());
  const errors = [];
  client.on('error', (e) => errors.push(e.type));
  client.connect();
  await until(() => WS.instances.length >= 3, 3000, 'three rounds');
  assert.equal(client.state, 'connecting');
  assert.ok(errors.includes('transport'));
  WS.refuse = false;
  WS.server = (f, s) => f.connect && s.push({ id: f.id, connect: { client: 'finally' } });
  await client.ready(3000);
  assert.equal(client.transportName, 'websocket');
});

test('a stream that ends after connecting triggers a reconnect', async (t) => {
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { transports: ['http_stream'], fetch, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  const connecting = nextEvent(client, 'connecting');
  fetch.state.conns[0].end();
  assert.equal((await connecting).code, 1, 'SDK code 1: transport closed');
  await client.ready(2000);
  assert.equal(fetch.state.conns.length, 2);
});

test('a disconnect push on an emulated transport with a 35xx code stops reconnecting', async (t) => {
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { transports: ['sse'], fetch, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  const disc = nextEvent(client, 'disconnected');
  fetch.state.conns[0].push({ push: { disconnect: { code: 3504, reason: 'banned', reconnect: false } } });
  assert.deepEqual(await disc, { code: 3504, reason: 'banned' });
  assert.equal(fetch.state.conns[0].closed, true, 'stream aborted by the client');
});

test('an open transport without a connect reply is retried with backoff, not skipped', async (t) => {
  const WS = fakeWebSocket({ server: () => {} }); // opens, never answers
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { websocket: WS, fetch, timeout: 50, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await until(() => WS.instances.length >= 2, 2000, 'a second websocket attempt');
  assert.equal(fetch.state.requests.length, 0, 'no fallback to sse');
  assert.equal(client.state, 'connecting');
});

test('http_stream: a last line without a newline is still delivered when the body ends', async (t) => {
  const enc = new TextEncoder();
  const fetch = async (url) => {
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(enc.encode('{"id":1,"connect":{"client":"x","session":"s","node":"n"}}\n'));
        c.enqueue(enc.encode('{"push":{"disconnect":{"code":3503,"reason":"bye","reconnect":false}}}'));
        c.close();
      },
    });
    assert.match(url, /connection\/stream$/);
    return new Response(stream, { status: 200 });
  };
  const client = new Kilat(URL, { transports: ['http_stream'], fetch, ...fast });
  t.after(() => client.disconnect());
  const disc = nextEvent(client, 'disconnected');
  client.connect();
  assert.deepEqual(await disc, { code: 3503, reason: 'bye' });
});

test('issue 22: a WebSocket that worked and then fails to open (drain, dead node) is retried, not replaced by SSE', async (t) => {
  const WS = fakeWebSocket({ server: (f, s) => f.connect && s.push({ id: f.id, connect: { client: 'ws' } }) });
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { websocket: WS, fetch, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  assert.equal(client.transportName, 'websocket');
  // the node drains: 3000, and its listener refuses the reconnects for a while
  WS.refuse = true;
  WS.last().serverClose(3000, 'shutdown');
  await until(() => WS.instances.length >= 4, 3000, 'three refused reconnects');
  assert.equal(fetch.state.requests.length, 0, 'no SSE attempt while the proven WebSocket is retried');
  WS.refuse = false;
  await client.ready(3000);
  assert.equal(client.transportName, 'websocket');
  assert.equal(fetch.state.requests.length, 0);
});

test('a proven WebSocket that keeps failing to open while SSE works is given up after PROVEN_OPEN_RETRIES rounds', async (t) => {
  const WS = fakeWebSocket({ server: (f, s) => f.connect && s.push({ id: f.id, connect: { client: 'ws' } }) });
  const fetch = fakeFetch({ server: emulatedServer([]) });
  const client = new Kilat(URL, { websocket: WS, fetch, ...fast });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  WS.refuse = true; // e.g. the network changed to one whose proxy drops upgrades
  const reconnected = new Promise((resolve) => client.on('connected', resolve));
  WS.last().serverClose(1006);
  assert.equal((await reconnected).transport, 'sse');
  assert.equal(WS.instances.length, 1 + PROVEN_OPEN_RETRIES + 1, 'the retries, then one more round that falls through');
});

test('one code for "transport closed" on every transport: a WebSocket close 1006 and an ended stream both report 1', async (t) => {
  const codes = {};
  for (const name of ['websocket', 'sse', 'http_stream']) {
    const answer = emulatedServer([]);
    const WS = fakeWebSocket({ server: (f, s) => answer(f, s) });
    const fetch = fakeFetch({ server: answer });
    const client = new Kilat(URL, { websocket: WS, fetch, transports: [name], ...fast });
    t.after(() => client.disconnect());
    client.connect();
    await client.ready(2000);
    const sub = client.newSubscription('room');
    sub.subscribe();
    await sub.ready(1000);
    const connecting = nextEvent(client, 'connecting');
    const subscribing = nextEvent(sub, 'subscribing');
    if (name === 'websocket') WS.last().serverClose(1006);
    else fetch.state.conns[0].end();
    codes[name] = [(await connecting).code, (await subscribing).code];
  }
  assert.deepEqual(codes, { websocket: [1, 1], sse: [1, 1], http_stream: [1, 1] });
});

for (const name of ['sse', 'http_stream']) {
  test(`${name}: commands issued in one tick go out in one emulation POST, split only at the body limit`, async (t) => {
    const log = [];
    const fetch = fakeFetch({ server: emulatedServer(log) });
    const client = new Kilat(URL, { transports: [name], fetch, ...fast });
    t.after(() => client.disconnect());
    client.connect();
    await client.ready(2000);
    const posts = () => fetch.state.requests.filter((r) => r.kind === 'emulation');
    const results = await Promise.all([client.publish('a', 1), client.publish('b', 2), client.publish('c', 3)]);
    assert.deepEqual(results, [{ offset: 1 }, { offset: 1 }, { offset: 1 }]);
    assert.equal(posts().length, 1, 'three commands, one POST');
    const lines = posts()[0].body.command.split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((f) => f.publish.channel), ['a', 'b', 'c']);
    // 10 x 20 KB: as few POSTs as fit under the server's 64 KiB body limit, in order
    const big = 'x'.repeat(20_000);
    await Promise.all(Array.from({ length: 10 }, (_, i) => client.publish(`big${i}`, big)));
    const bigPosts = fetch.state.requests.filter((r) => r.kind === 'emulation').slice(1);
    assert.equal(bigPosts.length, 4, 'three per POST, then the last one');
    for (const p of bigPosts) assert.ok(new TextEncoder().encode(JSON.stringify(p.body)).length <= MAX_EMULATION_BODY);
    const channels = log.filter((f) => f.publish?.channel.startsWith('big')).map((f) => f.publish.channel);
    assert.deepEqual(channels, Array.from({ length: 10 }, (_, i) => `big${i}`));
  });
}
