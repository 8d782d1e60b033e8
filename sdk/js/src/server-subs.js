// Server-side subscriptions (the token's `channels` claim, or added by the server API): the
// client did not ask for them, so it cannot resubscribe them; it keeps their stream positions
// and recovers them through `connect.subs` (docs/protocol.md section 4).

import { withBytes } from './codec.js';

/**
 * @typedef {{offset: number | null, epoch: string | null, recoverable: boolean}} Position
 */

/** Channel -> position, for every server-side subscription of this client. */
export class ServerSubscriptions extends Map {
  /**
   * The `subs` param of the next `connect`, or undefined when there is nothing to recover.
   * @returns {Record<string, {recover: true, offset: number, epoch: string}> | undefined}
   */
  recoverParams() {
    /** @type {Record<string, any>} */
    const subs = {};
    let any = false;
    for (const [channel, pos] of this) {
      if (pos.recoverable && pos.offset != null && pos.epoch != null) {
        subs[channel] = { recover: true, offset: pos.offset, epoch: pos.epoch };
        any = true;
      }
    }
    return any ? subs : undefined;
  }

  /**
   * A subscribe result (in the connect result's `subs` or a `subscribe` push). Returns the
   * `subscribed` event and the recovered publications to emit after it, de-duplicated.
   * @param {string} channel
   * @param {any} res
   */
  subscribed(channel, res) {
    const prev = this.get(channel);
    const sameEpoch = Boolean(prev && res.epoch != null && prev.epoch === res.epoch);
    /** @type {Position} */
    const pos = {
      offset: sameEpoch ? prev.offset : null,
      epoch: res.epoch ?? null,
      recoverable: res.recoverable !== false,
    };
    this.set(channel, pos);
    const publications = [];
    for (const pub of Array.isArray(res.publications) ? res.publications : []) {
      if (!this.advance(channel, pub)) continue;
      publications.push(pub);
    }
    if (typeof res.offset === 'number') pos.offset = pos.offset != null ? Math.max(pos.offset, res.offset) : res.offset;
    const event = {
      channel,
      recovered: Boolean(res.recovered),
      wasRecovering: sameEpoch,
      recoverable: pos.recoverable,
      positioned: Boolean(res.positioned),
      offset: pos.offset,
      epoch: pos.epoch,
    };
    return { event, publications };
  }

  /**
   * Records a publication's offset; false when it is a duplicate (at or below the position).
   * @param {string} channel
   * @param {any} pub
   */
  advance(channel, pub) {
    const pos = this.get(channel);
    if (!pos || typeof pub?.offset !== 'number') return true;
    if (pos.offset != null && pub.offset <= pos.offset) return false;
    pos.offset = pub.offset;
    return true;
  }
}

/**
 * The `publication` event payload for a publication.
 * @param {string} channel
 * @param {any} pub
 */
export function publicationContext(channel, pub) {
  pub = withBytes(pub);
  /** @type {any} */
  const ctx = { channel, data: pub?.data };
  if (pub?.offset !== undefined) ctx.offset = pub.offset;
  if (pub?.info !== undefined) ctx.info = pub.info;
  if (pub?.tags !== undefined) ctx.tags = pub.tags;
  return ctx;
}
