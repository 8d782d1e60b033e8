//! `GET /app/{key}`: the Pusher WebSocket endpoint. A Pusher client is a kilat [`Session`]
//! (presence, limits, cleanup, the hub's encode-once fan-out) driven by the shared connection
//! loop ([`driver::drive`]); [`PusherConn`] turns Pusher messages into session calls and
//! [`PusherWire`] writes the hub's frames as Pusher events, translated once per frame
//! ([`protocol::translate`], cached in the frame's [`protocol::SLOT_PUSHER`] slot).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::Either;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kilat_core::{Node, Outbox, Session, TransportInfo};
use kilat_protocol::{Disconnect, DisconnectCode, SharedFrame};
use kilat_transport::ws::{self, Message, WsConnection};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::app::App;
use super::auth;
use super::config::PusherApp;
use super::occupancy;
use super::protocol::{self, ChannelKind, ClientMessage, Decoded, Published, own_frame};
use super::webhooks;
use crate::AppState;
use crate::transport::admission::{self, Admission};
use crate::transport::driver::{self, Handler, Inbound, Wire};
use crate::transport::websocket::{OnSocket, with_socket};

/// Validates the upgrade like `/connection/websocket` (draining, origin, connection permits),
/// then speaks Pusher. An unknown key (4001), a disabled app (4003) or an unsupported protocol
/// version (4007) is answered the way Pusher does: the socket opens, gets `pusher:error` and
/// is closed with that code.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Path(key): Path<String>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    // The admission step every transport takes (draining, origin, connection slot).
    let peer = crate::transport::peer::peer_of(&parts.extensions);
    let permit = match admission::admit(&state, &parts.headers, peer) {
        Ok(admission) => admission,
        Err(refusal) => return admission::refusal_response(refusal),
    };
    let handshake = match ws::negotiate(&parts, &state.pusher.ws) {
        Ok(handshake) => handshake,
        Err(refused) => return refused.into_response::<Body>(),
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return (
            StatusCode::BAD_REQUEST,
            "connection cannot be upgraded (HTTP/1.1 required)\n",
        )
            .into_response();
    };
    let refusal = refusal(
        state.pusher.by_key(&key).map(|app| &app.config),
        parts.uri.query(),
    );
    let app = state.pusher.by_key(&key).cloned();
    let response = handshake.response::<Body>();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "pusher upgrade did not complete");
                return;
            }
        };
        let ws_config = state.pusher.ws.clone();
        match (refusal, app) {
            (None, Some(app)) => {
                // As on `/connection/websocket`: the socket is taken back out of hyper's
                // wrapper, so an idle connection does not keep hyper's boxed I/O and buffer.
                with_socket(
                    upgraded,
                    StartPusher {
                        handshake: &handshake,
                        ws_config: &ws_config,
                        state: &state,
                        app,
                        permit,
                    },
                );
            }
            (refusal, _) => {
                let mut conn = WsConnection::new(TokioIo::new(upgraded), &handshake, &ws_config);
                let (code, message) = refusal.unwrap_or((4001, "unknown app key".into()));
                tracing::info!(code, %message, "pusher connection refused");
                let _ = conn.send_text(&protocol::error(Some(code), &message)).await;
                let _ = conn.close(code, &message).await;
            }
        }
    });
    response
}

/// Spawns a Pusher connection task over the socket.
struct StartPusher<'a> {
    handshake: &'a ws::Handshake,
    ws_config: &'a ws::WsConfig,
    state: &'a AppState,
    app: Arc<App>,
    permit: Admission,
}

impl OnSocket for StartPusher<'_> {
    fn run<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = WsConnection::new(io, self.handshake, self.ws_config);
        self.state
            .tasks
            .spawn(serve(conn, &self.state.node, self.app, self.permit));
    }
}

/// Why a connection is refused at once: 4001 unknown key, 4003 disabled app, 4007 protocol.
fn refusal(app: Option<&PusherApp>, query: Option<&str>) -> Option<(u16, String)> {
    let Some(app) = app else {
        return Some((
            4001,
            "App key not in this cluster: check the key and host".into(),
        ));
    };
    if !app.enabled {
        return Some((4003, "App is disabled".into()));
    }
    let protocol = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "protocol")
        .map(|(_, v)| v.into_owned());
    match protocol.as_deref().map(str::parse::<u8>) {
        None | Some(Ok(5..=7)) => None,
        Some(_) => Some((
            4007,
            "Unsupported protocol version: this server speaks 5 to 7".into(),
        )),
    }
}

/// A random socket id in Pusher's `NNNN.NNNN` form; it also authorises (the auth signatures
/// cover it), so it comes from the operating system's CSPRNG.
fn new_socket_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    let a = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % 1_000_000_000;
    let b = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) % 1_000_000_000;
    format!("{a}.{b}")
}

/// Who a connection is, shared by its handler (which learns the user) and its wire (which
/// leaves out what this socket or user must not get back).
#[derive(Debug)]
pub(crate) struct Ident {
    socket_id: Box<str>,
    /// The kilat user (`pusher.<app>:<user id>`), once a presence subscription or sign-in
    /// named it; a connection has one user.
    user: OnceLock<Box<str>>,
}

impl Ident {
    fn excludes(&self, key: &[u8]) -> bool {
        match key.split_first_chunk::<2>() {
            Some((b"s:", rest)) => rest == self.socket_id.as_bytes(),
            Some((b"u:", rest)) => self.user.get().is_some_and(|u| rest == u.as_bytes()),
            _ => false,
        }
    }
}

/// The future of one Pusher connection. Not an `async fn` nor an `async` block around
/// [`driver::drive`]: either would keep its captured arguments (the socket's `WsConnection`,
/// the admission's headers, ...) in the future beside the driver's own copies for the whole
/// connection, some 600 bytes of every idle Pusher connection (`kilat bench idle --protocol
/// pusher`). The setup runs here, synchronously, and the connection's task is the driver's
/// future itself; a session refused at connect (rare) gets a boxed future of its own.
fn serve<IO>(
    conn: WsConnection<IO>,
    node: &Node,
    app: Arc<App>,
    admission: Admission,
) -> impl Future<Output = ()> + use<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (session, outbox, permit) = admission.open(
        node,
        TransportInfo {
            name: "pusher",
            emulated: false,
        },
    );
    connected(conn, node, app, session, outbox, permit)
}

/// [`serve`] once the session exists: `pusher:connection_established` queued, then the driver.
fn connected<IO>(
    mut conn: WsConnection<IO>,
    node: &Node,
    app: Arc<App>,
    mut session: Session,
    outbox: Outbox,
    permit: admission::ConnectionSlot,
) -> impl Future<Output = ()> + use<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Err(disconnect) = session.connect_as("", None) {
        let refused = async move {
            let (code, message) = pusher_close(&disconnect);
            let _ = conn.send_text(&protocol::error(Some(code), &message)).await;
            let _ = conn.close(code, &message).await;
            session.close().await;
            drop(permit);
        };
        return Either::Left(Box::pin(refused));
    }
    let ident = Arc::new(Ident {
        socket_id: new_socket_id().into(),
        user: OnceLock::new(),
    });
    #[derive(Serialize)]
    struct Established<'a> {
        socket_id: &'a str,
        activity_timeout: u64,
    }
    let activity_timeout = node.config().ping_interval.as_secs().clamp(1, 120);
    outbox.push(own_frame(protocol::event_with_string_data(
        "pusher:connection_established",
        None,
        &Established {
            socket_id: &ident.socket_id,
            activity_timeout,
        },
    )));
    let handler = PusherConn {
        session,
        node: node.clone(),
        outbox: outbox.clone(),
        app,
        ident: ident.clone(),
        window_start: Instant::now(),
        events_in_window: 0,
    };
    let wire = PusherWire {
        conn,
        ident,
        _permit: permit,
    };
    Either::Right(driver::drive(wire, handler, outbox))
}

/// Pusher's close code and message for a kilat disconnect: 4200 (reconnect at once) for a
/// drain or restart, 4100 (reconnect with backoff) for a slow or silent client, 4009 for an
/// unauthorised or terminated connection, 4000 (do not reconnect) for the rest.
fn pusher_close(disconnect: &Disconnect) -> (u16, String) {
    let code = match DisconnectCode(disconnect.code) {
        DisconnectCode::SLOW | DisconnectCode::NO_PONG => 4100,
        c if c.0 < 3500 => 4200,
        DisconnectCode::UNAUTHORIZED
        | DisconnectCode::FORCE_NO_RECONNECT
        | DisconnectCode::BANNED => 4009,
        DisconnectCode::CONNECTION_LIMIT => 4004,
        _ => 4000,
    };
    (code, disconnect.reason.to_string())
}

/// The Pusher protocol on one kilat session.
pub(crate) struct PusherConn {
    session: Session,
    node: Node,
    outbox: Outbox,
    app: Arc<App>,
    ident: Arc<Ident>,
    /// Client-event rate limit: a one-second window and the events counted in it.
    window_start: Instant,
    events_in_window: u32,
}

impl std::fmt::Debug for PusherConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PusherConn")
            .field("app", &self.app.config.id)
            .field("socket_id", &self.ident.socket_id)
            .finish_non_exhaustive()
    }
}

impl Handler for PusherConn {
    async fn handle_message(&mut self, text: &[u8]) -> Result<(), Disconnect> {
        match protocol::decode(text) {
            Err(Decoded(message)) => self.error(None, &message),
            Ok(ClientMessage::Ping) => self
                .outbox
                .push(own_frame(br#"{"event":"pusher:pong","data":{}}"#.to_vec())),
            // The session's ping went out as `pusher:ping`; this is its answer.
            Ok(ClientMessage::Pong) => self.session.handle_message(b"{}").await?,
            Ok(ClientMessage::Subscribe {
                channel,
                auth,
                channel_data,
            }) => {
                if let Err((code, message)) = self
                    .subscribe(&channel, auth.as_deref(), channel_data.as_deref())
                    .await
                {
                    self.error(code, &format!("{message} (channel {channel})"));
                }
            }
            Ok(ClientMessage::Unsubscribe { channel }) => {
                if let Ok(kind) = protocol::channel_kind(&channel) {
                    let native = self.app.native_channel(&channel, kind);
                    if self.session.is_subscribed(&native) {
                        self.session.leave_channel(&native).await;
                        let user = self.ident.user.get().map(|u| u.to_string());
                        after_leave(&self.node, &self.app, &native, user.as_deref()).await;
                    }
                }
            }
            Ok(ClientMessage::Signin { auth, user_data }) => {
                if let Err((code, message)) = self.signin(&auth, &user_data) {
                    self.error(code, &message);
                }
            }
            Ok(ClientMessage::ClientEvent {
                event,
                channel,
                data,
            }) => {
                if let Err((code, message)) = self.client_event(&event, &channel, &data).await {
                    self.error(code, &message);
                }
            }
            Ok(ClientMessage::Ignored(event)) => {
                tracing::debug!(%event, "pusher event ignored");
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, now: Instant) -> Result<(), Disconnect> {
        self.session.on_timer(now)
    }

    fn next_deadline(&self) -> Instant {
        self.session.next_deadline()
    }

    async fn close(self) {
        // Presence channels always (member_removed), the others for webhooks and the channel
        // index only.
        let all = self.app.webhooks.is_some() || self.app.index.is_some();
        let channels: Vec<String> = self
            .session
            .channels()
            .filter(|c| all || c.contains(":presence-"))
            .map(str::to_owned)
            .collect();
        self.session.close().await;
        let user = self.ident.user.get().map(|u| u.to_string());
        for native in channels {
            after_leave(&self.node, &self.app, &native, user.as_deref()).await;
        }
    }
    fn session(&self) -> &Session {
        &self.session
    }
}

type Refusal = (Option<u16>, String);

impl PusherConn {
    fn error(&self, code: Option<u16>, message: &str) {
        self.outbox.push(own_frame(protocol::error(code, message)));
    }

    /// Names the connection's user (presence `channel_data` or sign-in); a connection keeps the
    /// first user it was given.
    fn identify(&mut self, user_id: &str, info: Option<Box<RawValue>>) -> Result<(), Refusal> {
        let user = format!("{}:{user_id}", self.app.namespace);
        if let Some(known) = self.ident.user.get()
            && **known != *user
        {
            return Err((
                Some(4009),
                "this connection already belongs to another user".into(),
            ));
        }
        self.session
            .set_user(&user, info)
            .map_err(|e| (Some(4004), e.message.to_string()))?;
        let _ = self.ident.user.set(user.into());
        Ok(())
    }

    async fn subscribe(
        &mut self,
        channel: &str,
        auth: Option<&str>,
        channel_data: Option<&str>,
    ) -> Result<(), Refusal> {
        let kind = protocol::channel_kind(channel).map_err(|Decoded(m)| (None, m))?;
        let native = self.app.native_channel(channel, kind);
        if self.session.is_subscribed(&native) {
            return Err((None, "already subscribed".into()));
        }
        let app = self.app.clone();
        let config = &app.config;
        let signed = |parts: &[&str]| {
            auth.is_some_and(|auth| {
                auth::verify_client_auth(&config.key, &config.secret, auth, parts)
            })
        };
        let ident = self.ident.clone();
        let socket_id = &*ident.socket_id;
        match kind {
            ChannelKind::Public => {}
            ChannelKind::Private | ChannelKind::Encrypted => {
                if !signed(&[socket_id, channel]) {
                    return Err((Some(4009), "Invalid signature: the auth does not sign socket_id:channel_name with the app secret".into()));
                }
            }
            ChannelKind::Presence => {
                let data = channel_data
                    .ok_or_else(|| (None, "presence channels need channel_data".to_owned()))?;
                if !signed(&[socket_id, channel, data]) {
                    return Err((Some(4009), "Invalid signature: the auth does not sign socket_id:channel_name:channel_data with the app secret".into()));
                }
                let (user_id, info) = parse_user(data, "channel_data")?;
                self.identify(&user_id, info)?;
            }
            ChannelKind::User => {
                let id = channel.trim_start_matches(protocol::USER_CHANNEL_PREFIX);
                let user = format!("{}:{id}", self.app.namespace);
                if self.ident.user.get().is_none_or(|u| **u != *user) {
                    return Err((
                        Some(4009),
                        "sign in as this user first (pusher:signin)".into(),
                    ));
                }
            }
        }
        // Presence: who is there before this member joins, to check the limit and build the
        // subscription's member list.
        let mut new_member = None;
        let members = if kind == ChannelKind::Presence {
            let present = self
                .node
                .presence(&native)
                .await
                .map_err(|e| (None, e.to_client_error().message.to_string()))?;
            let prefix = format!("{}:", self.app.namespace);
            let mut members: BTreeMap<String, Option<Box<RawValue>>> = BTreeMap::new();
            for entry in present.clients.into_values() {
                if let Some(id) = entry.user.strip_prefix(&prefix) {
                    members.insert(id.to_owned(), entry.info);
                }
            }
            let own = self
                .ident
                .user
                .get()
                .and_then(|u| u.strip_prefix(&prefix))
                .unwrap_or_default()
                .to_owned();
            if !members.contains_key(&own) && members.len() >= config.limits.max_presence_members {
                return Err((
                    Some(4004),
                    format!(
                        "presence channel is full ({} members)",
                        config.limits.max_presence_members
                    ),
                ));
            }
            let own_info = channel_data
                .and_then(|d| parse_user(d, "channel_data").ok())
                .and_then(|(_, info)| info);
            new_member = (!members.contains_key(&own)).then(|| own.clone());
            members.insert(own, own_info);
            Some(members)
        } else {
            None
        };
        let join = self
            .session
            .join_granted(&native)
            .await
            .map_err(|e| (None, e.message.to_string()))?;
        let first = match members {
            Some(members) => {
                #[derive(Serialize)]
                struct Presence<'a> {
                    ids: Vec<&'a str>,
                    hash: &'a BTreeMap<String, Option<Box<RawValue>>>,
                    count: usize,
                }
                #[derive(Serialize)]
                struct Data<'a> {
                    presence: Presence<'a>,
                }
                protocol::event_with_string_data(
                    "pusher_internal:subscription_succeeded",
                    Some(channel),
                    &Data {
                        presence: Presence {
                            ids: members.keys().map(String::as_str).collect(),
                            hash: &members,
                            count: members.len(),
                        },
                    },
                )
            }
            None => protocol::event(
                "pusher_internal:subscription_succeeded",
                Some(channel),
                &RawValue::from_string("\"{}\"".into()).expect("a JSON string"),
            ),
        };
        // Cache channels: the last event kept (or `pusher:cache_miss`), after the
        // subscription succeeded. A publication racing with this read may arrive twice.
        let cached = if protocol::is_cache(channel) {
            Some(self.last_event(&native, channel).await)
        } else {
            None
        };
        self.session.go_live_granted(join, own_frame(first)).await;
        if let Some((cached, miss)) = cached {
            self.outbox.push(own_frame(cached));
            if miss {
                self.app
                    .webhook(|| webhooks::Event::new("cache_miss", channel));
            }
        }
        if self.node.subscriber_count(&native) == 1
            && let Some(index) = &self.app.index
        {
            index.add(&self.app.namespace, &native).await;
        }
        // Counted on every node (the engine's presence), so one node sends it, not each.
        if self.app.webhooks.is_some() && occupancy::just_occupied(&self.node, &native).await {
            self.app
                .webhook(|| webhooks::Event::new("channel_occupied", channel));
        }
        if let Some(user_id) = new_member {
            // Pusher announces a user's first connection only, to everyone but that user.
            let info = channel_data
                .and_then(|d| parse_user(d, "channel_data").ok())
                .and_then(|(_, info)| info);
            publish_member(
                &self.node,
                &native,
                "pusher_internal:member_added",
                &self.app.namespace,
                &user_id,
                info.as_deref(),
            )
            .await;
            self.app.webhook(|| webhooks::Event {
                user_id: Some(user_id),
                ..webhooks::Event::new("member_added", channel)
            });
        }
        Ok(())
    }

    /// The last event of a cache channel as a Pusher event, or `pusher:cache_miss` (then
    /// `true`: a miss, which also goes to the `cache_miss` webhook).
    async fn last_event(&self, native: &str, channel: &str) -> (Vec<u8>, bool) {
        let last = self
            .node
            .history(
                native,
                kilat_core::HistoryOptions {
                    limit: Some(1),
                    since: None,
                    reverse: true,
                },
            )
            .await
            .ok()
            .and_then(|page| page.publications.into_iter().next());
        let event = last.and_then(|publication| {
            let published: Published<'_> = serde_json::from_str(publication.data.get()).ok()?;
            Some(protocol::event(
                &published.event,
                Some(channel),
                published.data,
            ))
        });
        match event {
            Some(event) => (event, false),
            None => (
                protocol::event(
                    "pusher:cache_miss",
                    Some(channel),
                    &RawValue::from_string("\"{}\"".into()).expect("a JSON string"),
                ),
                true,
            ),
        }
    }

    fn signin(&mut self, auth: &str, user_data: &str) -> Result<(), Refusal> {
        let app = self.app.clone();
        let config = &app.config;
        if !config.user_auth {
            return Err((
                None,
                "user authentication is not enabled for this app".into(),
            ));
        }
        let ident = self.ident.clone();
        let socket_id = &*ident.socket_id;
        if !auth::verify_client_auth(
            &config.key,
            &config.secret,
            auth,
            &[socket_id, "", "user", "", user_data],
        ) {
            return Err((Some(4009), "Invalid signature: the auth does not sign socket_id::user::user_data with the app secret".into()));
        }
        let (user_id, info) = parse_user(user_data, "user_data")?;
        self.identify(&user_id, info)?;
        #[derive(Serialize)]
        struct Success<'a> {
            user_data: &'a str,
        }
        self.outbox.push(own_frame(protocol::event_with_string_data(
            "pusher:signin_success",
            None,
            &Success { user_data },
        )));
        Ok(())
    }

    async fn client_event(
        &mut self,
        event: &str,
        channel: &str,
        data: &RawValue,
    ) -> Result<(), Refusal> {
        let config = &self.app.config;
        if !config.client_events {
            return Err((None, "client events are not enabled for this app".into()));
        }
        let kind = protocol::channel_kind(channel).map_err(|Decoded(m)| (None, m))?;
        if !matches!(kind, ChannelKind::Private | ChannelKind::Presence) {
            return Err((
                None,
                "client events are allowed on private- and presence- channels only".into(),
            ));
        }
        let native = self.app.native_channel(channel, kind);
        if !self.session.is_subscribed(&native) {
            return Err((
                None,
                format!("subscribe to {channel} before sending client events"),
            ));
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) >= std::time::Duration::from_secs(1) {
            self.window_start = now;
            self.events_in_window = 0;
        }
        if self.events_in_window >= config.limits.client_events_per_second {
            return Err((
                Some(4301),
                format!(
                    "Client event rejected - only {} accepted per second",
                    config.limits.client_events_per_second
                ),
            ));
        }
        self.events_in_window += 1;
        if data.get().len() > config.limits.max_event_bytes {
            return Err((
                None,
                format!(
                    "event data larger than {} bytes",
                    config.limits.max_event_bytes
                ),
            ));
        }
        let prefix = format!("{}:", self.app.namespace);
        let user_id = (kind == ChannelKind::Presence)
            .then(|| self.ident.user.get().and_then(|u| u.strip_prefix(&prefix)))
            .flatten();
        let published = Published {
            event: event.into(),
            data,
            socket_id: Some(self.ident.socket_id.as_ref().into()),
            user_id: user_id.map(Into::into),
            exclude_user: None,
        };
        let raw = serde_json::to_string(&published).map_err(|e| (None, e.to_string()))?;
        let raw = RawValue::from_string(raw).map_err(|e| (None, e.to_string()))?;
        self.session
            .publish_granted(&native, raw)
            .await
            .map_err(|e| (None, e.message.to_string()))?;
        self.app.webhook(|| webhooks::Event {
            event: Some(event.to_owned()),
            // Pusher's client_event webhook carries the data as a string.
            data: Some(match serde_json::from_str::<String>(data.get()) {
                Ok(text) => text,
                Err(_) => data.get().to_owned(),
            }),
            socket_id: Some(self.ident.socket_id.to_string()),
            user_id: user_id.map(str::to_owned),
            ..webhooks::Event::new("client_event", channel)
        });
        Ok(())
    }
}

/// Publishes a presence member event to a channel's other users (the member's own user is
/// left out by the `exclude_user` of the envelope).
async fn publish_member(
    node: &Node,
    native: &str,
    event: &str,
    namespace: &str,
    user_id: &str,
    info: Option<&RawValue>,
) {
    #[derive(Serialize)]
    struct Member<'a> {
        user_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_info: Option<&'a RawValue>,
    }
    let inner = serde_json::to_string(&Member {
        user_id,
        user_info: info,
    })
    .unwrap_or_default();
    let Ok(data) = RawValue::from_string(serde_json::to_string(&inner).unwrap_or_default()) else {
        return;
    };
    let user = format!("{namespace}:{user_id}");
    let published = Published {
        event: event.into(),
        data: &data,
        socket_id: None,
        user_id: None,
        exclude_user: Some(user.as_str().into()),
    };
    let Ok(raw) = serde_json::to_string(&published).map(RawValue::from_string) else {
        return;
    };
    if let Ok(raw) = raw
        && let Err(error) = node.publish(native, raw).await
    {
        tracing::warn!(%error, "pusher member event not published");
    }
}

/// After a connection left `native`: `member_removed` (event and webhook) when its user has no
/// other connection in the presence channel, the `channel_vacated` webhook when no node has a
/// subscriber left, and this node's entry out of the channel index when it has none.
async fn after_leave(node: &Node, app: &App, native: &str, user: Option<&str>) {
    let Some(name) = app.pusher_name(native) else {
        return;
    };
    if name.starts_with("presence-")
        && let Some(user) = user
    {
        let still_there = node
            .presence(native)
            .await
            .is_ok_and(|present| present.clients.values().any(|e| e.user == user));
        if !still_there {
            let user_id = user.split_once(':').map_or(user, |(_, id)| id).to_owned();
            publish_member(
                node,
                native,
                "pusher_internal:member_removed",
                &app.namespace,
                &user_id,
                None,
            )
            .await;
            app.webhook(|| webhooks::Event {
                user_id: Some(user_id),
                ..webhooks::Event::new("member_removed", &name)
            });
        }
    }
    if node.subscriber_count(native) == 0
        && let Some(index) = &app.index
    {
        index.remove(&app.namespace, native).await;
    }
    if app.webhooks.is_some() && occupancy::vacated(node, native).await {
        app.webhook(|| webhooks::Event::new("channel_vacated", &name));
    }
}

/// `{"user_id"|"id": string|number, "user_info"?: any}` from `channel_data` or `user_data`.
fn parse_user(data: &str, what: &str) -> Result<(String, Option<Box<RawValue>>), Refusal> {
    #[derive(serde::Deserialize)]
    struct User {
        user_id: Option<serde_json::Value>,
        id: Option<serde_json::Value>,
        user_info: Option<Box<RawValue>>,
    }
    let user: User =
        serde_json::from_str(data).map_err(|e| (None, format!("invalid {what}: {e}")))?;
    let id = user
        .user_id
        .or(user.id)
        .as_ref()
        .and_then(protocol::user_id_of)
        .filter(|id| protocol::valid_user_id(id))
        .ok_or_else(|| {
            (
                None,
                format!("{what} needs a user id of 1 to 128 characters A-Z a-z 0-9 _ - = @ , . ;"),
            )
        })?;
    Ok((id, user.user_info))
}

/// The WebSocket side of a Pusher connection.
pub(crate) struct PusherWire<IO> {
    pub(crate) conn: WsConnection<IO>,
    pub(crate) ident: Arc<Ident>,
    pub(crate) _permit: admission::ConnectionSlot,
}

impl<IO> Wire for PusherWire<IO>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn recv(&mut self) -> Inbound {
        match self.conn.read_message().await {
            Ok(Message::Text(text)) => Inbound::Message(text),
            Ok(Message::Binary(_)) => Inbound::Refused(Disconnect::new(
                DisconnectCode::BAD_REQUEST,
                "binary messages are not part of the Pusher protocol",
            )),
            Ok(Message::Close { .. }) | Err(_) => Inbound::Gone,
        }
    }

    async fn send(&mut self, frames: &[SharedFrame]) -> std::io::Result<()> {
        let mut encoded: Vec<Bytes> = Vec::with_capacity(frames.len());
        for frame in frames {
            let translated = frame.encoded(protocol::SLOT_PUSHER, protocol::translate);
            let Some((&n, rest)) = translated.split_first() else {
                continue;
            };
            let n = usize::from(n);
            if n > 0 && self.ident.excludes(&rest[..n]) {
                continue;
            }
            encoded.push(translated.slice(1 + n..));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        self.conn.send_encoded(&encoded).await
    }

    async fn close(&mut self, disconnect: &Disconnect) {
        let (code, message) = pusher_close(disconnect);
        let _ = self
            .conn
            .send_text(&protocol::error(Some(code), &message))
            .await;
        let _ = self.conn.close(code, &message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle Pusher connection is one task holding this future, as for the native
    /// endpoint (`driver::tests`): its size is memory per connection.
    #[tokio::test]
    async fn idle_pusher_connection_state_stays_small() {
        let node = Node::new(kilat_core::NodeConfig::dev());
        let outbox = Outbox::new(1 << 20);
        let transport = TransportInfo {
            name: "pusher",
            emulated: false,
        };
        let session = Session::new(&node, transport, outbox.clone());
        let config = kilat_transport::ws::WsConfig::default();
        let handshake = kilat_transport::ws::Handshake::for_offer(None, &config);
        let io = tokio::io::duplex(64).0;
        let conn = WsConnection::new(io, &handshake, &config);
        let app = Arc::new(App {
            config: super::super::PusherApp::dev(),
            namespace: "pusher.app-id".into(),
            cache_namespace: "pusher.app-id.cache".into(),
            webhooks: None,
            index: None,
        });
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a permit");
        // What `serve` spawns for every connection.
        let task = connected(
            conn,
            &node,
            app,
            session,
            outbox,
            admission::ConnectionSlot::from_permit(permit),
        );
        let size = std::mem::size_of_val(&task);
        println!("idle pusher connection task: {size} bytes");
        // 1,016 bytes before the connection slot gained its per-address entry (+8) and the
        // session its handshake permit (+8); the guard is against growth nobody chose.
        assert!(
            size <= 1040,
            "the pusher connection task grew to {size} bytes"
        );
    }
}
