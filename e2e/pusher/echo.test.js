// Laravel Echo on pusher-js against a spawned `kilat serve --dev`: Echo.channel().listen(),
// Echo.private() with whispers, Echo.join().here().joining().leaving(), events triggered with
// the `pusher` server SDK, channels authorised by a test endpoint signed with that SDK.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import Echo from 'laravel-echo';
import PusherClient from 'pusher-js';

import { APP, KilatServer, authServer, clientOptions, serverSdk, skipReason } from './harness.js';

const skip = skipReason() ?? false;
let kilat;
let auth;
let sdk;
const echos = [];

before(async () => {
  if (skip) return;
  kilat = await new KilatServer().start();
  auth = await authServer(kilat);
  sdk = serverSdk(kilat);
});

after(async () => {
  for (const e of echos) e.disconnect();
  await auth?.close();
  await kilat?.stop();
});

/** An Echo instance for `user`, connected. */
async function echo(user) {
  const options = clientOptions(kilat, auth, user);
  const e = new Echo({
    broadcaster: 'pusher',
    key: APP.key,
    Pusher: PusherClient,
    ...options,
    authEndpoint: `${auth.url}/auth`,
    auth: { headers: { 'x-user': String(user) } },
  });
  echos.push(e);
  await new Promise((r) => e.connector.pusher.connection.bind('connected', r));
  return e;
}

/** Resolves when `channel` (an Echo channel) is subscribed. */
function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribed(resolve);
    channel.error((e) => reject(new Error(`subscription error: ${JSON.stringify(e)}`)));
  });
}

test('Echo.channel().listen() gets an event triggered by the server SDK', { skip }, async () => {
  const e = await echo('1');
  const channel = e.channel('orders');
  await subscribed(channel);
  const got = new Promise((r) => channel.listen('.OrderShipped', r));
  await sdk.trigger('orders', 'OrderShipped', { order: 42 });
  assert.deepEqual(await got, { order: 42 });
});

test('Echo.private() whispers reach the other member', { skip }, async () => {
  const a = await echo('1');
  const b = await echo('2');
  const ca = a.private('chat.1');
  const cb = b.private('chat.1');
  await Promise.all([subscribed(ca), subscribed(cb)]);
  const got = new Promise((r) => cb.listenForWhisper('typing', r));
  ca.whisper('typing', { name: 'a' });
  assert.deepEqual(await got, { name: 'a' });
});

test('Echo.join(): here(), joining(), leaving()', { skip }, async () => {
  const a = await echo('10');
  const here = new Promise((r) => a.join('room.1').here(r));
  const herePeople = await here;
  assert.deepEqual(herePeople, [{ name: 'user 10' }]);
  const joining = new Promise((r) => a.join('room.1').joining(r));
  const leaving = new Promise((r) => a.join('room.1').leaving(r));

  const b = await echo('11');
  const hereB = await new Promise((r) => b.join('room.1').here(r));
  assert.deepEqual(hereB.map((m) => m.name).sort(), ['user 10', 'user 11']);
  assert.deepEqual(await joining, { name: 'user 11' });
  b.leave('room.1');
  assert.deepEqual(await leaving, { name: 'user 11' });
});
