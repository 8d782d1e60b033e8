//! Channel names (docs/protocol.md section 7): validation, the namespace prefix and user-limited
//! channels (`dm:#alice,bob`).

use thiserror::Error;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// Why a channel name is refused (error 400 for the client).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes.
    #[error("channel name is longer than 255 bytes")]
    TooLong,
    /// The name contains a byte outside `[A-Za-z0-9_@.,=;/:#-]`.
    #[error("channel name contains a character outside [A-Za-z0-9_@.,=;/:#-]")]
    BadCharacter,
}

fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_@.,=;/:#-".contains(&b)
}

/// Checks that `channel` is 1..=255 bytes of `[A-Za-z0-9_@.,=;/:#-]`.
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_channel(channel: &str) -> Result<(), ChannelError> {
    if channel.is_empty() {
        return Err(ChannelError::Empty);
    }
    if channel.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    if !channel.bytes().all(is_channel_byte) {
        return Err(ChannelError::BadCharacter);
    }
    Ok(())
}

/// The namespace of `channel`: the part before the first `:`, or `None` for the default namespace.
pub fn namespace(channel: &str) -> Option<&str> {
    channel.split_once(':').map(|(ns, _)| ns)
}

/// The users a user-limited channel is restricted to, or `None` when it is not user-limited.
///
/// The part of the name after the namespace that follows the first `#` is a `,`-separated list of
/// user ids: `dm:#alice,bob` is limited to `alice` and `bob`, `game:room1#7,9` to `7` and `9`.
/// Empty ids are skipped, so `dm:#` is limited to nobody.
pub fn allowed_users(channel: &str) -> Option<impl Iterator<Item = &str>> {
    let name = channel.split_once(':').map_or(channel, |(_, name)| name);
    let (_, users) = name.split_once('#')?;
    Some(users.split(',').filter(|u| !u.is_empty()))
}

/// Whether `user` may use `channel` as far as user limits go: true for channels that are not
/// user-limited, and for user-limited channels that list `user` (never for the anonymous user `""`).
pub fn user_allowed(channel: &str, user: &str) -> bool {
    match allowed_users(channel) {
        None => true,
        Some(mut users) => !user.is_empty() && users.any(|u| u == user),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names() {
        assert_eq!(validate_channel("chat:room-1_@.,=;/#a"), Ok(()));
        assert_eq!(validate_channel(""), Err(ChannelError::Empty));
        assert_eq!(validate_channel("a b"), Err(ChannelError::BadCharacter));
        assert_eq!(validate_channel("é"), Err(ChannelError::BadCharacter));
        assert_eq!(validate_channel(&"a".repeat(255)), Ok(()));
        assert_eq!(
            validate_channel(&"a".repeat(256)),
            Err(ChannelError::TooLong)
        );
    }

    #[test]
    fn splits_namespace_at_first_colon() {
        assert_eq!(namespace("chat:a:b"), Some("chat"));
        assert_eq!(namespace("plain"), None);
        assert_eq!(namespace(":x"), Some(""));
    }

    #[test]
    fn parses_user_limited_channels() {
        let users: Vec<_> = allowed_users("dm:#alice,bob").expect("limited").collect();
        assert_eq!(users, ["alice", "bob"]);
        let users: Vec<_> = allowed_users("game:room1#7,,9").expect("limited").collect();
        assert_eq!(users, ["7", "9"]);
        assert!(allowed_users("chat:room").is_none());
        assert!(user_allowed("dm:#alice,bob", "bob"));
        assert!(!user_allowed("dm:#alice,bob", "carol"));
        assert!(!user_allowed("dm:#", ""));
        assert!(user_allowed("chat:room", ""));
    }
}
