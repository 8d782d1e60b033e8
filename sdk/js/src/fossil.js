// Applying fossil deltas, for subscriptions made with `delta: 'fossil'` (docs/protocol.md,
// "Delta compression"). Only the applier: deltas are made by the server.
//
// A delta is `size "\n"`, then copies `count "@" offset ","` (bytes of the source) and literals
// `count ":" bytes`, then `checksum ";"`; numbers are base 64 with the digits
// 0-9 A-Z _ a-z ~. Every malformed delta throws; none makes this allocate more than `maxLength`.

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';
const VALUES = new Int8Array(128).fill(-1);
for (let i = 0; i < DIGITS.length; i++) VALUES[DIGITS.charCodeAt(i)] = i;

/** Thrown for a delta that cannot be applied. */
export class DeltaError extends Error {
  constructor(message) {
    super(`delta: ${message}`);
    this.name = 'DeltaError';
  }
}

/**
 * The format's checksum: the wrapping sum of the bytes as big-endian 32-bit words, the last
 * one padded with zeros.
 * @param {Uint8Array} bytes
 */
function checksum(bytes) {
  let sum = 0;
  const whole = bytes.length & ~3;
  for (let i = 0; i < whole; i += 4) {
    sum = (sum + ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3])) >>> 0;
  }
  let last = 0;
  for (let i = whole, shift = 24; i < bytes.length; i++, shift -= 8) last |= bytes[i] << shift;
  return (sum + last) >>> 0;
}

/**
 * Applies `delta` to `source`.
 * @param {Uint8Array} source
 * @param {Uint8Array} delta
 * @param {number} [maxLength] refuse a target larger than this (default 64 MiB)
 * @returns {Uint8Array}
 */
export function applyDelta(source, delta, maxLength = 64 << 20) {
  let at = 0;
  const number = () => {
    let value = 0;
    let digits = 0;
    while (at < delta.length && delta[at] < 128 && VALUES[delta[at]] >= 0) {
      // 8 digits (48 bits) stay exact in a double and are far above any payload
      if (++digits > 8) throw new DeltaError('number too large');
      value = value * 64 + VALUES[delta[at++]];
    }
    return value;
  };
  const size = number();
  if (delta[at++] !== 0x0a) throw new DeltaError('malformed size header');
  if (size > maxLength) throw new DeltaError('target larger than allowed');
  const out = new Uint8Array(size);
  let length = 0;
  while (at < delta.length) {
    const count = number();
    const command = delta[at++];
    if (command === 0x40) { // '@' copy
      const offset = number();
      if (delta[at++] !== 0x2c) throw new DeltaError('copy without its comma');
      if (count > size - length) throw new DeltaError('output longer than announced');
      if (offset + count > source.length) throw new DeltaError('copy outside the source');
      out.set(source.subarray(offset, offset + count), length);
      length += count;
    } else if (command === 0x3a) { // ':' literal
      if (count > size - length) throw new DeltaError('output longer than announced');
      if (at + count > delta.length) throw new DeltaError('literal past the end of the delta');
      out.set(delta.subarray(at, at + count), length);
      length += count;
      at += count;
    } else if (command === 0x3b) { // ';' checksum
      if (length !== size) throw new DeltaError('output shorter than announced');
      if (checksum(out) !== count) throw new DeltaError('checksum mismatch');
      return out;
    } else {
      throw new DeltaError(command === undefined ? 'no checksum at the end' : 'unknown command');
    }
  }
  throw new DeltaError('no checksum at the end');
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Applies a delta carried as a JSON string to the text of the previous payload; both are
 * UTF-8 text, the delta's numbers count bytes.
 * @param {string} base
 * @param {string} delta
 * @returns {string}
 */
export function applyTextDelta(base, delta) {
  const out = applyDelta(encoder.encode(base), encoder.encode(delta));
  try {
    return decoder.decode(out);
  } catch {
    throw new DeltaError('the result is not UTF-8');
  }
}
