import test from 'node:test';
import assert from 'node:assert/strict';
import { backoff } from '../src/backoff.js';

test('full jitter: the delay spans [min, min(max, min*2^attempt)]', () => {
  const min = 100;
  const max = 10_000;
  for (let attempt = 0; attempt < 40; attempt++) {
    const ceiling = Math.min(max, min * 2 ** attempt);
    const low = backoff(attempt, min, max, () => 0);
    const high = backoff(attempt, min, max, () => 0.999999);
    assert.equal(low, min, `attempt ${attempt} lower bound`);
    assert.ok(high <= ceiling && high >= ceiling - 1, `attempt ${attempt}: ${high} vs ceiling ${ceiling}`);
  }
});

test('random delays stay inside the bounds and actually spread', () => {
  const seen = new Set();
  for (let i = 0; i < 2000; i++) {
    const d = backoff(5, 200, 5000);
    assert.ok(d >= 200 && d <= 5000, String(d));
    seen.add(Math.floor(d / 500));
  }
  // uniform over [200, 5000]: all ten 500 ms buckets get hits
  assert.ok(seen.size >= 9, `buckets hit: ${seen.size}`);
});

test('the ceiling is capped at max and huge attempts do not overflow', () => {
  assert.equal(backoff(1000, 500, 20_000, () => 0.999999999) <= 20_000, true);
  assert.equal(backoff(-3, 500, 20_000, () => 0.5), 500);
  assert.equal(backoff(0, 500, 200, () => 0.5), 200);
});

test('ttl timers are clamped to what setTimeout can hold', async () => {
  const { ttlDelay } = await import('../src/backoff.js');
  assert.equal(ttlDelay(30), 30_000);
  assert.equal(ttlDelay(-1), 0);
  assert.equal(ttlDelay(10 * 365 * 86400), 0x7fffffff);
});

test('reconnectDelay: the longer of the backoff and floor + a share of delay_ms, capped at max', async (t) => {
  const { reconnectDelay } = await import('../src/backoff.js');
  t.mock.method(Math, 'random', () => 0.5);
  assert.equal(reconnectDelay(0, 100, 20_000), 100, 'no hint: the backoff');
  assert.equal(reconnectDelay(0, 100, 20_000, 4000), 100 + 2000, 'floor + half the hint');
  assert.equal(reconnectDelay(6, 100, 20_000, 400), 100 + 0.5 * (6400 - 100), 'a longer backoff wins');
  assert.equal(reconnectDelay(0, 100, 1000, 4_000_000_000), 1000, 'capped at max');
  assert.equal(reconnectDelay(0, 100, 1000, -5), 100, 'a nonsense hint is ignored');
});
