//! Start-up checks of a loaded [`Config`]: combinations of keys that would silently disable
//! something the operator asked for are refused, naming the key and the fix; settings that
//! cannot do anything are warned about once.
//!
//! Refused (the server does not start, `kilat config` fails):
//! - `history_ttl = 0` written out next to `history_size > 0` (the size asks for history, the
//!   TTL would keep nothing); an absent `history_ttl` takes the default instead;
//! - `allow_history` or `force_recovery` in a namespace without history;
//! - `allow_presence` in a namespace without `presence`;
//! - `latest` without history, or with `conflate_key` left as an empty field name;
//! - `proxy_subscribe` / `proxy_publish` without the matching `[proxy]` URL;
//! - `allow_subscribe = "token"` without any token key (`[token]`);
//! - `node.presence_ttl` not above `node.ping_interval` (entries would expire between the
//!   pings that refresh them);
//! - `node.write_delay_ms` above 1000 (a real-time push held for more than a second is a
//!   mistake, most likely seconds written for milliseconds).
//!
//! Warned about: `history_ttl` without `history_size`; a `[proxy]` subscribe or publish URL
//! that no namespace uses; a locked-down node nobody can connect to.

use std::time::Duration;

use kilat_core::NamespaceOptions;
use kilat_core::config::AllowSubscribe;

use crate::config::{Config, ConfigError};

/// Largest `node.write_delay_ms` accepted.
const MAX_WRITE_DELAY_MS: u64 = 1000;

impl Config {
    /// Every namespace with the key prefix naming it in messages.
    fn namespaces(&self) -> Vec<(String, &NamespaceOptions)> {
        let mut all: Vec<(String, &NamespaceOptions)> = Vec::new();
        if let Some(default) = &self.node.default_namespace {
            all.push(("node.default_namespace".into(), default));
        }
        for (name, options) in &self.node.namespaces {
            all.push((format!("node.namespaces.{name}"), options));
        }
        all
    }

    /// Refuses combinations that would silently disable something asked for.
    ///
    /// # Errors
    /// [`ConfigError::Contradiction`] naming the first offending key and the fix.
    pub fn check(&self) -> Result<(), ConfigError> {
        let refuse = |message: String| Err(ConfigError::Contradiction(message));
        if let Err(message) =
            crate::transport::peer::TrustedProxies::parse(&self.server.trusted_proxies)
        {
            return refuse(message);
        }
        if let Err(message) = self.pusher.check() {
            return refuse(message);
        }
        for (key, ns) in self.namespaces() {
            if ns.allow_history && !ns.has_history() {
                return refuse(format!(
                    "{key}.allow_history = true, but the namespace keeps no history (hint: set \
                     {key}.history_size, e.g. 100)"
                ));
            }
            if ns.force_recovery && !ns.has_history() {
                return refuse(format!(
                    "{key}.force_recovery = true, but there is nothing to recover from without \
                     history (hint: set {key}.history_size, e.g. 100)"
                ));
            }
            if ns.latest && !ns.has_history() {
                return refuse(format!(
                    "{key}.latest = true needs history to order the latest values against live \
                     publications (hint: set {key}.history_size, e.g. 1)"
                ));
            }
            if ns.conflate_key.as_deref().is_some_and(str::is_empty) {
                return refuse(format!(
                    "{key}.conflate_key = \"\" names no field (hint: the data field holding \
                     each publication's key, e.g. conflate_key = \"symbol\")"
                ));
            }
            if ns.allow_presence && !ns.presence {
                return refuse(format!(
                    "{key}.allow_presence = true, but presence is not tracked (hint: set \
                     {key}.presence = true)"
                ));
            }
            if ns.proxy_subscribe && self.proxy.subscribe_url.is_none() {
                return refuse(format!(
                    "{key}.proxy_subscribe = true, but no subscribe hook is configured (hint: \
                     set proxy.subscribe_url, or --proxy-subscribe-url)"
                ));
            }
            if ns.proxy_publish && self.proxy.publish_url.is_none() {
                return refuse(format!(
                    "{key}.proxy_publish = true, but no publish hook is configured (hint: set \
                     proxy.publish_url, or --proxy-publish-url)"
                ));
            }
            if ns.allow_subscribe == AllowSubscribe::Token && self.token.is_none() {
                return refuse(format!(
                    "{key}.allow_subscribe = \"token\", but no token key is configured, so \
                     every subscribe would fail (hint: --token-secret, --token-public-key or \
                     --token-jwks-url, or [token] in kilat.toml)"
                ));
            }
        }
        if self.node.presence_ttl <= self.node.ping_interval {
            return refuse(format!(
                "node.presence_ttl ({} s) must be longer than node.ping_interval ({} s): \
                 presence entries are refreshed at each ping and would expire in between \
                 (hint: presence_ttl = {} or more)",
                secs(self.node.presence_ttl),
                secs(self.node.ping_interval),
                secs(self.node.ping_interval * 2)
            ));
        }
        if self.node.write_delay_ms > MAX_WRITE_DELAY_MS {
            return refuse(format!(
                "node.write_delay_ms = {} holds every push for more than a second (hint: the \
                 value is in milliseconds; 5-25 gathers the publications of a busy feed into \
                 one write, 0 writes at once)",
                self.node.write_delay_ms
            ));
        }
        Ok(())
    }

    /// Settings that cannot do anything as combined, one line each, for the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (key, ns) in self.namespaces() {
            if ns.history_size == 0 && !ns.history_ttl.is_zero() {
                warnings.push(format!(
                    "{key}.history_ttl is set but history_size is 0, so no history is kept \
                     (set history_size to keep some)"
                ));
            }
        }
        let uses = |wanted: fn(&NamespaceOptions) -> bool| {
            self.namespaces().iter().any(|(_, ns)| wanted(ns))
        };
        if self.proxy.subscribe_url.is_some() && !uses(|ns| ns.proxy_subscribe) {
            warnings.push(
                "proxy.subscribe_url is set but no namespace has proxy_subscribe = true, so it \
                 is never called"
                    .into(),
            );
        }
        if self.proxy.publish_url.is_some() && !uses(|ns| ns.proxy_publish) {
            warnings.push(
                "proxy.publish_url is set but no namespace has proxy_publish = true, so it is \
                 never called"
                    .into(),
            );
        }
        if !self.node.dev
            && !self.node.anonymous_allowed()
            && self.token.is_none()
            && self.proxy.connect_url.is_none()
        {
            warnings.push(
                "anonymous connections are refused and neither a token key nor a connect hook \
                 is configured, so no client can connect. Configure tokens (--token-secret, \
                 --token-public-key or --token-jwks-url), a connect hook \
                 (--proxy-connect-url), allow anonymous clients (node.allow_anonymous = true), \
                 or try kilat locally with `kilat serve --dev`."
                    .into(),
            );
        }
        warnings
    }
}

fn secs(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml::Table;

    fn load(toml_text: &str) -> Result<Config, ConfigError> {
        let table: Table = toml::from_str(toml_text).expect("toml");
        Config::load(None, Vec::new(), table)
    }

    fn refused(toml_text: &str) -> String {
        match load(toml_text) {
            Err(error) => error.to_string(),
            Ok(_) => panic!("should be refused: {toml_text}"),
        }
    }

    #[test]
    fn history_size_alone_gets_the_default_ttl_regression_22() {
        let config = load("[node.namespaces.chat]\nhistory_size = 100\n").expect("valid");
        let chat = config.node.namespace_options("chat:room").expect("chat");
        assert!(chat.has_history(), "history_size alone keeps history");
        assert_eq!(chat.effective_history_ttl(), Duration::from_secs(300));
        assert!(config.warnings().iter().all(|w| !w.contains("history")));
    }

    #[test]
    fn an_explicit_zero_history_ttl_with_a_size_is_refused_naming_the_key() {
        let message = refused("[node.namespaces.chat]\nhistory_size = 100\nhistory_ttl = 0\n");
        assert!(
            message.contains("node.namespaces.chat.history_ttl = 0"),
            "{message}"
        );
        assert!(message.contains("hint"), "{message}");
        let message = refused("[node.default_namespace]\nhistory_size = 5\nhistory_ttl = 0.0\n");
        assert!(
            message.contains("node.default_namespace.history_ttl"),
            "{message}"
        );
    }

    #[test]
    fn a_history_ttl_without_a_size_is_warned_about() {
        let config = load("[node.namespaces.chat]\nhistory_ttl = 60\n").expect("valid");
        let warnings = config.warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("node.namespaces.chat.history_ttl")),
            "{warnings:?}"
        );
    }

    #[test]
    fn allow_history_without_history_is_refused() {
        let message = refused("[node.namespaces.chat]\nallow_history = true\n");
        assert!(
            message.contains("node.namespaces.chat.allow_history"),
            "{message}"
        );
        assert!(message.contains("history_size"), "{message}");
    }

    #[test]
    fn latest_without_history_and_an_empty_conflate_key_are_refused() {
        let message = refused("[node.namespaces.ticker]\nlatest = true\n");
        assert!(
            message.contains("node.namespaces.ticker.latest") && message.contains("history_size"),
            "{message}"
        );
        let message = refused(
            "[node.namespaces.game]\nhistory_size = 1\nconflate_ms = 50\nconflate_key = \"\"\n",
        );
        assert!(message.contains("conflate_key"), "{message}");
        assert!(
            load("[node.namespaces.game]\nhistory_size = 1\nconflate_ms = 50\nconflate_key = \"id\"\nlatest = true\n")
                .is_ok()
        );
    }

    #[test]
    fn force_recovery_without_history_is_refused() {
        let message = refused("[node.namespaces.feed]\nforce_recovery = true\n");
        assert!(
            message.contains("node.namespaces.feed.force_recovery"),
            "{message}"
        );
    }

    #[test]
    fn allow_presence_without_presence_is_refused() {
        let message = refused("[node.namespaces.chat]\nallow_presence = true\n");
        assert!(
            message.contains("node.namespaces.chat.allow_presence"),
            "{message}"
        );
        assert!(message.contains("presence = true"), "{message}");
        load("[node.namespaces.chat]\nallow_presence = true\npresence = true\n").expect("valid");
    }

    #[test]
    fn proxy_options_without_their_hook_are_refused() {
        let message = refused("[node.namespaces.chat]\nproxy_subscribe = true\n");
        assert!(message.contains("proxy.subscribe_url"), "{message}");
        let message = refused("[node.namespaces.chat]\nproxy_publish = true\n");
        assert!(message.contains("proxy.publish_url"), "{message}");
        load(
            "[proxy]\npublish_url = \"http://127.0.0.1:3000/p\"\n\
             [node.namespaces.chat]\nproxy_publish = true\n",
        )
        .expect("valid with the hook");
    }

    #[test]
    fn proxy_urls_no_namespace_uses_are_warned_about() {
        let config = load("[proxy]\nsubscribe_url = \"http://127.0.0.1:3000/s\"\n").expect("valid");
        let warnings = config.warnings();
        assert!(
            warnings.iter().any(|w| w.contains("proxy.subscribe_url")),
            "{warnings:?}"
        );
    }

    #[test]
    fn token_subscriptions_without_a_token_key_are_refused() {
        let message = refused("[node.namespaces.private]\nallow_subscribe = \"token\"\n");
        assert!(message.contains("allow_subscribe = \"token\""), "{message}");
        load(
            "[token]\nsecret = \"s3cret-s3cret-s3cret-s3cret-s3cret\"\n\
             [node.namespaces.private]\nallow_subscribe = \"token\"\n",
        )
        .expect("valid with a key");
    }

    #[test]
    fn presence_ttl_must_outlive_the_ping_interval() {
        let message = refused("[node]\npresence_ttl = 20\nping_interval = 25\n");
        assert!(message.contains("node.presence_ttl"), "{message}");
    }

    #[test]
    fn a_write_delay_of_seconds_is_refused() {
        let message = refused("[node]\nwrite_delay_ms = 5000\n");
        assert!(message.contains("milliseconds"), "{message}");
        let config = load("[node]\nwrite_delay_ms = 20\n").expect("valid");
        assert_eq!(config.node.write_delay_ms, 20);
    }

    #[test]
    fn no_client_can_connect_is_not_said_when_a_connect_hook_is_configured() {
        let locked = load("").expect("valid");
        assert!(
            locked
                .warnings()
                .iter()
                .any(|w| w.contains("no client can connect")),
            "a node without tokens, hook or anonymous access is unreachable"
        );
        let hooked = load("[proxy]\nconnect_url = \"http://127.0.0.1:3000/c\"\n").expect("valid");
        assert!(
            hooked
                .warnings()
                .iter()
                .all(|w| !w.contains("no client can connect")),
            "{:?}",
            hooked.warnings()
        );
    }

    #[test]
    fn the_example_configuration_passes_every_check() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kilat.example.toml");
        let config = Config::load(Some(&path), Vec::new(), Table::new())
            .expect("kilat.example.toml loads and passes the checks");
        assert!(config.warnings().iter().all(|w| !w.contains("history")));
    }
}
