// Transports: WebSocket, and the two emulated ones (SSE and HTTP streaming) built on fetch
// streaming so they work unchanged in browsers and Node 20 without a dependency.
//
// A transport is opened with the connect command already built, because the emulated ones
// carry it in the opening request. Callbacks:
//   onOpen()                       the transport is usable (socket open / HTTP 200 received)
//   onMessage(text)                one message, possibly several `\n`-separated frames
//   onClose({code, reason, opened}) it ended; `opened` false means it never opened, which
//                                   makes the client fall back to the next transport. `code`
//                                   is a kilat disconnect code (3000-3999) when the server
//                                   sent one, else DisconnectCode.TRANSPORT_CLOSED on every
//                                   transport (see `transportClosed`)

import { encodeFrames, LineSplitter, SseParser, toJson } from './codec.js';
import { encodeMsgpack } from './msgpack.js';
import { DisconnectCode } from './errors.js';

/**
 * Works out the endpoint of each transport from the URL given to the client. The URL may be
 * the server's base (`http://host:8000`), or a transport endpoint (`ws://host:8000/connection/websocket`).
 * @param {string} url
 * @returns {{ws: string, http: string}} the WebSocket endpoint and the HTTP base (no trailing slash)
 */
export function resolveEndpoints(url) {
  const u = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  let path = u.pathname.replace(/\/+$/, '');
  path = path.replace(/\/connection\/(websocket|sse|stream|emulation)$/, '');
  const secure = u.protocol === 'wss:' || u.protocol === 'https:';
  const host = u.host;
  return {
    ws: `${secure ? 'wss' : 'ws'}://${host}${path}/connection/websocket${u.search}`,
    http: `${secure ? 'https' : 'http'}://${host}${path}`,
  };
}

/**
 * The close of a transport that carried no kilat disconnect code: the same code on every
 * transport (DisconnectCode.TRANSPORT_CLOSED, 1), whatever the WebSocket close code or HTTP
 * status was; that detail goes into the reason.
 * @param {string} reason
 * @param {boolean} opened
 */
function transportClosed(reason, opened) {
  return { code: DisconnectCode.TRANSPORT_CLOSED, reason, opened };
}

/** A WebSocket message payload (Buffer, ArrayBuffer, typed array) as a Uint8Array. */
function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** Converts a WebSocket message payload (string, Buffer, ArrayBuffer, typed array) to text. */
function toText(data) {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return String(data);
}

export class WebSocketTransport {
  /**
   * @param {string} endpoint
   * @param {{WebSocket?: any, encoding?: 'json' | 'msgpack'}} opts
   */
  constructor(endpoint, opts) {
    this.name = 'websocket';
    this.emulated = false;
    this.endpoint = endpoint;
    /** `msgpack`: the kilat.msgpack subprotocol, frames as MessagePack in binary messages. */
    this.binary = opts.encoding === 'msgpack';
    if (opts.encoding !== undefined && opts.encoding !== 'json' && !this.binary) {
      throw new Error(`unknown encoding ${JSON.stringify(opts.encoding)}: use 'json' or 'msgpack'`);
    }
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    this._ws = null;
    this._closed = false;
  }

  open(connectFrame, handlers) {
    const WS = this._WebSocket;
    if (typeof WS !== 'function') {
      // no implementation (Node 20 without the `websocket` option): fall back at once
      queueMicrotask(() => handlers.onClose(transportClosed('no WebSocket implementation', false)));
      return;
    }
    let opened = false;
    let ws;
    try {
      ws = this.binary ? new WS(this.endpoint, ['kilat.msgpack']) : new WS(this.endpoint);
    } catch (err) {
      queueMicrotask(() => handlers.onClose(transportClosed(String(err?.message ?? err), false)));
      return;
    }
    this._ws = ws;
    if ('binaryType' in ws) ws.binaryType = 'arraybuffer';
    let errorText = '';
    ws.onopen = () => {
      if (this._closed) return;
      if (this.binary && ws.protocol !== 'kilat.msgpack') {
        // A server that does not speak the binary encoding accepted the socket without it.
        this._closed = true;
        try {
          ws.close(1000, 'no kilat.msgpack');
        } catch {
          /* already gone */
        }
        handlers.onClose(transportClosed(`the server did not agree to kilat.msgpack (got ${JSON.stringify(ws.protocol ?? '')})`, false));
        return;
      }
      opened = true;
      this._write(ws, [connectFrame]);
      handlers.onOpen();
    };
    ws.onmessage = (ev) => {
      if (this._closed) return;
      if (!this.binary) {
        handlers.onMessage(toText(ev.data));
        return;
      }
      // Text on a binary connection is a protocol error: the decoder reports it.
      handlers.onMessage(toBytes(ev.data) ?? new Uint8Array([0xc1]));
    };
    ws.onerror = (ev) => {
      errorText = String(ev?.message ?? ev?.error?.message ?? 'websocket error');
    };
    ws.onclose = (ev) => {
      if (this._closed) return;
      this._closed = true;
      const code = ev?.code ?? 1006;
      const reason = ev?.reason || errorText || 'connection closed';
      // kilat's disconnect codes are close codes; any other close (1000, 1001, 1006, ...)
      // is a plain transport close, reported like a stream that ended
      if (code >= 3000 && code <= 3999) handlers.onClose({ code, reason, opened });
      else handlers.onClose(transportClosed(`${reason} (WebSocket close ${code})`, opened));
    };
  }

  /** @param {object[]} frames */
  send(frames) {
    const ws = this._ws;
    if (ws && ws.readyState === 1) this._write(ws, frames);
  }

  _write(ws, frames) {
    ws.send(this.binary ? encodeMsgpack(frames) : encodeFrames(frames));
  }

  setSession() {}

  /** Closes without calling onClose (the client already knows). */
  close(code = 1000, reason = '') {
    this._closed = true;
    const ws = this._ws;
    if (!ws) return;
    try {
      if (ws.readyState === 0 || ws.readyState === 1) ws.close(code, reason);
    } catch {
      try {
        ws.close();
      } catch {
        /* already gone */
      }
    }
  }
}

/**
 * Largest `POST /connection/emulation` body a kilat server accepts (docs/protocol.md, 413 above
 * it). A batch of commands larger than this goes out in several POSTs, in order.
 */
export const MAX_EMULATION_BODY = 64 * 1024;

const utf8 = new TextEncoder();

/** Shared part of SSE and HTTP streaming: a fetch stream in, `POST /connection/emulation` out. */
class EmulatedTransport {
  /**
   * @param {string} name
   * @param {string} httpBase
   * @param {{fetch?: typeof fetch}} opts
   */
  constructor(name, httpBase, opts) {
    this.name = name;
    this.emulated = true;
    this.httpBase = httpBase;
    this._fetch = opts.fetch ?? globalThis.fetch?.bind(globalThis);
    this._abort = new AbortController();
    this._closed = false;
    this._session = null;
    this._node = null;
    /** @type {object[]} frames waiting for the session id or for the previous POST */
    this._outbox = [];
    this._posting = false;
    this._handlers = null;
  }

  /** @returns {Promise<Response>} */
  _request(_connectFrame) {
    throw new Error('abstract');
  }

  /**
   * A function that takes body text chunks and returns the complete messages for onMessage;
   * `end` is true for the last call, when the body has ended.
   * @returns {(chunk: string, end?: boolean) => string[]}
   */
  _parser() {
    throw new Error('abstract');
  }

  open(connectFrame, handlers) {
    this._handlers = handlers;
    if (typeof this._fetch !== 'function') {
      queueMicrotask(() => handlers.onClose(transportClosed('no fetch implementation', false)));
      return;
    }
    this._run(connectFrame).catch(() => {});
  }

  async _run(connectFrame) {
    const handlers = this._handlers;
    let opened = false;
    // HTTP has no close codes: a `disconnect` push carries the real one; without it the
    // stream just ended, which is the SDK's own code 1 (transport closed)
    let reason = 'stream ended';
    try {
      const res = await this._request(connectFrame);
      if (!res.ok || !res.body) {
        reason = `HTTP ${res.status}`;
        try {
          await res.body?.cancel();
        } catch {
          /* ignore */
        }
        return;
      }
      if (this._closed) return;
      opened = true;
      handlers.onOpen();
      const parse = this._parser();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (this._closed) break;
        const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
        for (const message of parse(text, done)) {
          if (this._closed) break;
          handlers.onMessage(message);
        }
        if (done) break;
      }
    } catch (err) {
      reason = String(err?.message ?? err);
    } finally {
      if (!this._closed) {
        this._closed = true;
        handlers.onClose(transportClosed(reason, opened));
      }
    }
  }

  setSession(session, node) {
    this._session = session;
    this._node = node;
    this._pump();
  }

  /** @param {object[]} frames */
  send(frames) {
    this._outbox.push(...frames);
    this._pump();
  }

  /**
   * Sends the queued commands, as few POSTs as the body limit allows and one at a time, so the
   * server sees them in order: what the client batched in one tick (and whatever queued up
   * while a POST was in flight) goes out in one body.
   */
  async _pump() {
    if (this._posting || this._session == null) return;
    this._posting = true;
    try {
      while (this._outbox.length > 0 && !this._closed) {
        const body = this._takeBody();
        let ok = false;
        let status = 0;
        try {
          const res = await this._fetch(`${this.httpBase}/connection/emulation`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body,
            signal: this._abort.signal,
          });
          status = res.status;
          ok = res.ok;
          try {
            await res.arrayBuffer();
          } catch {
            /* ignore */
          }
        } catch {
          ok = false;
        }
        if (!ok && !this._closed) {
          // a lost command would leave a reply hanging: treat the session as broken
          this.close();
          this._handlers.onClose(transportClosed(`emulation POST failed (HTTP ${status})`, true));
          return;
        }
      }
    } finally {
      this._posting = false;
    }
  }

  /**
   * Takes the queued commands that fit in one emulation body (at least one) and returns the
   * body: `command` is the frame itself when there is one, else a string of `\n`-separated
   * frames, which the server takes as a batch.
   * @returns {string}
   */
  _takeBody() {
    const envelope = (command) => toJson({ session: this._session, node: this._node, command });
    if (this._outbox.length === 1) return envelope(this._outbox.shift());
    const lines = [];
    // bytes of the envelope around an empty string, then each frame as it is escaped inside
    // the string (its JSON string without the quotes), plus the escaped newline before it
    let size = utf8.encode(envelope('')).length;
    while (this._outbox.length > 0) {
      const line = toJson(this._outbox[0]);
      const cost = utf8.encode(JSON.stringify(line)).length - 2 + (lines.length > 0 ? 2 : 0);
      if (lines.length > 0 && size + cost > MAX_EMULATION_BODY) break;
      lines.push(line);
      size += cost;
      this._outbox.shift();
    }
    return lines.length === 1 ? envelope(JSON.parse(lines[0])) : envelope(lines.join('\n'));
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._abort.abort();
  }
}

/** `GET /connection/sse?connect=<urlencoded connect command>`, one server frame (or batch) per event. */
export class SseTransport extends EmulatedTransport {
  constructor(httpBase, opts) {
    super('sse', httpBase, opts);
  }

  _request(connectFrame) {
    const url = `${this.httpBase}/connection/sse?connect=${encodeURIComponent(JSON.stringify(connectFrame))}`;
    return this._fetch(url, {
      method: 'GET',
      headers: { accept: 'text/event-stream' },
      signal: this._abort.signal,
      cache: 'no-store',
    });
  }

  _parser() {
    const p = new SseParser();
    return (chunk) => p.push(chunk).map((e) => e.data);
  }
}

/** `POST /connection/stream` with the connect command as body; NDJSON back, one frame per line. */
export class HttpStreamTransport extends EmulatedTransport {
  constructor(httpBase, opts) {
    super('http_stream', httpBase, opts);
  }

  _request(connectFrame) {
    return this._fetch(`${this.httpBase}/connection/stream`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify(connectFrame),
      signal: this._abort.signal,
    });
  }

  _parser() {
    const p = new LineSplitter();
    return (chunk, end) => {
      const lines = p.push(chunk);
      if (end) lines.push(p.rest()); // a last line without its newline still counts
      return lines.filter((l) => l.trim() !== '');
    };
  }
}

/** The transport names, in the default fallback order. */
export const TRANSPORTS = Object.freeze(['websocket', 'sse', 'http_stream']);

/**
 * Builds a transport for one attempt.
 * @param {string | {transport: string, endpoint?: string}} spec
 * @param {{ws: string, http: string}} endpoints
 * @param {{WebSocket?: any, fetch?: typeof fetch, encoding?: 'json' | 'msgpack'}} opts
 */
export function createTransport(spec, endpoints, opts) {
  const name = typeof spec === 'string' ? spec : spec.transport;
  const endpoint = typeof spec === 'string' ? undefined : spec.endpoint;
  switch (name) {
    case 'websocket':
      return new WebSocketTransport(endpoint ? resolveEndpoints(endpoint).ws : endpoints.ws, opts);
    case 'sse':
      return new SseTransport(endpoint ? resolveEndpoints(endpoint).http : endpoints.http, opts);
    case 'http_stream':
      return new HttpStreamTransport(endpoint ? resolveEndpoints(endpoint).http : endpoints.http, opts);
    default:
      throw new Error(`unknown transport ${JSON.stringify(name)}`);
  }
}
