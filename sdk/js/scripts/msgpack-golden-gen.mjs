// Writes crates/kilat-protocol/tests/fixtures/msgpack/frames.json: every frame of the JSON
// golden scenarios, plus binary-payload frames, with its MessagePack bytes as made by
// @msgpack/msgpack (an implementation independent of both the server's transcoder and the SDK's
// codec, which the Rust and JS tests then check against these bytes).
// Run from sdk/js: `node scripts/msgpack-golden-gen.mjs` after changing a scenario fixture
// (outside test/, so `node --test test/` never rewrites the fixture).
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { encode } from '@msgpack/msgpack';

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, '../../../crates/kilat-protocol/tests/fixtures');

/** The binary form of a JSON frame: every `b64data` member is a `data` member of bytes. */
export function toBinaryForm(v) {
  if (Array.isArray(v)) return v.map(toBinaryForm);
  if (v === null || typeof v !== 'object') return v;
  const out = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === 'b64data' && typeof x === 'string') out.data = new Uint8Array(Buffer.from(x, 'base64'));
    else out[k] = toBinaryForm(x);
  }
  return out;
}

/** Builds the fixture (only when this file is run, not when a test imports toBinaryForm). */
function generate() {
const entries = [];
for (const file of readdirSync(dir).filter((f) => f.endsWith('.json') && f !== 'invalid_client_frames.json').sort()) {
  for (const { direction, frame } of JSON.parse(readFileSync(join(dir, file), 'utf8'))) {
    entries.push({ source: file, direction, json: JSON.stringify(frame) });
  }
}
const bytes = Buffer.from([0x1a, 0x45, 0xdf, 0xa3, 0x00, 0xff, 0x0a, 0x7b, 0x22]).toString('base64');
const big = Buffer.alloc(300, 7).toString('base64');
for (const [direction, frame] of [
  ['client', { id: 2, publish: { channel: 'media:cam', b64data: bytes } }],
  ['server', { push: { channel: 'media:cam', pub: { b64data: bytes, offset: 4 } } }],
  ['server', { push: { channel: 'media:cam', pub: { b64data: big, offset: 5, info: { client: 'c1', user: 'u' } } } }],
  ['server', { id: 3, history: { publications: [{ b64data: bytes, offset: 4 }, { data: { json: true }, offset: 5 }], offset: 5, epoch: 'e1' } }],
  ['server', { id: 4, subscribe: { recoverable: true, epoch: 'e1', offset: 4, recovered: false, publications: [{ b64data: '', offset: 4 }], positioned: true, latest: true } }],
]) {
  entries.push({ source: 'binary payloads', direction, json: JSON.stringify(frame) });
}
for (const e of entries) e.msgpack = Buffer.from(encode(toBinaryForm(JSON.parse(e.json)))).toString('hex');
mkdirSync(join(dir, 'msgpack'), { recursive: true });
writeFileSync(join(dir, 'msgpack/frames.json'), '[\n' + entries.map((e) => '  ' + JSON.stringify(e)).join(',\n') + '\n]\n');
console.log(`${entries.length} frames written`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) generate();
