// Frame encoding and decoding (docs/protocol.md section 2), and the line/SSE parsers used by the
// emulated transports.

/**
 * Encodes frames into one message: JSON objects separated by `\n` (batching).
 * @param {object[]} frames
 * @returns {string}
 */
export function encodeFrames(frames) {
  return frames.map((f) => toJson(f)).join('\n');
}

/** Whether `v` is binary data: a Uint8Array, an ArrayBuffer or another typed array / DataView. */
export function isBinary(v) {
  return v instanceof Uint8Array || v instanceof ArrayBuffer || ArrayBuffer.isView(v);
}

/** Binary data as a Uint8Array (a view, no copy). */
export function asBytes(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** Bytes as standard base64 (btoa exists in browsers and Node). */
export function toBase64(bytes) {
  let s = '';
  // In slices: String.fromCharCode takes its arguments on the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Standard base64 as bytes; throws on text that is not base64. */
export function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * JSON.stringify replacer for the JSON encoding: an object whose `data` is binary (a publish
 * with bytes) is written with `b64data` (base64) instead, the JSON form of MessagePack's bin
 * `data` (docs/protocol.md, binary payloads).
 */
function binaryReplacer(key, value) {
  if (value !== null && typeof value === 'object' && isBinary(value.data)) {
    const { data, ...rest } = value;
    return { ...rest, b64data: toBase64(asBytes(data)) };
  }
  return value;
}

/** One frame (or an emulation envelope) as JSON text, binary `data` as `b64data`. */
export function toJson(value) {
  return JSON.stringify(value, binaryReplacer);
}

/**
 * A publication as the application sees it: a binary one (`b64data` in JSON, bin `data` in
 * MessagePack, which the decoder already made a Uint8Array) has its bytes as `data`.
 */
export function withBytes(pub) {
  if (pub && typeof pub.b64data === 'string') {
    const { b64data, ...rest } = pub;
    return { ...rest, data: fromBase64(b64data) };
  }
  return pub;
}

/**
 * Splits one message into frames. Empty lines are skipped. A line that is not valid JSON
 * throws a SyntaxError (the caller treats it as a protocol error).
 * @param {string} text
 * @returns {any[]}
 */
export function decodeFrames(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    out.push(JSON.parse(trimmed));
  }
  return out;
}

/**
 * The params of a `history` command from the SDK's options (used by the client's and a
 * subscription's `history()`).
 * @param {string} channel
 * @param {{limit?: number, since?: {offset: number, epoch: string}, reverse?: boolean}} opts
 */
export function historyParams(channel, opts = {}) {
  /** @type {any} */
  const params = { channel };
  if (opts.limit !== undefined) params.limit = opts.limit;
  if (opts.since) params.since = { offset: opts.since.offset, epoch: opts.since.epoch };
  if (opts.reverse !== undefined) params.reverse = opts.reverse;
  return params;
}

/** Whether a decoded frame is the application ping `{}`. */
export function isPing(frame) {
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) return false;
  for (const _ in frame) return false;
  return true;
}

/** Accumulates text chunks and yields complete lines (for NDJSON streams). */
export class LineSplitter {
  constructor() {
    this._buf = '';
  }

  /**
   * @param {string} chunk
   * @returns {string[]} complete lines, without their terminator (`\n` or `\r\n`)
   */
  push(chunk) {
    this._buf += chunk;
    const lines = this._buf.split('\n');
    this._buf = lines.pop() ?? '';
    return lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  }

  /** Whatever is left without a line terminator. */
  rest() {
    const r = this._buf;
    this._buf = '';
    return r;
  }
}

/**
 * Parses a text/event-stream (WHATWG HTML "server-sent events"): `data:` lines are joined with
 * `\n` and dispatched at a blank line; comments (`:`) and other fields are ignored except `event`.
 */
export class SseParser {
  constructor() {
    this._lines = new LineSplitter();
    /** @type {string[]} */
    this._data = [];
    this._event = '';
  }

  /**
   * @param {string} chunk
   * @returns {{event: string, data: string}[]} complete events
   */
  push(chunk) {
    const events = [];
    for (const line of this._lines.push(chunk)) {
      if (line === '') {
        if (this._data.length > 0) events.push({ event: this._event || 'message', data: this._data.join('\n') });
        this._data = [];
        this._event = '';
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this._data.push(value);
      else if (field === 'event') this._event = value;
    }
    return events;
  }
}

/** A history result with binary publications' bytes as `data` (see withBytes). */
export function historyWithBytes(result) {
  if (Array.isArray(result?.publications)) result.publications = result.publications.map(withBytes);
  return result;
}
