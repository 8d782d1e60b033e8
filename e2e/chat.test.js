// The chat demo in real headless Chromium against a real `kilat serve --dev`: messages,
// presence, typing, unread counters, the SSE and HTTP-streaming fallbacks, and recovery after
// a dropped connection. One server and one browser for the file; each test has its own room.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Network,
  PHONE,
  WAIT,
  eventually,
  expectBanner,
  expectMessages,
  expectOnline,
  expectText,
  messages,
  messageTexts,
  onlineNames,
  screenshot,
  send,
  uniqueRoom,
  waitReady,
} from './lib/browser.js';
import { setup, skipReason, withPages } from './lib/harness.js';

const skip = skipReason();

describe('chat demo', { timeout: 180000 }, () => {
  const h = setup('chat', { skip });
  const opts = { skip: skip ?? false };

  test('two users see each other: messages, online list, typing, history, unread', opts, async () => {
    await withPages(h, 'two-users', async (open) => {
      const room = uniqueRoom('e2e');
      // Ana goes through the name prompt; Bo passes ?name=
      const ana = await open({ room, label: 'ana' });
      await ana.waitForSelector('[data-testid="name-dialog"][open]');
      await screenshot(ana, 'two-users-0-name-prompt');
      await ana.fill('[data-testid="name-input"]', 'Ana');
      await ana.click('[data-testid="name-submit"]');
      await waitReady(ana, { transport: 'websocket' });
      assert.equal(await ana.evaluate(() => localStorage.getItem('kilat-chat:name')), 'Ana');

      const bo = await open({ room, name: 'Bo', label: 'bo' });
      await waitReady(bo, { transport: 'websocket' });
      await expectText(bo, '[data-testid="room-title"]', `#${room}`);

      // presence: each sees both names (names come from the hello exchange)
      await expectOnline(ana, ['Ana', 'Bo']);
      await expectOnline(bo, ['Ana', 'Bo']);

      // typing indicator, and it expires about 3 s after the last keystroke
      await bo.type('[data-testid="message-input"]', 'Hel');
      await expectText(ana, '[data-testid="typing"]', 'Bo is typing');
      await screenshot(ana, 'two-users-1-typing');
      await eventually(async () => (await ana.textContent('[data-testid="typing"]')) === '', {
        timeout: 8000,
        message: 'typing indicator to expire',
      });

      // messages both ways, in order, once each
      await bo.fill('[data-testid="message-input"]', '');
      await send(bo, 'Hello from Bo');
      await expectMessages(ana, ['Hello from Bo']);
      await send(ana, 'Hi Bo, Ana here');
      await send(ana, 'Second line from Ana');
      const want = ['Hello from Bo', 'Hi Bo, Ana here', 'Second line from Ana'];
      await expectMessages(bo, want);
      await expectMessages(ana, want);
      assert.deepEqual(await messageTexts(ana), want);
      assert.deepEqual(await messageTexts(bo), want);
      const seen = await messages(bo);
      assert.deepEqual(seen.map((m) => m.author), ['Bo', 'Ana', 'Ana']);
      await eventually(async () => (await messages(ana)).every((m) => m.status === 'sent'), {
        message: 'own messages confirmed',
      });
      await screenshot(ana, 'two-users-2-desktop-ana');
      await screenshot(bo, 'two-users-3-desktop-bo');

      // a third user on a phone gets the history on join and shows up online
      const cy = await open({ room, name: 'Cy', label: 'cy', viewport: PHONE });
      await waitReady(cy);
      await expectMessages(cy, want);
      assert.deepEqual(await messageTexts(cy), want);
      await expectOnline(ana, ['Ana', 'Bo', 'Cy']);
      await screenshot(cy, 'two-users-4-phone');
      await cy.click('[data-testid="menu-button"]');
      await cy.waitForSelector('[data-testid="sidebar"] [data-testid="online-user"][data-name="Cy"]', { state: 'visible' });
      await screenshot(cy, 'two-users-5-phone-sidebar');
      await cy.keyboard.press('Escape');

      // unread counter: Bo talks in #general while Ana stays in the test room
      await bo.click('[data-testid="room-general"]');
      await waitReady(bo);
      await send(bo, 'Over here in general');
      await expectText(ana, '[data-testid="unread-general"]', '1');
      await screenshot(ana, 'two-users-6-unread');
      await ana.click('[data-testid="room-general"]');
      await expectMessages(ana, ['Over here in general']);
      assert.equal(await ana.$('[data-testid="unread-general"]'), null);

      // someone leaving disappears from the online list
      await ana.click(`[data-testid="room-${room}"]`);
      await cy.context().close();
      await eventually(async () => !(await onlineNames(ana)).includes('Cy'), { message: 'Cy gone from the online list' });
      assert.deepEqual((await onlineNames(ana)).sort(), ['Ana', 'Bo']);

      // a new room from the sidebar form: listed, opened, remembered for the next visit
      const fresh = `${room}-new`;
      await ana.fill('[data-testid="new-room-input"]', fresh);
      await ana.press('[data-testid="new-room-input"]', 'Enter');
      await expectText(ana, '[data-testid="room-title"]', `#${fresh}`);
      await ana.waitForSelector(`[data-testid="room-${fresh}"][aria-current="true"]`);
      await waitReady(ana);
      assert.ok((await ana.evaluate(() => localStorage.getItem('kilat-chat:rooms'))).includes(fresh));
    });
  });

  test('without WebSocket the page falls back to SSE and chats with a WebSocket page', opts, async () => {
    await withPages(h, 'sse', async (open) => {
      const room = uniqueRoom('e2e-sse');
      const sse = await open({ room, name: 'Sam', noWebSocket: true, label: 'sam-sse' });
      const ws = await open({ room, name: 'Wes', label: 'wes-ws' });
      await waitReady(sse, { transport: 'sse' });
      await waitReady(ws, { transport: 'websocket' });
      assert.equal(await sse.evaluate(() => typeof window.WebSocket), 'undefined');
      await expectOnline(sse, ['Sam', 'Wes']);
      await expectOnline(ws, ['Sam', 'Wes']);
      await send(ws, 'ws -> sse');
      await expectMessages(sse, ['ws -> sse']);
      await send(sse, 'sse -> ws');
      await expectMessages(ws, ['ws -> sse', 'sse -> ws']);
      await expectMessages(sse, ['ws -> sse', 'sse -> ws']);
      await sse.type('[data-testid="message-input"]', 'typing over sse');
      await expectText(ws, '[data-testid="typing"]', 'Sam is typing');
      await screenshot(sse, 'sse-1-sse-page');
      await screenshot(ws, 'sse-2-websocket-page');

      // ?transports=sse forces SSE even where WebSocket works; history comes along
      const forced = await open({ room, name: 'Flo', transports: 'sse', label: 'flo-forced-sse' });
      await waitReady(forced, { transport: 'sse' });
      assert.equal(await forced.evaluate(() => typeof window.WebSocket), 'function');
      await expectMessages(forced, ['ws -> sse', 'sse -> ws']);
      await send(forced, 'forced sse -> all');
      await expectMessages(ws, ['ws -> sse', 'sse -> ws', 'forced sse -> all']);
      await expectMessages(sse, ['ws -> sse', 'sse -> ws', 'forced sse -> all']);
    });
  });

  test('forced to HTTP streaming (?transports=http_stream, no WebSocket) it still chats', opts, async () => {
    await withPages(h, 'http-stream', async (open) => {
      const room = uniqueRoom('e2e-stream');
      const st = await open({ room, name: 'Stu', noWebSocket: true, transports: 'http_stream', label: 'stu-stream' });
      const ws = await open({ room, name: 'Wil', label: 'wil-ws' });
      await waitReady(st, { transport: 'http_stream' });
      await waitReady(ws, { transport: 'websocket' });
      await expectOnline(st, ['Stu', 'Wil']);
      await send(ws, 'ws -> stream');
      await expectMessages(st, ['ws -> stream']);
      await send(st, 'stream -> ws');
      await send(st, 'stream -> ws again');
      const want = ['ws -> stream', 'stream -> ws', 'stream -> ws again'];
      await expectMessages(ws, want);
      await expectMessages(st, want);
      assert.deepEqual(await messageTexts(ws), want);
      await screenshot(st, 'http-stream-1-stream-page');
      await screenshot(ws, 'http-stream-2-websocket-page');
    });
  });

  test('a dropped connection recovers the messages it missed, none lost, none duplicated', opts, async () => {
    await withPages(h, 'recover', async (open) => {
      const room = uniqueRoom('e2e-recover');
      const net = new Network();
      const ana = await open({ room, name: 'Ana', label: 'ana', network: net });
      const bo = await open({ room, name: 'Bo', label: 'bo' });
      await waitReady(ana);
      await waitReady(bo);
      await send(bo, 'before the drop');
      await expectMessages(ana, ['before the drop']);

      // cut Ana off: her live WebSocket is closed and reconnect attempts fail
      assert.equal(await net.drop(), 1, 'one live WebSocket to drop');
      await expectBanner(ana, 'reconnecting');
      await screenshot(ana, 'recover-1-reconnecting');

      const missed = ['missed 1', 'missed 2', 'missed 3'];
      for (const t of missed) await send(bo, t);
      await expectMessages(bo, ['before the drop', ...missed]);
      await eventually(async () => (await messages(bo)).every((m) => m.status === 'sent'), { message: 'Bo messages confirmed' });
      assert.deepEqual(await messageTexts(ana), ['before the drop'], 'Ana is really offline');

      await net.restore();
      const text = await expectBanner(ana, 'recovered', WAIT + 10000);
      assert.match(text, /Back online, 3 missed messages recovered/);
      await screenshot(ana, 'recover-2-recovered');
      const all = ['before the drop', ...missed];
      await expectMessages(ana, all);
      assert.deepEqual(await messageTexts(ana), all, 'in order, once each');

      // and the conversation goes on both ways
      await send(ana, 'back again');
      await send(bo, 'welcome back');
      await expectMessages(bo, [...all, 'back again', 'welcome back']);
      await expectMessages(ana, [...all, 'back again', 'welcome back']);
      assert.deepEqual(await messageTexts(ana), await messageTexts(bo));
      await expectText(ana, '[data-testid="transport"]', 'websocket');
      await expectBanner(ana, 'hidden', 10000);
      await screenshot(ana, 'recover-3-after');
    });
  });

  test('a message written while offline is delivered once when the connection is back', opts, async () => {
    await withPages(h, 'offline-send', async (open) => {
      const room = uniqueRoom('e2e-offline');
      const net = new Network();
      const ana = await open({ room, name: 'Ana', label: 'ana', network: net });
      const bo = await open({ room, name: 'Bo', label: 'bo' });
      await waitReady(ana);
      await waitReady(bo);
      await expectOnline(bo, ['Ana', 'Bo']);

      await net.drop();
      await expectBanner(ana, 'reconnecting');
      await send(ana, 'written while offline');
      await ana.waitForSelector('[data-testid="message"][data-status="pending"]');
      await screenshot(ana, 'offline-send-1-pending');
      await net.restore();

      // the SDK sends it once connected, unless its call timeout ran out first: then the page
      // says "Not sent" and the user retries; either way it must arrive exactly once
      const status = await eventually(
        async () => {
          const [m] = await messages(ana);
          return m && m.status !== 'pending' ? m.status : false;
        },
        { timeout: WAIT + 10000, message: 'the offline message to be sent or marked failed' },
      );
      if (status === 'failed') {
        await screenshot(ana, 'offline-send-2-failed');
        await waitReady(ana);
        await ana.click('[data-testid="message"][data-status="failed"] .msg-status button');
      }
      await expectMessages(bo, ['written while offline']);
      await expectMessages(ana, ['written while offline']);
      await eventually(async () => (await messages(ana))[0]?.status === 'sent', { message: 'the message confirmed' });
      await send(bo, 'got it');
      await expectMessages(ana, ['written while offline', 'got it']);
      assert.deepEqual(await messageTexts(bo), ['written while offline', 'got it']);
      await screenshot(ana, 'offline-send-3-delivered');
    });
  });
});
