//! Namespace permission checks (docs/protocol.md section 7), as pure functions of the options, the
//! channel and the connection's user.

use kilat_protocol::channel::{allowed_users, user_allowed};
use kilat_protocol::validate_channel;

use crate::config::{AllowPublish, AllowSubscribe, NamespaceOptions, NodeConfig};
use crate::error::CoreError;

/// Validates `channel` and finds its namespace options.
///
/// # Errors
/// 400 for a bad name, 404 for an unknown namespace.
pub fn resolve(config: &NodeConfig, channel: &str) -> Result<NamespaceOptions, CoreError> {
    validate_channel(channel)?;
    config
        .namespace_options(channel)
        .ok_or(CoreError::UnknownNamespace)
}

/// How a subscribe is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeAccess {
    /// Allowed as is.
    Allowed,
    /// Allowed once the subscription token verifies.
    NeedsToken,
}

/// Whether `user` may subscribe to `channel`. A user-limited channel (`dm:#alice,bob`) admits
/// exactly its listed users, whatever `allow_subscribe` says.
///
/// # Errors
/// 403 when not allowed.
pub fn check_subscribe(
    ns: &NamespaceOptions,
    channel: &str,
    user: &str,
    has_token: bool,
) -> Result<SubscribeAccess, CoreError> {
    if allowed_users(channel).is_some() {
        return if user_allowed(channel, user) {
            Ok(SubscribeAccess::Allowed)
        } else {
            Err(CoreError::PermissionDenied(
                "channel is limited to other users",
            ))
        };
    }
    if has_token {
        return Ok(SubscribeAccess::NeedsToken);
    }
    match ns.allow_subscribe {
        AllowSubscribe::Public => Ok(SubscribeAccess::Allowed),
        AllowSubscribe::Authenticated if !user.is_empty() => Ok(SubscribeAccess::Allowed),
        AllowSubscribe::Authenticated => Err(CoreError::PermissionDenied(
            "subscribing needs an authenticated user",
        )),
        AllowSubscribe::Token => Err(CoreError::PermissionDenied(
            "subscribing needs a subscription token",
        )),
    }
}

/// Whether `user` may publish `size` bytes of data to `channel` from a client.
///
/// # Errors
/// 403 when not allowed, 413 when too large.
pub fn check_publish(
    ns: &NamespaceOptions,
    channel: &str,
    user: &str,
    subscribed: bool,
    size: usize,
) -> Result<(), CoreError> {
    if !user_allowed(channel, user) {
        return Err(CoreError::PermissionDenied(
            "channel is limited to other users",
        ));
    }
    let allowed = match ns.allow_publish {
        AllowPublish::None => false,
        AllowPublish::Subscribers => subscribed,
        AllowPublish::Authenticated => !user.is_empty(),
        AllowPublish::Any => true,
    };
    if !allowed {
        return Err(CoreError::PermissionDenied("publishing is not allowed"));
    }
    if size > ns.max_message_size {
        return Err(CoreError::TooLarge);
    }
    Ok(())
}

/// Whether `user` may read presence of `channel`.
///
/// # Errors
/// 403 when presence is off or not allowed for clients.
pub fn check_presence(ns: &NamespaceOptions, channel: &str, user: &str) -> Result<(), CoreError> {
    if !ns.presence || !ns.allow_presence {
        return Err(CoreError::PermissionDenied("presence is not available"));
    }
    if !user_allowed(channel, user) {
        return Err(CoreError::PermissionDenied(
            "channel is limited to other users",
        ));
    }
    Ok(())
}

/// Whether `user` may read history of `channel`.
///
/// # Errors
/// 403 when history is off or not allowed for clients.
pub fn check_history(ns: &NamespaceOptions, channel: &str, user: &str) -> Result<(), CoreError> {
    if !ns.has_history() || !ns.allow_history {
        return Err(CoreError::PermissionDenied("history is not available"));
    }
    if !user_allowed(channel, user) {
        return Err(CoreError::PermissionDenied(
            "channel is limited to other users",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_limited_channels_admit_only_listed_users() {
        let ns = NamespaceOptions {
            allow_subscribe: AllowSubscribe::Public,
            ..NamespaceOptions::default()
        };
        assert!(check_subscribe(&ns, "dm:#alice,bob", "alice", false).is_ok());
        assert!(check_subscribe(&ns, "dm:#alice,bob", "carol", false).is_err());
        assert!(check_subscribe(&ns, "dm:#alice,bob", "", false).is_err());
    }

    #[test]
    fn subscribe_modes() {
        let mut ns = NamespaceOptions::default();
        assert!(check_subscribe(&ns, "a", "", false).is_err());
        assert!(check_subscribe(&ns, "a", "u", false).is_ok());
        ns.allow_subscribe = AllowSubscribe::Token;
        assert!(check_subscribe(&ns, "a", "u", false).is_err());
        assert_eq!(
            check_subscribe(&ns, "a", "u", true).ok(),
            Some(SubscribeAccess::NeedsToken)
        );
    }

    #[test]
    fn publish_modes_and_size() {
        let mut ns = NamespaceOptions::default();
        assert!(check_publish(&ns, "a", "u", true, 1).is_err());
        ns.allow_publish = AllowPublish::Subscribers;
        assert!(check_publish(&ns, "a", "u", false, 1).is_err());
        assert!(check_publish(&ns, "a", "u", true, 1).is_ok());
        ns.allow_publish = AllowPublish::Authenticated;
        assert!(check_publish(&ns, "a", "", true, 1).is_err());
        ns.allow_publish = AllowPublish::Any;
        assert!(matches!(
            check_publish(&ns, "a", "", false, ns.max_message_size + 1),
            Err(CoreError::TooLarge)
        ));
    }
}
