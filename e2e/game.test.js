// The arena demo (/demo/game) in real headless Chromium against a real `kilat serve --dev`:
// two players see each other move, and with `kilat demo bots` (separate processes on the Rust
// client) in the room every player still arrives at about 20 updates a second. The player
// count and list come from the subscription's member map (presence diffs): the bots' joins
// raise it to 12 and their leaves, when their process ends, bring it back to 2.
// Screenshots: target/e2e/game-*.png (desktop light, phone dark).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { DESKTOP, PHONE, eventually, screenshot, uniqueRoom, labelledPage, deviceContext } from './lib/browser.js';
import { setup, skipReason, withOpened } from './lib/harness.js';
import { kilatBin } from './lib/server.js';

const skip = skipReason();
const opts = { skip: skip ?? false };

async function openGame(h, room, name, { viewport = DESKTOP, colorScheme = 'light' } = {}) {
  const context = await deviceContext(h.browser, { viewport, colorScheme, reducedMotion: null });
  const page = await labelledPage(context, name);
  await page.goto(`${h.server.url}/demo/game?room=${room}&name=${name}`, { waitUntil: 'domcontentloaded' });
  return { context, page };
}

/** Where `page` draws the player named `name` (its latest received state). */
const seen = (page, name) => page.evaluate((n) => {
  for (const o of window.kilatGame.others.values()) if (o.name === n) return o.states[o.states.length - 1];
  return null;
}, name);

describe('game demo', { timeout: 120000 }, () => {
  const h = setup('game', { skip });

  test('two players see each other move; a room with bots keeps 20 updates a second per player', opts, async () => {
    const room = uniqueRoom('arena');
    let bots = null;
    try {
      await withOpened('game', async (opened) => {
        const ana = await openGame(h, room, 'Ana');
        const bo = await openGame(h, room, 'Bo', { viewport: PHONE, colorScheme: 'dark' });
        opened.push(ana, bo);
        await eventually(async () => (await seen(bo.page, 'Ana')) && (await seen(ana.page, 'Bo')),
          { message: 'both players to see each other' });
        const before = await seen(bo.page, 'Ana');
        await ana.page.keyboard.down('ArrowRight');
        await eventually(async () => (await seen(bo.page, 'Ana')).x > before.x + 50, { message: 'Bo to see Ana move right' });
        await ana.page.keyboard.up('ArrowRight');
        // Bo moves by tapping: Ana sees it.
        const boBefore = await seen(ana.page, 'Bo');
        const box = await bo.page.locator('#arena').boundingBox();
        await bo.page.mouse.click(box.x + 5, box.y + 5);
        await eventually(async () => {
          const now = await seen(ana.page, 'Bo');
          return Math.hypot(now.x - boBefore.x, now.y - boBefore.y) > 50;
        }, { message: 'Ana to see Bo move' });

        bots = spawn(kilatBin(), ['demo', 'bots', '--room', room, '-n', '10', '--url', `${h.server.url.replace('http', 'ws')}/connection/websocket`], { stdio: 'inherit' });
        await eventually(async () => Number(await ana.page.textContent('#players')) === 12, { timeout: 20000, message: '10 bots in the room' });
        // Measured by the page over whole seconds, averaged per remote player.
        const rates = [];
        for (let i = 0; i < 4; i++) {
          await ana.page.waitForTimeout(1000); // sample once a second: the page's own 1 s counter
          rates.push(Number(await ana.page.textContent('#rate')));
        }
        const best = Math.max(...rates.slice(1));
        assert.ok(best >= 18 && best <= 22, `updates/s per player: ${rates.join(', ')}`);
        assert.equal(await ana.page.evaluate(() => window.kilatGame.members.size), 12, 'the member map holds the room');
        await screenshot(ana.page, 'game-desktop-light');
        await screenshot(bo.page, 'game-phone-dark');
        // The bots' process ends: their leaves (not silence) take them off both lists.
        bots.kill();
        for (const p of [ana.page, bo.page]) {
          await eventually(async () => Number(await p.textContent('#players')) === 2, { timeout: 20000, message: `${p.label}: the bots leave` });
          assert.equal(await p.locator('#roster li').count(), 2, `${p.label}: two players listed`);
        }
      });
    } finally {
      bots?.kill();
    }
  });
});
