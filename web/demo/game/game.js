// kilat arena demo: every player publishes its state 20 times a second into `game:<room>`
// (dev mode's `game` namespace: conflate_key = "player", latest = true), so per-key conflation
// keeps every player current and a joiner sees everyone at once. Remote players are drawn
// 100 ms in the past, interpolated between their last two states. Who is in the room (the
// player count and list) is the subscription's member map, kept from presence diffs: loaded
// once with syncMembers(), then every join and leave. Only the public SDK is used.
import { Kilat } from '/sdk/kilat.js';

const W = 800, H = 600, R = 14, SPEED = 220, TICK = 50, DELAY = 100;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = params.get('room') ?? 'arena';
const me = { player: `p${Math.random().toString(36).slice(2, 8)}`, name: params.get('name') ?? `guest-${Math.floor(Math.random() * 900 + 100)}`,
  x: 100 + Math.random() * 600, y: 100 + Math.random() * 400, score: 0, shot: 0, aim: 0 };
$('room').textContent = room;
/** player -> { name, score, states: [{x, y, t, shot, aim}], count } */
const others = new Map();
const keys = new Set();
let target = null;
let updates = 0;
const shots = []; // {x, y, a, until}

/** `client` is the publisher's connection id, set by the server on client publications. */
function remote(data, client) {
  if (!data || typeof data.player !== 'string' || data.player === me.player) return;
  if (typeof data.x !== 'number' || typeof data.y !== 'number') return;
  let o = others.get(data.player);
  if (!o) { o = { states: [], lastShot: data.shot ?? 0 }; others.set(data.player, o); }
  o.name = String(data.name ?? data.player).slice(0, 24);
  o.client = typeof client === 'string' ? client : null;
  o.score = Number(data.score) || 0;
  o.states.push({ x: data.x, y: data.y, t: performance.now() });
  if (o.states.length > 3) o.states.shift();
  if ((data.shot ?? 0) > o.lastShot) { o.lastShot = data.shot; shots.push({ x: data.x, y: data.y, a: data.aim ?? 0, until: performance.now() + 150 }); }
  updates += 1;
}

function positionOf(o, now) {
  const t = now - DELAY;
  const s = o.states;
  if (s.length === 1) return s[0];
  for (let i = s.length - 1; i > 0; i--) {
    const a = s[i - 1], b = s[i];
    if (t >= a.t) {
      const k = Math.min(1, (t - a.t) / Math.max(1, b.t - a.t));
      return { x: a.x + (b.x - a.x) * k, y: a.y + (b.y - a.y) * k };
    }
  }
  return s[0];
}

function fire() {
  me.shot += 1;
  shots.push({ x: me.x, y: me.y, a: me.aim, until: performance.now() + 150 });
  // The shooter judges hits against what it sees: a point for each player on the ray.
  const now = performance.now();
  for (const o of others.values()) {
    const p = positionOf(o, now);
    const dx = p.x - me.x, dy = p.y - me.y;
    const along = dx * Math.cos(me.aim) + dy * Math.sin(me.aim);
    const across = Math.abs(-dx * Math.sin(me.aim) + dy * Math.cos(me.aim));
    if (along > 0 && across < R) me.score += 1;
  }
  $('score').textContent = String(me.score);
}

const canvas = $('arena');
const ctx = canvas.getContext('2d');
function resize() {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * dpr; canvas.height = canvas.clientHeight * dpr;
}
addEventListener('resize', resize);
resize();
addEventListener('keydown', (e) => { keys.add(e.key.toLowerCase()); if (e.key === ' ') { e.preventDefault(); fire(); } });
addEventListener('keyup', (e) => keys.delete(e.key.toLowerCase()));
canvas.addEventListener('pointerdown', (e) => {
  const r = canvas.getBoundingClientRect();
  target = { x: ((e.clientX - r.left) / r.width) * W, y: ((e.clientY - r.top) / r.height) * H };
});
$('fire').addEventListener('click', fire);

let last = performance.now();
function frame(now) {
  const dt = Math.min(0.1, (now - last) / 1000);
  last = now;
  let vx = 0, vy = 0;
  if (keys.has('arrowleft') || keys.has('a')) vx -= 1;
  if (keys.has('arrowright') || keys.has('d')) vx += 1;
  if (keys.has('arrowup') || keys.has('w')) vy -= 1;
  if (keys.has('arrowdown') || keys.has('s')) vy += 1;
  if (!vx && !vy && target) {
    const dx = target.x - me.x, dy = target.y - me.y, d = Math.hypot(dx, dy);
    if (d > 4) { vx = dx / d; vy = dy / d; } else target = null;
  }
  if (vx || vy) {
    const n = Math.hypot(vx, vy);
    me.aim = Math.atan2(vy, vx);
    me.x = Math.max(R, Math.min(W - R, me.x + (vx / n) * SPEED * dt));
    me.y = Math.max(R, Math.min(H - R, me.y + (vy / n) * SPEED * dt));
  }
  const s = canvas.width / W;
  ctx.setTransform(s, 0, 0, s, 0, 0);
  ctx.clearRect(0, 0, W, H);
  const dark = matchMedia('(prefers-color-scheme: dark)').matches;
  ctx.font = '12px system-ui';
  ctx.textAlign = 'center';
  const draw = (p, name, color) => {
    ctx.fillStyle = color; ctx.beginPath(); ctx.arc(p.x, p.y, R, 0, Math.PI * 2); ctx.fill();
    // The name sits above the player, or below it at the top edge, and stays inside the arena.
    const half = ctx.measureText(name).width / 2;
    const x = Math.max(half + 2, Math.min(W - half - 2, p.x));
    const y = p.y - R - 4 < 12 ? p.y + R + 14 : p.y - R - 4;
    ctx.fillStyle = dark ? '#e8e9f4' : '#1b1d2e'; ctx.fillText(name, x, y);
  };
  for (const [id, o] of others) {
    if (!present(o)) continue;
    const hue = ([...id].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) * 137) % 360;
    draw(positionOf(o, now), o.name, `hsl(${hue} 65% 55%)`);
  }
  draw(me, `${me.name} (you)`, dark ? '#8b8bff' : '#5b5bf7');
  ctx.strokeStyle = '#f0a020'; ctx.lineWidth = 2;
  for (let i = shots.length - 1; i >= 0; i--) {
    const b = shots[i];
    if (b.until < now) { shots.splice(i, 1); continue; }
    ctx.beginPath(); ctx.moveTo(b.x, b.y); ctx.lineTo(b.x + Math.cos(b.a) * 900, b.y + Math.sin(b.a) * 900); ctx.stroke();
  }
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);

/** Whether the player of state `o` is in the room (by the member map, once it is loaded). */
function present(o) {
  return !synced || (o.client !== null && sub.members.has(o.client));
}

function roster() {
  // Above the namespace's presence_diff_max the server sends counts instead of changes.
  const count = crowd ?? (synced ? sub.members.size : others.size + 1);
  $('players').textContent = String(count);
  const byClient = new Map([...others.values()].filter((o) => o.client).map((o) => [o.client, o]));
  const rows = synced
    ? [...sub.members.values()].map((m) => {
      if (m.client === client.clientId) return [me.name + ' (you)', me.score];
      const o = byClient.get(m.client);
      return [o?.name ?? 'joining…', o?.score ?? 0];
    })
    : [[me.name + ' (you)', me.score], ...[...others.values()].map((o) => [o.name, o.score])];
  rows.sort((a, b) => b[1] - a[1]);
  $('roster').replaceChildren(...rows.slice(0, 30).map(([n, sc]) => { const li = document.createElement('li'); li.textContent = `${n} · ${sc}`; return li; }));
}

const client = new Kilat(location.origin, { name: 'game-demo' });
client.on('state', (c) => { $('status').textContent = c.newState === 'connected' ? 'live' : c.newState; });
const channel = `game:${room}`;
const sub = client.newSubscription(channel, { joinLeave: true, recoverable: false });
let synced = false;
let crowd = null;
sub.on('publication', (c) => remote(c.data, c.info?.client));
// The member map follows every join and leave (presence diffs); a (re)subscribe loads it.
sub.on('subscribed', () => {
  sub.syncMembers().then(() => { synced = true; roster(); }).catch(() => {});
});
sub.on('join', () => roster());
sub.on('leave', (c) => {
  // A leave carries the client id; players are keyed by their own id, so match on the client.
  for (const [id, o] of others) if (o.client === c.info?.client) others.delete(id);
  roster();
});
sub.on('count', (c) => { crowd = c.num_clients; roster(); });
sub.subscribe();
client.connect();
// 20 states a second (the server adds our client id as the publication's info).
setInterval(() => {
  if (client.state !== 'connected') return;
  client.publish(channel, { player: me.player, name: me.name, x: Math.round(me.x), y: Math.round(me.y), score: me.score, shot: me.shot, aim: Number(me.aim.toFixed(2)) }).catch(() => {});
}, TICK);
setInterval(() => {
  // updates/s per remote player, over the last second (players who left are gone with
  // their leave, so they do not dilute it)
  const n = [...others.values()].filter(present).length;
  $('rate').textContent = n ? (updates / n).toFixed(1) : '0';
  updates = 0;
  roster();
}, 1000);
window.kilatGame = { me, others, members: sub.members };
