// The stream demo's framing and a small WebM (EBML) scanner. Pure functions and one class, no
// DOM: the page imports them, and so can a test in Node.
//
// Every publication is one binary frame: a 24-byte header, then bytes of the broadcaster's
// WebM file (MediaRecorder output), in order. Big-endian header:
//
//   0      version (1)
//   1      flags: JOIN (1) a cluster that starts with a video key frame begins in this piece at
//          `joinAt`; INIT (2) the body is the initialisation segment (the `.init` channel)
//   2..3   0
//   4..7   stream id: random per recording, so a viewer never mixes two recordings
//   8..11  sequence number of the piece within the recording (a gap means a lost piece)
//   12..15 joinAt: offset in the body where the join cluster starts (JOIN only)
//   16..23 capture time, ms since the epoch (float64): the broadcaster's clock when the piece
//          was recorded, for the "behind live" figure
//
// An INIT body is a 2-byte length, the MIME type (`video/webm;codecs=vp8,opus`), then the WebM
// bytes before the first Cluster (EBML header, Segment, Info, Tracks).

export const HEADER_BYTES = 24;
export const VERSION = 1;
export const FLAG_JOIN = 1;
export const FLAG_INIT = 2;

/** @returns {Uint8Array} header + body */
export function encodeFrame({ flags = 0, stream, seq, joinAt = 0, time }, body) {
  const out = new Uint8Array(HEADER_BYTES + body.length);
  const view = new DataView(out.buffer);
  out[0] = VERSION;
  out[1] = flags;
  view.setUint32(4, stream >>> 0);
  view.setUint32(8, seq >>> 0);
  view.setUint32(12, joinAt >>> 0);
  view.setFloat64(16, time);
  out.set(body, HEADER_BYTES);
  return out;
}

/** The header and body of a frame, or null for anything that is not one (a viewer ignores it). */
export function decodeFrame(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length < HEADER_BYTES || bytes[0] !== VERSION) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frame = {
    flags: bytes[1],
    stream: view.getUint32(4),
    seq: view.getUint32(8),
    joinAt: view.getUint32(12),
    time: view.getFloat64(16),
    body: bytes.subarray(HEADER_BYTES),
  };
  if ((frame.flags & FLAG_JOIN) && frame.joinAt >= frame.body.length) return null;
  return frame;
}

/**
 * The frames of one scanner piece (`{bytes, joinAt}`), numbered from `seq`: a piece over `max`
 * bytes goes out in parts (each publication must fit the server's message limits), and only the
 * part holding the join point carries FLAG_JOIN, with the offset within that part.
 */
export function framePiece(piece, { stream, seq, time, max }) {
  const frames = [];
  for (let off = 0; off < piece.bytes.length; off += max) {
    const body = piece.bytes.subarray(off, off + max);
    const join = piece.joinAt >= off && piece.joinAt < off + body.length;
    frames.push(encodeFrame({
      flags: join ? FLAG_JOIN : 0, stream, seq: seq + frames.length, joinAt: join ? piece.joinAt - off : 0, time,
    }, body));
  }
  return frames;
}

/** The body of an INIT frame: MIME type + initialisation segment. */
export function encodeInit(mime, init) {
  const type = new TextEncoder().encode(mime);
  const out = new Uint8Array(2 + type.length + init.length);
  new DataView(out.buffer).setUint16(0, type.length);
  out.set(type, 2);
  out.set(init, 2 + type.length);
  return out;
}

/** `{mime, init}` from an INIT body, or null when malformed. */
export function decodeInit(body) {
  if (body.length < 2) return null;
  const len = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint16(0);
  if (body.length < 2 + len + 4) return null;
  const mime = new TextDecoder().decode(body.subarray(2, 2 + len));
  const init = body.subarray(2 + len);
  // an initialisation segment starts with the EBML header's ID
  if (init[0] !== 0x1a || init[1] !== 0x45 || init[2] !== 0xdf || init[3] !== 0xa3) return null;
  return { mime, init };
}

// ---------------------------------------------------------------------------------------------
// WebM scanning. A WebM file is EBML: elements of (ID, size, data). MediaRecorder writes a live
// file: a Segment and Clusters of unknown size, so the end of a cluster is the start of the
// next. The scanner walks element headers only (skipping a block needs its size, not its
// bytes), finds where each Cluster starts and whether the cluster's first video block is a key
// frame: those are the places a viewer can start decoding.

const ID_SEGMENT = 0x18538067;
const ID_CLUSTER = 0x1f43b675;
const ID_TRACKS = 0x1654ae6b;
const ID_TRACK_ENTRY = 0xae;
const ID_TRACK_NUMBER = 0xd7;
const ID_TRACK_TYPE = 0x83;
const ID_SIMPLE_BLOCK = 0xa3;
const TRACK_TYPE_VIDEO = 1;
/** Most bytes held back waiting for a cluster's first video block (a few seconds of video) */
export const MAX_HOLD_BYTES = 256 * 1024;

/** An element ID at `at` (kept with its length marker, as the spec writes IDs): {value, len} or null if incomplete/invalid. */
export function readId(buf, at) {
  if (at >= buf.length) return null;
  const first = buf[at];
  const len = first >= 0x80 ? 1 : first >= 0x40 ? 2 : first >= 0x20 ? 3 : first >= 0x10 ? 4 : 0;
  if (len === 0) return { invalid: true };
  if (at + len > buf.length) return null;
  let value = 0;
  for (let i = 0; i < len; i++) value = value * 256 + buf[at + i];
  return { value, len };
}

/** An element size at `at`: {value, len, unknown} or null if incomplete. */
export function readSize(buf, at) {
  if (at >= buf.length) return null;
  const first = buf[at];
  let len = 1;
  while (len <= 8 && !(first & (0x80 >> (len - 1)))) len++;
  if (len > 8) return { invalid: true };
  if (at + len > buf.length) return null;
  let value = first & (0xff >> len);
  let allOnes = value === (0xff >> len);
  for (let i = 1; i < len; i++) {
    value = value * 256 + buf[at + i];
    if (buf[at + i] !== 0xff) allOnes = false;
  }
  return { value, len, unknown: allOnes };
}

/** The track number of the first video track in an initialisation segment, or null. */
export function videoTrackNumber(init) {
  // walk [start, end) for child elements; descend into the containers on the path to TrackType
  const walk = (start, end, visit) => {
    let at = start;
    while (at < end) {
      const id = readId(init, at);
      if (!id || id.invalid) return;
      const size = readSize(init, at + id.len);
      if (!size || size.invalid) return;
      const dataStart = at + id.len + size.len;
      const dataEnd = size.unknown ? end : Math.min(end, dataStart + size.value);
      if (visit(id.value, dataStart, dataEnd) === false) return;
      at = dataEnd;
    }
  };
  const uint = (s, e) => { let v = 0; for (let i = s; i < e; i++) v = v * 256 + init[i]; return v; };
  let found = null;
  walk(0, init.length, (id, s, e) => {
    if (id !== ID_SEGMENT) return true;
    walk(s, e, (id2, s2, e2) => {
      if (id2 !== ID_TRACKS) return true;
      walk(s2, e2, (id3, s3, e3) => {
        if (id3 !== ID_TRACK_ENTRY) return true;
        let number = null;
        let type = null;
        walk(s3, e3, (id4, s4, e4) => {
          if (id4 === ID_TRACK_NUMBER) number = uint(s4, e4);
          if (id4 === ID_TRACK_TYPE) type = uint(s4, e4);
          return true;
        });
        if (type === TRACK_TYPE_VIDEO && found === null) found = number;
        return true;
      });
      return false;
    });
    return false;
  });
  return found;
}

/**
 * Cuts a live WebM byte stream (MediaRecorder's chunks, in order) into pieces to publish:
 * `push(chunk)` returns `[{bytes, joinAt}]` (joinAt = -1 when the piece has no join point; the
 * last one when it has several).
 * Bytes are held back only while a Cluster has started but its first video block has not
 * arrived yet (and an element header is cut), so a piece with a join point always holds the
 * cluster's start. `init` is set
 * once the first Cluster is seen: the bytes before it.
 */
export class WebmScanner {
  constructor() {
    /** bytes from absolute offset `bufStart`: what is not sent yet, and the header being read */
    this.buf = new Uint8Array(0);
    this.bufStart = 0;
    /** absolute offset of the first byte not yet returned in a piece */
    this.sent = 0;
    /** absolute offset of the next element header to read */
    this.pos = 0;
    /** every byte so far, until the first cluster (the initialisation segment) */
    this.head = [];
    this.init = null;
    this.videoTrack = null;
    /** absolute offset of a cluster whose first video block is still to be seen, or -1 */
    this.openCluster = -1;
    this.total = 0;
    this.error = null;
  }

  push(chunk) {
    if (!this.init) this.head.push(chunk);
    const merged = new Uint8Array(this.buf.length + chunk.length);
    merged.set(this.buf);
    merged.set(chunk, this.buf.length);
    this.buf = merged;
    this.total += chunk.length;
    const joins = [];
    if (!this.error) this.scan(joins);
    if (this.openCluster >= 0 && this.total - this.openCluster > MAX_HOLD_BYTES) {
      // a cluster without a video block this long is not what MediaRecorder writes: let the
      // bytes go rather than stall the broadcast (viewers keep the join points they had)
      this.openCluster = -1;
    }
    // hold back from an undecided cluster's start (or from an element header not read whole,
    // which may be a cluster's), so a join point's piece carries its cluster's start
    let commit = this.total;
    if (this.openCluster >= 0) commit = this.openCluster;
    else if (!this.error && this.pos < this.total) commit = this.pos;
    const pieces = [];
    if (commit > this.sent) {
      const bytes = this.buf.slice(this.sent - this.bufStart, commit - this.bufStart);
      // the last join point: a viewer starting there is closest to live
      const join = joins.filter((j) => j >= this.sent && j < commit).pop();
      pieces.push({ bytes, joinAt: join === undefined ? -1 : join - this.sent });
      this.sent = commit;
    }
    // keep what is unsent and the element header the scanner stopped in
    const keepFrom = Math.min(this.sent, this.pos, this.total);
    if (keepFrom > this.bufStart) {
      this.buf = this.buf.slice(keepFrom - this.bufStart);
      this.bufStart = keepFrom;
    }
    return pieces;
  }

  scan(joins) {
    for (;;) {
      if (this.pos >= this.total) return;
      const at = this.pos - this.bufStart;
      const id = readId(this.buf, at);
      if (!id) return;
      const size = id.invalid ? null : readSize(this.buf, at + id.len);
      if (id.invalid || (size && size.invalid)) {
        // not WebM as expected: stop looking for join points (bytes still flow)
        this.error = `unexpected bytes at offset ${this.pos}`;
        this.openCluster = -1;
        return;
      }
      if (!size) return;
      const dataStart = this.pos + id.len + size.len;
      if (id.value === ID_SEGMENT) {
        this.pos = dataStart;
        continue;
      }
      if (id.value === ID_CLUSTER) {
        if (!this.init) this.takeInit(this.pos);
        this.openCluster = this.pos;
        this.pos = dataStart; // clusters are walked into: their blocks follow
        continue;
      }
      if (id.value === ID_SIMPLE_BLOCK && this.openCluster >= 0) {
        // track number (a 1..8 byte vint), 2 bytes of timecode, flags (0x80 = key frame)
        const track = readSize(this.buf, dataStart - this.bufStart);
        if (!track) return;
        const flagsAt = dataStart - this.bufStart + track.len + 2;
        if (flagsAt >= this.buf.length) return;
        if (this.videoTrack === null || track.value === this.videoTrack) {
          if (this.buf[flagsAt] & 0x80) joins.push(this.openCluster);
          this.openCluster = -1;
        }
      }
      if (size.unknown) {
        this.pos = dataStart;
        continue;
      }
      this.pos = dataStart + size.value;
    }
  }

  takeInit(clusterStart) {
    const all = new Uint8Array(clusterStart);
    let at = 0;
    for (const c of this.head) {
      const n = Math.min(c.length, clusterStart - at);
      all.set(c.subarray(0, n), at);
      at += n;
      if (at >= clusterStart) break;
    }
    this.init = all;
    this.head = [];
    this.videoTrack = videoTrackNumber(all);
  }
}
