// Client-side subscriptions: state machine, recovery position, de-duplication by offset.

import { EventEmitter } from './emitter.js';
import { DisconnectCode, ErrorCode, KilatError } from './errors.js';
import { backoff, ttlDelay } from './backoff.js';
import { publicationContext } from './server-subs.js';
import { asBytes, historyParams, historyWithBytes, isBinary } from './codec.js';
import { applyTextDelta } from './fossil.js';
import { presenceAll, presencePage } from './presence.js';

/**
 * All a Subscription uses of its client, built by the client (`Kilat`); the subscription never
 * touches the client's fields.
 * @typedef {object} ClientLink
 * @property {(method: string, params: object) => Promise<any>} call sends a command and resolves
 *   with its result; while the client is connecting it waits for the connection (up to the
 *   client's timeout), while disconnected it rejects (CLIENT_DISCONNECTED)
 * @property {() => number} connection the current connection's number while connected, 0
 *   otherwise; a new number on every connection, so a subscription can tell whether what it
 *   sent went out on the connection that is up now
 * @property {number} minDelay the client's `minReconnectDelay`, the resubscribe backoff's default floor
 * @property {number} maxDelay the client's `maxReconnectDelay`, the resubscribe backoff's default cap
 */

/**
 * All the client uses of a Subscription: how it drives it. Made by `createSubscription`; the
 * client never touches the subscription's fields.
 * @typedef {object} SubscriptionControl
 * @property {Subscription} subscription the application's object
 * @property {(connection: number) => void} connected the client connected: a subscription that
 *   is subscribing and has not sent its subscribe on this connection sends it now
 * @property {() => void} lost the connection dropped and the client reconnects: back to
 *   subscribing, resubscribed with recovery on the next connection
 * @property {(code: number, reason: string) => void} ended the client is disconnected for
 *   good: unsubscribed with the client's code and reason
 * @property {(push: any) => boolean} push a push for the channel; false when the subscription
 *   is unsubscribed (the client then treats the push as one for a server-side subscription)
 */

/** @typedef {'unsubscribed' | 'subscribing' | 'subscribed'} SubscriptionState */

/**
 * One channel subscription, created by `client.newSubscription(channel, options)`.
 *
 * Recovery: with `recoverable` (the default) the subscription remembers the `offset` and
 * `epoch` of the stream, from the subscribe result and from every publication. Every later
 * subscribe (after a reconnect, or after `unsubscribe()` + `subscribe()`) sends
 * `recover: true, offset, epoch`; the publications in the result are emitted as `publication`
 * events, in order, before any live one, and anything at or below the known offset is dropped.
 */
export class Subscription extends EventEmitter {
  /**
   * Made by `client.newSubscription()` (through `createSubscription`).
   * @param {ClientLink} link
   * @param {string} channel
   * @param {import('./kilat.js').SubscriptionOptions} [options]
   */
  constructor(link, channel, options = {}) {
    super();
    this._link = link;
    /** @type {string} */
    this.channel = channel;
    /** @type {SubscriptionState} */
    this.state = 'unsubscribed';
    this._token = options.token ?? null;
    this._getToken = options.getToken ?? null;
    this._recoverable = options.recoverable !== false;
    this._joinLeave = options.joinLeave;
    if (options.delta !== undefined && options.delta !== 'fossil') {
      throw new KilatError(ErrorCode.BAD_REQUEST, `unknown delta type ${JSON.stringify(options.delta)}: the one supported is 'fossil'`);
    }
    this._delta = options.delta;
    /**
     * With `delta: 'fossil'`: the text of the last payload received in the delta form, what
     * the next delta applies to; `null` when there is none.
     * @type {string | null}
     */
    this._deltaBase = null;
    this._data = options.data;
    this._minDelay = options.minResubscribeDelay ?? link.minDelay;
    this._maxDelay = options.maxResubscribeDelay ?? link.maxDelay;
    /** Last known stream position; `null` until the server gave one. */
    this.offset = null;
    /** @type {string | null} */
    this.epoch = null;
    /** Whether the server said the channel keeps history (from the last subscribe result). */
    this._serverRecoverable = true;
    /** Pushes that arrived while the subscribe reply was outstanding, replayed after it. */
    this._buffer = [];
    /**
     * Who is in the channel, by client id, kept up to date from join/leave (batched
     * `presence_diff` pushes or single ones) since this subscription's own join; call
     * `syncMembers()` to load those who were there before. Cleared on every (re)subscribe.
     * @type {Map<string, {client: string, user: string, info?: any}>}
     */
    this.members = new Map();
    /** Client ids a join/leave touched since the running `syncMembers()` asked (newer than it). */
    this._touched = null;
    /** The connection (`link.connection()`) the subscribe command was sent on (0 = none). */
    this._sentOn = 0;
    /** Bumped on every attempt so a stale reply is ignored. */
    this._attempt = 0;
    this._retries = 0;
    this._retryTimer = null;
    this._refreshTimer = null;
    this._tokenExpired = false;
  }

  /** Starts subscribing; sends the command now if connected, else when the client connects. */
  subscribe() {
    if (this.state !== 'unsubscribed') return;
    this._setState('subscribing');
    this.emit('subscribing', { channel: this.channel, code: 0, reason: 'subscribe called' });
    if (this._link.connection()) this._sendSubscribe();
  }

  /** Stops the subscription. The recovery position is kept, so a later subscribe() recovers. */
  unsubscribe() {
    this._moveToUnsubscribed(0, 'unsubscribe called', true);
  }

  /**
   * Resolves once subscribed; rejects if the subscription goes to `unsubscribed` first or after
   * `timeout` ms.
   * @param {number} [timeout]
   * @returns {Promise<void>}
   */
  ready(timeout) {
    if (this.state === 'subscribed') return Promise.resolve();
    if (this.state === 'unsubscribed') {
      return Promise.reject(new KilatError(ErrorCode.SUBSCRIPTION_UNSUBSCRIBED, 'subscription is unsubscribed'));
    }
    return new Promise((resolve, reject) => {
      let timer = null;
      const done = () => {
        this.off('subscribed', onSub);
        this.off('unsubscribed', onUnsub);
        if (timer) clearTimeout(timer);
      };
      const onSub = () => {
        done();
        resolve();
      };
      const onUnsub = (ctx) => {
        done();
        reject(new KilatError(ErrorCode.SUBSCRIPTION_UNSUBSCRIBED, ctx?.reason ?? 'unsubscribed'));
      };
      this.on('subscribed', onSub);
      this.on('unsubscribed', onUnsub);
      if (timeout) {
        timer = setTimeout(() => {
          done();
          reject(new KilatError(ErrorCode.TIMEOUT, 'timeout'));
        }, timeout);
      }
    });
  }

  /** @param {any} data */
  publish(data) {
    return this._link.call('publish', { channel: this.channel, data: isBinary(data) ? asBytes(data) : data });
  }

  /** Every member of the channel, all pages merged: `{clients}`. */
  presence() {
    return presenceAll((method, params) => this._link.call(method, params), this.channel);
  }

  /**
   * One page of the channel's members: `{clients, cursor?}`.
   * @param {{cursor?: string, limit?: number}} [opts]
   */
  presencePage(opts) {
    return presencePage((method, params) => this._link.call(method, params), this.channel, opts);
  }

  /**
   * Loads the current member list into `members` (the channel's namespace needs
   * `allow_presence`). Joins and leaves that arrive meanwhile win over the list, as they are
   * newer. Resolves to `members`.
   */
  async syncMembers() {
    const touched = new Set();
    this._touched = touched;
    try {
      const res = await this.presence();
      for (const [client, entry] of Object.entries(res?.clients ?? {})) {
        if (!touched.has(client)) this.members.set(client, { client, ...entry });
      }
    } finally {
      if (this._touched === touched) this._touched = null;
    }
    return this.members;
  }

  /** Applies one join (`join` true) or leave to `members` and emits its event. */
  _presenceChange(info, join) {
    if (!info || typeof info.client !== 'string') return;
    this._touched?.add(info.client);
    if (join) this.members.set(info.client, info);
    else this.members.delete(info.client);
    this.emit(join ? 'join' : 'leave', { channel: this.channel, info });
  }

  presenceStats() {
    return this._link.call('presence_stats', { channel: this.channel });
  }

  /** @param {{limit?: number, since?: {offset: number, epoch: string}, reverse?: boolean}} [opts] */
  history(opts) {
    return this._link.call('history', historyParams(this.channel, opts)).then(historyWithBytes);
  }

  // ---- internals driven by the client ----

  _setState(state) {
    if (state === this.state) return;
    const oldState = this.state;
    this.state = state;
    this.emit('state', { newState: state, oldState, channel: this.channel });
  }

  _moveToUnsubscribed(code, reason, sendUnsubscribe) {
    this._clearTimers();
    if (this.state === 'unsubscribed') return;
    const wasOnServer = this._sentOn !== 0 && this._sentOn === this._link.connection();
    this._attempt++;
    this._sentOn = 0;
    this._buffer = [];
    this._setState('unsubscribed');
    if (sendUnsubscribe && wasOnServer) {
      this._link.call('unsubscribe', { channel: this.channel }).catch((err) => {
        this.emit('error', { channel: this.channel, type: 'unsubscribe', error: err });
      });
    }
    this.emit('unsubscribed', { channel: this.channel, code, reason });
  }

  /** The connection dropped: go back to subscribing (resubscribed on the next connect). */
  _onTransportLost() {
    this._clearTimers();
    this._sentOn = 0;
    this._buffer = [];
    this._attempt++;
    if (this.state === 'subscribed') {
      this._setState('subscribing');
      this.emit('subscribing', { channel: this.channel, code: DisconnectCode.TRANSPORT_CLOSED, reason: 'transport closed' });
    }
  }

  _clearTimers() {
    if (this._retryTimer) clearTimeout(this._retryTimer);
    if (this._refreshTimer) clearTimeout(this._refreshTimer);
    this._retryTimer = null;
    this._refreshTimer = null;
  }

  _needsToken() {
    return this._getToken != null && (this._token == null || this._tokenExpired);
  }

  async _fetchToken() {
    const token = await this._getToken({ channel: this.channel });
    this._token = token;
    this._tokenExpired = false;
    return token;
  }

  /** Builds the params and sends `subscribe`. Called when connected and subscribing. */
  async _sendSubscribe() {
    const link = this._link;
    const attempt = ++this._attempt;
    const connection = link.connection();
    this._sentOn = connection;
    this._buffer = [];
    // a new subscription gets the changes from its own join on: what came before is gone
    this.members.clear();
    if (this._needsToken()) {
      try {
        await this._fetchToken();
      } catch (err) {
        if (attempt !== this._attempt) return;
        this._sentOn = 0;
        this.emit('error', { channel: this.channel, type: 'token', error: err });
        this._scheduleRetry();
        return;
      }
      if (attempt !== this._attempt || link.connection() !== connection) return;
    }
    /** @type {any} */
    const params = { channel: this.channel };
    if (this._token) params.token = this._token;
    if (this._data !== undefined) params.data = this._data;
    if (this._joinLeave !== undefined) params.join_leave = this._joinLeave;
    if (this._delta) params.delta = this._delta;
    const wasRecovering = this._recoverable && this._serverRecoverable && this.offset != null && this.epoch != null;
    if (this._recoverable && this._serverRecoverable) {
      params.recover = true;
      if (wasRecovering) {
        params.offset = this.offset;
        params.epoch = this.epoch;
      }
    }
    let result;
    try {
      result = await link.call('subscribe', params);
    } catch (err) {
      if (attempt !== this._attempt) return;
      this._sentOn = 0;
      this._onSubscribeError(err);
      return;
    }
    if (attempt !== this._attempt || this.state !== 'subscribing') return;
    this._onSubscribeResult(result ?? {}, wasRecovering);
  }

  _onSubscribeError(err) {
    if (!(err instanceof KilatError)) err = new KilatError(ErrorCode.INTERNAL, String(err?.message ?? err));
    // the transport dropped: the client resubscribes after reconnecting
    if (err.code === ErrorCode.TRANSPORT_CLOSED || err.code === ErrorCode.CLIENT_DISCONNECTED) return;
    this.emit('error', { channel: this.channel, type: 'subscribe', error: err });
    if (err.code === ErrorCode.TOKEN_EXPIRED && this._getToken) {
      this._tokenExpired = true;
      this._scheduleRetry();
    } else if (err.temporary || err.code === ErrorCode.TIMEOUT) {
      this._scheduleRetry();
    } else {
      this._moveToUnsubscribed(err.code, err.message, false);
    }
  }

  _scheduleRetry() {
    if (this._retryTimer) clearTimeout(this._retryTimer);
    const delay = backoff(this._retries++, this._minDelay, this._maxDelay);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (this.state === 'subscribing' && this._link.connection()) this._sendSubscribe();
    }, delay);
  }

  _onSubscribeResult(result, wasRecovering) {
    this._retries = 0;
    // the server sends the first live publication in full
    this._deltaBase = null;
    const sameEpoch = result.epoch != null && result.epoch === this.epoch;
    // de-duplicate recovered publications against what this subscription already delivered,
    // but only while the stream is the same one (a new epoch restarts offsets)
    if (!sameEpoch) this.offset = null;
    if (result.recoverable === false) this._serverRecoverable = false;
    if (result.epoch != null) this.epoch = result.epoch;
    const pubs = Array.isArray(result.publications) ? result.publications : [];
    const buffered = this._buffer;
    this._buffer = [];
    this._setState('subscribed');
    if (result.expires && result.ttl > 0 && this._getToken) this._scheduleRefresh(result.ttl);
    this.emit('subscribed', {
      channel: this.channel,
      recovered: Boolean(result.recovered),
      wasRecovering,
      recoverable: result.recoverable !== false,
      positioned: Boolean(result.positioned),
      latest: Boolean(result.latest),
      offset: typeof result.offset === 'number' ? result.offset : this.offset,
      epoch: this.epoch,
      data: result.data,
    });
    // recovered publications first (each advances the offset, duplicates are dropped), then
    // the result's position, then the live ones that raced the reply
    const attempt = this._attempt;
    for (const pub of pubs) {
      if (attempt !== this._attempt || this.state !== 'subscribed') return; // a listener unsubscribed
      this._emitPublication(pub);
    }
    if (typeof result.offset === 'number' && (this.offset == null || result.offset > this.offset)) {
      this.offset = result.offset;
    }
    for (const push of buffered) this._handlePush(push);
  }

  _scheduleRefresh(ttl) {
    if (this._refreshTimer) clearTimeout(this._refreshTimer);
    this._refreshTimer = setTimeout(() => {
      this._refreshTimer = null;
      this._refresh();
    }, ttlDelay(ttl));
  }

  /** Token expired (server `refresh` push with our channel, or our own timer): send `sub_refresh`. */
  async _refresh() {
    if (this.state !== 'subscribed') return;
    if (!this._getToken) {
      this.emit('error', {
        channel: this.channel,
        type: 'refresh',
        error: new KilatError(ErrorCode.TOKEN_UNAVAILABLE, 'server asked for a subscription token but no getToken is set'),
      });
      return;
    }
    const connection = this._link.connection();
    try {
      this._tokenExpired = true;
      const token = await this._fetchToken();
      if (connection !== this._link.connection() || this.state !== 'subscribed') return;
      const res = await this._link.call('sub_refresh', { channel: this.channel, token });
      if (res?.expires && res.ttl > 0) this._scheduleRefresh(res.ttl);
    } catch (err) {
      this.emit('error', { channel: this.channel, type: 'refresh', error: err });
    }
  }

  _emitPublication(pub) {
    if (this._delta) {
      try {
        pub = this._resolveDelta(pub);
      } catch (error) {
        this._deltaFailed(error);
        return;
      }
    }
    if (typeof pub?.offset === 'number') {
      if (this.offset != null && pub.offset <= this.offset) return; // duplicate
      this.offset = pub.offset;
    }
    const ctx = publicationContext(this.channel, pub);
    this.emit('publication', ctx);
  }

  /**
   * A publication of a delta subscription in its payload form: `delta: false` carries the
   * payload's JSON text, `delta: true` a fossil delta against the last one; a plain publication
   * (from a subscribe result, a repair) leaves no base. Applied before de-duplication, since
   * the server's base is the last publication it sent, duplicate or not.
   */
  _resolveDelta(pub) {
    if (pub?.delta === undefined) {
      this._deltaBase = null;
      return pub;
    }
    if (typeof pub.data !== 'string') throw new Error('a delta-form publication without string data');
    let text = pub.data;
    if (pub.delta === true) {
      if (this._deltaBase == null) throw new Error('a delta without a previous payload');
      text = applyTextDelta(this._deltaBase, pub.data);
    }
    const data = JSON.parse(text);
    this._deltaBase = text;
    const { delta: _, ...rest } = pub;
    return { ...rest, data };
  }

  /**
   * A delta that cannot be applied: that publication is lost here, so subscribe again,
   * recovering from the last delivered offset (recovery sends full payloads).
   */
  _deltaFailed(error) {
    this._deltaBase = null;
    this.emit('error', { channel: this.channel, type: 'delta', error });
    this._attempt++;
    this._sentOn = 0;
    this._setState('subscribing');
    this.emit('subscribing', { channel: this.channel, code: 0, reason: 'delta could not be applied' });
    if (!this._link.connection()) return;
    // commands run in order on the connection: the subscribe follows the unsubscribe
    this._link.call('unsubscribe', { channel: this.channel }).catch(() => {});
    this._sendSubscribe();
  }

  /** A push for this channel. */
  _handlePush(push) {
    if (this.state === 'subscribing') {
      // the subscribe reply is outstanding: keep order by replaying after it
      if (push.pub || push.join || push.leave || push.presence_diff || push.presence_count) this._buffer.push(push);
      return;
    }
    if (this.state !== 'subscribed') return;
    if (push.pub) this._emitPublication(push.pub);
    else if (push.join) this._presenceChange(push.join.info, true);
    else if (push.leave) this._presenceChange(push.leave.info, false);
    else if (push.presence_diff) {
      // one batching window's changes, in order: the same events as single pushes
      for (const change of push.presence_diff.changes ?? []) {
        if (change.join) this._presenceChange(change.join, true);
        else if (change.leave) this._presenceChange(change.leave, false);
      }
    } else if (push.presence_count) {
      // above the namespace's presence_diff_max: counts instead of changes
      const { num_clients: numClients = 0, num_users: numUsers = 0 } = push.presence_count;
      this.emit('count', { channel: this.channel, num_clients: numClients, num_users: numUsers });
    } else if (push.unsubscribe) {
      const u = push.unsubscribe;
      this._sentOn = 0;
      if (u.resubscribe === true) {
        // the server dropped us but asks for a new subscribe (e.g. insufficient state):
        // resubscribe with the recovery position
        this._attempt++;
        this._setState('subscribing');
        this.emit('subscribing', { channel: this.channel, code: u.code ?? 0, reason: u.reason ?? 'resubscribe' });
        if (this._link.connection()) this._sendSubscribe();
      } else {
        this._moveToUnsubscribed(u.code ?? 0, u.reason ?? 'unsubscribed by server', false);
      }
    } else if (push.refresh) this._refresh();
  }
}

/**
 * A new subscription and the control its client drives it with.
 * @param {ClientLink} link
 * @param {string} channel
 * @param {import('./kilat.js').SubscriptionOptions} [options]
 * @returns {SubscriptionControl}
 */
export function createSubscription(link, channel, options) {
  const sub = new Subscription(link, channel, options);
  return {
    subscription: sub,
    connected(connection) {
      // a `connected` listener may have subscribed it already on this connection
      if (sub.state === 'subscribing' && sub._sentOn !== connection) sub._sendSubscribe();
    },
    lost: () => sub._onTransportLost(),
    ended: (code, reason) => sub._moveToUnsubscribed(code, reason, false),
    push(push) {
      if (sub.state === 'unsubscribed') return false;
      sub._handlePush(push);
      return true;
    },
  };
}
