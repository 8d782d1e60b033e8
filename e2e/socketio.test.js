// Socket.IO in the browser (docs/socketio.md): a page using socket.io-client's browser build
// (dist/socket.io.min.js from its npm package, served by this harness, never committed)
// chats with a page using kilat's own JS SDK, in the same room: the Socket.IO namespace
// `/lobby`, which is the kilat channel `sio:/lobby`. Both pages come from a small static server
// on another origin than kilat (as an application's pages would), in headless Chromium, one on
// a desktop in light mode and one on a phone in dark mode, with screenshots in target/e2e/.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

import { DESKTOP, PHONE, WAIT, screenshot, labelledPage, deviceContext } from './lib/browser.js';
import { setup, skipReason, withOpened } from './lib/harness.js';

const skip = skipReason();
const h = setup('socketio', { skip });
const here = dirname(fileURLToPath(import.meta.url));
const SDK_DIR = join(here, '..', 'sdk', 'js', 'src');
// The browser build shipped in the npm package (resolved through its package.json).
const SIO_DIST = join(dirname(createRequire(import.meta.url).resolve('socket.io-client/package.json')), 'dist');

const STYLE = `
  :root { color-scheme: light dark; }
  body { font: 16px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 40rem;
         background: #fff; color: #111; }
  @media (prefers-color-scheme: dark) { body { background: #15171a; color: #e8e8e8; } }
  h1 { font-size: 1.25rem; margin: 0 0 .5rem; }
  #status { opacity: .75; margin: 0 0 .5rem; }
  ul { list-style: none; padding: 0; margin: 0 0 1rem; }
  li { padding: .4rem 0; border-bottom: 1px solid #8885; overflow-wrap: anywhere; }
  form { display: flex; gap: .5rem; }
  input { flex: 1; min-width: 0; font: inherit; padding: .5rem; }
  button { font: inherit; padding: .5rem 1rem; }`;

function page(title, script) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><style>${STYLE}</style></head>
<body><h1>${title}</h1><p id="status" data-testid="status">connecting</p>
<ul id="messages" data-testid="messages"></ul>
<form id="form"><input id="input" autocomplete="off" aria-label="message"><button>Send</button></form>
${script}</body></html>`;
}

/** The chat tutorial's client, on socket.io-client's browser build. */
const SOCKETIO_PAGE = page(
  'Socket.IO client',
  `<script src="/vendor/socket.io.min.js"></script>
<script>
  const kilat = new URLSearchParams(location.search).get('kilat');
  const socket = io(kilat + '/lobby');
  const list = document.getElementById('messages');
  const mark = () => (document.body.dataset.transport = socket.io.engine.transport.name);
  // The engine opens (on polling) before the upgrade starts: listen from there.
  socket.io.on('open', () => {
    mark();
    socket.io.engine.on('upgrade', mark);
    socket.io.engine.on('upgradeError', (e) => console.warn('upgrade failed:', e.message));
  });
  socket.on('connect', () => {
    document.getElementById('status').textContent = 'connected';
    mark();
  });
  socket.on('chat message', (msg) => {
    const li = document.createElement('li');
    li.textContent = msg;
    list.append(li);
  });
  document.getElementById('form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = document.getElementById('input');
    socket.emit('chat message', input.value);
    input.value = '';
  });
</script>`,
);

/** The same room with kilat's SDK: the namespace's channel, Socket.IO's event shape. */
const KILAT_PAGE = page(
  'kilat SDK client',
  `<script type="module">
  import { Kilat } from '/sdk/kilat.js';
  const kilat = new URLSearchParams(location.search).get('kilat');
  const client = new Kilat(kilat);
  const room = client.newSubscription('sio:/lobby');
  const list = document.getElementById('messages');
  room.on('subscribed', () => (document.getElementById('status').textContent = 'connected'));
  room.on('publication', ({ data }) => {
    if (data.event !== 'chat message') return;
    const li = document.createElement('li');
    li.textContent = data.args[0];
    list.append(li);
  });
  room.subscribe();
  client.connect();
  document.getElementById('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = document.getElementById('input');
    await room.publish({ event: 'chat message', args: [input.value] });
    input.value = '';
  });
</script>`,
);

/** Serves the two pages, the Socket.IO browser build and kilat's SDK modules. */
function startPages() {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    try {
      if (path === '/socketio.html' || path === '/kilat.html') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(path === '/socketio.html' ? SOCKETIO_PAGE : KILAT_PAGE);
      } else if (path === '/favicon.ico') {
        res.writeHead(204).end();
      } else if (path === '/vendor/socket.io.min.js') {
        res.writeHead(200, { 'content-type': 'text/javascript' });
        res.end(await readFile(join(SIO_DIST, 'socket.io.min.js')));
      } else if (path.startsWith('/sdk/') && !path.includes('..')) {
        res.writeHead(200, { 'content-type': 'text/javascript' });
        res.end(await readFile(normalize(join(SDK_DIR, path.slice('/sdk/'.length)))));
      } else {
        res.writeHead(404).end();
      }
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        close: () => new Promise((r) => server.close(r)),
      }),
    ),
  );
}

async function open(browser, url, { viewport, colorScheme, label }) {
  const context = await deviceContext(browser, { viewport, colorScheme });
  const page = await labelledPage(context, label);
  await page.goto(url);
  return { context, page };
}

async function say(page, text) {
  await page.fill('#input', text);
  await page.click('button');
}

function messages(page) {
  return page.$$eval('[data-testid="messages"] li', (items) => items.map((li) => li.textContent));
}

async function expectMessages(page, expected) {
  const deadline = Date.now() + WAIT;
  let seen;
  while (Date.now() < deadline) {
    seen = await messages(page);
    if (seen.length >= expected.length) break;
    await page.waitForTimeout(50);
  }
  assert.deepEqual(seen, expected, `${page.label} shows every message once, in order`);
}

test('a socket.io-client page and a kilat SDK page chat in the same room', { skip: skip ?? false }, async () => {
  const pages = await startPages();
  try {
    await withOpened('socketio', async (opened) => {
      const query = `?kilat=${encodeURIComponent(h.server.url)}`;
      const sio = await open(h.browser, `${pages.url}/socketio.html${query}`, {
        viewport: DESKTOP,
        colorScheme: 'light',
        label: 'socketio',
      });
      opened.push(sio);
      const native = await open(h.browser, `${pages.url}/kilat.html${query}`, {
        viewport: PHONE,
        colorScheme: 'dark',
        label: 'kilat',
      });
      opened.push(native);
      for (const { page } of opened) {
        await page.waitForSelector('[data-testid="status"]:text("connected")');
      }
      // The browser build starts on long polling and upgrades to WebSocket.
      await sio.page.waitForSelector('body[data-transport="websocket"]');
      await say(sio.page, 'hello from socket.io');
      await expectMessages(native.page, ['hello from socket.io']);
      await say(native.page, 'hello from the kilat SDK');
      await expectMessages(sio.page, ['hello from socket.io', 'hello from the kilat SDK']);
      await say(sio.page, 'and back again');
      const all = ['hello from socket.io', 'hello from the kilat SDK', 'and back again'];
      await expectMessages(sio.page, all);
      await expectMessages(native.page, all);
      await screenshot(sio.page, 'socketio-browser-client-desktop-light');
      await screenshot(native.page, 'socketio-kilat-sdk-phone-dark');
      // The phone page fits its width (no horizontal scrolling).
      const overflow = await native.page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
      assert.ok(overflow <= 0, `the phone page scrolls sideways by ${overflow}px`);
      const dark = await native.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert.equal(dark, 'rgb(21, 23, 26)', 'the page follows the dark color scheme');
    });
  } finally {
    await pages.close();
  }
});
