//! Hub configuration: [`NodeConfig`] (embedded by the server as `[node]` in `kilat.toml`) and
//! per-namespace [`NamespaceOptions`] (docs/protocol.md section 7).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the hub needs to know; every field has a default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Development mode: every namespace exists with permissive options (see
    /// [`NamespaceOptions::dev`]) and anonymous connections are allowed.
    pub dev: bool,
    /// Accept connections without a token (user `""`). Always true in dev mode.
    pub allow_anonymous: bool,
    /// How often the server sends the application ping `{}` (seconds in TOML).
    #[serde(with = "seconds")]
    pub ping_interval: Duration,
    /// How long the client has to answer a ping before disconnect 3002 (seconds in TOML).
    #[serde(with = "seconds")]
    pub pong_timeout: Duration,
    /// How long a new connection has to send `connect` before disconnect 3003 (seconds).
    #[serde(with = "seconds")]
    pub handshake_timeout: Duration,
    /// Bytes of frames a connection may have queued before it is disconnected with 3001.
    pub client_queue_max_bytes: usize,
    /// Milliseconds a connection waits, once it has frames to write, before writing them
    /// (0, the default: at once). Under sustained traffic each write then carries the frames
    /// of that window instead of one, which saves most of the per-delivery kernel cost (a
    /// write per frame is about half of the server's CPU at moderate rates) for at most this
    /// much added latency.
    pub write_delay_ms: u64,
    /// Most channels one connection may be subscribed to (error 429 above it).
    pub max_channels_per_connection: usize,
    /// Largest `history` page: `limit` above it (or absent) is clamped to it.
    pub history_max_limit: usize,
    /// How long presence entries live without refresh; sessions refresh them at every ping
    /// (seconds). Protects against nodes that died without cleaning up (Redis engine).
    #[serde(with = "seconds")]
    pub presence_ttl: Duration,
    /// How long a channel stream's offset and epoch are kept after its last publication
    /// (seconds). Publications themselves expire after the namespace's `history_ttl`.
    #[serde(with = "seconds")]
    pub history_meta_ttl: Duration,
    /// How long a connection whose token expired has to send `refresh` after the `refresh`
    /// push before it is closed with 3005 (seconds); likewise `sub_refresh` for a subscription
    /// whose token expired, before the subscription ends.
    #[serde(with = "seconds")]
    pub token_refresh_grace: Duration,
    /// Commands a connection may send per second on average (token bucket; 0 = no limit).
    /// Past it commands get error 429; a client that keeps going past `client_command_burst`
    /// refusals in a row is disconnected with 3500.
    pub client_command_rate: f64,
    /// Commands a connection may send in one burst above `client_command_rate`. Generous by
    /// default: a reconnecting client resubscribes its channels and flushes what it queued
    /// while offline in one go.
    pub client_command_burst: u32,
    /// Most open connections per (non-anonymous) user; 0 = no limit. Past it: 429, then 3502.
    pub max_connections_per_user: usize,
    /// Client publications per channel per second on this node (0 = no limit); past it: 429.
    /// Publications through the server API are not limited.
    pub channel_publish_rate: f64,
    /// Client publications per channel in one burst above `channel_publish_rate`.
    pub channel_publish_burst: u32,
    /// Options for channels without a namespace. When absent: the permissive dev options in
    /// dev mode, otherwise [`NamespaceOptions::default`].
    pub default_namespace: Option<NamespaceOptions>,
    /// Namespaces by name (`[node.namespaces.chat]`). A channel `chat:x` uses `chat`'s options;
    /// a namespace not listed here is error 404 except in dev mode.
    pub namespaces: BTreeMap<String, NamespaceOptions>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            dev: false,
            allow_anonymous: false,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            client_queue_max_bytes: 1024 * 1024,
            write_delay_ms: 0,
            max_channels_per_connection: 128,
            history_max_limit: 1000,
            presence_ttl: Duration::from_secs(60),
            history_meta_ttl: Duration::from_secs(24 * 3600),
            token_refresh_grace: Duration::from_secs(10),
            client_command_rate: 100.0,
            client_command_burst: 1000,
            max_connections_per_user: 0,
            channel_publish_rate: 0.0,
            channel_publish_burst: 100,
            default_namespace: None,
            namespaces: BTreeMap::new(),
        }
    }
}

impl NodeConfig {
    /// The development configuration: `dev` and `allow_anonymous` on, everything else default.
    pub fn dev() -> Self {
        NodeConfig {
            dev: true,
            allow_anonymous: true,
            ..NodeConfig::default()
        }
    }

    /// The options for `channel`'s namespace, or `None` when the namespace does not exist.
    pub fn namespace_options(&self, channel: &str) -> Option<NamespaceOptions> {
        match kilat_protocol::channel::namespace(channel) {
            None => Some(self.default_namespace.clone().unwrap_or_else(|| {
                if self.dev {
                    NamespaceOptions::dev()
                } else {
                    NamespaceOptions::default()
                }
            })),
            Some(ns) => match self.namespaces.get(ns) {
                Some(options) => Some(options.clone()),
                None if self.dev => Some(NamespaceOptions::dev_for(ns)),
                None => None,
            },
        }
    }

    /// Whether connections without a token are accepted.
    pub fn anonymous_allowed(&self) -> bool {
        self.dev || self.allow_anonymous
    }
}

/// Who may subscribe to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowSubscribe {
    /// Any connection, anonymous included.
    Public,
    /// Connections with a non-empty user.
    #[default]
    Authenticated,
    /// Only with a subscription token (refused until token verification is configured).
    Token,
}

/// Who may publish from a client connection into a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowPublish {
    /// Nobody: only the server API publishes.
    #[default]
    None,
    /// Connections subscribed to the channel.
    Subscribers,
    /// Connections with a non-empty user.
    Authenticated,
    /// Any connection, anonymous included (used by dev mode).
    Any,
}

/// Options of one namespace (docs/protocol.md section 7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Publications kept per channel (0: no history, no offsets, no recovery).
    pub history_size: usize,
    /// How long each publication is kept (seconds); 0 (unset) with a `history_size` means
    /// [`NamespaceOptions::DEFAULT_HISTORY_TTL`].
    #[serde(with = "seconds")]
    pub history_ttl: Duration,
    /// Recover on every subscribe that carries an offset and epoch, even without `recover`.
    pub force_recovery: bool,
    /// Track presence of subscribers.
    pub presence: bool,
    /// Send join/leave pushes to subscribers.
    pub join_leave: bool,
    /// Join/leave batching window in milliseconds (0: one `join`/`leave` push per change).
    /// When set, each node sends a channel's joins and leaves as one `presence_diff` push per
    /// window, encoded once for every subscriber: the first change after a quiet spell at
    /// once, the ones that follow within the window together when it ends. Without it every
    /// join is pushed to every member, which costs the square of the members.
    pub presence_diff_ms: u64,
    /// Most local subscribers of a channel that get `presence_diff` pushes (0: no limit). Above
    /// it, each batching window sends a `presence_count` (the channel's counts) instead of the
    /// changes, since every member learning of every other costs the square of the members.
    pub presence_diff_max: usize,
    /// Who may subscribe.
    pub allow_subscribe: AllowSubscribe,
    /// Who may publish from a client.
    pub allow_publish: AllowPublish,
    /// Whether clients may call `presence` and `presence_stats` (needs `presence`).
    pub allow_presence: bool,
    /// Whether clients may call `history` (needs `history_size > 0`).
    pub allow_history: bool,
    /// Largest publication `data`, in bytes (error 413 above it).
    pub max_message_size: usize,
    /// Conflation window in milliseconds (0: off). When set, each node sends its subscribers
    /// of a channel at most one publication per window: the first after a quiet spell at once,
    /// then the newest of each window when it ends; the ones in between are skipped (offsets
    /// jump). History keeps them all. For tickers and positions, where only the latest counts.
    pub conflate_ms: u64,
    /// A top-level field of the publications' data (a JSON object) holding each publication's
    /// key, a string or an integer. Publications without one are refused with error 400.
    /// With `conflate_ms`, conflation is per key: each window delivers the newest publication
    /// of every key, so one key's updates never drop another's. With `latest`, the newest
    /// publication of each key is kept for new subscribers.
    pub conflate_key: Option<String>,
    /// Keep the latest publication of each key (`conflate_key`; of the channel without one)
    /// and give them to a subscriber that does not recover, in its subscribe reply's
    /// `publications` (with `latest: true`). Needs history (`history_size` > 0).
    pub latest: bool,
    /// Ask the backend's subscribe hook before each client subscription (after the local
    /// checks); ignored when no subscribe hook is configured. See `docs/proxy.md`.
    pub proxy_subscribe: bool,
    /// Ask the backend's publish hook before each client publication (after the local checks);
    /// it may refuse or replace the data. Ignored when no publish hook is configured.
    pub proxy_publish: bool,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        NamespaceOptions {
            history_size: 0,
            history_ttl: Duration::ZERO,
            force_recovery: false,
            presence: false,
            join_leave: false,
            presence_diff_ms: Self::DEFAULT_PRESENCE_DIFF_MS,
            presence_diff_max: Self::DEFAULT_PRESENCE_DIFF_MAX,
            allow_subscribe: AllowSubscribe::Authenticated,
            allow_publish: AllowPublish::None,
            allow_presence: false,
            allow_history: false,
            max_message_size: 64 * 1024,
            conflate_ms: 0,
            conflate_key: None,
            latest: false,
            proxy_subscribe: false,
            proxy_publish: false,
        }
    }
}

impl NamespaceOptions {
    /// The permissive options of dev mode: history of 1000 publications for 10 minutes,
    /// presence, join/leave, public subscribe, client publish by anyone.
    pub fn dev() -> Self {
        NamespaceOptions {
            history_size: 1000,
            history_ttl: Duration::from_secs(600),
            force_recovery: false,
            presence: true,
            join_leave: true,
            presence_diff_ms: Self::DEFAULT_PRESENCE_DIFF_MS,
            presence_diff_max: Self::DEFAULT_PRESENCE_DIFF_MAX,
            allow_subscribe: AllowSubscribe::Public,
            allow_publish: AllowPublish::Any,
            allow_presence: true,
            allow_history: true,
            max_message_size: 64 * 1024,
            conflate_ms: 0,
            conflate_key: None,
            latest: false,
            proxy_subscribe: false,
            proxy_publish: false,
        }
    }

    /// The dev options of namespace `ns`: [`NamespaceOptions::dev`], except for the demos'
    /// keyed namespaces (web/demo/, docs/use-cases.md): `ticker` is conflated per `sym` every
    /// 100 ms and keeps the latest price of each symbol; `game` is conflated per `player`
    /// every 25 ms (twice the demo's 20 states a second, so a steady player loses no state) and keeps each player's latest state;
    /// `alerts` keeps the latest record of each `id` (rules and alerts of /demo/monitor) for a
    /// day; `stream` (/demo/stream, live media) keeps the latest publication of each channel
    /// (the broadcast's initialisation segment on its `.init` channel) and a short history.
    pub fn dev_for(ns: &str) -> Self {
        let keyed = |key: &str, conflate_ms: u64| NamespaceOptions {
            conflate_ms,
            conflate_key: Some(key.to_owned()),
            latest: true,
            ..NamespaceOptions::dev()
        };
        match ns {
            "ticker" => keyed("sym", 100),
            "game" => keyed("player", 25),
            // The monitoring demo's rules and alerts, keyed by id: the newest record of each is
            // kept for a day, so a dashboard opening later still sees every rule and alert.
            "alerts" => NamespaceOptions {
                history_ttl: Duration::from_secs(86_400),
                ..keyed("id", 0)
            },
            // Live media chunks (binary) of /demo/stream: a new viewer needs the broadcast's
            // initialisation segment, kept as the latest value of `stream:<room>.init`. Media
            // is only worth anything live, so history stays short (a minute, 16 chunks) and
            // viewers subscribe without recovery.
            "stream" => NamespaceOptions {
                history_size: 16,
                history_ttl: Duration::from_secs(60),
                latest: true,
                ..NamespaceOptions::dev()
            },
            _ => NamespaceOptions::dev(),
        }
    }
    /// The default join/leave batching window: short enough to feel live, long enough that a
    /// crowd joining at once costs one push per window instead of one per member.
    pub const DEFAULT_PRESENCE_DIFF_MS: u64 = 100;

    /// The default `presence_diff_max`: a member list a person can still read.
    pub const DEFAULT_PRESENCE_DIFF_MAX: usize = 1000;

    /// How long each publication is kept when `history_size` is set and `history_ttl` is not:
    /// long enough for a client to ride out a reconnect, a deploy or a laptop lid.
    pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);

    /// Whether the namespace keeps history (and so offsets, epochs and recovery): whenever
    /// `history_size` is set.
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }

    /// How long each publication is kept: `history_ttl`, or [`Self::DEFAULT_HISTORY_TTL`]
    /// when only `history_size` is set (a size alone never silently means "no history").
    pub fn effective_history_ttl(&self) -> Duration {
        if self.history_ttl.is_zero() && self.history_size > 0 {
            Self::DEFAULT_HISTORY_TTL
        } else {
            self.history_ttl
        }
    }
}

/// `Duration` as a number of seconds (integer or fractional) in TOML and JSON.
pub mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole seconds when possible, fractional otherwise.
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    /// Reads a non-negative number of seconds.
    ///
    /// # Errors
    /// A negative, non-finite or non-numeric value.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_namespaces_exist_only_in_dev() {
        let config = NodeConfig::default();
        assert!(config.namespace_options("nope:x").is_none());
        assert!(config.namespace_options("plain").is_some());
        let dev = NodeConfig::dev();
        assert_eq!(
            dev.namespace_options("any:x"),
            Some(NamespaceOptions::dev())
        );
    }

    #[test]
    fn dev_stream_namespace_keeps_latest_values_and_plain_config_has_none() {
        let dev = NodeConfig::dev();
        let stream = dev
            .namespace_options("stream:studio.init")
            .expect("dev has it");
        assert!(stream.latest && stream.has_history());
        assert_eq!(stream.allow_publish, AllowPublish::Any);
        assert!(stream.presence && stream.allow_presence);
        assert!(
            NodeConfig::default()
                .namespace_options("stream:studio")
                .is_none()
        );
    }

    #[test]
    fn deserializes_from_json_with_seconds() {
        let config: NodeConfig = serde_json::from_str(
            r#"{"ping_interval": 5, "pong_timeout": 1.5,
                "namespaces": {"chat": {"history_size": 10, "history_ttl": 60,
                                        "allow_subscribe": "public", "allow_publish": "subscribers"}}}"#,
        )
        .expect("valid config");
        assert_eq!(config.ping_interval, Duration::from_secs(5));
        assert_eq!(config.pong_timeout, Duration::from_millis(1500));
        let chat = config.namespace_options("chat:a").expect("configured");
        assert_eq!(chat.history_size, 10);
        assert_eq!(chat.allow_publish, AllowPublish::Subscribers);
    }
}
