// Helpers for the board demo (/demo/board): open it as a separate user, read its document, and
// wait until several pages hold the same one.

import { WAIT, dumpLogs, eventually, labelledPage, screenshot, deviceContext } from './browser.js';

/**
 * Opens the board in a new browser context (its own storage: a separate user).
 * @param {import('playwright-core').Browser} browser
 * @param {string} baseUrl
 * @param {{name: string, doc: string, viewport?: {width: number, height: number},
 *          colorScheme?: 'light' | 'dark', network?: import('./browser.js').Network, label?: string}} opts
 */
export async function openBoard(browser, baseUrl, opts) {
  const context = await deviceContext(browser, { viewport: opts.viewport, colorScheme: opts.colorScheme });
  if (opts.network) await opts.network.attach(context);
  const page = await labelledPage(context, opts.label ?? opts.name);
  page.notFound = [];
  page.on('response', (r) => {
    if (r.status() === 404) page.notFound.push(r.url());
  });
  await page.goto(`${baseUrl}/demo/board?name=${encodeURIComponent(opts.name)}#${opts.doc}`, { waitUntil: 'domcontentloaded' });
  return { context, page };
}

/** Waits until the page has synced with the channel (history read, state request sent). */
export async function waitSynced(page, timeout = WAIT) {
  await page.waitForSelector('[data-testid="sync-state"][data-state="synced"]', { timeout });
}

/** The page's document: canonical snapshot, visible text, shapes (model and DOM). */
export function boardState(page) {
  return page.evaluate(() => {
    const b = window.kilatBoard;
    return {
      snapshot: JSON.stringify(b.doc.snapshot()),
      text: b.doc.text(),
      textarea: document.querySelector('[data-testid="text"]').value,
      shapes: b.doc.shapeList(),
      dom: [...document.querySelectorAll('[data-testid="shape"]')].map((e) => ({ id: e.dataset.id, x: Number(e.dataset.x), y: Number(e.dataset.y) })),
      outboxEmpty: b.sync.outboxEmpty,
    };
  });
}

/** Waits until every page holds the same document, in its model and on screen; returns it. */
export async function expectConverged(pages, { timeout = WAIT, message = 'pages to converge' } = {}) {
  let states;
  await eventually(
    async () => {
      states = await Promise.all(pages.map(boardState));
      const [first] = states;
      return states.every(
        (s) =>
          s.outboxEmpty &&
          s.snapshot === first.snapshot &&
          s.textarea === s.text &&
          JSON.stringify(s.dom.map((d) => [d.id, d.x, d.y])) === JSON.stringify(s.shapes.map((d) => [d.id, d.x, d.y])),
      );
    },
    { timeout, message: `${message} (${pages.map((p) => p.label).join(', ')})` },
  ).catch((err) => {
    for (const [i, s] of (states ?? []).entries()) console.log(`${pages[i].label}: text=${JSON.stringify(s.text)} shapes=${JSON.stringify(s.shapes.map((x) => [x.id, x.x, x.y, x.color]))}`);
    throw err;
  });
  return states[0];
}

/** The centre of a shape on screen. */
export async function shapeCenter(page, id) {
  const box = await page.locator(`[data-testid="shape"][data-id="${id}"]`).boundingBox();
  if (!box) throw new Error(`${page.label}: shape ${id} is not on screen`);
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
}

/** Drags a shape by (dx, dy) screen pixels with real mouse events, in `steps` moves. */
export async function drag(page, id, dx, dy, steps = 12) {
  const c = await shapeCenter(page, id);
  await page.mouse.move(c.x, c.y);
  await page.mouse.down();
  await page.mouse.move(c.x + dx, c.y + dy, { steps });
  await page.mouse.up();
}

/**
 * Runs a test body with a board opener; on failure every page is screenshotted
 * (target/e2e/<name>-FAILED-<label>.png) and its console printed. Contexts are closed after.
 */
export async function withBoards(h, name, body) {
  const opened = [];
  const open = async (opts) => {
    const r = await openBoard(h.browser, h.server.url, opts);
    opened.push(r);
    return r.page;
  };
  try {
    await body(open, opened);
  } catch (err) {
    for (const { page } of opened) await screenshot(page, `${name}-FAILED-${page.label}`).catch(() => {});
    dumpLogs(...opened.map((o) => o.page));
    throw err;
  } finally {
    for (const { context } of opened) await context.close().catch(() => {});
  }
}
