// The ticker demo (/demo/ticker) in real headless Chromium against a real `kilat serve --dev`
// (whose in-process feed publishes 500 symbols through the HTTP API while someone watches):
// a second user's page shows every price at once from the latest-value cache, and a burst of
// 5 prices for each of 500 symbols ends with every symbol at its last price (per-key
// conflation drops no key). Screenshots: target/e2e/ticker-*.png (desktop light, phone dark).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DESKTOP, PHONE, eventually, screenshot, uniqueRoom, labelledPage, deviceContext } from './lib/browser.js';
import { setup, skipReason, withOpened } from './lib/harness.js';

const skip = skipReason();
const opts = { skip: skip ?? false };

async function openTicker(h, { viewport = DESKTOP, colorScheme = 'light', channel } = {}) {
  const context = await deviceContext(h.browser, { viewport, colorScheme });
  const page = await labelledPage(context, `${viewport === PHONE ? 'phone' : 'desktop'}-${colorScheme}`);
  const q = channel ? `?channel=${encodeURIComponent(channel)}` : '';
  await page.goto(`${h.server.url}/demo/ticker${q}`, { waitUntil: 'domcontentloaded' });
  return { context, page };
}

/** sym -> price text shown in the page's "All symbols" grid. */
const grid = (page) => page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll('#grid .cell')].map((c) => [c.dataset.sym, c.lastChild.textContent]),
));

const count = (page, id) => page.evaluate((i) => Number(document.getElementById(i).textContent), id);

describe('ticker demo', { timeout: 120000 }, () => {
  const h = setup('ticker', { skip });

  test('a second user sees every price at once, from the latest-value cache', opts, async () => {
    await withOpened('ticker', async (opened) => {
      const a = await openTicker(h);
      opened.push(a);
      // The first watcher wakes the feed, which publishes all 500 prices, then ticks.
      await eventually(async () => (await count(a.page, 'symbol-count')) >= 500,
        { timeout: 20000, message: 'the first page to know 500 symbols' });

      const b = await openTicker(h, { viewport: PHONE, colorScheme: 'dark' });
      opened.push(b);
      await eventually(async () => (await count(b.page, 'latest-count')) >= 500,
        { message: 'the new page to get 500 prices in its subscribe reply' });
      const shown = await grid(b.page);
      assert.equal(Object.keys(shown).length >= 500, true);
      assert.ok(Object.values(shown).every((p) => /^\d+\.\d\d$/.test(p)), 'every symbol has a price');
      // Both pages follow the live feed: the watchlist rows have prices and sparklines.
      await eventually(async () => (await a.page.locator('#watch-body tr .price').first().textContent()) !== '–');
      await screenshot(a.page, 'ticker-desktop-light');
      await screenshot(b.page, 'ticker-phone-dark');
    });
  });

  test('a burst of 5 prices for each of 500 symbols ends with every symbol at its last price', opts, async () => {
    const channel = `ticker:${uniqueRoom('burst')}`;
    await withOpened('ticker-burst', async (opened) => {
      const a = await openTicker(h, { channel });
      const b = await openTicker(h, { channel, viewport: PHONE });
      opened.push(a, b);
      for (const { page } of opened) {
        await eventually(() => page.evaluate(() => document.getElementById('status').textContent === 'live'),
          { message: 'the page to connect' });
      }
      // Give the subscriptions a moment to be acknowledged: wait for a first price to arrive.
      const post = (data) => fetch(`${h.server.url}/api/publish`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ channel, data }),
      }).then((r) => { assert.equal(r.status, 200); });
      await post({ sym: 'SYM000', p: 1 });
      for (const { page } of opened) {
        await eventually(async () => (await grid(page)).SYM000 === '1.00', { message: 'the first price' });
      }
      for (let round = 1; round <= 5; round++) {
        const batch = [];
        for (let i = 0; i < 500; i++) {
          batch.push(post({ sym: `SYM${String(i).padStart(3, '0')}`, p: round * 1000 + i }));
        }
        await Promise.all(batch);
      }
      for (const { page } of opened) {
        await eventually(async () => {
          const shown = await grid(page);
          return Object.keys(shown).length === 500
            && Object.entries(shown).every(([sym, p]) => p === `${5000 + Number(sym.slice(3))}.00`);
        }, { timeout: 20000, message: 'every symbol at its last price' });
        const updates = await page.evaluate(() => document.querySelectorAll('#grid .cell').length);
        assert.equal(updates, 500);
      }
    });
  });
});
