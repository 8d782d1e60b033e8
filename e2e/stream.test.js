// The live stream demo (/demo/stream) in real headless Chromium against a real `kilat serve
// --dev`: a broadcaster page records Chromium's fake camera and microphone
// (--use-fake-device-for-media-stream) with MediaRecorder and publishes WebM pieces as binary
// publications; a viewer page plays them with Media Source Extensions and its video's
// currentTime advances; a second viewer opening later (on a phone, dark) starts from the
// initialisation segment kept as the `.init` channel's latest value and plays too. The
// broadcaster sees both viewers (presence); a viewer slowed to a fifth of the speed jumps back
// to the live edge; forged pieces (garbage that claims to be a join point of the live
// recording, and frames that are not frames) stop a viewer at most until the next key frame;
// a viewer without WebSocket plays over SSE.
// Screenshots: target/e2e/stream-*.png.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, eventually, labelledPage, screenshot, uniqueRoom, deviceContext,
} from './lib/browser.js';
import { skipReason, withOpened } from './lib/harness.js';
import { KilatServer } from './lib/server.js';

const skip = skipReason();
const opts = { skip: skip ?? false };

/** Chromium's fake camera and microphone, accepted without a prompt; video may play unmuted. */
const MEDIA_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

async function openStream(h, room, { viewport = DESKTOP, colorScheme = 'light', label, noWebSocket = false }) {
  const context = await deviceContext(h.browser, { viewport, colorScheme });
  const page = await labelledPage(context, label);
  if (noWebSocket) {
    // before any page script runs, so the SDK finds no WebSocket and falls back to SSE
    await page.addInitScript(() => { delete window.WebSocket; });
  }
  await page.goto(`${h.server.url}/demo/stream?room=${room}`, { waitUntil: 'domcontentloaded' });
  await eventually(() => page.evaluate(() => document.getElementById('status').textContent.startsWith('live')),
    { message: `${label}: the page to connect` });
  return { context, page };
}

/** The viewer's <video>: currentTime, readyState, size, and the page's play state badge. */
const videoState = (page) => page.evaluate(() => {
  const v = document.getElementById('video');
  return {
    time: v.currentTime,
    ready: v.readyState,
    width: v.videoWidth,
    paused: v.paused,
    state: document.getElementById('play-state').dataset.state,
    latencyMs: Number(document.getElementById('latency').dataset.ms ?? NaN),
  };
});

/** Waits for the page to play and its video's currentTime to advance by `by` seconds. */
async function expectPlaying(page, { by = 1, timeout = 20000 } = {}) {
  const first = await eventually(async () => {
    const s = await videoState(page);
    return s.state === 'playing' && s.ready >= 3 && s.width > 0 && !s.paused ? s : false;
  }, { timeout, message: `${page.label}: the video to play` });
  const later = await eventually(async () => {
    const s = await videoState(page);
    return s.time >= first.time + by ? s : false;
  }, { timeout, message: `${page.label}: currentTime to advance by ${by} s from ${first.time}` });
  return { first, later };
}

describe('stream demo', { timeout: 120000 }, () => {
  const h = { server: null, browser: null };
  if (!skip) {
    before(async () => {
      h.server = await KilatServer.start('stream');
      h.browser = await chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...MEDIA_ARGS], timeout: 30000 });
    });
    after(async () => {
      await h.browser?.close().catch(() => {});
      await h.server?.stop().catch(() => {});
    });
  }

  test('a viewer plays the broadcast live; a viewer joining later plays within seconds', opts, async () => {
    const room = uniqueRoom('cam');
    await withOpened('stream', async (opened) => {
      const cast = await openStream(h, room, { label: 'broadcaster' });
      opened.push(cast);
      const viewer = await openStream(h, room, { label: 'viewer-desktop-light' });
      opened.push(viewer);

      await cast.page.click('[data-testid="go-live"]');
      await cast.page.waitForSelector('[data-testid="cast-state"][data-state="live"]');
      await eventually(() => cast.page.evaluate(() => /^[1-9]\d* pieces sent/.test(document.getElementById('cast-info').textContent)),
        { message: 'the broadcaster to publish pieces' });

      const v1 = await expectPlaying(viewer.page);
      assert.ok(v1.later.width > 0, 'the video has a picture');

      // A late joiner: the broadcast has been on for seconds, its first cluster long gone.
      const opening = Date.now();
      const late = await openStream(h, room, { label: 'viewer-phone-dark', viewport: PHONE, colorScheme: 'dark' });
      opened.push(late);
      const v2 = await expectPlaying(late.page, { by: 0.5 });
      const startMs = Date.now() - opening;
      const firstPlay = await late.page.evaluate(() => Number(document.getElementById('play-state').dataset.firstPlayMs));
      console.log(`stream e2e: the late viewer's video started playing ${firstPlay} ms after navigation start; `
        + `currentTime had advanced 0.5 s ${startMs} ms after the test opened the page`);
      assert.ok(firstPlay > 0 && firstPlay < 6000, `the late viewer started playing ${firstPlay} ms after navigation`);
      assert.ok(startMs < 10000, `the late viewer advanced 0.5 s within ${startMs} ms`);
      // the first viewer kept playing meanwhile
      const again = await videoState(viewer.page);
      assert.ok(again.time > v1.later.time, 'the first viewer still advances');

      // presence: the broadcaster sees both viewers (it does not watch itself)
      await eventually(() => cast.page.evaluate(() => document.getElementById('viewers').textContent === '2'),
        { message: 'the broadcaster to count 2 viewers' });
      // behind live: measured by the viewer, within the 2 s the page allows plus a piece
      const lag = await eventually(async () => {
        const s = await videoState(late.page);
        return Number.isFinite(s.latencyMs) ? s.latencyMs : false;
      }, { message: 'the late viewer to show its latency' });
      console.log(`stream e2e: the late viewer is ${lag} ms behind live`);
      assert.ok(lag < 4000, `behind live by ${lag} ms`);

      // A viewer that falls behind (played at a fifth of the speed, as a slow device would)
      // jumps to the live edge instead of drifting further back.
      await viewer.page.evaluate(() => { document.getElementById('video').playbackRate = 0.2; });
      await eventually(() => viewer.page.evaluate(() => Number(document.getElementById('jumps').textContent) >= 1),
        { message: 'the slowed viewer to jump to live' });
      await viewer.page.evaluate(() => { document.getElementById('video').playbackRate = 1; });
      const caughtUp = await eventually(async () => {
        const s = await videoState(viewer.page);
        return s.state === 'playing' && s.latencyMs < 2500 ? s : false;
      }, { message: 'the viewer to be back within 2.5 s of live' });
      await expectPlaying(viewer.page, { by: 0.5 });
      console.log(`stream e2e: after the jump the viewer is ${caughtUp.latencyMs} ms behind live`);

      await screenshot(cast.page, 'stream-broadcaster-desktop-light');
      await screenshot(viewer.page, 'stream-viewer-desktop-light');
      await screenshot(late.page, 'stream-viewer-phone-dark');
    });
  });

  test('forged pieces disturb a viewer at most until the next key frame', opts, async () => {
    const room = uniqueRoom('forged');
    const api = async (method, body) => {
      const res = await fetch(`${h.server.url}/api/${method}`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      assert.equal(res.status, 200, `${method}: ${await res.clone().text()}`);
      return (await res.json()).result;
    };
    await withOpened('stream-forged', async (opened) => {
      const cast = await openStream(h, room, { label: 'broadcaster' });
      opened.push(cast);
      const viewer = await openStream(h, room, { label: 'viewer' });
      opened.push(viewer);
      await cast.page.click('[data-testid="go-live"]');
      await expectPlaying(viewer.page);

      // The live recording's stream id, from the init segment's header (bytes 4..7), read
      // back through the server API like anyone could.
      const init = await api('history', { channel: `stream:${room}.init`, limit: 1, reverse: true });
      const header = Buffer.from(init.publications[0].b64data, 'base64');
      const stream = header.readUInt32BE(4);
      // a frame claiming to start a cluster of that recording, then random bytes; a frame of
      // another version; JSON instead of bytes
      const forged = Buffer.alloc(24 + 4096);
      forged[0] = 1;
      forged[1] = 1; // JOIN
      forged.writeUInt32BE(stream, 4);
      forged.writeUInt32BE(0x7fffffff, 8);
      forged.writeDoubleBE(Date.now(), 16);
      for (let i = 24; i < forged.length; i++) forged[i] = (i * 7919) & 0xff;
      forged.set([0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 24);
      const before = await videoState(viewer.page);
      await api('publish', { channel: `stream:${room}`, b64data: forged.toString('base64') });
      await api('publish', { channel: `stream:${room}`, b64data: Buffer.from([9, 9, 9]).toString('base64') });
      await api('publish', { channel: `stream:${room}`, data: { text: 'not media' } });

      // the viewer keeps (or gets back to) playing: the video advances past where it was
      await eventually(async () => {
        const s = await videoState(viewer.page);
        return s.state === 'playing' && !s.paused && s.ready >= 3 ? s : false;
      }, { timeout: 20000, message: 'the viewer to play after the forged pieces' });
      await expectPlaying(viewer.page, { by: 1 });
      const after = await videoState(viewer.page);
      assert.ok(after.time > before.time || after.latencyMs < 3000, 'the viewer is live again');
      assert.deepEqual(viewer.page.logs.filter((l) => l.startsWith('[pageerror]')), [], 'no uncaught error');
    });
  });

  test('a viewer without WebSocket plays over SSE (binary pieces as base64 in JSON)', opts, async () => {
    const room = uniqueRoom('sse');
    await withOpened('stream-sse', async (opened) => {
      const cast = await openStream(h, room, { label: 'broadcaster' });
      opened.push(cast);
      const viewer = await openStream(h, room, { label: 'viewer-sse', noWebSocket: true });
      opened.push(viewer);
      assert.match(await viewer.page.textContent('#status'), /\(sse\)/);
      await cast.page.click('[data-testid="go-live"]');
      await expectPlaying(viewer.page);
    });
  });
});
