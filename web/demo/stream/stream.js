// kilat live stream demo. One page both watches room R and can broadcast to it:
//
// - broadcaster: getUserMedia -> MediaRecorder (WebM, a piece every 300 ms) -> WebmScanner
//   (wire.js: finds the initialisation segment and the clusters that start with a video key
//   frame) -> binary publications on `stream:R`; the initialisation segment goes to
//   `stream:R.init`, whose latest value the server keeps (dev namespace `stream`, latest = true).
// - viewer: `stream:R.init` gives the initialisation segment on subscribe; `stream:R` gives the
//   newest piece (latest value) and then live pieces. The viewer appends the initialisation
//   segment, then bytes from the next join point (a cluster starting with a key frame) into a
//   MediaSource SourceBuffer in `sequence` mode. More than 2 s behind: jump to the live edge;
//   a backlog of queued pieces: drop it and start again at the next join point.
//
// MessagePack encoding (`encoding: 'msgpack'`): binary publications travel as raw bytes on the
// WebSocket instead of base64 in JSON, a third fewer bytes per viewer and no base64 work on
// either side. The emulated transports (SSE, HTTP streaming) still work, with base64.
import { Kilat } from '/sdk/kilat.js';
import {
  FLAG_INIT, FLAG_JOIN, HEADER_BYTES, WebmScanner, decodeFrame, decodeInit, encodeFrame, encodeInit, framePiece,
} from '/demo/stream/wire.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = (params.get('room') || location.hash.slice(1) || 'studio').replace(/[^A-Za-z0-9_-]/g, '').slice(0, 64) || 'studio';
const MEDIA = `stream:${room}`;
const INIT = `stream:${room}.init`;
/** MediaRecorder timeslice: small enough to be live, large enough to keep the rate of publications low */
const TIMESLICE_MS = 300;
/** Largest body per publication: 40 KiB of bytes is ~54 KiB as base64 in JSON, under the 64 KiB message limits */
const MAX_PIECE = 40 * 1024;
/** Behind the live edge by more than this: jump to it */
const MAX_BEHIND_S = 2;
/** Queued, not yet appended, more than this: drop the queue and wait for the next join point */
const MAX_QUEUED_PIECES = 10;
/** The broadcaster publishes the init segment again this often (the latest value's TTL is 60 s in dev) */
const INIT_EVERY_MS = 30_000;

$('room').textContent = room;
for (const el of document.querySelectorAll('.room-name')) el.textContent = room;

const client = new Kilat(location.origin, {
  name: 'stream-demo',
  encoding: params.get('encoding') === 'json' ? 'json' : 'msgpack',
});
client.on('state', (ctx) => { $('status').textContent = ctx.newState; });
client.on('connected', (ctx) => { $('status').textContent = `live (${ctx.transport ?? client.transportName})`; });
client.on('disconnected', () => { $('status').textContent = 'offline, reconnecting…'; });

// ------------------------------------------------------------------------------------------
// Viewer

const video = $('video');
/** Media Source Extensions: the standard one, or Safari's ManagedMediaSource (iPhone, iOS 17.1+) */
const MSE = window.MediaSource ?? window.ManagedMediaSource;
const view = {
  /** stream id -> {mime, init} */
  inits: new Map(),
  mediaSource: null,
  sourceBuffer: null,
  mime: null,
  /** the stream being appended, or null while waiting for a join point */
  stream: null,
  appendedInitFor: null,
  nextSeq: 0,
  queue: [],
  lastTime: 0,
  lastPieceAt: 0,
  received: 0,
  bytes: 0,
  dropped: 0,
  jumps: 0,
};

function setPlayState(state, text) {
  const el = $('play-state');
  el.dataset.state = state;
  el.textContent = text;
}

function resync(reason) {
  if (view.stream !== null) console.info(`stream: waiting for the next key frame (${reason})`);
  view.dropped += view.queue.length;
  view.queue = [];
  view.stream = null;
  const sb = view.sourceBuffer;
  // a partly appended cluster must not be continued by another one: reset the parser
  if (sb && view.mediaSource?.readyState === 'open') {
    try { sb.abort(); } catch { /* not fatal: the next append starts with an init segment */ }
  }
  view.appendedInitFor = null;
}

function ensureMediaSource(mime) {
  if (view.mediaSource && view.mime === mime) return;
  if (!MSE || !MSE.isTypeSupported(mime)) {
    setPlayState('unsupported', `this browser cannot play ${mime} with Media Source Extensions`);
    return;
  }
  view.mime = mime;
  view.sourceBuffer = null;
  const ms = new MSE();
  // ManagedMediaSource (Safari on iPhone) plays only with remote playback off
  if (MSE !== window.MediaSource) video.disableRemotePlayback = true;
  view.mediaSource = ms;
  ms.addEventListener('sourceopen', () => {
    const sb = ms.addSourceBuffer(mime);
    // sequence: each append continues where the last ended, whatever its timestamps (a
    // recording that restarts at 0, a jump over dropped pieces)
    sb.mode = 'sequence';
    sb.addEventListener('updateend', () => { trim(); pump(); });
    sb.addEventListener('error', () => resync('append error'));
    view.sourceBuffer = sb;
    pump();
  }, { once: true });
  video.src = URL.createObjectURL(ms);
}

function pump() {
  const sb = view.sourceBuffer;
  if (!sb || sb.updating || view.queue.length === 0 || view.mediaSource.readyState !== 'open') return;
  const next = view.queue.shift();
  try {
    sb.appendBuffer(next.bytes);
    if (next.time) view.lastTime = next.time;
  } catch (err) {
    // QuotaExceededError: free what was played and start again at a join point
    console.warn('stream: append failed', err);
    trim(true);
    resync(err.name);
  }
}

/** Frees media more than 10 s behind the playhead (the SourceBuffer must not grow forever). */
function trim(force = false) {
  const sb = view.sourceBuffer;
  if (!sb || sb.updating || sb.buffered.length === 0) return;
  const start = sb.buffered.start(0);
  const keepFrom = video.currentTime - (force ? 2 : 10);
  if (keepFrom - start > (force ? 0 : 10)) {
    try { sb.remove(start, keepFrom); } catch { /* retried on the next updateend */ }
  }
}

function onPiece(frame) {
  view.received += 1;
  view.bytes += frame.body.length;
  view.lastPieceAt = performance.now();
  if (view.stream !== null && (frame.stream !== view.stream || frame.seq !== view.nextSeq)) {
    resync(frame.stream !== view.stream ? 'a new recording' : `piece ${view.nextSeq} missing`);
  } else if (view.stream !== null && view.queue.length >= MAX_QUEUED_PIECES) {
    // the SourceBuffer cannot keep up: drop the backlog, start again at the newest join point
    resync(`${view.queue.length} pieces queued`);
  }
  view.nextSeq = frame.seq + 1;
  if (view.stream === null) {
    // waiting: start at a cluster that begins with a key frame, once its init segment is known
    const entry = view.inits.get(frame.stream);
    if (!(frame.flags & FLAG_JOIN) || !entry) {
      view.dropped += 1;
      return;
    }
    ensureMediaSource(entry.mime);
    view.stream = frame.stream;
    if (view.appendedInitFor !== frame.stream) {
      view.queue.push({ bytes: entry.init, time: 0 });
      view.appendedInitFor = frame.stream;
    }
    view.queue.push({ bytes: frame.body.subarray(frame.joinAt), time: frame.time });
  } else {
    view.queue.push({ bytes: frame.body, time: frame.time });
  }
  pump();
}

const initSub = client.newSubscription(INIT, { recoverable: false });
initSub.on('publication', (ctx) => {
  const frame = decodeFrame(ctx.data);
  if (!frame || !(frame.flags & FLAG_INIT)) return;
  const parsed = decodeInit(frame.body);
  if (!parsed) return;
  view.inits.set(frame.stream, parsed);
  // keep a few recordings at most (a broadcaster that reloads makes a new one)
  while (view.inits.size > 4) view.inits.delete(view.inits.keys().next().value);
});
initSub.subscribe();

const mediaSub = client.newSubscription(MEDIA, { recoverable: false });
mediaSub.on('subscribed', () => resync('subscribed'));
mediaSub.on('publication', (ctx) => {
  const frame = decodeFrame(ctx.data);
  if (frame && !(frame.flags & FLAG_INIT)) onPiece(frame);
});
mediaSub.subscribe();

video.addEventListener('playing', () => {
  setPlayState('playing', 'playing');
  // how long this page took to show the broadcast, from navigation start (the e2e test reads it)
  const badge = $('play-state');
  if (!badge.dataset.firstPlayMs) badge.dataset.firstPlayMs = String(Math.round(performance.now()));
});
// Media the browser cannot decode ends the MediaSource: start over with a new one at the next
// join point (the bad piece is gone by then).
video.addEventListener('error', () => {
  console.warn('stream: the video element failed', video.error?.message ?? video.error?.code);
  view.mediaSource = null;
  view.sourceBuffer = null;
  view.mime = null;
  view.stream = null;
  view.appendedInitFor = null;
  view.dropped += view.queue.length;
  view.queue = [];
  setPlayState('waiting', 'restarting after a decoding error');
});
video.addEventListener('waiting', () => { if (view.stream !== null) setPlayState('buffering', 'buffering'); });
video.addEventListener('volumechange', () => { $('unmute').hidden = !video.muted; });
$('unmute').addEventListener('click', () => { video.muted = false; });

// Keep near the live edge and tell what is happening, twice a second.
let lastBytes = 0;
let lastTick = performance.now();
setInterval(() => {
  const sb = view.sourceBuffer;
  if (sb && sb.buffered.length > 0) {
    const end = sb.buffered.end(sb.buffered.length - 1);
    const start = sb.buffered.start(0);
    if (video.currentTime < start) video.currentTime = start;
    if (end - video.currentTime > MAX_BEHIND_S) {
      video.currentTime = end - 0.3;
      view.jumps += 1;
    }
    if (video.paused && end - video.currentTime > 0.2) {
      video.play().then(() => { $('unmute').hidden = !video.muted; }).catch(() => { $('unmute').hidden = false; });
    }
    if (view.lastTime) {
      const behind = Date.now() - view.lastTime + Math.max(0, end - video.currentTime) * 1000;
      $('latency').textContent = `${(behind / 1000).toFixed(1)} s`;
      $('latency').dataset.ms = String(Math.round(behind));
    }
  }
  if (view.lastPieceAt && performance.now() - view.lastPieceAt > 3000 && $('play-state').dataset.state !== 'waiting') {
    setPlayState('waiting', 'broadcast paused or ended');
  }
  const now = performance.now();
  $('kbps').textContent = String(Math.round(((view.bytes - lastBytes) * 8) / (now - lastTick)));
  lastBytes = view.bytes;
  lastTick = now;
  $('received').textContent = String(view.received);
  $('jumps').textContent = String(view.jumps);
  $('dropped').textContent = String(view.dropped);
}, 500);

// ------------------------------------------------------------------------------------------
// Broadcaster

const cast = { recorder: null, media: null, stream: 0, seq: 0, published: 0, failed: 0, bytes: 0 };

function showError(text) {
  $('error').textContent = text;
  $('error').hidden = !text;
}

function setCastState(state, text) {
  const el = $('cast-state');
  el.dataset.state = state;
  el.textContent = text;
}

function pickMime() {
  const candidates = ['video/webm;codecs=vp8,opus', 'video/webm;codecs=vp9,opus', 'video/webm'];
  return candidates.find((m) => window.MediaRecorder?.isTypeSupported(m) && MSE?.isTypeSupported(m));
}

function publishPiece(piece, time) {
  for (const frame of framePiece(piece, { stream: cast.stream, seq: cast.seq, time, max: MAX_PIECE })) {
    cast.seq += 1;
    cast.bytes += frame.length - HEADER_BYTES;
    // not awaited: publications on one connection keep their order; a failure is a gap the
    // viewers see in the sequence numbers (they wait for the next key frame)
    client.publish(MEDIA, frame).then(() => { cast.published += 1; }, (err) => {
      cast.failed += 1;
      console.warn('stream: publish failed', err);
    });
  }
}

async function goLive() {
  showError('');
  const mime = pickMime();
  if (!mime) {
    showError('This browser cannot record WebM that Media Source Extensions can play (try Chrome, Edge or Firefox).');
    return;
  }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24 } },
      audio: true,
    });
  } catch (err) {
    showError(`No camera or microphone: ${err.name === 'NotAllowedError' ? 'permission denied (allow it in the address bar)' : err.message || err.name}.`);
    return;
  }
  cast.media = media;
  // the broadcasting page does not watch itself (nor count as a viewer): its preview is local
  mediaSub.unsubscribe();
  initSub.unsubscribe();
  resync('broadcasting');
  setPlayState('broadcasting', 'you are broadcasting: see the preview');
  document.body.classList.add('broadcasting');
  $('preview').srcObject = media;
  $('preview-box').hidden = false;
  cast.stream = (crypto.getRandomValues(new Uint32Array(1))[0] >>> 0) || 1;
  cast.seq = 0;
  const scanner = new WebmScanner();
  const recorder = new MediaRecorder(media, {
    mimeType: mime,
    videoBitsPerSecond: 500_000,
    audioBitsPerSecond: 48_000,
    // a key frame every second, so a late joiner waits at most about a second (browsers
    // without the option keep their own interval; the scanner finds key frames either way)
    videoKeyFrameIntervalDuration: 1000,
  });
  cast.recorder = recorder;
  let chain = Promise.resolve();
  let initSentAt = -Infinity;
  recorder.addEventListener('dataavailable', (e) => {
    const time = Date.now();
    // Blob.arrayBuffer is asynchronous: chain so pieces keep their order
    chain = chain.then(async () => {
      const bytes = new Uint8Array(await e.data.arrayBuffer());
      const pieces = scanner.push(bytes);
      // the init segment, once and then every 30 s: the server keeps a latest value for the
      // namespace's history_ttl (60 s in dev), and a viewer may join at any time
      if (scanner.init && time - initSentAt > INIT_EVERY_MS) {
        initSentAt = time;
        const frame = encodeFrame({ flags: FLAG_INIT, stream: cast.stream, seq: 0, time }, encodeInit(recorder.mimeType || mime, scanner.init));
        await client.publish(INIT, frame).catch((err) => {
          initSentAt = -Infinity; // again with the next piece
          showError(`Could not publish the stream's start (retrying): ${err.message}`);
        });
      }
      for (const piece of pieces) publishPiece(piece, time);
      if (scanner.error) console.warn(`stream: ${scanner.error}`);
    });
  });
  recorder.addEventListener('error', (e) => showError(`Recording stopped: ${e.error?.message ?? 'error'}`));
  recorder.start(TIMESLICE_MS);
  setCastState('live', 'on air');
  $('go-live').hidden = true;
  $('stop').hidden = false;
}

function stopLive() {
  cast.recorder?.stop();
  cast.media?.getTracks().forEach((t) => t.stop());
  cast.recorder = null;
  cast.media = null;
  $('preview-box').hidden = true;
  $('go-live').hidden = false;
  $('stop').hidden = true;
  setCastState('off', 'off air');
  setPlayState('waiting', 'waiting for a broadcast');
  document.body.classList.remove('broadcasting');
  initSub.subscribe();
  mediaSub.subscribe();
}

$('go-live').addEventListener('click', goLive);
$('stop').addEventListener('click', stopLive);

// Viewer count: the presence of `stream:R` (viewers subscribe; the broadcaster only publishes).
async function refreshViewers() {
  if (client.state !== 'connected') return;
  try {
    const stats = await client.presenceStats(MEDIA);
    $('viewers').textContent = String(stats.num_clients);
  } catch { /* shown again on the next tick */ }
  if (cast.recorder) {
    $('cast-info').textContent = `${cast.published} pieces sent (${Math.round(cast.bytes / 1024)} KiB)${cast.failed ? `, ${cast.failed} failed` : ''}`;
  }
}
setInterval(refreshViewers, 1000);
client.on('connected', refreshViewers);

client.connect();
