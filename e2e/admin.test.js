// The admin console in real headless Chromium against a real `kilat serve --dev` with an admin
// password: login (a wrong password refused, then limited), the overview's charts moving under
// a load, a channel's live tail showing another client's publication within a second, the
// console's publish form reaching a subscriber, and disconnecting a client from the console.
// Other clients are real browser pages speaking the kilat protocol over WebSocket.
// Screenshots: target/e2e/admin-*.png (desktop, phone, dark).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CHROMIUM_ARGS, CHROMIUM, DESKTOP, PHONE, eventually, screenshot, deviceContext } from './lib/browser.js';
import { skipReason } from './lib/harness.js';
import { KilatServer } from './lib/server.js';
import { chromium } from 'playwright-core';

const PASSWORD = 'e2e-admin-password-4c1f';
const skip = skipReason();

/** A browser page that speaks the kilat protocol over a raw WebSocket (a real client). */
async function openClient(browser, baseUrl) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${m.type()}] ${m.text()}`));
  await page.goto(`${baseUrl}/health`);
  const ws = baseUrl.replace('http', 'ws') + '/connection/websocket';
  const client = await page.evaluate(async (url) => {
    const state = { pubs: [], closed: null, nextId: 2 };
    window.kilat = state;
    const socket = new WebSocket(url);
    state.socket = socket;
    const replies = new Map();
    socket.onmessage = (event) => {
      for (const line of String(event.data).split('\n')) {
        if (!line || line === '{}') { if (line === '{}') socket.send('{}'); continue; }
        const frame = JSON.parse(line);
        if (frame.push?.pub) state.pubs.push(frame.push.pub.data);
        if (frame.id && replies.has(frame.id)) { replies.get(frame.id)(frame); replies.delete(frame.id); }
      }
    };
    socket.onclose = (event) => { state.closed = { code: event.code, reason: event.reason }; };
    state.call = (body) => new Promise((resolve) => {
      const id = state.nextId++;
      replies.set(id, resolve);
      socket.send(JSON.stringify({ id, ...body }));
    });
    await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
    const connected = await new Promise((resolve) => {
      replies.set(1, resolve);
      socket.send(JSON.stringify({ id: 1, connect: {} }));
    });
    return connected.connect.client;
  }, ws);
  return { page, context, client };
}

async function call(client, body) {
  return client.page.evaluate((b) => window.kilat.call(b), body);
}

async function openAdmin(browser, baseUrl, { viewport = DESKTOP, colorScheme = 'light' } = {}) {
  const context = await deviceContext(browser, { viewport, colorScheme });
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[pageerror] ${e.message}`));
  await page.goto(`${baseUrl}/admin`);
  return { page, context };
}

async function login(page, password = PASSWORD) {
  await page.fill('#password', password);
  await page.click('#login-form button[type="submit"]');
}

describe('admin console', { timeout: 180000 }, () => {
  const opts = { skip: skip ?? false };
  let server;
  let browser;
  const contexts = [];
  before(async () => {
    if (skip) return;
    server = await KilatServer.start('admin', { env: { KILAT_SERVER_ADMIN_PASSWORD: PASSWORD } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close().catch(() => {});
    await server?.stop().catch(() => {});
  });

  test('a wrong password is refused, repeated failures are limited, the cookie is locked down', opts, async () => {
    const { page, context } = await openAdmin(browser, server.url);
    contexts.push(context);
    await page.waitForSelector('#login:not([hidden])');
    await screenshot(page, 'admin-0-login');
    await login(page, 'not-the-password');
    await eventually(async () => (await page.textContent('#login-error')).includes('wrong password'), { message: 'the refusal' });
    // Four more failures use up the burst; the next attempt is limited even with the right password.
    for (let i = 0; i < 4; i++) {
      const status = await page.evaluate(async () => (await fetch('/admin/login', { method: 'POST', body: JSON.stringify({ password: 'guess' }) })).status);
      assert.equal(status, 401);
    }
    await login(page, PASSWORD);
    await eventually(async () => (await page.textContent('#login-error')).includes('too many failed logins'), { message: 'the limit' });
    await screenshot(page, 'admin-0-login-limited');
    assert.equal(await page.isHidden('#nav'), true, 'not logged in while limited');
    // An action without a session is refused.
    const refused = await page.evaluate(async () => (await fetch('/admin/api/info', { method: 'POST', body: '{}' })).status);
    assert.equal(refused, 403);
  });

  test('after the limit: login, charts move under a load, node list', opts, async () => {
    // The limiter gives one attempt back every 10 s.
    const { page, context } = await openAdmin(browser, server.url);
    contexts.push(context);
    await eventually(async () => {
      const answer = await page.evaluate(async (pw) => {
        const r = await fetch('/admin/login', { method: 'POST', body: JSON.stringify({ password: pw }) });
        return { status: r.status, cookie: document.cookie };
      }, PASSWORD);
      return answer.status === 200 && answer;
    }, { timeout: 25000, interval: 1000, message: 'a login once the limit refills' });
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'kilat_admin');
    assert.ok(session, 'a session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(await page.evaluate(() => document.cookie.includes('kilat_admin')), false, 'scripts cannot read it');
    await page.reload();
    await page.waitForSelector('#nav:not([hidden])');
    await page.waitForSelector('#page-overview:not([hidden])');

    // The load: a client publishing 20 times a second for 4 s to a channel it subscribes to.
    const loader = await openClient(browser, server.url);
    contexts.push(loader.context);
    await call(loader, { subscribe: { channel: 'load:e2e' } });
    await loader.page.evaluate(() => {
      window.kilat.timer = setInterval(() => window.kilat.call({ publish: { channel: 'load:e2e', data: { t: Date.now() } } }), 50);
      setTimeout(() => clearInterval(window.kilat.timer), 4000);
    });
    await eventually(async () => {
      const last = JSON.parse((await page.getAttribute('#chart-traffic', 'data-last')) ?? '{}');
      return last['publications/s'] > 5 && last['deliveries/s'] > 5;
    }, { message: 'the traffic chart to show the load' });
    await eventually(async () => {
      const last = JSON.parse((await page.getAttribute('#chart-connections', 'data-last')) ?? '{}');
      return last.websocket >= 1;
    }, { message: 'the connections chart to count the client' });
    await eventually(async () => {
      const last = JSON.parse((await page.getAttribute('#chart-latency', 'data-last')) ?? '{}');
      return last.mean > 0;
    }, { message: 'command latency under load' });
    // The charts move: a point a second, the older ones kept.
    const points = Number(await page.getAttribute('#chart-traffic', 'data-points'));
    await eventually(async () => Number(await page.getAttribute('#chart-traffic', 'data-points')) >= points + 2, { message: 'new points every second' });
    await eventually(async () => Number(await page.getAttribute('#chart-traffic', 'data-points')) >= 8, { message: 'a few seconds of charts' });
    await eventually(async () => (await page.locator('#nodes tbody tr').count()) === 1, { message: 'the node list' });
    assert.match(await page.textContent('#nodes tbody'), /memory/);
    await screenshot(page, 'admin-1-overview-desktop');

    // Phone and dark mode, same session.
    const phone = await context.newPage();
    await phone.setViewportSize(PHONE);
    await phone.goto(`${server.url}/admin`);
    await phone.waitForSelector('#page-overview:not([hidden])');
    await eventually(async () => Number(await phone.getAttribute('#chart-traffic', 'data-points')) >= 2, { message: 'phone charts' });
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `no sideways scrolling on a phone (${overflow}px)`);
    await screenshot(phone, 'admin-2-overview-phone');
    const dark = await openAdmin(browser, server.url, { colorScheme: 'dark' });
    contexts.push(dark.context);
    await login(dark.page);
    await dark.page.waitForSelector('#page-overview:not([hidden])');
    const background = await dark.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, 'rgb(15, 17, 21)', 'dark mode follows the system');
    await eventually(async () => Number(await dark.page.getAttribute('#chart-traffic', 'data-points')) >= 3, { message: 'dark charts' });
    await screenshot(dark.page, 'admin-3-overview-dark');
  });

  test('channel page: live tail within a second, publish form reaches a subscriber, history', opts, async () => {
    const { page, context } = await openAdmin(browser, server.url);
    contexts.push(context);
    await login(page);
    await page.waitForSelector('#nav:not([hidden])');

    const subscriber = await openClient(browser, server.url);
    contexts.push(subscriber.context);
    const subscribed = await call(subscriber, { subscribe: { channel: 'chat:lobby' } });
    assert.ok(!subscribed.error, JSON.stringify(subscribed));

    await page.click('nav a[data-page="channels"]');
    await page.fill('#channel-search', 'lobby');
    await page.waitForSelector('#channels a[href="#/channel/chat%3Alobby"]');
    assert.match(await page.textContent('#channels tbody'), /chat:lobby\s*1/);
    await page.click('#channels a[href="#/channel/chat%3Alobby"]');
    await eventually(async () => (await page.textContent('#tail-state')) === 'live', { message: 'the tail to open' });

    // Another client publishes; the tail shows it within a second.
    const publisher = await openClient(browser, server.url);
    contexts.push(publisher.context);
    const sentAt = Date.now();
    const published = await call(publisher, { publish: { channel: 'chat:lobby', data: { text: 'from another client' } } });
    assert.ok(!published.error, JSON.stringify(published));
    await page.waitForSelector('#tail li:has-text("from another client")', { timeout: 1000 });
    assert.ok(Date.now() - sentAt < 1000 + 200, 'within a second');

    // Paused, the tail holds new publications and shows them on resume.
    await page.click('#tail-toggle');
    await call(publisher, { publish: { channel: 'chat:lobby', data: { text: 'while paused' } } });
    await eventually(async () => (await page.textContent('#tail-state')).includes('1 new'), { message: 'the paused count' });
    assert.equal(await page.locator('#tail li:has-text("while paused")').count(), 0);
    await page.click('#tail-toggle');
    await page.waitForSelector('#tail li:has-text("while paused")');

    // The console's publish form reaches the subscriber.
    await page.fill('#publish-data', '{"text": "from the console"}');
    await page.click('#publish-form button[type="submit"]');
    await eventually(async () => (await page.textContent('#publish-result')).startsWith('published'), { message: 'the publish result' });
    await eventually(async () => {
      const pubs = await subscriber.page.evaluate(() => window.kilat.pubs);
      return pubs.some((d) => d.text === 'from the console');
    }, { message: 'the subscriber to get the console publication' });

    await page.waitForSelector('#presence li:has-text("(anonymous)")');
    assert.match(await page.textContent('#presence'), new RegExp(subscriber.client));
    await screenshot(page, 'admin-4-channel');

    // History (dev mode keeps history), newest first.
    await page.reload();
    await eventually(async () => (await page.locator('#history li').count()) >= 3, { message: 'the history page' });
    assert.match(await page.textContent('#history li:first-child'), /from the console/);
    await screenshot(page, 'admin-4-channel-history');
  });

  test('connections: find a client by user or id and disconnect it with a code', opts, async () => {
    const { page, context } = await openAdmin(browser, server.url);
    contexts.push(context);
    await login(page);
    await page.waitForSelector('#nav:not([hidden])');
    const victim = await openClient(browser, server.url);
    contexts.push(victim.context);
    await call(victim, { subscribe: { channel: 'room:victim' } });

    await page.click('nav a[data-page="connections"]');
    await page.fill('#connections-search', victim.client.slice(0, 13));
    await page.click('#connections-form button[type="submit"]');
    const row = page.locator('#connections tbody tr', { hasText: victim.client });
    await row.waitFor();
    assert.match(await row.textContent(), /websocket/);
    assert.match(await row.textContent(), /room:victim/);
    await screenshot(page, 'admin-5-connections');
    await row.locator('button', { hasText: 'Disconnect' }).click();
    await page.selectOption('#disconnect-code', '3504');
    await page.fill('#disconnect-reason', 'banned from e2e');
    await page.click('#disconnect-confirm');
    const closed = await eventually(() => victim.page.evaluate(() => window.kilat.closed), { message: 'the client to be closed' });
    assert.equal(closed.code, 3504);
    assert.equal(closed.reason, 'banned from e2e');
    await eventually(async () => (await page.locator('#connections tbody tr', { hasText: victim.client }).count()) === 0, { message: 'the list to drop it' });

    // Configuration, secrets redacted.
    await page.click('nav a[data-page="config"]');
    await eventually(async () => (await page.textContent('#config')).includes('admin_password'), { message: 'the configuration' });
    const shown = await page.textContent('#config');
    assert.ok(!shown.includes(PASSWORD), 'the admin password is not shown');
    assert.match(shown, /"admin_password": "\*\*\*"/);
    await screenshot(page, 'admin-6-config');
  });
});
