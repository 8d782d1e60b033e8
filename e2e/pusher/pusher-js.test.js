// pusher-js (its Node build) and the `pusher` server SDK against a spawned `kilat serve --dev`:
// public, private and presence channels authorised by a test endpoint, client events, members
// joining and leaving, sign-in and server-to-user events, the HTTP API (trigger, batch,
// channel and user queries, terminate) and the errors for a wrong key and a bad signature.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import PusherClient from 'pusher-js';

import {
  APP,
  KilatServer,
  authServer,
  clientOptions,
  connect,
  once,
  serverSdk,
  skipReason,
  subscribe,
} from './harness.js';

const skip = skipReason() ?? false;
let kilat;
let auth;
let sdk;
const clients = [];

/** The first message on `c`'s connection that satisfies `match`. */
function message(c, match, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out waiting for a message')), timeoutMs);
    const handler = (m) => {
      if (!match(m)) return;
      clearTimeout(timer);
      c.connection.unbind('message', handler);
      resolve(m);
    };
    c.connection.bind('message', handler);
  });
}

async function client(user = '') {
  const c = await connect(kilat, auth, user);
  clients.push(c);
  return c;
}

before(async () => {
  if (skip) return;
  kilat = await new KilatServer().start();
  auth = await authServer(kilat);
  sdk = serverSdk(kilat);
});

after(async () => {
  for (const c of clients) c.disconnect();
  await auth?.close();
  await kilat?.stop();
});

test('connection_established gives a socket id in NNNN.NNNN form', { skip }, async () => {
  const c = await client();
  assert.match(c.connection.socket_id, /^\d+\.\d+$/);
});

test('public channel: an event triggered with the server SDK reaches the subscriber', { skip }, async () => {
  const c = await client();
  const { channel } = await subscribe(c, 'news');
  const got = once(channel, 'headline');
  const res = await sdk.trigger('news', 'headline', { text: 'kilat speaks Pusher' });
  assert.equal(res.status, 200);
  assert.deepEqual(await got, { text: 'kilat speaks Pusher' });
});

test('trigger with socket_id leaves that socket out; batch events arrive in order', { skip }, async () => {
  const a = await client();
  const b = await client();
  const { channel: ca } = await subscribe(a, 'excl');
  const { channel: cb } = await subscribe(b, 'excl');
  const seenByA = [];
  const aGotSecond = new Promise((r) => ca.bind('e', (d) => (seenByA.push(d.n), d.n === 2 && r())));
  const bGotSecond = new Promise((r) => cb.bind('e', (d) => d.n === 2 && r()));
  await sdk.trigger('excl', 'e', { n: 1 }, { socket_id: a.connection.socket_id });
  await sdk.trigger('excl', 'e', { n: 2 });
  await Promise.all([aGotSecond, bGotSecond]);
  assert.deepEqual(seenByA, [2], 'the excluded socket did not get event 1');

  const batch = [];
  const done = new Promise((r) => cb.bind('b', (d) => (batch.push(d.i), d.i === 3 && r())));
  const res = await sdk.triggerBatch([1, 2, 3].map((i) => ({ channel: 'excl', name: 'b', data: { i } })));
  assert.equal(res.status, 200);
  await done;
  assert.deepEqual(batch, [1, 2, 3]);
});

test('private channel with auth from the endpoint; client events reach the others, not the sender', { skip }, async () => {
  const a = await client();
  const b = await client();
  const { channel: ca } = await subscribe(a, 'private-room');
  const { channel: cb } = await subscribe(b, 'private-room');
  const aGot = [];
  ca.bind('client-typing', (d) => aGot.push(d));
  const bGot = once(cb, 'client-typing');
  assert.ok(ca.trigger('client-typing', { who: 'a' }));
  assert.deepEqual(await bGot, { who: 'a' });
  // B answers; events in one channel keep their order, so had A's own event come back it
  // would be in aGot before B's.
  const aGotB = once(ca, 'client-typing');
  cb.trigger('client-typing', { who: 'b' });
  assert.deepEqual(await aGotB, { who: 'b' });
  assert.deepEqual(aGot, [{ who: 'b' }]);
});

test('client events on a public channel are refused with pusher:error', { skip }, async () => {
  const a = await client();
  const { channel } = await subscribe(a, 'public-room');
  const error = once(a.connection, 'error');
  channel.trigger('client-x', {});
  const e = await error;
  assert.match(e.data.message, /private- and presence-/);
});

test('a bad signature gets 4009 and does not disturb a bystander', { skip }, async () => {
  const forger = await authServer(kilat, { secret: 'not-the-secret' });
  try {
    const bad = new PusherClient(APP.key, clientOptions(kilat, forger));
    clients.push(bad);
    await once(bad.connection, 'connected');
    const bystander = await client();
    const { channel: ok } = await subscribe(bystander, 'private-calm');
    const error = once(bad.connection, 'error');
    bad.subscribe('private-calm');
    const e = await error;
    assert.equal(e.data.code, 4009);
    assert.match(e.data.message, /Invalid signature/);
    assert.equal(bad.connection.state, 'connected', 'the connection stays open');
    const got = once(ok, 'still');
    await sdk.trigger('private-calm', 'still', { ok: true });
    assert.deepEqual(await got, { ok: true });
  } finally {
    await forger.close();
  }
});

test('a wrong app key gets pusher:error 4001', { skip }, async () => {
  const c = new PusherClient('no-such-key', clientOptions(kilat, auth));
  clients.push(c);
  const e = await once(c.connection, 'error');
  // pusher-js reports the pusher:error of a refused handshake inside a WebSocketError.
  assert.equal(e.error.data.code, 4001, JSON.stringify(e));
  assert.match(e.error.data.message, /App key/);
  c.disconnect();
});

test('presence: members, member_added with user_info, member_removed; users and counts over the API', { skip }, async () => {
  const a = await client('1');
  const { channel: ca, result: membersA } = await subscribe(a, 'presence-lobby');
  assert.equal(membersA.count, 1);
  assert.deepEqual(membersA.me, { id: '1', info: { name: 'user 1' } });

  const added = once(ca, 'pusher:member_added');
  const b = await client('2');
  const { result: membersB } = await subscribe(b, 'presence-lobby');
  assert.deepEqual(await added, { id: '2', info: { name: 'user 2' } });
  assert.equal(membersB.count, 2);
  const ids = [];
  membersB.each((m) => ids.push(m.id));
  assert.deepEqual(ids.sort(), ['1', '2']);

  const users = await (await sdk.get({ path: '/channels/presence-lobby/users' })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['1', '2']);
  const info = await (
    await sdk.get({ path: '/channels/presence-lobby', params: { info: 'user_count,subscription_count' } })
  ).json();
  assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 2 });
  const list = await (
    await sdk.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })
  ).json();
  assert.deepEqual(list.channels['presence-lobby'], { user_count: 2 });

  const removed = once(ca, 'pusher:member_removed');
  b.unsubscribe('presence-lobby');
  assert.deepEqual(await removed, { id: '2', info: { name: 'user 2' } });
});

test('sign-in, server-to-user events, terminate_connections', { skip }, async () => {
  const c = await client('7');
  const subscribed = message(
    c,
    (m) => m.event === 'pusher_internal:subscription_succeeded' && m.channel === '#server-to-user-7',
  );
  c.signin();
  await subscribed;
  const note = new Promise((r) => c.user.bind('note', r));
  await sdk.sendToUser('7', 'note', { hello: 'user 7' });
  assert.deepEqual(await note, { hello: 'user 7' });

  const closed = once(c.connection, 'error');
  const res = await sdk.terminateUserConnections('7');
  assert.equal(res.status, 200);
  const e = await closed;
  assert.equal(e.data.code, 4009);
});

test('the HTTP API refuses a bad signature and an old timestamp', { skip }, async () => {
  const forged = serverSdk(kilat, { secret: 'wrong' });
  await assert.rejects(forged.trigger('news', 'x', {}), (e) => e.status === 401 && /Invalid signature/.test(e.body));
  const url = `${kilat.httpUrl}/apps/app-id/channels?auth_key=app-key&auth_timestamp=1000&auth_version=1.0&auth_signature=00`;
  const res = await fetch(url);
  assert.equal(res.status, 401);
  assert.match(await res.text(), /Timestamp expired/);
});

test('cache channels: the last event on subscribe, pusher:cache_miss when there is none', { skip }, async () => {
  await sdk.trigger('cache-prices', 'price', { p: 1 });
  await sdk.trigger('cache-prices', 'price', { p: 2 });
  const c = await client();
  const channel = c.subscribe('cache-prices');
  assert.deepEqual(await once(channel, 'price'), { p: 2 });

  const empty = c.subscribe('cache-empty');
  await once(empty, 'pusher:cache_miss');
});

test('presence: a user on two connections is added once and removed after its last one', { skip }, async () => {
  const watcher = await client('20');
  const { channel } = await subscribe(watcher, 'presence-tabs');
  const events = [];
  channel.bind('pusher:member_added', (m) => events.push(`added ${m.id}`));
  channel.bind('pusher:member_removed', (m) => events.push(`removed ${m.id}`));
  const tab1 = await client('21');
  const tab2 = await client('21');
  const firstAdded = once(channel, 'pusher:member_added');
  await subscribe(tab1, 'presence-tabs');
  await firstAdded;
  const { result: members } = await subscribe(tab2, 'presence-tabs');
  assert.equal(members.count, 2, 'the second tab sees two users');
  tab1.unsubscribe('presence-tabs');
  // One connection's messages are handled in order: once tab1's next subscription succeeded,
  // its leave (and any member event it published) is done; a marker user joining after that
  // orders after anything tab1 caused in the channel.
  await subscribe(tab1, 'sync-after-leave');
  const marker = once(channel, 'pusher:member_added');
  const other = await client('22');
  await subscribe(other, 'presence-tabs');
  await marker;
  assert.deepEqual(events, ['added 21', 'added 22'], 'no removal while tab2 is there');
  const removed = once(channel, 'pusher:member_removed');
  tab2.unsubscribe('presence-tabs');
  assert.deepEqual(await removed, { id: '21', info: { name: 'user 21' } });
  assert.equal(channel.members.count, 2);
});
