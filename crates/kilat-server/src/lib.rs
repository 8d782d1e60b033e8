//! The kilat server as a library: configuration, the HTTP router on one listener, the wiring of
//! transports to the hub, and graceful shutdown.
//!
//! - [`config`]: `kilat.toml`, `KILAT_*` variables and flag overrides, merged in that order.
//! - `router`: every endpoint of PROTOCOL.md section 1 that exists so far, plus the web UI.
//! - `driver`: the one connection loop all transports share, joining a transport's `Wire` to a
//!   [`kilat_core::Session`].
//! - `websocket`: the upgrade handler and the WebSocket `Wire`.
//! - `emulation`: SSE and HTTP-streaming transports and the emulation endpoint.
//! - `api`: the server HTTP API (`POST /api/<method>`) and its OpenAPI document.
//! - `assets`: the web UI, demos and JavaScript SDK embedded in the binary.
//! - `metrics`: `/metrics` in the Prometheus text format.
//! - [`proxy`]: the application backend's HTTP hooks (`[proxy]`, `docs/proxy.md`).
//!
//! Design decisions:
//! - [`run`] takes a bound listener and a shutdown future, so tests start a real server on port 0
//!   and stop it deterministically (STYLE.md section 2).
//! - Connections are counted by a semaphore taken before the upgrade is accepted: past the limit a
//!   new upgrade gets HTTP 503 and nobody already connected notices.
//! - Shutdown drains: readiness turns 503 first, the listener stops, every session is told 3000
//!   (reconnect elsewhere), and the process waits a bounded time for them to flush.
#![warn(missing_docs)]

mod admin;
mod api;
mod assets;
mod auth;
pub mod config;
mod driver;
mod emulation;
mod front;
mod glob;
pub mod listener;
mod metrics;
mod origin;
pub mod proxy;
mod router;
mod websocket;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kilat_core::Node;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// What the HTTP handlers share; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The hub every transport hands its sessions to.
    pub(crate) node: Node,
    /// Transport settings derived once from the config, read by each upgrade.
    pub(crate) ws: Arc<kilat_transport::ws::WsConfig>,
    /// One permit per open connection; upgrades past `max_connections` get 503.
    pub(crate) connections: Arc<Semaphore>,
    /// The configured connection limit, for `/metrics`.
    pub(crate) max_connections: usize,
    /// Set when shutdown begins: `/ready` answers 503 and new upgrades are refused.
    pub(crate) draining: Arc<AtomicBool>,
    /// Tracks connection tasks so shutdown can wait for them to flush.
    pub(crate) tasks: TaskTracker,
    /// Emulated (SSE, HTTP streaming) sessions, for routing emulation POSTs to them.
    pub(crate) sessions: emulation::Sessions,
    /// Server API key and idempotency memory.
    pub(crate) api: api::ApiHandle,
    /// When the server started, for `info`.
    pub(crate) started: std::time::Instant,
    /// Browser origins allowed to connect (empty: same origin only).
    pub(crate) allowed_origins: Arc<[String]>,
    /// The Redis engine when nodes share one, for the node registry behind `info`.
    pub(crate) redis: Option<Arc<kilat_engine_redis::RedisEngine>>,
    /// The `/metrics` registry.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The admin console; `None` when it is off.
    pub(crate) admin: Option<Arc<admin::Admin>>,
    /// The effective configuration with secrets redacted, for the `config` API method.
    pub(crate) effective_config: Arc<serde_json::Value>,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Accepting or serving on the listener failed.
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] listener::TlsError),
    /// `tls_cert` was given without `tls_key` or the other way round.
    #[error(
        "TLS needs both server.tls_cert and server.tls_key (hint: --tls-cert FILE --tls-key FILE)"
    )]
    TlsIncomplete,
    /// The Redis engine could not start.
    #[error("Redis engine: {0} (hint: is redis-server running at engine.redis_url?)")]
    Redis(#[from] kilat_engine_redis::RedisEngineError),
    /// The `[token]` section cannot build a verifier.
    #[error("invalid [token] configuration: {0}")]
    Token(#[from] kilat_auth::ConfigError),
    /// The `[proxy]` section cannot build the backend hooks.
    #[error("invalid [proxy] configuration: {0}")]
    Proxy(#[from] proxy::ProxyConfigError),
}

/// Raises the soft open-files limit to the hard one (every connection is a file descriptor) and
/// warns when `max_connections` still cannot fit under it, so the shortfall shows at start-up
/// rather than as refused accepts under load.
fn check_open_files(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    // Listeners, the epoll instance, Redis connections and log files need a few descriptors.
    const RESERVED: u64 = 64;
    if let Some(soft) = limit.current
        && (max_connections as u64).saturating_add(RESERVED) > soft
    {
        tracing::warn!(
            open_files_limit = soft,
            max_connections,
            "server.max_connections is above what the open-files limit allows: about {} \
             connections fit; raise the limit (ulimit -n, LimitNOFILE= in systemd) or lower \
             max_connections to it",
            soft.saturating_sub(RESERVED)
        );
    }
}

/// Runs the server on `listener` until `shutdown` resolves, then drains and returns.
///
/// On shutdown: `/ready` turns 503, the listener stops accepting, every connection gets
/// disconnect 3000, and the call returns once they have closed or
/// `config.server.shutdown_timeout` has passed, whichever is first.
///
/// # Errors
/// [`ServerError::Io`] when serving fails.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    check_open_files(config.server.max_connections);
    let mut metrics = metrics::Metrics::new(
        config.server.metrics,
        config.node.namespaces.keys().cloned(),
    );
    let (node, redis) = match config.engine.kind {
        config::EngineKind::Memory => {
            let broker = Arc::new(kilat_core::engine::memory::MemoryBroker::new(
                config.node.history_meta_ttl,
            ));
            let presence = Arc::new(kilat_core::engine::memory::MemoryPresence::new());
            let (broker, presence) = instrument_engine(&metrics, "memory", broker, presence);
            (
                Node::with_engine(config.node.clone(), broker, presence),
                None,
            )
        }
        config::EngineKind::Redis => {
            let engine =
                Arc::new(kilat_engine_redis::RedisEngine::connect(config.engine.redis()).await?);
            tracing::info!(redis = %config.engine.redis_target(), "connected to Redis");
            let (broker, presence) =
                instrument_engine(&metrics, "redis", engine.clone(), engine.clone());
            let node = Node::with_engine(config.node.clone(), broker, presence);
            (node, Some(engine))
        }
    };
    if let Some(detail) = &metrics.detail {
        node.set_observer(detail.clone());
    }
    if let Some(token) = &config.token {
        let verifier = kilat_auth::Verifier::new(token)?;
        let warm = verifier.clone();
        // Fetching a JWKS early turns a wrong URL into a log line at start-up, not a failed
        // first login; verification refetches on demand either way.
        tokio::spawn(async move {
            if let Err(error) = warm.prefetch().await {
                tracing::warn!(%error, "could not fetch the JWKS yet; will retry on the first token");
            }
        });
        node.set_authenticator(Arc::new(auth::JwtAuthenticator::new(verifier)));
    }
    if let Some(backend) = proxy::HttpBackend::from_config(&config.proxy)? {
        let backend: Arc<dyn kilat_core::Backend> = Arc::new(backend);
        match &metrics.detail {
            Some(detail) => node.set_backend(Arc::new(metrics::InstrumentedBackend {
                inner: backend,
                detail: detail.clone(),
            })),
            None => node.set_backend(backend),
        }
    }
    let connections = Arc::new(Semaphore::new(config.server.max_connections));
    let draining = Arc::new(AtomicBool::new(false));
    let started = std::time::Instant::now();
    metrics.watch(metrics::Sources {
        node: node.clone(),
        connections: connections.clone(),
        max_connections: config.server.max_connections,
        draining: draining.clone(),
        started,
    });
    let state = AppState {
        node: node.clone(),
        ws: Arc::new(config.websocket.transport()),
        connections,
        max_connections: config.server.max_connections,
        draining,
        tasks: TaskTracker::new(),
        sessions: emulation::Sessions::default(),
        api: Arc::new(api::Api::new(config.api.key.clone(), config.node.dev)),
        started,
        allowed_origins: config.server.allowed_origins.clone().into(),
        redis: redis.clone(),
        metrics: Arc::new(metrics),
        admin: admin_console(&config),
        effective_config: Arc::new(admin::redacted_config(&config)),
    };
    if let Some(engine) = &redis {
        tokio::spawn(heartbeat(engine.clone(), state.clone()));
        // Emulation POSTs that land on another node come here through Redis.
        match engine.node_inbox(node.id()).await {
            Ok(inbox) => {
                tokio::spawn(emulation::receive_forwarded(inbox, state.sessions.clone()));
            }
            Err(error) => tracing::warn!(
                %error,
                "no node inbox: emulation POSTs reaching another node will get 404"
            ),
        }
    }
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(listener::ReloadableCert::load(cert, key)?),
        (None, None) => None,
        _ => return Err(ServerError::TlsIncomplete),
    };
    if let Some(cert) = tls.clone() {
        tokio::spawn(reload_on_sighup(cert));
    }
    let draining = state.draining.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_node = node.clone();
    let on_signal = async move {
        shutdown.await;
        tracing::info!(
            "shutting down: refusing new connections, telling clients to reconnect (3000)"
        );
        draining.store(true, Ordering::SeqCst);
        signal_node.shutdown();
        let _ = stop_tx.send(());
    };
    let http = tokio::spawn(listener::serve(
        listener,
        state.clone(),
        tls.as_ref().map(listener::ReloadableCert::acceptor),
        config.server.handshake_timeout,
        on_signal,
        config.server.shutdown_timeout,
    ));

    // Waiting for the stop signal first keeps the drain timeout from starting before shutdown.
    let _ = stop_rx.await;
    state.tasks.close();
    let deadline = config.server.shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        state.tasks.wait().await;
        http.await
    })
    .await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(join)) => tracing::error!(error = %join, "HTTP server task failed"),
        Err(_) => tracing::warn!(
            open = state.tasks.len(),
            timeout_s = deadline.as_secs_f64(),
            "shutdown timeout reached with connections still open; closing them"
        ),
    }
    if let Some(engine) = &redis
        && let Err(error) = engine.remove_node(state.node.id()).await
    {
        tracing::debug!(%error, "could not remove this node from the registry");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The admin console when configured: with `server.admin_password`, or in dev mode with a
/// one-time password printed to stderr (on purpose not a log line: log shippers keep it).
fn admin_console(config: &Config) -> Option<Arc<admin::Admin>> {
    let secure = config.server.tls_cert.is_some();
    let password = match config.server.admin_password.as_deref() {
        Some(password) if !password.is_empty() => password.to_owned(),
        _ if config.node.dev => {
            let password = admin::Admin::one_time_password();
            eprintln!(
                "\n  admin console: http{}://{}/admin  one-time password: {password}\n  (set --admin-password to choose one)\n",
                if secure { "s" } else { "" },
                config.server.listen
            );
            password
        }
        _ => return None,
    };
    Some(Arc::new(admin::Admin::new(password, secure)))
}

/// The engine's broker and presence store, timed for `/metrics` when detailed metrics are on.
fn instrument_engine(
    metrics: &metrics::Metrics,
    engine: &'static str,
    broker: Arc<dyn kilat_core::Broker>,
    presence: Arc<dyn kilat_core::PresenceStore>,
) -> (
    Arc<dyn kilat_core::Broker>,
    Arc<dyn kilat_core::PresenceStore>,
) {
    let Some(detail) = &metrics.detail else {
        return (broker, presence);
    };
    (
        Arc::new(metrics::InstrumentedBroker {
            inner: broker,
            detail: detail.clone(),
            engine,
        }),
        Arc::new(metrics::InstrumentedPresence {
            inner: presence,
            detail: detail.clone(),
            engine,
        }),
    )
}

/// How often a node refreshes its entry in the Redis node registry; entries live three times
/// as long, so a killed node disappears from `info` within that.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps this node's entry (its stats) in the Redis node registry fresh.
async fn heartbeat(engine: Arc<kilat_engine_redis::RedisEngine>, state: AppState) {
    let mut ticker = tokio::time::interval(HEARTBEAT);
    while !state.draining.load(Ordering::SeqCst) {
        ticker.tick().await;
        let info = api::node_info(&state);
        let Ok(raw) = serde_json::value::to_raw_value(&info) else {
            continue;
        };
        if let Err(error) = engine
            .heartbeat_node(state.node.id(), &raw, HEARTBEAT * 3)
            .await
        {
            tracing::warn!(%error, "node registry heartbeat failed");
        }
    }
}

/// Reloads the TLS certificate and key whenever the process gets SIGHUP.
async fn reload_on_sighup(cert: Arc<listener::ReloadableCert>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; TLS certificates will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match cert.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: TLS reload failed; keeping the old certificate")
                }
            }
        }
    }
    #[cfg(not(unix))]
    drop(cert);
}
