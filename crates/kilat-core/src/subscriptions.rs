//! [`Subscriptions`]: the channels one session is subscribed to, and [`SubState`], what the
//! node keeps about each (the session's list and the node's server-side changes both hold it).
//!
//! Every connection holds one, and most hold zero to a few entries, so it is a `Vec` sorted by
//! channel (binary search, one allocation sized to its entries) rather than a `HashMap`, whose
//! smallest table is several times larger than the entry it holds.

use std::time::Duration;

use tokio::time::Instant;

/// What a session remembers about one of its subscriptions (the hub holds the delivery state).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SubState {
    /// The namespace tracks presence: remove the entry on unsubscribe, refresh it at pings.
    pub(crate) presence: bool,
    /// The namespace sends join/leave: publish a leave on unsubscribe.
    pub(crate) join_leave: bool,
    /// When the subscription token expires (a `refresh` push with the channel is sent then).
    pub(crate) expires_at: Option<Instant>,
    /// The `refresh` push was sent: the subscription ends `token_refresh_grace` after
    /// `expires_at` unless a `sub_refresh` extends it.
    pub(crate) refresh_sent: bool,
}

impl SubState {
    /// When this subscription's timer is due: its token expiry, then the end of the grace.
    pub(crate) fn deadline(&self, grace: Duration) -> Option<Instant> {
        let at = self.expires_at?;
        Some(if self.refresh_sent { at + grace } else { at })
    }
}

/// A session's subscriptions by channel.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions(Vec<(Box<str>, SubState)>);

impl Subscriptions {
    fn find(&self, channel: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(c, _)| (**c).cmp(channel))
    }

    /// What the session remembers about `channel`, if subscribed.
    pub(crate) fn get(&self, channel: &str) -> Option<SubState> {
        self.find(channel).ok().map(|i| self.0[i].1)
    }

    /// What the session remembers about `channel`, to change it.
    pub(crate) fn get_mut(&mut self, channel: &str) -> Option<&mut SubState> {
        self.find(channel).ok().map(|i| &mut self.0[i].1)
    }

    /// The channels and their states, to change them.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut SubState)> {
        self.0.iter_mut().map(|(c, state)| (&**c, state))
    }

    /// Whether the session is subscribed to `channel`.
    pub(crate) fn contains(&self, channel: &str) -> bool {
        self.find(channel).is_ok()
    }

    /// How many channels.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds or replaces `channel`; returns what was replaced.
    pub(crate) fn insert(&mut self, channel: String, state: SubState) -> Option<SubState> {
        match self.find(&channel) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, state)),
            Err(i) => {
                // Grow from one entry, then double: most sessions hold one or two.
                if self.0.len() == self.0.capacity() {
                    self.0.reserve_exact(self.0.len().max(1));
                }
                self.0.insert(i, (channel.into_boxed_str(), state));
                None
            }
        }
    }

    /// Removes `channel`; returns what the session remembered about it.
    pub(crate) fn remove(&mut self, channel: &str) -> Option<SubState> {
        let i = self.find(channel).ok()?;
        let (_, state) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(state)
    }

    /// The channels, in order.
    pub(crate) fn channels(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(c, _)| &**c)
    }

    /// Channels with their state, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, SubState)> {
        self.0.iter().map(|(c, s)| (&**c, *s))
    }

    /// Removes and returns every subscription.
    pub(crate) fn take_all(&mut self) -> Vec<(Box<str>, SubState)> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: SubState = SubState {
        presence: true,
        join_leave: false,
        expires_at: None,
        refresh_sent: false,
    };

    #[test]
    fn keeps_channels_sorted_and_unique() {
        let mut subs = Subscriptions::default();
        for channel in ["b", "a", "c", "a"] {
            subs.insert(channel.to_owned(), STATE);
        }
        assert_eq!(subs.channels().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(subs.contains("b"));
        assert!(subs.remove("b").is_some());
        assert!(subs.remove("b").is_none());
        assert_eq!(subs.get("b").map(|s| s.presence), None);
        assert_eq!(subs.len(), 2);
    }

    #[test]
    fn one_subscription_holds_one_entry_and_none_holds_nothing() {
        let mut subs = Subscriptions::default();
        subs.insert("chat".to_owned(), STATE);
        assert_eq!(subs.0.capacity(), 1);
        subs.remove("chat");
        assert_eq!(subs.0.capacity(), 0);
    }
}
