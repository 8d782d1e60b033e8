// The live stream demo (/demo/stream) in real headless Chromium against a real `kilat serve
// --dev`: a broadcaster page records Chromium's fake camera and microphone
// (--use-fake-device-for-media-stream) with MediaRecorder and publishes WebM pieces as binary
// publications; a viewer page plays them with Media Source Extensions and its video's
// currentTime advances; a second viewer opening later (on a phone, dark) starts from the
// initialisation segment kept as the `.init` channel's latest value and plays too. The
// broadcaster sees both viewers (presence); a viewer slowed to a fifth of the speed jumps back
// to the live edge. Screenshots: target/e2e/stream-*.png.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import {
  CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, WAIT, dumpLogs, eventually, screenshot, uniqueRoom,
} from './lib/browser.js';
import { skipReason } from './lib/harness.js';
import { KilatServer } from './lib/server.js';

const skip = skipReason();
const opts = { skip: skip ?? false };

/** Chromium's fake camera and microphone, accepted without a prompt; video may play unmuted. */
const MEDIA_ARGS = [
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

async function openStream(h, room, { viewport = DESKTOP, colorScheme = 'light', label }) {
  const context = await h.browser.newContext({
    viewport,
    colorScheme,
    deviceScaleFactor: 1,
    isMobile: viewport === PHONE,
    hasTouch: viewport === PHONE,
    reducedMotion: 'reduce',
  });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  page.logs = [];
  page.label = label;
  page.on('console', (m) => page.logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[pageerror] ${e.message}`));
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
    const opened = [];
    try {
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
      console.log(`stream e2e: the late viewer played ${startMs} ms after its page opened (currentTime ${v2.later.time.toFixed(2)} s)`);
      assert.ok(startMs < 10000, `the late viewer started in ${startMs} ms`);
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
    } catch (err) {
      for (const { page } of opened) await screenshot(page, `stream-FAILED-${page.label}`).catch(() => {});
      dumpLogs(...opened.map((o) => o.page));
      throw err;
    } finally {
      for (const { context } of opened) await context.close().catch(() => {});
    }
  });
});
