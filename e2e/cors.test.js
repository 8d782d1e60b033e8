// CORS for the emulated transports in real headless Chromium: a page served from another
// origin (a second small HTTP server in this file, at http://app.test:PORT, which Chromium
// resolves to 127.0.0.1 through --host-resolver-rules so the origin is not a loopback name that
// `--dev` would allow anyway) loads the SDK from its own origin and connects to kilat over SSE
// and over HTTP streaming, each of which sends its commands as cross-origin emulation POSTs.
//
// Against a kilat that allows the page's origin (`--allowed-origin`), the page connects,
// subscribes, publishes through the emulation POST and receives its publication. Against one
// that does not, every request is refused with 403 and no CORS header, so the browser blocks
// it: the SDK reports that no transport could be opened and the server never holds a session.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, WAIT, dumpLogs, screenshot } from './lib/browser.js';
import { skipReason } from './lib/harness.js';
import { KilatServer, REPO_ROOT, freePort } from './lib/server.js';

const skip = skipReason();
const SDK_DIR = join(REPO_ROOT, 'sdk', 'js', 'src');
const APP_HOST = 'app.test';

// The application's page: its own copy of the SDK (as an app bundles it), and `window.trial`,
// which runs one connection attempt and reports what happened.
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kilat CORS check</title>
<style>
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { margin: 1rem; background: Canvas; color: CanvasText; }
  pre { white-space: pre-wrap; word-break: break-word; }
  @media (prefers-color-scheme: dark) { body { background: #111; color: #eee; } }
</style>
</head>
<body>
<h1>Cross-origin SDK page</h1>
<pre id="out" data-testid="out">loading</pre>
<script type="module">
import { Kilat } from '/sdk/kilat.js';
const out = document.getElementById('out');
window.trial = (url, transport) => new Promise((resolve) => {
  const client = new Kilat(url, { transports: [transport], minReconnectDelay: 5000 });
  let done = false;
  const finish = (result) => {
    // The first outcome counts (disconnecting fails the publish still in flight).
    if (done) return;
    done = true;
    client.disconnect();
    out.textContent = transport + ': ' + JSON.stringify(result);
    resolve(result);
  };
  client.on('error', (e) => {
    if (e.type === 'transport') finish({ ok: false, error: String(e.error?.message ?? e.error) });
  });
  client.on('connected', (ctx) => {
    const sub = client.newSubscription('cors-' + transport);
    sub.on('publication', (p) => finish({ ok: true, transport: ctx.transport, data: p.data }));
    sub.on('subscribed', () => {
      sub.publish({ from: location.origin }).catch((e) => finish({ ok: false, error: 'publish: ' + e.message }));
    });
    sub.subscribe();
  });
  client.connect();
});
out.textContent = 'ready';
</script>
</body>
</html>
`;

/** The application's own HTTP server: the page at `/`, the SDK's modules under `/sdk/`. */
async function startAppServer() {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
      return;
    }
    const rel = normalize(path.replace(/^\/sdk\//, ''));
    if (!path.startsWith('/sdk/') || rel.startsWith('..') || !rel.endsWith('.js')) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(SDK_DIR, rel));
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, origin: `http://${APP_HOST}:${port}`, port };
}

/** `kilat_connections` from a server's /metrics. */
async function connections(kilat) {
  const text = await (await fetch(`${kilat.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('kilat_connections '));
  assert.ok(line, 'kilat_connections in /metrics');
  return Number(line.split(' ')[1]);
}

describe('CORS for the emulated transports', { timeout: 120000 }, () => {
  const opts = { skip: skip ?? false };
  const h = { app: null, allowing: null, refusing: null, browser: null };
  if (!skip) {
    before(async () => {
      h.app = await startAppServer();
      h.allowing = await KilatServer.start('cors-allowing', { args: ['--allowed-origin', h.app.origin] });
      h.refusing = await KilatServer.start('cors-refusing');
      h.browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [...CHROMIUM_ARGS, `--host-resolver-rules=MAP ${APP_HOST} 127.0.0.1`],
        timeout: 30000,
      });
    });
    after(async () => {
      await h.browser?.close().catch(() => {});
      await h.allowing?.stop().catch(() => {});
      await h.refusing?.stop().catch(() => {});
      await new Promise((resolve) => (h.app ? h.app.server.close(resolve) : resolve()));
    });
  }

  /** Opens the app page (phone or desktop, dark or light) and runs one trial in it. */
  async function runTrial(kilat, transport, { viewport, colorScheme, shot }) {
    const context = await h.browser.newContext({
      viewport,
      isMobile: viewport === PHONE,
      hasTouch: viewport === PHONE,
      colorScheme,
      deviceScaleFactor: 1,
    });
    context.setDefaultTimeout(WAIT);
    const page = await context.newPage();
    page.label = shot;
    page.logs = [];
    page.on('console', (m) => page.logs.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => page.logs.push(`[pageerror] ${e.message}`));
    try {
      await page.goto(`${h.app.origin}/`, { waitUntil: 'domcontentloaded' });
      await page.waitForFunction(() => document.getElementById('out')?.textContent === 'ready');
      assert.equal(await page.evaluate(() => location.origin), h.app.origin);
      const result = await page.evaluate(
        ([url, t, wait]) => Promise.race([
          window.trial(url, t),
          new Promise((resolve) => setTimeout(() => resolve({ ok: false, error: 'no outcome in time' }), wait)),
        ]),
        [kilat.url, transport, WAIT],
      );
      await screenshot(page, shot);
      return result;
    } catch (err) {
      dumpLogs(page);
      throw err;
    } finally {
      await context.close().catch(() => {});
    }
  }

  for (const transport of ['sse', 'http_stream']) {
    test(`${transport}: an allowed origin connects, publishes through the emulation POST and receives`, opts, async () => {
      const result = await runTrial(h.allowing, transport, {
        viewport: PHONE,
        colorScheme: 'dark',
        shot: `cors-${transport}-allowed-phone-dark`,
      });
      assert.deepEqual(result, { ok: true, transport, data: { from: h.app.origin } });
      // The same origin over raw fetch: the preflighted POST is answered with its CORS headers.
      const preflight = await fetch(`${h.allowing.url}/connection/emulation`, {
        method: 'OPTIONS',
        headers: { origin: h.app.origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
      assert.equal(preflight.status, 204);
      assert.equal(preflight.headers.get('access-control-allow-origin'), h.app.origin);
    });

    test(`${transport}: an origin that is not allowed is refused and the browser blocks it`, opts, async () => {
      const result = await runTrial(h.refusing, transport, {
        viewport: DESKTOP,
        colorScheme: 'light',
        shot: `cors-${transport}-refused-desktop-light`,
      });
      assert.equal(result.ok, false, JSON.stringify(result));
      assert.match(result.error, /no transport could be opened/);
      assert.equal(await connections(h.refusing), 0, 'no session for the refused origin');
      const refused = await fetch(`${h.refusing.url}/connection/emulation`, {
        method: 'OPTIONS',
        headers: { origin: h.app.origin, 'access-control-request-method': 'POST' },
      });
      assert.equal(refused.status, 403);
      assert.equal(refused.headers.get('access-control-allow-origin'), null);
    });
  }
});
