// The admin console: a login, then pages over the server API (POST /admin/api/<method>, the
// same methods as /api/<method>), /metrics for the live charts and /admin/tail for a channel's
// live publications. Plain ES modules, no build step.

import { LineChart, formatNumber } from "./chart.js";
import { parseMetrics, sum, byLabel, buckets, quantile } from "./prom.js";

const $ = (id) => document.getElementById(id);
let csrf = null;

// --- server calls -----------------------------------------------------------------------------

async function api(method, body = {}) {
  const response = await fetch(`/admin/api/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf ?? "" },
    body: JSON.stringify(body),
  });
  if (response.status === 403 || response.status === 401) {
    showLogin();
    throw new Error("signed out");
  }
  const answer = await response.json();
  if (answer.error) throw new Error(`${answer.error.message} (${answer.error.code})`);
  return answer.result;
}

function showError(error) {
  $("error").textContent = error ? String(error.message ?? error) : "";
}

// --- login ------------------------------------------------------------------------------------

function showLogin() {
  csrf = null;
  $("nav").hidden = true;
  for (const page of document.querySelectorAll(".page")) page.hidden = true;
  $("login").hidden = false;
  $("password").focus();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const response = await fetch("/admin/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ password: $("password").value }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("login-error").textContent = answer.error?.message ?? `login failed (${response.status})`;
    return;
  }
  csrf = answer.csrf;
  $("password").value = "";
  start();
});

$("logout").addEventListener("click", async () => {
  await fetch("/admin/logout", { method: "POST", headers: { "x-csrf-token": csrf ?? "" } });
  showLogin();
});

// --- routing ----------------------------------------------------------------------------------

let leavePage = () => {};

function route() {
  if (!csrf) return;
  leavePage();
  leavePage = () => {};
  showError(null);
  const hash = decodeURIComponent(location.hash.slice(2));
  const [page, ...rest] = hash.split("/");
  const name = ["overview", "channels", "channel", "connections", "config"].includes(page) ? page : "overview";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${name}`;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === (name === "channel" ? "channels" : name));
  }
  const pages = { overview: () => {}, channels: showChannels, channel: () => showChannel(rest.join("/")), connections: showConnections, config: showConfig };
  pages[name]();
}
window.addEventListener("hashchange", route);

function start() {
  $("login").hidden = true;
  $("nav").hidden = false;
  startOverview();
  route();
}

// --- overview: charts from /metrics every second, nodes from `info` ---------------------------

const charts = {};
let previous = null;
let overviewTimer = null;

function startOverview() {
  if (overviewTimer) return;
  const ms = (v) => (v == null ? "–" : formatNumber(v) + " ms");
  charts.connections = new LineChart($("chart-connections"));
  charts.traffic = new LineChart($("chart-traffic"));
  charts.bytes = new LineChart($("chart-bytes"), { format: (v) => formatNumber(v) + "B" });
  charts.latency = new LineChart($("chart-latency"), { format: ms });
  charts.disconnects = new LineChart($("chart-disconnects"));
  charts.nodes = new LineChart($("chart-nodes"));
  charts.nodeDeliveries = new LineChart($("chart-node-deliveries"));
  tick();
  overviewTimer = setInterval(tick, 1000);
  refreshNodes();
  setInterval(refreshNodes, 5000);
}

async function tick() {
  let samples;
  try {
    samples = parseMetrics(await (await fetch("/metrics")).text());
  } catch {
    $("overview-status").textContent = "cannot read /metrics; retrying";
    return;
  }
  const now = Date.now();
  const current = {
    t: now,
    publications: sum(samples, "kilat_publications_total"),
    deliveries: sum(samples, "kilat_deliveries_total"),
    bytes: sum(samples, "kilat_transport_sent_bytes_total"),
    slow: sum(samples, "kilat_slow_consumers_total") ?? 0,
    limits: (sum(samples, "kilat_disconnects_total", { code: "3502" }) ?? 0) + (sum(samples, "kilat_disconnects_total", { code: "3500" }) ?? 0),
    commandSum: sum(samples, "kilat_command_duration_seconds_sum"),
    commandCount: sum(samples, "kilat_command_duration_seconds_count"),
    commandBuckets: buckets(samples, "kilat_command_duration_seconds"),
  };
  const byTransport = byLabel(samples, "kilat_transport_connections", "transport");
  const transports = Object.fromEntries(Object.entries(byTransport).filter(([name, n]) => n > 0 || name === "websocket"));
  if (!Object.keys(byTransport).length) transports.all = sum(samples, "kilat_connections");
  charts.connections.push(now, transports);
  if (previous) {
    const seconds = (now - previous.t) / 1000;
    const rate = (key) => (current[key] == null || previous[key] == null ? null : Math.max(0, current[key] - previous[key]) / seconds);
    charts.traffic.push(now, { "publications/s": rate("publications"), "deliveries/s": rate("deliveries") });
    charts.bytes.push(now, { "bytes out/s": rate("bytes") });
    const count = current.commandCount - previous.commandCount;
    const mean = count > 0 ? ((current.commandSum - previous.commandSum) / count) * 1000 : null;
    const p99 = quantile(0.99, previous.commandBuckets, current.commandBuckets);
    charts.latency.push(now, { mean, p99: p99 == null ? null : p99 * 1000 });
    charts.disconnects.push(now, { "slow consumers/s": rate("slow"), "limit disconnects/s": rate("limits") });
  }
  previous = current;
  $("overview-status").textContent = `updated ${new Date(now).toLocaleTimeString()}`;
}

const nodeCounters = new Map();

async function refreshNodes() {
  try {
    const { nodes } = await api("info");
    const body = $("nodes").tBodies[0];
    body.replaceChildren(...nodes.map((node) => row([
      node.id, node.version, duration(node.uptime_s), formatNumber(node.connections), formatNumber(node.subscriptions), node.engine ?? "–",
    ], [true])));
    const now = Date.now();
    charts.nodes.push(now, Object.fromEntries(nodes.map((node) => [node.id.slice(0, 8), node.connections])));
    // Rates from each node's counters between two reads (other nodes' figures are as fresh as
    // their last registry heartbeat, every 5 s).
    const rates = {};
    for (const node of nodes) {
      const before = nodeCounters.get(node.id);
      if (before && now > before.t) rates[node.id.slice(0, 8)] = Math.max(0, node.deliveries - before.deliveries) / ((now - before.t) / 1000);
      nodeCounters.set(node.id, { t: now, deliveries: node.deliveries });
    }
    if (Object.keys(rates).length) charts.nodeDeliveries.push(now, rates);
  } catch (error) {
    if (error.message !== "signed out") $("overview-status").textContent = `node list: ${error.message}`;
  }
}

// --- channels ---------------------------------------------------------------------------------

let channelSearchTimer = null;
$("channel-search").addEventListener("input", () => {
  clearTimeout(channelSearchTimer);
  channelSearchTimer = setTimeout(showChannels, 250);
});

async function showChannels() {
  const term = $("channel-search").value.trim();
  const pattern = term === "" ? undefined : term.includes("*") || term.includes("?") ? term : `*${term}*`;
  try {
    const result = await api("channels", pattern ? { pattern } : {});
    const counts = result.subscribers ?? {};
    const body = $("channels").tBodies[0];
    body.replaceChildren(...result.channels.map((name) => {
      const link = document.createElement("a");
      link.href = `#/channel/${encodeURIComponent(name)}`;
      link.textContent = name;
      return row([link, formatNumber(counts[name] ?? 0)], [true]);
    }));
    $("channels-note").textContent = result.channels.length ? "" : "No channel with subscribers on this node matches.";
  } catch (error) { showError(error); }
}

// --- one channel: live tail, publish, presence, history ---------------------------------------

let currentChannel = null;

function showChannel(name) {
  currentChannel = name;
  $("channel-name").textContent = name;
  $("tail").replaceChildren();
  $("publish-result").textContent = "";
  startTail(name);
  loadPresence(name);
  loadHistory(name, null);
  leavePage = stopTail;
}

let tail = null;
let paused = false;
let heldWhilePaused = [];

function startTail(channel) {
  stopTail();
  paused = false;
  heldWhilePaused = [];
  $("tail-toggle").textContent = "Pause";
  $("tail-state").textContent = "connecting…";
  tail = new EventSource(`/admin/tail?channel=${encodeURIComponent(channel)}`);
  tail.addEventListener("open", () => { $("tail-state").textContent = "live"; });
  tail.addEventListener("error", () => { $("tail-state").textContent = "reconnecting…"; });
  tail.addEventListener("message", (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    const pub = frame.push?.pub;
    if (!pub) return;
    if (paused) {
      heldWhilePaused.push(pub);
      $("tail-state").textContent = `paused: ${heldWhilePaused.length} new`;
    } else {
      addTail(pub);
    }
  });
}

function stopTail() {
  if (tail) tail.close();
  tail = null;
}

function addTail(pub) {
  const list = $("tail");
  list.prepend(publicationItem(pub, new Date().toLocaleTimeString()));
  while (list.children.length > 200) list.lastChild.remove();
}

$("tail-toggle").addEventListener("click", () => {
  paused = !paused;
  $("tail-toggle").textContent = paused ? "Resume" : "Pause";
  if (!paused) {
    for (const pub of heldWhilePaused) addTail(pub);
    heldWhilePaused = [];
    $("tail-state").textContent = "live";
  } else {
    $("tail-state").textContent = "paused";
  }
});

$("publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  let data;
  try { data = JSON.parse($("publish-data").value); } catch (error) {
    $("publish-result").textContent = `not JSON: ${error.message}`;
    return;
  }
  try {
    const result = await api("publish", { channel: currentChannel, data });
    $("publish-result").textContent = result.offset ? `published at offset ${result.offset}` : "published";
  } catch (error) { $("publish-result").textContent = error.message; }
});

async function loadPresence(channel) {
  const list = $("presence");
  try {
    const result = await api("presence", { channel });
    const clients = Object.entries(result.clients ?? {});
    list.replaceChildren(...clients.map(([client, entry]) => {
      const item = document.createElement("li");
      item.textContent = `${entry.user || "(anonymous)"} · ${client}`;
      return item;
    }));
    if (!clients.length) list.replaceChildren(note("Nobody present."));
  } catch (error) { list.replaceChildren(note(error.message)); }
}

let historyCursor = null;

async function loadHistory(channel, since) {
  const list = $("history");
  if (!since) list.replaceChildren();
  try {
    const request = { channel, limit: 20, reverse: true };
    if (since) request.since = since;
    const page = await api("history", request);
    for (const pub of page.publications ?? []) list.append(publicationItem(pub, `#${pub.offset}`));
    const last = page.publications?.at(-1);
    historyCursor = last?.offset > 1 ? { offset: last.offset, epoch: page.epoch } : null;
    $("history-more").hidden = !historyCursor || (page.publications?.length ?? 0) < 20;
    $("history-note").textContent = list.children.length ? "" : "No history (the namespace keeps none, or nothing was published).";
  } catch (error) {
    $("history-more").hidden = true;
    $("history-note").textContent = error.message;
  }
}
$("history-more").addEventListener("click", () => loadHistory(currentChannel, historyCursor));

function publicationItem(pub, meta) {
  const item = document.createElement("li");
  const label = document.createElement("span");
  label.className = "meta";
  label.textContent = meta + (pub.info?.user ? ` ${pub.info.user}` : "");
  item.append(label, JSON.stringify(pub.data));
  return item;
}

// --- connections ------------------------------------------------------------------------------

$("connections-form").addEventListener("submit", (event) => { event.preventDefault(); showConnections(); });

async function showConnections() {
  try {
    const result = await api("connections", { search: $("connections-search").value.trim(), limit: 100 });
    const body = $("connections").tBodies[0];
    body.replaceChildren(...result.connections.map((c) => {
      const button = document.createElement("button");
      button.className = "danger";
      button.textContent = "Disconnect";
      button.disabled = c.client == null;
      button.addEventListener("click", () => askDisconnect(c));
      return row([c.client ?? "(connecting)", c.user === "" ? "(anonymous)" : c.user ?? "–", c.transport, duration(c.age_s), c.subscriptions.join(", ") || "–", button], [true, true]);
    }));
    $("connections-note").textContent = `${result.connections.length} connection(s) on node ${result.node.slice(0, 8)}`;
  } catch (error) { showError(error); }
}

function askDisconnect(connection) {
  const dialog = $("disconnect-dialog");
  $("disconnect-who").textContent = connection.client;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    try {
      const result = await api("disconnect", {
        user: connection.user ?? "",
        client: connection.client,
        code: Number($("disconnect-code").value),
        reason: $("disconnect-reason").value,
      });
      $("connections-note").textContent = `disconnected ${result.connections} connection(s)`;
      setTimeout(showConnections, 300);
    } catch (error) { showError(error); }
  };
  dialog.showModal();
}

// --- configuration ----------------------------------------------------------------------------

async function showConfig() {
  try {
    const { config } = await api("config");
    $("config").textContent = JSON.stringify(config, null, 2);
  } catch (error) { showError(error); }
}

// --- helpers ----------------------------------------------------------------------------------

function row(cells, mono = []) {
  const tr = document.createElement("tr");
  cells.forEach((cell, i) => {
    const td = document.createElement("td");
    if (mono[i]) td.className = "mono";
    if (cell instanceof Node) td.append(cell); else td.textContent = String(cell);
    tr.append(td);
  });
  return tr;
}

function note(text) {
  const item = document.createElement("li");
  item.className = "dim";
  item.textContent = text;
  return item;
}

function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

// --- start ------------------------------------------------------------------------------------

const session = await fetch("/admin/session");
if (session.ok) {
  csrf = (await session.json()).csrf;
  start();
} else {
  showLogin();
}
