// Webhooks from kilat's Pusher endpoint to a receiver served by the test, validated with the
// `pusher` server SDK's own webhook helper: channel_occupied, member_added, client_event,
// member_removed, channel_vacated, signed; the first POST is answered 500 and kilat retries.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { freePort } from '../../sdk/js/test/server.js';
import { APP, KilatServer, authServer, connect, serverSdk, skipReason, subscribe } from './harness.js';

const skip = skipReason() ?? false;
let kilat;
let auth;
let receiver;
const received = []; // every event of every valid POST
const posts = { valid: 0, invalid: 0, refused: 0 };
let waiters = [];

before(async () => {
  if (skip) return;
  const port = await freePort();
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      if (posts.refused === 0) {
        // The first delivery fails: kilat must retry it.
        posts.refused += 1;
        res.writeHead(500).end();
        return;
      }
      const hook = sdk.webhook({ headers: req.headers, rawBody: body });
      if (hook.isValid()) {
        posts.valid += 1;
        received.push(...hook.getEvents());
        for (const w of waiters) w();
      } else {
        posts.invalid += 1;
      }
      res.writeHead(200).end('{}');
    });
  });
  await new Promise((r) => receiver.listen(port, '127.0.0.1', r));
  const dir = mkdtempSync(join(tmpdir(), 'kilat-pusher-hooks-'));
  const config = join(dir, 'kilat.toml');
  writeFileSync(
    config,
    `[[pusher.apps]]
id = "${APP.appId}"
key = "${APP.key}"
secret = "${APP.secret}"
client_events = true

[[pusher.apps.webhooks]]
url = "http://127.0.0.1:${port}/hooks"
`,
  );
  kilat = await new KilatServer({ args: ['--config', config] }).start();
  auth = await authServer(kilat);
  sdk = serverSdk(kilat);
});
let sdk;

after(async () => {
  await auth?.close();
  await kilat?.stop();
  await new Promise((r) => (receiver ? receiver.close(r) : r()));
});

/** Resolves once an event matching `match` has been received in a valid POST. */
function hook(match, timeoutMs = 15000) {
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

test('signed webhooks for occupied, member_added, client_event, member_removed, vacated; a failed POST is retried', { skip }, async () => {
  const a = await connect(kilat, auth, '5');
  const b = await connect(kilat, auth, '6');
  const { channel } = await subscribe(a, 'presence-hooks');
  await subscribe(b, 'presence-hooks');
  await hook((e) => e.name === 'channel_occupied' && e.channel === 'presence-hooks');
  await hook((e) => e.name === 'member_added' && e.user_id === '5');
  await hook((e) => e.name === 'member_added' && e.user_id === '6');

  channel.trigger('client-wave', { hand: 'left' });
  const wave = await hook((e) => e.name === 'client_event');
  assert.equal(wave.event, 'client-wave');
  assert.equal(wave.channel, 'presence-hooks');
  assert.deepEqual(JSON.parse(wave.data), { hand: 'left' });
  assert.equal(wave.user_id, '5');
  assert.equal(wave.socket_id, a.connection.socket_id);

  b.disconnect();
  await hook((e) => e.name === 'member_removed' && e.user_id === '6');
  assert.equal(received.filter((e) => e.name === 'channel_vacated').length, 0, 'a is still there');
  a.disconnect();
  await hook((e) => e.name === 'member_removed' && e.user_id === '5');
  await hook((e) => e.name === 'channel_vacated' && e.channel === 'presence-hooks');
  assert.equal(posts.refused, 1);
  assert.equal(posts.invalid, 0);
});

test('cache_miss: a subscription to a cache channel with no cached event, signed; none once an event is cached', { skip }, async () => {
  const c = await connect(kilat, auth, '7');
  const { channel } = await subscribe(c, 'cache-quotes');
  await hook((e) => e.name === 'cache_miss' && e.channel === 'cache-quotes');
  channel.unbind_all();
  // Once the channel keeps an event, a new subscriber gets it and no webhook is sent.
  await sdk.trigger('cache-quotes', 'quote', { q: 1 });
  const d = await connect(kilat, auth, '8');
  const cached = new Promise((resolve) => d.subscribe('cache-quotes').bind('quote', resolve));
  assert.deepEqual(await cached, { q: 1 });
  // Order: a marker webhook after the second subscription (occupied of a new channel) proves
  // no second cache_miss was queued before it.
  await subscribe(d, 'marker-after-cache');
  await hook((e) => e.name === 'channel_occupied' && e.channel === 'marker-after-cache');
  assert.equal(received.filter((e) => e.name === 'cache_miss' && e.channel === 'cache-quotes').length, 1);
  assert.equal(posts.invalid, 0);
  c.disconnect();
  d.disconnect();
});
