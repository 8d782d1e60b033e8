// How long the JS SDK takes to read (and write) a frame in each encoding: JSON.parse against
// the SDK's MessagePack decoder, on the golden frames' ticker-like push, a subscribe reply with
// history, and a 4 KiB binary push (base64 in JSON, raw bytes in MessagePack).
//   node bench/encoding-js.mjs        (figures in docs/protocol.md section 2.1)
import { encodeMsgpack, decodeMsgpack } from '../sdk/js/src/msgpack.js';

const tick = (i) => ({ data: { symbol: 'ACME', bid: 101.25 + i / 100, ask: 101.27 + i / 100, last: 101.26 + i / 100, volume: 1234567 + i * 10, ts: 1764680000123 + i }, offset: 1000 + i, info: { client: '4f1c2a9e-5d7b-4c1a-9e3f-0b6d8a2c7e11', user: 'feed' } });
const bytes = new Uint8Array(4096).map((_, i) => (i * 31) % 251);
const frames = {
  'ticker pub push': [{ push: { channel: 'ticker:ACME', pub: tick(1) } }, null],
  'subscribe reply, 10 recovered': [{ id: 2, subscribe: { recoverable: true, epoch: 'b12e5b771c9d5c23', offset: 1009, recovered: true, publications: Array.from({ length: 10 }, (_, i) => tick(i)), positioned: true } }, null],
  '4 KiB binary push': [
    { push: { channel: 'media:cam', pub: { b64data: Buffer.from(bytes).toString('base64'), offset: 9 } } },
    { push: { channel: 'media:cam', pub: { data: bytes, offset: 9 } } },
  ],
};

function time(f) {
  const samples = [];
  const end = performance.now() + 400;
  while (performance.now() < end || samples.length < 11) {
    const t = performance.now();
    for (let i = 0; i < 200; i++) f();
    samples.push(((performance.now() - t) / 200) * 1000);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1];
}

console.log('| frame | JSON.parse | SDK MessagePack decode | JSON.stringify | SDK MessagePack encode |');
console.log('|---|---:|---:|---:|---:|');
for (const [name, [jsonForm, binForm]] of Object.entries(frames)) {
  const text = JSON.stringify(jsonForm);
  const packed = encodeMsgpack([binForm ?? jsonForm]);
  // What the SDK gets to: for JSON a base64 payload still has to be decoded into bytes.
  const readJson = () => {
    const v = JSON.parse(text);
    if (v.push?.pub?.b64data) Buffer.from(v.push.pub.b64data, 'base64');
    return v;
  };
  const f = (x) => `${x.toFixed(2)} µs`;
  console.log(`| ${name} | ${f(time(readJson))} | ${f(time(() => decodeMsgpack(packed)))} | ${f(time(() => JSON.stringify(jsonForm)))} | ${f(time(() => encodeMsgpack([binForm ?? jsonForm])))} |`);
}
