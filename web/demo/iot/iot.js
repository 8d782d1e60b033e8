// kilat IoT demo: devices (`kilat demo device`, separate processes on the Rust client) publish
// readings to `iot:readings`; each device listens on `device:<id>`. The page charts the
// readings, shows online/offline from the presence of `device:<id>`, and sends commands with
// the SDK's CommandSender: delivered, done and the round-trip time, or a clear timeout.
import { Kilat, CommandSender, deviceChannel } from '/sdk/kilat.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const timeout = Number(params.get('timeout')) || 5000;
const devices = new Map(); // id -> { card, temps: [], last }
const client = new Kilat(location.origin, { name: 'iot-demo' });
const sender = new CommandSender(client, { timeout });

function card(id) {
  let d = devices.get(id);
  if (d) return d;
  const node = $('card').content.firstElementChild.cloneNode(true);
  node.dataset.device = id;
  node.querySelector('.name').textContent = id;
  d = { card: node, temps: [], last: null, entries: new Map() };
  devices.set(id, d);
  node.querySelector('.toggle').addEventListener('click', () => command(id, 'relay', { on: !(d.last?.relay) }));
  node.querySelector('.set-target').addEventListener('submit', (e) => {
    e.preventDefault();
    command(id, 'target', { celsius: Number(node.querySelector('input').value) });
  });
  $('devices').append(node);
  $('empty').hidden = true;
  $('count').textContent = String(devices.size);
  sender.watch(id).catch(() => {});
  return d;
}

function logLine(id, cmdId, text, cls) {
  const d = card(id);
  let li = d.entries.get(cmdId);
  if (!li) { li = document.createElement('li'); d.entries.set(cmdId, li); d.card.querySelector('.log').prepend(li); }
  li.textContent = text;
  li.className = cls;
  li.dataset.status = cls;
}

function command(id, name, args) {
  sender.send(id, name, args).catch(() => {}); // statuses arrive as events
}

sender.on('status', (s) => {
  const what = `${s.name} ${s.status}`;
  const text = s.status === 'done' ? `${what} in ${s.rttMs} ms${s.late ? ' (late)' : ''}: ${JSON.stringify(s.result)}`
    : s.status === 'failed' ? `${what}: ${s.error}`
      : s.status === 'timeout' ? `${what}: no ack within ${timeout} ms; the device gets it when it reconnects`
        : s.status === 'delivered' ? `${what} after ${s.rttMs} ms` : what;
  logLine(s.device, s.id, text, s.status);
});

function draw(d) {
  const canvas = d.card.querySelector('canvas');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const t = d.temps;
  if (t.length < 2) return;
  const min = Math.min(...t) - 0.5, max = Math.max(...t) + 0.5;
  ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue('--accent');
  ctx.lineWidth = 2;
  ctx.beginPath();
  t.forEach((v, i) => { const x = (i / 479) * w, y = h - ((v - min) / (max - min)) * h; if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
  ctx.stroke();
  ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue('--muted');
  ctx.font = '11px system-ui';
  ctx.fillText(`${max.toFixed(1)}°`, 2, 11);
  ctx.fillText(`${min.toFixed(1)}°`, 2, h - 2);
}

const readings = client.newSubscription('iot:readings', { recoverable: false });
readings.on('publication', ({ data }) => {
  if (!data || typeof data.device !== 'string' || typeof data.temp !== 'number') return;
  const d = card(data.device);
  d.last = data;
  d.temps.push(data.temp);
  if (d.temps.length > 480) d.temps.shift();
  const q = (s) => d.card.querySelector(s);
  q('.temp').textContent = data.temp.toFixed(1);
  q('.hum').textContent = String(data.humidity);
  q('.bat').textContent = String(data.battery);
  q('.relay').textContent = data.relay ? 'on' : 'off';
  q('.target').textContent = String(data.target);
  draw(d);
});
readings.subscribe();

// Online/offline from presence: each device holds a subscription to `online:<id>`, which
// consoles only query (they subscribe to device:<id> for the acks, so that one has them too).
async function refreshPresence() {
  for (const [id, d] of devices) {
    try {
      const res = await client.presence(`online:${id}`);
      const online = Object.keys(res.clients ?? {}).length > 0;
      const el = d.card.querySelector('.online');
      el.textContent = online ? 'online' : 'offline';
      el.classList.toggle('on', online);
    } catch { /* reconnecting */ }
  }
}
setInterval(refreshPresence, 1000);
client.on('state', (c) => { $('status').textContent = c.newState === 'connected' ? 'live' : c.newState; });
client.connect();
window.kilatIot = { devices, sender };
