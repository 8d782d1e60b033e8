// The monitoring demo (/demo/monitor) in real headless Chromium against a real `kilat serve
// --dev`, whose in-process monitor feed reads the node's /metrics every second, publishes the
// figures to monitor:node and evaluates the alert rules of alerts:ops. Two users (two browser
// contexts): a rule set in one page fires on the node's real connection count and shows in both
// pages at once (a toast, a browser Notification where granted, the alert list); acknowledging it
// in one shows it acknowledged, with who did it, in the other; a dashboard whose network was down
// when an alert was raised recovers it when it comes back, and a reloaded one gets every rule and
// alert's newest record at once; a malformed rule is refused with the reason on
// every page. Screenshots: target/e2e/monitor-*.png (desktop light, phone dark).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DESKTOP, Network, PHONE, eventually, screenshot, uniqueRoom, labelledPage, deviceContext } from './lib/browser.js';
import { setup, skipReason, withOpened } from './lib/harness.js';

const skip = skipReason();
const opts = { skip: skip ?? false };

async function openMonitor(h, { viewport = DESKTOP, colorScheme = 'light', name }) {
  const context = await deviceContext(h.browser, { viewport, colorScheme });
  await context.grantPermissions(['notifications'], { origin: h.server.url });
  // Records every Notification the page shows (the real constructor still runs).
  await context.addInitScript(() => {
    window.__notes = [];
    const Real = window.Notification;
    if (!Real) return;
    function Recorded(title, options) {
      window.__notes.push(title);
      try { return new Real(title, options); } catch { return {}; }
    }
    Object.defineProperty(Recorded, 'permission', { get: () => Real.permission });
    Recorded.requestPermission = Real.requestPermission.bind(Real);
    window.Notification = Recorded;
  });
  const network = new Network();
  await network.attach(context);
  const page = await labelledPage(context, name);
  page.url0 = `${h.server.url}/demo/monitor?name=${name}`;
  await page.goto(page.url0, { waitUntil: 'domcontentloaded' });
  return { context, page, network };
}

const alertOf = (page, rule) => page.locator(`#alerts li[data-rule="${rule}"]`).first();

async function addRule(page, { name, metric, op, threshold, forS }) {
  await page.fill('#rule-form [name="name"]', name);
  await page.selectOption('#rule-form [name="metric"]', metric);
  await page.selectOption('#rule-form [name="op"]', op);
  await page.fill('#rule-form [name="threshold"]', String(threshold));
  await page.fill('#rule-form [name="for_s"]', String(forS));
  await page.click('#rule-form button[type="submit"]');
}

describe('monitor demo', { timeout: 120000 }, () => {
  const h = setup('monitor', { skip });

  test('an alert fires on both dashboards; an acknowledgement in one shows, with who, in the other', opts, async () => {
    await withOpened('monitor', async (opened) => {
      const a = await openMonitor(h, { name: 'alice' });
      const b = await openMonitor(h, { viewport: PHONE, colorScheme: 'dark', name: 'bob' });
      opened.push(a, b);
      // The demo index links to it.
      await a.page.goto(`${h.server.url}/demo/`);
      await a.page.click('[data-demo="monitor"] a');
      await a.page.waitForURL(/\/demo\/monitor$/);
      await a.page.goto(a.page.url0, { waitUntil: 'domcontentloaded' });
      // Real figures from /metrics: both pages are connected, so the node counts at least 2.
      for (const { page } of opened) {
        await eventually(async () => Number(await page.textContent('[data-metric="connections"] .value')) >= 2,
          { timeout: 20000, message: `${page.label}: the connections figure` });
        await eventually(async () => Number.parseFloat(await page.textContent('[data-metric="memory_mb"] .value')) > 1,
          { message: `${page.label}: kilat's memory figure` });
      }

      // The form refuses a rule without a threshold, before anything is published.
      await a.page.fill('#rule-form [name="name"]', 'incomplete');
      await a.page.fill('#rule-form [name="threshold"]', '');
      await a.page.click('#rule-form button[type="submit"]');
      assert.match(await a.page.textContent('#rule-error'), /Threshold: a number/);

      const rule = uniqueRoom('conns');
      // Above 0 holds while any dashboard is connected, so the alert stays open throughout.
      await addRule(a.page, { name: rule, metric: 'connections', op: '>', threshold: 0, forS: 1 });
      for (const { page } of opened) {
        await page.locator(`#rules li[data-rule="${rule}"]`).waitFor();
        await alertOf(page, rule).and(page.locator('[data-state="firing"]')).waitFor({ timeout: 20000 });
        await page.locator('.toast').first().waitFor();
        await eventually(() => page.evaluate((r) => window.__notes.some((t) => t.includes(r)), rule),
          { message: `${page.label}: a browser notification for ${rule}` });
      }
      assert.equal(await a.page.textContent('#open-count'), '1');
      await screenshot(a.page, 'monitor-desktop-light');
      await screenshot(b.page, 'monitor-phone-dark');

      // Alice acknowledges; Bob sees it acknowledged by alice, and his toast goes.
      await alertOf(a.page, rule).locator('[data-testid="ack"]').click();
      for (const { page } of opened) {
        await eventually(async () => /acknowledged by alice/.test(await alertOf(page, rule).textContent()),
          { message: `${page.label}: the alert acknowledged by alice` });
        assert.equal(await page.textContent('#open-count'), '0');
      }
      await eventually(async () => (await b.page.locator('.toast').count()) === 0, { message: 'bob: the toast gone after the ack' });
      await screenshot(b.page, 'monitor-phone-dark-acked');

      // Bob's network drops while a second alert is raised; when it comes back his dashboard
      // recovers what it missed from history, with its toast, and he acknowledges it for alice.
      await b.network.drop();
      await eventually(async () => (await b.page.textContent('#status')) !== 'live', { message: 'bob: offline' });
      const away = uniqueRoom('mem');
      await addRule(a.page, { name: away, metric: 'memory_mb', op: '>', threshold: 1, forS: 0 });
      await alertOf(a.page, away).and(a.page.locator('[data-state="firing"]')).waitFor({ timeout: 20000 });
      assert.equal(await alertOf(b.page, away).count(), 0, 'bob cannot know yet');
      await b.network.restore();
      await alertOf(b.page, away).and(b.page.locator('[data-state="firing"]')).waitFor({ timeout: 30000 });
      await b.page.locator(`.toast[data-alert^="alert:${away}:"]`).waitFor();
      await alertOf(b.page, away).locator('[data-testid="ack"]').click();
      await eventually(async () => /acknowledged by bob/.test(await alertOf(a.page, away).textContent()),
        { message: 'alice: the second alert acknowledged by bob' });
      // A dashboard opened now gets every rule and alert's newest record in its subscribe reply.
      await b.page.reload({ waitUntil: 'domcontentloaded' });
      await eventually(async () => /acknowledged by alice/.test(await alertOf(b.page, rule).textContent({ timeout: 1000 }))
        && /acknowledged by bob/.test(await alertOf(b.page, away).textContent({ timeout: 1000 })),
      { message: 'bob after a reload: both alerts with who acknowledged them' });
      assert.equal(await b.page.locator('.toast').count(), 0, 'acknowledged alerts raise no toast');

      // Deleting the rule resolves its alert (the feed stops evaluating it): both pages see it.
      await a.page.click(`#rules li[data-rule="${rule}"] button`);
      for (const { page } of opened) {
        await alertOf(page, rule).and(page.locator('[data-state="resolved"]')).waitFor();
        assert.match(await alertOf(page, rule).textContent(), /acknowledged by alice/);
      }

      // A malformed rule, published past the form's checks, is refused by the evaluator with
      // the reason, on every page; it raises nothing.
      const bad = uniqueRoom('bad');
      await b.page.evaluate((id) => window.kilatMonitor.client.publish('alerts:ops', { id, kind: 'rule', metric: 'disk_free', op: '>', threshold: 1, for_s: 1 }), `rule:${bad}`);
      for (const { page } of opened) {
        await eventually(async () => /unknown metric `disk_free`/.test(await page.locator(`#rules li[data-rule="${bad}"]`).textContent({ timeout: 1000 })),
          { message: `${page.label}: the malformed rule refused with its reason` });
      }
      assert.equal(await a.page.locator(`#alerts li[data-rule="${bad}"]`).count(), 0);
      // A record without an id is refused by the server itself (the namespace's conflate_key).
      const refused = await a.page.evaluate(() => window.kilatMonitor.client.publish('alerts:ops', { kind: 'rule' }).then(() => 'accepted', (e) => `${e.code} ${e.message}`));
      assert.match(refused, /^400 .*"id"/);
    });
  });
});
