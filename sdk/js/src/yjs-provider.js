// A Yjs provider over kilat channels: keeps a Y.Doc in step with everyone subscribed to one
// channel, and (optionally) a y-protocols Awareness (cursors, names) over a second channel.
//
// The SDK has no dependency on Yjs: the application passes its own `Y` namespace (and, for
// awareness, its `y-protocols/awareness` module), so there is one copy of Yjs in the page.
//
//   import * as Y from 'yjs';
//   import * as awarenessProtocol from 'y-protocols/awareness';
//   const doc = new Y.Doc();
//   const awareness = new awarenessProtocol.Awareness(doc);
//   const provider = new KilatYjsProvider(client, 'docs:report', doc, { Y, awareness, awarenessProtocol });
//
// Publications on the document channel (JSON `data`; Yjs updates in base64):
//   {t: "u", r, u}      an update (one or more local transactions merged)
//   {t: "s", r, u, o?}  a snapshot: the whole document as one update; `o` is the channel offset
//                       up to which the sender had applied every publication
//   {t: "q", r}         a state request from a replica that arrived or lost the stream
// `r` is a random id per provider, so a provider skips its own publications.
//
// How a replica gets the whole document (docs/use-cases.md, "Co-editing"):
//   - A subscribe that recovered (the SDK sent offset and epoch, the server had them): the
//     missed publications arrive in order, nothing else to do.
//   - Otherwise (first subscribe, expired history, new epoch after a memory-engine restart):
//     read history newest first down to the newest snapshot with an `o`, and on down to o + 1;
//     apply all of it; then publish a `q`. Peers answer with a snapshot after a random
//     50-400 ms unless a snapshot seen meanwhile already covers them. A replica that had
//     content before (it lost the stream) publishes its own snapshot the same way.
//   - Every `snapshotEvery` updates the replica whose update crossed the mark publishes a
//     snapshot, so the history behind the newest snapshot may expire.
// Local changes wait in a queue while offline and go out, merged, after the resubscribe.
//
// Awareness publications (channel `awarenessChannel`, no history needed):
//   {t: "a", r, c, u}   an awareness update (y-protocols encoding, base64); `c` = the sender's
//                       awareness clientID, removed when kilat reports the sender's leave
//   {t: "aq", r}        "send me your awareness state" (after subscribing)

import { EventEmitter } from './emitter.js';

/** The largest publication `data` a namespace takes by default; the frame needs some room too. */
const DEFAULT_MAX_BYTES = 65536 - 512;

const REMOTE = Symbol('kilat-yjs-remote');

/** Uint8Array -> base64 without Buffer (browsers and Node both have btoa). */
export function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** base64 -> Uint8Array; throws on anything that is not base64. */
export function fromBase64(text) {
  if (typeof text !== 'string') throw new TypeError('not a base64 string');
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function randomId() {
  const b = new Uint8Array(9);
  globalThis.crypto.getRandomValues(b);
  return toBase64(b).replace(/[+/=]/g, (c) => ({ '+': '-', '/': '_', '=': '' })[c]);
}

/**
 * Syncs a Y.Doc over a kilat channel. Events: `status` ({status: 'offline'|'syncing'|'synced'}),
 * `synced` (after the first full sync and after every resync), `error` ({kind, message}).
 */
export class KilatYjsProvider extends EventEmitter {
  /**
   * @param {import('./client.js').Kilat} client
   * @param {string} channel the document's channel
   * @param {any} doc a Y.Doc
   * @param {object} opts
   * @param {any} opts.Y the application's `yjs` namespace
   * @param {any} [opts.awareness] a y-protocols Awareness for `doc`
   * @param {any} [opts.awarenessProtocol] the application's `y-protocols/awareness` module
   * @param {string} [opts.awarenessChannel] default `awareness:<channel>` (a namespace without history)
   * @param {number} [opts.snapshotEvery] updates between snapshots (default 100)
   * @param {number} [opts.flushMs] how long local changes are gathered before publishing (default 20)
   * @param {number} [opts.maxPublishBytes] largest publication (default 65024)
   * @param {boolean} [opts.connect] subscribe now (default true)
   */
  constructor(client, channel, doc, opts) {
    super();
    if (!opts?.Y || typeof opts.Y.applyUpdate !== 'function') throw new TypeError('KilatYjsProvider needs the yjs namespace as opts.Y');
    if (opts.awareness && !opts.awarenessProtocol) throw new TypeError('awareness needs opts.awarenessProtocol (y-protocols/awareness)');
    this.client = client;
    this.channel = channel;
    this.doc = doc;
    this.Y = opts.Y;
    this.id = randomId();
    this.snapshotEvery = opts.snapshotEvery ?? 100;
    this.flushMs = opts.flushMs ?? 20;
    this.maxPublishBytes = opts.maxPublishBytes ?? DEFAULT_MAX_BYTES;
    /** true once the document holds everything the channel and the peers had */
    this.synced = false;
    /** set after a 403 on publish: local changes are not shared */
    this.readOnly = false;
    /** publications refused as malformed */
    this.rejected = 0;
    this.status = 'offline';
    /** local updates not yet accepted by the server */
    this._pending = [];
    this._sinceSnapshot = 0;
    this._syncedOffset = null;
    this._flushTimer = null;
    this._answerTimer = null;
    this._flushing = false;
    this._destroyed = false;

    this._onDocUpdate = (update, origin) => {
      if (origin === REMOTE) return;
      this._pending.push(update);
      this._scheduleFlush();
    };
    doc.on('update', this._onDocUpdate);

    this.sub = client.getSubscription(channel) ?? client.newSubscription(channel);
    this.sub.on('subscribed', (ctx) => this._onSubscribed(ctx));
    this.sub.on('subscribing', () => this._setStatus('offline'));
    this.sub.on('publication', (ctx) => this._onPublication(ctx));

    this.awareness = opts.awareness ?? null;
    this.awarenessProtocol = opts.awarenessProtocol ?? null;
    if (this.awareness) this._setupAwareness(opts.awarenessChannel ?? `awareness:${channel}`);
    if (opts.connect !== false) this.connect();
  }

  /** Subscribes (idempotent); the SDK sends it once the client is connected. */
  connect() {
    this.sub.subscribe();
    this.awarenessSub?.subscribe();
  }

  /** Stops syncing: removes our awareness state for the others, unsubscribes, unhooks the doc. */
  destroy() {
    if (this._destroyed) return;
    this._destroyed = true;
    clearTimeout(this._flushTimer);
    clearTimeout(this._answerTimer);
    this.doc.off('update', this._onDocUpdate);
    if (this.awareness) {
      this.awarenessProtocol.removeAwarenessStates(this.awareness, [this.doc.clientID], 'destroy');
      this.awareness.off('update', this._onAwarenessUpdate);
      clearTimeout(this._awarenessTimer);
      this.client.removeSubscription(this.awarenessSub);
    }
    this.client.removeSubscription(this.sub);
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    if (status === 'offline') this.synced = false;
    this.emit('status', { status });
  }

  _error(kind, message) {
    this.emit('error', { kind, message });
  }

  // ---------------------------------------------------------------- publishing

  _scheduleFlush() {
    if (this._flushTimer || this._pending.length === 0 || this._destroyed) return;
    this._flushTimer = setTimeout(() => {
      this._flushTimer = null;
      this._flush();
    }, this.flushMs);
  }

  async _flush() {
    if (this._flushing || this._pending.length === 0 || this.sub.state !== 'subscribed' || this.readOnly) return;
    const batch = this._pending;
    this._pending = [];
    // one publication for the batch; if that is too large, one per update
    let parts = [this.Y.mergeUpdates(batch)];
    if (this._size(parts[0]) > this.maxPublishBytes) parts = batch;
    this._flushing = true;
    try {
      for (let i = 0; i < parts.length; i++) {
        const u = parts[i];
        if (this._size(u) > this.maxPublishBytes) {
          this._error('too-large', `a local change of ${u.length} bytes does not fit one publication (${this.maxPublishBytes}); it is not shared`);
          continue;
        }
        try {
          await this.sub.publish({ t: 'u', r: this.id, u: toBase64(u) });
        } catch (err) {
          if (err?.code === 403) {
            this.readOnly = true;
            this._error('forbidden', `may not write to ${this.channel} (permission denied): local changes are not shared`);
            return;
          }
          if (err?.code === 413) {
            this._error('too-large', `the server refused a change as too large (413): it is not shared`);
            continue;
          }
          // offline or a temporary error: keep the rest for after the resubscribe
          this._pending.unshift(...parts.slice(i));
          return;
        }
      }
    } finally {
      this._flushing = false;
      this._scheduleFlush();
    }
  }

  _size(update) {
    return Math.ceil(update.length / 3) * 4 + 64;
  }

  _scheduleAnswer() {
    if (this._answerTimer || this._destroyed) return;
    this._answerTimer = setTimeout(() => {
      this._answerTimer = null;
      this._publishSnapshot();
    }, 50 + Math.random() * 350);
  }

  async _publishSnapshot() {
    if (this.readOnly || this.sub.state !== 'subscribed') return;
    const u = this.Y.encodeStateAsUpdate(this.doc);
    if (this._size(u) > this.maxPublishBytes) {
      this._error('snapshot-too-large', `the document (${u.length} bytes) does not fit one publication: late joiners rebuild it from history and updates`);
      return;
    }
    const data = { t: 's', r: this.id, u: toBase64(u) };
    if (this._syncedOffset !== null) data.o = this._syncedOffset;
    this._sinceSnapshot = 0;
    await this.sub.publish(data).catch(() => {});
  }

  // ---------------------------------------------------------------- receiving

  async _onSubscribed(ctx) {
    if (ctx.wasRecovering && ctx.recovered) {
      this._setStatus('synced');
      this.synced = true;
      this.emit('synced', { synced: true });
      this._scheduleFlush();
      return;
    }
    const hadState = this.Y.encodeStateVector(this.doc).length > 1;
    this._setStatus('syncing');
    this._syncedOffset = null;
    await this._loadHistory(ctx.offset, ctx.epoch);
    if (this.sub.state !== 'subscribed') return;
    this._syncedOffset = typeof this.sub.offset === 'number' ? this.sub.offset : (ctx.offset ?? 0);
    this.sub.publish({ t: 'q', r: this.id }).catch(() => {});
    if (hadState) this._scheduleAnswer();
    this._setStatus('synced');
    this.synced = true;
    this.emit('synced', { synced: true });
    this._scheduleFlush();
  }

  async _loadHistory(top, epoch) {
    if (typeof epoch !== 'string' || epoch === '' || typeof top !== 'number' || top <= 0) return;
    let since = null;
    let stopAt = null;
    for (let page = 0; page < 50; page++) {
      let res;
      try {
        res = await this.sub.history({ limit: 200, reverse: true, ...(since ? { since } : {}) });
      } catch (err) {
        this._error('history', `could not read the history of ${this.channel} (${err?.message ?? err}); relying on peers`);
        return;
      }
      const pubs = res.publications ?? [];
      for (const pub of pubs) {
        if (stopAt !== null && typeof pub.offset === 'number' && pub.offset <= stopAt) return;
        const d = pub.data;
        if (d && typeof d === 'object' && (d.t === 'u' || d.t === 's') && d.r !== this.id) this._apply(d.u);
        if (d && d.t === 's' && Number.isSafeInteger(d.o) && stopAt === null) stopAt = d.o;
      }
      const last = pubs[pubs.length - 1];
      if (pubs.length < 200 || typeof last?.offset !== 'number' || last.offset <= 1) return;
      since = { offset: last.offset, epoch: res.epoch };
    }
  }

  _onPublication(ctx) {
    if (typeof ctx.offset === 'number' && this._syncedOffset !== null) this._syncedOffset = Math.max(this._syncedOffset, ctx.offset);
    const d = ctx.data;
    if (d === null || typeof d !== 'object' || typeof d.t !== 'string') return this._reject('a publication that is not a Yjs provider message');
    if (d.r === this.id) {
      if (d.t === 'u' && ++this._sinceSnapshot >= this.snapshotEvery) this._publishSnapshot();
      return;
    }
    if (d.t === 'q') return this._scheduleAnswer();
    if (d.t !== 'u' && d.t !== 's') return this._reject(`unknown message type ${JSON.stringify(d.t).slice(0, 20)}`);
    this._apply(d.u);
    if (d.t === 's') {
      this._sinceSnapshot = 0;
      if (this._answerTimer && this._covered(d.u)) {
        clearTimeout(this._answerTimer);
        this._answerTimer = null;
      }
    } else {
      this._sinceSnapshot += 1;
    }
  }

  /** True when a snapshot's state vector includes ours (it holds at least what we hold). */
  _covered(b64) {
    try {
      const theirs = this.Y.decodeStateVector(this.Y.encodeStateVectorFromUpdate(fromBase64(b64)));
      for (const [client, clock] of this.Y.decodeStateVector(this.Y.encodeStateVector(this.doc))) {
        if ((theirs.get(client) ?? 0) < clock) return false;
      }
      return true;
    } catch {
      return false;
    }
  }

  _apply(b64) {
    let bytes;
    try {
      bytes = fromBase64(b64);
    } catch {
      return this._reject('an update that is not base64');
    }
    try {
      this.Y.applyUpdate(this.doc, bytes, REMOTE);
    } catch (err) {
      this._reject(`an update Yjs could not read (${err?.message ?? err})`);
    }
  }

  _reject(reason) {
    this.rejected += 1;
    this._error('malformed', `ignored ${reason} on ${this.channel}`);
  }

  // ---------------------------------------------------------------- awareness

  _setupAwareness(channel) {
    const aw = this.awareness;
    const proto = this.awarenessProtocol;
    /** kilat client id -> awareness clientIDs it announced (removed on its leave) */
    this._peers = new Map();
    this._awarenessDirty = new Set();
    this._awarenessTimer = null;
    this.awarenessSub = this.client.getSubscription(channel) ?? this.client.newSubscription(channel, { recoverable: false, joinLeave: true });
    this._onAwarenessUpdate = ({ added, updated, removed }, origin) => {
      if (origin === REMOTE) return;
      // only our own state: others' entries that time out locally are not ours to announce
      for (const c of [...added, ...updated, ...removed]) if (c === this.doc.clientID) this._awarenessDirty.add(c);
      if (this._awarenessDirty.size === 0) return;
      if (origin === 'destroy') return this._flushAwareness();
      if (!this._awarenessTimer) this._awarenessTimer = setTimeout(() => this._flushAwareness(), 50);
    };
    aw.on('update', this._onAwarenessUpdate);
    this.awarenessSub.on('subscribed', () => {
      this._awarenessDirty.add(this.doc.clientID);
      this._flushAwareness();
      this.awarenessSub.publish({ t: 'aq', r: this.id }).catch(() => {});
    });
    this.awarenessSub.on('publication', (ctx) => {
      const d = ctx.data;
      if (!d || typeof d !== 'object' || d.r === this.id) return;
      if (d.t === 'aq') {
        this._awarenessDirty.add(this.doc.clientID);
        if (!this._awarenessTimer) this._awarenessTimer = setTimeout(() => this._flushAwareness(), Math.random() * 200);
        return;
      }
      if (d.t !== 'a') return;
      try {
        proto.applyAwarenessUpdate(aw, fromBase64(d.u), REMOTE);
      } catch (err) {
        this._reject(`an awareness update that could not be read (${err?.message ?? err})`);
        return;
      }
      const from = ctx.info?.client;
      if (from && Number.isSafeInteger(d.c)) {
        const set = this._peers.get(from) ?? new Set();
        set.add(d.c);
        this._peers.set(from, set);
      }
    });
    this.awarenessSub.on('leave', (ctx) => {
      const ids = this._peers.get(ctx.info?.client);
      if (!ids) return;
      this._peers.delete(ctx.info.client);
      proto.removeAwarenessStates(aw, [...ids].filter((id) => id !== this.doc.clientID), REMOTE);
    });
  }

  _flushAwareness() {
    clearTimeout(this._awarenessTimer);
    this._awarenessTimer = null;
    if (this.awarenessSub.state !== 'subscribed' || this._awarenessDirty.size === 0) return;
    const clients = [...this._awarenessDirty];
    this._awarenessDirty.clear();
    const u = this.awarenessProtocol.encodeAwarenessUpdate(this.awareness, clients);
    this.awarenessSub.publish({ t: 'a', r: this.id, c: this.doc.clientID, u: toBase64(u) }).catch(() => {});
  }
}
