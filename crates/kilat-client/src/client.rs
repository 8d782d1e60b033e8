//! [`Client`]: the cheap-to-clone handle applications call.

use std::sync::Arc;
use std::time::Duration;

use kilat_protocol::command::{
    ChannelRequest, HistoryRequest, PresenceRequest, PublishRequest, RefreshRequest, RpcRequest,
    SubRefreshRequest,
};
use kilat_protocol::reply::{
    HistoryResult, PresenceResult, PresenceStatsResult, PublishResult, RefreshResult,
    SubscribeResult,
};
use kilat_protocol::{Command, RawJson, Reply, StreamPosition};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{ClientConfig, SubscribeOptions};
use crate::error::{Error, ProtocolError, Result};
use crate::event::Events;
use crate::task::{ConnectionTask, Request};
use crate::transport;

/// A connection to a kilat server that reconnects and recovers by itself.
///
/// Cloning is cheap (an `Arc`); every clone talks to the same connection task. The task stops
/// when [`Client::close`] is called or the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Requests to the connection task.
    requests: mpsc::UnboundedSender<Request>,
    /// Set to true by `close`; dropping it (with the last handle) also stops the task.
    close: watch::Sender<bool>,
    /// How long a call waits for its reply.
    request_timeout: Duration,
}

/// Options of a `history` call.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// At most this many publications (`None`: all kept, up to the server's maximum;
    /// `Some(0)`: only the current position).
    pub limit: Option<u32>,
    /// Publications after this position (before it with `reverse`).
    pub since: Option<StreamPosition>,
    /// Newest first.
    pub reverse: bool,
}

macro_rules! expect_reply {
    ($reply:expr, $variant:ident) => {
        match $reply {
            Reply::$variant(result) => Ok(result),
            other => Err(Error::Protocol(ProtocolError::Unexpected {
                expected: concat!("a ", stringify!($variant), " reply"),
                got: format!("{other:?}"),
            })),
        }
    };
}

impl Client {
    /// Connects, sends `connect`, and starts the connection task.
    ///
    /// The first connection is not retried: its failure is returned so a caller (like
    /// `kilat sub`) can report a wrong URL or token at once. Later losses are retried in the
    /// background according to `config`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], [`Error::Transport`], [`Error::Server`] (e.g. 401 for a bad
    /// token), [`Error::Disconnected`] or [`Error::Timeout`].
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events)> {
        transport::check_url(&config.url)?;
        let first = transport::establish(&config, Default::default()).await?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (close, closed) = watch::channel(false);
        let request_timeout = config.request_timeout;
        let task = ConnectionTask::new(config, requests_rx, events_tx, closed);
        tokio::spawn(task.run(first));
        let client = Client {
            inner: Arc::new(Inner {
                requests,
                close,
                request_timeout,
            }),
        };
        Ok((client, Events { rx: events_rx }))
    }

    /// Subscribes to `channel`. The subscription survives reconnects: the client resubscribes
    /// and recovers missed publications by itself.
    ///
    /// Publications (recovered ones first) arrive as [`crate::Event::Publication`], after a
    /// [`crate::Event::Subscribed`]; the returned result carries the same recovered publications
    /// for callers that prefer them here.
    ///
    /// # Errors
    /// [`Error::Server`] with 409 when already subscribed, 403/404 when not allowed or unknown,
    /// or a transport error.
    pub async fn subscribe(
        &self,
        channel: impl Into<String>,
        options: SubscribeOptions,
    ) -> Result<SubscribeResult> {
        let channel = channel.into();
        let reply = self
            .ask(|reply| Request::Subscribe {
                channel,
                options,
                reply,
            })
            .await??;
        expect_reply!(reply, Subscribe)
    }

    /// Unsubscribes from `channel`; no publication of it is delivered after this call starts.
    ///
    /// # Errors
    /// A server error or a transport error.
    pub async fn unsubscribe(&self, channel: impl Into<String>) -> Result<()> {
        let channel = channel.into();
        let reply = self
            .ask(|reply| Request::Unsubscribe { channel, reply })
            .await??;
        expect_reply!(reply, Unsubscribe).map(|_| ())
    }

    /// Publishes `data` (anything serialisable, e.g. a `serde_json::Value`) to `channel`.
    ///
    /// # Errors
    /// [`Error::Json`] when `data` does not serialise; 403 when the namespace does not allow
    /// client publish; 413 when too large.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: impl Into<String>,
        data: &T,
    ) -> Result<PublishResult> {
        self.publish_raw(channel, to_raw(data)?).await
    }

    /// Publishes raw JSON to `channel`, sent as is.
    ///
    /// # Errors
    /// As [`Client::publish`].
    pub async fn publish_raw(
        &self,
        channel: impl Into<String>,
        data: RawJson,
    ) -> Result<PublishResult> {
        let command = Command::Publish(PublishRequest::json(channel, data));
        expect_reply!(self.call(command).await?, Publish)
    }

    /// Publishes raw bytes to `channel`: a binary publication, which subscribers receive as
    /// [`Publication::binary`](kilat_protocol::Publication::binary). On JSON the bytes travel
    /// as base64 (`b64data`), on MessagePack as `bin`.
    ///
    /// # Errors
    /// As [`Client::publish`] (413 counts the bytes, not their base64).
    pub async fn publish_bytes(
        &self,
        channel: impl Into<String>,
        bytes: impl AsRef<[u8]>,
    ) -> Result<PublishResult> {
        let command = Command::Publish(PublishRequest::binary(channel, bytes.as_ref()));
        expect_reply!(self.call(command).await?, Publish)
    }

    /// Who is in `channel` now, by client id: every page of [`Client::presence_page`], merged
    /// (a member the server lists on two pages, which a shrinking Redis channel can cause,
    /// appears once). The result's `cursor` is `None`.
    ///
    /// # Errors
    /// 403 when presence is not allowed, or a transport error.
    pub async fn presence(&self, channel: impl Into<String>) -> Result<PresenceResult> {
        let channel = channel.into();
        let mut all = PresenceResult::default();
        let mut cursor = None;
        loop {
            let page = self.presence_page(channel.clone(), cursor, None).await?;
            all.clients.extend(page.clients);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of who is in `channel`: at most `limit` members (`None`: the server's default,
    /// 1000) from `cursor` (`None`: the first page; then the previous page's `cursor`). The
    /// reply's `cursor` is `None` on the last page.
    ///
    /// # Errors
    /// As [`Client::presence`]; 400 for a cursor the server did not hand out.
    pub async fn presence_page(
        &self,
        channel: impl Into<String>,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Result<PresenceResult> {
        let command = Command::Presence(PresenceRequest {
            channel: channel.into(),
            cursor,
            limit,
        });
        expect_reply!(self.call(command).await?, Presence)
    }

    /// How many clients and distinct users are in `channel`.
    ///
    /// # Errors
    /// As [`Client::presence`].
    pub async fn presence_stats(&self, channel: impl Into<String>) -> Result<PresenceStatsResult> {
        let command = Command::PresenceStats(ChannelRequest {
            channel: channel.into(),
        });
        expect_reply!(self.call(command).await?, PresenceStats)
    }

    /// Reads `channel`'s history.
    ///
    /// # Errors
    /// 403 when history is not allowed, 503 when `since` is from another epoch.
    pub async fn history(
        &self,
        channel: impl Into<String>,
        options: HistoryOptions,
    ) -> Result<HistoryResult> {
        let command = Command::History(HistoryRequest {
            channel: channel.into(),
            limit: options.limit,
            since: options.since,
            reverse: options.reverse,
        });
        expect_reply!(self.call(command).await?, History)
    }

    /// Calls `method` on the server's RPC backend with `data`; returns its raw JSON answer.
    ///
    /// # Errors
    /// 404 for an unknown method, or whatever the backend answers.
    pub async fn rpc<T: Serialize + ?Sized>(&self, method: &str, data: &T) -> Result<RawJson> {
        let command = Command::Rpc(RpcRequest {
            method: method.to_owned(),
            data: Some(to_raw(data)?),
        });
        expect_reply!(self.call(command).await?, Rpc).map(|r| r.data)
    }

    /// Sends `data` to the server's backend without waiting for any answer (`send`).
    ///
    /// # Errors
    /// When the data does not serialise or the connection is down.
    pub async fn send<T: Serialize + ?Sized>(&self, data: &T) -> Result<()> {
        let data = to_raw(data)?;
        self.ask(|reply| Request::Send { data, reply }).await?
    }

    /// Replaces the connection token (answer to [`crate::Event::RefreshRequested`] without a
    /// channel). Later reconnects keep using the token from [`ClientConfig`].
    ///
    /// # Errors
    /// 401/410 for a bad or expired token.
    pub async fn refresh(&self, token: impl Into<String>) -> Result<RefreshResult> {
        let command = Command::Refresh(RefreshRequest {
            token: token.into(),
        });
        expect_reply!(self.call(command).await?, Refresh)
    }

    /// Replaces a subscription token (answer to [`crate::Event::RefreshRequested`] with a
    /// channel).
    ///
    /// # Errors
    /// As [`Client::refresh`].
    pub async fn sub_refresh(
        &self,
        channel: impl Into<String>,
        token: impl Into<String>,
    ) -> Result<RefreshResult> {
        let command = Command::SubRefresh(SubRefreshRequest {
            channel: channel.into(),
            token: token.into(),
        });
        expect_reply!(self.call(command).await?, SubRefresh)
    }

    /// The last stream position delivered for `channel` (where a reconnect will recover from).
    ///
    /// # Errors
    /// [`Error::Closed`] when the client has stopped.
    pub async fn position(&self, channel: impl Into<String>) -> Result<Option<StreamPosition>> {
        let channel = channel.into();
        self.ask(|reply| Request::Position { channel, reply }).await
    }

    /// Closes the connection (WebSocket close 1000) and stops reconnecting. The event stream
    /// ends after a final [`crate::Event::Disconnected`].
    pub fn close(&self) {
        self.inner.close.send_replace(true);
    }

    async fn call(&self, command: Command) -> Result<Reply> {
        self.ask(|reply| Request::Command { command, reply })
            .await?
    }

    /// Sends a request to the task and waits for its answer within the request timeout.
    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .requests
            .send(request(tx))
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout),
        }
    }
}

fn to_raw<T: Serialize + ?Sized>(data: &T) -> Result<RawJson> {
    Ok(RawValue::from_string(serde_json::to_string(data)?)?)
}
