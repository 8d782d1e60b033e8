// The board demo's merge (web/demo/board/crdt.js): a randomized convergence test with many
// replicas, random concurrent edits, random delivery order, duplicates, replicas that go offline
// and come back, and late joiners that start from a peer's snapshot; plus the text's intention
// rules and the refusal of malformed updates.
//
// Seeds: BOARD_CRDT_SEED=n runs one seed (to replay a failure); the failing seed is in the
// assertion message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BoardDoc, LIMITS, mergeDeltas, splitUpdate } from '../../../web/demo/board/crdt.js';

/** mulberry32: a small seeded PRNG so a failure can be replayed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const COLORS = ['#ff6b6b', '#ffd23f', '#3ecf8e', '#5b5bf7'];
const ALPHABET = 'abcdefghij XYZ😀';

/** One random local edit on `doc`; returns the delta (or null when nothing applied). */
function randomEdit(doc, rand) {
  const pick = (list) => list[Math.floor(rand() * list.length)];
  const shapes = doc.shapeList();
  const r = rand();
  if (r < 0.15 || shapes.length === 0) {
    return doc.createShape({ kind: pick(['rect', 'ellipse', 'note']), x: Math.floor(rand() * 800), y: Math.floor(rand() * 600), w: 80, h: 60, color: pick(COLORS), text: '' }).delta;
  }
  if (r < 0.35) return doc.updateShape(pick(shapes).id, { x: Math.floor(rand() * 800), y: Math.floor(rand() * 600) });
  if (r < 0.42) return doc.updateShape(pick(shapes).id, { color: pick(COLORS), w: 20 + Math.floor(rand() * 200) });
  if (r < 0.47) return doc.updateShape(pick(shapes).id, { text: pick(['todo', 'done', 'later', '']) });
  if (r < 0.52) return doc.deleteShape(pick(shapes).id);
  const len = doc.text().length;
  if (r < 0.85 || len === 0) {
    let s = '';
    const n = 1 + Math.floor(rand() * 4);
    for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(rand() * (ALPHABET.length - 2))];
    if (rand() < 0.05) s += '😀';
    return doc.insertText(Math.floor(rand() * (len + 1)), s);
  }
  const at = Math.floor(rand() * len);
  return doc.deleteText(at, 1 + Math.floor(rand() * 3));
}

function shuffle(list, rand) {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [list[i], list[j]] = [list[j], list[i]];
  }
  return list;
}

function applyOk(doc, delta) {
  const res = doc.apply(delta);
  assert.deepEqual(res.errors, [], 'a valid update must merge without errors');
}

/**
 * One run: `n` replicas, `steps` rounds. Each round some replicas edit; the network holds every
 * delta and delivers each to each replica at a random later round, sometimes twice; offline
 * replicas neither send nor receive until they reconnect. Late joiners appear mid-run and
 * start from one peer's snapshot.
 */
function simulate(seed, { n = 5, steps = 300, joiners = 2 } = {}) {
  const rand = rng(seed);
  const replicas = [];
  const log = []; // every delta ever published, in publication order (a channel's history)
  /** per replica: indices of log entries not yet delivered */
  const pending = [];
  const offline = [];
  const outbox = []; // deltas made while offline, per replica
  const add = (doc) => {
    replicas.push(doc);
    pending.push(new Set());
    offline.push(false);
    outbox.push([]);
  };
  for (let i = 0; i < n; i++) add(new BoardDoc(`r${i}`));

  const publish = (from, delta) => {
    const idx = log.push(delta) - 1;
    for (let j = 0; j < replicas.length; j++) if (j !== from) pending[j].add(idx);
  };

  for (let step = 0; step < steps; step++) {
    for (let i = 0; i < replicas.length; i++) {
      if (rand() < 0.5) {
        const delta = randomEdit(replicas[i], rand);
        if (!delta) continue;
        if (offline[i]) outbox[i].push(delta);
        else publish(i, delta);
      }
    }
    // delivery: random subset, random order, some duplicated
    for (let j = 0; j < replicas.length; j++) {
      if (offline[j]) continue;
      const ready = shuffle([...pending[j]].filter(() => rand() < 0.4), rand);
      for (const idx of ready) {
        applyOk(replicas[j], log[idx]);
        if (rand() < 0.1) applyOk(replicas[j], log[idx]); // a duplicate
        pending[j].delete(idx);
      }
    }
    // go offline / reconnect
    for (let i = 0; i < replicas.length; i++) {
      if (!offline[i] && rand() < 0.02) offline[i] = true;
      else if (offline[i] && rand() < 0.1) {
        offline[i] = false;
        // reconnect: publish what was edited offline as one merged update
        if (outbox[i].length > 0) publish(i, mergeDeltas(replicas[i].replica, outbox[i]));
        outbox[i] = [];
      }
    }
    // a late joiner starts from a random online peer's snapshot and then gets live updates
    if (joiners > 0 && rand() < 2 / steps) {
      const peers = replicas.map((_, i) => i).filter((i) => !offline[i]);
      if (peers.length > 0) {
        joiners -= 1;
        const peer = peers[Math.floor(rand() * peers.length)];
        const doc = new BoardDoc(`late${replicas.length}`);
        applyOk(doc, replicas[peer].snapshot());
        add(doc);
        // everything published so far that the peer has not seen yet still reaches the joiner
        for (const idx of pending[peer]) pending[replicas.length - 1].add(idx);
      }
    }
  }
  // the end: everyone reconnects and every message is delivered (in a random order)
  for (let i = 0; i < replicas.length; i++) {
    if (offline[i] && outbox[i].length > 0) publish(i, mergeDeltas(replicas[i].replica, outbox[i]));
    offline[i] = false;
  }
  for (let j = 0; j < replicas.length; j++) {
    for (const idx of shuffle([...pending[j]], rand)) applyOk(replicas[j], log[idx]);
  }
  return replicas;
}

const seeds = process.env.BOARD_CRDT_SEED ? [Number(process.env.BOARD_CRDT_SEED)] : Array.from({ length: 40 }, (_, i) => 1000 + i * 7919);

test('random concurrent edits, reordering, duplicates, offline replicas and late joiners converge', () => {
  let totalChars = 0;
  let totalShapes = 0;
  for (const seed of seeds) {
    const replicas = simulate(seed);
    const want = JSON.stringify(replicas[0].snapshot());
    for (const doc of replicas) {
      assert.equal(JSON.stringify(doc.snapshot()), want, `seed ${seed}: replica ${doc.replica} differs from ${replicas[0].replica}`);
      assert.equal(doc.text(), replicas[0].text(), `seed ${seed}: text of ${doc.replica}`);
      assert.deepEqual(doc.shapeList(), replicas[0].shapeList(), `seed ${seed}: shapes of ${doc.replica}`);
    }
    totalChars += replicas[0].text().length;
    totalShapes += replicas[0].shapeList().length;
  }
  // the runs must have produced real documents, not empty ones that trivially agree
  assert.ok(totalChars > seeds.length * 20, `texts too short to mean anything (${totalChars} chars)`);
  assert.ok(totalShapes > seeds.length, `too few shapes survived (${totalShapes})`);
});

test('a snapshot merged into an empty replica reproduces the document exactly', () => {
  const replicas = simulate(42, { n: 3, steps: 200, joiners: 0 });
  const fresh = new BoardDoc('fresh');
  applyOk(fresh, replicas[1].snapshot());
  assert.equal(JSON.stringify(fresh.snapshot()), JSON.stringify(replicas[1].snapshot()));
  assert.ok(replicas[0].coveredBy(fresh.snapshot()));
  // and a replica with one more edit is not covered by the older snapshot
  const older = fresh.snapshot();
  replicas[0].insertText(0, 'new');
  assert.equal(replicas[0].coveredBy(older), false);
});

test('typing in sequence gives the typed text; concurrent runs at one place never interleave', () => {
  const a = new BoardDoc('a');
  const b = new BoardDoc('b');
  const d0 = a.insertText(0, 'Hello world');
  b.apply(d0);
  // both type in the middle at once, character by character
  const da = [];
  const db = [];
  for (const [i, ch] of [...'AAA'].entries()) da.push(a.insertText(5 + i, ch));
  for (const [i, ch] of [...'bbbb'].entries()) db.push(b.insertText(5 + i, ch));
  for (const d of db) a.apply(d);
  for (const d of da.reverse()) b.apply(d);
  assert.equal(a.text(), b.text());
  assert.match(a.text(), /^Hello(AAAbbbb|bbbbAAA) world$/);
  // delete concurrently with an insert inside the deleted range: the insert survives
  const del = a.deleteText(0, 5);
  const ins = b.insertText(2, '!');
  a.apply(ins);
  b.apply(del);
  assert.equal(a.text(), b.text());
  assert.ok(a.text().startsWith('!'), a.text());
});

test('a move that races a delete does not bring the shape back; concurrent moves pick one winner', () => {
  const a = new BoardDoc('a');
  const b = new BoardDoc('b');
  const { id, delta } = a.createShape({ kind: 'rect', x: 0, y: 0, w: 10, h: 10, color: '#000000' });
  b.apply(delta);
  const del = a.deleteShape(id);
  const move = b.updateShape(id, { x: 50 });
  a.apply(move);
  b.apply(del);
  assert.equal(a.shape(id), null);
  assert.equal(b.shape(id), null);

  const { id: id2, delta: c2 } = a.createShape({ kind: 'note', x: 0, y: 0, w: 10, h: 10, color: '#000000', text: 'hi' });
  b.apply(c2);
  const ma = a.updateShape(id2, { x: 100, y: 100 });
  const mb = b.updateShape(id2, { x: 200, y: 200 });
  b.apply(ma);
  a.apply(mb);
  assert.deepEqual(a.shape(id2), b.shape(id2));
  assert.ok([100, 200].includes(a.shape(id2).x));
  assert.equal(a.shape(id2).x, a.shape(id2).y, 'both coordinates come from the same move');
});

test('malformed updates are refused with reasons, never throw, and leave the state alone', () => {
  const doc = new BoardDoc('me');
  doc.insertText(0, 'keep');
  doc.createShape({ kind: 'rect', x: 1, y: 2, w: 3, h: 4, color: '#123456' });
  const before = JSON.stringify(doc.snapshot());
  const bad = [
    null,
    42,
    'text',
    [],
    { s: [] },
    { s: { 'bad id!': { x: [1, 1, 'r'] } } },
    { s: { ok: { x: ['1', 5, 'r'] } } },
    { s: { ok: { x: [1, -5, 'r'] } } },
    { s: { ok: { x: [1, 5, 'bad replica!'] } } },
    { s: { ok: { nope: [1, 5, 'r'] } } },
    { s: { ok: { x: [1e12, 5, 'r'] } } },
    { s: { ok: { color: ['red', 5, 'r'] } } },
    { s: { ok: { text: ['x'.repeat(LIMITS.maxStringProp + 1), 5, 'r'] } } },
    { s: { ok: { kind: ['triangle', 5, 'r'] } } },
    { t: { e: 'abc' } },
    { t: { e: [[1, 'r', 0, '', '']] } },
    { t: { e: [[5, 'r', 9, 'r', 'x']] } }, // origin newer than the character: a cycle
    { t: { e: [[5, 'r', 0, 'x y', 'x']] } },
    { t: { e: [[Number.MAX_SAFE_INTEGER, 'r', 0, '', 'xy']] } },
    { t: { d: [['r', 1, 0]] } },
    { t: { d: [['r', 1, 1e9]] } },
    { t: { d: 'all' } },
  ];
  for (const update of bad) {
    let res;
    assert.doesNotThrow(() => {
      res = doc.apply(update);
    }, `update ${JSON.stringify(update)?.slice(0, 80)}`);
    assert.ok(res.errors.length > 0, `no error for ${JSON.stringify(update)?.slice(0, 80)}`);
  }
  assert.equal(JSON.stringify(doc.snapshot()), before);

  // a character that contradicts a known one (same id, other content) is reported, and every
  // replica settles on the same variant whichever arrives first
  const known = doc.snapshot().t.e[0];
  const forged = { t: { e: [[known[0], known[1], known[2], known[3], 'X']] } };
  const other = new BoardDoc('other');
  other.apply(forged);
  other.apply(doc.snapshot());
  const res = doc.apply(forged);
  assert.match(res.errors.join(), /conflicts/);
  assert.equal(doc.text(), other.text());
  assert.equal(doc.text(), 'Xeep', 'the smaller variant wins everywhere');
  doc.apply({ t: { e: [[known[0], known[1], known[2], known[3], 'k']] } });
  const before2 = JSON.stringify(doc.snapshot());

  // too many entries in one update: the valid prefix is applied, the rest refused with a reason
  const huge = { t: { d: Array.from({ length: LIMITS.maxEntries + 5 }, (_, i) => ['zz', i + 1, 1]) } };
  const r2 = doc.apply(huge);
  assert.match(r2.errors.join(), /more than/);
  assert.equal(JSON.stringify(doc.snapshot()).length > before2.length, true, 'the valid prefix was applied');
  assert.equal(doc.text(), 'Xeep');
});

test('characters that arrive before their origin wait for it, then take their place', () => {
  const a = new BoardDoc('a');
  const d1 = a.insertText(0, 'ab');
  const d2 = a.insertText(2, 'cd');
  const d3 = a.deleteText(1, 2); // deletes b and c
  const b = new BoardDoc('b');
  b.apply(d3);
  b.apply(d2);
  assert.equal(b.text(), '', 'nothing visible before the origin arrives');
  b.apply(d1);
  assert.equal(b.text(), 'ad');
  assert.equal(JSON.stringify(b.snapshot()), JSON.stringify(a.snapshot()));
});

/** A random JSON value, biased towards the shapes updates have. */
function junk(rand, depth = 0) {
  const pick = (list) => list[Math.floor(rand() * list.length)];
  const r = rand();
  if (depth > 3 || r < 0.3) return pick([0, -1, 1, 1.5, 2 ** 53, NaN, '', 'x', 'a@b', '#ffffff', null, true, false, 'rect', '\u{1F600}']);
  if (r < 0.6) return Array.from({ length: Math.floor(rand() * 6) }, () => junk(rand, depth + 1));
  const o = {};
  for (let i = Math.floor(rand() * 4); i > 0; i--) o[pick(['s', 't', 'e', 'd', 'x', 'kind', 'del', 'r0.1', '__proto__', 'constructor'])] = junk(rand, depth + 1);
  return o;
}

/** Mutates one leaf or element of a valid update. */
function mutate(value, rand) {
  const copy = JSON.parse(JSON.stringify(value));
  const paths = [];
  const walk = (v, path) => {
    paths.push(path);
    if (v && typeof v === 'object') for (const k of Object.keys(v)) walk(v[k], [...path, k]);
  };
  walk(copy, []);
  const path = paths[Math.floor(rand() * paths.length)];
  if (path.length === 0) return junk(rand);
  let parent = copy;
  for (const k of path.slice(0, -1)) parent = parent[k];
  parent[path[path.length - 1]] = junk(rand);
  return copy;
}

test('fuzz: random and mutated updates never throw, and replicas that get the same ones still agree', () => {
  const seedsFuzz = process.env.BOARD_CRDT_SEED ? [Number(process.env.BOARD_CRDT_SEED)] : Array.from({ length: 20 }, (_, i) => 77 + i);
  let refused = 0;
  for (const seed of seedsFuzz) {
    const rand = rng(seed);
    const author = new BoardDoc('author');
    const a = new BoardDoc('a');
    const b = new BoardDoc('b');
    const stream = [];
    for (let i = 0; i < 150; i++) {
      const valid = randomEdit(author, rand);
      if (!valid) continue;
      stream.push(valid);
      if (rand() < 0.5) stream.push(mutate(valid, rand));
      if (rand() < 0.2) stream.push(junk(rand));
    }
    for (const u of stream) {
      let res;
      assert.doesNotThrow(() => (res = a.apply(u)), `seed ${seed}: ${JSON.stringify(u)?.slice(0, 120)}`);
      refused += res.errors.length > 0 ? 1 : 0;
    }
    for (const u of shuffle([...stream], rand)) b.apply(u);
    assert.equal(JSON.stringify(a.snapshot()), JSON.stringify(b.snapshot()), `seed ${seed}: same updates, different order`);
    assert.doesNotThrow(() => a.text() + JSON.stringify(a.shapeList()));
  }
  assert.ok(refused > 100, `the fuzzer should hit the validation often (${refused} refusals)`);
});

test('a snapshot larger than one publication splits into parts that fit and merge back whole', () => {
  const rand = rng(5);
  const reps = ['a', 'b', 'c'].map((r) => new BoardDoc(r));
  for (let i = 0; i < 3000; i++) {
    const d = reps[i % 3];
    const delta = i % 10 === 0 ? randomEdit(d, rand) : d.insertText(Math.floor(rand() * (d.text().length + 1)), 'x');
    if (delta) for (const o of reps) if (o !== d) applyOk(o, delta);
  }
  // and one long run, longer than a part may be
  const long = reps[0].insertText(0, 'L'.repeat(9000));
  for (const o of reps.slice(1)) applyOk(o, long);
  const snap = reps[0].snapshot();
  const max = 8000;
  const parts = splitUpdate(snap, max);
  assert.ok(parts.length > 5, `only ${parts.length} parts`);
  for (const p of parts) assert.ok(JSON.stringify(p).length <= max, `a part of ${JSON.stringify(p).length} bytes`);
  const fresh = new BoardDoc('fresh');
  for (const p of shuffle([...parts], rand)) applyOk(fresh, p);
  assert.equal(JSON.stringify(fresh.snapshot()), JSON.stringify(snap));
  assert.equal(fresh.text(), reps[2].text());
  assert.deepEqual(splitUpdate({ t: { e: [[1, 'a', 0, '', 'hi']] } }, max), [{ t: { e: [[1, 'a', 0, '', 'hi']] } }]);
});
