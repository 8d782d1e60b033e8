//! `[[pusher.apps]]`: the Pusher Channels apps this server hosts (docs/pusher.md).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `[pusher]`: the apps served at `/app/{key}` and `/apps/{app_id}/...`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// One entry per app; `kilat serve --dev` adds the well-known local app when there is none.
    pub apps: Vec<PusherApp>,
}

/// One Pusher app. Its channels live in the kilat namespace `pusher.<id>`, so apps never mix.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PusherApp {
    /// The app id of the HTTP API path (`/apps/{id}/events`): letters, digits, `-` and `_`.
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// Signs channel authorisations and API requests. Never logged; `kilat config` redacts it.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether clients may send `client-*` events on private and presence channels.
    #[serde(default)]
    pub client_events: bool,
    /// Whether `pusher:signin` (user authentication, server-to-user events) is allowed.
    #[serde(default)]
    pub user_auth: bool,
    /// Limits (Pusher's defaults when absent).
    #[serde(default)]
    pub limits: PusherLimits,
    /// Webhook receivers (`[[pusher.apps.webhooks]]`).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// Per-app limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherLimits {
    /// Client events one connection may send per second; more get error 4301.
    pub client_events_per_second: u32,
    /// Largest event `data`, in bytes (client events and the HTTP API).
    pub max_event_bytes: usize,
    /// Most members of one presence channel; a subscriber past it is refused.
    pub max_presence_members: usize,
    /// Most channels one `/events` call may name.
    pub max_event_channels: usize,
    /// Most events one `/batch_events` call may carry.
    pub max_batch_events: usize,
}

impl Default for PusherLimits {
    fn default() -> Self {
        PusherLimits {
            client_events_per_second: 10,
            max_event_bytes: 10 * 1024,
            max_presence_members: 100,
            max_event_channels: 100,
            max_batch_events: 10,
        }
    }
}

fn yes() -> bool {
    true
}

impl fmt::Debug for PusherApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PusherApp")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("client_events", &self.client_events)
            .field("user_auth", &self.user_auth)
            .field("limits", &self.limits)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl PusherApp {
    /// The well-known local app of `kilat serve --dev` (the pusher-js and Laravel Echo
    /// tutorials' defaults): client events and user authentication on.
    pub fn dev() -> Self {
        PusherApp {
            id: "app-id".into(),
            key: "app-key".into(),
            secret: "app-secret".into(),
            enabled: true,
            client_events: true,
            user_auth: true,
            limits: PusherLimits::default(),
            webhooks: Vec::new(),
        }
    }

    /// The kilat namespace holding this app's channels.
    pub fn namespace(&self) -> String {
        format!("pusher.{}", self.id)
    }

    /// The kilat namespace of this app's cache channels (`cache-`, `private-cache-`,
    /// `private-encrypted-cache-`, `presence-cache-`): the same, keeping the last event.
    pub fn cache_namespace(&self) -> String {
        format!("pusher.{}.cache", self.id)
    }
}

impl PusherConfig {
    /// The apps to serve: the configured ones, or in dev mode the local app when none is set.
    pub fn apps(&self, dev: bool) -> Vec<PusherApp> {
        if self.apps.is_empty() && dev {
            vec![PusherApp::dev()]
        } else {
            self.apps.clone()
        }
    }

    /// Refuses configurations that cannot work: bad ids, repeated ids or keys, empty secrets.
    ///
    /// # Errors
    /// A message naming the app and what to change.
    pub fn check(&self) -> Result<(), String> {
        for (i, app) in self.apps.iter().enumerate() {
            let ok_id = !app.id.is_empty()
                && app.id.len() <= 64
                && app
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok_id {
                return Err(format!(
                    "pusher.apps[{i}].id {:?}: use 1 to 64 letters, digits, '-' or '_'",
                    app.id
                ));
            }
            if app.key.is_empty() || app.key.contains(['/', '?', '#']) {
                return Err(format!(
                    "pusher.apps[{i}].key must be non-empty, without '/', '?' or '#'"
                ));
            }
            if app.secret.is_empty() {
                return Err(format!("pusher.apps[{i}].secret must not be empty"));
            }
            for other in &self.apps[..i] {
                if other.id == app.id || other.key == app.key {
                    return Err(format!(
                        "pusher.apps[{i}] repeats the id or key of another app ({:?})",
                        other.id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[[pusher.apps.webhooks]]`: where to send which events.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` of the receiver.
    pub url: String,
    /// Which events (`channel_occupied`, `channel_vacated`, `member_added`, `member_removed`,
    /// `client_event`, `cache_miss`); empty: all.
    #[serde(default)]
    pub event_types: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_kilat_config_and_debug_output() {
        let mut config = crate::Config::default();
        let mut app = PusherApp::dev();
        app.secret = "s3cr3t-value".into();
        config.pusher.apps = vec![app.clone()];
        let printed = config.to_toml();
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(!format!("{app:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn bad_apps_are_refused_with_a_hint() {
        let mut config = PusherConfig {
            apps: vec![PusherApp::dev(), PusherApp::dev()],
        };
        assert!(config.check().expect_err("repeated").contains("repeats"));
        config.apps[1].id = "has space".into();
        assert!(config.check().expect_err("bad id").contains("letters"));
        config.apps[1].id = "other".into();
        config.apps[1].key = "other-key".into();
        config.apps[1].secret = String::new();
        assert!(config.check().expect_err("empty secret").contains("secret"));
    }
}
