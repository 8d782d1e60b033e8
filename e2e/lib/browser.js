// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core; no browser download)
// and small helpers to open the chat demo, read it, and wait on conditions with bounded timeouts.

import { chromium } from 'playwright-core';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS } from './server.js';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];

/** Default timeout for one wait; a broken server fails the test instead of hanging CI. */
export const WAIT = 15000;

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };

/** Why the suite cannot run here, or null. Under CI=true the caller must fail instead of skipping. */
export function chromiumMissing() {
  return existsSync(CHROMIUM) ? null : `Chromium not found at ${CHROMIUM} (apt-get install -y chromium)`;
}

export async function launchBrowser() {
  // plain launch: playwright makes a fresh temporary profile (user-data-dir) and removes it on close
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
}

/**
 * A new browser context (its own storage: a separate "user") set up as the tests' devices are:
 * `viewport` (PHONE is a mobile viewport with touch), `colorScheme`, `reducedMotion` (`null`
 * for the system's), and WAIT as the default timeout.
 */
export async function deviceContext(browser, { viewport = DESKTOP, colorScheme = 'light', reducedMotion = 'reduce' } = {}) {
  const context = await browser.newContext({
    viewport,
    colorScheme,
    deviceScaleFactor: 1,
    isMobile: viewport === PHONE,
    hasTouch: viewport === PHONE,
    reducedMotion,
  });
  context.setDefaultTimeout(WAIT);
  return context;
}

/**
 * Opens the chat demo in a new browser context (its own storage: a separate "user").
 * @param {import('playwright-core').Browser} browser
 * @param {string} baseUrl http://127.0.0.1:PORT
 * @param {{name?: string, room: string, transports?: string, noWebSocket?: boolean,
 *          viewport?: {width: number, height: number}, label?: string, network?: Network}} opts
 */
export async function openChat(browser, baseUrl, opts) {
  const context = await deviceContext(browser, { viewport: opts.viewport });
  if (opts.network) await opts.network.attach(context);
  const page = await labelledPage(context, opts.label ?? opts.name ?? 'page');
  if (opts.noWebSocket) {
    // before any page script runs, so the SDK finds no WebSocket and falls back
    await page.addInitScript(() => {
      delete window.WebSocket;
    });
  }
  const q = new URLSearchParams();
  if (opts.name) q.set('name', opts.name);
  if (opts.transports) q.set('transports', opts.transports);
  const qs = q.toString();
  await page.goto(`${baseUrl}/demo/chat${qs ? `?${qs}` : ''}#${opts.room}`, { waitUntil: 'domcontentloaded' });
  return { context, page };
}

/**
 * A new page in `context` that keeps its console messages and page errors (printed by
 * `dumpLogs` when a test fails) and names itself `label` in screenshots and messages.
 */
export async function labelledPage(context, label) {
  const page = await context.newPage();
  page.logs = [];
  page.label = label;
  page.on('console', (m) => page.logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[pageerror] ${e.message}`));
  return page;
}

/**
 * A switchable network for one browser context. Chromium's offline emulation blocks new
 * requests but leaves open WebSockets and streaming responses alive, so a real "the network
 * dropped" needs more: every WebSocket of the context goes through Playwright's route (to the
 * real server), and `drop()` closes both ends of the live ones and refuses new ones, while
 * `setOffline` stops the SSE / HTTP-streaming fallbacks from getting through.
 */
export class Network {
  constructor() {
    this.down = false;
    /** @type {Set<{page: any, server: any}>} */
    this.live = new Set();
    this.context = null;
  }

  async attach(context) {
    this.context = context;
    await context.routeWebSocket(/\/connection\/websocket/, (ws) => {
      if (this.down) {
        ws.close({ code: 4001, reason: 'test: network is down' });
        return;
      }
      const server = ws.connectToServer();
      const pair = { page: ws, server };
      this.live.add(pair);
      ws.onClose(() => this.live.delete(pair));
      server.onClose(() => this.live.delete(pair));
    });
  }

  /** Cuts the context off: live WebSockets closed at both ends, no new connection gets through. */
  async drop() {
    this.down = true;
    await this.context.setOffline(true);
    const pairs = [...this.live];
    this.live.clear();
    for (const { page, server } of pairs) {
      await server.close({ code: 1001, reason: 'test: network dropped' }).catch(() => {});
      await page.close({ code: 4001, reason: 'test: network dropped' }).catch(() => {});
    }
    return pairs.length;
  }

  async restore() {
    this.down = false;
    await this.context.setOffline(false);
  }
}

/** Waits until the page is connected and subscribed to its room (history loaded). */
export async function waitReady(page, { transport } = {}) {
  await page.waitForSelector('[data-testid="connection-state"][data-state="connected"]', { timeout: WAIT });
  await page.waitForSelector('[data-testid="messages"][data-history-loaded="true"]', { timeout: WAIT });
  if (transport) await expectText(page, '[data-testid="transport"]', transport);
}

/** Types and sends a message with the composer. */
export async function send(page, text) {
  await page.fill('[data-testid="message-input"]', text);
  await page.press('[data-testid="message-input"]', 'Enter');
}

/** Texts of the messages shown, in display order. */
export function messageTexts(page) {
  return page.$$eval('[data-testid="message"] [data-testid="message-text"]', (els) => els.map((e) => e.textContent));
}

/** Messages shown as [{author, text, status}], in display order. */
export function messages(page) {
  return page.$$eval('[data-testid="message"]', (els) =>
    els.map((e) => ({
      author: e.dataset.author,
      text: e.querySelector('[data-testid="message-text"]').textContent,
      status: e.dataset.status,
    })),
  );
}

/** Names in the online list. */
export function onlineNames(page) {
  return page.$$eval('[data-testid="online-user"]', (els) => els.map((e) => e.dataset.name));
}

/**
 * Polls `fn` until it returns a truthy value (returned) or `timeout` passes (throws with the
 * last value, so the failure says what was seen).
 */
export async function eventually(fn, { timeout = WAIT, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
      lastErr = undefined;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      const seen = lastErr ? `error: ${lastErr.message}` : `last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${timeout} ms waiting for ${message} (${seen})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Waits until the element's text contains `expected`. */
export async function expectText(page, selector, expected, timeout = WAIT) {
  return eventually(
    async () => {
      const t = await page.textContent(selector, { timeout: 1000 });
      return t != null && t.includes(expected) ? t : false;
    },
    { timeout, message: `${page.label}: ${selector} to contain ${JSON.stringify(expected)}` },
  );
}

/** Waits until every text in `texts` is shown as a message, each exactly once. */
export async function expectMessages(page, texts, timeout = WAIT) {
  return eventually(
    async () => {
      const shown = await messageTexts(page);
      return texts.every((t) => shown.filter((s) => s === t).length === 1) ? shown : false;
    },
    { timeout, message: `${page.label}: messages ${JSON.stringify(texts)} shown once each` },
  );
}

/** Waits until the online list holds all of `names`. */
export async function expectOnline(page, names, timeout = WAIT) {
  return eventually(
    async () => {
      const shown = await onlineNames(page);
      return names.every((n) => shown.includes(n)) ? shown : false;
    },
    { timeout, message: `${page.label}: online list to include ${JSON.stringify(names)}` },
  );
}

/** Waits for the banner to be in `state` (reconnecting | recovered | unrecovered | hidden). */
export async function expectBanner(page, state, timeout = WAIT) {
  await page.waitForSelector(`[data-testid="banner"][data-state="${state}"]`, {
    state: state === 'hidden' ? 'attached' : 'visible',
    timeout,
  });
  return page.textContent('[data-testid="banner-text"]');
}

/** Saves target/e2e/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false, animations: 'disabled', caret: 'hide' });
  return path;
}

/** On failure, the page logs help more than a timeout message: print them. */
export function dumpLogs(...pages) {
  for (const p of pages) {
    if (!p || !p.logs?.length) continue;
    console.log(`--- console of ${p.label} (last 40) ---\n${p.logs.slice(-40).join('\n')}`);
  }
}

export function uniqueRoom(prefix) {
  return `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}
