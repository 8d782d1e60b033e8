// Shared setup of a test file: one kilat server and one Chromium per file, pages tracked per test
// so a failure leaves screenshots and console logs behind.

import { after, before } from 'node:test';
import { chromiumMissing, dumpLogs, launchBrowser, openChat, screenshot } from './browser.js';
import { KilatServer } from './server.js';

/** Why this file must skip (outside CI only), or null. */
export function skipReason() {
  const missing = chromiumMissing();
  if (!missing) return null;
  if (process.env.CI === 'true') {
    throw new Error(`${missing}; under CI=true this is an error (run e2e/run.sh, which installs it)`);
  }
  console.warn(`\n*** SKIPPING the browser end-to-end tests: ${missing} ***\n`);
  return missing;
}

/**
 * Registers before/after hooks and returns a handle whose fields are filled in `before`.
 * @param {string} label names the server log (target/e2e/<label>-server.log)
 * @param {{skip?: string | null}} [opts] when set, nothing is started (the tests skip)
 */
export function setup(label, { skip } = {}) {
  const h = { server: null, browser: null };
  if (skip) return h; // every test of the file is skipped: start nothing
  before(async () => {
    h.server = await KilatServer.start(label);
    h.browser = await launchBrowser();
  });
  after(async () => {
    await h.browser?.close().catch(() => {});
    await h.server?.stop().catch(() => {});
  });
  return h;
}

/**
 * Runs a test body that opens pages and pushes each `{ page, context }` it opens onto the array
 * it is given; on failure it screenshots every one of those pages
 * (target/e2e/<name>-FAILED-<label>.png) and prints their console logs. Contexts are closed after.
 */
export async function withOpened(name, body) {
  const opened = [];
  try {
    return await body(opened);
  } catch (err) {
    for (const { page } of opened) {
      await screenshot(page, `${name}-FAILED-${page.label}`).catch(() => {});
    }
    dumpLogs(...opened.map((o) => o.page));
    throw err;
  } finally {
    for (const { context } of opened) await context.close().catch(() => {});
  }
}

/** withOpened with a chat page opener: `open(opts)` opens a chat page and returns it. */
export function withPages(h, name, body) {
  return withOpened(name, (opened) => body(async (opts) => {
    const r = await openChat(h.browser, h.server.url, opts);
    opened.push(r);
    return r.page;
  }));
}
