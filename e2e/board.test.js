// The board demo (/demo/board) in real headless Chromium against a real `kilat serve --dev`:
// two users moving the same shape at once, typing in the same paragraph at once, a late third
// page that gets the whole document (from a peer's snapshot, then from history alone with
// nobody online), a page cut off and edited offline that merges on reconnect, bad input, and a
// user who may not write. Screenshots: target/e2e/board-*.png (desktop and phone, light and dark).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Network, PHONE, eventually, launchBrowser, screenshot, uniqueRoom } from './lib/browser.js';
import { setup, skipReason } from './lib/harness.js';
import { KilatServer } from './lib/server.js';
import { boardState, drag, expectConverged, waitSynced, withBoards } from './lib/board.js';

const skip = skipReason();
const opts = { skip: skip ?? false };

/** The shape a page just created (it is selected after creation). */
const selected = (page) => page.evaluate(() => window.kilatBoard.state.selected);

/** Board units per screen pixel on this page. */
const scaleOf = (page) => page.evaluate(() => window.kilatBoard.state.scale);

async function caretAt(page, index) {
  await page.focus('[data-testid="text"]');
  await page.evaluate((i) => document.querySelector('[data-testid="text"]').setSelectionRange(i, i), index);
}

/** A config file for a second server: the `board` namespace with the given options. */
function configFile(name, toml) {
  const dir = mkdtempSync(join(tmpdir(), 'kilat-board-e2e-'));
  const file = join(dir, `${name}.toml`);
  writeFileSync(file, toml);
  return file;
}

describe('board demo', { timeout: 240000 }, () => {
  const h = setup('board', { skip });

  test('concurrent moves of the same shape converge in both pages; cursors carry names', opts, async () => {
    await withBoards(h, 'board-moves', async (open) => {
      const doc = uniqueRoom('moves');
      const ana = await open({ name: 'Ana', doc });
      await waitSynced(ana);
      const bo = await open({ name: 'Bo', doc });
      await waitSynced(bo);

      await ana.click('[data-testid="add-rect"]');
      const id = await selected(ana);
      await bo.waitForSelector(`[data-testid="shape"][data-id="${id}"]`);
      const start = (await expectConverged([ana, bo])).shapes.find((s) => s.id === id);

      // both drag it at the same time, in different directions, with real mouse events
      await Promise.all([drag(ana, id, 160, 40), drag(bo, id, -140, 100)]);
      const end = await expectConverged([ana, bo], { message: 'the concurrent moves to converge' });
      const shape = end.shapes.find((s) => s.id === id);
      const scale = await scaleOf(ana);
      const targets = [
        { x: start.x + 160 / scale, y: start.y + 40 / scale },
        { x: start.x - 140 / scale, y: start.y + 100 / scale },
      ];
      // one of the two moves won, whole (x and y from the same move), in both pages
      assert.ok(
        targets.some((t) => Math.abs(t.x - shape.x) <= 2 && Math.abs(t.y - shape.y) <= 2),
        `final position ${shape.x},${shape.y} is neither drag's end ${JSON.stringify(targets)}`,
      );

      // the keyboard moves a selected shape too (Tab to it, arrow keys)
      await ana.focus(`[data-testid="shape"][data-id="${id}"]`);
      const before = end.shapes.find((s) => s.id === id);
      await ana.keyboard.press('ArrowRight');
      await ana.keyboard.press('Shift+ArrowDown');
      const keyed = (await expectConverged([ana, bo])).shapes.find((s) => s.id === id);
      assert.deepEqual([keyed.x, keyed.y], [before.x + 10, before.y + 50]);

      // each sees the other's cursor with the other's name
      await ana.mouse.move(300, 400);
      await bo.mouse.move(500, 300);
      await ana.mouse.move(320, 420);
      await bo.mouse.move(520, 320);
      await bo.waitForSelector('[data-testid="cursor"][data-name="Ana"]');
      await ana.waitForSelector('[data-testid="cursor"][data-name="Bo"]');
      await eventually(async () => (await ana.$$eval('[data-testid="person"]', (els) => els.map((e) => e.dataset.name))).includes('Bo'), {
        message: 'Bo in the list of people',
      });
      await screenshot(ana, 'board-1-moves-desktop-light');
    });
  });

  test('concurrent typing in the same paragraph converges, each run kept whole', opts, async () => {
    await withBoards(h, 'board-typing', async (open) => {
      const doc = uniqueRoom('typing');
      const ana = await open({ name: 'Ana', doc });
      await waitSynced(ana);
      const bo = await open({ name: 'Bo', doc });
      await waitSynced(bo);

      await ana.fill('[data-testid="text"]', 'The quick fox');
      await eventually(async () => (await bo.inputValue('[data-testid="text"]')) === 'The quick fox', { message: 'Bo to see the text' });

      // both put the caret after "The " and type at the same time
      await caretAt(ana, 4);
      await caretAt(bo, 4);
      await Promise.all([ana.keyboard.type('brown ', { delay: 35 }), bo.keyboard.type('lazy ', { delay: 45 })]);
      const s = await expectConverged([ana, bo], { message: 'the concurrent typing to converge' });
      assert.ok(['The brown lazy quick fox', 'The lazy brown quick fox'].includes(s.text), `merged text: ${JSON.stringify(s.text)}`);
      await eventually(async () => (await ana.textContent('[data-testid="editing"]')).includes('Bo is typing'), {
        message: 'Ana told that Bo is typing',
      }).catch(() => {
        /* the notice lasts 3 s and may be gone on a slow machine; the text is what matters */
      });
      await screenshot(bo, 'board-2-typing-desktop-light');
    });
  });

  test('a page cut off and edited offline merges on reconnect', opts, async () => {
    await withBoards(h, 'board-offline', async (open) => {
      const doc = uniqueRoom('offline');
      const ana = await open({ name: 'Ana', doc });
      await waitSynced(ana);
      const network = new Network();
      const bo = await open({ name: 'Bo', doc, network });
      await waitSynced(bo);

      await ana.click('[data-testid="add-ellipse"]');
      const id = await selected(ana);
      await ana.fill('[data-testid="text"]', 'Shared');
      const start = (await expectConverged([ana, bo])).shapes.find((s) => s.id === id);

      assert.ok((await network.drop()) > 0, 'Bo had a live WebSocket to cut');
      await bo.waitForSelector('[data-testid="sync-state"][data-state="offline"]');

      // offline: Bo moves the shape and appends to the text
      await drag(bo, id, 120, 60);
      await caretAt(bo, 6);
      await bo.keyboard.type(' by Bo', { delay: 10 });
      // meanwhile Ana prefixes the text and recolours the shape
      await caretAt(ana, 0);
      await ana.keyboard.type('Ana: ', { delay: 10 });
      await ana.click(`[data-testid="shape"][data-id="${id}"]`);
      await ana.click('[data-testid="swatch"][data-color="#a8eb9c"]');
      await screenshot(bo, 'board-3-offline-desktop-light');
      // Ana sees none of Bo's offline edits
      const mid = await boardState(ana);
      assert.equal(mid.text, 'Ana: Shared');
      assert.equal(mid.shapes.find((s) => s.id === id).x, start.x);

      await network.restore();
      const s = await expectConverged([ana, bo], { timeout: 20000, message: 'the offline edits to merge' });
      assert.equal(s.text, 'Ana: Shared by Bo');
      const shape = s.shapes.find((x) => x.id === id);
      assert.equal(shape.color, '#a8eb9c', "Ana's colour");
      const scale = await scaleOf(bo);
      assert.ok(Math.abs(shape.x - (start.x + 120 / scale)) <= 2, `Bo's move kept: x=${shape.x}`);
      await screenshot(bo, 'board-4-reconnected-desktop-light');
    });
  });

  test('memory engine restart: the pages still open put the document back for a newcomer', opts, async () => {
    await withBoards(h, 'board-restart', async (open) => {
      const doc = uniqueRoom('restart');
      const ana = await open({ name: 'Ana', doc });
      await waitSynced(ana);
      const bo = await open({ name: 'Bo', doc });
      await waitSynced(bo);
      await ana.click('[data-testid="add-note"]');
      await ana.fill('[data-testid="text"]', 'Outlives the server process');
      const before = await expectConverged([ana, bo]);

      // history and epochs go with the process; both pages resubscribe unrecovered and resync
      const epoch = (p) => p.evaluate(() => window.kilatBoard.sync.sub.epoch);
      const old = await epoch(ana);
      await h.server.restart();
      for (const p of [ana, bo]) {
        await eventually(async () => (await epoch(p)) !== old && (await p.getAttribute('[data-testid="sync-state"]', 'data-state')) === 'synced', {
          timeout: 20000,
          message: `${p.label} to resync on the new stream`,
        });
      }
      const cy = await open({ name: 'Cy', doc, label: 'cy' });
      await waitSynced(cy);
      const after = await expectConverged([ana, bo, cy], { message: 'the newcomer to get the document from the pages' });
      assert.equal(after.snapshot, before.snapshot);
    });
  });

  test('bad input: malformed and oversized updates are refused and disturb nobody; large edits go in parts', opts, async () => {
    await withBoards(h, 'board-bad-input', async (open) => {
      const doc = uniqueRoom('bad');
      const ana = await open({ name: 'Ana', doc });
      await waitSynced(ana);
      const bo = await open({ name: 'Bo', doc });
      await waitSynced(bo);
      await ana.fill('[data-testid="text"]', 'still fine');
      await expectConverged([ana, bo]);

      // a misbehaving client publishes junk on the board's channel (through the public SDK)
      const published = await ana.evaluate(async () => {
        const sub = window.kilatBoard.sync.sub;
        await sub.publish('not an update');
        await sub.publish({ t: 'zzz' });
        await sub.publish({ t: 'd', r: 'evil', d: { s: { 'bad id!': { x: [1, 1, 'evil'] } }, t: { e: [[3, 'evil', 9, 'evil', 'x']] } } });
        try {
          await sub.publish({ t: 'd', r: 'evil', d: { pad: 'x'.repeat(70000) } });
          return 'accepted';
        } catch (err) {
          return err.code;
        }
      });
      // a publish frame over the WebSocket's max_message_size (64 KiB) costs the sender its
      // connection (close 1009, the SDK reports "transport closed" and reconnects); between the
      // namespace's max_message_size and that it would be error 413. Bo sees nothing of it.
      assert.equal(published, 2, 'the oversized publish fails for its sender (transport closed)');
      await bo.waitForSelector('[data-testid="banner"][data-kind="malformed"]');
      assert.match(await bo.textContent('[data-testid="banner-text"]'), /malformed/);
      assert.ok((await bo.evaluate(() => window.kilatBoard.sync.rejected)) >= 3);

      // an edit larger than one publication (700 shapes at once, ~100 KB) goes out in parts
      await waitSynced(ana);
      await ana.evaluate(() => {
        const { doc, sync } = window.kilatBoard;
        for (let i = 0; i < 700; i++) sync.edit(doc.createShape({ kind: 'rect', x: i, y: i, w: 10, h: 10, color: '#ffffff' }).delta);
      });
      await eventually(async () => (await bo.evaluate(() => window.kilatBoard.doc.shapeList().length)) === 700, {
        message: 'the 700 shapes to reach Bo in parts',
      });

      // Bo is unharmed: still live, still editing with Ana
      await caretAt(bo, 10);
      await bo.keyboard.type('!', { delay: 10 });
      await eventually(async () => (await ana.evaluate(() => window.kilatBoard.doc.text())) === 'still fine!', { message: "Bo's edit to reach Ana" });
      assert.equal(await bo.getAttribute('[data-testid="sync-state"]', 'data-state'), 'synced');
      await screenshot(bo, 'board-5-malformed-banner');
    });
  });

  test('desktop and phone, light and dark; no 404 (favicon included)', opts, async () => {
    await withBoards(h, 'board-looks', async (open) => {
      const doc = uniqueRoom('looks');
      const ana = await open({ name: 'Ana', doc, colorScheme: 'dark' });
      await waitSynced(ana);
      for (const kind of ['rect', 'ellipse', 'note']) await ana.click(`[data-testid="add-${kind}"]`);
      const note = await selected(ana);
      // a second tap on a selected note edits its text
      await ana.click(`[data-testid="shape"][data-id="${note}"] [data-testid="note-text"]`);
      await ana.keyboard.type('Ship it', { delay: 10 });
      await ana.fill('[data-testid="text"]', 'Agenda: review the board, then the text.');
      await screenshot(ana, 'board-6-desktop-dark');
      const phoneLight = await open({ name: 'Pia', doc, viewport: PHONE, label: 'phone-light' });
      const phoneDark = await open({ name: 'Pat', doc, viewport: PHONE, colorScheme: 'dark', label: 'phone-dark' });
      await waitSynced(phoneLight);
      await waitSynced(phoneDark);
      const s = await expectConverged([ana, phoneLight, phoneDark]);
      assert.equal(s.shapes.find((x) => x.id === note).text, 'Ship it');
      // the phone layout fits the screen: no horizontal scrolling
      const overflow = await phoneLight.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
      await screenshot(phoneLight, 'board-7-phone-light');
      await screenshot(phoneDark, 'board-8-phone-dark');
      for (const p of [ana, phoneLight, phoneDark]) assert.deepEqual(p.notFound, [], `${p.label}: 404s`);

      // the demo index and the home page: linked, no 404
      const index = phoneDark;
      index.notFound.length = 0;
      await index.goto(`${h.server.url}/`);
      await screenshot(index, 'home-phone-dark');
      await phoneLight.goto(`${h.server.url}/`);
      await screenshot(phoneLight, 'home-phone-light');
      assert.deepEqual(phoneLight.notFound, [], 'the home page without 404 (favicon)');
      assert.ok((await phoneLight.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)) <= 0, 'the home page fits the phone');
      await index.click('[data-testid="demos-link"]');
      await index.waitForSelector('[data-demo="board"]');
      await screenshot(index, 'board-9-demo-index-phone-dark');
      await index.click('[data-demo="board"] a');
      await waitSynced(index);
      assert.deepEqual(index.notFound, [], 'home, index and board without 404');
    });
  });
});

describe('board demo: late joiners with a short history', { timeout: 180000 }, () => {
  // history keeps only the last 6 publications, so the document must come from snapshots
  const h = { server: null, browser: null };
  if (!skip) {
    before(async () => {
      const file = configFile(
        'late',
        `[node.namespaces.board]
history_size = 6
history_ttl = 600
presence = true
join_leave = true
allow_subscribe = "public"
allow_publish = "any"
allow_history = true
allow_presence = true
`,
      );
      h.server = await KilatServer.start('board-late-small-history', { args: ['--config', file] });
      h.browser = await launchBrowser();
    });
    after(async () => {
      await h.browser?.close().catch(() => {});
      await h.server?.stop().catch(() => {});
    });
  }

  test('a late third page sees the full document: from a peer, then from history with nobody online', opts, async () => {
    await withBoards(h, 'board-late', async (open, opened) => {
      const doc = uniqueRoom('late');
      const ana = await open({ name: 'Ana', doc });
      await waitSynced(ana);
      const bo = await open({ name: 'Bo', doc });
      await waitSynced(bo);
      for (const kind of ['rect', 'ellipse', 'note']) await ana.click(`[data-testid="add-${kind}"]`);
      await bo.click('[data-testid="add-rect"]');
      await caretAt(ana, 0);
      await ana.keyboard.type('Minutes of the meeting. ', { delay: 20 });
      await caretAt(bo, 0);
      await bo.keyboard.type('Draft: ', { delay: 20 });
      const full = await expectConverged([ana, bo]);
      assert.equal(full.shapes.length, 4);

      // far more publications than the history keeps: the late page needs the state exchange
      const cy = await open({ name: 'Cy', doc, label: 'cy' });
      await waitSynced(cy);
      const withCy = await expectConverged([ana, bo, cy], { message: 'the late joiner to get everything' });
      assert.equal(withCy.snapshot, full.snapshot);
      await screenshot(cy, 'board-10-late-joiner');

      // everyone leaves; a fourth page rebuilds the document from the snapshot kept in history
      for (const { context } of opened.splice(0)) await context.close();
      const dee = await open({ name: 'Dee', doc, label: 'dee' });
      await waitSynced(dee);
      const alone = await eventually(async () => {
        const s = await boardState(dee);
        return s.snapshot === full.snapshot ? s : false;
      }, { message: 'Dee, alone, to rebuild the document from history' });
      assert.equal(alone.text, full.text);
    });
  });
});

describe('board demo: a user who may not write', { timeout: 120000 }, () => {
  const h = { server: null, browser: null };
  if (!skip) {
    before(async () => {
      const file = configFile(
        'readonly',
        `[node.namespaces.board]
history_size = 100
history_ttl = 600
allow_subscribe = "public"
allow_publish = "none"
allow_history = true
`,
      );
      h.server = await KilatServer.start('board-readonly-server', { args: ['--config', file] });
      h.browser = await launchBrowser();
    });
    after(async () => {
      await h.browser?.close().catch(() => {});
      await h.server?.stop().catch(() => {});
    });
  }

  test('an edit is refused with a clear message and reaches nobody', opts, async () => {
    await withBoards(h, 'board-readonly', async (open) => {
      const doc = uniqueRoom('ro');
      const ana = await open({ name: 'Ana', doc });
      await waitSynced(ana);
      const bo = await open({ name: 'Bo', doc });
      await waitSynced(bo);
      await ana.click('[data-testid="add-rect"]');
      await ana.waitForSelector('[data-testid="banner"][data-kind="forbidden"]');
      assert.match(await ana.textContent('[data-testid="banner-text"]'), /may not edit/);
      await screenshot(ana, 'board-11-read-only');
      // Bo sees no shape (give the publication every chance: wait for a round trip of Bo's own)
      await bo.evaluate(() => window.kilatBoard.sync.sub.history({ limit: 1 }));
      assert.equal((await boardState(bo)).shapes.length, 0);
      assert.equal(await bo.locator('[data-testid="banner"]').isHidden(), true);
    });
  });
});
