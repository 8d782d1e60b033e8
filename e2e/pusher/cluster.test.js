// Two kilat nodes on one real redis-server, a pusher-js client on each: presence
// (subscription_succeeded's members, member_added/removed) and events agree across the nodes,
// the HTTP API's counts and channel list are the cluster's (asked of either node), and the
// channel_occupied/channel_vacated webhooks fire once for the cluster, not once per node.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { freePort } from '../../sdk/js/test/server.js';
import { APP, KilatServer, authServer, connect, once, serverSdk, skipReason, subscribe } from './harness.js';

/** Why the test cannot run (no kilat binary, no redis-server), or false. Under CI=true a
 * missing redis-server is an error. */
function why() {
  const kilat = skipReason();
  if (kilat) return kilat;
  if (spawnSync('redis-server', ['--version']).status === 0) return false;
  const msg = 'redis-server is not installed (apt-get install redis-server)';
  if (process.env.CI === 'true') throw new Error(msg);
  console.warn(`\n!!! SKIPPING the two-node Pusher test: ${msg}\n`);
  return msg;
}
const skip = why();

/** Resolves once redis on `port` answers PING, within 10 s. */
async function redisReady(port) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = tcpConnect(port, '127.0.0.1');
      socket.setTimeout(500, () => (socket.destroy(), resolve(false)));
      socket.on('error', () => resolve(false));
      socket.on('connect', () => socket.write('PING\r\n'));
      socket.on('data', (d) => (socket.destroy(), resolve(d.toString().startsWith('+PONG'))));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not answer PING within 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let redis;
let nodes = [];
let auth;
let receiver;
const received = [];
let waiters = [];

before(async () => {
  if (skip) return;
  const redisPort = await freePort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  await redisReady(redisPort);

  const hookPort = await freePort();
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const hook = serverSdk(nodes[0]).webhook({ headers: req.headers, rawBody: body });
      assert.ok(hook.isValid(), 'every webhook is signed with the app secret');
      received.push(...hook.getEvents());
      for (const w of waiters) w();
      res.writeHead(200).end('{}');
    });
  });
  await new Promise((r) => receiver.listen(hookPort, '127.0.0.1', r));

  const dir = mkdtempSync(join(tmpdir(), 'kilat-pusher-cluster-'));
  const config = join(dir, 'kilat.toml');
  writeFileSync(
    config,
    `[engine]
kind = "redis"
redis_url = "redis://127.0.0.1:${redisPort}"

[[pusher.apps]]
id = "${APP.appId}"
key = "${APP.key}"
secret = "${APP.secret}"
client_events = true

[[pusher.apps.webhooks]]
url = "http://127.0.0.1:${hookPort}/hooks"
event_types = ["channel_occupied", "channel_vacated"]
`,
  );
  nodes = [
    await new KilatServer({ args: ['--config', config] }).start(),
    await new KilatServer({ args: ['--config', config] }).start(),
  ];
  auth = await authServer(nodes[0]);
});

after(async () => {
  await auth?.close();
  for (const node of nodes) await node.stop();
  await new Promise((r) => (receiver ? receiver.close(r) : r()));
  if (redis && redis.exitCode === null) {
    const gone = new Promise((r) => redis.once('exit', r));
    redis.kill('SIGTERM');
    await gone;
  }
});

/** Resolves once a received webhook event matches. */
function hook(match, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const found = received.find(match);
      if (!found) return false;
      clearTimeout(timer);
      waiters = waiters.filter((w) => w !== check);
      resolve(found);
      return true;
    };
    const timer = setTimeout(() => reject(new Error(`no webhook matching ${match}; got ${JSON.stringify(received)}`)), timeoutMs);
    if (!check()) waiters.push(check);
  });
}

/** GET through the server SDK of `node`, parsed. */
async function get(node, path, params) {
  const res = await serverSdk(node).get({ path, params });
  return res.json();
}

/** Polls `read` until `ok(value)` holds (the index of another node is written after its
 * subscription succeeded: the state converges, the test waits for it), within 5 s. */
async function until(read, ok, what) {
  const deadline = Date.now() + 5000;
  let value;
  for (;;) {
    value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('presence, events, counts and occupancy webhooks agree across two nodes on Redis', { skip }, async () => {
  const [one, two] = nodes;
  const a = await connect(one, auth, '1');
  const b = await connect(two, auth, '2');

  // Presence: b on node two sees a (node one) in its member list, a gets member_added for b.
  const { channel: onA } = await subscribe(a, 'presence-room');
  await hook((e) => e.name === 'channel_occupied' && e.channel === 'presence-room');
  const added = once(onA, 'pusher:member_added');
  const { channel: onB, result } = await subscribe(b, 'presence-room');
  assert.deepEqual(Object.keys(result.members).sort(), ['1', '2']);
  assert.deepEqual(result.members['1'], { name: 'user 1' });
  const member = await added;
  assert.equal(member.id, '2');
  assert.deepEqual(member.info, { name: 'user 2' });

  // Events: triggered through node one's API, received on both nodes; a client event from
  // node two reaches node one.
  const onAEvent = once(onA, 'news');
  const onBEvent = once(onB, 'news');
  await serverSdk(one).trigger('presence-room', 'news', { n: 1 });
  assert.deepEqual(await onAEvent, { n: 1 });
  assert.deepEqual(await onBEvent, { n: 1 });
  const whisper = once(onA, 'client-typing');
  onB.trigger('client-typing', { who: 2 });
  assert.deepEqual(await whisper, { who: 2 });

  // Counts: the cluster's, whichever node answers.
  for (const node of nodes) {
    const info = await get(node, '/channels/presence-room', { info: 'user_count,subscription_count' });
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 2 });
  }
  // A public channel with one subscriber on node two only: node one knows it too.
  await subscribe(b, 'lobby');
  assert.deepEqual(await get(one, '/channels/lobby', { info: 'subscription_count' }), {
    occupied: true,
    subscription_count: 1,
  });
  const listed = await until(
    () => get(one, '/channels', {}),
    (v) => 'lobby' in v.channels && 'presence-room' in v.channels,
    "node one's channel list",
  );
  assert.deepEqual(Object.keys(listed.channels).sort(), ['lobby', 'presence-room']);
  const users = await get(one, '/channels/presence-room/users');
  assert.deepEqual(users.users.map((u) => u.id).sort(), ['1', '2']);

  // Leaving: member_removed crosses nodes; the channel is vacated once, after the last one.
  const removed = once(onB, 'pusher:member_removed');
  a.disconnect();
  assert.equal((await removed).id, '1');
  assert.deepEqual(await get(one, '/channels/presence-room', { info: 'subscription_count' }), {
    occupied: true,
    subscription_count: 1,
  });
  b.disconnect();
  await hook((e) => e.name === 'channel_vacated' && e.channel === 'presence-room');
  await hook((e) => e.name === 'channel_vacated' && e.channel === 'lobby');
  await until(
    () => get(two, '/channels', {}),
    (v) => Object.keys(v.channels).length === 0,
    "node two's channel list after everyone left",
  );
  assert.deepEqual(await get(two, '/channels/presence-room', {}), { occupied: false });

  // Once for the cluster: one occupied and one vacated per channel, though two nodes had
  // subscribers of presence-room.
  const count = (name, channel) => received.filter((e) => e.name === name && e.channel === channel).length;
  assert.equal(count('channel_occupied', 'presence-room'), 1);
  assert.equal(count('channel_vacated', 'presence-room'), 1);
  assert.equal(count('channel_occupied', 'lobby'), 1);
  assert.equal(count('channel_vacated', 'lobby'), 1);
});
