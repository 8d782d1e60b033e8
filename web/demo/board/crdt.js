// The board's merge: a state-based CRDT (a join semilattice) for the shapes and the shared text.
// No DOM and no imports, so the browser page and `node --test` load the same file.
//
// Why state-based (see docs/use-cases.md, "Co-editing"): every update a replica publishes is a
// *delta state*, a small piece of the document state, and merging is a join: commutative,
// associative and idempotent. So the order in which publications arrive, duplicates (history
// read twice, a recovered publication that was also delivered live), and snapshots mixed with
// deltas all end in the same state. kilat's per-channel offsets give every subscriber the same
// order anyway; the CRDT does not rely on it, which is what lets offline edits, late joiners
// and several nodes work without any server-side merge.
//
// Shapes: a map from shape id to properties; each property is a last-writer-wins register
// stamped with a Lamport clock [counter, replica] (ties broken by replica id). Deleting a shape
// sets its `del` register: a tombstone, so a move that races a delete cannot bring it back.
//
// Text: an RGA-style sequence. Every character has an id [counter, replica] and an origin (the
// id of the character it was typed after, or the start). The document is the tree of origins
// read depth first, siblings newest first; deleting hides a character (tombstone). The text is
// a function of the set of characters and the set of deletions only, hence convergence; a
// character typed right after another always lands right after it (its counter is the largest
// its author had seen), and a run typed by one person is never interleaved with another's.
//
// Wire format of a delta or a snapshot (both are plain JSON, the same shape):
//   { s: { <shapeId>: { <prop>: [value, counter, replica], ... } },
//     t: { e: [[counter, replica, originCounter, originReplica, "chars"], ...],
//          d: [[replica, counter, length], ...] } }
// An `e` entry is a run: the first character has the given origin (counter 0 and replica ""
// mean the start), each next character has counter + 1 and the previous character as origin.
// A `d` entry deletes the characters [counter, counter + length) of one replica.

/** Limits for input from the network: beyond them an update is refused, with a reason. */
export const LIMITS = Object.freeze({
  /** Shapes on one board, tombstones included. */
  maxShapes: 1000,
  /** Characters ever inserted in the text, deleted ones included. */
  maxTextElements: 40000,
  /** Longest string property (a sticky note's text). */
  maxStringProp: 1000,
  /** Largest coordinate or size, in board units. */
  maxCoordinate: 100000,
  /** Entries (shape properties, runs, delete ranges) in one update. */
  maxEntries: 20000,
});

/** Shape properties and how each is checked. */
const PROPS = {
  kind: (v) => v === 'rect' || v === 'ellipse' || v === 'note',
  x: coord,
  y: coord,
  w: (v) => coord(v) && v >= 1,
  h: (v) => coord(v) && v >= 1,
  z: (v) => Number.isFinite(v),
  color: (v) => typeof v === 'string' && /^#[0-9a-fA-F]{6}$/.test(v),
  text: (v) => typeof v === 'string' && v.length <= LIMITS.maxStringProp,
  del: (v) => v === true,
};

function coord(v) {
  return typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= LIMITS.maxCoordinate;
}

const REPLICA_RE = /^[A-Za-z0-9_-]{1,32}$/;
const SHAPE_RE = /^[A-Za-z0-9_.-]{1,64}$/;

function validCounter(c) {
  return Number.isSafeInteger(c) && c > 0;
}

/** Orders two stamps: positive when [c1, r1] is newer than [c2, r2]. */
function compareStamp(c1, r1, c2, r2) {
  if (c1 !== c2) return c1 - c2;
  return r1 < r2 ? -1 : r1 > r2 ? 1 : 0;
}

const key = (c, r) => `${c}@${r}`;
const ROOT = '';

/** A fresh replica id: random, URL-safe, 12 characters. */
export function newReplicaId() {
  const bytes = new Uint8Array(9);
  globalThis.crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'[b & 63];
  return s;
}

/**
 * One replica of a board document: shapes plus one shared text.
 *
 * Local edits (`createShape`, `updateShape`, `deleteShape`, `insertText`, `deleteText`) change
 * the state and return the delta to publish; `apply` merges a delta or snapshot from anyone.
 */
export class BoardDoc {
  /** @param {string} replica this replica's id (see `newReplicaId`) */
  constructor(replica) {
    if (!REPLICA_RE.test(replica)) throw new Error(`bad replica id ${JSON.stringify(replica)}`);
    this.replica = replica;
    /** Lamport clock: larger than every counter seen, local or remote. */
    this.clock = 0;
    /** shape id -> Map(prop -> [value, counter, replica]) */
    this.shapes = new Map();
    /** character key -> {c, r, o (origin key), ch} */
    this.chars = new Map();
    /** origin key -> child keys, newest first; only for characters whose origin is known */
    this.children = new Map([[ROOT, []]]);
    /** origin key -> keys of characters waiting for that origin to arrive */
    this.orphans = new Map();
    /** replica -> Set of deleted counters (deletions may arrive before their characters) */
    this.deleted = new Map();
    /** deleted counters in total, checked against LIMITS.maxTextElements */
    this._deletions = 0;
    /** cached visible text and the keys of its characters; null when stale */
    this._visible = null;
  }

  // ------------------------------------------------------------------ reading

  /** The visible shapes, sorted by z then id: [{id, kind, x, y, w, h, z, color, text}]. */
  shapeList() {
    const out = [];
    for (const [id, props] of this.shapes) {
      if (props.has('del') || !props.has('kind')) continue;
      const s = { id };
      for (const [p, reg] of props) s[p] = reg[0];
      out.push(s);
    }
    out.sort((a, b) => (a.z ?? 0) - (b.z ?? 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return out;
  }

  /** One visible shape, or null. */
  shape(id) {
    const props = this.shapes.get(id);
    if (!props || props.has('del') || !props.has('kind')) return null;
    const s = { id };
    for (const [p, reg] of props) s[p] = reg[0];
    return s;
  }

  /** The visible text. */
  text() {
    return this._view().text;
  }

  /** Keys of the visible characters, in order (used to keep carets in place across merges). */
  textKeys() {
    return this._view().keys;
  }

  /** Index in the visible text just after the character `k` (0 for null or a deleted one before all). */
  indexAfter(k) {
    if (!k) return 0;
    const view = this._view();
    const i = view.index.get(k);
    if (i !== undefined) return i + 1;
    // a deleted character: find the nearest visible one before it in document order
    const all = this._order();
    let pos = all.indexOf(k);
    while (pos > 0) {
      pos -= 1;
      const j = view.index.get(all[pos]);
      if (j !== undefined) return j + 1;
    }
    return 0;
  }

  _view() {
    if (this._visible) return this._visible;
    const keys = [];
    let text = '';
    for (const k of this._order()) {
      const ch = this.chars.get(k);
      if (this._isDeleted(ch.c, ch.r)) continue;
      keys.push(k);
      text += ch.ch;
    }
    const index = new Map(keys.map((k, i) => [k, i]));
    this._visible = { text, keys, index };
    return this._visible;
  }

  /** Every reachable character key in document order (depth first, siblings newest first). */
  _order() {
    const out = [];
    const stack = [...(this.children.get(ROOT) ?? [])].reverse();
    while (stack.length > 0) {
      const k = stack.pop();
      out.push(k);
      const kids = this.children.get(k);
      if (kids) for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]);
    }
    return out;
  }

  _isDeleted(c, r) {
    return this.deleted.get(r)?.has(c) ?? false;
  }

  // ------------------------------------------------------------------ local edits

  _tick() {
    this.clock += 1;
    return this.clock;
  }

  /** Creates a shape; returns {id, delta}. */
  createShape(props) {
    const c = this._tick();
    const id = `${this.replica}.${c}`;
    const entry = {};
    for (const [p, v] of Object.entries({ z: c, ...props })) {
      if (p === 'del') continue;
      entry[p] = [v, c, this.replica];
    }
    const delta = { s: { [id]: entry } };
    this._applyChecked(delta);
    return { id, delta };
  }

  /** Sets some properties of a shape; returns the delta, or null for an unknown shape. */
  updateShape(id, props) {
    if (!this.shape(id)) return null;
    const c = this._tick();
    const entry = {};
    for (const [p, v] of Object.entries(props)) {
      if (p === 'del') continue;
      entry[p] = [v, c, this.replica];
    }
    const delta = { s: { [id]: entry } };
    this._applyChecked(delta);
    return delta;
  }

  /** Deletes a shape (a tombstone); returns the delta, or null for an unknown shape. */
  deleteShape(id) {
    if (!this.shape(id)) return null;
    const delta = { s: { [id]: { del: [true, this._tick(), this.replica] } } };
    this._applyChecked(delta);
    return delta;
  }

  /** Inserts `str` before visible index `index`; returns the delta (null for an empty string). */
  insertText(index, str) {
    if (!str) return null;
    const keys = this.textKeys();
    const at = Math.max(0, Math.min(index, keys.length));
    const origin = at === 0 ? null : this.chars.get(keys[at - 1]);
    const c = this.clock + 1;
    this.clock += str.length;
    const delta = { t: { e: [[c, this.replica, origin ? origin.c : 0, origin ? origin.r : '', str]] } };
    this._applyChecked(delta);
    return delta;
  }

  /** Deletes `length` visible characters from `index`; returns the delta (null if none). */
  deleteText(index, length) {
    const keys = this.textKeys().slice(Math.max(0, index), Math.max(0, index) + Math.max(0, length));
    if (keys.length === 0) return null;
    const ids = keys.map((k) => this.chars.get(k));
    const delta = { t: { d: deleteRanges(ids.map((ch) => [ch.r, ch.c])) } };
    this._applyChecked(delta);
    return delta;
  }

  _applyChecked(delta) {
    const res = this.apply(delta);
    if (res.errors.length > 0) throw new Error(`local edit refused: ${res.errors.join('; ')}`);
  }

  // ------------------------------------------------------------------ merging

  /**
   * Merges a delta or snapshot. Never throws on bad input: malformed parts are skipped and
   * listed in `errors`; the valid parts are applied.
   * @returns {{changed: boolean, errors: string[]}}
   */
  apply(delta) {
    const errors = [];
    let changed = false;
    if (delta === null || typeof delta !== 'object' || Array.isArray(delta)) {
      return { changed, errors: ['update is not an object'] };
    }
    let entries = 0;
    const budget = () => {
      entries += 1;
      return entries <= LIMITS.maxEntries;
    };
    if (delta.s !== undefined) {
      if (delta.s === null || typeof delta.s !== 'object' || Array.isArray(delta.s)) {
        errors.push('s: not an object');
      } else {
        for (const [id, props] of Object.entries(delta.s)) {
          if (!SHAPE_RE.test(id)) {
            errors.push(`s: bad shape id ${JSON.stringify(id).slice(0, 70)}`);
            continue;
          }
          if (props === null || typeof props !== 'object' || Array.isArray(props)) {
            errors.push(`s.${id}: not an object`);
            continue;
          }
          for (const [p, reg] of Object.entries(props)) {
            if (!budget()) {
              errors.push(`update has more than ${LIMITS.maxEntries} entries; the rest is ignored`);
              return { changed, errors };
            }
            const err = this._mergeProp(id, p, reg);
            if (err === true) changed = true;
            else if (err) errors.push(`s.${id}.${p}: ${err}`);
          }
        }
      }
    }
    if (delta.t !== undefined) {
      const t = delta.t;
      if (t === null || typeof t !== 'object' || Array.isArray(t)) {
        errors.push('t: not an object');
      } else {
        if (t.e !== undefined) {
          if (!Array.isArray(t.e)) errors.push('t.e: not an array');
          else {
            for (const run of t.e) {
              if (!budget()) {
                errors.push(`update has more than ${LIMITS.maxEntries} entries; the rest is ignored`);
                return { changed, errors };
              }
              const err = this._mergeRun(run);
              if (err === true) changed = true;
              else if (err) errors.push(`t.e: ${err}`);
            }
          }
        }
        if (t.d !== undefined) {
          if (!Array.isArray(t.d)) errors.push('t.d: not an array');
          else {
            for (const range of t.d) {
              if (!budget()) {
                errors.push(`update has more than ${LIMITS.maxEntries} entries; the rest is ignored`);
                return { changed, errors };
              }
              const err = this._mergeDelete(range);
              if (err === true) changed = true;
              else if (err) errors.push(`t.d: ${err}`);
            }
          }
        }
      }
    }
    if (changed) this._visible = null;
    return { changed, errors };
  }

  /** Returns true when the state changed, false when not, or a string saying what is wrong. */
  _mergeProp(id, p, reg) {
    const check = PROPS[p];
    if (!check) return 'unknown property';
    if (!Array.isArray(reg) || reg.length !== 3) return 'not [value, counter, replica]';
    const [v, c, r] = reg;
    if (!validCounter(c)) return 'bad counter';
    if (typeof r !== 'string' || !REPLICA_RE.test(r)) return 'bad replica';
    if (!check(v)) return 'bad value';
    let props = this.shapes.get(id);
    if (!props) {
      if (this.shapes.size >= LIMITS.maxShapes) return `more than ${LIMITS.maxShapes} shapes`;
      props = new Map();
      this.shapes.set(id, props);
    }
    if (c > this.clock) this.clock = c;
    const cur = props.get(p);
    if (cur) {
      const order = compareStamp(c, r, cur[1], cur[2]);
      // the same stamp twice with different values only comes from a faulty or hostile peer;
      // the larger value wins so that every replica still picks the same one
      if (order < 0 || (order === 0 && JSON.stringify(v) <= JSON.stringify(cur[0]))) return false;
    }
    props.set(p, [v, c, r]);
    return true;
  }

  _mergeRun(run) {
    if (!Array.isArray(run) || run.length !== 5) return 'run is not [counter, replica, originCounter, originReplica, chars]';
    const [c, r, oc, or, str] = run;
    if (!validCounter(c)) return 'bad counter';
    if (typeof r !== 'string' || !REPLICA_RE.test(r)) return 'bad replica';
    if (typeof str !== 'string' || str.length === 0) return 'empty or non-string chars';
    if (!Number.isSafeInteger(c + str.length)) return 'counter overflow';
    const rootOrigin = oc === 0 && or === '';
    if (!rootOrigin) {
      if (!validCounter(oc) || typeof or !== 'string' || !REPLICA_RE.test(or)) return 'bad origin';
      // an origin is always older than what is typed after it; this also rules out cycles
      if (oc >= c) return 'origin is not older than the character';
    }
    // one element per UTF-16 unit, like the text's indices in the browser (a pair typed at
    // once stays together: its second unit's origin is its first)
    const chars = str.split('');
    let changed = false;
    let conflict = null;
    let origin = rootOrigin ? ROOT : key(oc, or);
    for (let i = 0; i < chars.length; i++) {
      const cc = c + i;
      const k = key(cc, r);
      const have = this.chars.get(k);
      if (have) {
        if (have.ch !== chars[i] || have.o !== origin) {
          // one id, two contents: only a faulty or hostile peer does this. Every replica keeps
          // the smaller variant, whatever the order they arrive in, so all still agree.
          conflict = `character ${k} conflicts with the one already known`;
          if (variant(origin, chars[i]) < variant(have.o, have.ch)) {
            this._replaceChar(k, have, origin, chars[i]);
            changed = true;
          }
        }
      } else {
        if (this.chars.size >= LIMITS.maxTextElements) return `text has more than ${LIMITS.maxTextElements} characters`;
        this._addChar({ c: cc, r, o: origin, ch: chars[i] });
        changed = true;
      }
      origin = k;
    }
    const last = c + chars.length - 1;
    if (last > this.clock) this.clock = last;
    if (conflict) {
      if (changed) this._visible = null;
      return conflict;
    }
    return changed;
  }

  /** Moves a known character to another origin and content (see the conflict case above). */
  _replaceChar(k, ch, origin, text) {
    const siblings = this.children.get(ch.o);
    const i = siblings ? siblings.indexOf(k) : -1;
    if (i >= 0) siblings.splice(i, 1);
    else {
      const waiting = this.orphans.get(ch.o) ?? [];
      const j = waiting.indexOf(k);
      if (j >= 0) waiting.splice(j, 1);
      if (waiting.length === 0) this.orphans.delete(ch.o);
    }
    ch.o = origin;
    ch.ch = text;
    this._addChar(ch);
  }

  _addChar(ch) {
    const k = key(ch.c, ch.r);
    this.chars.set(k, ch);
    if (!this.children.has(ch.o)) {
      const waiting = this.orphans.get(ch.o) ?? [];
      waiting.push(k);
      this.orphans.set(ch.o, waiting);
      return;
    }
    this._link(k, ch);
  }

  /** Puts a character whose origin is known into the tree, then any characters waiting for it. */
  _link(k0, ch0) {
    const todo = [[k0, ch0]];
    while (todo.length > 0) {
      const [k, ch] = todo.pop();
      const kids = this.children.get(ch.o);
      let i = 0;
      while (i < kids.length) {
        const other = this.chars.get(kids[i]);
        if (compareStamp(ch.c, ch.r, other.c, other.r) > 0) break;
        i += 1;
      }
      kids.splice(i, 0, k);
      // a character moved by _replaceChar keeps the characters typed after it
      if (!this.children.has(k)) this.children.set(k, []);
      const waiting = this.orphans.get(k);
      if (waiting) {
        this.orphans.delete(k);
        for (const w of waiting) todo.push([w, this.chars.get(w)]);
      }
    }
  }

  _mergeDelete(range) {
    if (!Array.isArray(range) || range.length !== 3) return 'range is not [replica, counter, length]';
    const [r, c, n] = range;
    if (typeof r !== 'string' || !REPLICA_RE.test(r)) return 'bad replica';
    if (!validCounter(c) || !Number.isSafeInteger(n) || n < 1 || n > LIMITS.maxTextElements) return 'bad counter or length';
    let set = this.deleted.get(r);
    let changed = false;
    for (let i = 0; i < n; i++) {
      if (set?.has(c + i)) continue;
      if (!set) {
        set = new Set();
        this.deleted.set(r, set);
      }
      if (this._deletions >= LIMITS.maxTextElements) return `more than ${LIMITS.maxTextElements} deletions`;
      set.add(c + i);
      this._deletions += 1;
      changed = true;
    }
    return changed;
  }

  // ------------------------------------------------------------------ snapshots

  /**
   * The whole state as one update in canonical form: the same state gives the same JSON text
   * on every replica, so `JSON.stringify(a.snapshot()) === JSON.stringify(b.snapshot())` is
   * the convergence check, and a replica can tell whether a peer's snapshot already covers it.
   */
  snapshot() {
    const s = {};
    for (const id of [...this.shapes.keys()].sort()) {
      const props = this.shapes.get(id);
      const entry = {};
      for (const p of [...props.keys()].sort()) entry[p] = [...props.get(p)];
      s[id] = entry;
    }
    // runs in document order, then characters still waiting for their origin, sorted
    const e = [];
    let run = null;
    const push = (ch) => {
      if (run && run[1] === ch.r && run[0] + run[4].length === ch.c && ch.o === key(ch.c - 1, ch.r)) {
        run[4] += ch.ch;
        return;
      }
      const [oc, or] = ch.o === ROOT ? [0, ''] : splitKey(ch.o);
      run = [ch.c, ch.r, oc, or, ch.ch];
      e.push(run);
    };
    for (const k of this._order()) push(this.chars.get(k));
    run = null;
    const waiting = [];
    for (const list of this.orphans.values()) for (const k of list) waiting.push(this.chars.get(k));
    waiting.sort((a, b) => compareStamp(a.c, a.r, b.c, b.r));
    for (const ch of waiting) push(ch);
    const ids = [];
    for (const [r, set] of this.deleted) for (const c of set) ids.push([r, c]);
    const t = {};
    if (e.length > 0) t.e = e;
    const d = deleteRanges(ids);
    if (d.length > 0) t.d = d;
    const out = {};
    if (Object.keys(s).length > 0) out.s = s;
    if (Object.keys(t).length > 0) out.t = t;
    return out;
  }

  /** True when merging `snapshot` into nothing gives at least everything this replica has. */
  coveredBy(snapshot) {
    const probe = new BoardDoc(this.replica);
    probe.apply(snapshot);
    probe.apply(this.snapshot());
    return JSON.stringify(probe.snapshot()) === JSON.stringify(snapshot);
  }
}

/** The order between two contents of one character id: the smaller one wins everywhere. */
function variant(origin, ch) {
  return `${origin}\u0000${ch}`;
}

function splitKey(k) {
  const at = k.indexOf('@');
  return [Number(k.slice(0, at)), k.slice(at + 1)];
}

/** [[replica, counter]...] -> sorted, coalesced [[replica, counter, length]...]. */
function deleteRanges(ids) {
  ids.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]));
  const out = [];
  for (const [r, c] of ids) {
    const last = out[out.length - 1];
    if (last && last[0] === r && last[1] + last[2] === c) last[2] += 1;
    else if (!(last && last[0] === r && c < last[1] + last[2])) out.push([r, c, 1]);
  }
  return out;
}

/**
 * Splits an update (usually a snapshot) into updates of at most `maxBytes` of JSON each. Any
 * part of a state is itself a valid delta, so merging the parts in any order gives the whole;
 * a long run of characters is cut into shorter runs (each next piece's origin is the last
 * character of the previous one). Returns [update] when it fits already.
 */
export function splitUpdate(update, maxBytes) {
  if (JSON.stringify(update).length <= maxBytes) return [update];
  const entries = [];
  for (const [id, props] of Object.entries(update.s ?? {})) entries.push(['s', id, props]);
  const pieceLen = Math.max(1, Math.floor(maxBytes / 8));
  for (const [c, r, oc, or, str] of update.t?.e ?? []) {
    for (let i = 0; i < str.length; i += pieceLen) {
      entries.push(['e', i === 0 ? [c, r, oc, or, str.slice(0, pieceLen)] : [c + i, r, c + i - 1, r, str.slice(i, i + pieceLen)]]);
    }
  }
  for (const range of update.t?.d ?? []) entries.push(['d', range]);
  const parts = [];
  let part = null;
  let size = 0;
  for (const entry of entries) {
    const bytes = JSON.stringify(entry).length + 8;
    if (part && size + bytes > maxBytes) {
      parts.push(part);
      part = null;
    }
    if (!part) {
      part = {};
      size = 20;
    }
    if (entry[0] === 's') (part.s ??= {})[entry[1]] = entry[2];
    else ((part.t ??= {})[entry[0]] ??= []).push(entry[1]);
    size += bytes;
  }
  if (part) parts.push(part);
  return parts;
}

/**
 * Merges deltas into one (for the outbox of a replica that is offline): the join of their states.
 * @param {object[]} deltas
 */
export function mergeDeltas(replica, deltas) {
  const doc = new BoardDoc(replica);
  for (const d of deltas) doc.apply(d);
  return doc.snapshot();
}
