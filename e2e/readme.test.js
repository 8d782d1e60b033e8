// The README's quick-start browser snippets, pasted whole into the console of a page the server
// serves, as a user would (issue 22: the old snippet failed with "Still in CONNECTING state").
// The code run is read from README.md, so the test checks exactly what the README says.
//
// "Pasted into the console" is Chrome DevTools' evaluation: Runtime.evaluate with replMode
// (top-level await, redeclarable const), through a CDP session on the page.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DESKTOP, WAIT, eventually, screenshot } from './lib/browser.js';
import { setup, skipReason } from './lib/harness.js';
import { REPO_ROOT } from './lib/server.js';

const skip = skipReason();

/** The ```js blocks of the README's "Quick start" section, in order. */
function quickStartSnippets() {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Quick start');
  assert.ok(start >= 0, 'README has a Quick start section');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

/**
 * Opens the server's start page, pastes `code` into its console and returns what the page
 * logged (each console call's arguments as JSON values) once `done(logs)` holds.
 */
async function pasteIntoConsole(h, label, code, done) {
  const context = await h.browser.newContext({ viewport: DESKTOP });
  try {
    const page = await context.newPage();
    const logs = [];
    const errors = [];
    page.on('console', async (m) => {
      const args = await Promise.all(m.args().map((a) => a.jsonValue().catch(() => String(a))));
      logs.push(args);
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${h.server.url}/`, { waitUntil: 'domcontentloaded' });
    const cdp = await context.newCDPSession(page);
    const result = await cdp.send('Runtime.evaluate', { expression: code, replMode: true, awaitPromise: true, userGesture: true });
    assert.equal(result.exceptionDetails, undefined, `the pasted code threw: ${JSON.stringify(result.exceptionDetails?.exception?.description ?? result.exceptionDetails)}`);
    await eventually(() => done(logs), { timeout: WAIT, message: `${label}: the expected console output (got ${JSON.stringify(logs)})` });
    assert.deepEqual(errors, [], 'no uncaught error on the page');
    await screenshot(page, `readme-${label}`);
    return logs;
  } finally {
    await context.close().catch(() => {});
  }
}

describe('README quick start in the browser console', { timeout: 60000 }, () => {
  const h = setup('readme', { skip });
  const opts = { skip: skip ?? false };

  test('the README has the two console snippets, fenced as js', opts, () => {
    const snippets = quickStartSnippets();
    assert.equal(snippets.length, 2, 'the SDK snippet and the raw WebSocket one');
    assert.match(snippets[0], /import\('\/sdk\/kilat\.js'\)/);
    assert.match(snippets[1], /new WebSocket\(/);
  });

  test('the SDK snippet, pasted whole, subscribes, publishes and logs its own publication', opts, async () => {
    const [sdk] = quickStartSnippets();
    await pasteIntoConsole(h, 'sdk-snippet', sdk, (logs) =>
      logs.some(([tag, data]) => tag === 'publication' && data?.text === 'hi'),
    );
  });

  test('the raw WebSocket snippet, pasted whole, gets the connect reply and the publication', opts, async () => {
    const [, raw] = quickStartSnippets();
    // the README talks to the default address; the test server listens elsewhere
    assert.ok(raw.includes('127.0.0.1:8000'), 'the snippet names the default address');
    const code = raw.replaceAll('127.0.0.1:8000', new URL(h.server.url).host);
    const frames = (logs) => logs.flatMap(([text]) => String(text).split('\n')).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    const logs = await pasteIntoConsole(h, 'raw-snippet', code, (logs) =>
      frames(logs).some((f) => f.push?.pub?.data?.text === 'hi'),
    );
    const got = frames(logs);
    assert.ok(got.some((f) => f.id === 1 && f.connect?.client), `connect reply in ${JSON.stringify(got)}`);
    assert.ok(got.some((f) => f.id === 2 && f.subscribe), 'subscribe reply');
    assert.ok(got.some((f) => f.id === 3 && f.publish), 'publish reply');
  });
});
