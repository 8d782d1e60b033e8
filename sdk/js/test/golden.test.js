// Golden frames shared with the Rust codec (crates/kilat-protocol/tests/fixtures/*.json).
//
// Scenario files are arrays of {"direction": "client" | "server", "frame"}. Each scenario is
// replayed against the SDK through the in-memory WebSocket double: every client frame is
// produced by the matching public API call and must equal the golden frame (ids are mapped:
// the SDK numbers its own commands), and every server frame is fed in and must decode into
// the matching result, KilatError or event. `invalid_client_frames.json` describes what the
// server rejects, so here it only checks that the SDK never produces such frames.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Kilat, KilatError, encodeFrames, decodeFrames } from '../src/kilat.js';
import { fakeWebSocket, until, sleep } from './fake.js';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, '../../../crates/kilat-protocol/tests/fixtures');
const files = existsSync(dir)
  ? readdirSync(dir).filter((f) => f.endsWith('.json')).sort((a, b) => (a === 'invalid_client_frames.json') - (b === 'invalid_client_frames.json') || a.localeCompare(b))
  : [];

if (files.length === 0) {
  test('golden frames', { skip: `no fixtures at ${dir}` }, () => {});
}

/** Every frame the SDK sent in the scenarios below. */
const emitted = [];

const methodOf = (frame) => Object.keys(frame).find((k) => k !== 'id');

for (const file of files) {
  const entries = JSON.parse(readFileSync(join(dir, file), 'utf8'));

  if (file === 'invalid_client_frames.json') {
    // These are frames a server must reject (bad envelope, bad params). Checked here: every
    // frame the SDK produced while replaying the other scenarios has a valid envelope, i.e.
    // exactly one method key and an integer id > 0 (except `send` and the pong `{}`).
    test(`golden ${file}: the SDK only emits well-formed envelopes`, () => {
      assert.ok(emitted.length > 10, `only ${emitted.length} frames were emitted`);
      assert.ok(entries.length > 0);
      for (const f of emitted) {
        const keys = Object.keys(f).filter((k) => k !== 'id');
        if (keys.length === 0) {
          assert.deepEqual(f, {}, 'only the pong has no method');
          continue;
        }
        assert.equal(keys.length, 1, JSON.stringify(f));
        if (keys[0] === 'send') assert.equal(f.id, undefined, 'send has no id');
        else assert.ok(Number.isInteger(f.id) && f.id > 0 && f.id <= 0xffffffff, JSON.stringify(f));
      }
    });
    continue;
  }

  test(`golden ${file}`, async (t) => {
    // reconnect waits (after disconnect pushes) at their floor: no jitter, no delay_ms share
    t.mock.method(Math, 'random', () => 0);
    const received = []; // frames the client sent, not yet matched
    const startsWithConnect = entries[0]?.direction === 'client' && entries[0].frame.connect;
    const WS = fakeWebSocket({
      server: (frame, socket) => {
        emitted.push(frame);
        if (!startsWithConnect && frame.connect) {
          socket.push({ id: frame.id, connect: { client: 'golden', ping: 25 } });
          return;
        }
        received.push(frame);
      },
    });
    const events = [];
    const record = (source, name) => (ctx) => events.push({ source, name, ctx });
    let tokenCalls = 0;
    const options = { websocket: WS, minReconnectDelay: 50, maxReconnectDelay: 1000, timeout: 2000, getToken: async () => { tokenCalls++; return 'eyJ...'; } };
    if (startsWithConnect) {
      const c = entries[0].frame.connect;
      options.name = c.name ?? '';
      options.version = c.version ?? '';
      if (c.token) options.token = c.token;
      else options.getToken = undefined;
      if (c.data !== undefined) options.data = c.data;
    }
    const client = new Kilat('ws://golden.invalid/connection/websocket', options);
    t.after(() => client.disconnect());
    for (const ev of ['connected', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'count', 'message', 'connecting', 'disconnected']) {
      client.on(ev, record('client', ev));
    }
    if (startsWithConnect && entries[0].frame.connect.subs) {
      for (const [channel, p] of Object.entries(entries[0].frame.connect.subs)) {
        client._serverSubs.set(channel, { offset: p.offset, epoch: p.epoch, recoverable: true });
      }
    }
    const ids = new Map(); // golden id -> SDK id
    const calls = new Map(); // golden id -> settled outcome promise
    const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }));
    const subFor = (channel, opts) => {
      let sub = client.getSubscription(channel);
      if (!sub) {
        sub = client.newSubscription(channel, opts);
        for (const ev of ['subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'count']) sub.on(ev, record(channel, ev));
      }
      return sub;
    };

    client.connect();
    if (!startsWithConnect) await client.ready(2000);

    for (const { direction, frame } of entries) {
      const method = methodOf(frame);
      if (direction === 'client') {
        const p = frame[method];
        let call = null;
        switch (method) {
          case undefined: break; // the pong: sent by the SDK on its own after the server ping
          case 'connect': break; // sent by connect() above
          case 'subscribe': {
            const sub = subFor(p.channel, { recoverable: Boolean(p.recover), joinLeave: p.join_leave, data: p.data, token: p.token });
            if (p.offset !== undefined) {
              sub.offset = p.offset;
              sub.epoch = p.epoch;
            }
            sub.subscribe();
            break;
          }
          case 'unsubscribe': subFor(p.channel).unsubscribe(); break;
          case 'publish': call = client.publish(p.channel, p.data); break;
          case 'presence': call = client.presence(p.channel); break;
          case 'presence_stats': call = client.presenceStats(p.channel); break;
          case 'history': call = client.history(p.channel, { limit: p.limit, since: p.since, reverse: p.reverse }); break;
          case 'rpc': call = client.rpc(p.method, p.data); break;
          case 'send': call = client.send(p.data); break;
          // refresh and sub_refresh are normally driven by pushes; call the same internal path
          default: call = client._call(method, p); break;
        }
        if (call && frame.id !== undefined) calls.set(frame.id, settle(call));
        await until(() => received.length > 0, 2000, `client frame ${JSON.stringify(frame)}`);
        const actual = received.shift();
        const expected = structuredClone(frame);
        if (frame.id !== undefined) {
          assert.ok(Number.isInteger(actual.id) && actual.id > 0, `id in ${JSON.stringify(actual)}`);
          ids.set(frame.id, actual.id);
          expected.id = actual.id;
        }
        assert.deepEqual(actual, expected, `${file}: client frame`);
        continue;
      }

      // server frame
      const out = structuredClone(frame);
      if (frame.id !== undefined) {
        if (!ids.has(frame.id)) {
          // a reply without its command in the file (errors.json): issue an rpc to answer
          calls.set(frame.id, settle(client.rpc('golden', null)));
          await until(() => received.length > 0);
          ids.set(frame.id, received.shift().id);
        }
        out.id = ids.get(frame.id);
      }
      const before = events.length;
      WS.last().push(out);
      await sleep(2);

      if (frame.error) {
        const { error } = await calls.get(frame.id);
        assert.ok(error instanceof KilatError, `${file}: error reply rejects with KilatError`);
        assert.equal(error.code, frame.error.code);
        assert.equal(error.message, frame.error.message);
        assert.equal(error.temporary, frame.error.temporary);
      } else if (method === 'connect') {
        await client.ready(2000);
        assert.equal(client.clientId, frame.connect.client);
        for (const [channel, res] of Object.entries(frame.connect.subs ?? {})) {
          const ev = events.find((e) => e.name === 'subscribed' && e.ctx.channel === channel);
          assert.equal(ev?.ctx.recovered, res.recovered);
          const pubs = events.filter((e) => e.name === 'publication' && e.ctx.channel === channel).map((e) => ({ data: e.ctx.data, offset: e.ctx.offset }));
          assert.deepEqual(pubs, res.publications);
        }
      } else if (method === 'subscribe' && frame.id !== undefined) {
        const sub = [...Object.values(client.subscriptions())].find((s) => ids.get(frame.id) && s.state === 'subscribed' && events.slice(before).some((e) => e.source === s.channel && e.name === 'subscribed'));
        assert.ok(sub, `${file}: subscribe reply leads to subscribed`);
        const ev = events.slice(before).find((e) => e.source === sub.channel && e.name === 'subscribed');
        assert.equal(ev.ctx.recovered, frame.subscribe.recovered);
        assert.equal(ev.ctx.latest, Boolean(frame.subscribe.latest), `${file}: latest flag`);
        assert.equal(sub.epoch, frame.subscribe.epoch);
        const pubs = events.slice(before).filter((e) => e.source === sub.channel && e.name === 'publication').map((e) => ({ data: e.ctx.data, offset: e.ctx.offset }));
        assert.deepEqual(pubs, frame.subscribe.publications);
        assert.equal(sub.offset, Math.max(frame.subscribe.offset, ...frame.subscribe.publications.map((x) => x.offset)));
      } else if (frame.id !== undefined) {
        if (calls.has(frame.id)) {
          const { value, error } = await calls.get(frame.id);
          assert.equal(error, undefined);
          assert.deepEqual(value, frame[method], `${file}: ${method} result`);
        }
      } else if (frame.push) {
        const push = frame.push;
        const kind = methodOf(push.channel === undefined ? push : Object.fromEntries(Object.entries(push).filter(([k]) => k !== 'channel')));
        const fresh = events.slice(before);
        switch (kind) {
          case 'pub': {
            const ev = fresh.find((e) => e.name === 'publication');
            assert.ok(ev, `${file}: pub push emits publication`);
            assert.deepEqual(ev.ctx.data, push.pub.data);
            assert.equal(ev.ctx.offset, push.pub.offset);
            if (push.pub.info) assert.deepEqual(ev.ctx.info, push.pub.info);
            break;
          }
          case 'join':
          case 'leave':
            assert.deepEqual(fresh.find((e) => e.name === kind)?.ctx, { channel: push.channel, info: push[kind].info });
            break;
          case 'presence_diff': {
            // one join/leave event per change, in order
            const seen = fresh.filter((e) => e.name === 'join' || e.name === 'leave').map((e) => [e.name, e.ctx]);
            const want = push.presence_diff.changes.map((c) => (c.join ? ['join', { channel: push.channel, info: c.join }] : ['leave', { channel: push.channel, info: c.leave }]));
            assert.deepEqual(seen, want, `${file}: presence_diff emits each change`);
            break;
          }
          case 'presence_count':
            assert.deepEqual(fresh.find((e) => e.name === 'count')?.ctx, { channel: push.channel, ...push.presence_count });
            break;
          case 'subscribe':
            assert.equal(fresh.find((e) => e.name === 'subscribed')?.ctx.channel, push.channel);
            break;
          case 'unsubscribe':
            assert.equal(fresh.find((e) => e.name === 'unsubscribed')?.ctx.channel, push.channel);
            break;
          case 'message':
            assert.deepEqual(fresh.find((e) => e.name === 'message')?.ctx, { data: push.message.data });
            break;
          case 'refresh':
            await until(() => tokenCalls > 0 || received.some((f) => f.refresh), 1000, 'token refresh');
            break;
          case 'disconnect': {
            assert.deepEqual(fresh.find((e) => e.name === 'connecting')?.ctx, { code: push.disconnect.code, reason: push.disconnect.reason });
            // the next frames of the scenario go to the new connection (Math.random is 0
            // here, so the wait is the backoff floor whatever `delay_ms` says)
            const sockets = WS.instances.length;
            await client.ready(5000);
            assert.equal(WS.instances.length, sockets + 1, `${file}: reconnected after the disconnect push`);
            break;
          }
          default:
            assert.fail(`${file}: unhandled push kind ${kind}`);
        }
      }
    }
  });
}
