//! Key and pub/sub channel names.
//!
//! Every key of a kilat channel carries the hash tag `{<prefix>:ch:<channel>}`, so in a Redis
//! Cluster all of them (and the sharded pub/sub channel) live in one slot and one Lua script
//! may touch them all. A channel name containing `}` ends the tag early, but identically for
//! every key of that channel, so they still share a slot.

/// The Redis names of one kilat channel.
#[derive(Debug, Clone)]
pub(crate) struct ChannelKeys {
    /// Hash `{e: epoch, o: top offset}`, with the meta TTL.
    pub(crate) meta: String,
    /// Stream of publications; entry id `<offset>-0`, fields `d` (publication JSON without
    /// offset) and `x` (expiry, Redis time in ms).
    pub(crate) stream: String,
    /// Hash key -> `<offset>\n<expiry ms>\n<publication JSON>`: the latest publication per
    /// key (namespaces with `latest`), with the meta TTL; deleted with the stream.
    pub(crate) latest: String,
    /// Hash client id -> ClientInfo JSON.
    pub(crate) presence: String,
    /// Sorted set client id -> expiry (Redis time in ms).
    pub(crate) presence_expiry: String,
    /// Hash user id -> presence entries of that user, so counts are two lengths.
    pub(crate) presence_users: String,
    /// Pub/sub channel carrying publications and join/leave events.
    pub(crate) pubsub: String,
}

impl ChannelKeys {
    pub(crate) fn new(prefix: &str, channel: &str) -> Self {
        let tag = format!("{{{prefix}:ch:{channel}}}");
        ChannelKeys {
            meta: format!("{tag}:meta"),
            stream: format!("{tag}:stream"),
            latest: format!("{tag}:latest"),
            presence: format!("{tag}:presence"),
            presence_expiry: format!("{tag}:presence:exp"),
            presence_users: format!("{tag}:presence:users"),
            pubsub: pubsub_channel(prefix, channel),
        }
    }
}

/// The pub/sub channel of `channel`.
pub(crate) fn pubsub_channel(prefix: &str, channel: &str) -> String {
    format!("{{{prefix}:ch:{channel}}}:pub")
}

/// The kilat channel behind pub/sub channel `name`, if it is one of ours.
pub(crate) fn channel_of_pubsub<'n>(prefix: &str, name: &'n str) -> Option<&'n str> {
    name.strip_prefix('{')?
        .strip_prefix(prefix)?
        .strip_prefix(":ch:")?
        .strip_suffix("}:pub")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_pubsub_names_round_trip() {
        for channel in ["news", "chat:room}1", "{odd", ""] {
            let keys = ChannelKeys::new("kilat", channel);
            let tag = |k: &str| {
                let start = k.find('{').expect("tag start") + 1;
                let end = k[start..].find('}').expect("tag end") + start;
                k[start..end].to_owned()
            };
            assert_eq!(tag(&keys.meta), tag(&keys.stream));
            assert_eq!(tag(&keys.meta), tag(&keys.presence_expiry));
            assert_eq!(tag(&keys.meta), tag(&keys.pubsub));
            assert_eq!(channel_of_pubsub("kilat", &keys.pubsub), Some(channel));
        }
        assert_eq!(channel_of_pubsub("other", "{kilat:ch:x}:pub"), None);
    }
}
