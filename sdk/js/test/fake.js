// Test doubles (not a test file): an in-memory WebSocket class and a fetch that serves SSE /
// HTTP streaming from a script, so the client can be driven without a server.

import { decodeFrames, encodeFrames } from '../src/codec.js';

/**
 * Returns a fresh fake WebSocket class. `server(frame, socket)` is called for each frame the
 * client sends (after splitting batches); return value ignored. Options: `refuse` (closes without opening), `hang` (stays connecting forever).
 */
export function fakeWebSocket({ server = () => {}, refuse = false, hang = false } = {}) {
  class FakeSocket {
    static instances = [];
    static server = server;
    static refuse = refuse;
    static hang = hang;

    constructor(url) {
      this.url = url;
      /** when the client created it (ms, performance.now()), to measure reconnect delays */
      this.createdAt = performance.now();
      this.readyState = 0;
      /** raw messages sent by the client */
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeSocket.instances.push(this);
      setTimeout(() => {
        if (this.readyState !== 0 || FakeSocket.hang) return;
        if (FakeSocket.refuse) {
          this.readyState = 3;
          this.onerror?.({ message: 'refused' });
          this.onclose?.({ code: 1006, reason: '' });
          return;
        }
        this.readyState = 1;
        this.onopen?.({});
      }, 0);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(text);
      for (const frame of decodeFrames(text)) FakeSocket.server(frame, this);
    }

    close(code = 1000, reason = '') {
      if (this.readyState >= 2) return;
      this.readyState = 3;
      this.closedBy = { code, reason, byClient: true };
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }

    // --- test side ---
    /** Server sends frames as one message. */
    push(...frames) {
      if (this.readyState !== 1) return;
      this.onmessage?.({ data: encodeFrames(frames) });
    }

    /** Server closes with a code. */
    serverClose(code, reason = '') {
      if (this.readyState >= 2) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }

    /** Every frame the client sent. */
    frames() {
      return this.sent.flatMap((m) => decodeFrames(m));
    }

    static last() {
      return FakeSocket.instances[FakeSocket.instances.length - 1];
    }
  }
  return FakeSocket;
}

/** A server script that answers connect and stores everything else for the test. */
export function autoConnect(extra = {}, result = {}) {
  let n = 0;
  return (frame, socket) => {
    if (frame.connect) {
      n++;
      socket.push({ id: frame.id, connect: { client: `c${n}`, version: 'test', ping: 25, ...result } });
      return;
    }
    for (const [method, fn] of Object.entries(extra)) {
      if (frame[method] !== undefined) fn(frame, socket);
    }
  };
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` is truthy (polling), or throws after `timeout` ms. */
export async function until(cond, timeout = 2000, what = 'condition') {
  const start = Date.now();
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Waits for one event from an emitter. */
export function nextEvent(emitter, name, timeout = 3000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${name} event within ${timeout} ms`)), timeout);
    emitter.once(name, (ctx) => {
      clearTimeout(t);
      resolve(ctx);
    });
  });
}

/**
 * A fetch double for the emulated transports. `server(frame, conn)` gets every command (the
 * connect from the opening request, the rest from `/connection/emulation` POSTs); `conn.push`
 * writes frames to the stream in the transport's format. `status` maps an endpoint name
 * (`sse`, `stream`, `emulation`) to an HTTP status to answer instead (e.g. 404).
 */
export function fakeFetch({ server = () => {}, status = {} } = {}) {
  const enc = new TextEncoder();
  const state = { requests: [], conns: [] };
  async function fetch(url, init = {}) {
    const u = new URL(url);
    const kind = u.pathname.split('/').pop();
    const body = init.body ? JSON.parse(init.body) : undefined;
    state.requests.push({ kind, method: init.method ?? 'GET', url, body });
    if (status[kind]) return new Response('nope', { status: status[kind] });
    if (kind === 'emulation') {
      const conn = state.conns.find((c) => c.session === body.session);
      if (!conn || conn.closed) return new Response('unknown session', { status: 404 });
      // one command frame, or a string of `\n`-separated frames (a batch)
      const commands = typeof body.command === 'string' ? decodeFrames(body.command) : [body.command];
      queueMicrotask(() => commands.forEach((command) => server(command, conn)));
      return new Response(null, { status: 204 });
    }
    const connectFrame = kind === 'sse' ? JSON.parse(u.searchParams.get('connect')) : body;
    let controller;
    const stream = new ReadableStream({ start: (c) => (controller = c) });
    const conn = {
      kind,
      session: `s${state.conns.length + 1}`,
      node: 'n1',
      closed: false,
      push(...frames) {
        if (conn.closed) return;
        const text = frames.map((f) => JSON.stringify(f)).join('\n');
        const chunk = kind === 'sse' ? text.split('\n').map((l) => `data: ${l}\n`).join('') + '\n' : text + '\n';
        controller.enqueue(enc.encode(chunk));
      },
      end() {
        if (conn.closed) return;
        conn.closed = true;
        controller.close();
      },
    };
    init.signal?.addEventListener('abort', () => {
      if (conn.closed) return;
      conn.closed = true;
      try {
        controller.error(new DOMException('aborted', 'AbortError'));
      } catch {
        /* already closed */
      }
    });
    state.conns.push(conn);
    queueMicrotask(() => server(connectFrame, conn));
    return new Response(stream, {
      status: 200,
      headers: { 'content-type': kind === 'sse' ? 'text/event-stream' : 'application/x-ndjson' },
    });
  }
  fetch.state = state;
  return fetch;
}
