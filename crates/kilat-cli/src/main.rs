//! The `kilat` binary: a thin command line over `kilat-server`, `kilat-transport` and friends.

mod bench;
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
`kilat config` prints every key with its default. Logs: KILAT_LOG=debug (or RUST_LOG).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default command).
    ///
    /// Without --dev the server is locked down: clients must authenticate and channels exist
    /// only when configured as namespaces. --dev opens everything for local experiments.
    Serve(ServeArgs),
    /// Run a WebSocket echo server on kilat's own transport (every path echoes every message).
    ///
    /// For conformance suites (Autobahn/kosoku) and for debugging WebSocket clients.
    Echo(EchoArgs),
    /// Print the effective configuration as TOML (defaults merged with file, env and flags).
    Config(ServeArgs),
    /// Follow channels and print each publication as one JSON line (reconnects and recovers).
    Sub(pubsub::SubArgs),
    /// Publish JSON to a channel (or each stdin line with `-`) and print the offset it got.
    Pub(pubsub::PubArgs),
    /// Generate load against a server and measure it (see `kilat bench idle --help`).
    Bench(bench::BenchArgs),
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
    /// Most open connections; further upgrades get HTTP 503 [config: server.max_connections].
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
    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "KILAT_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
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

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
enum LogFormat {
    #[default]
    Text,
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
        table
    }

    fn load(&self) -> Result<Config> {
        Config::load(self.config.as_deref(), std::env::vars(), self.overrides())
            .context("loading configuration")
    }
}

fn clamp_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Some(Command::Serve(args)) => args.log_format,
        _ => LogFormat::Text,
    };
    init_logging(log_format);
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
        Command::Bench(args) => bench::run(args).await,
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
    } else if !config.node.allow_anonymous {
        tracing::warn!(
            "anonymous connections are refused and no token verifier is configured yet: clients cannot connect. For a local try-out run `kilat serve --dev`; to allow anonymous clients set node.allow_anonymous = true."
        );
    }
    tracing::info!(
        address = %local,
        compression = config.websocket.compression,
        max_connections = config.server.max_connections,
        "kilat {} listening: open http://{local}/ ; WebSocket endpoint ws://{local}/connection/websocket",
        env!("CARGO_PKG_VERSION")
    );
    kilat_server::run(listener, config, shutdown_signal()).await?;
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

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("KILAT_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
