// kilat ticker demo: one channel `ticker:all` with 500 symbols, keyed by `sym` (dev mode's
// `ticker` namespace: conflate_key = "sym", conflate_ms = 100, latest = true). The subscribe
// reply carries the latest price of every symbol (`subscribed.latest`), so the page is full at
// once; live prices follow, conflated per symbol. Only the public SDK is used.
import { Kilat } from '/sdk/kilat.js';

const $ = (id) => document.getElementById(id);
const SPARK = 60;
/** sym -> { p, prev, hist: number[], cell, row } */
const symbols = new Map();
const dirty = new Set();
let updates = 0;
let latestCount = 0;
const params = new URLSearchParams(location.search);
const watch = new Set((localStorage.getItem('kilat-ticker-watch') ?? 'SYM000,SYM001,SYM002,SYM003,SYM004,SYM005,SYM006,SYM007,SYM008,SYM009').split(',').filter(Boolean));

function entry(sym) {
  let e = symbols.get(sym);
  if (!e) {
    e = { p: null, prev: null, first: null, hist: [], cell: null, row: null };
    symbols.set(sym, e);
    $('symbol-count').textContent = String(symbols.size);
  }
  return e;
}

function onPrice(data, fromLatest) {
  if (!data || typeof data.sym !== 'string' || typeof data.p !== 'number') return;
  const e = entry(data.sym);
  e.prev = e.p;
  e.p = data.p;
  if (e.first === null) e.first = data.p;
  e.hist.push(data.p);
  if (e.hist.length > SPARK) e.hist.shift();
  if (fromLatest) latestCount += 1; else updates += 1;
  dirty.add(data.sym);
}

function fmt(p) { return p.toFixed(2); }

function cellFor(sym) {
  const e = entry(sym);
  if (!e.cell) {
    const cell = document.createElement('div');
    cell.className = 'cell';
    cell.dataset.sym = sym;
    cell.innerHTML = `<b>${sym}</b><span></span>`;
    // keep the grid sorted by symbol
    const after = [...$('grid').children].find((c) => c.dataset.sym > sym);
    $('grid').insertBefore(cell, after ?? null);
    e.cell = cell;
  }
  return e.cell;
}

function flash(el, up) {
  el.classList.remove('flash-up', 'flash-down');
  void el.offsetWidth; // restart the animation
  el.classList.add(up ? 'flash-up' : 'flash-down');
}

function drawSpark(canvas, hist) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 120, h = canvas.clientHeight || 28;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  if (hist.length < 2) return;
  const min = Math.min(...hist), max = Math.max(...hist), span = max - min || 1;
  const up = hist[hist.length - 1] >= hist[0];
  ctx.strokeStyle = getComputedStyle(canvas).getPropertyValue(up ? '--up' : '--down') || (up ? '#0a8a4a' : '#c62839');
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  hist.forEach((p, i) => {
    const x = (i / (SPARK - 1)) * (w - 2) + 1;
    const y = h - 2 - ((p - min) / span) * (h - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function rowFor(sym) {
  const e = entry(sym);
  if (!e.row) {
    const tr = document.createElement('tr');
    tr.dataset.sym = sym;
    tr.innerHTML = `<th scope="row">${sym}</th><td class="num price">–</td><td class="num change">–</td><td><canvas class="spark" aria-hidden="true"></canvas></td><td><button class="remove" type="button" aria-label="Remove ${sym}">✕</button></td>`;
    tr.querySelector('button').addEventListener('click', () => { watch.delete(sym); saveWatch(); tr.remove(); e.row = null; });
    $('watch-body').append(tr);
    e.row = tr;
  }
  return e.row;
}

function saveWatch() { localStorage.setItem('kilat-ticker-watch', [...watch].join(',')); }

function render() {
  for (const sym of dirty) {
    const e = symbols.get(sym);
    const up = e.prev === null || e.p >= e.prev;
    const cell = cellFor(sym);
    cell.lastChild.textContent = fmt(e.p);
    if (e.prev !== null && e.prev !== e.p) flash(cell, up);
    if (watch.has(sym)) {
      const row = rowFor(sym);
      const price = row.querySelector('.price');
      price.textContent = fmt(e.p);
      price.className = `num price ${up ? 'up' : 'down'}`;
      if (e.prev !== null && e.prev !== e.p) flash(price, up);
      const ch = ((e.p - e.first) / e.first) * 100;
      const change = row.querySelector('.change');
      change.textContent = `${ch >= 0 ? '+' : ''}${ch.toFixed(2)}%`;
      change.className = `num change ${ch >= 0 ? 'up' : 'down'}`;
      drawSpark(row.querySelector('canvas'), e.hist);
    }
  }
  dirty.clear();
  $('latest-count').textContent = String(latestCount);
  requestAnimationFrame(render);
}

function renderBook(data) {
  if (!data || !Array.isArray(data.bids) || !Array.isArray(data.asks)) return;
  $('book-sym').textContent = data.sym;
  const max = Math.max(1, ...data.bids.map((l) => l[1]), ...data.asks.map((l) => l[1]));
  const fill = (ol, levels) => {
    ol.replaceChildren(...levels.map(([price, size]) => {
      const li = document.createElement('li');
      li.innerHTML = `<span>${fmt(price)}</span><span>${size}</span>`;
      li.style.backgroundSize = `${(size / max) * 100}% 100%`;
      return li;
    }));
  };
  fill($('bids'), data.bids);
  fill($('asks'), data.asks);
}

$('add-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const sym = $('add-input').value.trim().toUpperCase();
  if (!/^SYM\d{3}$/.test(sym)) return;
  watch.add(sym);
  saveWatch();
  rowFor(sym);
  dirty.add(sym);
  $('add-input').value = '';
});

const client = new Kilat(location.origin, { name: 'ticker-demo' });
client.on('state', (ctx) => { $('status').textContent = ctx.newState; });
client.on('connected', () => { $('status').textContent = 'live'; });
client.on('disconnected', () => { $('status').textContent = 'offline, reconnecting…'; });
const prices = client.newSubscription(params.get('channel') ?? 'ticker:all');
let expectingLatest = false;
prices.on('subscribed', (ctx) => { expectingLatest = ctx.latest; });
prices.on('publication', (ctx) => onPrice(ctx.data, expectingLatest));
// The latest values are emitted synchronously right after `subscribed`; anything later is live.
prices.on('subscribed', () => queueMicrotask(() => { expectingLatest = false; }));
prices.subscribe();
const book = client.newSubscription('ticker:book', { recoverable: false });
book.on('publication', (ctx) => renderBook(ctx.data));
book.subscribe();
client.connect();
for (const sym of watch) rowFor(sym);
setInterval(() => { $('rate').textContent = String(updates); updates = 0; }, 1000);
requestAnimationFrame(render);
