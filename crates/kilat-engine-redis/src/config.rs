//! [`RedisConfig`]: where Redis is and how the engine talks to it.

use std::time::Duration;

/// Settings of a [`crate::RedisEngine`]. `RedisConfig::default()` targets a local Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6379/0` or `redis://:password@host:6379`.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each). When not empty the engine
    /// runs in cluster mode: `url` is ignored, pub/sub is sharded (`SSUBSCRIBE`/`SPUBLISH`,
    /// Redis 7+) and `pubsub_shards`, `pubsub_ping_interval` and `resubscribe_batch` do not
    /// apply (the cluster client resubscribes by itself).
    pub cluster_nodes: Vec<String>,
    /// Prefix of every key and pub/sub channel, so several kilat clusters can share one Redis
    /// (keys look like `{<prefix>:ch:<channel>}:stream`).
    pub key_prefix: String,
    /// Dedicated pub/sub connections; channels are spread over them by a hash of their name,
    /// so one slow or reconnecting connection only affects its share of the channels.
    pub pubsub_shards: usize,
    /// Upper bound on every command and on SUBSCRIBE confirmations. While Redis is down or
    /// stuck, publishes fail after at most this long (the client gets 503), nothing hangs.
    pub command_timeout: Duration,
    /// Upper bound on opening one connection.
    pub connect_timeout: Duration,
    /// How long a channel's offset and epoch outlive its last publication (at least the
    /// history TTL). When they expire the next publication starts a new epoch.
    pub meta_ttl: Duration,
    /// How often an idle pub/sub connection is pinged, to notice a dead peer that never
    /// closed the socket.
    pub pubsub_ping_interval: Duration,
    /// Channels per SUBSCRIBE when a reconnected pub/sub connection resubscribes.
    pub resubscribe_batch: usize,
    /// Longest wait between two reconnect attempts (the backoff doubles from 50 ms up to it).
    pub reconnect_max_delay: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            cluster_nodes: Vec::new(),
            key_prefix: "kilat".to_owned(),
            pubsub_shards: 4,
            command_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            meta_ttl: Duration::from_secs(24 * 3600),
            pubsub_ping_interval: Duration::from_secs(5),
            resubscribe_batch: 512,
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

impl RedisConfig {
    /// The default settings for the Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// The default settings for the Redis Cluster reachable through `seed_nodes`.
    pub fn cluster<S: Into<String>>(seed_nodes: impl IntoIterator<Item = S>) -> Self {
        RedisConfig {
            cluster_nodes: seed_nodes.into_iter().map(Into::into).collect(),
            ..RedisConfig::default()
        }
    }
}
