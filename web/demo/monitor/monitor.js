// kilat monitoring demo. Figures of this node and its host arrive over kilat itself: the monitor
// feed (in-process with `kilat serve --dev`, or `kilat demo feed monitor`) reads /metrics every
// second and publishes them to `monitor:<node>`. Rules and alerts live in one channel,
// `alerts:ops`, keyed by `id` (namespace `alerts`: conflate_key = "id", latest = true): a
// dashboard that opens, or comes back, gets the newest record of every rule and every alert in
// its subscribe reply, or recovers what it missed. The feed evaluates the rules and publishes
// alerts; a dashboard adds or deletes a rule, or acknowledges an alert, by publishing the
// record under the same id. Only the public SDK is used.
import { Kilat } from '/sdk/kilat.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const node = params.get('node') ?? 'node';
const POINTS = 120;
const ALERTS = 'alerts:ops';

/** The charts: a figure's field, its label and format. The rule metrics are the same fields. */
const CHARTS = [
  { key: 'connections', label: 'Connections', fmt: (v) => v.toFixed(0) },
  { key: 'publications_per_s', label: 'Publications/s', fmt: (v) => v.toFixed(1) },
  { key: 'deliveries_per_s', label: 'Deliveries/s', fmt: (v) => v.toFixed(1) },
  { key: 'memory_mb', label: 'kilat memory (MB)', fmt: (v) => v.toFixed(1) },
  { key: 'cpu_percent', label: 'kilat CPU (%)', fmt: (v) => v.toFixed(1) },
  { key: 'load1', label: 'Host load 1/5/15 m', fmt: (v, f) => `${v.toFixed(2)} ${f.load5?.toFixed(2) ?? ''} ${f.load15?.toFixed(2) ?? ''}`, extra: ['load5', 'load15'] },
  { key: 'host_memory_used_percent', label: 'Host memory used (%)', fmt: (v, f) => `${v.toFixed(1)}${f.host_memory_total_mb ? ` of ${(f.host_memory_total_mb / 1024).toFixed(1)} GB` : ''}` },
];
const METRICS = CHARTS.map((c) => c.key);

const series = new Map(); // key -> number[]
const charts = new Map(); // key -> { fig, canvas }
let last = null;
const rules = new Map(); // id -> record
const alerts = new Map(); // id -> record
const toasted = new Set();

// Who acknowledges: ?name=, else remembered, else a guest name.
const who = $('who');
who.value = params.get('name') ?? localStorage.getItem('kilat-monitor-name') ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
who.addEventListener('change', () => { who.value = who.value.trim().slice(0, 40) || 'guest'; localStorage.setItem('kilat-monitor-name', who.value); });

for (const c of CHARTS) {
  const fig = $('chart').content.firstElementChild.cloneNode(true);
  fig.dataset.metric = c.key;
  fig.querySelector('.label').textContent = c.label;
  $('charts').append(fig);
  charts.set(c.key, { fig, canvas: fig.querySelector('canvas') });
  for (const k of [c.key, ...(c.extra ?? [])]) series.set(k, []);
  const opt = document.createElement('option');
  opt.value = c.key;
  opt.textContent = c.label.replace(' 1/5/15 m', ' (1 m)');
  $('metric').append(opt);
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function draw(c) {
  const { canvas, fig } = charts.get(c.key);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const keys = [c.key, ...(c.extra ?? [])];
  const thresholds = [...rules.values()].filter((r) => !r.error && !r.deleted && r.metric === c.key).map((r) => r.threshold);
  const all = keys.flatMap((k) => series.get(k)).concat(thresholds).filter(Number.isFinite);
  if (!all.length) return;
  let min = Math.min(0, ...all), max = Math.max(...all);
  if (max - min < 1e-9) max = min + 1;
  max += (max - min) * 0.1;
  const y = (v) => h - 2 - ((v - min) / (max - min)) * (h - 4);
  ctx.lineWidth = 1;
  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = css('--bad');
  for (const t of thresholds) { ctx.beginPath(); ctx.moveTo(0, y(t)); ctx.lineTo(w, y(t)); ctx.stroke(); }
  ctx.setLineDash([]);
  const colours = [css('--accent'), css('--muted'), css('--border')];
  keys.forEach((k, i) => {
    const s = series.get(k);
    if (s.length < 2) return;
    ctx.strokeStyle = colours[i];
    ctx.lineWidth = i === 0 ? 2 : 1.2;
    ctx.beginPath();
    s.forEach((v, j) => { const x = ((j + POINTS - s.length) / (POINTS - 1)) * w; if (j) ctx.lineTo(x, y(v)); else ctx.moveTo(x, y(v)); });
    ctx.stroke();
  });
  ctx.fillStyle = css('--muted');
  ctx.font = '10px system-ui';
  ctx.fillText(String(Number(((max - min) / 1.1 + min).toPrecision(3))), 2, 10);
  fig.classList.toggle('alerting', [...alerts.values()].some((a) => a.state === 'firing' && a.metric === c.key));
}

let firstLive = Infinity;

function showValues(f) {
  $('waiting').hidden = true;
  $('node').textContent = String(f.node);
  for (const c of CHARTS) {
    const v = f[c.key];
    if (typeof v === 'number') charts.get(c.key).fig.querySelector('.value').textContent = c.fmt(v, f);
    draw(c);
  }
}

function onFigures(f) {
  if (!f || typeof f !== 'object' || typeof f.t !== 'number') return;
  last = f;
  firstLive = Math.min(firstLive, f.t);
  for (const [k, s] of series) {
    if (typeof f[k] !== 'number') continue;
    s.push(f[k]);
    if (s.length > POINTS) s.shift();
  }
  showValues(f);
}

/** Figures from before the page opened (history), older than the first live one. */
function prependFigures(past) {
  const older = past.filter((f) => f && typeof f.t === 'number' && f.t < firstLive).sort((a, b) => a.t - b.t);
  for (const [k, s] of series) {
    s.unshift(...older.map((f) => f[k]).filter((v) => typeof v === 'number'));
    while (s.length > POINTS) s.shift();
  }
  if (!last && older.length) last = older[older.length - 1];
  if (last) showValues(last);
}

const fmtTime = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '');
const label = (key) => CHARTS.find((c) => c.key === key)?.label ?? key;
const describe = (r) => `${label(r.metric)} ${r.op === '<' ? 'below' : 'above'} ${r.threshold} for ${r.for_s} s`;

function renderRules() {
  const ul = $('rules');
  ul.replaceChildren(...[...rules.values()].filter((r) => !r.deleted).map((r) => {
    const li = document.createElement('li');
    li.dataset.rule = r.id.slice(5);
    const text = document.createElement('span');
    text.textContent = r.error ? `${r.id.slice(5)}: rejected` : `${r.id.slice(5)}: ${describe(r)}${r.by ? ` (by ${r.by})` : ''}`;
    if (r.error) {
      const e = document.createElement('span');
      e.className = 'error';
      e.dataset.testid = 'rule-rejected';
      e.textContent = r.error;
      text.append(e);
    }
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'secondary small';
    del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete rule ${r.id.slice(5)}`);
    del.addEventListener('click', () => publishRecord({ id: r.id, kind: 'rule', deleted: true, by: who.value }));
    li.append(text, del);
    return li;
  }));
  for (const c of CHARTS) draw(c);
}

function ack(record) {
  return publishRecord({ ...record, acked_by: who.value, acked_at: Date.now() });
}

function renderAlerts() {
  const list = [...alerts.values()].sort((a, b) => (b.raised_at ?? 0) - (a.raised_at ?? 0)).slice(0, 50);
  $('no-alerts').hidden = list.length > 0;
  const open = list.filter((a) => a.state === 'firing' && !a.acked_by).length;
  $('open-count').textContent = String(open);
  $('open-count').classList.toggle('zero', open === 0);
  $('alerts').replaceChildren(...list.map((a) => {
    const li = document.createElement('li');
    li.dataset.alert = a.id;
    li.dataset.rule = a.rule;
    li.dataset.state = a.state;
    li.dataset.acked = String(Boolean(a.acked_by));
    const what = document.createElement('span');
    what.className = 'what';
    what.textContent = `${a.rule}: ${describe(a)} (${a.value ?? '?'})`;
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = `${a.state === 'resolved' ? `resolved ${fmtTime(a.resolved_at)}${a.resolved_why ? ` (${a.resolved_why})` : ''}, ` : 'firing, '}raised ${fmtTime(a.raised_at)} on ${a.node ?? 'node'}`;
    li.append(what, meta);
    if (a.acked_by) {
      const by = document.createElement('span');
      by.className = 'ack-by';
      by.dataset.testid = 'acked-by';
      by.textContent = `acknowledged by ${a.acked_by} at ${fmtTime(a.acked_at)}`;
      li.append(by);
    } else {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'small';
      b.dataset.testid = 'ack';
      b.textContent = 'Acknowledge';
      b.addEventListener('click', () => ack(a));
      li.append(b);
    }
    return li;
  }));
  for (const c of CHARTS) draw(c);
}

function toast(a) {
  if (toasted.has(a.id)) return;
  toasted.add(a.id);
  const t = document.createElement('div');
  t.className = 'toast';
  t.dataset.alert = a.id;
  t.setAttribute('role', 'alert');
  const text = document.createElement('span');
  text.textContent = `Alert ${a.rule}: ${describe(a)}, now ${a.value}`;
  const row = document.createElement('div');
  row.className = 'row';
  const ackB = document.createElement('button');
  ackB.className = 'small';
  ackB.textContent = 'Acknowledge';
  ackB.addEventListener('click', () => { ack(alerts.get(a.id) ?? a); t.remove(); });
  const close = document.createElement('button');
  close.className = 'secondary small';
  close.textContent = 'Dismiss';
  close.addEventListener('click', () => t.remove());
  row.append(ackB, close);
  t.append(text, row);
  $('toasts').append(t);
  setTimeout(() => t.remove(), 15000);
  if ('Notification' in window && Notification.permission === 'granted') {
    try { new Notification(`kilat alert: ${a.rule}`, { body: `${describe(a)}, now ${a.value}`, tag: a.id }); } catch { /* not allowed here */ }
  }
}

function dropToast(id) { document.querySelector(`.toast[data-alert="${CSS.escape(id)}"]`)?.remove(); }

function onRecord(r) {
  if (!r || typeof r.id !== 'string') return;
  if (r.id.startsWith('rule:')) {
    if (r.deleted) rules.delete(r.id); else rules.set(r.id, r);
    renderRules();
  } else if (r.id.startsWith('alert:')) {
    alerts.set(r.id, r);
    if (r.state === 'firing' && !r.acked_by) toast(r); else dropToast(r.id);
    renderAlerts();
  }
}

/** The rules the evaluator applies (it checks again: it is the boundary, this is the hint). */
function checkRule(r) {
  if (!/^[A-Za-z0-9_-]{1,40}$/.test(r.name)) return 'Name: 1-40 letters, digits, - or _.';
  if (!METRICS.includes(r.metric)) return `Unknown metric; use one of: ${METRICS.join(', ')}.`;
  if (r.op !== '>' && r.op !== '<') return 'The condition is above (>) or below (<).';
  if (!Number.isFinite(r.threshold)) return 'Threshold: a number.';
  if (!Number.isFinite(r.for_s) || r.for_s < 0 || r.for_s > 3600) return 'For: 0 to 3600 seconds.';
  return null;
}

async function publishRecord(record) {
  try {
    await client.publish(ALERTS, record);
    return null;
  } catch (err) {
    $('rule-error').textContent = `Not saved: ${err.message ?? err}`;
    return err;
  }
}

$('rule-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const num = (v) => (String(v).trim() === '' ? NaN : Number(v));
  const r = { name: String(f.get('name')).trim(), metric: f.get('metric'), op: f.get('op'), threshold: num(f.get('threshold')), for_s: num(f.get('for_s')) };
  const error = checkRule(r);
  $('rule-error').textContent = error ?? '';
  if (error) return;
  const saved = await publishRecord({ id: `rule:${r.name}`, kind: 'rule', metric: r.metric, op: r.op, threshold: r.threshold, for_s: r.for_s, by: who.value });
  if (!saved) ev.target.querySelector('[name="name"]').value = '';
});

if ('Notification' in window && Notification.permission === 'default') {
  $('notify').hidden = false;
  $('notify').addEventListener('click', async () => { await Notification.requestPermission(); $('notify').hidden = Notification.permission !== 'default'; });
}

const client = new Kilat(location.origin, { name: 'monitor-demo' });
client.on('state', (c) => { $('status').textContent = c.newState === 'connected' ? 'live' : c.newState === 'connecting' ? 'offline, reconnecting…' : c.newState; });

const figures = client.newSubscription(`monitor:${node}`, { recoverable: false });
let filled = false;
figures.on('subscribed', async () => {
  if (filled) return;
  filled = true;
  // The last two minutes from history, so the charts are not empty on open.
  try {
    const res = await client.history(`monitor:${node}`, { limit: POINTS, reverse: true });
    prependFigures((res.publications ?? []).map((p) => p.data));
  } catch { /* history is a nicety */ }
});
figures.on('publication', ({ data }) => onFigures(data));
figures.subscribe();

const ops = client.newSubscription(ALERTS);
ops.on('publication', ({ data }) => onRecord(data));
ops.on('error', (e) => { $('rule-error').textContent = `alerts: ${e.error?.message ?? e.type}`; });
ops.subscribe();
client.connect();
addEventListener('resize', () => CHARTS.forEach(draw));
window.kilatMonitor = { client, rules, alerts, series, who };
