// The binary encoding of the protocol (docs/protocol.md section 2.1): the same frames as JSON,
// written as MessagePack. Written here rather than taken from a MessagePack package because the
// SDK ships as plain ES modules with no dependency and no build step (pages import it as is);
// the tests check it byte for byte against the golden frames and against @msgpack/msgpack.
//
// Mapping (the server's transcoder follows the same rules, so the bytes are identical):
// null/undefined -> nil; booleans; integers (safe ones, and integral values up to 2^64) -> the
// smallest int format (non-negative ones as uint); other numbers -> float 64; strings -> str;
// Uint8Array/ArrayBuffer/other typed arrays -> bin; arrays; plain objects -> maps with string
// keys in insertion order, members whose value is undefined or a function left out (as
// JSON.stringify does). Decoding gives bin as a Uint8Array.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** Deepest nesting accepted when decoding (the server's limit too). */
const MAX_DEPTH = 100;

class Writer {
  constructor() {
    this.buf = new Uint8Array(4096);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }

  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(b) {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  head(marker, n, bytes) {
    this.ensure(1 + bytes);
    this.buf[this.len++] = marker;
    if (bytes === 1) this.view.setUint8(this.len, n);
    else if (bytes === 2) this.view.setUint16(this.len, n);
    else if (bytes === 4) this.view.setUint32(this.len, n);
    this.len += bytes;
  }

  raw(bytes) {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  value(v) {
    if (v === null || v === undefined) return this.u8(0xc0);
    switch (typeof v) {
      case 'boolean':
        return this.u8(v ? 0xc3 : 0xc2);
      case 'number':
        return this.number(v);
      case 'bigint':
        return this.bigint(v);
      case 'string':
        return this.string(v);
      case 'object':
        break;
      default:
        return this.u8(0xc0); // functions and symbols: JSON gives null in arrays
    }
    if (v instanceof Uint8Array) return this.bin(v);
    if (v instanceof ArrayBuffer) return this.bin(new Uint8Array(v));
    if (ArrayBuffer.isView(v)) return this.bin(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    if (Array.isArray(v)) {
      const n = v.length;
      if (n < 16) this.u8(0x90 | n);
      else if (n <= 0xffff) this.head(0xdc, n, 2);
      else this.head(0xdd, n, 4);
      for (const item of v) this.value(item);
      return;
    }
    if (typeof v.toJSON === 'function') return this.value(v.toJSON());
    const keys = Object.keys(v).filter((k) => v[k] !== undefined && typeof v[k] !== 'function');
    const n = keys.length;
    if (n < 16) this.u8(0x80 | n);
    else if (n <= 0xffff) this.head(0xde, n, 2);
    else this.head(0xdf, n, 4);
    for (const k of keys) {
      this.string(k);
      this.value(v[k]);
    }
  }

  number(v) {
    if (Number.isInteger(v) && !Object.is(v, -0)) {
      if (v >= 0) {
        if (v < 128) return this.u8(v);
        if (v <= 0xff) return this.head(0xcc, v, 1);
        if (v <= 0xffff) return this.head(0xcd, v, 2);
        if (v <= 0xffffffff) return this.head(0xce, v, 4);
        if (v <= Number.MAX_SAFE_INTEGER) {
          // uint 64 from two 32-bit halves (BigInt costs an allocation).
          this.ensure(9);
          this.buf[this.len++] = 0xcf;
          this.view.setUint32(this.len, Math.floor(v / 2 ** 32));
          this.view.setUint32(this.len + 4, v >>> 0);
          this.len += 8;
          return;
        }
        if (v < 2 ** 64) return this.bigint(BigInt(v));
      } else {
        if (v >= -32) return this.u8(v & 0xff);
        if (v >= -128) {
          this.ensure(2);
          this.buf[this.len++] = 0xd0;
          this.view.setInt8(this.len++, v);
          return;
        }
        if (v >= -32768) {
          this.ensure(3);
          this.buf[this.len++] = 0xd1;
          this.view.setInt16(this.len, v);
          this.len += 2;
          return;
        }
        if (v >= -2147483648) {
          this.ensure(5);
          this.buf[this.len++] = 0xd2;
          this.view.setInt32(this.len, v);
          this.len += 4;
          return;
        }
        if (v >= -(2 ** 63)) return this.bigint(BigInt(v));
      }
    }
    if (!Number.isFinite(v)) return this.u8(0xc0); // as JSON.stringify
    this.ensure(9);
    this.buf[this.len++] = 0xcb;
    this.view.setFloat64(this.len, v);
    this.len += 8;
  }

  bigint(v) {
    this.ensure(9);
    if (v >= 0n) {
      if (v < 2n ** 32n) return this.number(Number(v));
      this.buf[this.len++] = 0xcf;
      this.view.setBigUint64(this.len, v);
    } else {
      if (v >= -(2n ** 31n)) return this.number(Number(v));
      this.buf[this.len++] = 0xd3;
      this.view.setBigInt64(this.len, v);
    }
    this.len += 8;
  }

  string(s) {
    // Short ASCII strings (keys, channel names, ids) are written byte by byte: TextEncoder's
    // per-call cost dominates below a few dozen characters.
    const len = s.length;
    if (len <= 64) {
      this.ensure(2 + len);
      const at = this.len;
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        this.buf[at + 1 + i] = c;
      }
      if (i === len) {
        if (len < 32) {
          this.buf[at] = 0xa0 | len;
          this.len = at + 1 + len;
        } else {
          // str 8: one more header byte, so the characters move one place up.
          this.buf.copyWithin(at + 2, at + 1, at + 1 + len);
          this.buf[at] = 0xd9;
          this.buf[at + 1] = len;
          this.len = at + 2 + len;
        }
        return;
      }
    }
    const bytes = utf8Encoder.encode(s);
    const n = bytes.length;
    if (n < 32) this.u8(0xa0 | n);
    else if (n <= 0xff) this.head(0xd9, n, 1);
    else if (n <= 0xffff) this.head(0xda, n, 2);
    else this.head(0xdb, n, 4);
    this.raw(bytes);
  }

  bin(bytes) {
    const n = bytes.length;
    if (n <= 0xff) this.head(0xc4, n, 1);
    else if (n <= 0xffff) this.head(0xc5, n, 2);
    else this.head(0xc6, n, 4);
    this.raw(bytes);
  }
}

/** One writer reused by every call (encoding is synchronous); its buffer only grows. */
const shared = new Writer();

/**
 * Encodes values as MessagePack, one after another in one buffer (a batch of frames).
 * @param {any[]} values
 * @returns {Uint8Array}
 */
export function encodeMsgpack(values) {
  const w = shared;
  w.len = 0;
  try {
    for (const v of values) w.value(v);
    return w.buf.slice(0, w.len);
  } finally {
    // A value that threw (a cycle) leaves nothing behind; an oversized buffer is let go.
    if (w.buf.length > 1 << 20) {
      w.buf = new Uint8Array(4096);
      w.view = new DataView(w.buf.buffer);
    }
  }
}

class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  need(n) {
    if (this.pos + n > this.bytes.length) throw new SyntaxError('truncated MessagePack');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  str(n) {
    const at = this.need(n);
    if (n <= 64) {
      // Short ASCII strings without TextDecoder's per-call cost.
      const b = this.bytes;
      let s = '';
      let i = at;
      for (; i < at + n; i++) {
        const c = b[i];
        if (c >= 0x80) break;
        s += String.fromCharCode(c);
      }
      if (i === at + n) return s;
    }
    try {
      return utf8Decoder.decode(this.bytes.subarray(at, at + n));
    } catch {
      throw new SyntaxError('MessagePack string is not UTF-8');
    }
  }

  bin(n) {
    const at = this.need(n);
    // A copy in a plain Uint8Array (a Node Buffer's slice would be a view of the message).
    return new Uint8Array(this.bytes.subarray(at, at + n));
  }

  value(depth) {
    if (depth > MAX_DEPTH) throw new SyntaxError('MessagePack nested too deeply');
    const m = this.bytes[this.need(1)];
    if (m < 0x80) return m;
    if (m >= 0xe0) return m - 0x100;
    if (m >= 0xa0 && m <= 0xbf) return this.str(m & 0x1f);
    if (m >= 0x90 && m <= 0x9f) return this.array(m & 0x0f, depth);
    if (m >= 0x80 && m <= 0x8f) return this.map(m & 0x0f, depth);
    const v = this.view;
    switch (m) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.bin(v.getUint8(this.need(1)));
      case 0xc5: return this.bin(v.getUint16(this.need(2)));
      case 0xc6: return this.bin(v.getUint32(this.need(4)));
      case 0xca: return v.getFloat32(this.need(4));
      case 0xcb: return v.getFloat64(this.need(8));
      case 0xcc: return v.getUint8(this.need(1));
      case 0xcd: return v.getUint16(this.need(2));
      case 0xce: return v.getUint32(this.need(4));
      case 0xcf: {
        const at = this.need(8);
        return v.getUint32(at) * 2 ** 32 + v.getUint32(at + 4);
      }
      case 0xd0: return v.getInt8(this.need(1));
      case 0xd1: return v.getInt16(this.need(2));
      case 0xd2: return v.getInt32(this.need(4));
      case 0xd3: return Number(v.getBigInt64(this.need(8)));
      case 0xd9: return this.str(v.getUint8(this.need(1)));
      case 0xda: return this.str(v.getUint16(this.need(2)));
      case 0xdb: return this.str(v.getUint32(this.need(4)));
      case 0xdc: return this.array(v.getUint16(this.need(2)), depth);
      case 0xdd: return this.array(v.getUint32(this.need(4)), depth);
      case 0xde: return this.map(v.getUint16(this.need(2)), depth);
      case 0xdf: return this.map(v.getUint32(this.need(4)), depth);
      default: throw new SyntaxError(`unsupported MessagePack marker 0x${m.toString(16)}`);
    }
  }

  array(n, depth) {
    if (n > this.bytes.length - this.pos) throw new SyntaxError('truncated MessagePack');
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  map(n, depth) {
    if (n > (this.bytes.length - this.pos) / 2) throw new SyntaxError('truncated MessagePack');
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      if (typeof key !== 'string') throw new SyntaxError('MessagePack map key is not a string');
      const value = this.value(depth + 1);
      if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      else out[key] = value;
    }
    return out;
  }
}

/**
 * Decodes MessagePack values written one after another (a batch of frames).
 * @param {Uint8Array | ArrayBuffer} input
 * @returns {any[]}
 * @throws {SyntaxError} on malformed or truncated input
 */
export function decodeMsgpack(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const r = new Reader(bytes);
  const out = [];
  while (r.pos < bytes.length) out.push(r.value(0));
  return out;
}
