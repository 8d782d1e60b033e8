//! Configuration: one TOML document, overlaid by `KILAT_<SECTION>_<KEY>` environment variables
//! and then by command-line flags.
//!
//! The layers are merged as TOML tables before anything is deserialised, so every key has
//! exactly one meaning and one type whichever layer sets it, and an unknown key is an error with
//! its layer named, never silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Sections a `KILAT_<SECTION>_<KEY>` variable may name.
const SECTIONS: &[&str] = &[
    "server",
    "websocket",
    "node",
    "engine",
    "api",
    "token",
    "proxy",
    "socketio",
];

/// Environment variables that start with `KILAT_` but are not configuration keys.
/// `KILAT_URL` and `KILAT_TOKEN` are the client side's (`kilat sub`, `kilat pub`).
const NON_CONFIG_VARS: &[&str] = &[
    "KILAT_LOG",
    "KILAT_CONFIG",
    "KILAT_LOG_FORMAT",
    "KILAT_URL",
    "KILAT_TOKEN",
];

/// The whole server configuration, as read from `kilat.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener, limits and shutdown.
    pub server: ServerConfig,
    /// WebSocket transport options.
    pub websocket: WebSocketConfig,
    /// The hub: timeouts, queues, namespaces and their permissions.
    pub node: kilat_core::NodeConfig,
    /// Where channels, history and presence live: this process, or Redis shared by many nodes.
    pub engine: EngineConfig,
    /// The server HTTP API.
    pub api: ApiConfig,
    /// Token (JWT) verification; absent means no tokens are accepted. Never printed back, as it
    /// may hold a secret.
    #[serde(skip_serializing)]
    pub token: Option<kilat_auth::TokenConfig>,
    /// The application backend's HTTP hooks.
    pub proxy: ProxyConfig,
    /// Pusher Channels apps served at `/app/{key}` and `/apps/{app_id}` (docs/pusher.md).
    pub pusher: crate::pusher::config::PusherConfig,
    /// Socket.IO clients (Engine.IO v4, Socket.IO v5; docs/socketio.md).
    pub socketio: crate::socketio::SocketIoConfig,
}

/// `[proxy]`: the application backend's HTTP hooks (`docs/proxy.md`). Each URL is optional;
/// an unset hook is not called.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Asked at `connect` when the client sends no token.
    pub connect_url: Option<String>,
    /// Asked at `subscribe` in namespaces with `proxy_subscribe = true`.
    pub subscribe_url: Option<String>,
    /// Asked at `publish` in namespaces with `proxy_publish = true`.
    pub publish_url: Option<String>,
    /// Answers `rpc`.
    pub rpc_url: Option<String>,
    /// Receives `send` messages.
    pub send_url: Option<String>,
    /// Asked when a connection expires, instead of a `refresh` push to the client.
    pub refresh_url: Option<String>,
    /// Asked when a subscription with an expiry (from its token or the subscribe hook)
    /// expires, instead of a `refresh` push for the channel.
    pub sub_refresh_url: Option<String>,
    /// Bound on each call (seconds); past it the client gets 503.
    #[serde(with = "kilat_core::config::seconds")]
    pub timeout: Duration,
    /// Handshake request headers forwarded to every hook.
    pub forward_headers: Vec<String>,
    /// PEM file of CA certificates trusted for `https://` hook URLs besides the Mozilla roots
    /// (a private CA). Certificates are always verified; there is no switch to skip that.
    pub ca_file: Option<PathBuf>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_url: None,
            subscribe_url: None,
            publish_url: None,
            rpc_url: None,
            send_url: None,
            refresh_url: None,
            sub_refresh_url: None,
            timeout: Duration::from_secs(5),
            forward_headers: [
                "Cookie",
                "Authorization",
                "User-Agent",
                "X-Forwarded-For",
                "Origin",
            ]
            .map(String::from)
            .to_vec(),
            ca_file: None,
        }
    }
}

/// Which engine the node runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// Everything in this process: one node, nothing to operate.
    #[default]
    Memory,
    /// Redis (or a Redis Cluster): several nodes behind a load balancer share channels,
    /// history and presence.
    Redis,
}

/// `[engine]`: the engine and, for Redis, how to reach it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `memory` (default) or `redis`.
    pub kind: EngineKind,
    /// Redis URL, e.g. `redis://127.0.0.1:6379/0` or `redis://:password@host:6379`.
    pub redis_url: String,
    /// Seed nodes of a Redis Cluster; when set, `redis_url` is ignored and pub/sub is sharded
    /// (`SSUBSCRIBE`/`SPUBLISH`, Redis 7+).
    pub redis_cluster_nodes: Vec<String>,
    /// Prefix of every Redis key, so several kilat clusters can share one Redis.
    pub redis_prefix: String,
    /// Upper bound on each Redis command: while Redis is down, publishes fail (503) after it.
    #[serde(with = "kilat_core::config::seconds")]
    pub redis_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kind: EngineKind::Memory,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_cluster_nodes: Vec::new(),
            redis_prefix: "kilat".to_owned(),
            redis_timeout: Duration::from_secs(1),
        }
    }
}

impl EngineConfig {
    /// What the Redis engine connects to, passwords hidden: the cluster's seed nodes when
    /// `redis_cluster_nodes` is set (then `redis_url` is not used), else `redis_url`.
    pub fn redis_target(&self) -> String {
        if self.redis_cluster_nodes.is_empty() {
            redact_url(&self.redis_url)
        } else {
            let nodes: Vec<String> = self
                .redis_cluster_nodes
                .iter()
                .map(|n| redact_url(n))
                .collect();
            format!("cluster [{}]", nodes.join(", "))
        }
    }

    /// The Redis engine's own configuration derived from this section.
    pub fn redis(&self) -> kilat_engine_redis::RedisConfig {
        let mut config = if self.redis_cluster_nodes.is_empty() {
            kilat_engine_redis::RedisConfig::new(self.redis_url.clone())
        } else {
            kilat_engine_redis::RedisConfig::cluster(self.redis_cluster_nodes.clone())
        };
        config.key_prefix = self.redis_prefix.clone();
        config.command_timeout = self.redis_timeout;
        config
    }
}

/// `[api]`: the server HTTP API (`POST /api/<method>`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The key backends send as `Authorization: apikey <key>`. Without one the API answers 401
    /// to everything, except in dev mode where it is open.
    pub key: Option<String>,
}

/// `[server]`: the listener and process-wide limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on for every endpoint (WebSocket, SSE, API, UI).
    pub listen: SocketAddr,
    /// Most connections held at once; further WebSocket upgrades are answered with HTTP 503.
    /// 0 (the default): as many as the open-files limit allows.
    pub max_connections: usize,
    /// Most connections between their admission and their connect reply at once (0: no
    /// bound): past it WebSocket upgrades, SSE and HTTP streams, Socket.IO and Pusher
    /// handshakes get HTTP 503 with `Retry-After: 1` before any engine work, so a reconnect
    /// storm is admitted at the rate the node can serve. A permit is held only during the
    /// handshake (up to the connect reply), not for the connection's life; the client's first
    /// message after the reply (its resubscriptions) waits for one and holds it while handled.
    pub max_handshakes: usize,
    /// How long a graceful shutdown waits for connections to close after sending them 3000.
    #[serde(with = "kilat_core::config::seconds")]
    pub shutdown_timeout: Duration,
    /// The first phase of a drain (SIGTERM): for this long `/ready` answers 503 and new
    /// connections get 503 with `Retry-After` while the listener keeps accepting and the
    /// clients already connected carry on, so a load balancer's health check notices before
    /// anything closes. Longer than the balancer's check interval times its fall count.
    /// Unset: [`ServerConfig::DEFAULT_DRAIN_GRACE`], or none in dev mode (no balancer to
    /// tell); see [`ServerConfig::drain_grace`].
    #[serde(
        default,
        with = "optional_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_grace: Option<Duration>,
    /// The reconnect spread sent with the drain's 3000 (`delay_ms`): each client waits a
    /// random time up to this before reconnecting, so the other nodes are not hit all at once.
    #[serde(with = "kilat_core::config::seconds")]
    pub drain_spread: Duration,
    /// How long a new TCP connection may take to finish its TLS handshake and send its request
    /// head; slower (or silent) clients are dropped.
    #[serde(with = "kilat_core::config::seconds")]
    pub handshake_timeout: Duration,
    /// How long a request body (an emulation POST, an HTTP-streaming connect, an API call) may
    /// take to arrive in full; a body that stalls below 1 KiB/s after 2 s is cut sooner. Answered
    /// 408. Bodies that never finish cannot hold sockets.
    #[serde(with = "kilat_core::config::seconds")]
    pub body_timeout: Duration,
    /// PEM certificate chain; with `tls_key`, the listener speaks TLS (`https://`, `wss://`).
    /// Both files are read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Origins allowed to open WebSocket, SSE and streaming connections from a browser
    /// (`https://app.example.com`, wildcards like `https://*.example.com`, or `*`), besides the
    /// server's own origin. Requests without an `Origin` header (non-browser clients) pass.
    pub allowed_origins: Vec<String>,
    /// The URL browsers reach this server at when that is not the listen address (a domain, a
    /// TLS-terminating proxy): `https://rt.example.com`. Its origin is the server's own origin,
    /// together with the listen address (and `localhost`, `127.0.0.1`, `[::1]` on a loopback or
    /// unspecified address). The `Host` header is never trusted for this (DNS rebinding).
    pub public_url: Option<String>,
    /// Serve `GET /metrics` (Prometheus text, no authentication). Switch off when the
    /// listener is public and metrics are scraped some other way.
    pub metrics: bool,
    /// Serve the web UI and demos at `/`, `/ui/` and `/demo/` (no authentication).
    pub ui: bool,
    /// Detailed metrics on `/metrics`: per-transport and per-namespace counters, latency
    /// histograms, engine and proxy timings. Off leaves the counters the hub keeps anyway.
    pub detailed_metrics: bool,
    /// Password of the admin console at `/admin`; without one (and without `--dev`, which
    /// makes a one-time password) the console is off.
    pub admin_password: Option<String>,
    /// Most connections one client address may hold (0: no limit): past it upgrades and
    /// streams get HTTP 429. For deployments without a load balancer that limits per client.
    pub max_connections_per_ip: u32,
    /// Connection attempts (WebSocket upgrades, streams, Socket.IO and Pusher handshakes) per
    /// second one client address may make, on average (0: no limit); past it HTTP 429.
    pub handshake_rate_per_ip: u32,
    /// Attempts one address may make at once above `handshake_rate_per_ip` (at least the
    /// rate).
    pub handshake_burst_per_ip: u32,
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` names the client for the limits
    /// per address: when the peer is one, the right-most address in the header that is not a
    /// trusted proxy is the client. Empty (the default): the header is ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            max_connections: 0,
            max_handshakes: Self::DEFAULT_MAX_HANDSHAKES,
            shutdown_timeout: Duration::from_secs(10),
            drain_grace: None,
            drain_spread: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            allowed_origins: Vec::new(),
            public_url: None,
            metrics: true,
            ui: true,
            detailed_metrics: true,
            admin_password: None,
            max_connections_per_ip: 0,
            handshake_rate_per_ip: 0,
            handshake_burst_per_ip: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// `max_handshakes` by default: enough to keep an engine busy (each handshake is a few
    /// engine calls), few enough that a reconnect storm queues in the clients' backoff rather
    /// than in the engine's connection.
    pub const DEFAULT_MAX_HANDSHAKES: usize = 512;

    /// The drain grace when `drain_grace` is not set.
    pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(5);

    /// The drain's first phase: `drain_grace`, else [`Self::DEFAULT_DRAIN_GRACE`], or zero in
    /// dev mode, where a local Ctrl-C should not wait for a load balancer that is not there.
    pub fn drain_grace(&self, dev: bool) -> Duration {
        match self.drain_grace {
            Some(grace) => grace,
            None if dev => Duration::ZERO,
            None => Self::DEFAULT_DRAIN_GRACE,
        }
    }
}

/// `Option<Duration>` as an optional number of seconds.
mod optional_seconds {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => kilat_core::config::seconds::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        kilat_core::config::seconds::deserialize(d).map(Some)
    }
}

/// `[websocket]`: the WebSocket transport.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest message accepted from a client, in bytes, after decompression (close 1009 above).
    pub max_message_size: usize,
    /// Whether permessage-deflate is offered to clients that ask for it.
    pub compression: bool,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_message_size: 64 * 1024,
            compression: true,
        }
    }
}

impl WebSocketConfig {
    /// The transport's own configuration derived from this section.
    pub fn transport(&self) -> kilat_transport::ws::WsConfig {
        kilat_transport::ws::WsConfig {
            max_message_size: self.max_message_size,
            deflate: self.compression,
            ..Default::default()
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config` or `KILAT_CONFIG`.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        /// The file that failed to parse.
        path: PathBuf,
        /// Where and why parsing failed.
        source: toml::de::Error,
    },
    /// The merged layers do not form a valid configuration (unknown key, wrong type, ...).
    #[error("invalid configuration: {0} (hint: `kilat config` prints every key with its default)")]
    Invalid(#[source] toml::de::Error),
    /// Keys that are valid one by one but together would silently disable something asked
    /// for (see `checks`); the message names the key and the fix.
    #[error("invalid configuration: {0}")]
    Contradiction(String),
}

impl Config {
    /// Loads the configuration: defaults, then `file` if given, then `KILAT_*` variables from
    /// `env`, then `overrides` (what command-line flags set, as a TOML table).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the layer and key at fault.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: Table,
    ) -> Result<Config, ConfigError> {
        let mut merged = Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
            merge(&mut merged, table);
        }
        merge(&mut merged, env_table(env));
        merge(&mut merged, overrides);
        explicit_zero_history_ttl(&merged)?;
        let config = Config::deserialize(Value::Table(merged)).map_err(ConfigError::Invalid)?;
        config.check()?;
        Ok(config)
    }

    /// The configuration as a TOML document (what `kilat config` prints), every secret shown
    /// as `"<redacted>"`: the API key, the token secret, and passwords inside URLs.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.api.key.is_some() {
            shown.api.key = Some(REDACTED.to_owned());
        }
        shown.engine.redis_url = redact_url(&shown.engine.redis_url);
        for node in &mut shown.engine.redis_cluster_nodes {
            *node = redact_url(node);
        }
        for url in [
            &mut shown.proxy.connect_url,
            &mut shown.proxy.subscribe_url,
            &mut shown.proxy.publish_url,
            &mut shown.proxy.rpc_url,
            &mut shown.proxy.send_url,
            &mut shown.proxy.refresh_url,
            &mut shown.proxy.sub_refresh_url,
        ]
        .into_iter()
        .flatten()
        {
            *url = redact_url(url);
        }
        for app in &mut shown.pusher.apps {
            app.secret = REDACTED.to_owned();
        }
        let mut text = toml::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render config: {e}\n"));
        if let Some(token) = &self.token {
            let mut table = Table::new();
            table.insert("token".into(), Value::Table(token_table(token)));
            text.push('\n');
            text.push_str(&toml::to_string_pretty(&table).unwrap_or_default());
        }
        text
    }
}

/// Refuses an explicit `history_ttl = 0` next to a `history_size` in the merged layers, before
/// deserialising (afterwards an absent TTL and an explicit 0 look the same).
fn explicit_zero_history_ttl(merged: &Table) -> Result<(), ConfigError> {
    let Some(Value::Table(node)) = merged.get("node") else {
        return Ok(());
    };
    let mut namespaces: Vec<(String, &Table)> = Vec::new();
    if let Some(Value::Table(default)) = node.get("default_namespace") {
        namespaces.push(("node.default_namespace".into(), default));
    }
    if let Some(Value::Table(all)) = node.get("namespaces") {
        for (name, options) in all {
            if let Value::Table(options) = options {
                namespaces.push((format!("node.namespaces.{name}"), options));
            }
        }
    }
    let number = |v: Option<&Value>| match v {
        Some(Value::Integer(i)) => Some(*i as f64),
        Some(Value::Float(f)) => Some(*f),
        _ => None,
    };
    for (key, options) in namespaces {
        let size = number(options.get("history_size")).unwrap_or(0.0);
        if size > 0.0 && number(options.get("history_ttl")) == Some(0.0) {
            return Err(ConfigError::Contradiction(format!(
                "{key}.history_ttl = 0 keeps no publication although history_size = {size} asks \
                 for history (hint: remove history_ttl for the default of {} s, give it the \
                 seconds to keep each publication, or set history_size = 0 for no history)",
                kilat_core::NamespaceOptions::DEFAULT_HISTORY_TTL.as_secs()
            )));
        }
    }
    Ok(())
}

/// What `kilat config` prints in place of a secret.
const REDACTED: &str = "<redacted>";

/// `scheme://user:password@host/...` with the password (or a lone user, which some schemes use
/// as the password: `redis://secret@host`) replaced by [`REDACTED`], for `kilat config`, logs
/// and the admin console.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    format!("{scheme}://{shown}{}", &rest[at..])
}

/// `[token]` for `kilat config`, with the secret redacted (the section has no `Serialize`: it
/// is never written anywhere else).
fn token_table(token: &kilat_auth::TokenConfig) -> Table {
    let mut table = Table::new();
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_owned(), value);
    };
    if token.secret.is_some() {
        set("secret", Value::String(REDACTED.to_owned()));
    }
    if let Some(key) = &token.public_key {
        set("public_key", Value::String(key.clone()));
    }
    if let Some(url) = &token.jwks_url {
        set("jwks_url", Value::String(redact_url(url)));
    }
    if let Some(audience) = &token.audience {
        set("audience", Value::String(audience.clone()));
    }
    if let Some(issuer) = &token.issuer {
        set("issuer", Value::String(issuer.clone()));
    }
    let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    set("leeway", int(token.leeway));
    set(
        "algorithms",
        Value::Array(
            token
                .algorithms
                .iter()
                .map(|a| Value::String(format!("{a:?}")))
                .collect(),
        ),
    );
    set("require_exp", Value::Boolean(token.require_exp));
    set("jwks_timeout_ms", int(token.jwks_timeout_ms));
    set(
        "jwks_min_refresh_interval",
        int(token.jwks_min_refresh_interval),
    );
    set("jwks_max_age", int(token.jwks_max_age));
    table
}

/// Builds a table from `KILAT_<SECTION>_<KEY>=value` variables; other variables are ignored.
fn env_table(env: impl IntoIterator<Item = (String, String)>) -> Table {
    let mut table = Table::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix("KILAT_") else {
            continue;
        };
        if NON_CONFIG_VARS.contains(&var.as_str()) || rest.starts_with("TEST_") {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|s| {
            lower
                .strip_prefix(s)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*s, k))
        }) else {
            // Other tools share the prefix (KILAT_URL and KILAT_TOKEN for `kilat sub`, test
            // harnesses' KILAT_BIN): not ours to refuse, but worth a line in case of a typo.
            tracing::warn!(
                variable = %var,
                "ignoring an environment variable that names no config section ({})",
                SECTIONS.join(", ")
            );
            continue;
        };
        let entry = table
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(t) = entry {
            t.insert(key.to_owned(), scalar(&raw));
        }
    }
    table
}

/// Reads an environment value as a TOML scalar (number, boolean, array), else as a string.
fn scalar(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// Merges `top` into `base`; tables merge key by key, anything else is replaced.
pub fn merge(base: &mut Table, top: Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn printed_configuration_redacts_every_secret_regression_22() {
        let text = "[api]\nkey = \"api-secret-1\"\n[token]\nsecret = \"token-secret-2\"\n\
                    [engine]\nredis_url = \"redis://:redis-pass-3@10.0.0.5:6379\"\n\
                    [proxy]\nconnect_url = \"http://hooks:hook-pass-4@127.0.0.1:3000/c\"\n";
        let table: Table = toml::from_str(text).expect("toml");
        let config = Config::load(None, vars(&[]), table).expect("valid");
        let printed = config.to_toml();
        for secret in [
            "api-secret-1",
            "token-secret-2",
            "redis-pass-3",
            "hook-pass-4",
        ] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        assert_eq!(printed.matches("<redacted>").count(), 4, "{printed}");
        assert!(printed.contains("@10.0.0.5:6379"), "{printed}");
        assert!(
            printed.contains("http://hooks:<redacted>@127.0.0.1:3000/c"),
            "{printed}"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://pw@h/0"), "redis://<redacted>@h/0");
    }

    #[test]
    fn redis_target_names_the_cluster_and_hides_passwords() {
        let mut engine = EngineConfig {
            redis_url: "redis://:hunter2@10.0.0.1:6379/0".into(),
            ..EngineConfig::default()
        };
        assert_eq!(engine.redis_target(), "redis://:<redacted>@10.0.0.1:6379/0");
        engine.redis_cluster_nodes = vec!["redis://a:7000".into(), "redis://user:pw@b:7001".into()];
        assert_eq!(
            engine.redis_target(),
            "cluster [redis://a:7000, redis://user:<redacted>@b:7001]"
        );
        assert_eq!(redact_url("no scheme"), "no scheme");
    }

    #[test]
    fn the_drain_grace_defaults_to_5_s_and_to_none_in_dev_mode() {
        let config = Config::load(None, vars(&[]), Table::new()).expect("defaults");
        assert_eq!(config.server.drain_grace(false), Duration::from_secs(5));
        assert_eq!(config.server.drain_grace(true), Duration::ZERO);
        let set = Config::load(
            None,
            vars(&[("KILAT_SERVER_DRAIN_GRACE", "2.5")]),
            Table::new(),
        )
        .expect("valid");
        assert_eq!(set.server.drain_grace(true), Duration::from_millis(2500));
    }

    #[test]
    fn defaults_listen_on_localhost_8000() {
        let config = Config::load(None, vars(&[]), Table::new()).expect("defaults are valid");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(config.websocket.max_message_size, 65536);
        assert!(config.websocket.compression);
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = std::env::temp_dir().join(format!("kilat-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("kilat.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:9000\"\nmax_connections = 5\n[websocket]\ncompression = false\n",
        )
        .expect("write config");
        let env = vars(&[
            ("KILAT_SERVER_MAX_CONNECTIONS", "7"),
            ("KILAT_WEBSOCKET_MAX_MESSAGE_SIZE", "1024"),
            ("KILAT_LOG", "debug"),
            ("PATH", "/bin"),
        ]);
        let mut flags = Table::new();
        merge(
            &mut flags,
            toml::from_str("[websocket]\nmax_message_size = 2048").expect("toml"),
        );
        let config = Config::load(Some(&path), env, flags).expect("valid layers");
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.server.max_connections, 7);
        assert_eq!(config.websocket.max_message_size, 2048);
        assert!(!config.websocket.compression);
    }

    #[test]
    fn proxy_section_comes_from_the_environment() {
        let config = Config::load(
            None,
            vars(&[
                ("KILAT_PROXY_CONNECT_URL", "http://127.0.0.1:3000/connect"),
                ("KILAT_PROXY_TIMEOUT", "0.5"),
                ("KILAT_PROXY_FORWARD_HEADERS", r#"["Cookie"]"#),
            ]),
            Table::new(),
        )
        .expect("valid proxy variables");
        assert_eq!(
            config.proxy.connect_url.as_deref(),
            Some("http://127.0.0.1:3000/connect")
        );
        assert_eq!(config.proxy.timeout, Duration::from_millis(500));
        assert_eq!(config.proxy.forward_headers, ["Cookie"]);
        assert!(config.proxy.rpc_url.is_none());
        let defaults = Config::load(None, vars(&[]), Table::new()).expect("defaults");
        assert_eq!(defaults.proxy.timeout, Duration::from_secs(5));
        assert!(
            defaults
                .proxy
                .forward_headers
                .contains(&"Authorization".to_owned())
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_errors() {
        // A variable naming no section belongs to another tool (KILAT_BIN, KILAT_TOKEN): ignored.
        let config = Config::load(
            None,
            vars(&[("KILAT_BIN", "x"), ("KILAT_TOKEN", "t")]),
            Table::new(),
        )
        .expect("foreign variables are ignored");
        assert!(config.token.is_none());
        let err = Config::load(
            None,
            vars(&[("KILAT_SERVER_LISTN", "127.0.0.1:1")]),
            Table::new(),
        )
        .expect_err("typo in key");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn example_file_in_the_repository_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kilat.example.toml");
        let config = Config::load(Some(&path), vars(&[]), Table::new()).expect("example loads");
        let chat = config
            .node
            .namespace_options("chat:room")
            .expect("example configures chat");
        assert_eq!(chat.history_size, 100);
    }

    #[test]
    fn rendered_config_loads_back() {
        let config = Config::default();
        let text = config.to_toml();
        let table: Table = toml::from_str(&text).expect("rendered config is TOML");
        let again = Config::deserialize(Value::Table(table)).expect("rendered config is valid");
        assert_eq!(again.server.listen, config.server.listen);
    }
}
