//! The Pusher Channels protocol on kilat (docs/pusher.md): pusher-js and Laravel Echo connect to
//! `/app/{key}` (`ws.rs`), the Pusher server SDKs call `/apps/{app_id}/...` (`api.rs`), both
//! signed with the app's secret (`auth.rs`). Each app's channels are kilat channels in the
//! namespace `pusher.<app id>`, so apps never mix and the hub's presence, limits and fan-out
//! apply unchanged.

pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod auth;
pub mod config;
pub(crate) mod occupancy;
pub(crate) mod protocol;
pub(crate) mod webhooks;
pub(crate) mod ws;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use kilat_core::{AllowPublish, AllowSubscribe, NamespaceOptions};

use app::App;
pub use config::{PusherApp, PusherConfig, PusherLimits, WebhookConfig};

use crate::AppState;

/// The apps and the WebSocket settings of the Pusher endpoint.
#[derive(Debug)]
pub(crate) struct Pusher {
    apps: Vec<Arc<App>>,
    /// Like `/connection/websocket`'s, without permessage-deflate: the Pusher frames are
    /// translated from the hub's JSON and cached uncompressed (one encoding per frame).
    pub(crate) ws: Arc<kilat_transport::ws::WsConfig>,
}

impl Pusher {
    /// The apps of the node; `shared` is the presence store of an engine other nodes share
    /// (the occupied-channel index goes there, refreshed by a task of this node).
    pub(crate) fn new(
        apps: Vec<PusherApp>,
        ws: &kilat_transport::ws::WsConfig,
        node: &kilat_core::Node,
        shared: Option<Arc<dyn kilat_core::PresenceStore>>,
    ) -> Self {
        let mut ws = ws.clone();
        ws.deflate = false;
        let index = shared.map(|store| Arc::new(occupancy::Index::new(store, node)));
        let apps: Vec<Arc<App>> = apps
            .into_iter()
            .map(|config| {
                Arc::new(App {
                    namespace: config.namespace(),
                    cache_namespace: config.cache_namespace(),
                    webhooks: webhooks::Webhooks::start(&config),
                    index: index.clone(),
                    config,
                })
            })
            .collect();
        if let Some(index) = index
            && !apps.is_empty()
        {
            let namespaces = apps
                .iter()
                .map(|app| (app.namespace.clone(), app.cache_namespace.clone()))
                .collect();
            tokio::spawn(index.refresh(node.clone(), namespaces));
        }
        Pusher {
            apps,
            ws: Arc::new(ws),
        }
    }

    pub(crate) fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|app| app.config.key == key)
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|app| app.config.id == id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }
}

/// The namespace options of an app's channels, unless configured: presence for `presence-`
/// channels (kilat's join/leave off: the endpoint publishes Pusher's member events), no history, and closed to kilat's own clients (subscribe needs a
/// subscription token, publish only through an API) so nothing skips the Pusher
/// authorisation. Added to `node.namespaces` before the node starts.
pub fn namespace_options() -> NamespaceOptions {
    NamespaceOptions {
        presence: true,
        // Pusher's member events are published by the endpoint, once per user.
        join_leave: false,
        allow_subscribe: AllowSubscribe::Token,
        allow_publish: AllowPublish::None,
        ..NamespaceOptions::default()
    }
}

/// The namespace options of an app's cache channels: as [`namespace_options`], keeping the
/// last event for 30 minutes (Pusher's cache TTL).
pub fn cache_namespace_options() -> NamespaceOptions {
    NamespaceOptions {
        history_size: 1,
        history_ttl: std::time::Duration::from_secs(30 * 60),
        ..namespace_options()
    }
}

/// The Pusher routes (served only when at least one app is configured).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/{key}", get(ws::upgrade))
        .route("/apps/{app_id}/{*rest}", get(api::call).post(api::call))
}
