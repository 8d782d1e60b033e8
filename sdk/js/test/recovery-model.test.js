// Randomised model test of the delivery guarantee as the SDK sees it: a scripted server
// publishes, drops the connection at random moments, answers resubscribes with the missed
// publications, and races duplicates and new publications around the subscribe reply. Whatever
// the interleaving, the application must see every offset exactly once, in order.
import test from 'node:test';
import assert from 'node:assert/strict';
import { Kilat } from '../src/kilat.js';
import { fakeWebSocket, until, sleep } from './fake.js';

/** A small deterministic PRNG (LCG), so a failing seed can be replayed. */
function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 0x100000000;
  };
}

for (let seed = 1; seed <= 25; seed++) {
  test(`random drops and races deliver every offset once, in order (seed ${seed})`, async (t) => {
    const r = rng(seed);
    let top = 0; // last offset published on the channel
    let live = null; // the socket currently subscribed on the "server"
    const pub = (offset) => ({ push: { channel: 'ch', pub: { data: `m${offset}`, offset } } });
    const server = (frame, socket) => {
      if (frame.connect) {
        socket.push({ id: frame.id, connect: { client: 'c', ping: 25 } });
        return;
      }
      if (!frame.subscribe) return;
      const { offset } = frame.subscribe;
      const recovering = typeof offset === 'number';
      // (out of contract, tolerated) duplicates of already-delivered offsets before the reply
      if (recovering && top > 0 && r() < 0.5) socket.push(pub(1 + Math.floor(r() * top)));
      const from = recovering ? offset : top;
      const publications = [];
      for (let o = from + 1; o <= top; o++) publications.push({ data: `m${o}`, offset: o });
      socket.push({ id: frame.id, subscribe: { recoverable: true, epoch: 'E', offset: top, recovered: recovering, publications, positioned: true } });
      // publications that arrived while history was read follow the reply
      const extra = Math.floor(r() * 3);
      for (let i = 0; i < extra; i++) socket.push(pub(++top));
      live = socket;
    };
    const WS = fakeWebSocket({ server });
    const client = new Kilat('ws://model.invalid/', { websocket: WS, minReconnectDelay: 1, maxReconnectDelay: 3 });
    t.after(() => client.disconnect());
    const sub = client.newSubscription('ch');
    const delivered = [];
    sub.on('publication', (p) => {
      assert.equal(p.data, `m${p.offset}`);
      delivered.push(p.offset);
    });
    sub.subscribe();
    client.connect();
    await sub.ready(2000);
    for (let step = 0; step < 150; step++) {
      const x = r();
      if (x < 0.55) {
        top++;
        if (live && live.readyState === 1) live.push(pub(top));
      } else if (x < 0.7) {
        if (live && live.readyState === 1 && top > 0) live.push(pub(1 + Math.floor(r() * top))); // duplicate
      } else if (x < 0.8) {
        if (live) live.serverClose(r() < 0.5 ? 1006 : 3001);
        live = null;
      } else {
        await sleep(r() < 0.5 ? 0 : 2);
      }
    }
    await until(() => sub.state === 'subscribed' && live && live.readyState === 1, 3000, 'final resubscribe');
    await until(() => delivered.length >= top, 3000, `all ${top} publications`);
    await sleep(5);
    assert.deepEqual(delivered, Array.from({ length: top }, (_, i) => i + 1));
    assert.ok(WS.instances.length > 3, `only ${WS.instances.length} connections: the model did not drop enough`);
  });
}
