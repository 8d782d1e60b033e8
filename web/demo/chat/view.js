// The chat demo's DOM side: element lookups, avatars, and rendering of rooms, messages, the
// online list, the typing line, the banner and the connection pill. It reads the app state
// handed to bindView() and never talks to the server.

let state = null;
let onSelectRoom = () => {};

/** Gives the view the app state to render and the room-switch callback. */
export function bindView(appState, handlers) {
  state = appState;
  onSelectRoom = handlers.onSelectRoom;
}

const $ = (id) => document.getElementById(id);

export const els = {
  app: $('app'),
  sidebar: $('sidebar'),
  scrim: $('scrim'),
  menuButton: $('menu-button'),
  menuBadge: $('menu-badge'),
  closeSidebar: $('close-sidebar'),
  roomList: $('room-list'),
  newRoomForm: $('new-room-form'),
  newRoomInput: $('new-room-input'),
  onlineList: $('online-list'),
  onlineCount: $('online-count'),
  meAvatar: $('me-avatar'),
  meName: $('me-name'),
  changeName: $('change-name'),
  roomTitle: $('room-title'),
  roomMeta: $('room-meta'),
  conn: $('conn'),
  connLabel: $('conn-label'),
  transport: $('transport'),
  banner: $('banner'),
  bannerText: $('banner-text'),
  bannerClose: $('banner-close'),
  messages: $('messages'),
  messageList: $('message-list'),
  empty: $('empty'),
  typing: $('typing'),
  composer: $('composer'),
  input: $('message-input'),
  nameDialog: $('name-dialog'),
  nameForm: $('name-form'),
  nameInput: $('name-input'),
};

export function cleanName(s) {
  return String(s ?? '').replace(/\s+/g, ' ').trim().slice(0, 32);
}

export function hue(s) {
  let h = 0;
  for (const ch of String(s)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h % 360;
}

export function initials(name) {
  const parts = cleanName(name).split(' ').filter(Boolean);
  if (parts.length === 0) return '?';
  const first = [...parts[0]][0] ?? '?';
  const second = parts.length > 1 ? [...parts[parts.length - 1]][0] ?? '' : '';
  return (first + second).toUpperCase();
}

export function avatar(name, small = false) {
  const el = document.createElement('span');
  el.className = small ? 'avatar small' : 'avatar';
  el.setAttribute('aria-hidden', 'true');
  el.textContent = initials(name);
  el.style.background = `hsl(${hue(name)} 55% 52%)`;
  return el;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

export function shortId(client) {
  return String(client ?? '').slice(0, 4) || '????';
}

export function pluralize(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

// ---------------------------------------------------------------- rendering

export function setConn(s, transport) {
  els.conn.dataset.state = s;
  els.connLabel.textContent = s === 'connected' ? 'Online' : s === 'connecting' ? (state.everConnected ? 'Reconnecting…' : 'Connecting…') : 'Offline';
  els.transport.textContent = s === 'connected' ? transport ?? '' : '';
  document.body.dataset.connection = s;
  if (transport) document.body.dataset.transport = transport;
}

export function showBanner(kind, text, hideAfterMs) {
  clearTimeout(state.bannerTimer);
  els.banner.hidden = false;
  els.banner.dataset.state = kind;
  els.bannerText.textContent = text;
  if (hideAfterMs > 0) state.bannerTimer = setTimeout(hideBanner, hideAfterMs);
}

export function hideBanner() {
  clearTimeout(state.bannerTimer);
  els.banner.hidden = true;
  els.banner.dataset.state = 'hidden';
}

export function renderMe() {
  els.meName.textContent = state.name;
  els.meAvatar.replaceWith((els.meAvatar = Object.assign(avatar(state.name), { id: 'me-avatar' })));
}

export function renderRooms() {
  // keep keyboard focus on the same room across the redraw
  const focused = document.activeElement?.closest?.('#room-list [data-room]')?.dataset.room;
  els.roomList.replaceChildren();
  let totalUnread = 0;
  for (const room of state.rooms.values()) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'room-button';
    b.dataset.testid = `room-${room.name}`;
    b.dataset.room = room.name;
    if (room.name === state.active) b.setAttribute('aria-current', 'true');
    const hash = document.createElement('span');
    hash.className = 'hash';
    hash.setAttribute('aria-hidden', 'true');
    hash.textContent = '#';
    const label = document.createElement('span');
    label.className = 'room-name';
    label.textContent = room.name;
    b.append(hash, label);
    if (room.unread > 0 && room.name !== state.active) {
      totalUnread += room.unread;
      b.classList.add('has-unread');
      const badge = document.createElement('span');
      badge.className = 'unread';
      badge.dataset.testid = `unread-${room.name}`;
      badge.textContent = room.unread > 99 ? '99+' : String(room.unread);
      badge.setAttribute('aria-label', `${pluralize(room.unread, 'unread message', 'unread messages')}`);
      b.append(badge);
    }
    b.addEventListener('click', () => {
      onSelectRoom(room.name);
      closeSidebar();
    });
    li.append(b);
    els.roomList.append(li);
  }
  if (focused) els.roomList.querySelector(`[data-room="${CSS.escape(focused)}"]`)?.focus();
  els.menuBadge.hidden = totalUnread === 0;
  els.menuBadge.textContent = totalUnread > 99 ? '99+' : String(totalUnread);
  document.title = totalUnread > 0 ? `(${totalUnread}) kilat chat` : 'kilat chat';
}

export function renderAllMessages(room) {
  els.messages.setAttribute('aria-busy', 'true');
  els.messageList.replaceChildren();
  for (const rec of room.messages) rec.el = null;
  for (let i = 0; i < room.messages.length; i++) renderInserted(room, i, false);
  els.messages.removeAttribute('aria-busy');
  updateEmpty(room);
  scrollToBottom(true);
}

export function updateEmpty(room) {
  els.empty.hidden = room.messages.some((r) => r.kind === 'message');
}

export function isContinuation(prev, rec) {
  return prev && prev.kind === 'message' && rec.kind === 'message' && prev.author === rec.author &&
    prev.name === rec.name && rec.ts - prev.ts < 5 * 60 * 1000;
}

/** Renders room.messages[i] into the list at the right place and fixes its neighbour's grouping. */
export function renderInserted(room, i, autoscroll = true) {
  const rec = room.messages[i];
  const nearBottom = els.messages.scrollHeight - els.messages.scrollTop - els.messages.clientHeight < 80;
  const el = rec.kind === 'divider' ? dividerEl(rec) : messageEl(rec);
  rec.el = el;
  const next = room.messages.slice(i + 1).find((r) => r.el);
  els.messageList.insertBefore(el, next?.el ?? null);
  const prev = room.messages[i - 1];
  el.classList.toggle('cont', Boolean(isContinuation(prev, rec)));
  const after = room.messages[i + 1];
  if (after?.el) after.el.classList.toggle('cont', Boolean(isContinuation(rec, after)));
  updateEmpty(room);
  if (autoscroll && (nearBottom || rec.own)) scrollToBottom(true);
}

export function dividerEl(rec) {
  const li = document.createElement('li');
  li.className = rec.warn ? 'divider warn' : 'divider';
  li.dataset.testid = 'divider';
  li.setAttribute('role', 'separator');
  li.textContent = rec.text;
  return li;
}

export function messageEl(rec) {
  const li = document.createElement('li');
  li.className = 'msg';
  li.dataset.testid = 'message';
  li.dataset.key = rec.key;
  if (rec.id) li.dataset.id = rec.id;
  li.dataset.author = rec.name;
  if (rec.own) li.classList.add('own');
  li.append(avatar(rec.name, true));
  const body = document.createElement('div');
  body.className = 'msg-body';
  const head = document.createElement('div');
  head.className = 'msg-head';
  const author = document.createElement('span');
  author.className = 'msg-author';
  author.textContent = rec.name;
  if (rec.own) {
    const you = document.createElement('span');
    you.className = 'sr-only';
    you.textContent = ' (you)';
    author.append(you);
  }
  author.style.color = rec.own ? '' : `hsl(${hue(rec.name)} 50% 42%)`;
  const time = document.createElement('time');
  time.className = 'msg-time';
  const d = new Date(rec.ts);
  time.dateTime = d.toISOString();
  time.title = fullFmt.format(d);
  time.textContent = timeFmt.format(d);
  head.append(author, time);
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  bubble.dataset.testid = 'message-text';
  bubble.textContent = rec.text;
  body.append(head, bubble);
  li.append(body);
  rec.el = li;
  updateRecordEl(rec);
  return li;
}

export function updateRecordEl(rec) {
  const li = rec.el;
  if (!li) return;
  li.classList.toggle('pending', rec.pending);
  li.classList.toggle('failed', rec.failed);
  li.dataset.status = rec.failed ? 'failed' : rec.pending ? 'pending' : 'sent';
  let status = li.querySelector('.msg-status');
  if (!rec.failed && !rec.pending) {
    status?.remove();
    return;
  }
  if (!status) {
    status = document.createElement('div');
    status.className = 'msg-status';
    li.querySelector('.msg-body').append(status);
  }
  if (rec.pending) {
    // shown by the stylesheet only while the connection is down; a normal send is too quick to see
    status.classList.add('waiting');
    status.replaceChildren('Waiting for the connection…');
    return;
  }
  status.classList.remove('waiting');
  const retry = document.createElement('button');
  retry.type = 'button';
  retry.textContent = 'Retry';
  retry.addEventListener('click', () => rec.retry?.());
  status.replaceChildren('Not sent. ', retry);
}

export function renderOnline() {
  const room = state.rooms.get(state.active);
  if (!room) return;
  // one row per display name; several tabs of one person share it
  const people = new Map();
  for (const client of room.members.keys()) {
    const name = state.names.get(client) ?? `Guest ${shortId(client)}`;
    const p = people.get(name) ?? { name, count: 0, me: false };
    p.count += 1;
    if (client === state.clientId) p.me = true;
    people.set(name, p);
  }
  const list = [...people.values()].sort((a, b) => (b.me - a.me) || a.name.localeCompare(b.name));
  els.onlineList.replaceChildren(
    ...list.map((p) => {
      const li = document.createElement('li');
      li.dataset.testid = 'online-user';
      li.dataset.name = p.name;
      const name = document.createElement('span');
      name.className = 'person-name';
      name.textContent = p.name;
      li.append(avatar(p.name, true), name);
      if (p.me) {
        const you = document.createElement('span');
        you.className = 'you';
        you.textContent = 'you';
        li.append(you);
      } else if (p.count > 1) {
        const tabs = document.createElement('span');
        tabs.className = 'tabs';
        tabs.textContent = `×${p.count}`;
        tabs.title = `${p.count} connections`;
        li.append(tabs);
      }
      return li;
    }),
  );
  els.onlineCount.textContent = String(list.length);
  els.roomMeta.textContent = `${pluralize(list.length, 'person', 'people')} online`;
}

export function renderTyping() {
  const room = state.rooms.get(state.active);
  const now = Date.now();
  const names = room ? [...new Set([...room.typers.values()].filter((t) => t.until > now).map((t) => t.name))] : [];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  if (els.typing.textContent !== text) els.typing.textContent = text;
}

export function scrollToBottom(force) {
  const m = els.messages;
  if (force || m.scrollHeight - m.scrollTop - m.clientHeight < 160) m.scrollTop = m.scrollHeight;
}

// ---------------------------------------------------------------- sidebar (phones)

export function openSidebar() {
  els.app.classList.add('sidebar-open');
  els.scrim.hidden = false;
  els.menuButton.setAttribute('aria-expanded', 'true');
  els.roomList.querySelector('[aria-current="true"]')?.focus();
}

export function closeSidebar() {
  if (!els.app.classList.contains('sidebar-open')) return;
  els.app.classList.remove('sidebar-open');
  els.scrim.hidden = true;
  els.menuButton.setAttribute('aria-expanded', 'false');
}

