//! One Pusher app being served: its settings, its namespaces, and the channel names between
//! Pusher and kilat.

use std::sync::Arc;

use super::config::PusherApp;
use super::occupancy;
use super::protocol::{self, ChannelKind};
use super::webhooks;

/// One app being served.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) config: PusherApp,
    /// `pusher.<id>`.
    pub(crate) namespace: String,
    /// `pusher.<id>.cache`.
    pub(crate) cache_namespace: String,
    /// The webhook queue, when the app has webhooks.
    pub(crate) webhooks: Option<webhooks::Webhooks>,
    /// The occupied-channel index, when the engine is shared by several nodes.
    pub(crate) index: Option<Arc<occupancy::Index>>,
}

impl App {
    /// The kilat channel of a Pusher channel: `pusher.<id>:<name>`; a user's
    /// `#server-to-user-<id>` becomes `pusher.<app>:#<id>`.
    pub(crate) fn native_channel(&self, channel: &str, kind: ChannelKind) -> String {
        match kind {
            ChannelKind::User => format!(
                "{}:#{}",
                self.namespace,
                channel.trim_start_matches(protocol::USER_CHANNEL_PREFIX)
            ),
            _ if protocol::is_cache(channel) => format!("{}:{channel}", self.cache_namespace),
            _ => format!("{}:{channel}", self.namespace),
        }
    }

    /// Queues a webhook event (nothing without webhooks).
    pub(crate) fn webhook(&self, event: impl FnOnce() -> webhooks::Event) {
        if let Some(hooks) = &self.webhooks {
            hooks.send(event());
        }
    }

    /// The Pusher name of one of this app's kilat channels, if it is one.
    pub(crate) fn pusher_name<'a>(&self, native: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        let (ns, name) = native.split_once(':')?;
        (ns == self.namespace || ns == self.cache_namespace).then(|| protocol::pusher_channel(name))
    }
}
