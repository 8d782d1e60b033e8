//! Which node owns each presence entry, so the entries of a node that died are removed with a
//! leave each, within a bounded time, instead of lingering silently until their TTL.
//!
//! Keys, besides the channel's presence keys (`keys.rs`):
//! - `{<prefix>:ch:<channel>}:presence:node:<node id>`: a set of the client ids that node added
//!   to the channel's presence; in the channel's slot, so the add and remove scripts keep it
//!   atomically with the entry (and it expires with the channel's other presence keys).
//! - `{<prefix>:nodes}:presence`: a hash of the nodes that own presence entries, each with when
//!   (Redis time, ms) it last registered a channel.
//! - `{<prefix>:nodes}:presence:<node id>`: the channels where that node has added entries.
//!   Registered before the node's first add in a channel (cached in the node, renewed every
//!   [`REREGISTER`]), so a channel with an entry of the node is always in the node's set.
//!
//! Every node runs [`RedisEngine::reap_dead_nodes`] with its heartbeat. A node that owns
//! entries but has no live entry in the node registry (its heartbeats stopped: killed, lost
//! its network) and registered no channel for [`GRACE`] (so a node that is just starting, whose
//! first heartbeat may land after its first entries, is left alone) is claimed by one survivor (`SET NX` with a TTL), which removes its entries
//! channel by channel, publishes a leave for each removed entry (every node then sends its
//! subscribers the leave diffs), and forgets the node. A node that stops gracefully has no
//! entries left, so its sets are forgotten without leaves. A node that was judged dead wrongly
//! (it was alive but could not heartbeat for the registry TTL) loses its entries and its
//! members' leaves go out; its sessions' next refresh adds them again, without a join.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kilat_protocol::ClientInfo;
use redis::Script;

use crate::codec;
use crate::engine::RedisEngine;
use crate::error::{RedisEngineError, bounded};
use crate::scripts::{NOW, PRESENCE_CLEAN};

/// How long a node trusts its cached registration of a channel before registering it again
/// (after it was wrongly judged dead and forgotten, for example).
const REREGISTER: Duration = Duration::from_secs(30);
/// Most channels a node remembers as registered (cleared when full; registering is
/// idempotent, so forgetting only costs a command).
const REGISTERED_MAX: usize = 100_000;
/// Entries removed per script call while reaping (keeps each call short on a big channel).
const REAP_BATCH: usize = 1000;
/// How long after its last channel registration a node missing from the registry is left
/// alone: the registry's TTL (three heartbeats), so a starting node is never taken for dead.
const GRACE: Duration = Duration::from_secs(15);
/// How long a survivor's claim on a dead node lasts: another survivor retries after it if
/// this one died while reaping.
const CLAIM_TTL: Duration = Duration::from_secs(60);

/// Registers a channel for a node. KEYS: owners hash, the node's channels set. ARGV: node id,
/// channel.
const REGISTER: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('SADD', KEYS[2], ARGV[2])
return 1
";

/// Nodes that own presence but have no live registry entry and registered nothing for the
/// grace period. KEYS: registry hash, registry expiry zset, owners hash. ARGV: the caller's
/// node id, grace ms.
const DEAD: &str = r"
local out = {}
local owners = redis.call('HGETALL', KEYS[3])
for i = 1, #owners, 2 do
  local id, at = owners[i], tonumber(owners[i + 1])
  if id ~= ARGV[1] and now - at > tonumber(ARGV[2]) then
    local exp = redis.call('ZSCORE', KEYS[2], id)
    if not exp or tonumber(exp) <= now or redis.call('HEXISTS', KEYS[1], id) == 0 then
      out[#out + 1] = id
    end
  end
end
return out
";

/// Removes up to ARGV[1] entries owned by one node from one channel. KEYS: presence hash,
/// expiry zset, users hash, the node's client set. Returns the removed entries' JSON (entries
/// that expired meanwhile are not returned: their leave is not owed).
const REAP: &str = r"
local gone = {}
for _, id in ipairs(redis.call('SPOP', KEYS[4], tonumber(ARGV[1]))) do
  local v = redis.call('HGET', h, id)
  if v then
    forget_user(v)
    redis.call('HDEL', h, id)
    redis.call('ZREM', z, id)
    gone[#gone + 1] = v
  end
end
return gone
";

static REGISTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[NOW, REGISTER].concat()));
static DEAD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[NOW, DEAD].concat()));
static REAP_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&[NOW, PRESENCE_CLEAN, REAP].concat()));

/// This engine's node, once the server names it ([`RedisEngine::set_presence_owner`]).
#[derive(Debug, Default)]
pub(crate) struct OwnerSlot(OnceLock<Owner>);

#[derive(Debug)]
struct Owner {
    node: String,
    /// Channels registered for this node, with when.
    registered: Mutex<HashMap<String, Instant>>,
}

impl OwnerSlot {
    /// The owning node's id, when set.
    pub(crate) fn node(&self) -> Option<&str> {
        self.0.get().map(|o| o.node.as_str())
    }
}

/// The set of client ids `node` owns in the channel whose presence hash is `presence`.
pub(crate) fn owned_key(presence: &str, node: &str) -> String {
    format!("{presence}:node:{node}")
}

impl RedisEngine {
    fn owner_keys(&self, node: &str) -> (String, String) {
        let owners = format!("{{{}:nodes}}:presence", self.config().key_prefix);
        let channels = format!("{owners}:{node}");
        (owners, channels)
    }

    /// Names the node whose sessions add presence through this engine. From then on every
    /// presence entry is owned by that node, so [`RedisEngine::reap_dead_nodes`] on another
    /// node can remove it if this one dies. Set once; later calls are ignored.
    pub fn set_presence_owner(&self, node_id: &str) {
        let _ = self.owners.0.set(Owner {
            node: node_id.to_owned(),
            registered: Mutex::new(HashMap::new()),
        });
    }

    /// Registers `channel` for this node unless done within [`REREGISTER`].
    pub(crate) async fn register_owned_channel(
        &self,
        channel: &str,
    ) -> Result<(), RedisEngineError> {
        let Some(owner) = self.owners.0.get() else {
            return Ok(());
        };
        let now = Instant::now();
        {
            let registered = owner.registered.lock().unwrap_or_else(|e| e.into_inner());
            if registered
                .get(channel)
                .is_some_and(|at| now.duration_since(*at) < REREGISTER)
            {
                return Ok(());
            }
        }
        let (owners, channels) = self.owner_keys(&owner.node);
        let mut invocation = REGISTER_SCRIPT.prepare_invoke();
        invocation
            .key(&owners)
            .key(&channels)
            .arg(&owner.node)
            .arg(channel);
        let mut conn = self.commands();
        bounded(
            self.config().command_timeout,
            invocation.invoke_async::<i64>(&mut conn),
        )
        .await?;
        let mut registered = owner.registered.lock().unwrap_or_else(|e| e.into_inner());
        if registered.len() >= REGISTERED_MAX {
            registered.clear();
        }
        registered.insert(channel.to_owned(), now);
        Ok(())
    }

    /// Removes the presence entries of every node that owns some but is no longer in the node
    /// registry (it died without deregistering), publishing a leave for each entry removed.
    /// `self_id` is the caller's node, never reaped. Returns how many entries were removed.
    ///
    /// # Errors
    /// When Redis fails or does not answer within `command_timeout`; what was removed stays
    /// removed and the next call continues.
    pub async fn reap_dead_nodes(&self, self_id: &str) -> Result<usize, RedisEngineError> {
        let prefix = &self.config().key_prefix;
        let registry = format!("{{{prefix}:nodes}}");
        let (owners, _) = self.owner_keys(self_id);
        let mut invocation = DEAD_SCRIPT.prepare_invoke();
        invocation
            .key(&registry)
            .key(format!("{registry}:exp"))
            .key(&owners)
            .arg(self_id)
            .arg(u64::try_from(GRACE.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.commands();
        let dead: Vec<String> = bounded(
            self.config().command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let mut removed = 0;
        for node in dead {
            let claim = format!("{registry}:reaping:{node}");
            let mut set = redis::cmd("SET");
            set.arg(&claim)
                .arg(self_id)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(CLAIM_TTL.as_millis()).unwrap_or(u64::MAX));
            let claimed: Option<String> =
                bounded(self.config().command_timeout, set.query_async(&mut conn)).await?;
            if claimed.is_none() {
                continue; // another survivor reaps it
            }
            let n = self.reap_node(&node).await?;
            tracing::info!(
                node = %node,
                removed = n,
                "removed the presence of a node that left the registry without stopping"
            );
            removed += n;
        }
        Ok(removed)
    }

    /// Removes every entry `node` owns, channel by channel, with a leave each; then forgets it.
    async fn reap_node(&self, node: &str) -> Result<usize, RedisEngineError> {
        let (owners, channels) = self.owner_keys(node);
        let mut conn = self.commands();
        let mut removed = 0;
        loop {
            let mut pick = redis::cmd("SRANDMEMBER");
            pick.arg(&channels);
            let channel: Option<String> =
                bounded(self.config().command_timeout, pick.query_async(&mut conn)).await?;
            let Some(channel) = channel else { break };
            removed += self.reap_channel(node, &channel).await?;
            let mut done = redis::cmd("SREM");
            done.arg(&channels).arg(&channel);
            bounded(
                self.config().command_timeout,
                done.query_async::<i64>(&mut conn),
            )
            .await?;
        }
        let mut forget = redis::cmd("HDEL");
        forget.arg(&owners).arg(node);
        bounded(
            self.config().command_timeout,
            forget.query_async::<i64>(&mut conn),
        )
        .await?;
        Ok(removed)
    }

    /// Removes `node`'s entries in `channel` in batches, publishing a leave for each.
    async fn reap_channel(&self, node: &str, channel: &str) -> Result<usize, RedisEngineError> {
        let keys = crate::keys::ChannelKeys::new(&self.config().key_prefix, channel);
        let owned = owned_key(&keys.presence, node);
        let mut conn = self.commands();
        let mut removed = 0;
        loop {
            let mut invocation = REAP_SCRIPT.prepare_invoke();
            invocation
                .key(&keys.presence)
                .key(&keys.presence_expiry)
                .key(&keys.presence_users)
                .key(&owned)
                .arg(REAP_BATCH);
            let gone: Vec<String> = bounded(
                self.config().command_timeout,
                invocation.invoke_async(&mut conn),
            )
            .await?;
            let mut exists = redis::cmd("EXISTS");
            exists.arg(&owned);
            let left: i64 =
                bounded(self.config().command_timeout, exists.query_async(&mut conn)).await?;
            // The leaves of one batch in one pipeline (the same messages a leaving session
            // publishes, so every node turns them into leave diffs as usual).
            let mut leaves = redis::pipe();
            for entry in &gone {
                let info: ClientInfo = serde_json::from_str(entry)?;
                let message = codec::encode_join_leave(&info, false)?;
                leaves
                    .cmd(self.publish_command())
                    .arg(&keys.pubsub)
                    .arg(message)
                    .ignore();
            }
            if !gone.is_empty() {
                bounded(
                    self.config().command_timeout,
                    leaves.query_async::<()>(&mut conn),
                )
                .await?;
            }
            removed += gone.len();
            if left == 0 {
                return Ok(removed);
            }
        }
    }
}
