//! The seam for the application's backend: [`Backend`], installed with
//! [`crate::Node::set_backend`]. A session asks it about `connect` (without a token),
//! `subscribe` and `publish` (namespaces with `proxy_subscribe` / `proxy_publish`), `rpc`,
//! `send` and connection expiry. The HTTP implementation lives in `kilat-server`; the core only
//! sees events and replies.
//!
//! Every hook is optional: [`Backend::handles`] says which ones are configured. A hook that
//! fails (backend down, timed out, answered nonsense) answers with a [`ClientError`], normally
//! 503 "backend unavailable" (temporary), which the client gets as its error reply.

use std::fmt;

use kilat_protocol::{ClientError, Disconnect, RawJson};

use crate::auth::Credentials;
use crate::engine::BoxFuture;

/// Allowlisted request headers of a connection's handshake (WebSocket upgrade or stream
/// request), forwarded to the backend. Boxed slices: an idle connection pays two words.
pub type RequestHeaders = Box<[(Box<str>, Box<str>)]>;

/// The hooks a backend may implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hook {
    /// `connect` without a token.
    Connect,
    /// `subscribe` in a namespace with `proxy_subscribe`.
    Subscribe,
    /// `publish` in a namespace with `proxy_publish`.
    Publish,
    /// `rpc`.
    Rpc,
    /// `send` (fire-and-forget).
    Send,
    /// Connection expiry: the backend extends it instead of a `refresh` push to the client.
    Refresh,
    /// Subscription expiry: the backend extends it instead of a `refresh` push for the channel.
    SubRefresh,
}

/// A client connects without a token.
#[derive(Debug, Clone)]
pub struct ConnectEvent {
    /// The client id this connection gets if accepted.
    pub client: String,
    /// `"websocket"`, `"sse"` or `"http_stream"`.
    pub transport: &'static str,
    /// The client's `name`.
    pub name: Option<String>,
    /// The client's `version`.
    pub version: Option<String>,
    /// The client's `data`.
    pub data: Option<RawJson>,
    /// Forwarded handshake headers.
    pub headers: RequestHeaders,
}

/// The backend's decision about a connection.
#[derive(Debug, Clone)]
pub enum ConnectReply {
    /// Accepted as this identity (user, info, expiry, server-side channels).
    Accept(Credentials),
    /// Refused: the client gets this disconnect (no error reply).
    Disconnect(Disconnect),
}

/// A connected client subscribes to a channel of a `proxy_subscribe` namespace (after the
/// local permission checks passed).
#[derive(Debug, Clone)]
pub struct SubscribeEvent {
    /// Client id.
    pub client: String,
    /// User id.
    pub user: String,
    /// The channel.
    pub channel: String,
    /// The subscribe command's `data`.
    pub data: Option<RawJson>,
    /// Forwarded handshake headers.
    pub headers: RequestHeaders,
}

/// The backend allows a subscription.
#[derive(Debug, Clone, Default)]
pub struct SubscribeReply {
    /// Subscription info. Accepted for compatibility; kilat attaches connection info only (as
    /// for subscription tokens).
    pub info: Option<RawJson>,
}

/// A connected client publishes into a `proxy_publish` namespace (after local checks).
#[derive(Debug, Clone)]
pub struct PublishEvent {
    /// Client id.
    pub client: String,
    /// User id.
    pub user: String,
    /// The channel.
    pub channel: String,
    /// The data the client sent.
    pub data: RawJson,
    /// Forwarded handshake headers.
    pub headers: RequestHeaders,
}

/// The backend allows a publication.
#[derive(Debug, Clone, Default)]
pub struct PublishReply {
    /// Replacement data; `None` publishes what the client sent.
    pub data: Option<RawJson>,
}

/// A connected client calls `rpc`.
#[derive(Debug, Clone)]
pub struct RpcEvent {
    /// Client id.
    pub client: String,
    /// User id.
    pub user: String,
    /// The method name.
    pub method: String,
    /// The call's data.
    pub data: Option<RawJson>,
    /// Forwarded handshake headers.
    pub headers: RequestHeaders,
}

/// The backend's answer to an `rpc` call.
#[derive(Debug, Clone)]
pub struct RpcReply {
    /// The answer, passed to the client as the rpc result's `data`.
    pub data: RawJson,
}

/// A connected client sent an asynchronous message (`send`); nobody answers it.
#[derive(Debug, Clone)]
pub struct SendEvent {
    /// Client id.
    pub client: String,
    /// User id.
    pub user: String,
    /// The message.
    pub data: RawJson,
    /// Forwarded handshake headers.
    pub headers: RequestHeaders,
}

/// A connection reached its expiry and the backend is asked to extend it.
#[derive(Debug, Clone)]
pub struct RefreshEvent {
    /// Client id.
    pub client: String,
    /// User id.
    pub user: String,
    /// Forwarded handshake headers.
    pub headers: RequestHeaders,
}

/// The backend's decision about an expired connection.
#[derive(Debug, Clone)]
pub enum RefreshReply {
    /// Extended until `expires_at` (Unix seconds; `None` = no expiry from now on). A time in
    /// the past closes the connection with 3005.
    Extend {
        /// New expiry.
        expires_at: Option<u64>,
        /// New connection info (used for presence entries added from now on).
        info: Option<RawJson>,
    },
    /// Close the connection with this disconnect.
    Disconnect(Disconnect),
}

/// A subscription reached its expiry (from its subscription token or the subscribe hook) and
/// the backend is asked to extend it.
#[derive(Debug, Clone)]
pub struct SubRefreshEvent {
    /// Client id.
    pub client: String,
    /// User id.
    pub user: String,
    /// The channel.
    pub channel: String,
    /// Forwarded handshake headers.
    pub headers: RequestHeaders,
}

/// The backend's decision about an expired subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubRefreshReply {
    /// Extended until `expires_at` (Unix seconds; `None` = no expiry from now on). A time in
    /// the past ends the subscription as a refusal does.
    Extend {
        /// New expiry.
        expires_at: Option<u64>,
    },
    /// End the subscription (`unsubscribe` push, code 410).
    Refuse,
}

/// The application's backend, asked by sessions at connect, subscribe, publish, rpc, send and
/// expiry. Implementations must answer within their own timeout: a session waits for the reply
/// (its other commands queue behind it).
pub trait Backend: Send + Sync + fmt::Debug {
    /// Whether `hook` is configured; a session calls only configured hooks.
    fn handles(&self, hook: Hook) -> bool;

    /// Lowercase names of the handshake request headers transports keep for the hooks
    /// ([`crate::Session::set_request_headers`]); none by default.
    fn forward_headers(&self) -> &[Box<str>] {
        &[]
    }

    /// Decides about a connection that sent no token.
    ///
    /// # Errors
    /// The error reply for the client (the refusal, or 503 when the backend is unavailable);
    /// the connection is then closed (3501, or 3004 to reconnect for a temporary error).
    fn connect(&self, event: ConnectEvent) -> BoxFuture<'_, Result<ConnectReply, ClientError>>;

    /// Decides about a subscription.
    ///
    /// # Errors
    /// The error reply for the subscribe command.
    fn subscribe(
        &self,
        event: SubscribeEvent,
    ) -> BoxFuture<'_, Result<SubscribeReply, ClientError>>;

    /// Decides about a publication and may replace its data.
    ///
    /// # Errors
    /// The error reply for the publish command.
    fn publish(&self, event: PublishEvent) -> BoxFuture<'_, Result<PublishReply, ClientError>>;

    /// Answers an rpc call.
    ///
    /// # Errors
    /// The error reply for the rpc command.
    fn rpc(&self, event: RpcEvent) -> BoxFuture<'_, Result<RpcReply, ClientError>>;

    /// Delivers an asynchronous message. Sessions run it in a task of its own and never wait;
    /// failures are the implementation's to log.
    fn send(&self, event: SendEvent) -> BoxFuture<'_, ()>;

    /// Decides whether an expired connection lives on.
    ///
    /// # Errors
    /// When the backend cannot be asked; the session keeps the connection and asks again a few
    /// seconds later.
    fn refresh(&self, event: RefreshEvent) -> BoxFuture<'_, Result<RefreshReply, ClientError>>;

    /// Decides whether an expired subscription lives on (only called when
    /// [`Backend::handles`] says [`Hook::SubRefresh`]).
    ///
    /// # Errors
    /// When the backend cannot be asked; the subscription then ends when the refresh grace
    /// runs out, as it would without the hook.
    fn sub_refresh(
        &self,
        event: SubRefreshEvent,
    ) -> BoxFuture<'_, Result<SubRefreshReply, ClientError>> {
        let _ = event;
        Box::pin(async {
            Err(ClientError::new(
                kilat_protocol::ErrorCode::NOT_FOUND,
                "no sub_refresh hook",
            ))
        })
    }
}
