//! The `kilat` binary: a thin command line over `kilat-server`, `kilat-transport` and friends.

mod demo;
mod pubsub;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kilat_server::Config;
use toml::{Table, Value};

/// kilat ("lightning"): a real-time messaging server.
///
/// Persistent, full-duplex connections to browsers and devices, with channels, presence,
/// history and recovery. Run `kilat serve --dev` to try it locally, then open
/// http://127.0.0.1:8000/.
#[derive(Debug, Parser)]
#[command(name = "kilat", version, propagate_version = true, after_help = HELP_FOOTER)]
struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

const HELP_FOOTER: &str = "\
Configuration is read from (later wins): built-in defaults, the file named by --config or
KILAT_CONFIG, KILAT_<SECTION>_<KEY> environment variables (e.g. KILAT_SERVER_LISTEN), and flags.
`kilat config` prints every key with its default. Logs: --log / KILAT_LOG / RUST_LOG take levels
per module (`info,kilat_server=debug`); --log-format json for log shippers. Metrics: /metrics.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default command).
    ///
    /// Without --dev the server is locked down: clients must authenticate and channels exist
    /// only when configured as namespaces. --dev opens everything for local experiments.
    ///
    /// SIGTERM or Ctrl-C drains: /ready answers 503 for server.drain_grace (5 s; 0 with --dev)
    /// so a load balancer moves away, then clients are told to reconnect elsewhere (3000), then
    /// the process exits; a second signal stops at once (docs/deployment.md, "Draining").
    Serve(ServeArgs),
    /// Run a WebSocket echo server on kilat's own transport (every path echoes every message).
    ///
    /// For conformance suites (Autobahn/kosoku) and for debugging WebSocket clients.
    Echo(EchoArgs),
    /// Print the effective configuration as TOML (defaults merged with file, env and flags).
    Config(ServeArgs),
    /// Follow channels and print each publication as one JSON line (reconnects and recovers).
    Sub(pubsub::SubArgs),
    /// Publish JSON to a channel (or each stdin line with `-`, or bytes with --file/--binary)
    /// and print the offset it got.
    #[command(alias = "publish")]
    Pub(pubsub::PubArgs),
    /// Mint a token signed with the configured HMAC secret (token.secret / --token-secret).
    ///
    /// Example: kilat token --token-secret "$SECRET" --user alice --ttl 1h
    Token(TokenArgs),
    /// Generate load against a server and measure it (see `kilat bench idle --help`).
    Bench(kilat_bench::BenchArgs),
    /// The demos' simulated feeds as separate processes (see `kilat demo feed --help`).
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    /// Configuration file (TOML); see docs/configuration.md and kilat.example.toml.
    #[arg(long, short = 'c', env = "KILAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [config: server.listen, default 127.0.0.1:8000].
    #[arg(long, short = 'l', value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Insecure local mode: anonymous clients, client publish, history, presence and
    /// join/leave in every namespace. Never use it on a public address.
    #[arg(long)]
    dev: bool,
    /// Most open connections; further upgrades get HTTP 503 [config: server.max_connections,
    /// default 0: as many as the open-files limit allows].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Largest client message in bytes; larger ones close the connection with 1009
    /// [config: websocket.max_message_size, default 65536].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Do not negotiate permessage-deflate [config: websocket.compression = false].
    #[arg(long)]
    no_compression: bool,
    /// Seconds between application pings [config: node.ping_interval, default 25].
    #[arg(long, value_name = "SECONDS")]
    ping_interval: Option<f64>,
    /// Seconds a client has to answer a ping [config: node.pong_timeout, default 10].
    #[arg(long, value_name = "SECONDS")]
    pong_timeout: Option<f64>,
    /// HMAC secret for HS256/384/512 tokens [config: token.secret].
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// PEM file with the public key for RS*/ES*/EdDSA tokens [config: token.public_key holds
    /// the PEM text].
    #[arg(long, value_name = "FILE")]
    token_public_key: Option<PathBuf>,
    /// JWKS URL to fetch verification keys from (cached, refreshed on an unknown `kid`)
    /// [config: token.jwks_url].
    #[arg(long, value_name = "URL")]
    token_jwks_url: Option<String>,
    /// PEM certificate chain: serve https:// and wss:// (reloaded on SIGHUP)
    /// [config: server.tls_cert].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert [config: server.tls_key].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Browser origin allowed to connect, e.g. https://app.example.com or https://*.example.com;
    /// repeatable; `*` allows all. Default: only this server's own origin
    /// [config: server.allowed_origins].
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// Password of the admin console at /admin; without it the console is off, except with
    /// --dev, which prints a one-time password [config: server.admin_password].
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "KILAT_SERVER_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    admin_password: Option<String>,
    /// Key for the server HTTP API (`Authorization: apikey <key>`) [config: api.key].
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Engine: `memory` (one node) or `redis` (nodes share channels, history and presence
    /// through Redis) [config: engine.kind].
    #[arg(long, value_name = "KIND", value_parser = ["memory", "redis"])]
    engine: Option<String>,
    /// Redis URL for --engine redis, e.g. redis://127.0.0.1:6379 [config: engine.redis_url].
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Backend hook for `connect` (authenticate without a token, e.g. by session cookie)
    /// [config: proxy.connect_url]. See docs/proxy.md.
    #[arg(long, value_name = "URL")]
    proxy_connect_url: Option<String>,
    /// Backend hook for subscribes in namespaces with `proxy_subscribe` [config: proxy.subscribe_url].
    #[arg(long, value_name = "URL")]
    proxy_subscribe_url: Option<String>,
    /// Backend hook for publishes in namespaces with `proxy_publish` [config: proxy.publish_url].
    #[arg(long, value_name = "URL")]
    proxy_publish_url: Option<String>,
    /// Backend hook answering `rpc` commands [config: proxy.rpc_url].
    #[arg(long, value_name = "URL")]
    proxy_rpc_url: Option<String>,
    /// Backend hook receiving `send` messages [config: proxy.send_url].
    #[arg(long, value_name = "URL")]
    proxy_send_url: Option<String>,
    /// Backend hook extending connections at expiry [config: proxy.refresh_url].
    #[arg(long, value_name = "URL")]
    proxy_refresh_url: Option<String>,
    /// Log format: `pretty` (one line per event for people; colours on a terminal) or `json`
    /// (one JSON object per line, with the connection's span fields, for log shippers).
    #[arg(
        long,
        env = "KILAT_LOG_FORMAT",
        default_value = "pretty",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
    /// Log levels, overall and per module, RUST_LOG-style: `info`, `warn,kilat_server=debug`,
    /// `info,kilat_core::session=trace`; `info,kilat::conn=debug` puts the connection's id on
    /// every line it logs (about 0.5 KiB more per connection) [env: KILAT_LOG, then RUST_LOG;
    /// default: info].
    #[arg(long = "log", value_name = "FILTER")]
    log_filter: Option<String>,
}

#[derive(Debug, Args)]
struct EchoArgs {
    /// Address to listen on.
    #[arg(
        long,
        short = 'l',
        default_value = "127.0.0.1:9001",
        value_name = "ADDR"
    )]
    listen: SocketAddr,
    /// Largest message in bytes (Autobahn's 9.x cases send 16 MiB).
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    max_message_size: usize,
    /// Do not negotiate permessage-deflate.
    #[arg(long)]
    no_compression: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The user id (`sub` claim); "" makes an anonymous token.
    #[arg(long, short = 'u')]
    user: String,
    /// Lifetime, e.g. `90s`, `15m`, `1h`, `7d` (no expiry when omitted).
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<std::time::Duration>,
    /// Make a subscription token for this channel instead of a connection token.
    #[arg(long)]
    channel: Option<String>,
    /// JSON attached as `info` (shown in presence, join/leave and publications).
    #[arg(long, value_name = "JSON")]
    info: Option<String>,
    /// Server-side channels to subscribe the connection to at connect (repeatable).
    #[arg(long = "subscribe", value_name = "CHANNEL")]
    channels: Vec<String>,
    /// Token id (`jti` claim): the server API's `revoke` can then revoke this one token.
    #[arg(long, value_name = "ID")]
    jti: Option<String>,
    /// HMAC algorithm.
    #[arg(long, default_value = "HS256", value_parser = ["HS256", "HS384", "HS512"])]
    alg: String,
    /// HMAC secret to sign with: the server's token.secret [env: KILAT_TOKEN_SECRET; config:
    /// token.secret].
    #[arg(long, value_name = "SECRET")]
    token_secret: Option<String>,
    /// Configuration file to read token.secret from (the server's kilat.toml).
    #[arg(long, short = 'c', env = "KILAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Parses `90`, `90s`, `15m`, `1h` or `7d`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 90s, 15m, 1h, 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}` (use s, m, h or d)"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    #[default]
    #[value(alias = "text")]
    Pretty,
    /// One JSON object per line.
    Json,
}

impl ServeArgs {
    /// The flags that were given, as a TOML table laid over the other configuration layers.
    fn overrides(&self) -> Table {
        let mut table = Table::new();
        let mut set = |section: &str, key: &str, value: Value| {
            let entry = table
                .entry(section)
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(t) = entry {
                t.insert(key.to_owned(), value);
            }
        };
        if let Some(listen) = self.listen {
            set("server", "listen", Value::String(listen.to_string()));
        }
        if let Some(n) = self.max_connections {
            set("server", "max_connections", Value::Integer(clamp_i64(n)));
        }
        if let Some(n) = self.max_message_size {
            set(
                "websocket",
                "max_message_size",
                Value::Integer(clamp_i64(n)),
            );
        }
        if self.no_compression {
            set("websocket", "compression", Value::Boolean(false));
        }
        if self.dev {
            set("node", "dev", Value::Boolean(true));
        }
        if let Some(s) = self.ping_interval {
            set("node", "ping_interval", Value::Float(s));
        }
        if let Some(s) = self.pong_timeout {
            set("node", "pong_timeout", Value::Float(s));
        }
        if let Some(secret) = &self.token_secret {
            set("token", "secret", Value::String(secret.clone()));
        }
        if let Some(url) = &self.token_jwks_url {
            set("token", "jwks_url", Value::String(url.clone()));
        }
        if let Some(path) = &self.tls_cert {
            set(
                "server",
                "tls_cert",
                Value::String(path.display().to_string()),
            );
        }
        if let Some(path) = &self.tls_key {
            set(
                "server",
                "tls_key",
                Value::String(path.display().to_string()),
            );
        }
        if !self.allowed_origins.is_empty() {
            let list = self
                .allowed_origins
                .iter()
                .cloned()
                .map(Value::String)
                .collect();
            set("server", "allowed_origins", Value::Array(list));
        }
        if let Some(kind) = &self.engine {
            set("engine", "kind", Value::String(kind.clone()));
        }
        if let Some(url) = &self.redis_url {
            set("engine", "redis_url", Value::String(url.clone()));
        }
        let hooks = [
            ("connect_url", &self.proxy_connect_url),
            ("subscribe_url", &self.proxy_subscribe_url),
            ("publish_url", &self.proxy_publish_url),
            ("rpc_url", &self.proxy_rpc_url),
            ("send_url", &self.proxy_send_url),
            ("refresh_url", &self.proxy_refresh_url),
        ];
        for (key, url) in hooks {
            if let Some(url) = url {
                set("proxy", key, Value::String(url.clone()));
            }
        }
        if let Some(key) = &self.api_key {
            set("api", "key", Value::String(key.clone()));
        }
        if let Some(password) = &self.admin_password {
            set("server", "admin_password", Value::String(password.clone()));
        }
        table
    }

    fn load(&self) -> Result<Config> {
        let mut overrides = self.overrides();
        if let Some(path) = &self.token_public_key {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token public key {}", path.display()))?;
            let mut token = Table::new();
            token.insert("public_key".into(), Value::String(pem));
            kilat_server::config::merge(
                &mut overrides,
                Table::from_iter([("token".to_owned(), Value::Table(token))]),
            );
        }
        Config::load(self.config.as_deref(), std::env::vars(), overrides)
            .context("loading configuration")
    }
}

fn clamp_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (log_format, log_filter) = match &cli.command {
        Some(Command::Serve(args)) => (args.log_format, args.log_filter.clone()),
        _ => (LogFormat::Pretty, None),
    };
    if let Err(message) = init_logging(log_format, log_filter.as_deref()) {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(dispatch(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::default()))
    {
        Command::Serve(args) => serve(args).await,
        Command::Echo(args) => echo(args).await,
        Command::Bench(args) => kilat_bench::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Token(args) => token(args),
        Command::Sub(args) => pubsub::sub(args).await,
        Command::Pub(args) => pubsub::publish(args).await,
        Command::Config(args) => {
            print!("{}", args.load()?.to_toml());
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config = args.load()?;
    let addr = config.server.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding {addr} (hint: is another server on that port? try --listen 127.0.0.1:0)")
    })?;
    let local = listener.local_addr().context("reading the bound address")?;
    if config.node.dev {
        tracing::warn!(
            "DEV MODE: anonymous clients may subscribe, publish and read presence and history in every namespace. This is insecure; never expose it."
        );
    }
    if config.api.key.is_none() && !config.node.dev {
        tracing::info!(
            "server API disabled: set --api-key (or api.key) to enable POST /api/<method>"
        );
    } else if config.api.key.is_none() {
        tracing::warn!("DEV MODE: the server API is open without a key");
    }
    let engine = match config.engine.kind {
        kilat_server::config::EngineKind::Memory => "memory (single node)".to_owned(),
        kilat_server::config::EngineKind::Redis => {
            format!("redis at {}", config.engine.redis_target())
        }
    };
    tracing::info!(
        address = %local,
        engine = %engine,
        compression = config.websocket.compression,
        max_connections = config.server.max_connections,
        detailed_metrics = config.server.detailed_metrics,
        "kilat {} listening: open {http}://{local}/ ; WebSocket endpoint {ws}://{local}/connection/websocket",
        env!("CARGO_PKG_VERSION"),
        http = if config.server.tls_cert.is_some() { "https" } else { "http" },
        ws = if config.server.tls_cert.is_some() { "wss" } else { "ws" },
    );
    let shutdown = async {
        shutdown_signal().await;
        tracing::info!("draining (send the signal again, e.g. Ctrl-C, to stop at once)");
        // A second signal during the drain means "now": an operator at a terminal should not
        // have to wait out `drain_grace`.
        tokio::spawn(async {
            shutdown_signal().await;
            tracing::warn!("second signal during the drain: stopping now");
            std::process::exit(130);
        });
    };
    if config.node.dev {
        tracing::info!(
            "DEV MODE: the ticker demo feed runs in-process (500 symbols with bursts, published \
             to ticker:all through this server's HTTP API; open /demo/ticker)"
        );
        let key = config.api.key.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = demo::ticker(local.to_string(), key.clone()).await {
                    tracing::warn!(%error, "ticker demo feed stopped; restarting in 5 s");
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
        if config.server.metrics {
            tracing::info!(
                "DEV MODE: the monitor demo feed runs in-process (this node's /metrics as figures \
                 in monitor:node each second while watched, alert rules of alerts:ops evaluated; \
                 open /demo/monitor)"
            );
            let key = config.api.key.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(error) =
                        demo::monitor::monitor(local.to_string(), key.clone(), "node".into()).await
                    {
                        tracing::warn!(%error, "monitor demo feed stopped; restarting in 5 s");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            });
        }
    }
    kilat_server::run(listener, config, shutdown).await?;
    Ok(())
}

fn token(args: TokenArgs) -> Result<()> {
    // The same layers as the server's (file, KILAT_* variables, flags), so the secret comes
    // from wherever the server takes it.
    let config = ServeArgs {
        config: args.config,
        token_secret: args.token_secret,
        ..ServeArgs::default()
    }
    .load()?;
    let secret = config
        .token
        .as_ref()
        .and_then(|t| t.secret.clone())
        .context("no HMAC secret configured (hint: pass --token-secret, set KILAT_TOKEN_SECRET, or token.secret in kilat.toml)")?;
    let mut request = kilat_auth::TokenRequest::connection(args.user);
    request.ttl = args.ttl;
    request.channel = args.channel;
    request.channels = args.channels;
    request.jti = args.jti;
    if let Some(info) = args.info {
        request.info = Some(serde_json::from_str(&info).context("--info must be JSON")?);
    }
    let alg = match args.alg.as_str() {
        "HS384" => kilat_auth::Algorithm::HS384,
        "HS512" => kilat_auth::Algorithm::HS512,
        _ => kilat_auth::Algorithm::HS256,
    };
    let token = kilat_auth::mint(secret.as_bytes(), alg, &request).context("minting the token")?;
    println!("{token}");
    Ok(())
}

async fn echo(args: EchoArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!("kilat echo listening on ws://{local}/ (every path echoes)");
    let config = kilat_transport::ws::WsConfig {
        max_message_size: args.max_message_size,
        deflate: !args.no_compression,
        ..Default::default()
    };
    kilat_transport::ws::echo::serve(listener, config, shutdown_signal())
        .await
        .context("echo server failed")
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

/// Installs the log subscriber: levels from `--log`, else `KILAT_LOG`, else `RUST_LOG`, else
/// `info`; a filter that does not parse is an error naming where it came from.
fn init_logging(format: LogFormat, flag: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let (source, directives) = match (flag, std::env::var("KILAT_LOG"), std::env::var("RUST_LOG")) {
        (Some(flag), _, _) => ("--log", flag.to_owned()),
        (None, Ok(v), _) => ("KILAT_LOG", v),
        (None, Err(_), Ok(v)) => ("RUST_LOG", v),
        (None, Err(_), Err(_)) => ("the default", "info".to_owned()),
    };
    let filter = EnvFilter::try_new(&directives).map_err(|error| {
        format!(
            "{source} = `{directives}` is not a log filter: {error} (hint: a level such as \
             `info`, or per module: `warn,kilat_server=debug,kilat_core::session=trace`)"
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        // Span fields (the connection id) go on every line; the current span is enough.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
