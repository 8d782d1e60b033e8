// Subscriptions, recovery and de-duplication, driven through the in-memory WebSocket double.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Kilat, ErrorCode } from '../src/kilat.js';
import { fakeWebSocket, until, nextEvent, sleep } from './fake.js';

const URL = 'ws://test.invalid/connection/websocket';
const fast = { minReconnectDelay: 5, maxReconnectDelay: 20 };

/**
 * A scriptable server: answers connect; `onSubscribe(frame, socket, n)` answers subscribes
 * (default: empty result at epoch "e1", offset 0). Records every frame.
 */
function scripted({ onSubscribe, onOther, connectResult = {} } = {}) {
  let subscribes = 0;
  let connects = 0;
  return (frame, socket) => {
    if (frame.connect) {
      connects++;
      socket.push({ id: frame.id, connect: { client: `c${connects}`, ping: 25, ...connectResult } });
    } else if (frame.subscribe) {
      subscribes++;
      if (onSubscribe) onSubscribe(frame, socket, subscribes);
      else socket.push({ id: frame.id, subscribe: { recoverable: true, epoch: 'e1', offset: 0, recovered: false, publications: [] } });
    } else if (frame.unsubscribe) {
      socket.push({ id: frame.id, unsubscribe: {} });
    } else if (onOther) onOther(frame, socket);
  };
}

async function setup(t, server, options = {}) {
  const WS = fakeWebSocket({ server });
  const client = new Kilat(URL, { websocket: WS, ...fast, ...options });
  t.after(() => client.disconnect());
  client.connect();
  await client.ready(2000);
  return { client, WS };
}

const pub = (channel, data, offset) => ({ push: { channel, pub: { data, offset } } });

test('first subscribe asks for a position (recover without offset); publications advance it', async (t) => {
  const { client, WS } = await setup(t, scripted());
  const sub = client.newSubscription('chat:a', { joinLeave: true, data: { x: 1 } });
  const got = [];
  sub.on('publication', (p) => got.push(p.offset));
  const subscribed = nextEvent(sub, 'subscribed');
  sub.subscribe();
  assert.equal(sub.state, 'subscribing');
  const ctx = await subscribed;
  assert.equal(ctx.recovered, false);
  assert.equal(ctx.wasRecovering, false);
  const frame = WS.last().frames().find((f) => f.subscribe);
  assert.deepEqual(frame.subscribe, { channel: 'chat:a', data: { x: 1 }, join_leave: true, recover: true });
  WS.last().push(pub('chat:a', 'one', 1), pub('chat:a', 'one again', 1), pub('chat:a', 'two', 2));
  assert.deepEqual(got, [1, 2], 'the duplicate offset 1 is dropped');
  assert.equal(sub.offset, 2);
  assert.equal(sub.epoch, 'e1');
});

test('reconnect: every subscription resubscribes in one message with recover, offset, epoch', async (t) => {
  const { client, WS } = await setup(t, scripted({
    onSubscribe: (f, s) => s.push({ id: f.id, subscribe: { recoverable: true, epoch: 'e1', offset: 10, recovered: Boolean(f.subscribe.offset), publications: [] } }),
  }));
  const a = client.newSubscription('a');
  const b = client.newSubscription('b');
  a.subscribe();
  b.subscribe();
  await Promise.all([a.ready(1000), b.ready(1000)]);
  const messagesWithSubscribes = WS.last().sent.filter((m) => m.includes('"subscribe"'));
  assert.equal(messagesWithSubscribes.length, 1, 'both subscribes batched');
  WS.last().serverClose(3001, 'slow');
  await until(() => a.state === 'subscribing' && b.state === 'subscribing');
  const [ca, cb] = await Promise.all([nextEvent(a, 'subscribed'), nextEvent(b, 'subscribed')]);
  assert.equal(ca.wasRecovering, true);
  assert.equal(ca.recovered, true);
  assert.equal(cb.recovered, true);
  const sock = WS.last();
  const subMsgs = sock.sent.filter((m) => m.includes('"subscribe"'));
  assert.equal(subMsgs.length, 1);
  const frames = sock.frames().filter((f) => f.subscribe).map((f) => f.subscribe);
  assert.deepEqual(frames, [
    { channel: 'a', recover: true, offset: 10, epoch: 'e1' },
    { channel: 'b', recover: true, offset: 10, epoch: 'e1' },
  ]);
});

test('recovered publications come first, in order; buffered live ones follow without duplicates', async (t) => {
  let first = true;
  const { client, WS } = await setup(t, scripted({
    onSubscribe: (f, s) => {
      if (first) {
        first = false;
        s.push({ id: f.id, subscribe: { recoverable: true, epoch: 'E', offset: 3, recovered: false, publications: [] } });
        return;
      }
      // live publications racing the reply (7 duplicates a recovered one), then the reply
      s.push(pub('ch', 'p7', 7), pub('ch', 'p8', 8));
      s.push({
        id: f.id,
        subscribe: {
          recoverable: true, epoch: 'E', offset: 7, recovered: true,
          publications: [{ data: 'p3', offset: 3 }, { data: 'p4', offset: 4 }, { data: 'p5', offset: 5 }, { data: 'p6', offset: 6 }, { data: 'p7', offset: 7 }],
        },
      });
    },
  }));
  const sub = client.newSubscription('ch');
  const seen = [];
  sub.on('publication', (p) => seen.push(p.data));
  sub.subscribe();
  await sub.ready(1000);
  WS.last().push(pub('ch', 'p4', 4)); // live, before the drop
  WS.last().serverClose(1006);
  const ctx = await nextEvent(sub, 'subscribed');
  assert.equal(ctx.recovered, true);
  assert.deepEqual(WS.last().frames().find((f) => f.subscribe).subscribe, { channel: 'ch', recover: true, offset: 4, epoch: 'E' });
  assert.deepEqual(seen, ['p4', 'p5', 'p6', 'p7', 'p8']);
  assert.equal(sub.offset, 8);
});

test('a new epoch means recovered=false and offsets restart (no false duplicates)', async (t) => {
  let n = 0;
  const { client, WS } = await setup(t, scripted({
    onSubscribe: (f, s) => {
      n++;
      const epoch = n === 1 ? 'old' : 'new';
      s.push({ id: f.id, subscribe: { recoverable: true, epoch, offset: n === 1 ? 50 : 0, recovered: false, publications: [] } });
    },
  }));
  const sub = client.newSubscription('ch');
  const seen = [];
  sub.on('publication', (p) => seen.push(p.offset));
  sub.subscribe();
  await sub.ready(1000);
  WS.last().serverClose(3000);
  const ctx = await nextEvent(sub, 'subscribed');
  assert.equal(ctx.recovered, false);
  assert.equal(ctx.wasRecovering, true);
  assert.equal(sub.epoch, 'new');
  WS.last().push(pub('ch', 'x', 1));
  assert.deepEqual(seen, [1]);
});

test('recoverable: false sends no recovery fields and tracks nothing', async (t) => {
  const { client, WS } = await setup(t, scripted());
  const sub = client.newSubscription('ch', { recoverable: false });
  sub.subscribe();
  await sub.ready(1000);
  assert.deepEqual(WS.last().frames().find((f) => f.subscribe).subscribe, { channel: 'ch' });
});

test('unsubscribe sends unsubscribe; a later subscribe recovers from the kept position', async (t) => {
  const { client, WS } = await setup(t, scripted({
    onSubscribe: (f, s) => s.push({ id: f.id, subscribe: { recoverable: true, epoch: 'e', offset: 4, recovered: f.subscribe.offset === 4, publications: [] } }),
  }));
  const sub = client.newSubscription('ch');
  sub.subscribe();
  await sub.ready(1000);
  const unsub = nextEvent(sub, 'unsubscribed');
  sub.unsubscribe();
  assert.equal(sub.state, 'unsubscribed');
  assert.equal((await unsub).channel, 'ch');
  await until(() => WS.last().frames().some((f) => f.unsubscribe));
  sub.subscribe();
  const ctx = await nextEvent(sub, 'subscribed');
  assert.equal(ctx.wasRecovering, true);
  assert.equal(ctx.recovered, true);
});

test('a permanent subscribe error unsubscribes; a temporary one retries', async (t) => {
  let n = 0;
  const { client } = await setup(t, scripted({
    onSubscribe: (f, s) => {
      n++;
      if (f.subscribe.channel === 'denied') s.push({ id: f.id, error: { code: 403, message: 'permission denied', temporary: false } });
      else if (n < 3) s.push({ id: f.id, error: { code: 429, message: 'slow down', temporary: true } });
      else s.push({ id: f.id, subscribe: { recoverable: true, epoch: 'e', offset: 0, recovered: false, publications: [] } });
    },
  }));
  const flaky = client.newSubscription('flaky');
  const errors = [];
  flaky.on('error', (e) => errors.push(e.error.code));
  flaky.subscribe();
  await flaky.ready(2000);
  assert.deepEqual(errors, [429, 429]);
  const denied = client.newSubscription('denied');
  const un = nextEvent(denied, 'unsubscribed');
  denied.subscribe();
  assert.deepEqual(await un, { channel: 'denied', code: 403, reason: 'permission denied' });
  await assert.rejects(denied.ready(), (e) => e.code === ErrorCode.SUBSCRIPTION_UNSUBSCRIBED);
});

test('subscription tokens: getToken on subscribe, sub_refresh on a refresh push for the channel', async (t) => {
  let calls = 0;
  const { client, WS } = await setup(t, scripted({
    onOther: (f, s) => f.sub_refresh && s.push({ id: f.id, sub_refresh: { expires: true, ttl: 100 } }),
  }));
  const sub = client.newSubscription('secret', { getToken: async (ctx) => `${ctx.channel}-${++calls}` });
  sub.subscribe();
  await sub.ready(1000);
  assert.equal(WS.last().frames().find((f) => f.subscribe).subscribe.token, 'secret-1');
  WS.last().push({ push: { channel: 'secret', refresh: {} } });
  await until(() => WS.last().frames().some((f) => f.sub_refresh));
  assert.deepEqual(WS.last().frames().find((f) => f.sub_refresh).sub_refresh, { channel: 'secret', token: 'secret-2' });
});

test('server unsubscribe push: resubscribe when asked, else unsubscribed', async (t) => {
  const { client, WS } = await setup(t, scripted());
  const a = client.newSubscription('a');
  const b = client.newSubscription('b');
  a.subscribe();
  b.subscribe();
  await Promise.all([a.ready(1000), b.ready(1000)]);
  const before = WS.last().frames().filter((f) => f.subscribe).length;
  WS.last().push({ push: { channel: 'a', unsubscribe: { code: 2500, reason: 'insufficient state', resubscribe: true } } });
  await a.ready(1000);
  assert.equal(WS.last().frames().filter((f) => f.subscribe).length, before + 1);
  const un = nextEvent(b, 'unsubscribed');
  WS.last().push({ push: { channel: 'b', unsubscribe: { code: 2000, reason: 'server unsubscribe' } } });
  assert.equal((await un).code, 2000);
  assert.equal(b.state, 'unsubscribed');
});

test('join and leave events; sub.publish/presence/history go to the channel', async (t) => {
  const { client, WS } = await setup(t, scripted({
    onOther: (f, s) => {
      const method = Object.keys(f).find((k) => k !== 'id');
      s.push({ id: f.id, [method]: { echo: f[method] } });
    },
  }));
  const sub = client.newSubscription('room', { joinLeave: true });
  sub.subscribe();
  await sub.ready(1000);
  const join = nextEvent(sub, 'join');
  const leave = nextEvent(sub, 'leave');
  WS.last().push({ push: { channel: 'room', join: { info: { client: 'c9', user: 'u9' } } } }, { push: { channel: 'room', leave: { info: { client: 'c9', user: 'u9' } } } });
  assert.deepEqual(await join, { channel: 'room', info: { client: 'c9', user: 'u9' } });
  assert.deepEqual((await leave).info.user, 'u9');
  assert.deepEqual(await sub.publish({ t: 1 }), { echo: { channel: 'room', data: { t: 1 } } });
  assert.deepEqual(await sub.presencePage({ cursor: 'k1', limit: 5 }), { echo: { channel: 'room', cursor: 'k1', limit: 5 } });
  assert.deepEqual(await sub.presenceStats(), { echo: { channel: 'room' } });
  assert.deepEqual(await sub.history({ limit: 2 }), { echo: { channel: 'room', limit: 2 } });
});

test('presence() walks every page with the cursor and merges them', async (t) => {
  const pages = { '': { clients: { a: { user: 'u' }, b: { user: 'u' } }, cursor: 'p2' }, p2: { clients: { b: { user: 'u' }, c: { user: 'v' } } } };
  const asked = [];
  const { client } = await setup(t, scripted({
    onOther: (f, s) => {
      asked.push(f.presence);
      s.push({ id: f.id, presence: pages[f.presence.cursor ?? ''] });
    },
  }));
  const sub = client.newSubscription('room');
  sub.subscribe();
  await sub.ready(1000);
  assert.deepEqual(await sub.presence(), { clients: { a: { user: 'u' }, b: { user: 'u' }, c: { user: 'v' } } });
  assert.deepEqual(asked, [{ channel: 'room' }, { channel: 'room', cursor: 'p2' }]);
});

test('presence_diff: one event per change in order, members kept; syncMembers lets newer diffs win', async (t) => {
  let presenceReply = null;
  const { client, WS } = await setup(t, scripted({
    onOther: (f, s) => {
      if (f.presence) presenceReply = (clients) => s.push({ id: f.id, presence: { clients } });
    },
  }));
  const sub = client.newSubscription('room', { joinLeave: true });
  sub.subscribe();
  await sub.ready(1000);
  const events = [];
  sub.on('join', (j) => events.push(['join', j.info.client]));
  sub.on('leave', (l) => events.push(['leave', l.info.client]));
  WS.last().push({ push: { channel: 'room', presence_diff: { changes: [
    { join: { client: 'a', user: 'ua' } }, { join: { client: 'b', user: 'ub' } }, { leave: { client: 'a', user: 'ua' } },
  ] } } });
  await until(() => events.length === 3, 1000, 'three events');
  assert.deepEqual(events, [['join', 'a'], ['join', 'b'], ['leave', 'a']]);
  assert.deepEqual([...sub.members.keys()], ['b']);
  const synced = sub.syncMembers();
  await until(() => presenceReply, 1000, 'the presence command');
  // b leaves and c joins after the list was asked for: the list (older) must not undo that
  WS.last().push({ push: { channel: 'room', presence_diff: { changes: [
    { leave: { client: 'b', user: 'ub' } }, { join: { client: 'c', user: 'uc' } },
  ] } } });
  await until(() => events.length === 5, 1000, 'five events');
  presenceReply({ b: { user: 'ub' }, d: { user: 'ud' } });
  const members = await synced;
  assert.deepEqual([...members.keys()].sort(), ['c', 'd']);
  assert.deepEqual(members.get('d'), { client: 'd', user: 'ud' });
  const count = nextEvent(sub, 'count');
  WS.last().push({ push: { channel: 'room', presence_count: { num_clients: 1500, num_users: 1200 } } });
  assert.deepEqual(await count, { channel: 'room', num_clients: 1500, num_users: 1200 });
});

test('registry: getSubscription, duplicate channel throws, removeSubscription unsubscribes', async (t) => {
  const { client, WS } = await setup(t, scripted());
  const sub = client.newSubscription('x');
  assert.equal(client.getSubscription('x'), sub);
  assert.throws(() => client.newSubscription('x'), (e) => e.code === ErrorCode.ALREADY_SUBSCRIBED);
  sub.subscribe();
  await sub.ready(1000);
  client.removeSubscription(sub);
  assert.equal(sub.state, 'unsubscribed');
  assert.equal(client.getSubscription('x'), null);
  await until(() => WS.last().frames().some((f) => f.unsubscribe));
  // a subscription created while disconnected subscribes once the client connects
  client.disconnect();
  const later = client.newSubscription('later');
  later.subscribe();
  client.connect();
  await later.ready(2000);
});

test('server-side subscriptions: connect result subs are reported and recovered through connect.subs', async (t) => {
  let n = 0;
  const { client, WS } = await setup(t, (frame, socket) => {
    if (!frame.connect) return;
    n++;
    const subs = n === 1
      ? { news: { recoverable: true, epoch: 'N', offset: 2, recovered: false, publications: [] } }
      : { news: { recoverable: true, epoch: 'N', offset: 4, recovered: true, publications: [{ data: 'three', offset: 3 }, { data: 'four', offset: 4 }] } };
    socket.push({ id: frame.id, connect: { client: `c${n}`, ping: 25, subs } });
  });
  const pubs = [];
  client.on('publication', (p) => pubs.push(`${p.channel}:${p.data}`));
  await until(() => client._serverSubs.get('news'));
  WS.last().push(pub('news', 'three', 3));
  WS.last().serverClose(3000);
  const sub = await nextEvent(client, 'subscribed');
  assert.equal(sub.recovered, true);
  assert.deepEqual(WS.last().frames()[0].connect.subs, { news: { recover: true, offset: 3, epoch: 'N' } });
  await sleep(5);
  assert.deepEqual(pubs, ['news:three', 'news:four']);
});

test("subscribing from a 'connected' listener sends one subscribe, not two", async (t) => {
  const WS = fakeWebSocket({ server: scripted() });
  const client = new Kilat(URL, { websocket: WS, ...fast });
  t.after(() => client.disconnect());
  const sub = client.newSubscription('early');
  client.on('connected', () => {
    sub.subscribe();
  });
  const subscribed = nextEvent(sub, 'subscribed');
  client.connect();
  await subscribed;
  await sleep(20);
  assert.equal(WS.last().frames().filter((f) => f.subscribe).length, 1);
  assert.equal(sub.state, 'subscribed');
});

test('issue 22: after disconnect() the subscriptions end in unsubscribed (not subscribing), and recover after connect()', async (t) => {
  const { client, WS } = await setup(t, scripted());
  const sub = client.newSubscription('chat:bye');
  sub.subscribe();
  await sub.ready(1000);
  WS.last().push(pub('chat:bye', 'one', 1));
  const events = [];
  for (const name of ['subscribing', 'unsubscribed', 'state']) sub.on(name, (ctx) => events.push({ name, ctx }));
  const sent = WS.last().frames().length;
  client.disconnect();
  assert.equal(sub.state, 'unsubscribed');
  assert.deepEqual(events, [
    { name: 'state', ctx: { newState: 'unsubscribed', oldState: 'subscribed', channel: 'chat:bye' } },
    { name: 'unsubscribed', ctx: { channel: 'chat:bye', code: 0, reason: 'disconnect called' } },
  ]);
  assert.equal(WS.last().frames().length, sent, 'nothing sent on a closing connection');
  await assert.rejects(sub.ready(), (e) => e.code === ErrorCode.SUBSCRIPTION_UNSUBSCRIBED);
  // the position is kept: subscribing again after connect() recovers from it
  client.connect();
  sub.subscribe();
  await sub.ready(1000);
  const again = WS.last().frames().find((f) => f.subscribe);
  assert.deepEqual(again.subscribe, { channel: 'chat:bye', recover: true, offset: 1, epoch: 'e1' });
});

test('a terminal disconnect from the server also ends the subscriptions, with its code', async (t) => {
  const onSubscribe = (f, s) => {
    if (f.subscribe.channel === 'chat:later') return; // never answered
    s.push({ id: f.id, subscribe: { recoverable: true, epoch: 'e1', offset: 0, recovered: false, publications: [] } });
  };
  const { client, WS } = await setup(t, scripted({ onSubscribe }));
  const sub = client.newSubscription('chat:gone');
  sub.subscribe();
  await sub.ready(1000);
  const waiting = client.newSubscription('chat:later');
  waiting.subscribe();
  await until(() => WS.last().frames().some((f) => f.subscribe?.channel === 'chat:later'));
  assert.equal(waiting.state, 'subscribing');
  const ended = nextEvent(sub, 'unsubscribed');
  const endedToo = nextEvent(waiting, 'unsubscribed');
  WS.last().serverClose(3503, 'force disconnect');
  assert.deepEqual(await ended, { channel: 'chat:gone', code: 3503, reason: 'force disconnect' });
  assert.deepEqual(await endedToo, { channel: 'chat:later', code: 3503, reason: 'force disconnect' });
  assert.equal(client.state, 'disconnected');
});
