//! Wrappers that time the engine (broker and presence) and the backend hooks for `/metrics`.
//!
//! They sit between the hub and the real engine or backend only when detailed metrics are on;
//! each call costs two clock reads and one histogram observation, against a Redis round trip
//! or an HTTP request.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kilat_core::engine::{
    BoxFuture, BrokerHandler, EngineError, HistoryPage, HistoryQuery, JoinLeave, Latest,
    PresencePage, PresenceStats, PublishOptions,
};
use kilat_core::proxy::{
    ConnectEvent, ConnectReply, PublishEvent, PublishReply, RefreshEvent, RefreshReply, RpcEvent,
    RpcReply, SendEvent, SubscribeEvent, SubscribeReply,
};
use kilat_core::{Backend, Broker, Hook, PresenceStore};
use kilat_protocol::{ClientError, ClientInfo, ErrorCode, Publication, StreamPosition};

use super::{Detail, EngineLabel, HookLabel};

/// Times `call` as engine operation `op`.
fn timed_engine<'a, T: Send + 'a>(
    detail: &'a Detail,
    engine: &'static str,
    op: &'static str,
    call: impl Future<Output = Result<T, EngineError>> + Send + 'a,
) -> BoxFuture<'a, Result<T, EngineError>> {
    Box::pin(async move {
        let started = Instant::now();
        let result = call.await;
        let label = EngineLabel { engine, op };
        detail
            .engine_calls
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            detail.engine_errors.get_or_create(&label).inc();
        }
        result
    })
}

/// A [`Broker`] whose calls are timed.
#[derive(Debug)]
pub(crate) struct InstrumentedBroker {
    pub(crate) inner: Arc<dyn Broker>,
    pub(crate) detail: Arc<Detail>,
    /// `memory` or `redis`, the `engine` label.
    pub(crate) engine: &'static str,
}

impl Broker for InstrumentedBroker {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) {
        self.inner.set_handler(handler);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
    ) -> BoxFuture<'a, Result<Option<StreamPosition>, EngineError>> {
        let call = self.inner.publish(channel, publication, options);
        timed_engine(&self.detail, self.engine, "publish", call)
    }

    fn publish_join_leave<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        kind: JoinLeave,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let call = self.inner.publish_join_leave(channel, info, kind);
        timed_engine(&self.detail, self.engine, "publish_join_leave", call)
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let call = self.inner.subscribe(channel);
        timed_engine(&self.detail, self.engine, "subscribe", call)
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let call = self.inner.unsubscribe(channel);
        timed_engine(&self.detail, self.engine, "unsubscribe", call)
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        let call = self.inner.history(channel, query);
        timed_engine(&self.detail, self.engine, "history", call)
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let call = self.inner.remove_history(channel);
        timed_engine(&self.detail, self.engine, "remove_history", call)
    }

    fn publish_latest<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        options: PublishOptions,
        key: &'a str,
        max_keys: usize,
    ) -> BoxFuture<'a, Result<(Option<StreamPosition>, Latest), EngineError>> {
        let call = self
            .inner
            .publish_latest(channel, publication, options, key, max_keys);
        timed_engine(&self.detail, self.engine, "publish_latest", call)
    }

    fn latest<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        let call = self.inner.latest(channel);
        timed_engine(&self.detail, self.engine, "latest", call)
    }
}

/// A [`PresenceStore`] whose calls are timed.
#[derive(Debug)]
pub(crate) struct InstrumentedPresence {
    pub(crate) inner: Arc<dyn PresenceStore>,
    pub(crate) detail: Arc<Detail>,
    pub(crate) engine: &'static str,
}

impl PresenceStore for InstrumentedPresence {
    fn add<'a>(
        &'a self,
        channel: &'a str,
        info: ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let call = self.inner.add(channel, info, ttl);
        timed_engine(&self.detail, self.engine, "presence_add", call)
    }

    fn touch<'a>(
        &'a self,
        channel: &'a str,
        entries: &'a [ClientInfo],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<usize>, EngineError>> {
        let call = self.inner.touch(channel, entries, ttl);
        timed_engine(&self.detail, self.engine, "presence_touch", call)
    }

    fn remove<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let call = self.inner.remove(channel, client);
        timed_engine(&self.detail, self.engine, "presence_remove", call)
    }

    fn list<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<ClientInfo>, EngineError>> {
        let call = self.inner.list(channel);
        timed_engine(&self.detail, self.engine, "presence_list", call)
    }

    fn stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<PresenceStats, EngineError>> {
        let call = self.inner.stats(channel);
        timed_engine(&self.detail, self.engine, "presence_stats", call)
    }

    fn page<'a>(
        &'a self,
        channel: &'a str,
        cursor: &'a str,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<PresencePage, EngineError>> {
        let call = self.inner.page(channel, cursor, limit, max_bytes);
        timed_engine(&self.detail, self.engine, "presence_page", call)
    }
}

/// Whether a hook's error means the backend failed (as opposed to refusing on purpose).
fn is_failure(error: &ClientError) -> bool {
    error.code == ErrorCode::UNAVAILABLE.0 || error.code == ErrorCode::INTERNAL.0
}

/// Times `call` as backend hook `hook`; an error of the backend itself counts as a failure.
fn timed_hook<'a, T: Send + 'a>(
    detail: &'a Detail,
    hook: &'static str,
    call: impl Future<Output = Result<T, ClientError>> + Send + 'a,
) -> BoxFuture<'a, Result<T, ClientError>> {
    Box::pin(async move {
        let started = Instant::now();
        let result = call.await;
        let label = HookLabel { hook };
        detail
            .proxy_calls
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        if result.as_ref().is_err_and(is_failure) {
            detail.proxy_failures.get_or_create(&label).inc();
        }
        result
    })
}

/// A [`Backend`] whose hook calls are timed.
#[derive(Debug)]
pub(crate) struct InstrumentedBackend {
    pub(crate) inner: Arc<dyn Backend>,
    pub(crate) detail: Arc<Detail>,
}

impl Backend for InstrumentedBackend {
    fn handles(&self, hook: Hook) -> bool {
        self.inner.handles(hook)
    }

    fn forward_headers(&self) -> &[Box<str>] {
        self.inner.forward_headers()
    }

    fn connect(&self, event: ConnectEvent) -> BoxFuture<'_, Result<ConnectReply, ClientError>> {
        timed_hook(&self.detail, "connect", self.inner.connect(event))
    }

    fn subscribe(
        &self,
        event: SubscribeEvent,
    ) -> BoxFuture<'_, Result<SubscribeReply, ClientError>> {
        timed_hook(&self.detail, "subscribe", self.inner.subscribe(event))
    }

    fn publish(&self, event: PublishEvent) -> BoxFuture<'_, Result<PublishReply, ClientError>> {
        timed_hook(&self.detail, "publish", self.inner.publish(event))
    }

    fn rpc(&self, event: RpcEvent) -> BoxFuture<'_, Result<RpcReply, ClientError>> {
        timed_hook(&self.detail, "rpc", self.inner.rpc(event))
    }

    fn send(&self, event: SendEvent) -> BoxFuture<'_, ()> {
        let call = self.inner.send(event);
        Box::pin(async move {
            let started = Instant::now();
            call.await;
            self.detail
                .proxy_calls
                .get_or_create(&HookLabel { hook: "send" })
                .observe(started.elapsed().as_secs_f64());
        })
    }

    fn refresh(&self, event: RefreshEvent) -> BoxFuture<'_, Result<RefreshReply, ClientError>> {
        timed_hook(&self.detail, "refresh", self.inner.refresh(event))
    }

    fn sub_refresh(
        &self,
        event: kilat_core::proxy::SubRefreshEvent,
    ) -> BoxFuture<'_, Result<kilat_core::proxy::SubRefreshReply, ClientError>> {
        timed_hook(&self.detail, "sub_refresh", self.inner.sub_refresh(event))
    }
}
