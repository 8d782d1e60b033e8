//! The HTTP routes of one listener (docs/protocol.md section 1).

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::{AppState, admin, api, assets, metrics, socketio, transport};

/// Builds the router over shared state.
pub(crate) fn router(state: AppState) -> Router {
    // The emulation transports, with CORS for allowed cross-origin pages (`cors.rs`).
    let emulation = Router::new()
        .route(
            "/connection/sse",
            get(transport::emulation::sse).options(crate::cors::options),
        )
        .route(
            "/connection/stream",
            post(transport::emulation::stream).options(crate::cors::options),
        )
        .route(
            "/connection/emulation",
            post(transport::emulation::emulation).options(crate::cors::options),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::cors::emulation,
        ));
    let mut router = Router::new()
        .merge(emulation)
        .route("/connection/websocket", get(transport::websocket::upgrade))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/{method}", post(api::call))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/sdk/{*path}", get(assets::sdk))
        .route("/favicon.ico", get(assets::favicon))
        .route("/favicon.svg", get(assets::favicon))
        // The admin console answers 404 with a hint unless it is configured.
        .route("/admin", get(admin::page))
        .route("/admin/", get(admin::page))
        .route("/admin/login", post(admin::login))
        .route("/admin/logout", post(admin::logout))
        .route("/admin/session", get(admin::session))
        .route("/admin/tail", get(admin::tail))
        .route("/admin/api/{method}", post(admin::api))
        .route("/admin/{*path}", get(admin::page));
    // Both are served without authentication; a deployment can switch them off
    // (docs/security.md, "Public endpoints").
    if !state.pusher.is_empty() {
        router = router.merge(crate::pusher::routes());
    }
    if state.exposed.metrics {
        router = router.route("/metrics", get(metrics_text));
    }
    if state.exposed.ui {
        router = router
            .route("/", get(assets::index))
            .route("/ui/{*path}", get(assets::ui))
            .route("/demo", get(assets::demo_index))
            .route("/demo/", get(assets::demo_index))
            .route("/demo/{*path}", get(assets::demo));
    }
    if state.sio_path.is_some() {
        let path = state.sio_path.clone().unwrap_or_default();
        router = router.route(&path, any(socketio::handle));
        if let Some(bare) = path.strip_suffix('/').filter(|p| !p.is_empty()) {
            router = router.route(bare, any(socketio::handle));
        }
    }
    router.fallback(not_found).with_state(state)
}

/// Liveness: the process is up and serving HTTP.
async fn health() -> &'static str {
    "ok\n"
}

/// Readiness: 503 while draining so a load balancer moves traffic away.
async fn ready(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    fn state() -> AppState {
        let node = kilat_core::Node::new(kilat_core::NodeConfig::default());
        AppState {
            node: node.clone(),
            ws: Arc::new(kilat_transport::ws::WsConfig::default()),
            connections: Arc::new(tokio::sync::Semaphore::new(10)),
            max_connections: 10,
            draining: Arc::new(AtomicBool::new(false)),
            tasks: tokio_util::task::TaskTracker::new(),
            sessions: crate::transport::emulation::Sessions::default(),
            api: Arc::new(crate::api::Api::new(None, false)),
            started: std::time::Instant::now(),
            origins: Arc::default(),
            body_timeout: std::time::Duration::from_secs(10),
            cluster: crate::engine::Cluster::single(),
            exposed: crate::Exposed {
                metrics: true,
                ui: true,
            },
            metrics: Arc::new(crate::metrics::Metrics::new(false, [])),
            admin: None,
            effective_config: Arc::default(),
            pusher: Arc::new(crate::pusher::Pusher::new(
                Vec::new(),
                &kilat_transport::ws::WsConfig::default(),
                &node,
                None,
            )),
            sio_sessions: crate::socketio::SioSessions::default(),
            sio: Arc::new(crate::socketio::Settings::new(&crate::Config::default())),
            sio_path: Some("/socket.io/".to_owned()),
            per_ip: Arc::new(crate::transport::peer::PerIp::new(
                0,
                0,
                0,
                Default::default(),
            )),
            handshakes: Arc::new(crate::transport::handshakes::Handshakes::new(0)),
        }
    }

    async fn status(app: Router, path: &str) -> StatusCode {
        let request = Request::get(path).body(Body::empty()).expect("request");
        app.oneshot(request).await.expect("infallible").status()
    }

    #[tokio::test]
    async fn readiness_turns_503_while_draining_but_health_stays_ok() {
        let state = state();
        let app = router(state.clone());
        assert_eq!(status(app.clone(), "/ready").await, StatusCode::OK);
        state.draining.store(true, Ordering::SeqCst);
        assert_eq!(
            status(app.clone(), "/ready").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(app.clone(), "/health").await, StatusCode::OK);
        // New upgrades are refused while draining, before any handshake validation.
        assert_eq!(
            status(app, "/connection/websocket").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn demo_index_board_and_favicon_are_served() {
        let app = router(state());
        for path in [
            "/demo",
            "/demo/",
            "/demo/board",
            "/demo/board/crdt.js",
            "/favicon.ico",
            "/favicon.svg",
        ] {
            assert_eq!(status(app.clone(), path).await, StatusCode::OK, "{path}");
        }
        assert_eq!(
            status(app, "/demo/no-such-demo").await,
            StatusCode::NOT_FOUND
        );
    }
}
