// kilat board demo: a shared whiteboard (shapes and sticky notes) and a shared paragraph, with
// everyone's cursor and name, on the public SDK only (/sdk/kilat.js).
//
// Channels (both exist in `kilat serve --dev`; docs/use-cases.md shows a production config):
//   board:<doc>    the document: deltas, snapshots and state requests (sync.js); history on
//   cursors:<doc>  ephemeral: pointer positions, names, "typing here"; recoverable: false,
//                  join/leave on (a leaving client's cursor disappears)
//
// URL: /demo/board?name=Ana#doc-id (the hash picks the document; default "main");
// ?debug=1 logs SDK frames.

import { Kilat } from '/sdk/kilat.js';
import { BoardDoc, newReplicaId } from '/demo/board/crdt.js';
import { BoardSync } from '/demo/board/sync.js';

const WORLD_W = 1200;
const WORLD_H = 800;
const COLORS = ['#ffd23f', '#ff9fb2', '#8fd8f8', '#a8eb9c', '#c9b3ff', '#ffffff'];
const CURSOR_EVERY_MS = 50;
const CURSOR_TTL_MS = 15000;
const TYPING_TTL_MS = 3000;
const DOC_RE = /^[A-Za-z0-9_-]{1,48}$/;
const STORAGE_NAME = 'kilat-board:name';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function storageGet(k) {
  try {
    return localStorage.getItem(k);
  } catch {
    return null;
  }
}
function storageSet(k, v) {
  try {
    localStorage.setItem(k, v);
  } catch {
    /* private mode */
  }
}
const cleanName = (s) => (typeof s === 'string' ? s.replace(/\s+/g, ' ').trim().slice(0, 24) : '');

const hashDoc = decodeURIComponent(location.hash.replace(/^#/, ''));
const docId = DOC_RE.test(hashDoc) ? hashDoc : 'main';
const replica = newReplicaId();
const state = {
  name: cleanName(params.get('name')) || cleanName(storageGet(STORAGE_NAME)) || `Guest ${replica.slice(0, 3)}`,
  color: colorFor(replica),
  selected: null,
  scale: 1,
  /** client id -> {name, color, x, y, seen, typing} of the other people here */
  people: new Map(),
  clientId: null,
};

function colorFor(seed) {
  let h = 0;
  for (const ch of seed) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 70% 45%)`;
}

// ---------------------------------------------------------------- client and sync

const doc = new BoardDoc(replica);
const client = new Kilat(location.origin, {
  name: 'kilat-board-demo',
  minReconnectDelay: 300,
  maxReconnectDelay: 3000,
  debug: params.get('debug') === '1',
});
const sync = new BoardSync(client, `board:${docId}`, doc, {
  onChange: () => {
    renderShapes();
    renderText();
  },
  onError: (kind, message) => showBanner(kind, message),
  onStatus: (s) => setStatus(s),
});
const cursors = client.newSubscription(`cursors:${docId}`, { recoverable: false, joinLeave: true });

client.on('connected', (ctx) => {
  state.clientId = ctx.client;
});
client.on('connecting', () => setStatus('offline'));
client.on('disconnected', (ctx) => {
  setStatus('offline');
  showBanner('disconnected', `Disconnected: ${ctx.reason || 'connection closed'}. Reload the page to try again.`);
});

cursors.on('subscribed', () => sayHello(true));
cursors.on('publication', (ctx) => onCursorPublication(ctx));
cursors.on('leave', (ctx) => {
  if (state.people.delete(ctx.info?.client)) renderPeople();
});

// ---------------------------------------------------------------- status and banner

function setStatus(s) {
  const conn = $('conn');
  conn.dataset.state = s;
  $('conn-label').textContent = s === 'synced' ? 'Live' : s === 'syncing' ? 'Syncing…' : 'Offline: edits are kept and sent on reconnect';
}

let bannerKind = null;
function showBanner(kind, text) {
  bannerKind = kind;
  $('banner').hidden = false;
  $('banner').dataset.kind = kind;
  $('banner-text').textContent = text;
}
$('banner-close').addEventListener('click', () => {
  $('banner').hidden = true;
  bannerKind = null;
});

// ---------------------------------------------------------------- shapes

const shapeEls = new Map();

function fitWorld() {
  const vp = $('viewport');
  const scale = vp.clientWidth / WORLD_W;
  state.scale = scale;
  $('world').style.transform = `scale(${scale})`;
  $('world').style.width = `${WORLD_W}px`;
  $('world').style.height = `${WORLD_H}px`;
  vp.style.height = `${Math.round(WORLD_H * scale)}px`;
}

function renderShapes() {
  const list = doc.shapeList();
  const seen = new Set();
  const layer = $('shapes');
  for (const [i, s] of list.entries()) {
    seen.add(s.id);
    let el = shapeEls.get(s.id);
    if (!el) {
      el = document.createElement('div');
      el.dataset.testid = 'shape';
      el.dataset.id = s.id;
      el.setAttribute('role', 'button');
      el.tabIndex = 0;
      if (s.kind === 'note') {
        const t = document.createElement('div');
        t.className = 'note-text';
        t.contentEditable = 'plaintext-only';
        t.spellcheck = false;
        t.dataset.testid = 'note-text';
        t.addEventListener('input', () => {
          sync.edit(doc.updateShape(s.id, { text: t.textContent.slice(0, 1000) }));
        });
        el.append(t);
      }
      const handle = document.createElement('div');
      handle.className = 'handle';
      handle.dataset.testid = 'handle';
      el.append(handle);
      shapeEls.set(s.id, el);
    }
    el.className = `shape ${s.kind}${state.selected === s.id ? ' selected' : ''}`;
    el.style.left = `${s.x}px`;
    el.style.top = `${s.y}px`;
    el.style.width = `${s.w}px`;
    el.style.height = `${s.h}px`;
    el.style.background = s.color;
    el.style.zIndex = String(i + 1);
    el.dataset.x = String(s.x);
    el.dataset.y = String(s.y);
    el.setAttribute('aria-label', `${s.kind === 'note' ? 'Sticky note' : s.kind === 'ellipse' ? 'Ellipse' : 'Rectangle'} at ${Math.round(s.x)}, ${Math.round(s.y)}`);
    if (s.kind === 'note') {
      const t = el.querySelector('.note-text');
      if (document.activeElement !== t && t.textContent !== (s.text ?? '')) t.textContent = s.text ?? '';
    }
    if (el.parentNode !== layer || layer.children[i] !== el) layer.insertBefore(el, layer.children[i] ?? null);
  }
  for (const [id, el] of shapeEls) {
    if (!seen.has(id)) {
      el.remove();
      shapeEls.delete(id);
      if (state.selected === id) select(null);
    }
  }
  updateToolbar();
}

function select(id) {
  state.selected = id;
  for (const [sid, el] of shapeEls) el.classList.toggle('selected', sid === id);
  updateToolbar();
}

function updateToolbar() {
  const s = state.selected ? doc.shape(state.selected) : null;
  $('delete').disabled = !s;
  $('front').disabled = !s;
  for (const b of $('swatches').children) b.setAttribute('aria-pressed', String(!!s && s.color === b.dataset.color));
}

function addShape(kind) {
  const size = kind === 'ellipse' ? { w: 160, h: 160 } : kind === 'note' ? { w: 200, h: 180 } : { w: 220, h: 140 };
  const jitter = () => Math.round((Math.random() - 0.5) * 200);
  const { id, delta } = doc.createShape({
    kind,
    x: Math.round(WORLD_W / 2 - size.w / 2 + jitter()),
    y: Math.round(WORLD_H / 2 - size.h / 2 + jitter()),
    ...size,
    color: kind === 'note' ? '#ffd23f' : COLORS[Math.floor(Math.random() * 5)],
    text: '',
  });
  sync.edit(delta);
  renderShapes();
  select(id);
}

for (const b of document.querySelectorAll('[data-add]')) b.addEventListener('click', () => addShape(b.dataset.add));
for (const c of COLORS) {
  const b = document.createElement('button');
  b.type = 'button';
  b.style.background = c;
  b.dataset.color = c;
  b.dataset.testid = 'swatch';
  b.setAttribute('aria-label', `Colour ${c}`);
  b.addEventListener('click', () => {
    if (!state.selected) return;
    sync.edit(doc.updateShape(state.selected, { color: c }));
    renderShapes();
  });
  $('swatches').append(b);
}
$('delete').addEventListener('click', deleteSelected);
$('front').addEventListener('click', () => {
  if (!state.selected) return;
  sync.edit(doc.updateShape(state.selected, { z: doc.clock + 1 }));
  renderShapes();
});

function deleteSelected() {
  if (!state.selected) return;
  sync.edit(doc.deleteShape(state.selected));
  select(null);
  renderShapes();
}

document.addEventListener('keydown', (e) => {
  const editing = e.target instanceof HTMLElement && (e.target.isContentEditable || e.target.tagName === 'TEXTAREA' || e.target.tagName === 'INPUT');
  if (!editing && state.selected && (e.key === 'Delete' || e.key === 'Backspace')) {
    e.preventDefault();
    deleteSelected();
  }
  // arrow keys move the selected shape (Shift: further), for keyboards and screen readers
  const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
  const s = state.selected && doc.shape(state.selected);
  if (!editing && step && s) {
    e.preventDefault();
    const d = e.shiftKey ? 50 : 10;
    sync.edit(doc.updateShape(s.id, { x: clamp(s.x + step[0] * d, -s.w / 2, WORLD_W - s.w / 2), y: clamp(s.y + step[1] * d, -s.h / 2, WORLD_H - s.h / 2) }));
    renderShapes();
  }
});

// dragging and resizing: pointer events, one publication per flush (sync.js), not per event
let gesture = null;

function worldPoint(e) {
  const r = $('viewport').getBoundingClientRect();
  return { x: (e.clientX - r.left) / state.scale, y: (e.clientY - r.top) / state.scale };
}

$('shapes').addEventListener('pointerdown', (e) => {
  const el = e.target.closest('.shape');
  if (!el) return;
  const id = el.dataset.id;
  const s = doc.shape(id);
  if (!s) return;
  const onText = e.target.classList.contains('note-text');
  if (onText && state.selected === id) return; // a second tap on a note edits its text
  e.preventDefault();
  select(id);
  const p = worldPoint(e);
  gesture = { id, mode: e.target.classList.contains('handle') ? 'resize' : 'move', start: p, orig: s, pointer: e.pointerId };
  el.setPointerCapture(e.pointerId);
});

$('shapes').addEventListener('pointermove', (e) => {
  if (!gesture || e.pointerId !== gesture.pointer) return;
  const p = worldPoint(e);
  const dx = p.x - gesture.start.x;
  const dy = p.y - gesture.start.y;
  const o = gesture.orig;
  const change =
    gesture.mode === 'move'
      ? { x: Math.round(clamp(o.x + dx, -o.w / 2, WORLD_W - o.w / 2)), y: Math.round(clamp(o.y + dy, -o.h / 2, WORLD_H - o.h / 2)) }
      : { w: Math.round(clamp(o.w + dx, 30, WORLD_W)), h: Math.round(clamp(o.h + dy, 30, WORLD_H)) };
  sync.edit(doc.updateShape(gesture.id, change));
  renderShapes();
});

function endGesture(e) {
  if (gesture && e.pointerId === gesture.pointer) gesture = null;
}
$('shapes').addEventListener('pointerup', endGesture);
$('shapes').addEventListener('pointercancel', endGesture);
$('shapes').addEventListener('focusin', (e) => {
  const el = e.target.closest?.('.shape');
  if (el && state.selected !== el.dataset.id) select(el.dataset.id);
});
$('viewport').addEventListener('pointerdown', (e) => {
  if (!e.target.closest('.shape')) select(null);
});

const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

// ---------------------------------------------------------------- the shared text

const textarea = $('text');
let composing = false;

function renderText() {
  if (composing) return;
  const want = doc.text();
  if (textarea.value === want) return;
  // keep the caret next to the same characters, whatever others inserted before it
  const keys = textarea.value === lastRendered.text ? lastRendered.keys : null;
  const start = textarea.selectionStart;
  const end = textarea.selectionEnd;
  const anchor = (i) => (keys && i > 0 ? keys[i - 1] : null);
  const a = anchor(start);
  const b = anchor(end);
  textarea.value = want;
  lastRendered = { text: want, keys: doc.textKeys() };
  if (document.activeElement === textarea && keys) {
    textarea.setSelectionRange(doc.indexAfter(a), doc.indexAfter(b));
  }
}
let lastRendered = { text: '', keys: [] };

textarea.addEventListener('compositionstart', () => {
  composing = true;
});
textarea.addEventListener('compositionend', () => {
  composing = false;
  onTextInput();
});
textarea.addEventListener('input', () => {
  if (!composing) onTextInput();
});

/** Turns the textarea's new value into deletes and inserts against the document's text. */
function onTextInput() {
  const before = doc.text();
  const after = textarea.value;
  if (before === after) return;
  let p = 0;
  while (p < before.length && p < after.length && before[p] === after[p]) p++;
  let s = 0;
  while (s < before.length - p && s < after.length - p && before[before.length - 1 - s] === after[after.length - 1 - s]) s++;
  const removed = before.length - p - s;
  const inserted = after.slice(p, after.length - s);
  if (removed > 0) sync.edit(doc.deleteText(p, removed));
  if (inserted) sync.edit(doc.insertText(p, inserted));
  lastRendered = { text: doc.text(), keys: doc.textKeys() };
  if (lastRendered.text !== after) renderText();
  sendCursor({ t: 'typing' });
}

// ---------------------------------------------------------------- cursors and people

let lastCursorSent = 0;
let cursorTimer = null;
let pendingCursor = null;

function sendCursor(payload) {
  pendingCursor = { ...(pendingCursor ?? {}), ...payload };
  const wait = lastCursorSent + CURSOR_EVERY_MS - Date.now();
  if (cursorTimer) return;
  cursorTimer = setTimeout(flushCursor, Math.max(0, wait));
}

function flushCursor() {
  cursorTimer = null;
  if (!pendingCursor || cursors.state !== 'subscribed') return;
  const data = { ...pendingCursor, n: state.name, c: state.color, r: replica };
  if (data.t !== 'typing') data.t = 'cursor';
  pendingCursor = null;
  lastCursorSent = Date.now();
  cursors.publish(data).catch(() => {});
}

$('viewport').addEventListener('pointermove', (e) => {
  const p = worldPoint(e);
  sendCursor({ t: 'cursor', x: Math.round(p.x), y: Math.round(p.y) });
});

function sayHello(ask) {
  cursors.publish({ t: 'hello', n: state.name, c: state.color, r: replica, ask }).catch(() => {});
}

function onCursorPublication(ctx) {
  const d = ctx.data;
  const from = ctx.info?.client;
  if (!d || typeof d !== 'object' || !from || d.r === replica) return;
  const name = cleanName(d.n) || 'Someone';
  const color = typeof d.c === 'string' && /^hsl\(\d{1,3} 70% 45%\)$/.test(d.c) ? d.c : '#888888';
  const p = state.people.get(from) ?? { name, color };
  p.name = name;
  p.color = color;
  p.seen = Date.now();
  if (d.t === 'cursor' && Number.isFinite(d.x) && Number.isFinite(d.y)) {
    p.x = clamp(d.x, 0, WORLD_W);
    p.y = clamp(d.y, 0, WORLD_H);
  } else if (d.t === 'typing') {
    p.typing = Date.now();
  } else if (d.t === 'hello' && d.ask === true) {
    setTimeout(() => sayHello(false), Math.random() * 250);
  }
  state.people.set(from, p);
  renderPeople();
}

function renderPeople() {
  const now = Date.now();
  const list = $('people');
  list.replaceChildren();
  const layer = $('cursors');
  layer.replaceChildren();
  const typing = [];
  for (const [client, p] of state.people) {
    const li = document.createElement('li');
    li.textContent = p.name.slice(0, 1).toUpperCase();
    li.title = p.name;
    li.style.background = p.color;
    li.dataset.testid = 'person';
    li.dataset.name = p.name;
    list.append(li);
    if (p.x !== undefined && now - p.seen < CURSOR_TTL_MS) {
      const c = document.createElement('div');
      c.className = 'cursor';
      c.dataset.testid = 'cursor';
      c.dataset.name = p.name;
      c.dataset.client = client;
      c.style.left = `${p.x}px`;
      c.style.top = `${p.y}px`;
      c.innerHTML = '<svg viewBox="0 0 24 24"><path d="M3 2l7 19 2.5-8L21 10z" stroke="#fff" stroke-width="1.5"/></svg><span></span>';
      c.querySelector('path').setAttribute('fill', p.color);
      const label = c.querySelector('span');
      label.textContent = p.name;
      label.style.background = p.color;
      layer.append(c);
    }
    if (p.typing && now - p.typing < TYPING_TTL_MS) typing.push(p.name);
  }
  $('editing').textContent = typing.length === 0 ? '' : `${typing.join(', ')} ${typing.length === 1 ? 'is' : 'are'} typing…`;
}
setInterval(renderPeople, 1000);

// ---------------------------------------------------------------- start

$('doc-name').textContent = `#${docId}`;
$('me-name').value = state.name;
$('me-name').addEventListener('change', () => {
  const n = cleanName($('me-name').value);
  if (!n) {
    $('me-name').value = state.name;
    return;
  }
  state.name = n;
  storageSet(STORAGE_NAME, n);
  sayHello(false);
});
window.addEventListener('resize', fitWorld);
window.addEventListener('hashchange', () => location.reload());
fitWorld();
renderShapes();
sync.start();
cursors.subscribe();
client.connect();

// for the console and the end-to-end tests
window.kilatBoard = { doc, sync, client, state, get bannerKind() { return bannerKind; } };
