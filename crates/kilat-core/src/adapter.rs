//! What a protocol adapter uses to run a foreign wire protocol (the Pusher Channels endpoint in
//! `kilat-server`) on a [`Session`]: the adapter authenticates its clients itself (an HMAC over
//! the socket id, not a kilat token), so these methods skip the namespace permission checks
//! while keeping everything else a session does: the hub, presence, join/leave, limits, the
//! per-user connection count, cleanup at close.

use kilat_protocol::reply::SubscribeResult;
use kilat_protocol::{ClientError, ClientInfo, Disconnect, ErrorCode, RawJson, SharedFrame};

use crate::commands::Joining;
use crate::error::CoreError;
use crate::permissions::resolve;
use crate::session::{Session, State};
use crate::util::new_client_id;

/// A channel joined through [`Session::join_granted`], live once
/// [`Session::go_live_granted`] queues its first frame.
#[derive(Debug)]
pub struct GrantedJoin(Joining);

impl GrantedJoin {
    /// The subscribe result (position, recovered publications).
    pub fn result(&self) -> &SubscribeResult {
        &self.0.result
    }
}

impl Session {
    /// Connects as `user` (may be `""`, anonymous) without a token: the adapter vouches for the
    /// client. Returns the client id.
    ///
    /// # Errors
    /// 3000 while draining, 3502 when `user` has too many connections, 400-style refusal when
    /// already connected.
    pub fn connect_as(&mut self, user: &str, info: Option<RawJson>) -> Result<String, Disconnect> {
        if matches!(self.state, State::Connected(_)) {
            return Err(Disconnect::BAD_REQUEST);
        }
        if self.node.is_draining() {
            return Err(Disconnect::SHUTDOWN);
        }
        if !self.node.sessions().try_add_user(user) {
            return Err(Disconnect::CONNECTION_LIMIT);
        }
        let info = ClientInfo {
            client: new_client_id(),
            user: user.to_owned(),
            info,
        };
        self.node.sessions().set_identity(self.key, &info);
        let client = info.client.clone();
        self.state = State::Connected(info);
        let ping_interval = self.node.config().ping_interval;
        if !ping_interval.is_zero() {
            self.next_ping = tokio::time::Instant::now() + ping_interval;
        }
        Ok(client)
    }

    /// Gives a connected session its user once the adapter learns it (Pusher: a presence
    /// channel's `channel_data` or `pusher:signin`), with the user's info. Presence entries
    /// made afterwards carry them.
    ///
    /// # Errors
    /// 429 when the user has too many connections (the session keeps its old identity).
    pub fn set_user(&mut self, user: &str, info: Option<RawJson>) -> Result<(), ClientError> {
        let State::Connected(current) = &mut self.state else {
            return Err(ClientError::new(ErrorCode::UNAUTHORIZED, "connect first"));
        };
        if current.user != user {
            if !self.node.sessions().try_add_user(user) {
                return Err(ClientError::new(
                    ErrorCode::LIMIT_EXCEEDED,
                    "too many connections for this user",
                ));
            }
            self.node.sessions().remove_user(&current.user);
            current.user = user.to_owned();
        }
        current.info = info;
        self.node.sessions().set_identity(self.key, current);
        Ok(())
    }

    /// The connection's user (`""` when anonymous or not connected).
    pub fn user(&self) -> &str {
        match &self.state {
            State::Connected(info) => &info.user,
            State::Connecting(_) => "",
        }
    }

    /// Joins `channel` without the namespace's permission checks (the adapter authorised it);
    /// the subscriber holds live publications until [`Session::go_live_granted`].
    ///
    /// # Errors
    /// Bad channel, unknown namespace, already subscribed, too many channels, engine errors.
    pub async fn join_granted(&mut self, channel: &str) -> Result<GrantedJoin, ClientError> {
        let request = kilat_protocol::command::SubscribeRequest {
            channel: channel.to_owned(),
            ..Default::default()
        };
        self.prepare_subscribe(&request, 0, true)
            .await
            .map(GrantedJoin)
            .map_err(|error| error.to_client_error())
    }

    /// Queues `first` (the adapter's own "subscribed" frame), then the held publications, and
    /// adds presence and the join.
    pub async fn go_live_granted(&mut self, join: GrantedJoin, first: SharedFrame) {
        self.finish_subscribe(join.0, Some(first)).await;
        self.update_sub_deadline();
    }

    /// Whether this session holds a subscription to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subs.get(channel).is_some()
    }

    /// Leaves `channel` (nothing happens if not subscribed).
    pub async fn leave_channel(&mut self, channel: &str) {
        if let Some(state) = self.subs.remove(channel) {
            self.leave(channel, state).await;
        }
    }

    /// Publishes `data` to `channel` as this client (publication `info` set), without the
    /// namespace's publish permission (the adapter checked its own rules).
    ///
    /// # Errors
    /// Bad channel, unknown namespace, 413 too large, engine errors.
    pub async fn publish_granted(&self, channel: &str, data: RawJson) -> Result<(), ClientError> {
        let run = async {
            let info = self.info()?;
            let ns = resolve(self.node.config(), channel)?;
            if data.get().len() > ns.max_message_size {
                return Err(CoreError::TooLarge);
            }
            self.node
                .publish_with(
                    channel,
                    kilat_protocol::Payload::Json(data),
                    Some(info),
                    &ns,
                )
                .await
                .map(|_| ())
        };
        run.await.map_err(|error| error.to_client_error())
    }
}
