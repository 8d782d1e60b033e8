// The client: connection state machine, transports with fallback, reconnect with backoff,
// command/reply matching, batching, pings, tokens and push routing.

import { EventEmitter } from './emitter.js';
import { DisconnectCode, ErrorCode, KilatError, shouldReconnect } from './errors.js';
import { asBytes, decodeFrames, historyParams, historyWithBytes, isBinary, isPing } from './codec.js';
import { decodeMsgpack } from './msgpack.js';
import { reconnectDelay, ttlDelay } from './backoff.js';
import { createTransport, resolveEndpoints, TRANSPORTS } from './transports.js';
import { createSubscription } from './subscription.js';
import { VERSION } from './version.js';
import { presenceAll, presencePage } from './presence.js';
import { ServerSubscriptions, publicationContext } from './server-subs.js';

/** @typedef {'disconnected' | 'connecting' | 'connected'} State */

const MAX_ID = 0xffffffff;

/**
 * Rounds in a row in which a transport that already carried a connection on this client fails
 * to open before the client also tries the transports after it. A proven transport that fails
 * to open is far more often a node that is draining or died than a network that stopped
 * allowing it, so the client backs off and retries it instead of settling on a fallback.
 */
export const PROVEN_OPEN_RETRIES = 5;

const DEFAULTS = {
  token: null,
  getToken: null,
  name: 'js',
  version: VERSION,
  data: undefined,
  websocket: undefined,
  fetch: undefined,
  transports: TRANSPORTS,
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  backoffResetAfter: 10000,
  timeout: 5000,
  maxServerPingDelay: 10000,
  debug: false,
  encoding: /** @type {'json' | 'msgpack'} */ ('json'),
};

/**
 * A kilat client.
 *
 * Recovery after a reconnect: client-side subscriptions are re-subscribed one by one with
 * `subscribe {recover: true, offset, epoch}` (batched into one message right after the connect
 * reply), so each gets its own result, error and retry. Server-side subscriptions (from the
 * token's `channels` claim, reported in the connect result `subs`) are recovered through
 * `connect.subs`, the only way to name them.
 */
export class Kilat extends EventEmitter {
  /**
   * @param {string} url server base URL (`http://host:8000`) or WebSocket endpoint
   *   (`ws://host:8000/connection/websocket`)
   * @param {object} [options]
   */
  constructor(url, options = {}) {
    super();
    this._options = { ...DEFAULTS, ...options };
    if (!this._options.transports || this._options.transports.length === 0) {
      throw new KilatError(ErrorCode.BAD_CONFIGURATION, 'transports must not be empty');
    }
    this._endpoints = resolveEndpoints(url);
    this.url = url;
    /** @type {State} */
    this.state = 'disconnected';
    /** Client id from the connect result. */
    this.clientId = null;
    /** Name of the transport in use. */
    this.transportName = null;
    this._token = this._options.token;
    this._tokenExpired = false;
    this._transport = null;
    /** Bumped for every transport attempt; replies and timers from older ones are ignored. */
    this._connGen = 0;
    this._transportIndex = 0;
    this._nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any, method: string}>} */
    this._pending = new Map();
    /** Frames to send in the current tick, flushed as one message. */
    this._queue = [];
    this._flushScheduled = false;
    /** Calls made while connecting, run once connected. */
    this._waiting = new Set();
    /** Reconnect attempts since the backoff was last reset (see `_teardown`). */
    this._attempts = 0;
    /** When the current connection got its connect reply (ms), for the backoff reset. */
    this._connectedAt = 0;
    /** Indexes (in `transports`) of the transports that have carried a connection on this client. */
    this._proven = new Set();
    /** Rounds in a row in which a proven transport failed to open (see PROVEN_OPEN_RETRIES). */
    this._provenOpenFailures = 0;
    this._reconnectTimer = null;
    /** Browser `online` listener, set while the client wants to be connected. */
    this._onlineListener = null;
    this._pingTimer = null;
    this._refreshTimer = null;
    this._refreshing = false;
    this._connectId = 0;
    this._serverPing = 0;
    /** When the last message arrived (ms), for the ping watchdog. */
    this._lastSeen = 0;
    /** Pending `disconnect` push, applied when the transport closes. */
    this._disconnectPush = null;
    /**
     * Client-side subscriptions by channel, each as the control the client drives it with
     * (see subscription.js: the two talk only through SubscriptionControl and ClientLink).
     * @type {Map<string, import('./subscription.js').SubscriptionControl>}
     */
    this._subs = new Map();
    /** @type {import('./subscription.js').ClientLink} */
    this._link = Object.freeze({
      call: (method, params) => this._call(method, params),
      connection: () => (this.state === 'connected' ? this._connGen : 0),
      minDelay: this._options.minReconnectDelay,
      maxDelay: this._options.maxReconnectDelay,
    });
    /** Server-side subscriptions: channel -> {offset, epoch, recoverable}. */
    this._serverSubs = new ServerSubscriptions();
  }

  _debug(...args) {
    if (this._options.debug) console.debug('[kilat]', ...args);
  }

  // ---------- public API ----------

  /** Starts connecting (no-op unless disconnected). */
  connect() {
    if (this.state !== 'disconnected') return;
    this._watchOnline(true);
    this._attempts = 0;
    this._setState('connecting');
    this.emit('connecting', { code: 0, reason: 'connect called' });
    this._startAttempt(0);
  }

  /**
   * Closes the connection and stops reconnecting. Subscriptions end in `unsubscribed` (code 0,
   * "disconnect called") and keep their positions: call `subscribe()` again after `connect()`.
   */
  disconnect() {
    if (this.state === 'disconnected') return;
    this._teardown(DisconnectCode.DISCONNECT_CALLED, 'disconnect called', false, true);
  }

  /**
   * Resolves when connected; rejects if the client ends up disconnected first, or after `timeout` ms.
   * @param {number} [timeout]
   * @returns {Promise<void>}
   */
  ready(timeout) {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'disconnected') {
      return Promise.reject(new KilatError(ErrorCode.CLIENT_DISCONNECTED, 'client is disconnected'));
    }
    return new Promise((resolve, reject) => {
      let timer = null;
      const done = () => {
        this.off('connected', onConnected);
        this.off('disconnected', onDisconnected);
        if (timer) clearTimeout(timer);
      };
      const onConnected = () => {
        done();
        resolve();
      };
      const onDisconnected = (ctx) => {
        done();
        reject(new KilatError(ErrorCode.CLIENT_DISCONNECTED, ctx?.reason ?? 'disconnected'));
      };
      this.on('connected', onConnected);
      this.on('disconnected', onDisconnected);
      if (timeout) {
        timer = setTimeout(() => {
          done();
          reject(new KilatError(ErrorCode.TIMEOUT, 'timeout'));
        }, timeout);
      }
    });
  }

  /**
   * Creates a subscription (not yet subscribed). Throws if one exists for the channel.
   * @param {string} channel
   * @param {object} [options]
   * @returns {import('./subscription.js').Subscription}
   */
  newSubscription(channel, options) {
    if (typeof channel !== 'string' || channel === '') {
      throw new KilatError(ErrorCode.BAD_CONFIGURATION, 'channel must be a non-empty string');
    }
    if (this._subs.has(channel)) {
      throw new KilatError(ErrorCode.ALREADY_SUBSCRIBED, `subscription to ${channel} already exists`);
    }
    const control = createSubscription(this._link, channel, options);
    this._subs.set(channel, control);
    return control.subscription;
  }

  /** @param {string} channel */
  getSubscription(channel) {
    return this._subs.get(channel)?.subscription ?? null;
  }

  /** Unsubscribes and forgets a subscription. @param {import('./subscription.js').Subscription} sub */
  removeSubscription(sub) {
    if (!sub) return;
    sub.unsubscribe();
    if (this._subs.get(sub.channel)?.subscription === sub) this._subs.delete(sub.channel);
  }

  /** @returns {Record<string, import('./subscription.js').Subscription>} */
  subscriptions() {
    return Object.fromEntries([...this._subs].map(([channel, control]) => [channel, control.subscription]));
  }

  /**
   * Publishes `data` to `channel`: any JSON value, or binary data (a Uint8Array, an ArrayBuffer
   * or another typed array), sent as `b64data` on JSON and as bin on MessagePack; subscribers
   * get a binary publication's `data` as a Uint8Array.
   */
  publish(channel, data) {
    return this._call('publish', { channel, data: isBinary(data) ? asBytes(data) : data });
  }

  /** Every member of `channel`, all pages merged: `{clients}`. */
  presence(channel) {
    return presenceAll((method, params) => this._call(method, params), channel);
  }

  /**
   * One page of `channel`'s members: `{clients, cursor?}` (pass `cursor` back for the next).
   * @param {string} channel
   * @param {{cursor?: string, limit?: number}} [opts]
   */
  presencePage(channel, opts) {
    return presencePage((method, params) => this._call(method, params), channel, opts);
  }

  presenceStats(channel) {
    return this._call('presence_stats', { channel });
  }

  /**
   * @param {string} channel
   * @param {{limit?: number, since?: {offset: number, epoch: string}, reverse?: boolean}} [opts]
   */
  history(channel, opts = {}) {
    return this._call('history', historyParams(channel, opts)).then(historyWithBytes);
  }

  rpc(method, data) {
    return this._call('rpc', { method, data });
  }

  /** Fire-and-forget message to the backend: no id, no reply. Resolves once queued. */
  send(data) {
    return this._whenConnected(() => {
      this._enqueue({ send: { data } });
    }, null);
  }

  // ---------- commands ----------

  _allocId() {
    const id = this._nextId;
    this._nextId = id >= MAX_ID ? 1 : id + 1;
    return id;
  }

  /**
   * Runs `fn` now if connected, or after connecting; rejects on disconnect or timeout.
   * @param {() => any} fn
   * @param {number | null} timeout
   */
  _whenConnected(fn, timeout) {
    if (this.state === 'connected') {
      try {
        return Promise.resolve(fn());
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (this.state === 'disconnected') {
      return Promise.reject(new KilatError(ErrorCode.CLIENT_DISCONNECTED, 'client is disconnected'));
    }
    return new Promise((resolve, reject) => {
      const entry = {
        run: () => {
          if (entry.timer) clearTimeout(entry.timer);
          try {
            resolve(fn());
          } catch (err) {
            reject(err);
          }
        },
        fail: (err) => {
          if (entry.timer) clearTimeout(entry.timer);
          reject(err);
        },
        timer: null,
      };
      const t = timeout ?? this._options.timeout;
      entry.timer = setTimeout(() => {
        this._waiting.delete(entry);
        reject(new KilatError(ErrorCode.TIMEOUT, 'timeout', true));
      }, t);
      this._waiting.add(entry);
    });
  }

  /**
   * Sends a command and resolves with its result (or rejects with a KilatError).
   * @param {string} method
   * @param {object} params
   */
  _call(method, params) {
    const started = Date.now();
    return this._whenConnected(() => {
      const remaining = Math.max(1, this._options.timeout - (Date.now() - started));
      return this._send(method, params, remaining);
    }, this._options.timeout);
  }

  _send(method, params, timeout = this._options.timeout) {
    const id = this._allocId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new KilatError(ErrorCode.TIMEOUT, 'timeout', true));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer, method });
      this._enqueue({ id, [method]: params });
    });
  }

  /** Queues a frame; everything queued in the same tick goes out as one message. */
  _enqueue(frame) {
    this._queue.push(frame);
    if (this._flushScheduled) return;
    this._flushScheduled = true;
    queueMicrotask(() => this._flush());
  }

  _flush() {
    this._flushScheduled = false;
    if (this._queue.length === 0) return;
    const frames = this._queue;
    this._queue = [];
    if (!this._transport) return;
    this._debug('send', frames);
    this._transport.send(frames);
  }

  _rejectAll(err) {
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
    this._queue = [];
  }

  // ---------- connection lifecycle ----------

  _setState(state) {
    if (state === this.state) return;
    const oldState = this.state;
    this.state = state;
    this._debug('state', oldState, '->', state);
    this.emit('state', { newState: state, oldState });
  }

  _tokenNeedsFetch() {
    const o = this._options;
    return typeof o.getToken === 'function' && (this._token == null || this._token === '' || this._tokenExpired);
  }

  /** Opens transport number `index` of the configured list. */
  async _startAttempt(index) {
    const gen = ++this._connGen;
    this._transportIndex = index;
    this._nextId = 1;
    this._disconnectPush = null;
    if (this._tokenNeedsFetch()) {
      try {
        this._token = await this._options.getToken({});
        this._tokenExpired = false;
      } catch (err) {
        if (gen !== this._connGen || this.state !== 'connecting') return;
        this.emit('error', { type: 'token', error: err });
        this._scheduleReconnect();
        return;
      }
      if (gen !== this._connGen || this.state !== 'connecting') return;
    }
    const spec = this._options.transports[index];
    let transport;
    try {
      transport = createTransport(spec, this._endpoints, {
        WebSocket: this._options.websocket,
        fetch: this._options.fetch,
        encoding: this._options.encoding,
      });
    } catch (err) {
      this.emit('error', { type: 'transport', error: err });
      this._nextTransport(gen, { code: DisconnectCode.TRANSPORT_CLOSED, reason: String(err.message), opened: false });
      return;
    }
    this._transport = transport;
    const connectId = this._allocId();
    this._connectId = connectId;
    /** @type {any} */
    const params = {};
    if (this._token) params.token = this._token;
    if (this._options.name) params.name = this._options.name;
    if (this._options.version) params.version = this._options.version;
    if (this._options.data !== undefined) params.data = this._options.data;
    const subs = this._serverSubs.recoverParams();
    if (subs) params.subs = subs;
    const connectFrame = { id: connectId, connect: params };
    this._debug('opening', transport.name, 'transport');
    let opened = false;
    // A transport that hangs without opening (a proxy that swallows the upgrade) counts as
    // failed to open, so the next transport is tried; one that opened but got no connect
    // reply is a plain failure with backoff.
    const connectTimer = setTimeout(() => {
      if (gen !== this._connGen || this.state !== 'connecting') return;
      this._debug(opened ? 'connect reply timed out' : `${transport.name} did not open in time`);
      transport.close();
      this._onTransportClose(gen, { code: DisconnectCode.CONNECT_TIMEOUT, reason: opened ? 'connect timeout' : 'open timeout', opened });
    }, this._options.timeout);
    this._pending.set(connectId, {
      resolve: (result) => {
        clearTimeout(connectTimer);
        if (gen === this._connGen) this._onConnectResult(result);
      },
      reject: (err) => {
        clearTimeout(connectTimer);
        if (gen === this._connGen) this._onConnectError(err);
      },
      timer: connectTimer,
      method: 'connect',
    });
    transport.open(connectFrame, {
      onOpen: () => {
        if (gen !== this._connGen) return;
        opened = true;
        this._debug(transport.name, 'open');
      },
      onMessage: (text) => {
        if (gen !== this._connGen) return;
        this._onMessage(text);
      },
      onClose: (ctx) => {
        if (gen !== this._connGen) return;
        clearTimeout(connectTimer);
        this._onTransportClose(gen, ctx);
      },
    });
  }

  /** The transport never opened: try the next one in the list, or back off and start over. */
  _nextTransport(gen, ctx) {
    if (gen !== this._connGen || this.state !== 'connecting') return;
    const index = this._transportIndex;
    const next = index + 1;
    this._debug('transport', this._options.transports[index], 'failed to open:', ctx.reason);
    this._transport = null;
    this._rejectAll(new KilatError(ErrorCode.TRANSPORT_CLOSED, 'transport closed', true));
    // A transport that worked on this client and now fails to open points at the server (a
    // drain, a dead node behind a load balancer), not at the network: retry it after a
    // backoff rather than settle on a fallback that would then stay in use.
    const proven = this._proven.has(index) && this._provenOpenFailures < PROVEN_OPEN_RETRIES;
    if (proven) this._provenOpenFailures++;
    if (!proven && next < this._options.transports.length) {
      this._startAttempt(next);
    } else {
      const what = proven ? `${transportLabel(this._options.transports[index])}, which worked before, could not be opened` : 'no transport could be opened';
      this.emit('error', {
        type: 'transport',
        error: new KilatError(ErrorCode.TRANSPORT_CLOSED, `${what} (last: ${ctx.reason})`, true),
      });
      this._scheduleReconnect();
    }
  }

  /**
   * In browsers, the `online` event ends a backoff wait at once: the network just came back,
   * so waiting out a long delay would only keep the user offline.
   * @param {boolean} on
   */
  _watchOnline(on) {
    const target = globalThis;
    if (typeof target.addEventListener !== 'function') return;
    if (on && !this._onlineListener) {
      this._onlineListener = () => {
        if (this.state !== 'connecting' || !this._reconnectTimer) return;
        this._debug('network online: reconnecting now');
        clearTimeout(this._reconnectTimer);
        this._reconnectTimer = null;
        this._startAttempt(0);
      };
      target.addEventListener('online', this._onlineListener);
    } else if (!on && this._onlineListener) {
      target.removeEventListener('online', this._onlineListener);
      this._onlineListener = null;
    }
  }

  /**
   * Waits, then starts a new round from the first transport. The wait is the backoff for the
   * attempt count, or, after a disconnect with a `delay_ms` hint, the backoff floor plus a
   * random share of the hint if that is longer; never more than `maxReconnectDelay`.
   * @param {number} [delayHint] the server's `delay_ms`
   */
  _scheduleReconnect(delayHint) {
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    const o = this._options;
    const delay = reconnectDelay(this._attempts++, o.minReconnectDelay, o.maxReconnectDelay, delayHint);
    this._debug('reconnect in', delay, 'ms');
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this.state === 'connecting') this._startAttempt(0);
    }, delay);
  }

  _onTransportClose(gen, ctx) {
    if (gen !== this._connGen) return;
    if (!ctx.opened && this.state === 'connecting') {
      this._nextTransport(gen, ctx);
      return;
    }
    let { code, reason } = ctx;
    let hint;
    let delayHint;
    if (this._disconnectPush) {
      ({ code, reason, delayHint } = this._disconnectPush);
      hint = this._disconnectPush.reconnect;
    }
    const reconnect = shouldReconnect(code, hint);
    this._teardown(code, reason, reconnect, false, delayHint);
  }

  /**
   * Drops the transport and everything tied to it, then reconnects or stays disconnected.
   * @param {number} code
   * @param {string} reason
   * @param {boolean} reconnect
   * @param {boolean} closeTransport whether we close it (it is not closed already)
   * @param {number} [delayHint] the `delay_ms` of the server's disconnect push
   */
  _teardown(code, reason, reconnect, closeTransport, delayHint) {
    this._connGen++;
    const transport = this._transport;
    this._transport = null;
    if (closeTransport && transport) transport.close(1000, reason);
    this._clearConnectionTimers();
    const err = reconnect
      ? new KilatError(ErrorCode.TRANSPORT_CLOSED, 'transport closed', true)
      : new KilatError(ErrorCode.CLIENT_DISCONNECTED, 'client disconnected');
    this._rejectAll(err);
    if (code === DisconnectCode.TOKEN_EXPIRED) this._tokenExpired = true;
    if (reconnect) {
      for (const control of this._subs.values()) control.lost();
      const wasConnected = this.state === 'connected';
      // The backoff starts over only after a connection that stayed up for a while: one that
      // the server ends right away (a slow-consumer 3001 on a large recovery, a node that
      // accepts and drops) must not turn into a reconnect loop at the backoff floor.
      if (wasConnected && Date.now() - this._connectedAt >= this._options.backoffResetAfter) this._attempts = 0;
      this._setState('connecting');
      if (wasConnected) this.emit('connecting', { code, reason });
      this._scheduleReconnect(delayHint);
    } else {
      if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
      for (const w of this._waiting) w.fail(new KilatError(ErrorCode.CLIENT_DISCONNECTED, 'client disconnected'));
      this._waiting.clear();
      this._watchOnline(false);
      this._setState('disconnected');
      // the client will not come back by itself, so neither do its subscriptions: they end
      // with the client's code and reason (0 "disconnect called" after disconnect()) and keep
      // their positions, so subscribe() after the next connect() recovers
      for (const control of [...this._subs.values()]) control.ended(code, reason);
      this.emit('disconnected', { code, reason });
    }
  }

  _clearConnectionTimers() {
    if (this._pingTimer) clearTimeout(this._pingTimer);
    if (this._refreshTimer) clearTimeout(this._refreshTimer);
    this._pingTimer = null;
    this._refreshTimer = null;
    this._refreshing = false;
  }

  _onConnectResult(result) {
    result = result ?? {};
    this._connectedAt = Date.now();
    this._proven.add(this._transportIndex);
    this._provenOpenFailures = 0;
    this.clientId = result.client ?? null;
    this.transportName = this._transport?.name ?? null;
    if (this._transport?.emulated) this._transport.setSession(result.session, result.node);
    this._serverPing = Number(result.ping ?? 0);
    this._resetPingTimer();
    this._setTokenTimer(result);
    this._setState('connected');
    // server-side subscriptions (token `channels`): their positions feed `connect.subs` later
    const subsResult = result.subs && typeof result.subs === 'object' ? result.subs : {};
    this.emit('connected', {
      client: result.client,
      transport: this.transportName,
      version: result.version,
      ping: result.ping,
      expires: result.expires,
      ttl: result.ttl,
      data: result.data,
    });
    for (const [channel, sub] of Object.entries(subsResult)) this._onServerSubscribed(channel, sub ?? {});
    // resubscribe (batched: all in this tick go out as one message), then run queued calls
    // (a subscription that a `connected` listener already subscribed has been sent: skip it)
    for (const control of [...this._subs.values()]) control.connected(this._connGen);
    const waiting = [...this._waiting];
    this._waiting.clear();
    for (const w of waiting) w.run();
  }

  _onConnectError(err) {
    // the transport closing under the connect is reported by the transport path
    if (err.code === ErrorCode.TRANSPORT_CLOSED) return;
    this.emit('error', { type: 'connect', error: err });
    const transport = this._transport;
    if (err.code === ErrorCode.TOKEN_EXPIRED && typeof this._options.getToken === 'function') {
      this._tokenExpired = true;
      transport?.close();
      this._teardown(DisconnectCode.TOKEN_EXPIRED, 'token expired', true, false);
    } else if (err.temporary || err.code === ErrorCode.TIMEOUT) {
      transport?.close();
      this._teardown(err.code, err.message, true, false);
    } else {
      transport?.close();
      // an expired token without getToken cannot be fixed by retrying: unauthorized
      const auth = [ErrorCode.UNAUTHORIZED, ErrorCode.PERMISSION_DENIED, ErrorCode.TOKEN_EXPIRED];
      const code = auth.includes(err.code) ? DisconnectCode.UNAUTHORIZED : DisconnectCode.BAD_REQUEST;
      this._teardown(code, err.message, false, false);
    }
  }

  _setTokenTimer(result) {
    if (this._refreshTimer) clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (result.expires && result.ttl > 0 && typeof this._options.getToken === 'function') {
      this._refreshTimer = setTimeout(() => this._refreshToken(), ttlDelay(result.ttl));
    }
  }

  /** Gets a new token and sends `refresh` (on the `refresh` push or when the ttl runs out). */
  async _refreshToken() {
    if (this._refreshing || this.state !== 'connected') return;
    if (typeof this._options.getToken !== 'function') {
      this.emit('error', {
        type: 'refresh',
        error: new KilatError(ErrorCode.TOKEN_UNAVAILABLE, 'server asked for a new token but no getToken is set'),
      });
      return;
    }
    this._refreshing = true;
    const gen = this._connGen;
    try {
      this._tokenExpired = true;
      const token = await this._options.getToken({});
      this._token = token;
      this._tokenExpired = false;
      if (gen !== this._connGen || this.state !== 'connected') return;
      const result = await this._call('refresh', { token });
      if (gen === this._connGen) this._setTokenTimer(result ?? {});
    } catch (err) {
      this.emit('error', { type: 'refresh', error: err });
    } finally {
      if (gen === this._connGen) this._refreshing = false;
    }
  }

  /**
   * Watches for the server's pings: if nothing at all arrives for the server's ping interval
   * plus `maxServerPingDelay`, the connection is dead (a half-open TCP connection never
   * closes by itself) and the client reconnects. Every message counts as a sign of life; the
   * timer re-arms itself instead of being reset per message.
   */
  _resetPingTimer() {
    if (this._pingTimer) clearTimeout(this._pingTimer);
    this._pingTimer = null;
    if (!(this._serverPing > 0)) return;
    const gen = this._connGen;
    const limit = this._serverPing * 1000 + this._options.maxServerPingDelay;
    const check = () => {
      if (gen !== this._connGen || this.state !== 'connected') return;
      const idle = Date.now() - this._lastSeen;
      if (idle < limit) {
        this._pingTimer = setTimeout(check, limit - idle);
        return;
      }
      this._debug('no ping from server: reconnecting');
      this._teardown(DisconnectCode.NO_PING, 'no ping', true, true);
    };
    this._lastSeen = Date.now();
    this._pingTimer = setTimeout(check, limit);
  }

  // ---------- inbound ----------

  /** @param {string | Uint8Array} text JSON text, or MessagePack bytes on a binary connection */
  _onMessage(text) {
    let frames;
    try {
      frames = typeof text === 'string' ? decodeFrames(text) : decodeMsgpack(text);
    } catch (err) {
      this.emit('error', { type: 'protocol', error: new KilatError(ErrorCode.BAD_REQUEST, `malformed frame: ${err.message}`) });
      this._teardown(DisconnectCode.BAD_REQUEST, 'malformed frame from server', true, true);
      return;
    }
    this._debug('recv', frames);
    const gen = this._connGen;
    this._lastSeen = Date.now();
    for (const frame of frames) {
      if (gen !== this._connGen) return; // a frame tore the connection down
      this._onFrame(frame);
    }
  }

  _onFrame(frame) {
    if (isPing(frame)) {
      this._enqueue({}); // answer the application ping
      return;
    }
    if (frame.push) {
      this._onPush(frame.push);
      return;
    }
    let id = frame.id;
    // emulated transports: the connect reply may come without an id
    if (id == null && frame.connect && this.state === 'connecting') id = this._connectId;
    if (id == null) return;
    const pending = this._pending.get(id);
    if (!pending) return; // late reply after a timeout
    this._pending.delete(id);
    clearTimeout(pending.timer);
    if (frame.error) pending.reject(KilatError.fromWire(frame.error));
    else pending.resolve(replyResult(frame, pending.method));
  }

  _onPush(push) {
    const channel = push.channel;
    if (push.disconnect) {
      const d = push.disconnect;
      this._disconnectPush = {
        code: Number(d.code ?? DisconnectCode.SHUTDOWN),
        reason: String(d.reason ?? ''),
        reconnect: d.reconnect,
        delayHint: Number.isFinite(d.delay_ms) && d.delay_ms > 0 ? d.delay_ms : undefined,
      };
      // act now; the close that follows belongs to an old generation and is ignored
      const { code, reason, reconnect, delayHint } = this._disconnectPush;
      this._teardown(code, reason, shouldReconnect(code, reconnect), true, delayHint);
      return;
    }
    if (push.message) {
      this.emit('message', { data: push.message.data });
      return;
    }
    if (push.refresh && channel == null) {
      this._refreshToken();
      return;
    }
    if (channel == null) return;
    if (this._subs.get(channel)?.push(push)) return;
    // server-side subscription
    if (push.subscribe) this._onServerSubscribed(channel, push.subscribe);
    else if (push.unsubscribe) {
      this._serverSubs.delete(channel);
      this.emit('unsubscribed', { channel, code: push.unsubscribe.code, reason: push.unsubscribe.reason });
    } else if (push.pub) {
      if (this._serverSubs.advance(channel, push.pub)) this.emit('publication', publicationContext(channel, push.pub));
    }
    else if (push.join) this.emit('join', { channel, info: push.join.info });
    else if (push.leave) this.emit('leave', { channel, info: push.leave.info });
    else if (push.presence_diff) {
      for (const change of push.presence_diff.changes ?? []) {
        if (change.join) this.emit('join', { channel, info: change.join });
        else if (change.leave) this.emit('leave', { channel, info: change.leave });
      }
    } else if (push.presence_count) {
      const { num_clients: numClients = 0, num_users: numUsers = 0 } = push.presence_count;
      this.emit('count', { channel, num_clients: numClients, num_users: numUsers });
    }
  }

  _onServerSubscribed(channel, res) {
    const { event, publications } = this._serverSubs.subscribed(channel, res ?? {});
    this.emit('subscribed', event);
    for (const pub of publications) this.emit('publication', publicationContext(channel, pub));
  }
}

/** A transport spec's name, for messages. */
function transportLabel(spec) {
  return typeof spec === 'string' ? spec : spec.transport;
}

/**
 * The result object of a reply: the value under the method's key, or under whatever single
 * key the server used (a `sub_refresh` may be answered under `refresh`), or `{}`.
 */
function replyResult(frame, method) {
  if (frame[method] !== undefined) return frame[method] ?? {};
  for (const key of Object.keys(frame)) if (key !== 'id') return frame[key] ?? {};
  return {};
}

/**
 * Same as `new Kilat(url, options)`.
 * @param {string} url
 * @param {object} [options]
 */
export function createClient(url, options) {
  return new Kilat(url, options);
}
