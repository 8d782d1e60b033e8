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
];

/// Environment variables that start with `KILAT_` but are not configuration keys.
const NON_CONFIG_VARS: &[&str] = &["KILAT_LOG", "KILAT_CONFIG", "KILAT_LOG_FORMAT"];

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
    /// Bound on each call (seconds); past it the client gets 503.
    #[serde(with = "kilat_core::config::seconds")]
    pub timeout: Duration,
    /// Handshake request headers forwarded to every hook.
    pub forward_headers: Vec<String>,
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

/// `url` with any password (the user-info part) replaced by `***`, for logs and the admin
/// console: `redis://:secret@host:6379` becomes `redis://***@host:6379`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
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
    pub max_connections: usize,
    /// How long a graceful shutdown waits for connections to close after sending them 3000.
    #[serde(with = "kilat_core::config::seconds")]
    pub shutdown_timeout: Duration,
    /// How long a new TCP connection may take to finish its TLS handshake and send its request
    /// head; slower (or silent) clients are dropped.
    #[serde(with = "kilat_core::config::seconds")]
    pub handshake_timeout: Duration,
    /// PEM certificate chain; with `tls_key`, the listener speaks TLS (`https://`, `wss://`).
    /// Both files are read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Origins allowed to open WebSocket, SSE and streaming connections from a browser
    /// (`https://app.example.com`, wildcards like `https://*.example.com`, or `*`). Empty: only
    /// the server's own origin. Requests without an `Origin` header (non-browser clients) pass.
    pub allowed_origins: Vec<String>,
    /// Detailed metrics on `/metrics`: per-transport and per-namespace counters, latency
    /// histograms, engine and proxy timings. Off leaves the counters the hub keeps anyway.
    pub metrics: bool,
    /// Password of the admin console at `/admin`; without one (and without `--dev`, which
    /// makes a one-time password) the console is off.
    pub admin_password: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            max_connections: 100_000,
            shutdown_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            allowed_origins: Vec::new(),
            metrics: true,
            admin_password: None,
        }
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
        Config::deserialize(Value::Table(merged)).map_err(ConfigError::Invalid)
    }

    /// The configuration as a TOML document (what `kilat config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
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
    fn redis_target_names_the_cluster_and_hides_passwords() {
        let mut engine = EngineConfig {
            redis_url: "redis://:hunter2@10.0.0.1:6379/0".into(),
            ..EngineConfig::default()
        };
        assert_eq!(engine.redis_target(), "redis://***@10.0.0.1:6379/0");
        engine.redis_cluster_nodes = vec!["redis://a:7000".into(), "redis://user:pw@b:7001".into()];
        assert_eq!(
            engine.redis_target(),
            "cluster [redis://a:7000, redis://***@b:7001]"
        );
        assert_eq!(redact_url("no scheme"), "no scheme");
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
