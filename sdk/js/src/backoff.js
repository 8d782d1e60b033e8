// Timing: reconnect delays (exponential backoff with full jitter, the server's delay_ms hint) and
// ttl timers.

/**
 * Delay before reconnect attempt number `attempt` (0 for the first retry).
 *
 * The ceiling doubles each attempt, `min * 2^attempt`, capped at `max`. The delay is drawn
 * uniformly from the whole range `[min, ceiling]` ("full jitter", as in centrifuge-js, with
 * `min` as a floor so a flapping server is never hammered at 0 ms). Full jitter spreads the
 * reconnects of many clients cut off at the same instant (a node restart) over the window
 * instead of sending them back in synchronised waves.
 *
 * @param {number} attempt
 * @param {number} min milliseconds
 * @param {number} max milliseconds
 * @param {() => number} [random] a source in [0, 1), for tests
 * @returns {number} milliseconds
 */
export function backoff(attempt, min, max, random = Math.random) {
  const step = Math.min(Math.max(0, attempt), 31);
  const ceiling = Math.min(max, min * 2 ** step);
  if (ceiling <= min) return Math.min(min, max);
  return Math.floor(min + random() * (ceiling - min));
}

/**
 * The wait before reconnect attempt `attempt`: the backoff (full jitter in [min, ceiling]), or,
 * with the server's `delay_ms` hint, `min` plus a uniform share of the hint when that is longer,
 * so the clients of a draining node spread their reconnects over the window the server asked
 * for. Capped at `max` (which also keeps a huge hint from overflowing setTimeout).
 * @param {number} attempt
 * @param {number} min
 * @param {number} max
 * @param {number} [delayHint] milliseconds
 */
export function reconnectDelay(attempt, min, max, delayHint) {
  let delay = backoff(attempt, min, max);
  if (delayHint > 0) delay = Math.max(delay, min + Math.floor(Math.random() * delayHint));
  return Math.min(delay, max);
}

/**
 * A ttl in seconds as a setTimeout delay, clamped to what timers can hold (about 24.8 days;
 * a larger value would fire at once).
 * @param {number} ttl
 */
export function ttlDelay(ttl) {
  return Math.min(Math.max(0, ttl * 1000), 0x7fffffff);
}
