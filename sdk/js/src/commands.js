// Commands with acknowledgement, over an ordinary channel (docs/use-cases.md, "Commands with
// acknowledgement"). A device subscribes to its channel with recovery; a command is a
// publication with an id; the device acknowledges in the same channel. Because the channel
// keeps history and the subscription recovers, a command sent while the device was offline
// reaches it when it reconnects, once: recovery drops offsets it already saw, and the receiver
// also remembers the ids it executed.
//
// Wire format (the Rust client's `kilat_client::commands` speaks the same):
//   command: {"cmd": {"id": "...", "name": "...", "args": <any>, "sent": <ms since 1970>}}
//   ack:     {"ack": {"id": "...", "status": "delivered" | "done" | "failed",
//                     "result"?: <any>, "error"?: "..."}}
// "delivered" is sent on receipt, before the handler runs; "done"/"failed" when it finished.

import { EventEmitter } from './emitter.js';
import { KilatError, ErrorCode } from './errors.js';

const MAX_SEEN = 1000;

/** A random command id (crypto.randomUUID where available). */
function newId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

/** The channel of device `id` in `namespace`. */
export function deviceChannel(id, namespace = 'device') {
  return `${namespace}:${id}`;
}

function subscriptionOf(client, channel) {
  const sub = client.getSubscription(channel) ?? client.newSubscription(channel);
  if (sub.state === 'unsubscribed') sub.subscribe();
  return sub;
}

/**
 * Sends commands to devices and follows their acknowledgements.
 *
 * Events: `status` with `{ device, id, name, status, rttMs?, result?, error? }` for every
 * change (`sent`, `delivered`, `done`, `failed`, `timeout`; a late ack after a timeout is
 * reported too).
 */
export class CommandSender extends EventEmitter {
  /**
   * @param {import('./client.js').Kilat} client
   * @param {{ namespace?: string, timeout?: number }} [options]
   */
  constructor(client, options = {}) {
    super();
    this._client = client;
    this._namespace = options.namespace ?? 'device';
    this._timeout = options.timeout ?? 5000;
    /** id -> pending command */
    this._pending = new Map();
    /** channels we listen on for acks */
    this._listening = new Map();
  }

  /** Subscribes to device `device`'s channel (to see acks); resolves when subscribed. */
  async watch(device) {
    const channel = deviceChannel(device, this._namespace);
    let sub = this._listening.get(channel);
    if (!sub) {
      sub = subscriptionOf(this._client, channel);
      sub.on('publication', (ctx) => this._onPublication(device, ctx.data));
      this._listening.set(channel, sub);
    }
    await sub.ready(this._timeout);
    return sub;
  }

  /**
   * Sends command `name` with `args` to `device`. Resolves with
   * `{ id, delivered, rttMs, result }` when the device reports `done`; rejects with a
   * KilatError (code 400 for `failed`, with the device's message; `timeout` after `timeout`
   * ms without `done`, with `delivered` telling whether the device received it).
   * @returns {Promise<{ id: string, delivered: boolean, rttMs: number, result: unknown }>}
   */
  async send(device, name, args = null, options = {}) {
    if (typeof device !== 'string' || device === '') throw new TypeError('device must be a non-empty string');
    if (typeof name !== 'string' || name === '') throw new TypeError('command name must be a non-empty string');
    const timeout = options.timeout ?? this._timeout;
    await this.watch(device);
    const id = newId();
    const sent = Date.now();
    const channel = deviceChannel(device, this._namespace);
    return new Promise((resolve, reject) => {
      const entry = { device, name, sent, delivered: false, done: false, resolve, reject, timer: null };
      entry.timer = setTimeout(() => {
        entry.timer = null;
        this._status(entry, id, 'timeout');
        const message = entry.delivered
          ? `command ${name} to ${device}: delivered but not acknowledged within ${timeout} ms`
          : `command ${name} to ${device}: not delivered within ${timeout} ms (is the device offline? it gets the command when it reconnects)`;
        // `delivered` and `id` tell the caller what happened and which late status to expect.
        const err = Object.assign(new KilatError(ErrorCode.TIMEOUT, message), { delivered: entry.delivered, id });
        reject(err);
      }, timeout);
      this._pending.set(id, entry);
      this._status(entry, id, 'sent');
      this._client.publish(channel, { cmd: { id, name, args, sent } }).catch((err) => {
        clearTimeout(entry.timer);
        this._pending.delete(id);
        reject(err);
      });
    });
  }

  _status(entry, id, status, extra = {}) {
    this.emit('status', { device: entry.device, id, name: entry.name, status, ...extra });
  }

  _onPublication(device, data) {
    const ack = data && typeof data === 'object' ? data.ack : null;
    if (!ack || typeof ack.id !== 'string') return;
    const entry = this._pending.get(ack.id);
    if (!entry || entry.device !== device) return;
    const rttMs = Date.now() - entry.sent;
    if (ack.status === 'delivered') {
      if (entry.delivered) return;
      entry.delivered = true;
      this._status(entry, ack.id, 'delivered', { rttMs });
      return;
    }
    if (ack.status !== 'done' && ack.status !== 'failed') return;
    entry.delivered = true;
    this._pending.delete(ack.id);
    const late = entry.timer === null;
    if (!late) clearTimeout(entry.timer);
    if (ack.status === 'done') {
      this._status(entry, ack.id, 'done', { rttMs, result: ack.result, late });
      if (!late) entry.resolve({ id: ack.id, delivered: true, rttMs, result: ack.result });
    } else {
      const message = typeof ack.error === 'string' ? ack.error : 'command failed';
      this._status(entry, ack.id, 'failed', { rttMs, error: message, late });
      if (!late) entry.reject(new KilatError(ErrorCode.BAD_REQUEST, message));
    }
  }
}

/**
 * Receives the commands of one device and acknowledges them. `handler(command)` runs once per
 * command id (`{ id, name, args, sent }`); its return value (or promise) is the `done` result,
 * a throw is `failed` with the error's message.
 */
export class CommandReceiver extends EventEmitter {
  /**
   * @param {import('./client.js').Kilat} client
   * @param {string} device
   * @param {(command: { id: string, name: string, args: unknown, sent: number }) => unknown} handler
   * @param {{ namespace?: string }} [options]
   */
  constructor(client, device, handler, options = {}) {
    super();
    this._client = client;
    this.channel = deviceChannel(device, options.namespace ?? 'device');
    this._handler = handler;
    this._seen = new Set();
    this._sub = subscriptionOf(client, this.channel);
    this._sub.on('publication', (ctx) => this._onPublication(ctx.data));
  }

  /** Resolves once the device's channel is subscribed. */
  ready(timeout) {
    return this._sub.ready(timeout);
  }

  async _onPublication(data) {
    const cmd = data && typeof data === 'object' ? data.cmd : null;
    if (!cmd || typeof cmd.id !== 'string' || typeof cmd.name !== 'string') return;
    if (this._seen.has(cmd.id)) return; // executed already (resent, or seen before a restart of the subscription)
    this._seen.add(cmd.id);
    if (this._seen.size > MAX_SEEN) this._seen.delete(this._seen.values().next().value);
    const ack = (fields) => this._client.publish(this.channel, { ack: { id: cmd.id, ...fields } })
      .catch((err) => this.emit('error', err));
    await ack({ status: 'delivered' });
    this.emit('command', cmd);
    try {
      const result = await this._handler(cmd);
      await ack({ status: 'done', result: result ?? null });
    } catch (err) {
      await ack({ status: 'failed', error: String(err?.message ?? err) });
    }
  }
}
