//! The Lua scripts. Each runs atomically in Redis, which is what makes offsets gap-free and
//! pub/sub order equal offset order (see the crate docs).
//!
//! Time inside the scripts is Redis' `TIME`, so every node judges expiry by the same clock.
//! Scripts are sent with EVALSHA; [`redis::Script`] falls back to SCRIPT LOAD on NOSCRIPT
//! (after a Redis restart or SCRIPT FLUSH).

use std::sync::LazyLock;

use redis::Script;

/// `now`: Redis time in ms.
pub(crate) const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Publish with history.
///
/// KEYS: meta, stream. ARGV: pub/sub channel, publication JSON, history size, history TTL ms,
/// meta TTL ms, epoch to use if the stream is new, `PUBLISH` or `SPUBLISH` (cluster).
/// Returns `{offset, epoch}`.
const PUBLISH: &str = r"
local meta, stream = KEYS[1], KEYS[2]
local size, ttl, meta_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  -- The stream's metadata is gone (new channel, expiry, Redis restart): a new epoch, and any
  -- leftover entries belong to the old one.
  epoch = ARGV[6]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('XADD', stream, 'MAXLEN', size, string.format('%d-0', offset),
  'd', ARGV[2], 'x', string.format('%d', now + ttl))
redis.call('PEXPIRE', stream, ttl)
redis.call('PEXPIRE', meta, meta_ttl)
redis.call(ARGV[7], ARGV[1], string.format('p%d:%s:', offset, epoch) .. ARGV[2])
return {offset, epoch}
";

/// Publish with history, keeping the publication as its key's latest value (namespaces with
/// `latest`) in the same atomic step.
///
/// KEYS: meta, stream, latest. ARGV: as [`PUBLISH`], then the key, the most keys kept.
/// Returns `{offset, epoch, kept}`: kept 1, or 0 when the hash is full of other keys.
const PUBLISH_LATEST: &str = r"
local meta, stream, latest = KEYS[1], KEYS[2], KEYS[3]
local size, ttl, meta_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local key, max_keys = ARGV[8], tonumber(ARGV[9])
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', stream, latest)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('XADD', stream, 'MAXLEN', size, string.format('%d-0', offset),
  'd', ARGV[2], 'x', string.format('%d', now + ttl))
local kept = 1
if redis.call('HEXISTS', latest, key) == 0 and redis.call('HLEN', latest) >= max_keys then
  -- Full: make room from expired values first.
  local all = redis.call('HGETALL', latest)
  for i = 1, #all, 2 do
    local x = string.match(all[i + 1], '^%d+\n(%d+)\n')
    if not x or tonumber(x) <= now then redis.call('HDEL', latest, all[i]) end
  end
  if redis.call('HLEN', latest) >= max_keys then kept = 0 end
end
if kept == 1 then
  redis.call('HSET', latest, key, string.format('%d\n%d\n', offset, now + ttl) .. ARGV[2])
  redis.call('PEXPIRE', latest, meta_ttl)
end
redis.call('PEXPIRE', stream, ttl)
redis.call('PEXPIRE', meta, meta_ttl)
redis.call(ARGV[7], ARGV[1], string.format('p%d:%s:', offset, epoch) .. ARGV[2])
return {offset, epoch, kept}
";

/// Latest values read.
///
/// KEYS: meta, stream, latest. ARGV: epoch to use if the stream is new, meta TTL ms.
/// Returns `{epoch, top, {offset1, json1, offset2, json2, ...}}` (unordered).
const LATEST: &str = r"
local meta, stream, latest = KEYS[1], KEYS[2], KEYS[3]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', stream, latest)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', meta, tonumber(ARGV[2]))
end
local top = tonumber(redis.call('HGET', meta, 'o'))
local out = {}
local all = redis.call('HGETALL', latest)
for i = 1, #all, 2 do
  local o, x, d = string.match(all[i + 1], '^(%d+)\n(%d+)\n(.*)$')
  if o and tonumber(x) > now then
    out[#out + 1] = o
    out[#out + 1] = d
  else
    redis.call('HDEL', latest, all[i])
  end
end
return {epoch, top, out}
";

/// History read.
///
/// KEYS: meta, stream. ARGV: epoch to use if the stream is new, meta TTL ms, direction
/// (`f` or `r`), since (`""` for none), limit (`-1` for all).
/// Returns `{epoch, top, {id1, json1, id2, json2, ...}}`.
const HISTORY: &str = r"
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', meta, tonumber(ARGV[2]))
end
local top = tonumber(redis.call('HGET', meta, 'o'))
-- Drop the expired head of the stream (entries expire in offset order).
while true do
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
  local cut, live = nil, false
  for _, e in ipairs(head) do
    if tonumber(e[2][4]) <= now then cut = e[1] else live = true break end
  end
  if cut then
    local o = tonumber(string.match(cut, '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', string.format('%d-0', o + 1))
  end
  if live or not cut then break end
end
local reverse, since, limit = ARGV[3] == 'r', ARGV[4], tonumber(ARGV[5])
local out = {}
if limit == 0 then return {epoch, top, out} end
local entries
local count = {}
if limit > 0 then count = {'COUNT', limit} end
if since == '' then
  if reverse or limit > 0 then
    entries = redis.call('XREVRANGE', stream, '+', '-', unpack(count))
  else
    entries = redis.call('XRANGE', stream, '-', '+')
  end
else
  local s = tonumber(since)
  if reverse then
    if s <= 1 then return {epoch, top, out} end
    entries = redis.call('XREVRANGE', stream, string.format('%d', s - 1), '-', unpack(count))
  else
    entries = redis.call('XRANGE', stream, string.format('%d', s + 1), '+', unpack(count))
  end
end
-- The newest `limit` read newest first but wanted oldest first: flip.
local flip = since == '' and not reverse and limit > 0
local n = #entries
for i = 1, n do
  local e = entries[flip and (n + 1 - i) or i]
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][2]
end
return {epoch, top, out}
";

/// Drop expired presence entries (and, with a third key, their users' counts).
///
/// KEYS: presence hash, expiry zset, users hash (channels only: user -> entries).
pub(crate) const PRESENCE_CLEAN: &str = r"
local h, z, u = KEYS[1], KEYS[2], KEYS[3]
local function forget_user(v)
  if not u or not v then return end
  local user = cjson.decode(v)['user']
  if redis.call('HINCRBY', u, user, -1) <= 0 then redis.call('HDEL', u, user) end
end
local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
if u then
  for _, id in ipairs(dead) do forget_user(redis.call('HGET', h, id)) end
end
for i = 1, #dead, 1000 do
  redis.call('HDEL', h, unpack(dead, i, math.min(i + 999, #dead)))
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
";

/// Add or refresh a presence entry. KEYS: hash, zset, users hash (channels only), the owning
/// node's client set (when the engine has an owner, `owners.rs`). ARGV: client, info JSON,
/// TTL ms, user (channels only).
const PRESENCE_ADD: &str = r"
local ttl = tonumber(ARGV[3])
local old = u and redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if KEYS[4] then redis.call('SADD', KEYS[4], ARGV[1]) end
if u then
  forget_user(old or nil)
  redis.call('HINCRBY', u, ARGV[4], 1)
end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
-- Keys outlive their longest entry; a dead node's entries vanish with them at the latest.
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
return 1
";

/// Refresh entries held with the same info, in one call (a node's refreshes of one channel,
/// gathered over a short window). KEYS: as [`PRESENCE_ADD`]. ARGV: TTL ms, then client and info
/// JSON pairs. Returns the 0-based indices of the pairs not held as given (left, expired, info
/// changed, or lost with Redis's data): the caller re-adds those one by one. Never creates an
/// entry, so a refresh that loses a race with a leave cannot bring it back.
const PRESENCE_TOUCH: &str = r"
local ttl = tonumber(ARGV[1])
local absent = {}
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[2], 'XX', now + ttl, ARGV[i])
  else
    absent[#absent + 1] = (i - 2) / 2
  end
end
if #absent * 2 < #ARGV - 1 then
  for _, k in ipairs(KEYS) do
    if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
  end
end
return absent
";

/// Remove an entry. KEYS: hash, zset, users hash (channels only), the owning node's client set
/// (when the engine has an owner). ARGV: client.
const PRESENCE_REMOVE: &str = r"
if u then forget_user(redis.call('HGET', KEYS[1], ARGV[1]) or nil) end
if KEYS[4] then redis.call('SREM', KEYS[4], ARGV[1]) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
";

/// Unexpired entries. KEYS: hash, zset. Returns the ClientInfo JSONs.
const PRESENCE_LIST: &str = r"
return redis.call('HVALS', KEYS[1])
";

/// One page of entries. KEYS: hash, zset, users hash. ARGV: HSCAN cursor, most entries, most
/// bytes (of entry JSON) beyond the first batch. Returns `{next cursor ("0": done), entries}`.
///
/// Whole HSCAN batches only (a batch cannot be resumed half-way): a batch that would pass the
/// entry or byte limit is left for the next page, which starts at its cursor. HSCAN returns
/// every entry present throughout the scan, once while the hash only grows (its cursor walks
/// buckets in reverse-bit order, which growing keeps); a hash that shrinks meanwhile may repeat
/// some. A compact (listpack) hash, at most 512 entries of at most 64 bytes by Redis's defaults
/// (32 KiB), comes whole in one batch.
const PRESENCE_PAGE: &str = r"
local cursor, limit, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out, bytes = {}, 0
repeat
  local r = redis.call('HSCAN', h, cursor, 'COUNT', math.min(limit - #out, 100))
  local items, size = r[2], 0
  for i = 2, #items, 2 do size = size + #items[i] end
  if #out > 0 and (#out + #items / 2 > limit or bytes + size > budget) then break end
  for i = 2, #items, 2 do out[#out + 1] = items[i] end
  bytes = bytes + size
  cursor = r[1]
until cursor == '0' or #out >= limit
return {cursor, out}
";

/// Counts. KEYS: hash, zset, users hash. Returns `{clients, users}`: two lengths, O(1) after
/// the expired entries are dropped. Without the users hash, a scan of the entries.
const PRESENCE_STATS: &str = r"
if u then return {redis.call('HLEN', h), redis.call('HLEN', u)} end
local users, n_users, n = {}, 0, 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  n = n + 1
  local u = cjson.decode(v)['user']
  if not users[u] then users[u] = true n_users = n_users + 1 end
end
return {n, n_users}
";

fn script(parts: &[&str]) -> Script {
    Script::new(&parts.concat())
}

/// See [`PUBLISH`].
pub(crate) static PUBLISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[NOW, PUBLISH]));
/// See [`PUBLISH_LATEST`].
pub(crate) static PUBLISH_LATEST_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[NOW, PUBLISH_LATEST]));
/// See [`LATEST`].
pub(crate) static LATEST_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[NOW, LATEST]));
/// See [`HISTORY`].
pub(crate) static HISTORY_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(&[NOW, HISTORY]));
/// See [`PRESENCE_ADD`].
pub(crate) static PRESENCE_ADD_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[NOW, PRESENCE_CLEAN, PRESENCE_ADD]));
/// See [`PRESENCE_TOUCH`].
pub(crate) static PRESENCE_TOUCH_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[NOW, PRESENCE_CLEAN, PRESENCE_TOUCH]));
/// See [`PRESENCE_REMOVE`].
pub(crate) static PRESENCE_REMOVE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[NOW, PRESENCE_CLEAN, PRESENCE_REMOVE]));
/// See [`PRESENCE_LIST`].
pub(crate) static PRESENCE_LIST_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[NOW, PRESENCE_CLEAN, PRESENCE_LIST]));
/// See [`PRESENCE_PAGE`].
pub(crate) static PRESENCE_PAGE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[NOW, PRESENCE_CLEAN, PRESENCE_PAGE]));
/// See [`PRESENCE_STATS`].
pub(crate) static PRESENCE_STATS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| script(&[NOW, PRESENCE_CLEAN, PRESENCE_STATS]));
