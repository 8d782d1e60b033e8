//! The kilat server as a library: configuration, the HTTP router on one listener, the wiring of
//! transports to the hub, and graceful shutdown.
//!
//! - [`config`]: `kilat.toml`, `KILAT_*` variables and flag overrides, merged in that order.
//! - `engine`: builds the configured engine; the server keeps its node registry and inbox.
//! - [`listener`]: the accept loop, TLS (reloaded on SIGHUP) and the handshake timeout.
//! - `router`: every endpoint of docs/protocol.md section 1, the web UI, demos and the SDK.
//! - `transport`: every client transport in one place: `driver` (the `Wire` trait and the one
//!   connection loop), `admission` (the step every transport takes first), `websocket`,
//!   `emulation` (SSE, HTTP streaming and the emulation endpoint) and `front` (the first request
//!   read before hyper, so SSE and HTTP streams run on the socket).
//! - `socketio`: Engine.IO v4 and Socket.IO v5 for Socket.IO clients (docs/socketio.md), a
//!   `Wire` on the shared driver.
//! - `origin`: which browser origins may connect and call the API.
//! - `body`: request bodies read with a size limit, a deadline and a minimum rate.
//! - `api`: the server HTTP API (`POST /api/<method>`) and its OpenAPI document.
//! - `auth`: kilat-auth's JWT verifier as the node's `Authenticator`.
//! - [`proxy`]: the application backend's HTTP hooks (`[proxy]`, `docs/proxy.md`).
//! - `assets`: the web UI, demos and JavaScript SDK embedded in the binary.
//! - `metrics`: `/metrics` in the Prometheus text format.
//! - `glob`: `*`/`?` patterns for the API's channel filter and the origin allowlist.
//!
//! Design decisions:
//! - [`run`] takes a bound listener and a shutdown future, so tests start a real server on port 0
//!   and stop it deterministically (STYLE.md section 2).
//! - Connections are counted by a semaphore taken before the upgrade is accepted: past the limit a
//!   new upgrade gets HTTP 503 and nobody already connected notices.
//! - Shutdown drains: readiness turns 503 first while the listener keeps accepting (and
//!   refusing with 503) for a grace period a load balancer can notice, then every session is
//!   told 3000 with a reconnect spread, the listener stops, and the process waits a bounded
//!   time for them to flush, then for
//!   the node's background tasks (engine unsubscribes and leaves) within the same timeout.
#![warn(missing_docs)]

mod admin;
mod api;
mod assets;
mod auth;
mod body;
mod checks;
pub mod config;
mod cors;
mod engine;
mod glob;
pub mod listener;
mod metrics;
mod origin;
pub mod proxy;
pub mod pusher;
mod revoke;
mod router;
mod send;
mod socketio;
mod transport;

/// Entry points for the fuzz targets in `fuzz/` (not an API): the parsers that read request
/// heads and origins straight from the network.
#[doc(hidden)]
pub mod fuzzing {
    /// Classifies `bytes` as the first request of a connection, like the listener does; returns
    /// whether it was taken as a stream request. Must never panic.
    pub fn stream_head(bytes: &[u8]) -> bool {
        crate::transport::front::classify_for_fuzzing(bytes)
    }

    /// Decodes one client message of the Pusher protocol and, when it is a subscription, checks
    /// its channel name; translates `data` as if the hub had sent it to Pusher clients. Returns
    /// whether the message decoded. Must never panic.
    pub fn pusher_message(data: &[u8]) -> bool {
        if let Ok(crate::pusher::protocol::ClientMessage::Subscribe { channel, .. }) =
            crate::pusher::protocol::decode(data)
        {
            let _ = crate::pusher::protocol::channel_kind(&channel);
        }
        let _ = crate::pusher::protocol::translate(data);
        crate::pusher::protocol::decode(data).is_ok()
    }

    /// Checks `origin` against a dev-mode policy on a loopback listener and against one with a
    /// public URL and allowed patterns; returns both verdicts. Must never panic.
    pub fn origin(origin: &str, public_url: &str, pattern: &str) -> (bool, bool) {
        use axum::http::{HeaderMap, HeaderValue, header::ORIGIN};
        let Ok(value) = HeaderValue::from_str(origin) else {
            return (false, false);
        };
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, value);
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 8000));
        let dev = crate::origin::OriginPolicy::new(&[], listen, false, None, true);
        let configured = crate::origin::OriginPolicy::new(
            &[pattern.to_owned()],
            listen,
            true,
            Some(public_url),
            false,
        );
        (dev.allows(&headers), configured.allows(&headers))
    }

    /// Picks the client address behind `peer` from `forwarded_for` (an `X-Forwarded-For`
    /// value) with `trusted` (comma-separated CIDRs) as the trusted proxies; `None` when
    /// `trusted` does not parse. Must never panic.
    pub fn forwarded_for(
        peer: std::net::IpAddr,
        forwarded_for: &str,
        trusted: &str,
    ) -> Option<std::net::IpAddr> {
        use crate::transport::peer::{TrustedProxies, client_ip};
        let list: Vec<String> = trusted.split(',').map(str::to_owned).collect();
        let trusted = TrustedProxies::parse(&list).ok()?;
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(value) = axum::http::HeaderValue::from_str(forwarded_for) {
            headers.insert("x-forwarded-for", value);
        }
        Some(client_ip(peer, &headers, &trusted))
    }

    /// Decodes `bytes` as an Engine.IO polling payload, its Socket.IO packets, a Socket.IO
    /// packet alone, and a hub frame as the Socket.IO wire translates it. Must never panic.
    pub fn socketio_packets(bytes: &[u8]) {
        crate::socketio::fuzz_packets(bytes);
    }
}

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
    pub(crate) sessions: transport::emulation::Sessions,
    /// Server API key and idempotency memory.
    pub(crate) api: api::ApiHandle,
    /// When the server started, for `info`.
    pub(crate) started: std::time::Instant,
    /// Which browser origins may connect and call the API (`origin.rs`): the server's own,
    /// the configured ones, and in dev mode every loopback origin.
    pub(crate) origins: Arc<origin::OriginPolicy>,
    /// `server.body_timeout`: the longest any request body may take to arrive (`body.rs`).
    pub(crate) body_timeout: std::time::Duration,
    /// The engine's node registry (behind `info`) and node inboxes (emulation POSTs that
    /// reach another node).
    pub(crate) cluster: engine::Cluster,
    /// Which unauthenticated extras the router serves (`server.metrics`, `server.ui`).
    pub(crate) exposed: Exposed,
    /// The `/metrics` registry.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The admin console; `None` when it is off.
    pub(crate) admin: Option<Arc<admin::Admin>>,
    /// The effective configuration with secrets redacted, for the `config` API method.
    pub(crate) effective_config: Arc<serde_json::Value>,
    /// The Pusher Channels apps (`[[pusher.apps]]`, docs/pusher.md).
    pub(crate) pusher: Arc<pusher::Pusher>,
    /// Engine.IO sessions of this node by id (`socketio`).
    pub(crate) sio_sessions: socketio::SioSessions,
    /// `[socketio]` as the handlers use it.
    pub(crate) sio: Arc<socketio::Settings>,
    /// Where the Engine.IO endpoint is served; `None` when `[socketio] enabled = false`.
    pub(crate) sio_path: Option<String>,
    /// Connection and handshake limits per client address (`transport/peer.rs`).
    pub(crate) per_ip: Arc<transport::peer::PerIp>,
    /// The bound on concurrent handshakes (`server.max_handshakes`, `transport/handshakes.rs`).
    pub(crate) handshakes: Arc<transport::handshakes::Handshakes>,
}

/// The endpoints served without authentication that a deployment may switch off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exposed {
    /// `GET /metrics`.
    pub(crate) metrics: bool,
    /// The web UI and demos (`/`, `/ui/`, `/demo/`).
    pub(crate) ui: bool,
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
    /// The configuration contradicts itself (see [`Config::check`]).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Connections held when `server.max_connections` is 0 and the open-files limit is unknown or
/// unlimited.
const FALLBACK_MAX_CONNECTIONS: usize = 100_000;

/// Raises the soft open-files limit to the hard one (every connection is a file descriptor)
/// and returns the connection limit to use: `configured`, or when it is 0 (the default) as
/// many as fit under the open-files limit. A configured limit that does not fit is kept and
/// warned about once, with the fix, so the shortfall shows at start-up rather than as refused
/// accepts under load.
fn check_open_files(configured: usize) -> usize {
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
    let fits = limit
        .current
        .map(|soft| usize::try_from(soft.saturating_sub(RESERVED)).unwrap_or(usize::MAX));
    match (configured, fits) {
        (0, Some(fits)) => {
            tracing::info!(
                max_connections = fits,
                "server.max_connections = {fits}: what the open-files limit allows (raise the \
                 limit, ulimit -n or LimitNOFILE= in systemd, to hold more)"
            );
            fits
        }
        (0, None) => FALLBACK_MAX_CONNECTIONS,
        (configured, Some(fits)) if configured > fits => {
            tracing::warn!(
                max_connections = configured,
                "server.max_connections = {configured} is above what the open-files limit \
                 allows (about {fits}); past that, new connections are refused. Raise the limit \
                 (ulimit -n, LimitNOFILE= in systemd) or set max_connections = 0 to fit it"
            );
            configured
        }
        (configured, _) => configured,
    }
}

/// Runs the server on `listener` until `shutdown` resolves, then drains and returns.
///
/// On shutdown the node drains (see `drain`): `/ready` turns 503 and new connections are
/// refused for `config.server.drain_grace`, then every connection gets disconnect 3000 with a
/// reconnect spread (`drain_spread`), the listener stops, and the call returns once the
/// connections have closed or `config.server.shutdown_timeout` has passed, whichever is first.
///
/// # Errors
/// [`ServerError::Io`] when serving fails.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.check()?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let max_connections = check_open_files(config.server.max_connections);
    let pusher_apps = config.pusher.apps(config.node.dev);
    let mut node_config = config.node.clone();
    for app in &pusher_apps {
        node_config
            .namespaces
            .entry(app.namespace())
            .or_insert_with(pusher::namespace_options);
        node_config
            .namespaces
            .entry(app.cache_namespace())
            .or_insert_with(pusher::cache_namespace_options);
    }
    let mut metrics = metrics::Metrics::new(
        config.server.detailed_metrics,
        node_config.namespaces.keys().cloned(),
    );
    let wrap = |engine: &'static str, broker, presence| {
        instrument_engine(&metrics, engine, broker, presence)
    };
    let (node, cluster) = engine::start(&config.engine, node_config, &wrap).await?;
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
    let connections = Arc::new(Semaphore::new(max_connections));
    let draining = Arc::new(AtomicBool::new(false));
    let started = std::time::Instant::now();
    let handshakes = Arc::new(transport::handshakes::Handshakes::new(
        config.server.max_handshakes,
    ));
    metrics.watch(metrics::Sources {
        node: node.clone(),
        connections: connections.clone(),
        max_connections,
        draining: draining.clone(),
        started,
        handshakes: handshakes.clone(),
    });
    let state = AppState {
        node: node.clone(),
        ws: Arc::new(config.websocket.transport()),
        connections,
        max_connections,
        draining,
        tasks: TaskTracker::new(),
        sessions: transport::emulation::Sessions::default(),
        api: Arc::new(api::Api::new(config.api.key.clone(), config.node.dev)),
        started,
        body_timeout: config.server.body_timeout,
        origins: Arc::new(origin::OriginPolicy::new(
            &config.server.allowed_origins,
            listener.local_addr()?,
            config.server.tls_cert.is_some(),
            config.server.public_url.as_deref(),
            config.node.dev,
        )),
        cluster: cluster.clone(),
        exposed: Exposed {
            metrics: config.server.metrics,
            ui: config.server.ui,
        },
        metrics: Arc::new(metrics),
        admin: admin_console(&config),
        effective_config: Arc::new(admin::redacted_config(&config)),
        pusher: Arc::new(pusher::Pusher::new(
            pusher_apps,
            &config.websocket.transport(),
            &node,
            cluster.shared_presence.clone(),
        )),
        sio_sessions: socketio::SioSessions::default(),
        sio: Arc::new(socketio::Settings::new(&config)),
        sio_path: config
            .socketio
            .enabled
            .then(|| config.socketio.path.clone()),
        per_ip: Arc::new(transport::peer::PerIp::new(
            config.server.max_connections_per_ip,
            config.server.handshake_rate_per_ip,
            config.server.handshake_burst_per_ip,
            transport::peer::TrustedProxies::parse(&config.server.trusted_proxies)
                .map_err(config::ConfigError::Contradiction)?,
        )),
        handshakes,
    };
    log_origins(&config, &state.origins);
    if cluster.shared {
        tokio::spawn(heartbeat(cluster.registry.clone(), state.clone()));
        tokio::spawn(reap_dead_nodes(cluster.registry.clone(), state.clone()));
        // Emulation POSTs that land on another node come here through the engine.
        match cluster.inbox.open(node.id()).await {
            Ok(inbox) => {
                // Revocations are applied first, then Engine.IO polls and posts for this
                // node's sessions; emulation commands go on, in order.
                let inbox = revoke::split_inbox(inbox, node.clone());
                let (emulation, forwarded) = tokio::sync::mpsc::channel(1024);
                tokio::spawn(socketio::cluster::receive(inbox, emulation, state.clone()));
                tokio::spawn(transport::emulation::receive_forwarded(
                    forwarded,
                    state.sessions.clone(),
                ));
            }
            Err(error) => tracing::warn!(
                error = %error_chain(&error),
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
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = config.server.drain_grace(config.node.dev);
    let on_signal = drain(
        state.clone(),
        config.server.clone(),
        grace,
        shutdown,
        stop_tx,
    );
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
    let stopping = tokio::time::Instant::now();
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
    // What the closed sessions left running in the node (engine unsubscribes and leaves, hook
    // calls), within what is left of the same timeout.
    state
        .node
        .finish_tasks(deadline.saturating_sub(stopping.elapsed()))
        .await;
    if let Err(error) = cluster.registry.deregister(state.node.id()).await {
        tracing::debug!(error = %error_chain(&error), "could not remove this node from the registry");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Says which browser origins count as the server's own, and warns when pages served from a
/// domain name would be refused because nothing names it.
fn log_origins(config: &Config, origins: &origin::OriginPolicy) {
    tracing::debug!(own = ?origins.own(), allowed = ?config.server.allowed_origins, "browser origins");
    let ip = config.server.listen.ip();
    if !ip.is_loopback()
        && config.server.public_url.is_none()
        && config.server.allowed_origins.is_empty()
    {
        tracing::warn!(
            own = ?origins.own(),
            "browsers are accepted only from the listen address's own origin; pages served \
             from a domain name are refused: set server.public_url (e.g. \
             https://rt.example.com) or server.allowed_origins"
        );
    }
}

/// The drain, phase by phase, once `shutdown` resolves; resolving stops the listener.
///
/// 1. `/ready` answers 503 and new connections get 503 with `Retry-After` for `grace`
///    (`drain_grace`; none in dev mode), while the listener keeps accepting: a load balancer's health check sees
///    the node leave and sends new clients elsewhere (a closed port instead would make it
///    route to a dead address until its checks fail).
/// 2. Every open connection is told 3000 with `delay_ms` = `drain_spread`, so the clients
///    reconnect to the other nodes spread over that time and recover what they miss there.
/// 3. The listener stops; the caller waits up to `shutdown_timeout` for connections to
///    flush their queues and close.
async fn drain(
    state: AppState,
    server: config::ServerConfig,
    grace: std::time::Duration,
    shutdown: impl Future<Output = ()>,
    stop: tokio::sync::oneshot::Sender<()>,
) {
    shutdown.await;
    state.draining.store(true, Ordering::SeqCst);
    if !grace.is_zero() {
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "draining: /ready 503 and new connections refused (503, Retry-After) for {:.1}s \
             while {} clients carry on",
            grace.as_secs_f64(),
            state.node.stats().connections
        );
        tokio::time::sleep(grace).await;
    }
    let spread_ms = u32::try_from(server.drain_spread.as_millis()).unwrap_or(u32::MAX);
    let disconnect = kilat_protocol::Disconnect::SHUTDOWN.with_delay_ms(spread_ms);
    let told = state.node.shutdown_with(disconnect);
    tracing::info!(
        clients = told,
        spread_s = server.drain_spread.as_secs_f64(),
        "disconnecting {told} clients (3000), told to reconnect spread over {:.1}s; \
         waiting up to {:.1}s for them to flush",
        server.drain_spread.as_secs_f64(),
        server.shutdown_timeout.as_secs_f64()
    );
    let _ = stop.send(());
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

/// How often a node refreshes its entry in the node registry; entries live three times as
/// long, so a killed node disappears from `info` within that.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// An error with its sources, `: `-separated, for a log line (engine errors keep the
/// backend's detail in their source).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Keeps this node's entry (its stats) in the node registry fresh.
async fn heartbeat(registry: Arc<dyn kilat_core::NodeRegistry>, state: AppState) {
    let mut ticker = tokio::time::interval(HEARTBEAT);
    while !state.draining.load(Ordering::SeqCst) {
        ticker.tick().await;
        publish_heartbeat(&registry, &state).await;
        revoke::merge_from(&registry, &state.node).await;
    }
}

/// Writes this node's entry (its stats, and the revocations it knows for nodes that start
/// later) into the node registry.
pub(crate) async fn publish_heartbeat(
    registry: &Arc<dyn kilat_core::NodeRegistry>,
    state: &AppState,
) {
    let mut info = api::node_info(state);
    info["revoked"] = serde_json::json!(revoke::heartbeat_entries(&state.node));
    let Ok(raw) = serde_json::value::to_raw_value(&info) else {
        return;
    };
    if let Err(error) = registry
        .heartbeat(state.node.id(), &raw, HEARTBEAT * 3)
        .await
    {
        tracing::warn!(error = %error_chain(&error), "node registry heartbeat failed");
    }
}

/// Removes the presence of nodes that died, with a leave for each member: a dead node is out
/// of the registry within `HEARTBEAT * 3`, and the first survivor to tick after that removes
/// its members (docs/protocol.md, presence). A task of its own, so a big removal never delays
/// this node's heartbeat.
async fn reap_dead_nodes(registry: Arc<dyn kilat_core::NodeRegistry>, state: AppState) {
    let mut ticker = tokio::time::interval(HEARTBEAT);
    while !state.draining.load(Ordering::SeqCst) {
        ticker.tick().await;
        if let Err(error) = registry.reap_dead_nodes(state.node.id()).await {
            tracing::warn!(error = %error_chain(&error), "removing a dead node's presence failed");
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
