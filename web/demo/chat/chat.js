// kilat chat demo: rooms, history, presence, typing, unread counters and honest recovery,
// on top of the JavaScript SDK served by the same server at /sdk/kilat.js.
//
// Channels per room:
//   chat:<room>  the messages, {type: "message", id, text, name, author, client, ts}; history
//                and recovery on, presence and join/leave on (the online list). `author` is a
//                random id kept in localStorage: it marks our own messages across reloads and
//                reconnects, which change the client id.
//   meta:<room>  ephemeral events, never recovered: {type: "typing", name, client} and
//                {type: "hello", name, client, ask}. Dev connections are anonymous (presence
//                `user` is ""), so each client announces its display name with a hello after
//                subscribing (ask: true) and the others answer with their own (ask: false).
//
// URL parameters: ?name=Ana (skip the prompt), ?transports=sse or ?transports=http_stream
// (comma-separated list, forces the transports tried), ?debug=1 (SDK frame log).
// The hash picks the room: /demo/chat#random.

import { Kilat } from '/sdk/kilat.js';
import {
  bindView,
  cleanName,
  closeSidebar,
  els,
  hideBanner,
  openSidebar,
  pluralize,
  renderAllMessages,
  renderInserted,
  renderMe,
  renderOnline,
  renderRooms,
  renderTyping,
  scrollToBottom,
  setConn,
  shortId,
  showBanner,
  updateRecordEl,
} from '/demo/chat/view.js';

const DEFAULT_ROOMS = ['general', 'random', 'help'];
const ALL_TRANSPORTS = ['websocket', 'sse', 'http_stream'];
const ROOM_RE = /^[A-Za-z0-9_-]{1,32}$/;
const TYPING_TTL_MS = 3000;
const TYPING_SEND_EVERY_MS = 1500;
const HISTORY_LIMIT = 100;
const STORAGE_NAME = 'kilat-chat:name';
const STORAGE_ROOMS = 'kilat-chat:rooms';
const STORAGE_AUTHOR = 'kilat-chat:author';

const params = new URLSearchParams(location.search);

// ---------------------------------------------------------------- small helpers

function storageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    /* private mode: keep it in memory only */
  }
}

function authorId() {
  let id = storageGet(STORAGE_AUTHOR);
  if (!id) {
    id = randomId();
    storageSet(STORAGE_AUTHOR, id);
  }
  return id;
}

function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------- state

const state = {
  name: cleanName(params.get('name')) || cleanName(storageGet(STORAGE_NAME)),
  /** this browser's author id: marks our own messages across reloads and reconnects (client ids change) */
  author: authorId(),
  /** @type {Map<string, Room>} */
  rooms: new Map(),
  active: null,
  clientId: null,
  /** client id -> display name, learned from hellos, messages, typing events and presence info */
  names: new Map(),
  everConnected: false,
  reconnecting: false,
  /** set while the subscriptions recover after a reconnect: which rooms still have to report */
  recovery: null,
  bannerTimer: null,
  lastTypingSent: 0,
  arrival: 0,
  /** `recovered` | `unrecovered` | `none`: the outcome of the last reconnect (read by tests) */
  lastRecovery: 'none',
  lastRecoveredCount: 0,
};

bindView(state, { onSelectRoom: (name) => switchRoom(name) });

class Room {
  constructor(name) {
    this.name = name;
    this.chat = null;
    /** client id -> info: the chat subscription's member map (set with the subscription) */
    this.members = new Map();
    this.meta = null;
    /** message records in display order */
    this.messages = [];
    /** message keys already shown (de-duplication across recovery, history and own echoes) */
    this.keys = new Map();
    /** bumped when the stream was lost (new epoch): orders old messages before new ones */
    this.era = 0;
    this.unread = 0;
    /** client id -> {name, until} */
    this.typers = new Map();
    this.historyLoaded = false;
    this.historyLoading = false;
    /** last offset delivered on chat:<room>, to count recovered messages */
    this.offset = null;
  }
}

// ---------------------------------------------------------------- client

const forced = (params.get('transports') ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => ALL_TRANSPORTS.includes(s));

let client = null;

function start() {
  renderMe();
  client = new Kilat(location.origin, {
    name: 'kilat-chat-demo',
    data: { name: state.name },
    transports: forced.length > 0 ? forced : ALL_TRANSPORTS,
    minReconnectDelay: 300,
    maxReconnectDelay: 5000,
    debug: params.get('debug') === '1',
  });

  client.on('connecting', (ctx) => {
    setConn('connecting');
    if (state.everConnected) {
      state.reconnecting = true;
      state.recovery = null;
      showBanner('reconnecting', 'Reconnecting…', 0);
      console.info('[chat] reconnecting', ctx.code, ctx.reason);
    }
  });

  client.on('connected', (ctx) => {
    state.clientId = ctx.client;
    state.names.set(ctx.client, state.name);
    setConn('connected', ctx.transport);
    if (state.reconnecting) {
      state.reconnecting = false;
      state.recovery = { pending: new Set(state.rooms.keys()), recovered: 0, lost: false };
      // a subscription that never comes back must not leave the banner hanging
      state.recovery.timer = setTimeout(finishRecovery, 10000);
      if (state.recovery.pending.size === 0) finishRecovery();
    }
    state.everConnected = true;
  });

  client.on('disconnected', (ctx) => {
    setConn('disconnected');
    showBanner('disconnected', `Disconnected: ${ctx.reason || 'connection closed'}. Reload the page to try again.`, 0);
  });

  client.on('error', (ctx) => {
    console.warn('[chat] client error', ctx.type, ctx.error?.message ?? ctx.error);
  });

  const rooms = new Set([...DEFAULT_ROOMS, ...savedRooms()]);
  const fromHash = roomFromHash();
  if (fromHash) rooms.add(fromHash);
  for (const r of rooms) addRoom(r, false);
  saveRooms();
  switchRoom(fromHash ?? DEFAULT_ROOMS[0]);
  client.connect();
}

function savedRooms() {
  try {
    const list = JSON.parse(storageGet(STORAGE_ROOMS) ?? '[]');
    return Array.isArray(list) ? list.filter((r) => typeof r === 'string' && ROOM_RE.test(r)) : [];
  } catch {
    return [];
  }
}

function saveRooms() {
  storageSet(STORAGE_ROOMS, JSON.stringify([...state.rooms.keys()].filter((r) => !DEFAULT_ROOMS.includes(r))));
}

function roomFromHash() {
  const h = decodeURIComponent(location.hash.replace(/^#/, ''));
  return ROOM_RE.test(h) ? h : null;
}

/** Creates the room's two subscriptions (the SDK sends them once connected). */
function addRoom(name, save = true) {
  if (state.rooms.has(name)) return state.rooms.get(name);
  const room = new Room(name);
  state.rooms.set(name, room);

  room.chat = client.newSubscription(`chat:${name}`, { joinLeave: true });
  // the online list: the SDK keeps it from the server's presence diffs (batched joins and
  // leaves) after syncMembers() loaded who was there
  room.members = room.chat.members;
  room.chat.on('subscribed', (ctx) => onChatSubscribed(room, ctx));
  room.chat.on('publication', (ctx) => onChatPublication(room, ctx));
  room.chat.on('join', (ctx) => onJoin(room, ctx.info));
  room.chat.on('leave', (ctx) => onLeave(room, ctx.info));
  room.chat.on('error', (ctx) => console.warn('[chat] subscription error', ctx.channel, ctx.error?.message));
  room.chat.on('unsubscribed', (ctx) => {
    if (ctx.code !== 0) console.warn('[chat] unsubscribed', ctx.channel, ctx.code, ctx.reason);
  });

  room.meta = client.newSubscription(`meta:${name}`, { recoverable: false });
  room.meta.on('subscribed', () => sendHello(room, true));
  room.meta.on('publication', (ctx) => onMetaPublication(room, ctx));

  room.chat.subscribe();
  room.meta.subscribe();
  if (state.recovery) state.recovery.pending.delete(name);
  renderRooms();
  if (save) saveRooms();
  return room;
}

// ---------------------------------------------------------------- messages

function messageKey(data, ctx, room) {
  if (data && typeof data.id === 'string' && data.id) return `id:${data.id}`;
  return `pos:${room.era}:${ctx.offset ?? `arrival-${state.arrival}`}`;
}

function onChatSubscribed(room, ctx) {
  const previous = room.offset;
  room.offset = ctx.offset;
  if (!room.historyLoaded) {
    loadHistory(room);
  } else if (ctx.wasRecovering && !ctx.recovered) {
    // the stream is not the one we knew (server restart, history expired): say so, then load
    // whatever the server still has, which the key de-duplication merges in
    room.era += 1;
    insertRecord(room, { kind: 'divider', warn: true, text: 'Some messages could not be recovered', era: room.era, offset: -1 });
    loadHistory(room);
  }
  loadPresence(room);

  const rec = state.recovery;
  if (rec && rec.pending.has(room.name)) {
    rec.pending.delete(room.name);
    if (ctx.wasRecovering) {
      if (ctx.recovered) {
        if (typeof previous === 'number' && typeof ctx.offset === 'number') rec.recovered += Math.max(0, ctx.offset - previous);
      } else {
        rec.lost = true;
      }
    }
    if (rec.pending.size === 0) queueMicrotask(finishRecovery);
  }
}

function finishRecovery() {
  const rec = state.recovery;
  if (!rec) return;
  clearTimeout(rec.timer);
  state.recovery = null;
  if (rec.lost || rec.pending.size > 0) {
    state.lastRecovery = 'unrecovered';
    state.lastRecoveredCount = rec.recovered;
    showBanner('unrecovered', 'Reconnected; some messages could not be recovered', 8000);
  } else {
    state.lastRecovery = 'recovered';
    state.lastRecoveredCount = rec.recovered;
    const n = rec.recovered;
    showBanner('recovered', n > 0 ? `Back online, ${pluralize(n, 'missed message', 'missed messages')} recovered` : 'Back online, no messages missed', 4000);
  }
  document.body.dataset.lastRecovery = state.lastRecovery;
  document.body.dataset.recoveredCount = String(state.lastRecoveredCount);
}

async function loadHistory(room) {
  if (room.historyLoading) return;
  room.historyLoading = true;
  try {
    const res = await room.chat.history({ limit: HISTORY_LIMIT });
    for (const pub of res.publications ?? []) {
      addMessage(room, { data: pub.data, offset: pub.offset, info: pub.info }, { fromHistory: true });
    }
    room.historyLoaded = true;
    if (room.name === state.active) {
      els.messages.dataset.historyLoaded = 'true';
      scrollToBottom(true);
    }
  } catch (err) {
    // most often the connection dropped meanwhile: try again once subscribed again
    console.warn('[chat] history failed', room.name, err?.message);
    setTimeout(() => {
      if (!room.historyLoaded && room.chat.state === 'subscribed') loadHistory(room);
    }, 1500);
  } finally {
    room.historyLoading = false;
  }
}

function onChatPublication(room, ctx) {
  if (typeof ctx.offset === 'number') room.offset = ctx.offset;
  addMessage(room, ctx, { fromHistory: false });
}

/**
 * Adds a publication of chat:<room> to the room (once), updating the view and counters.
 * @param {Room} room
 * @param {{data: any, offset?: number, info?: {client: string}}} ctx
 */
function addMessage(room, ctx, { fromHistory }) {
  const data = ctx.data;
  if (!data || typeof data !== 'object' || data.type !== 'message' || typeof data.text !== 'string') return;
  const key = messageKey(data, ctx, room);
  const sender = typeof data.client === 'string' ? data.client : ctx.info?.client;
  const name = cleanName(data.name) || (sender ? `Guest ${shortId(sender)}` : 'Someone');
  if (sender && data.name) learnName(sender, name);
  if (sender) clearTyper(room, sender);

  const existing = room.keys.get(key);
  if (existing) {
    // our own message coming back from the server: confirm it and give it its position
    if (existing.pending || existing.failed || existing.offset == null) {
      existing.pending = false;
      existing.failed = false;
      existing.offset = ctx.offset;
      existing.era = room.era;
      reposition(room, existing);
    }
    return;
  }
  const author = typeof data.author === 'string' ? data.author : sender;
  const own = author === state.author || (sender != null && sender === state.clientId);
  const rec = {
    kind: 'message',
    key,
    id: data.id,
    text: data.text.slice(0, 4000),
    name,
    sender,
    author,
    own,
    ts: typeof data.ts === 'number' ? data.ts : Date.now(),
    offset: ctx.offset,
    era: room.era,
    arrival: ++state.arrival,
    pending: false,
    failed: false,
  };
  room.keys.set(key, rec);
  insertRecord(room, rec);
  if (!fromHistory && !rec.own && room.name !== state.active) {
    room.unread += 1;
    renderRooms();
  }
}


function compareRecords(a, b) {
  if (a.era !== b.era) return a.era - b.era;
  const ao = typeof a.offset === 'number' ? a.offset : Number.MAX_SAFE_INTEGER;
  const bo = typeof b.offset === 'number' ? b.offset : Number.MAX_SAFE_INTEGER;
  if (ao !== bo) return ao - bo;
  return (a.arrival ?? 0) - (b.arrival ?? 0);
}

function insertRecord(room, rec) {
  rec.arrival ??= ++state.arrival;
  let i = room.messages.length;
  while (i > 0 && compareRecords(room.messages[i - 1], rec) > 0) i--;
  room.messages.splice(i, 0, rec);
  if (room.name === state.active) renderInserted(room, i);
}

function reposition(room, rec) {
  const i = room.messages.indexOf(rec);
  if (i >= 0) room.messages.splice(i, 1);
  if (room.name === state.active && rec.el) rec.el.remove();
  insertRecord(room, rec);
}

// ---------------------------------------------------------------- sending

async function sendMessage(text) {
  const room = state.rooms.get(state.active);
  if (!room) return;
  const data = {
    type: 'message', id: randomId(), text, name: state.name, author: state.author, client: state.clientId, ts: Date.now(),
  };
  const key = `id:${data.id}`;
  const rec = {
    kind: 'message', key, id: data.id, text, name: state.name, sender: state.clientId, author: state.author, own: true,
    ts: data.ts, offset: undefined, era: room.era, arrival: ++state.arrival, pending: true, failed: false,
  };
  room.keys.set(key, rec);
  insertRecord(room, rec);
  scrollToBottom(true);
  await publishRecord(room, rec, data);
}

async function publishRecord(room, rec, data) {
  rec.pending = true;
  rec.failed = false;
  updateRecordEl(rec);
  try {
    await room.chat.publish(data);
    // the echo on the subscription normally confirms first; if it is late, the publish reply does
    if (rec.pending) {
      rec.pending = false;
      updateRecordEl(rec);
    }
  } catch (err) {
    if (!rec.pending) return;
    rec.pending = false;
    rec.failed = true;
    rec.retry = () => publishRecord(room, rec, { ...data, client: state.clientId });
    console.warn('[chat] publish failed', err?.code, err?.message);
    updateRecordEl(rec);
  }
}

function sendTyping() {
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  const room = state.rooms.get(state.active);
  if (!room || client.state !== 'connected' || room.meta.state !== 'subscribed') return;
  state.lastTypingSent = now;
  room.meta.publish({ type: 'typing', name: state.name, client: state.clientId }).catch(() => {});
}

function sendHello(room, ask) {
  if (!state.clientId) return;
  room.meta.publish({ type: 'hello', name: state.name, client: state.clientId, ask }).catch(() => {});
}

// ---------------------------------------------------------------- meta: hello and typing

function onMetaPublication(room, ctx) {
  const d = ctx.data;
  if (!d || typeof d !== 'object') return;
  const sender = typeof d.client === 'string' ? d.client : ctx.info?.client;
  if (!sender || sender === state.clientId) return;
  const name = cleanName(d.name);
  if (name) learnName(sender, name);
  if (d.type === 'hello') {
    if (!room.members.has(sender)) {
      room.members.set(sender, { client: sender });
      if (room.name === state.active) renderOnline();
    }
    // answer a newcomer with our own name, a little later so a crowd does not answer at once
    if (d.ask === true) setTimeout(() => sendHello(room, false), Math.random() * 250);
  } else if (d.type === 'typing' && name) {
    room.typers.set(sender, { name, until: Date.now() + TYPING_TTL_MS });
    if (room.name === state.active) renderTyping();
    scheduleTypingSweep();
  }
}

function clearTyper(room, client) {
  if (room.typers.delete(client) && room.name === state.active) renderTyping();
}

let typingSweep = null;
function scheduleTypingSweep() {
  if (typingSweep) return;
  typingSweep = setTimeout(() => {
    typingSweep = null;
    const now = Date.now();
    let left = false;
    for (const room of state.rooms.values()) {
      for (const [c, t] of room.typers) {
        if (t.until <= now) room.typers.delete(c);
        else left = true;
      }
    }
    renderTyping();
    if (left) scheduleTypingSweep();
  }, 500);
}

// ---------------------------------------------------------------- presence

/** Remembers a client's display name; the online list is redrawn when it is news. */
function learnName(client, name) {
  if (state.names.get(client) === name) return;
  state.names.set(client, name);
  renderOnline();
}

function nameFromInfo(info) {
  // if the server passes connection data (or token info) through, use the name from it
  const i = info?.info ?? info?.data;
  if (i && typeof i === 'object' && typeof i.name === 'string') return cleanName(i.name);
  return '';
}

async function loadPresence(room) {
  try {
    // joins and leaves that arrive while the list loads are newer and win (the SDK sees to it)
    const members = await room.chat.syncMembers();
    for (const [client, info] of members) {
      const n = nameFromInfo(info);
      if (n) learnName(client, n);
    }
    if (room.name === state.active) renderOnline();
  } catch (err) {
    console.warn('[chat] presence failed', room.name, err?.message);
  }
}

function onJoin(room, info) {
  if (!info?.client) return;
  const n = nameFromInfo(info);
  if (n) learnName(info.client, n);
  if (room.name === state.active) renderOnline();
}

function onLeave(room, info) {
  if (!info?.client) return;
  clearTyper(room, info.client);
  if (room.name === state.active) renderOnline();
}

function switchRoom(name) {
  const room = state.rooms.get(name) ?? addRoom(name);
  state.active = room.name;
  room.unread = 0;
  if (location.hash !== `#${room.name}`) history.replaceState(null, '', `${location.pathname}${location.search}#${room.name}`);
  els.roomTitle.textContent = `#${room.name}`;
  els.input.placeholder = `Message #${room.name}`;
  els.messages.setAttribute('aria-label', `Messages in #${room.name}`);
  els.messages.dataset.room = room.name;
  els.messages.dataset.historyLoaded = String(room.historyLoaded);
  renderRooms();
  renderAllMessages(room);
  renderOnline();
  renderTyping();
}

// ---------------------------------------------------------------- events

els.menuButton.addEventListener('click', openSidebar);
els.closeSidebar.addEventListener('click', closeSidebar);
els.scrim.addEventListener('click', closeSidebar);
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') closeSidebar();
});
els.bannerClose.addEventListener('click', hideBanner);

els.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = els.input.value.trim();
  if (!text) return;
  els.input.value = '';
  autosize();
  state.lastTypingSent = 0; // the next keystroke starts a new typing notice
  sendMessage(text);
});

els.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    els.composer.requestSubmit();
  }
});

function autosize() {
  els.input.style.height = 'auto';
  els.input.style.height = `${Math.min(els.input.scrollHeight, 160)}px`;
}

els.input.addEventListener('input', () => {
  autosize();
  if (els.input.value.trim()) sendTyping();
});

els.newRoomForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const name = els.newRoomInput.value.trim();
  if (!ROOM_RE.test(name)) {
    els.newRoomInput.reportValidity();
    return;
  }
  els.newRoomInput.value = '';
  switchRoom(name);
  closeSidebar();
  els.input.focus();
});

window.addEventListener('hashchange', () => {
  const r = roomFromHash();
  if (r && r !== state.active) switchRoom(r);
});

els.changeName.addEventListener('click', () => {
  els.nameInput.value = state.name;
  els.nameDialog.showModal();
});

els.nameForm.addEventListener('submit', (e) => {
  const name = cleanName(els.nameInput.value);
  if (!name) {
    e.preventDefault();
    return;
  }
  storageSet(STORAGE_NAME, name);
  if (!client) {
    state.name = name;
    start();
    return;
  }
  // the name also travels in the connect data: reconnect with it by reloading
  const url = new URL(location.href);
  url.searchParams.delete('name');
  location.replace(url);
});

els.nameDialog.addEventListener('cancel', (e) => {
  if (!client) e.preventDefault(); // a name is needed before the first connect
});

// for debugging from the console (and read by tests): the client and the app state
window.kilatChat = {
  get client() {
    return client;
  },
  state,
};

if (state.name) {
  start();
} else {
  const r = roomFromHash() ?? DEFAULT_ROOMS[0];
  els.roomTitle.textContent = `#${r}`;
  els.input.placeholder = `Message #${r}`;
  els.nameDialog.showModal();
  els.nameInput.focus();
}
