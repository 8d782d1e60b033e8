//! The connection task: one per client, owning the socket, the pending replies and the
//! subscription tracker, across reconnects.
//!
//! [`ConnectionTask::run`] loops: serve a connection until it is lost, report the loss, wait a
//! jittered backoff, reconnect, resubscribe with recovery, serve again. Client handles talk to it
//! through an unbounded request channel; it answers each request through a oneshot and reports
//! everything else as [`Event`]s.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use kilat_protocol::command::{ChannelRequest, SendRequest, SubscribeRequest};
use kilat_protocol::push::{PresenceChange, PushBody};
use kilat_protocol::{
    ClientError, ClientFrame, Command, Disconnect, ErrorCode, Push, RawJson, Reply, ServerFrame,
    StreamPosition,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::backoff::Backoff;
use crate::config::{ClientConfig, SubscribeOptions};
use crate::delta::Bases;
use crate::error::{Error, ProtocolError, Result};
use crate::event::{CODE_CLOSED, Event};
use crate::tracker::Tracker;
use crate::transport::{
    self, CONNECT_ID, Connection, WsStream, close_to_disconnect, text_message, transport_disconnect,
};

/// What a [`crate::Client`] handle asks of the task.
#[derive(Debug)]
pub(crate) enum Request {
    /// A command whose reply goes back as is.
    Command {
        command: Command,
        reply: oneshot::Sender<Result<Reply>>,
    },
    /// A subscribe: tracked, and resubscribed after reconnects.
    Subscribe {
        channel: String,
        options: SubscribeOptions,
        reply: oneshot::Sender<Result<Reply>>,
    },
    /// An unsubscribe: forgotten at once, so no later publication is delivered.
    Unsubscribe {
        channel: String,
        reply: oneshot::Sender<Result<Reply>>,
    },
    /// A `send`: answered once written to the socket.
    Send {
        data: RawJson,
        reply: oneshot::Sender<Result<()>>,
    },
    /// The last delivered position of a channel.
    Position {
        channel: String,
        reply: oneshot::Sender<Option<StreamPosition>>,
    },
}

/// Who waits for a reply.
#[derive(Debug)]
enum Pending {
    Reply(oneshot::Sender<Result<Reply>>),
    /// A subscribe; `reply` is `None` for resubscribes the task makes itself.
    Subscribe {
        channel: String,
        reply: Option<oneshot::Sender<Result<Reply>>>,
    },
}

/// Why serving a connection stopped.
#[derive(Debug)]
enum Ended {
    /// The application closed the client (or dropped every handle).
    Closed,
    /// The connection was lost; the disconnect says whether to reconnect.
    Lost(Disconnect),
}

type Sink = SplitSink<WsStream, Message>;

/// The long-lived task behind a [`crate::Client`].
#[derive(Debug)]
pub(crate) struct ConnectionTask {
    config: ClientConfig,
    /// Requests from the client handles; `None` from it means every handle was dropped.
    requests: mpsc::UnboundedReceiver<Request>,
    /// Where events go; a dropped receiver just discards them.
    events: mpsc::UnboundedSender<Event>,
    /// Flips to true on [`crate::Client::close`]; its sender drops with the last handle.
    closed: watch::Receiver<bool>,
    /// Subscriptions and their positions, kept across reconnects for recovery.
    tracker: Tracker,
    /// The base payloads of `delta: "fossil"` subscriptions.
    bases: Bases,
    backoff: Backoff,
}

/// Per-connection state: reset on every reconnect.
#[derive(Debug, Default)]
struct Session {
    /// Commands sent on this connection and not yet answered, by id.
    pending: HashMap<u32, Pending>,
    /// The last id used (the connect command used [`CONNECT_ID`]).
    last_id: u32,
}

impl Session {
    fn next_id(&mut self) -> u32 {
        self.last_id = self.last_id.checked_add(1).unwrap_or(CONNECT_ID + 1);
        self.last_id
    }
}

impl ConnectionTask {
    pub(crate) fn new(
        config: ClientConfig,
        requests: mpsc::UnboundedReceiver<Request>,
        events: mpsc::UnboundedSender<Event>,
        closed: watch::Receiver<bool>,
    ) -> Self {
        let backoff = Backoff::new(config.min_reconnect_delay, config.max_reconnect_delay);
        ConnectionTask {
            config,
            requests,
            events,
            closed,
            tracker: Tracker::default(),
            bases: Bases::default(),
            backoff,
        }
    }

    /// Serves `first`, then reconnects after each loss until the client is closed or a
    /// disconnect forbids reconnecting.
    pub(crate) async fn run(mut self, first: Connection) {
        let mut connection = first;
        let mut reconnected = false;
        loop {
            let connected_at = Instant::now();
            let disconnect = match self.serve(connection, reconnected).await {
                Ended::Closed => return self.stop(CODE_CLOSED, "client closed".into()),
                Ended::Lost(d) => d,
            };
            if !(disconnect.reconnect && self.config.reconnect) {
                return self.stop(disconnect.code, disconnect.reason.into_owned());
            }
            // Only a connection that stayed up for a while proves the server healthy again: one
            // it ended right away (3001 on a reply too large, say) would otherwise reconnect at
            // the floor forever.
            if connected_at.elapsed() >= self.config.backoff_reset_after {
                self.backoff.reset();
            }
            let hint = disconnect
                .delay_ms
                .map(|ms| Duration::from_millis(u64::from(ms)));
            self.emit(Event::Disconnected {
                code: disconnect.code,
                reason: disconnect.reason.into_owned(),
                reconnect: true,
            });
            match self.reconnect(hint).await {
                Some(next) => connection = next,
                None => return,
            }
            reconnected = true;
        }
    }

    /// The final event; pending requests then fail with [`Error::Closed`] as the channel closes.
    fn stop(&mut self, code: u16, reason: String) {
        self.emit(Event::Disconnected {
            code,
            reason,
            reconnect: false,
        });
        self.requests.close();
    }

    /// Waits and retries until a connection is up. `None` when the client was closed or the
    /// server refused for good (the final event is then already sent). `hint` is the server's
    /// reconnect spread window from the disconnect that ended the last connection.
    async fn reconnect(&mut self, mut hint: Option<Duration>) -> Option<Connection> {
        // The last attempt's `Retry-After` (an upgrade refused with 503 or 429).
        let mut retry_after: Option<Duration> = None;
        loop {
            let delay = match retry_after.take() {
                Some(floor) => self.backoff.next_delay_at_least(floor),
                None => self.backoff.next_delay(hint.take()),
            };
            self.emit(Event::Reconnecting {
                attempt: self.backoff.attempt(),
                delay,
            });
            // Wakes: the backoff delay elapsing, or the client being closed.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = wait_closed(&mut self.closed) => {
                    self.stop(CODE_CLOSED, "client closed".into());
                    return None;
                }
            }
            let subs = self.tracker.connect_subs();
            // Wakes: the handshake finishing (or failing, or timing out), or the client closing.
            let attempt = tokio::select! {
                attempt = transport::establish(&self.config, subs) => attempt,
                () = wait_closed(&mut self.closed) => {
                    self.stop(CODE_CLOSED, "client closed".into());
                    return None;
                }
            };
            match attempt {
                Ok(connection) => return Some(connection),
                Err(Error::Disconnected(d)) if !d.reconnect => {
                    self.stop(d.code, d.reason.into_owned());
                    return None;
                }
                Err(Error::Disconnected(d)) => {
                    tracing::debug!(code = d.code, reason = %d.reason, "reconnect attempt refused");
                    hint = d.delay_ms.map(|ms| Duration::from_millis(u64::from(ms)));
                }
                Err(Error::Server(e)) if !e.temporary => {
                    let code = u16::try_from(e.code).unwrap_or(u16::MAX);
                    self.stop(code, format!("connect refused: {}", e.message));
                    return None;
                }
                Err(e) => {
                    retry_after = e.retry_after();
                    tracing::debug!(error = %e, ?retry_after, "reconnect attempt failed");
                }
            }
        }
    }

    /// Serves one connection until it ends; fails whatever was in flight on it.
    async fn serve(&mut self, connection: Connection, reconnected: bool) -> Ended {
        let Connection {
            ws,
            result,
            leftovers,
        } = connection;
        let idle = idle_timeout(result.ping, self.config.ping_grace);
        let (mut sink, mut stream) = ws.split();
        let mut session = Session {
            pending: HashMap::new(),
            last_id: CONNECT_ID,
        };
        let ended = match self
            .on_connected(&mut sink, &mut session, result, leftovers, reconnected)
            .await
        {
            Err(ended) => ended,
            Ok(()) => {
                self.serve_frames(&mut sink, &mut stream, &mut session, idle)
                    .await
            }
        };
        if matches!(ended, Ended::Closed) {
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "client closed".into(),
            };
            let _ = sink.send(Message::Close(Some(close))).await;
        }
        self.fail_pending(session);
        ended
    }

    async fn serve_frames(
        &mut self,
        sink: &mut Sink,
        stream: &mut futures_util::stream::SplitStream<WsStream>,
        session: &mut Session,
        idle: Duration,
    ) -> Ended {
        let mut deadline = Instant::now() + idle;
        loop {
            // Wakes: a message from the server; a request from a client handle; the idle
            // deadline (no frame at all, not even a ping, for the ping interval plus grace);
            // the client being closed.
            let step = tokio::select! {
                message = stream.next() => {
                    deadline = Instant::now() + idle;
                    match message {
                        Some(Ok(message)) => self.on_message(sink, session, message).await,
                        Some(Err(e)) => Err(Ended::Lost(transport_disconnect(e.to_string()))),
                        None => Err(Ended::Lost(transport_disconnect("connection closed".into()))),
                    }
                }
                request = self.requests.recv() => match request {
                    Some(request) => self.on_request(sink, session, request).await,
                    None => Err(Ended::Closed),
                },
                () = tokio::time::sleep_until(deadline) => {
                    Err(Ended::Lost(transport_disconnect("no ping from the server".into())))
                }
                () = wait_closed(&mut self.closed) => Err(Ended::Closed),
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    /// Reports the connection, handles `connect.subs` results, resubscribes client
    /// subscriptions after a reconnect and handles frames batched with the connect reply.
    async fn on_connected(
        &mut self,
        sink: &mut Sink,
        session: &mut Session,
        result: kilat_protocol::reply::ConnectResult,
        leftovers: Vec<ServerFrame>,
        reconnected: bool,
    ) -> Result<(), Ended> {
        self.emit(Event::Connected {
            client: result.client,
            reconnected,
        });
        let server_subs = result.subs.unwrap_or_default();
        if reconnected {
            self.tracker.retain_server_side(&server_subs);
        }
        for (channel, sub) in &server_subs {
            for event in self.tracker.on_subscribed(channel, sub, true) {
                self.emit(event);
            }
        }
        if reconnected {
            for request in self.tracker.resubscribe_all() {
                self.send_subscribe(sink, session, request, None).await?;
            }
        }
        for frame in leftovers {
            self.on_frame(sink, session, frame).await?;
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        sink: &mut Sink,
        session: &mut Session,
        message: Message,
    ) -> Result<(), Ended> {
        let frames = match &message {
            Message::Text(text) => transport::decode_batch_raw(text.as_bytes()),
            Message::Binary(bytes) => transport::decode_batch_raw(bytes),
            Message::Close(close) => {
                return Err(Ended::Lost(close_to_disconnect(close.clone())));
            }
            // WebSocket-level pings are answered by tungstenite itself.
            _ => return Ok(()),
        };
        for (raw, frame) in frames {
            match frame {
                Ok(ServerFrame::Push(Push {
                    channel: Some(channel),
                    body: PushBody::Pub(mut publication),
                })) => {
                    if let Err(error) = self.bases.resolve(&channel, raw, &mut publication) {
                        self.delta_failed(sink, session, channel, error).await?;
                        continue;
                    }
                    let push = Push {
                        channel: Some(channel),
                        body: PushBody::Pub(publication),
                    };
                    self.on_push(sink, session, push).await?;
                }
                Ok(frame) => self.on_frame(sink, session, frame).await?,
                // A frame this client cannot read is skipped, not fatal: newer servers may
                // send kinds this version does not know.
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable server frame"),
            }
        }
        Ok(())
    }

    /// A delta that cannot be applied (no base, a bad checksum): the publication is lost to
    /// this client, so it subscribes again, recovering from the last payload it delivered;
    /// recovery brings full payloads.
    async fn delta_failed(
        &mut self,
        sink: &mut Sink,
        session: &mut Session,
        channel: String,
        error: crate::delta::DeltaFailure,
    ) -> Result<(), Ended> {
        tracing::warn!(%error, channel, "a delta publication could not be applied; resubscribing");
        self.bases.forget(&channel);
        let Some(request) = self.tracker.resubscribe_one(&channel) else {
            return Ok(());
        };
        // The reply is not awaited: the subscribe right after it is handled in order.
        let (unsubscribed, _) = oneshot::channel();
        let command = Command::Unsubscribe(ChannelRequest { channel });
        send_command(sink, session, command, Pending::Reply(unsubscribed)).await?;
        self.send_subscribe(sink, session, request, None).await
    }

    async fn on_frame(
        &mut self,
        sink: &mut Sink,
        session: &mut Session,
        frame: ServerFrame,
    ) -> Result<(), Ended> {
        match frame {
            ServerFrame::Ping => write(sink, ClientFrame::Ping.encode()).await,
            ServerFrame::Reply { id, reply } => {
                self.on_reply(session, id, Ok(reply));
                Ok(())
            }
            ServerFrame::Error { id, error } => {
                self.on_reply(session, id, Err(error));
                Ok(())
            }
            ServerFrame::Push(push) => self.on_push(sink, session, push).await,
        }
    }

    /// Routes a reply to whoever waits for it; subscribe results also go through the tracker.
    fn on_reply(&mut self, session: &mut Session, id: u32, reply: Result<Reply, ClientError>) {
        let Some(pending) = session.pending.remove(&id) else {
            tracing::debug!(id, "reply to an unknown command");
            return;
        };
        match pending {
            Pending::Reply(tx) => {
                let _ = tx.send(reply.map_err(Error::Server));
            }
            Pending::Subscribe { channel, reply: tx } => match reply {
                Ok(Reply::Subscribe(result)) => {
                    // An unsubscribe sent meanwhile wins: nothing more for this channel.
                    if self.tracker.contains(&channel) {
                        for event in self.tracker.on_subscribed(&channel, &result, false) {
                            self.emit(event);
                        }
                    }
                    if let Some(tx) = tx {
                        let _ = tx.send(Ok(Reply::Subscribe(result)));
                    }
                }
                Ok(other) => {
                    self.tracker.remove(&channel);
                    let error = Error::Protocol(ProtocolError::Unexpected {
                        expected: "a subscribe reply",
                        got: format!("{other:?}"),
                    });
                    if let Some(tx) = tx {
                        let _ = tx.send(Err(error));
                    }
                }
                Err(error) => {
                    self.tracker.remove(&channel);
                    match tx {
                        Some(tx) => {
                            let _ = tx.send(Err(Error::Server(error)));
                        }
                        None => self.emit(Event::SubscribeFailed { channel, error }),
                    }
                }
            },
        }
    }

    async fn on_push(
        &mut self,
        sink: &mut Sink,
        session: &mut Session,
        push: Push,
    ) -> Result<(), Ended> {
        let Push { channel, body } = push;
        let channel_or_empty = || channel.clone().unwrap_or_default();
        match body {
            PushBody::Pub(publication) => {
                if let Some(event) = self
                    .tracker
                    .on_publication(&channel_or_empty(), publication)
                {
                    self.emit(event);
                }
            }
            PushBody::Join(join) => self.emit(Event::Join {
                channel: channel_or_empty(),
                info: join.info,
            }),
            PushBody::Leave(leave) => self.emit(Event::Leave {
                channel: channel_or_empty(),
                info: leave.info,
            }),
            // A batched window of joins and leaves: one event per change, in order, so an
            // application sees the same events as with single join/leave pushes.
            PushBody::PresenceDiff(diff) => {
                for change in diff.changes {
                    self.emit(match change {
                        PresenceChange::Join(info) => Event::Join {
                            channel: channel_or_empty(),
                            info,
                        },
                        PresenceChange::Leave(info) => Event::Leave {
                            channel: channel_or_empty(),
                            info,
                        },
                    });
                }
            }
            PushBody::PresenceCount(count) => self.emit(Event::PresenceCount {
                channel: channel_or_empty(),
                num_clients: count.num_clients,
                num_users: count.num_users,
            }),
            PushBody::Subscribe(result) => {
                for event in self
                    .tracker
                    .on_subscribed(&channel_or_empty(), &result, true)
                {
                    self.emit(event);
                }
            }
            PushBody::Unsubscribe(unsubscribe) => {
                let channel = channel_or_empty();
                self.emit(Event::Unsubscribed {
                    channel: channel.clone(),
                    code: unsubscribe.code,
                    reason: unsubscribe.reason,
                });
                let again = if unsubscribe.resubscribe {
                    self.tracker.resubscribe_one(&channel)
                } else {
                    None
                };
                match again {
                    Some(request) => self.send_subscribe(sink, session, request, None).await?,
                    None => {
                        self.tracker.remove(&channel);
                    }
                }
            }
            PushBody::Message(message) => self.emit(Event::Message { data: message.data }),
            PushBody::Refresh(refresh) => self.emit(Event::RefreshRequested {
                channel,
                ttl: refresh.ttl,
            }),
            PushBody::Disconnect(disconnect) => return Err(Ended::Lost(disconnect)),
        }
        Ok(())
    }

    async fn on_request(
        &mut self,
        sink: &mut Sink,
        session: &mut Session,
        request: Request,
    ) -> Result<(), Ended> {
        // A caller that timed out (its request waited through a reconnect) or went away gets
        // nothing done in its name: it was told the call failed. Unsubscribes still apply.
        let abandoned = match &request {
            Request::Command { reply, .. } | Request::Subscribe { reply, .. } => reply.is_closed(),
            Request::Send { reply, .. } => reply.is_closed(),
            Request::Unsubscribe { .. } | Request::Position { .. } => false,
        };
        if abandoned {
            return Ok(());
        }
        match request {
            Request::Command { command, reply } => {
                send_command(sink, session, command, Pending::Reply(reply)).await
            }
            Request::Subscribe {
                channel,
                options,
                reply,
            } => match self.tracker.begin(&channel, options) {
                Some(request) => {
                    self.send_subscribe(sink, session, request, Some(reply))
                        .await
                }
                None => {
                    let error =
                        ClientError::new(ErrorCode::ALREADY_SUBSCRIBED, "already subscribed");
                    let _ = reply.send(Err(Error::Server(error)));
                    Ok(())
                }
            },
            Request::Unsubscribe { channel, reply } => {
                self.tracker.remove(&channel);
                self.bases.forget(&channel);
                let command = Command::Unsubscribe(ChannelRequest { channel });
                send_command(sink, session, command, Pending::Reply(reply)).await
            }
            Request::Send { data, reply } => {
                let written = write(sink, ClientFrame::Send(SendRequest { data }).encode()).await;
                let _ = reply.send(match &written {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Error::ConnectionLost),
                });
                written
            }
            Request::Position { channel, reply } => {
                let _ = reply.send(self.tracker.position(&channel));
                Ok(())
            }
        }
    }

    async fn send_subscribe(
        &mut self,
        sink: &mut Sink,
        session: &mut Session,
        request: SubscribeRequest,
        reply: Option<oneshot::Sender<Result<Reply>>>,
    ) -> Result<(), Ended> {
        let pending = Pending::Subscribe {
            channel: request.channel.clone(),
            reply,
        };
        send_command(sink, session, Command::Subscribe(request), pending).await
    }

    /// Fails every command in flight on a lost connection. A user subscribe in flight is
    /// forgotten too: its caller is told to try again rather than being subscribed later.
    fn fail_pending(&mut self, session: Session) {
        for (_, pending) in session.pending {
            match pending {
                Pending::Reply(tx) => {
                    let _ = tx.send(Err(Error::ConnectionLost));
                }
                Pending::Subscribe {
                    channel,
                    reply: Some(tx),
                } => {
                    self.tracker.remove(&channel);
                    let _ = tx.send(Err(Error::ConnectionLost));
                }
                // Resubscribes are made again after the next reconnect.
                Pending::Subscribe { reply: None, .. } => {}
            }
        }
    }

    fn emit(&self, event: Event) {
        // A dropped `Events` means the application does not want events.
        let _ = self.events.send(event);
    }
}

async fn send_command(
    sink: &mut Sink,
    session: &mut Session,
    command: Command,
    pending: Pending,
) -> Result<(), Ended> {
    let id = session.next_id();
    session.pending.insert(id, pending);
    write(sink, ClientFrame::Command { id, command }.encode()).await
}

async fn write(sink: &mut Sink, frame: Vec<u8>) -> Result<(), Ended> {
    sink.send(text_message(frame))
        .await
        .map_err(|e| Ended::Lost(transport_disconnect(e.to_string())))
}

/// Resolves once the client is closed or every handle is dropped.
///
/// # Cancel safety
/// Cancel safe: it only observes a watch channel.
async fn wait_closed(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|closed| *closed).await;
}

/// How long to wait for any frame: the server pings every `ping` seconds. A server that
/// announces no ping interval gets a day, i.e. no practical limit.
fn idle_timeout(ping: u32, grace: Duration) -> Duration {
    match ping {
        0 => Duration::from_secs(24 * 3600),
        seconds => Duration::from_secs(u64::from(seconds)) + grace,
    }
}
