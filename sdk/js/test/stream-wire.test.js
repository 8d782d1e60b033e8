// The stream demo's framing and WebM scanner (web/demo/stream/wire.js): a WebM file built here
// element by element (EBML header, live Segment, Tracks with an audio and a video track, live
// Clusters) is fed to the scanner cut at every position and at random: the pieces always add up
// to the file, the initialisation segment is the bytes before the first Cluster, and the join
// points are exactly the clusters whose first video block is a key frame. Frames round-trip and
// anything malformed decodes to null.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FLAG_INIT, FLAG_JOIN, HEADER_BYTES, WebmScanner, decodeFrame, decodeInit, encodeFrame, encodeInit, framePiece,
  MAX_HOLD_BYTES, videoTrackNumber,
} from '../../../web/demo/stream/wire.js';

const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
/** An element: ID bytes, a size (8-byte form for big ones, unknown when null), data. */
const el = (id, data, { unknown = false } = {}) => {
  if (unknown) return cat(Uint8Array.from(id), Uint8Array.from([0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), data);
  const size = data.length < 127 ? Uint8Array.from([0x80 | data.length])
    : Uint8Array.from([0x40 | (data.length >> 8), data.length & 0xff]);
  return cat(Uint8Array.from(id), size, data);
};
const uint = (id, v) => el(id, Uint8Array.from([v]));
const block = (track, key, len) => {
  const payload = new Uint8Array(len);
  // payload bytes that look like a Cluster ID must not fool the scanner
  payload.set([0x1f, 0x43, 0xb6, 0x75], 0);
  return el([0xa3], cat(Uint8Array.from([0x80 | track, 0, 0, key ? 0x80 : 0]), payload));
};
const cluster = (...blocks) => el([0x1f, 0x43, 0xb6, 0x75], cat(uint([0xe7], 0), ...blocks), { unknown: true });

const ebml = el([0x1a, 0x45, 0xdf, 0xa3], el([0x42, 0x82], new TextEncoder().encode('webm')));
const tracks = el([0x16, 0x54, 0xae, 0x6b], cat(
  el([0xae], cat(uint([0xd7], 1), uint([0x83], 2))), // audio
  el([0xae], cat(uint([0xd7], 2), uint([0x83], 1))), // video
));
const info = el([0x15, 0x49, 0xa9, 0x66], uint([0x2a, 0xd7, 0xb1], 1));
const segmentHead = cat(Uint8Array.from([0x18, 0x53, 0x80, 0x67, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), info, tracks);
const init = cat(ebml, segmentHead);
const clusters = [
  cluster(block(1, true, 30), block(2, true, 300), block(1, true, 30), block(2, false, 90)), // join
  cluster(block(1, true, 30), block(2, false, 200)), // a cluster starting with a delta frame
  cluster(block(2, true, 500), block(1, true, 40)), // join
  cluster(block(1, true, 30), block(1, true, 30), block(2, true, 20)), // join (audio first)
];
const file = cat(init, ...clusters);
const clusterStarts = [];
{
  let at = init.length;
  for (const c of clusters) { clusterStarts.push(at); at += c.length; }
}
const joinStarts = [clusterStarts[0], clusterStarts[2], clusterStarts[3]];

function run(cuts) {
  const scanner = new WebmScanner();
  const pieces = [];
  let prev = 0;
  for (const cut of [...cuts, file.length]) {
    pieces.push(...scanner.push(file.subarray(prev, cut)));
    prev = cut;
  }
  let at = 0;
  const joins = [];
  const expected = [];
  for (const p of pieces) {
    if (p.joinAt >= 0) joins.push(at + p.joinAt);
    // a piece holding several join points names the last (closest to live)
    const inside = joinStarts.filter((j) => j >= at && j < at + p.bytes.length);
    if (inside.length) expected.push(inside.at(-1));
    at += p.bytes.length;
  }
  return { scanner, pieces, joins, expected, bytes: cat(...pieces.map((p) => p.bytes)) };
}

test('the scanner finds the init segment and every key-frame cluster wherever the chunks are cut', () => {
  assert.equal(videoTrackNumber(init), 2);
  const seen = new Set();
  // one cut at every position, and two at every pair of nearby positions
  for (let a = 1; a < file.length; a++) {
    for (const extra of [null, a + 1, a + 7]) {
      const cuts = extra && extra < file.length ? [a, extra] : [a];
      const r = run(cuts);
      assert.equal(r.scanner.error, null, `cut at ${cuts}`);
      assert.deepEqual(r.bytes, file, `pieces add up to the file, cut at ${cuts}`);
      assert.deepEqual(r.scanner.init, init, `init, cut at ${cuts}`);
      assert.deepEqual(r.joins, r.expected, `join points, cut at ${cuts}`);
      if (cuts.length === 2 && cuts[1] - cuts[0] === 1) {
        // with most cuts every join point has a piece of its own: all three are found
        seen.add(r.joins.join());
      }
    }
  }
  // byte by byte: still exact
  const bytewise = run([...Array(file.length - 1).keys()].map((i) => i + 1));
  assert.deepEqual(bytewise.joins, joinStarts, 'byte by byte, every join point in its own piece');
  assert.ok(seen.has(joinStarts.join()), 'two cuts in a row find all three');
  // one push of the whole file: one piece, its last join point
  assert.deepEqual(run([]).joins, [joinStarts.at(-1)]);
  assert.deepEqual(bytewise.bytes, file);
});

test('a piece with a join point starts its cluster at joinAt', () => {
  const r = run([100, 400, 900]);
  for (const p of r.pieces.filter((x) => x.joinAt >= 0)) {
    assert.deepEqual([...p.bytes.subarray(p.joinAt, p.joinAt + 4)], [0x1f, 0x43, 0xb6, 0x75]);
  }
});

test('bytes that are not WebM stop the join points, never the bytes', () => {
  const scanner = new WebmScanner();
  const junk = Uint8Array.from([0x00, 0x00, 0x01, 0x02, 0x03]);
  const pieces = scanner.push(junk);
  assert.match(scanner.error, /unexpected bytes at offset 0/);
  assert.deepEqual(cat(...pieces.map((p) => p.bytes)), junk);
  assert.ok(pieces.every((p) => p.joinAt === -1));
});

test('frames round-trip; malformed frames and init bodies decode to null', () => {
  const body = Uint8Array.from([9, 8, 7, 6, 5]);
  const frame = encodeFrame({ flags: FLAG_JOIN, stream: 0xdeadbeef, seq: 42, joinAt: 3, time: 1764691200123.5 }, body);
  assert.equal(frame.length, HEADER_BYTES + body.length);
  const d = decodeFrame(frame);
  assert.deepEqual({ ...d, body: [...d.body] }, {
    flags: FLAG_JOIN, stream: 0xdeadbeef, seq: 42, joinAt: 3, time: 1764691200123.5, body: [9, 8, 7, 6, 5],
  });
  // joinAt past the body, a short frame, another version, not bytes
  assert.equal(decodeFrame(encodeFrame({ flags: FLAG_JOIN, stream: 1, seq: 0, joinAt: 5, time: 0 }, body)), null);
  assert.equal(decodeFrame(frame.subarray(0, HEADER_BYTES - 1)), null);
  assert.equal(decodeFrame(Uint8Array.from([2, ...frame.subarray(1)])), null);
  assert.equal(decodeFrame({ text: 'hi' }), null);

  const mime = 'video/webm;codecs=vp8,opus';
  const initFrame = decodeFrame(encodeFrame({ flags: FLAG_INIT, stream: 7, seq: 0, time: 1 }, encodeInit(mime, init)));
  const parsed = decodeInit(initFrame.body);
  assert.equal(parsed.mime, mime);
  assert.deepEqual(parsed.init, init);
  assert.equal(decodeInit(Uint8Array.from([0, 200, 1, 2])), null, 'MIME length past the end');
  assert.equal(decodeInit(encodeInit(mime, Uint8Array.from([1, 2, 3, 4, 5]))), null, 'not an EBML header');
});

test('a large piece goes out in numbered parts; only the part with the join point is flagged', () => {
  const bytes = Uint8Array.from({ length: 100 }, (_, i) => i);
  const frames = framePiece({ bytes, joinAt: 45 }, { stream: 5, seq: 10, time: 3, max: 40 }).map(decodeFrame);
  assert.deepEqual(frames.map((f) => [f.seq, f.body.length, f.flags, f.joinAt]), [
    [10, 40, 0, 0], [11, 40, FLAG_JOIN, 5], [12, 20, 0, 0],
  ]);
  assert.deepEqual(cat(...frames.map((f) => f.body)), bytes);
  assert.equal(frames[1].body[frames[1].joinAt], 45);
  // a small piece without a join point: one plain frame
  const one = framePiece({ bytes: bytes.subarray(0, 10), joinAt: -1 }, { stream: 5, seq: 0, time: 3, max: 40 });
  assert.deepEqual(one.map((f) => decodeFrame(f).flags), [0]);
});


test('random bytes never throw: frames and inits decode or are null, the scanner passes bytes on', () => {
  // mulberry32, seeded: a failure names its seed
  const rng = (seed) => () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let seed = 1; seed <= 300; seed++) {
    const r = rng(seed);
    const len = Math.floor(r() * 200);
    const junk = Uint8Array.from({ length: len }, () => Math.floor(r() * 256));
    if (seed % 3 === 0 && len > 2) junk[0] = 1; // version 1: reaches the header checks
    const frame = decodeFrame(junk);
    if (frame) assert.ok(!(frame.flags & FLAG_JOIN) || frame.joinAt < frame.body.length, `seed ${seed}`);
    const init = decodeInit(junk);
    if (init) assert.deepEqual([...init.init.subarray(0, 4)], [0x1a, 0x45, 0xdf, 0xa3], `seed ${seed}`);
    // the real file with some bytes flipped, cut at random: every byte still comes out once
    const damaged = file.slice();
    for (let i = 0; i < 3; i++) damaged[Math.floor(r() * damaged.length)] = Math.floor(r() * 256);
    const scanner = new WebmScanner();
    const out = [];
    let prev = 0;
    while (prev < damaged.length) {
      const next = Math.min(damaged.length, prev + 1 + Math.floor(r() * 300));
      for (const p of scanner.push(damaged.subarray(prev, next))) {
        assert.ok(p.joinAt < p.bytes.length, `seed ${seed}`);
        out.push(p.bytes);
      }
      prev = next;
    }
    const held = scanner.total - scanner.sent;
    assert.ok(held <= MAX_HOLD_BYTES, `seed ${seed}`);
    assert.deepEqual(cat(...out, damaged.subarray(damaged.length - held)), damaged, `seed ${seed}`);
  }
});

test('a cluster whose video block never comes holds bytes back at most MAX_HOLD_BYTES', () => {
  const scanner = new WebmScanner();
  let out = 0;
  out += scanner.push(init).reduce((n, p) => n + p.bytes.length, 0);
  // a cluster, then an element claiming 16 MiB: its first video block is out of reach
  out += scanner.push(Uint8Array.from([0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xec, 0x11, 0x00, 0x00, 0x00])).reduce((n, p) => n + p.bytes.length, 0);
  const chunk = new Uint8Array(16 * 1024);
  for (let i = 0; i < 40; i++) out += scanner.push(chunk).reduce((n, p) => n + p.bytes.length, 0);
  assert.ok(scanner.total - out <= MAX_HOLD_BYTES, `${scanner.total - out} bytes held back`);
  assert.ok(out > init.length, 'bytes flow on');
});

