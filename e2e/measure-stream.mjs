// Bytes on the wire per viewer of /demo/stream, JSON vs MessagePack encoding: a broadcaster
// page (fake camera and microphone) and one viewer per encoding in headless Chromium against
// `kilat serve --dev`; each viewer's received WebSocket bytes are counted for 20 s.
// Not a test (node --test does not pick it up); docs/use-cases.md quotes its output.
//
//   cd e2e && KILAT_BIN=$PWD/../target/debug/kilat node measure-stream.mjs
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS } from './lib/browser.js';
import { KilatServer } from './lib/server.js';
const server = await KilatServer.start('stream-measure');
const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] });
const open = async (q) => { const p = await (await browser.newContext()).newPage(); await p.goto(`${server.url}/demo/stream?room=m&${q}`); return p; };
const cast = await open('');
const viewers = {};
for (const enc of ['json', 'msgpack']) {
  const p = await open(`encoding=${enc}`);
  viewers[enc] = { p, bytes: 0, frames: 0 };
  p.on('websocket', (ws) => ws.on('framereceived', (f) => { viewers[enc].bytes += typeof f.payload === 'string' ? Buffer.byteLength(f.payload) : f.payload.length; viewers[enc].frames++; }));
  await p.reload();
}
await new Promise((r) => setTimeout(r, 1500));
await cast.click('#go-live');
await new Promise((r) => setTimeout(r, 3000));
for (const v of Object.values(viewers)) { v.bytes = 0; v.frames = 0; }
const t0 = Date.now();
await new Promise((r) => setTimeout(r, 20000));
const secs = (Date.now() - t0) / 1000;
const sent = await cast.evaluate(() => document.getElementById('cast-info').textContent);
for (const [enc, v] of Object.entries(viewers)) {
  const media = await v.p.evaluate(() => document.getElementById('received').textContent);
  console.log(`${enc}: ${(v.bytes / secs / 1024).toFixed(1)} KiB/s on the wire, ${v.frames} frames in ${secs.toFixed(1)} s (pieces received ${media})`);
}
console.log('broadcaster:', sent);
await browser.close(); await server.stop();
