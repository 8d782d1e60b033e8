//! [`Session`]: one connection's state machine, driven by its transport task.
//!
//! The transport feeds inbound messages to [`Session::handle_message`], writes what appears in
//! the [`Outbox`], and calls [`Session::on_timer`] at [`Session::next_deadline`]. The session
//! never touches a socket. Command handlers live in `commands.rs` (more methods of [`Session`]).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kilat_protocol::push::{RefreshPush, encode_push_kind};
use kilat_protocol::reply::encode_error;
use kilat_protocol::{
    ClientError, ClientFrame, ClientInfo, Command, Disconnect, DisconnectCode, Method, Reply,
    SharedFrame, decode_frames,
};
use tokio::time::Instant;

use crate::limits::TokenBucket;
use crate::node::{Node, ServerChanges};
use crate::outbox::Outbox;
use crate::proxy::{
    Hook, RefreshEvent, RefreshReply, RequestHeaders, SendEvent, SubRefreshEvent, SubRefreshReply,
};
use crate::subscriptions::Subscriptions;

/// Which transport carries a session (reported to the hub for stats and the emulation reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportInfo {
    /// `"websocket"`, `"sse"` or `"http_stream"`.
    pub name: &'static str,
    /// Whether client commands arrive out of band (`POST /connection/emulation`).
    pub emulated: bool,
}

/// Where the session is in its life.
#[derive(Debug)]
pub(crate) enum State {
    /// Waiting for `connect`, holding the node's handshake permit (`server.max_handshakes`)
    /// when the transport gave it one: the `connect` command takes it and drops it once its
    /// reply is queued, so the permit lives for the handshake, not the connection (this variant
    /// is smaller than `Connected`'s, so it costs an idle connection nothing).
    Connecting(Option<tokio::sync::OwnedSemaphorePermit>),
    /// Connected as this client.
    Connected(ClientInfo),
}

/// When the backend's refresh hook fails, it is asked again this much later (the connection
/// stays open meanwhile).
const BACKEND_REFRESH_RETRY: Duration = Duration::from_secs(5);

/// Far enough in the future to mean "no timer".
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Least time between two answers to client-initiated pings; breaks ping loops with clients
/// that answer every `{}` with `{}`.
const CLIENT_PING_ANSWER_GAP: Duration = Duration::from_secs(1);

/// Owns one connection's state; created per connection by the transport task.
#[derive(Debug)]
pub struct Session {
    pub(crate) node: Node,
    pub(crate) transport: TransportInfo,
    /// Replies and pushes for this connection; shared with the hub's fan-out.
    pub(crate) outbox: Outbox,
    /// This session's key in the hub and the session registry.
    pub(crate) key: u64,
    pub(crate) state: State,
    /// Subscriptions by channel.
    pub(crate) subs: Subscriptions,
    /// Before connect: when the handshake times out (3003).
    handshake_deadline: Instant,
    /// After connect, until the client's first message or the first timer: the node's
    /// handshake permits (`server.max_handshakes`). The first message after the connect reply
    /// (the SDK resubscribes in one message right after it, and those recovery reads are most
    /// of a reconnect's engine work) waits for a permit and holds it while it is handled, so
    /// a reconnect storm's resubscriptions share the bound with its handshakes. Nothing is held
    /// in between: a client that stays silent after connecting costs no permit, and the rate
    /// of new connections is not capped by clients that never send anything. 8 bytes.
    resubscribe_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// After connect: when the next ping `{}` is due.
    pub(crate) next_ping: Instant,
    /// After a ping: when the connection is closed (3002) unless the client sends something.
    pong_deadline: Option<Instant>,
    /// A ping was sent and no `{}` came back yet: the next `{}` is a pong, not a client ping.
    awaiting_pong: bool,
    /// When the connection token expires (a `refresh` push is sent then).
    pub(crate) expires_at: Option<Instant>,
    /// After the `refresh` push: when the connection is closed with 3005 unless refreshed.
    pub(crate) refresh_deadline: Option<Instant>,
    /// When a client-initiated ping was last answered.
    last_ping_answer: Option<Instant>,
    /// Set by [`Session::close`]; `Drop` cleans up synchronously otherwise.
    closed: bool,
    /// Commands per second allowed to this connection (`client_command_rate`).
    commands: TokenBucket,
    /// Commands refused in a row by the rate limit; past the burst the client is dropped.
    refused_in_a_row: u32,
    /// Allowlisted handshake headers, forwarded to the backend hooks; set by the transport.
    pub(crate) headers: RequestHeaders,
    /// While the backend's refresh hook is asked about this connection: where its task leaves
    /// the answer, read at the refresh deadline (timers are synchronous, so the call runs in a
    /// task of its own).
    pub(crate) backend_refresh: Option<Arc<Mutex<BackendRefresh>>>,
    /// The earliest subscription-token timer (see [`SubState::deadline`]), kept up to date by
    /// [`Session::update_sub_deadline`] so `next_deadline` does not scan the subscriptions.
    sub_deadline: Option<Instant>,
    /// Emulated transports only: the secret that authorises this stream's emulation POSTs, set
    /// by the transport before `connect` and handed to the client in the connect result (then
    /// dropped here: the transport keeps it). Never derived from anything others can see.
    pub(crate) emulation_key: Option<Box<str>>,
}

/// The state of a refresh asked of the backend.
#[derive(Debug)]
pub(crate) enum BackendRefresh {
    /// No answer yet.
    Pending,
    /// Extended until this instant (`None`: no expiry any more), with new connection info.
    Extended {
        expires_at: Option<Instant>,
        info: Option<kilat_protocol::RawJson>,
    },
    /// The backend answered with an expiry already past.
    Expired,
    /// The backend could not be asked; ask again.
    Failed,
}

/// The `refresh` push asking for a new token within `grace`: the connection's (no channel) or
/// a subscription's.
fn refresh_frame(channel: Option<&str>, grace: Duration) -> SharedFrame {
    SharedFrame::new(encode_push_kind(
        channel,
        "refresh",
        &RefreshPush {
            ttl: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
        },
    ))
}

fn ping_frame() -> SharedFrame {
    static PING: OnceLock<SharedFrame> = OnceLock::new();
    PING.get_or_init(|| SharedFrame::new(&b"{}"[..])).clone()
}

impl Session {
    /// A session for a new connection. If the node is draining, `outbox` is closed with 3000 at
    /// once.
    pub fn new(node: &Node, transport: TransportInfo, outbox: Outbox) -> Self {
        let key = node.sessions().register(&outbox, transport.name);
        if let Some(observer) = node.observer() {
            observer.session_opened(transport.name);
        }
        let now = Instant::now();
        Session {
            node: node.clone(),
            transport,
            outbox,
            key,
            state: State::Connecting(None),
            subs: Subscriptions::default(),
            handshake_deadline: now + node.config().handshake_timeout,
            resubscribe_gate: None,
            next_ping: now + NO_DEADLINE,
            pong_deadline: None,
            awaiting_pong: false,
            expires_at: None,
            refresh_deadline: None,
            last_ping_answer: None,
            closed: false,
            commands: TokenBucket::new(
                node.config().client_command_rate,
                node.config().client_command_burst,
                now,
            ),
            refused_in_a_row: 0,
            headers: Box::default(),
            backend_refresh: None,
            sub_deadline: None,
            emulation_key: None,
        }
    }

    /// Keeps the handshake's request headers the backend hooks forward (the transport passes
    /// only the allowlisted ones: they stay in memory for the connection's life).
    pub fn set_request_headers(&mut self, headers: RequestHeaders) {
        self.headers = headers;
    }

    /// Holds `permit` (one of the node's concurrent handshakes) until this session's `connect`
    /// has been answered, or until the session ends without connecting: the transport bounds
    /// how many connections are between their upgrade and their connect reply at once, the
    /// part of a connection's life that costs the engine (authentication, subscriptions,
    /// presence, recovery reads).
    pub fn hold_until_connected(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        if let State::Connecting(held) = &mut self.state {
            *held = Some(permit);
        }
    }

    /// After a successful `connect`: gives the handshake permit back and makes the client's
    /// next message wait for one of the same permits (see `resubscribe_gate`).
    pub(crate) fn gate_first_message(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        self.resubscribe_gate = Some(permit.semaphore().clone());
    }

    /// Takes the handshake permit out of the connecting state, for `connect` to drop once
    /// answered.
    pub(crate) fn take_handshake_permit(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &mut self.state {
            State::Connecting(held) => held.take(),
            State::Connected(_) => None,
        }
    }

    /// Emulated transports: the unguessable key this stream's emulation POSTs must present,
    /// sent to the client as `session` in the connect result (docs/protocol.md section 11, "Emulation"). The client
    /// id is visible to other users (presence, join/leave, publication info), so it must never
    /// authorise anything; the transport generates this from a CSPRNG and looks sessions up by
    /// it.
    pub fn set_emulation_key(&mut self, key: impl Into<Box<str>>) {
        self.emulation_key = Some(key.into());
    }

    /// The connection's client info, once connected.
    pub fn client(&self) -> Option<&ClientInfo> {
        match &self.state {
            State::Connected(info) => Some(info),
            State::Connecting(_) => None,
        }
    }

    /// How long the transport waits, once frames are queued, before writing them
    /// (`node.write_delay_ms`; zero: at once).
    pub fn write_delay(&self) -> Duration {
        Duration::from_millis(self.node.config().write_delay_ms)
    }

    /// The transport this session runs on.
    pub fn transport(&self) -> TransportInfo {
        self.transport
    }

    /// Channels this session is subscribed to.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.subs.channels()
    }

    /// One inbound text message (one or more `\n`-separated frames). Replies and pushes go to
    /// the outbox. `Err` = disconnect now (the transport closes with that code after writing
    /// what is queued).
    ///
    /// # Errors
    /// 3500 for a frame that cannot be answered (not JSON, no valid id), 3501 for a command
    /// before `connect` or a failed authentication, 3000 while draining.
    pub async fn handle_message(&mut self, text: &[u8]) -> Result<(), Disconnect> {
        // The first message after the connect reply (the resubscriptions) runs holding one of
        // the node's handshake permits, waiting for it in a storm (a closed semaphore: none).
        let permit = match self.resubscribe_gate.take() {
            Some(gate) => gate.acquire_owned().await.ok(),
            None => None,
        };
        let result = self.handle_frames(text).await;
        drop(permit);
        result
    }

    async fn handle_frames(&mut self, text: &[u8]) -> Result<(), Disconnect> {
        // Any frame proves the client is alive; a late pong is as good as an early one.
        self.pong_deadline = None;
        self.absorb_server_changes();
        for frame in decode_frames(text) {
            if !self.commands.try_take(Instant::now()) {
                self.refused_in_a_row += 1;
                if self.refused_in_a_row > self.node.config().client_command_burst {
                    return Err(Disconnect::new(
                        DisconnectCode::BAD_REQUEST,
                        "command rate exceeded",
                    ));
                }
                if let Ok(ClientFrame::Command { id, .. }) = frame {
                    self.reply_error(
                        id,
                        &ClientError::new(
                            kilat_protocol::ErrorCode::LIMIT_EXCEEDED,
                            "command rate exceeded",
                        ),
                    );
                }
                continue;
            }
            self.refused_in_a_row = 0;
            match frame {
                Err(error) => match (error.disconnect(), error.id) {
                    (None, Some(id)) => self.reply_error(id, &error.to_client_error()),
                    (disconnect, _) => return Err(disconnect.unwrap_or(Disconnect::BAD_REQUEST)),
                },
                Ok(ClientFrame::Ping) => self.on_ping(),
                Ok(ClientFrame::Send(request)) => {
                    let State::Connected(info) = &self.state else {
                        return Err(not_connected());
                    };
                    // Without a send hook, fire-and-forget means dropped.
                    if let Some(backend) = self.node.backend_for(Hook::Send) {
                        let event = SendEvent {
                            client: info.client.clone(),
                            user: info.user.clone(),
                            data: request.data,
                            headers: self.headers.clone(),
                        };
                        // Never waited for: the client expects no answer.
                        self.node.spawn(async move { backend.send(event).await });
                    }
                }
                Ok(ClientFrame::Command { id, command }) => match command {
                    Command::Connect(request) => {
                        let started = self.node.observer().map(|_| Instant::now());
                        let result = self.connect(id, request).await;
                        if let (Some(observer), Some(started)) = (self.node.observer(), started) {
                            let error = result.as_ref().err().map(|d| u32::from(d.code));
                            observer.command(Method::Connect, started.elapsed(), error);
                        }
                        result?;
                        // The transport's connection span (if it has one) names the client
                        // from now on; recording a field a span lacks does nothing.
                        if let State::Connected(info) = &self.state {
                            let span = tracing::Span::current();
                            span.record("client", info.client.as_str());
                            span.record("user", info.user.as_str());
                            tracing::debug!("connected");
                        }
                    }
                    _ if matches!(self.state, State::Connecting(_)) => return Err(not_connected()),
                    command => self.dispatch(id, command).await,
                },
            }
        }
        self.update_sub_deadline();
        Ok(())
    }

    fn on_ping(&mut self) {
        if self.awaiting_pong {
            self.awaiting_pong = false;
            return;
        }
        let now = Instant::now();
        if self
            .last_ping_answer
            .is_none_or(|at| now.duration_since(at) >= CLIENT_PING_ANSWER_GAP)
        {
            self.last_ping_answer = Some(now);
            self.outbox.push(ping_frame());
        }
    }

    /// Queues a successful reply.
    pub(crate) fn reply(&self, id: u32, reply: &Reply) {
        self.outbox.push_reply(SharedFrame::reply(reply.encode(id)));
    }

    /// Queues an error reply.
    pub(crate) fn reply_error(&self, id: u32, error: &ClientError) {
        self.outbox
            .push_reply(SharedFrame::reply(encode_error(id, error)));
    }

    /// When the transport must call [`Session::on_timer`] next: the handshake timeout before
    /// connect, then the next ping, the pong deadline, the token expiry or the refresh deadline.
    pub fn next_deadline(&self) -> Instant {
        match self.state {
            State::Connecting(_) => self.handshake_deadline,
            State::Connected(_) => {
                let expiry = match self.refresh_deadline {
                    Some(deadline) => Some(deadline),
                    None => self.expires_at,
                };
                [self.pong_deadline, expiry, self.sub_deadline]
                    .into_iter()
                    .flatten()
                    .fold(self.next_ping, Instant::min)
            }
        }
    }

    /// Runs the timers due at `now`: handshake timeout (3003), pong timeout (3002), the ping
    /// `{}` (queued in the outbox) and the presence refresh that goes with it, token expiry (a
    /// `refresh` push, then 3005 after `token_refresh_grace` without a `refresh` command).
    ///
    /// # Errors
    /// The disconnect to close with.
    pub fn on_timer(&mut self, now: Instant) -> Result<(), Disconnect> {
        self.absorb_server_changes();
        // A first message that comes only after a timer (the first ping, 25 s on) is not a
        // reconnect's resubscription: it does not wait for a permit.
        if matches!(self.state, State::Connected(_)) {
            self.resubscribe_gate = None;
        }
        match &self.state {
            State::Connecting(_) => {
                if now >= self.handshake_deadline {
                    return Err(Disconnect::HANDSHAKE_TIMEOUT);
                }
            }
            State::Connected(_) => {
                if self.pong_deadline.is_some_and(|deadline| now >= deadline) {
                    return Err(Disconnect::NO_PONG);
                }
                if self
                    .refresh_deadline
                    .is_some_and(|deadline| now >= deadline)
                    && self.backend_refresh.is_some()
                {
                    self.settle_backend_refresh(now)?;
                }
                if self
                    .refresh_deadline
                    .is_some_and(|deadline| now >= deadline)
                {
                    return Err(Disconnect::TOKEN_EXPIRED);
                }
                if self.refresh_deadline.is_none()
                    && self.expires_at.is_some_and(|at| now >= at)
                    && self.node.backend_for(Hook::Refresh).is_some()
                {
                    self.ask_backend_refresh(now);
                }
                if self.refresh_deadline.is_none() && self.expires_at.is_some_and(|at| now >= at) {
                    let grace = self.node.config().token_refresh_grace;
                    self.outbox.push(refresh_frame(None, grace));
                    self.refresh_deadline = Some(now + grace);
                }
                if self.sub_deadline.is_some_and(|deadline| now >= deadline) {
                    self.expire_subscriptions(now);
                }
                if now >= self.next_ping {
                    let config = self.node.config();
                    self.outbox.push(ping_frame());
                    self.awaiting_pong = true;
                    // An unanswered earlier ping keeps its deadline: a ping interval shorter
                    // than the pong timeout must not push the deadline out forever.
                    if !config.pong_timeout.is_zero() && self.pong_deadline.is_none() {
                        self.pong_deadline = Some(now + config.pong_timeout);
                    }
                    self.next_ping = now + config.ping_interval;
                    if let State::Connected(info) = &self.state {
                        self.refresh_presence(info.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Asks the backend's refresh hook (in a task) instead of sending the client a `refresh`
    /// push; the answer is read at the refresh deadline. A backend `disconnect` closes the
    /// outbox at once.
    fn ask_backend_refresh(&mut self, now: Instant) {
        let grace = self.node.config().token_refresh_grace;
        self.refresh_deadline = Some(now + grace);
        let (State::Connected(info), Some(backend)) =
            (&self.state, self.node.backend_for(Hook::Refresh))
        else {
            return;
        };
        let event = RefreshEvent {
            client: info.client.clone(),
            user: info.user.clone(),
            headers: self.headers.clone(),
        };
        let slot = Arc::new(Mutex::new(BackendRefresh::Pending));
        let answered = slot.clone();
        let outbox = self.outbox.clone();
        let started = self.node.spawn(async move {
            let answer = match backend.refresh(event).await {
                // Converted when the answer arrives, so its age at the deadline does not count.
                Ok(RefreshReply::Extend { expires_at, info }) => match expires_at {
                    Some(at) if crate::time::ttl_from(at) == 0 => BackendRefresh::Expired,
                    expires_at => BackendRefresh::Extended {
                        expires_at: expires_at.map(crate::time::instant_from),
                        info,
                    },
                },
                Ok(RefreshReply::Disconnect(disconnect)) => {
                    outbox.close(disconnect);
                    return;
                }
                Err(error) => {
                    tracing::debug!(code = error.code, message = %error.message, "refresh hook failed; asking again later");
                    BackendRefresh::Failed
                }
            };
            *crate::util::lock(&answered) = answer;
        });
        if started {
            self.backend_refresh = Some(slot);
        }
    }

    /// At the refresh deadline, applies what the backend's refresh hook answered.
    fn settle_backend_refresh(&mut self, now: Instant) -> Result<(), Disconnect> {
        let Some(slot) = self.backend_refresh.take() else {
            return Ok(());
        };
        let answer = std::mem::replace(&mut *crate::util::lock(&slot), BackendRefresh::Pending);
        match answer {
            BackendRefresh::Pending => {
                // Still asking (a slow backend): look again a little later.
                self.backend_refresh = Some(slot);
                self.refresh_deadline = Some(now + BACKEND_REFRESH_RETRY);
            }
            BackendRefresh::Failed => self.ask_backend_refresh(now),
            BackendRefresh::Expired => return Err(Disconnect::TOKEN_EXPIRED),
            BackendRefresh::Extended { expires_at, info } => {
                self.expires_at = expires_at;
                self.refresh_deadline = None;
                if let (Some(info), State::Connected(current)) = (info, &mut self.state) {
                    current.info = Some(info);
                    let current = current.clone();
                    self.node.sessions().set_identity(self.key, &current);
                }
            }
        }
        Ok(())
    }

    /// Queues a refresh of this connection's presence entries so they outlive `presence_ttl`
    /// (sent with the other sessions' within a short window, see `Node::queue_presence_refresh`).
    fn refresh_presence(&self, info: ClientInfo) {
        let channels: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.presence)
            .map(|(c, _)| c.to_owned())
            .collect();
        if channels.is_empty() {
            return;
        }
        self.node.queue_presence_refresh(self.key, &info, channels);
    }

    /// Takes the subscriptions the server API added or removed since the last look.
    fn absorb_server_changes(&mut self) {
        if let Some(changes) = self.node.sessions().take_changes(self.key) {
            self.apply(changes);
        }
    }

    fn apply(&mut self, changes: ServerChanges) {
        for channel in changes.removed {
            self.subs.remove(&channel);
        }
        for (channel, state) in changes.added {
            self.subs.insert(channel, state);
        }
        let grace = self.node.config().token_refresh_grace;
        for (channel, outcome) in changes.refreshed {
            let Some(state) = self.subs.get_mut(&channel) else {
                continue;
            };
            if !state.refresh_sent {
                // Renewed meanwhile (a `sub_refresh` from the client, a new subscribe).
                continue;
            }
            match outcome {
                Ok(until) if until.is_none_or(|at| crate::time::ttl_from(at) > 0) => {
                    state.expires_at = until.map(crate::time::instant_from);
                    state.refresh_sent = false;
                }
                // Refused, or extended into the past: ends at this timer.
                _ => {
                    let now = Instant::now();
                    state.expires_at = Some(now.checked_sub(grace).unwrap_or(now));
                }
            }
        }
        self.update_sub_deadline();
    }

    /// Asks the backend's sub-refresh hook (in a task) about `channel`, whose subscription
    /// expired; the answer comes back through the registry's server changes.
    fn ask_backend_sub_refresh(&self, channel: &str) -> bool {
        let (State::Connected(info), Some(backend)) =
            (&self.state, self.node.backend_for(Hook::SubRefresh))
        else {
            return false;
        };
        let event = SubRefreshEvent {
            client: info.client.clone(),
            user: info.user.clone(),
            channel: channel.to_owned(),
            headers: self.headers.clone(),
        };
        let node = self.node.clone();
        let key = self.key;
        self.node.spawn(async move {
            let channel = event.channel.clone();
            let outcome = match backend.sub_refresh(event).await {
                Ok(SubRefreshReply::Extend { expires_at }) => Ok(expires_at),
                Ok(SubRefreshReply::Refuse) => Err(()),
                Err(error) => {
                    tracing::warn!(code = error.code, message = %error.message, %channel, "sub_refresh hook failed; the subscription ends after the grace");
                    return;
                }
            };
            node.sessions()
                .record_change(key, |changes| changes.refreshed.push((channel, outcome)));
        })
    }

    /// Recomputes the earliest subscription-token timer after the subscriptions changed.
    pub(crate) fn update_sub_deadline(&mut self) {
        let grace = self.node.config().token_refresh_grace;
        self.sub_deadline = self
            .subs
            .iter()
            .filter_map(|(_, state)| state.deadline(grace))
            .min();
    }

    /// Subscription tokens due at `now`: an expired one gets a `refresh` push with its channel;
    /// one still expired `token_refresh_grace` later ends the subscription with an
    /// `unsubscribe` push (code 410). docs/protocol.md section 9.
    fn expire_subscriptions(&mut self, now: Instant) {
        let grace = self.node.config().token_refresh_grace;
        let mut ended = Vec::new();
        let mut asks = Vec::new();
        for (channel, state) in self.subs.iter_mut() {
            match state.deadline(grace) {
                Some(deadline) if now >= deadline => {}
                _ => continue,
            }
            if state.refresh_sent {
                ended.push(channel.to_owned());
                continue;
            }
            state.refresh_sent = true;
            asks.push(channel.to_owned());
        }
        for channel in asks {
            // With a sub-refresh hook the backend decides, not the client.
            if !self.ask_backend_sub_refresh(&channel) {
                self.outbox.push(refresh_frame(Some(&channel), grace));
            }
        }
        for channel in ended {
            let Some(state) = self.subs.remove(&channel) else {
                continue;
            };
            tracing::debug!(%channel, "subscription token expired; unsubscribing");
            self.outbox.push(crate::hub::unsubscribe_frame(
                &channel,
                kilat_protocol::ErrorCode::TOKEN_EXPIRED.0,
                "subscription token expired",
                false,
            ));
            if let State::Connected(info) = &self.state {
                self.node
                    .end_subscription(&channel, self.key, info.clone(), state);
            }
        }
        self.update_sub_deadline();
    }

    /// The session's key: unique on this node for its lifetime, the connection id in logs.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Tells the metrics observer that `frames` were written to the socket.
    pub fn record_write(&self, frames: &[SharedFrame]) {
        if let Some(observer) = self.node.observer() {
            let (bytes, stamp) = match frames {
                [frame] => (frame.len(), frame.stamp()),
                frames => (
                    frames.iter().map(SharedFrame::len).sum(),
                    frames.iter().find_map(SharedFrame::stamp),
                ),
            };
            observer.wrote(self.transport.name, bytes, stamp);
        }
    }

    /// Tells the metrics observer why the connection ends (the transport calls it once, before
    /// [`Session::close`], when it closes with a code).
    pub fn record_disconnect(&self, disconnect: &Disconnect) {
        if let Some(observer) = self.node.observer() {
            observer.disconnected(self.transport.name, disconnect.code.into());
        }
    }

    /// Tells the metrics observer that the connection ends without a close frame, and why
    /// (see [`crate::Observer::dropped`]).
    pub fn record_drop(&self, reason: &'static str) {
        if let Some(observer) = self.node.observer() {
            observer.dropped(self.transport.name, reason);
        }
    }

    /// Cleanup on any close: unsubscribe everything, remove presence, publish leaves.
    pub async fn close(mut self) {
        self.closed = true;
        if let Some(observer) = self.node.observer() {
            observer.session_closed(self.transport.name);
        }
        // Unregister first: a server-side subscribe racing with this close either lands in the
        // changes returned here or finds the session gone and undoes itself.
        let changes = self.node.sessions().unregister(self.key);
        self.apply(changes);
        for (channel, state) in self.subs.take_all() {
            self.leave(&channel, state).await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Some(observer) = self.node.observer() {
            observer.session_closed(self.transport.name);
        }
        // Dropped without `close` (a panicking or cancelled transport task): do the synchronous
        // part so the hub holds no dead subscriber; presence entries expire by TTL.
        let changes = self.node.sessions().unregister(self.key);
        self.apply(changes);
        for channel in self.subs.channels() {
            self.node.remove_subscriber_now(channel, self.key);
        }
    }
}

fn not_connected() -> Disconnect {
    Disconnect::new(DisconnectCode::UNAUTHORIZED, "connect first")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_permit_costs_a_connected_session_nothing() {
        // The permit lives in the `Connecting` variant, which is smaller than `Connected`'s.
        assert_eq!(
            std::mem::size_of::<State>(),
            std::mem::size_of::<ClientInfo>()
        );
    }
}
