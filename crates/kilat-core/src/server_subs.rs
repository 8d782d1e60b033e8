//! Server-side subscriptions: the server API subscribes or unsubscribes every connection of a
//! user (docs/api.md, `subscribe` / `unsubscribe`).
//!
//! The node joins the channel on the session's behalf exactly like a client subscribe (hub,
//! engine, position), sends a `subscribe` push carrying the subscribe result, and records the
//! change for the session, which absorbs it at its next message, timer or close.

use kilat_protocol::push::encode_push_kind;
use kilat_protocol::{SharedFrame, UNSUBSCRIBE_SERVER};

use crate::error::CoreError;
use crate::node::Node;
use crate::outbox::Outbox;
use crate::permissions::resolve;
use crate::recovery::Recovery;
use crate::subscriptions::SubState;

impl Node {
    /// Subscribes every connection of `user` on this node to `channel` (connections already
    /// subscribed are left alone). Each gets a `subscribe` push with the result, positioned at
    /// the end of the stream. Returns how many connections were subscribed.
    ///
    /// # Errors
    /// 400 bad channel, 404 unknown namespace, 503 engine (connections subscribed before the
    /// failure stay subscribed).
    pub async fn subscribe_user(&self, user: &str, channel: &str) -> Result<usize, CoreError> {
        let ns = resolve(self.config(), channel)?;
        let mut subscribed = 0;
        for (key, outbox, info) in self.sessions().sessions_of(user) {
            if self.is_subscribed(channel, key) {
                continue;
            }
            let prepared = self
                .prepare_subscribe(channel, key, &outbox, &ns, ns.join_leave, &Recovery::ToEnd)
                .await?;
            let push = SharedFrame::new(encode_push_kind(
                Some(channel),
                "subscribe",
                &prepared.result,
            ));
            if !self.go_live(channel, key, Some(push), &prepared.result) {
                continue;
            }
            let state = SubState {
                presence: ns.presence,
                join_leave: ns.join_leave,
                ..SubState::default()
            };
            let recorded = self.sessions().record_change(key, |changes| {
                changes.removed.retain(|c| c != channel);
                changes.added.push((channel.to_owned(), state));
            });
            if !recorded {
                // The session closed meanwhile: undo.
                self.remove_subscriber(channel, key).await;
                continue;
            }
            self.after_join(channel, key, &info, state).await;
            subscribed += 1;
        }
        Ok(subscribed)
    }

    /// Unsubscribes every connection of `user` on this node from `channel`, with an
    /// `unsubscribe` push (code 2000, no resubscribe). Returns how many were unsubscribed.
    ///
    /// # Errors
    /// 400 bad channel, 404 unknown namespace.
    pub async fn unsubscribe_user(&self, user: &str, channel: &str) -> Result<usize, CoreError> {
        let ns = resolve(self.config(), channel)?;
        let mut unsubscribed = 0;
        for (key, outbox, info) in self.sessions().sessions_of(user) {
            if !self.is_subscribed(channel, key) {
                continue;
            }
            self.remove_subscriber(channel, key).await;
            push_unsubscribe(&outbox, channel);
            self.sessions().record_change(key, |changes| {
                changes.added.retain(|(c, _)| c != channel);
                changes.removed.push(channel.to_owned());
            });
            let state = SubState {
                presence: ns.presence,
                join_leave: ns.join_leave,
                ..SubState::default()
            };
            self.after_leave(channel, &info, state).await;
            unsubscribed += 1;
        }
        Ok(unsubscribed)
    }
}

fn push_unsubscribe(outbox: &Outbox, channel: &str) {
    outbox.push(crate::hub::unsubscribe_frame(
        channel,
        UNSUBSCRIBE_SERVER,
        "server unsubscribe",
        false,
    ));
}
