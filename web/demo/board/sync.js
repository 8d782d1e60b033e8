// Keeps a BoardDoc (crdt.js) in step with everyone else's over one kilat channel. No DOM: the
// page gives it a connected SDK client; node tests can do the same.
//
// Publications on the board's channel (JSON `data`):
//   {t: "d", r, d}       a delta: the state changed by one or more local edits of replica r
//   {t: "s", r, d, o?}   a snapshot: r's whole state; `o` is the channel offset up to which r
//                        had merged every publication when it took the snapshot
//   {t: "q", r}          "I just arrived (or lost track): whoever is here, send a snapshot"
//
// How a replica gets the full document (docs/use-cases.md, "Late joiners"):
//   1. On a subscribe that did not recover (first visit, or the stream's epoch changed), read
//      the channel's history newest first, back to the newest snapshot that has an `o`, and
//      further back down to offset o + 1 (deltas that raced the snapshot). Merge all of it.
//   2. Publish a `q`. Peers answer after a random 50-400 ms with a snapshot, unless a snapshot
//      they saw in the meantime already covers their state (so a crowd answers once or twice).
//   3. If this replica already had state (it lost the stream, e.g. a memory-engine restart),
//      it publishes its own snapshot the same way, so the history holds the document again.
// A subscribe that recovered gets the missed publications from the SDK, in order, and needs
// none of this. Every `snapshotEvery` deltas, the replica whose delta crossed the mark
// publishes a snapshot, so the history behind the newest snapshot can expire.
//
// Local edits go to an outbox (itself a BoardDoc holding only what is unsent), flushed every
// `flushMs` while subscribed: a drag is one publication per flush, not one per mouse event, and
// everything edited offline goes out as one delta after the reconnect. An update or snapshot
// larger than one publication is split into parts that each fit (crdt.js `splitUpdate`).

import { BoardDoc, splitUpdate } from './crdt.js';

/**
 * The largest publication `data` the server takes by default: the namespace's
 * `max_message_size` (65536; more is error 413). The whole `publish` frame must also fit the
 * WebSocket's `max_message_size` (65536; more closes the connection with 1009), so updates are
 * checked against this less a margin for the frame around `data`.
 */
export const MAX_PUBLISH_BYTES = 65536;
const FRAME_MARGIN = 512;

const encoder = new TextEncoder();
const byteLength = (value) => encoder.encode(JSON.stringify(value)).length;

export class BoardSync {
  /**
   * @param {import('/sdk/kilat.js').Kilat} client a client (connected or not)
   * @param {string} channel the board's channel, e.g. `board:main`
   * @param {BoardDoc} doc the replica
   * @param {object} [opts]
   * @param {() => void} [opts.onChange] the document changed (remote edits)
   * @param {(kind: string, message: string) => void} [opts.onError] something to tell the user
   * @param {(status: string) => void} [opts.onStatus] `syncing`, `synced`, `offline`
   * @param {number} [opts.snapshotEvery] deltas between snapshots (default 50)
   * @param {number} [opts.flushMs] outbox flush interval (default 40)
   * @param {number} [opts.maxPublishBytes] the namespace's max_message_size (default 65536)
   */
  constructor(client, channel, doc, opts = {}) {
    this.client = client;
    this.channel = channel;
    this.doc = doc;
    this.onChange = opts.onChange ?? (() => {});
    this.onError = opts.onError ?? (() => {});
    this.onStatus = opts.onStatus ?? (() => {});
    this.snapshotEvery = opts.snapshotEvery ?? 50;
    this.flushMs = opts.flushMs ?? 40;
    this.maxPublishBytes = opts.maxPublishBytes ?? MAX_PUBLISH_BYTES;
    /** unsent local changes */
    this.outbox = new BoardDoc(doc.replica);
    this.outboxEmpty = true;
    /** deltas seen since the last snapshot on the channel */
    this.sinceSnapshot = 0;
    /** offset up to which every publication is merged (null until the first sync finished) */
    this.syncedOffset = null;
    /** set after a 403 on publish: this user may not edit the board */
    this.readOnly = false;
    /** updates refused as malformed (shown to the user, read by tests) */
    this.rejected = 0;
    this.status = 'offline';
    this._flushTimer = null;
    this._answerTimer = null;
    this._flushing = false;
    this._syncing = false;

    this.sub = client.newSubscription(channel);
    this.sub.on('subscribed', (ctx) => this._onSubscribed(ctx));
    this.sub.on('subscribing', () => this._setStatus('offline'));
    this.sub.on('publication', (ctx) => this._onPublication(ctx));
    this.sub.on('error', (ctx) => this.onError('subscribe', `board channel: ${ctx.error?.message ?? ctx.error}`));
  }

  start() {
    this.sub.subscribe();
  }

  stop() {
    clearTimeout(this._flushTimer);
    clearTimeout(this._answerTimer);
    this.client.removeSubscription(this.sub);
  }

  /** Queues a local edit's delta (from doc.createShape etc.) for publication. */
  edit(delta) {
    if (!delta) return;
    if (this.readOnly) {
      this.onError('forbidden', 'You may not edit this board: your change stays on this screen only.');
      return;
    }
    this.outbox.apply(delta);
    this.outboxEmpty = false;
    this._scheduleFlush();
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.onStatus(status);
  }

  _scheduleFlush() {
    if (this._flushTimer || this.outboxEmpty) return;
    this._flushTimer = setTimeout(() => {
      this._flushTimer = null;
      this._flush();
    }, this.flushMs);
  }

  async _flush() {
    if (this._flushing || this.outboxEmpty || this.sub.state !== 'subscribed') return;
    const delta = this.outbox.snapshot();
    this.outbox = new BoardDoc(this.doc.replica);
    this.outboxEmpty = true;
    // a large change (a paste, a long offline session) goes out in parts that each fit
    const parts = splitUpdate(delta, Math.floor((this.maxPublishBytes - FRAME_MARGIN) / 3));
    this._flushing = true;
    try {
      for (let i = 0; i < parts.length; i++) {
        const data = { t: 'd', r: this.doc.replica, d: parts[i] };
        if (byteLength(data) > this.maxPublishBytes - FRAME_MARGIN) {
          this.onError('too-large', `This change is too large to share (${byteLength(data)} bytes; one publication holds ${this.maxPublishBytes - FRAME_MARGIN}): it stays on this screen only.`);
          continue;
        }
        try {
          await this.sub.publish(data);
        } catch (err) {
          this._publishFailed(err, parts.slice(i));
          return;
        }
      }
    } finally {
      this._flushing = false;
      this._scheduleFlush();
    }
  }

  _publishFailed(err, parts) {
    const code = err?.code;
    if (code === 403) {
      this.readOnly = true;
      this.onError('forbidden', 'You may not edit this board (permission denied): your changes stay on this screen only.');
    } else if (code === 413) {
      this.onError('too-large', 'The server refused this change as too large (413): it stays on this screen only.');
    } else {
      // disconnected or a temporary error: keep the change and send it after the resubscribe
      for (const part of parts) this.outbox.apply(part);
      this.outboxEmpty = false;
    }
  }

  _onPublication(ctx) {
    const data = ctx.data;
    if (typeof ctx.offset === 'number' && this.syncedOffset !== null) this.syncedOffset = Math.max(this.syncedOffset, ctx.offset);
    if (data === null || typeof data !== 'object' || typeof data.t !== 'string') {
      this._reject('a publication that is not a board update');
      return;
    }
    const own = data.r === this.doc.replica;
    if (data.t === 'q') {
      if (!own) this._scheduleAnswer();
      return;
    }
    if (data.t !== 'd' && data.t !== 's') {
      this._reject(`unknown update type ${JSON.stringify(data.t).slice(0, 20)}`);
      return;
    }
    if (!own) this._merge(data.d);
    if (data.t === 's') {
      this.sinceSnapshot = 0;
      if (this._answerTimer && this.doc.coveredBy(data.d)) {
        clearTimeout(this._answerTimer);
        this._answerTimer = null;
      }
    } else {
      this.sinceSnapshot += 1;
      if (own && this.sinceSnapshot >= this.snapshotEvery) this._publishSnapshot();
    }
  }

  _merge(delta) {
    let res;
    try {
      res = this.doc.apply(delta);
    } catch (err) {
      res = { changed: true, errors: [String(err?.message ?? err)] };
    }
    if (res.errors.length > 0) this._reject(res.errors.slice(0, 3).join('; '));
    if (res.changed) this.onChange();
  }

  _reject(reason) {
    this.rejected += 1;
    console.warn('[board] ignored part of an update:', reason);
    this.onError('malformed', `Ignored ${this.rejected === 1 ? 'a malformed update' : `${this.rejected} malformed updates`} from another client.`);
  }

  async _onSubscribed(ctx) {
    if (ctx.wasRecovering && ctx.recovered) {
      // the SDK delivers what we missed, in order, before anything live
      this._setStatus('synced');
      this._scheduleFlush();
      return;
    }
    const hadState = this.doc.shapes.size > 0 || this.doc.chars.size > 0;
    this._setStatus('syncing');
    this.syncedOffset = null;
    await this._loadHistory(ctx.offset, ctx.epoch);
    this.syncedOffset = typeof this.sub.offset === 'number' ? this.sub.offset : ctx.offset ?? 0;
    this.sub.publish({ t: 'q', r: this.doc.replica }).catch(() => {});
    if (hadState) this._scheduleAnswer();
    this._setStatus('synced');
    this._scheduleFlush();
  }

  /** Reads history newest first down to the newest complete snapshot (see the file's top). */
  async _loadHistory(top, epoch) {
    if (!ctxHasHistory(top, epoch)) return;
    let since = null;
    let stopAt = null; // offset at or below which everything is in a snapshot already merged
    for (let page = 0; page < 20; page++) {
      let res;
      try {
        res = await this.sub.history({ limit: 200, reverse: true, ...(since ? { since } : {}) });
      } catch (err) {
        if (err?.code === 403) this.onError('history', 'This board keeps no readable history: the document comes from the people online.');
        else this.onError('history', `Could not read the board's history (${err?.message ?? err}); asking the people online.`);
        return;
      }
      const pubs = res.publications ?? [];
      for (const pub of pubs) {
        if (stopAt !== null && typeof pub.offset === 'number' && pub.offset <= stopAt) return;
        const d = pub.data;
        if (d && typeof d === 'object' && (d.t === 'd' || d.t === 's')) this._merge(d.d);
        if (d && d.t === 's' && Number.isSafeInteger(d.o) && stopAt === null) stopAt = d.o;
      }
      if (pubs.length < 200) return;
      const last = pubs[pubs.length - 1];
      if (typeof last.offset !== 'number' || last.offset <= 1) return;
      since = { offset: last.offset, epoch: res.epoch };
    }
  }

  _scheduleAnswer() {
    if (this._answerTimer) return;
    this._answerTimer = setTimeout(() => {
      this._answerTimer = null;
      this._publishSnapshot();
    }, 50 + Math.random() * 350);
  }

  /**
   * Publishes the whole document. One larger than a publication goes out in parts: every part
   * but the last as a delta, the last as the snapshot with `o`, so a history reader that stops
   * at the snapshot and reads on down to `o + 1` passes the earlier parts too (they were
   * published after `o`).
   */
  async _publishSnapshot() {
    if (this.readOnly || this.sub.state !== 'subscribed') return;
    const o = this.syncedOffset;
    // bytes, not UTF-16 units: leave room for multi-byte characters in notes and text
    const parts = splitUpdate(this.doc.snapshot(), Math.floor((this.maxPublishBytes - FRAME_MARGIN) / 3));
    this.sinceSnapshot = 0;
    try {
      for (let i = 0; i < parts.length; i++) {
        const last = i === parts.length - 1;
        const data = { t: last ? 's' : 'd', r: this.doc.replica, d: parts[i] };
        if (last && o !== null) data.o = o;
        await this.sub.publish(data);
      }
    } catch (err) {
      if (err?.code === 403) this.readOnly = true;
    }
  }
}

function ctxHasHistory(offset, epoch) {
  return typeof epoch === 'string' && epoch !== '' && typeof offset === 'number' && offset > 0;
}
