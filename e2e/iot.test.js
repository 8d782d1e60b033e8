// The IoT demo (/demo/iot) in real headless Chromium against a real `kilat serve --dev`, with a
// device as its own process (`kilat demo device`, the Rust client): a command from one page
// reaches the device and its acknowledgement comes back (the other page sees the relay switch),
// and a command sent while the device is down times out, then runs once when the device comes
// back. Screenshots: target/e2e/iot-*.png (desktop light, phone dark).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DESKTOP, PHONE, eventually, screenshot, uniqueRoom, labelledPage, deviceContext } from './lib/browser.js';
import { setup, skipReason, withOpened } from './lib/harness.js';
import { kilatBin } from './lib/server.js';

const skip = skipReason();
const opts = { skip: skip ?? false };

async function openIot(h, { viewport = DESKTOP, colorScheme = 'light', timeout = 5000, label }) {
  const context = await deviceContext(h.browser, { viewport, colorScheme, reducedMotion: null });
  const page = await labelledPage(context, label);
  await page.goto(`${h.server.url}/demo/iot?timeout=${timeout}`, { waitUntil: 'domcontentloaded' });
  return { context, page };
}

/** A device process; `executed` collects the command ids it ran (one stdout line each). */
function startDevice(h, id, state) {
  const child = spawn(kilatBin(), ['demo', 'device', '--id', id, '--state', state, '--url', `${h.server.url.replace('http', 'ws')}/connection/websocket`], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.executed = [];
  let buf = '';
  child.stdout.on('data', (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const m = /^executed (\S+)/.exec(line);
      if (m) child.executed.push(m[1]);
    }
  });
  return child;
}

describe('iot demo', { timeout: 120000 }, () => {
  const h = setup('iot', { skip });

  test('a command reaches the device process and is acknowledged; an offline command runs once after the device returns', opts, async () => {
    const id = uniqueRoom('boiler');
    const state = join(mkdtempSync(join(tmpdir(), 'kilat-iot-e2e-')), 'device.json');
    const executed = [];
    let device = startDevice(h, id, state);
    try {
      await withOpened('iot', async (opened) => {
        const a = await openIot(h, { timeout: 1500, label: 'desktop' });
        const b = await openIot(h, { viewport: PHONE, colorScheme: 'dark', label: 'phone' });
        opened.push(a, b);
        const cardOf = (page) => page.locator(`[data-device="${id}"]`);
        for (const { page } of opened) {
          await eventually(async () => (await cardOf(page).locator('.online').textContent()) === 'online', { message: 'the device online' });
        }
        await cardOf(a.page).locator('.toggle').click();
        await cardOf(a.page).locator('.log li[data-status="done"]').waitFor();
        assert.match(await cardOf(a.page).locator('.log li').first().textContent(), /relay done in \d+ ms/);
        await eventually(async () => (await cardOf(b.page).locator('.relay').textContent()) === 'on', { message: 'the other page to see the relay on' });
        executed.push(...device.executed);
        assert.equal(executed.length, 1);
        await screenshot(a.page, 'iot-desktop-light');
        await screenshot(b.page, 'iot-phone-dark');

        // The device goes down; a command sent now times out for the sender ...
        device.kill('SIGKILL');
        await eventually(async () => (await cardOf(a.page).locator('.online').textContent()) === 'offline', { message: 'the device offline' });
        await cardOf(a.page).locator('.toggle').click();
        await cardOf(a.page).locator('.log li[data-status="timeout"]').waitFor();
        // ... and runs once when the device comes back from its saved position.
        device = startDevice(h, id, state);
        await cardOf(a.page).locator('.log li[data-status="done"]').nth(1).waitFor({ timeout: 15000 });
        assert.match(await cardOf(a.page).locator('.log li').first().textContent(), /\(late\)/);
        await eventually(async () => (await cardOf(b.page).locator('.relay').textContent()) === 'off', { message: 'the relay switched back' });
        assert.equal(device.executed.length, 1, `ran after the restart: ${device.executed}`);
        assert.notEqual(device.executed[0], executed[0], 'the first command did not run again');
      });
    } finally {
      device.kill('SIGKILL');
    }
  });
});
