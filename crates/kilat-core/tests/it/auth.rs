//! A fake authenticator: tokens are `user|seconds-to-expiry|channel,channel` in clear text.

use std::sync::Arc;
use std::time::Duration;

use kilat_core::engine::{BoxFuture, Broker};
use kilat_core::{AllowSubscribe, Authenticator, Credentials, NamespaceOptions, Node, NodeConfig};
use kilat_protocol::{ClientError, ErrorCode};
use serde_json::json;
use tokio::time::Instant;

use crate::support::*;

#[derive(Debug)]
struct ClearText;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn parse(token: &str) -> Result<Credentials, ClientError> {
    let mut parts = token.split('|');
    let user = parts.next().unwrap_or_default().to_owned();
    let ttl: Option<u64> = parts.next().and_then(|t| t.parse().ok());
    let channels = parts
        .next()
        .map(|c| {
            c.split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if user == "expired" {
        return Err(ClientError::new(ErrorCode::TOKEN_EXPIRED, "token expired"));
    }
    if user.is_empty() {
        return Err(ClientError::new(ErrorCode::UNAUTHORIZED, "invalid token"));
    }
    Ok(Credentials {
        user,
        info: None,
        expires_at: ttl.map(|t| unix_now() + t),
        channels,
        token_id: None,
    })
}

impl Authenticator for ClearText {
    fn verify_connect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>> {
        Box::pin(async move { parse(token) })
    }

    fn verify_subscribe<'a>(
        &'a self,
        token: &'a str,
        user: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>> {
        Box::pin(async move {
            let credentials = parse(token)?;
            if credentials.user != user || !credentials.channels.iter().any(|c| c == channel) {
                return Err(ClientError::new(
                    ErrorCode::PERMISSION_DENIED,
                    "token for another channel",
                ));
            }
            Ok(credentials)
        })
    }
}

fn node() -> Node {
    let mut config = NodeConfig::default();
    config.namespaces.insert(
        "private".into(),
        NamespaceOptions {
            allow_subscribe: AllowSubscribe::Token,
            ..NamespaceOptions::default()
        },
    );
    config.token_refresh_grace = Duration::from_secs(5);
    config.ping_interval = Duration::from_secs(300);
    let node = Node::new(config);
    node.set_authenticator(Arc::new(ClearText));
    node
}

#[tokio::test]
async fn connect_token_sets_user_and_subscribes_token_channels() {
    let node = node();
    let mut c = Client::new(&node);
    let reply = c
        .call("connect", json!({"token": "alice||private:x"}))
        .await;
    assert!(reply["connect"]["subs"]["private:x"].is_object(), "{reply}");
    assert_eq!(
        c.session().client().map(|i| i.user.clone()),
        Some("alice".into())
    );
    assert!(reply["connect"].get("expires").is_none());
}

#[tokio::test]
async fn bad_and_expired_tokens_disconnect() {
    let node = node();
    let mut c = Client::new(&node);
    let err = c
        .send_raw(r#"{"id":1,"connect":{"token":"|"}}"#)
        .await
        .expect_err("bad");
    assert_eq!(err.code, 3501);
    assert_eq!(error_code(&c.frames()[0]), Some(401));
    let mut c = Client::new(&node);
    let err = c
        .send_raw(r#"{"id":1,"connect":{"token":"expired"}}"#)
        .await
        .expect_err("expired");
    assert_eq!(err.code, 3005);
    assert!(err.reconnect);
    assert_eq!(error_code(&c.frames()[0]), Some(410));
}

#[tokio::test]
async fn subscription_tokens_are_verified() {
    let node = node();
    let mut c = Client::new(&node);
    c.call("connect", json!({"token": "alice"})).await;
    let ok = c
        .call(
            "subscribe",
            json!({"channel": "private:y", "token": "alice||private:y"}),
        )
        .await;
    assert!(ok["subscribe"].is_object(), "{ok}");
    let wrong = c
        .call(
            "subscribe",
            json!({"channel": "private:z", "token": "alice||private:y"}),
        )
        .await;
    assert_eq!(error_code(&wrong), Some(403));
    let refreshed = c
        .call(
            "sub_refresh",
            json!({"channel": "private:y", "token": "alice|60|private:y"}),
        )
        .await;
    assert_eq!(refreshed["sub_refresh"]["expires"], json!(true));
}

#[tokio::test(start_paused = true)]
async fn expired_connection_gets_a_refresh_push_then_3005() {
    let node = node();
    let mut c = Client::new(&node);
    let reply = c.call("connect", json!({"token": "alice|30"})).await;
    assert_eq!(reply["connect"]["expires"], json!(true));
    assert!(
        reply["connect"]["ttl"]
            .as_u64()
            .is_some_and(|t| (29..=30).contains(&t))
    );
    let deadline = c.session().next_deadline();
    assert!(deadline - Instant::now() <= Duration::from_secs(30));
    tokio::time::advance(deadline - Instant::now()).await;
    c.session()
        .on_timer(Instant::now())
        .expect("refresh push, not yet closed");
    let frames = c.frames();
    assert_eq!(frames, [json!({"push": {"refresh": {"ttl": 5}}})]);
    // A refresh within the grace period keeps the connection.
    let refreshed = c.call("refresh", json!({"token": "alice|60"})).await;
    assert_eq!(refreshed["refresh"]["expires"], json!(true));
    let wrong_user = c.call("refresh", json!({"token": "bob|60"})).await;
    assert_eq!(error_code(&wrong_user), Some(401));
    tokio::time::advance(Duration::from_secs(6)).await;
    c.session().on_timer(Instant::now()).expect("refreshed");
    // Without another refresh: push at expiry, then 3005 after the grace period.
    tokio::time::advance(Duration::from_secs(60)).await;
    c.session().on_timer(Instant::now()).expect("refresh push");
    tokio::time::advance(Duration::from_secs(5)).await;
    let err = c.session().on_timer(Instant::now()).expect_err("expired");
    assert_eq!(err, kilat_protocol::Disconnect::TOKEN_EXPIRED);
}

/// Runs the session's timers at its next deadline, which must be `expected` from now.
async fn at_next_deadline(c: &mut Client, expected: Duration) {
    let wait = c.session().next_deadline() - Instant::now();
    assert!(
        wait <= expected && wait + Duration::from_secs(1) >= expected,
        "next timer in {wait:?}, expected about {expected:?}"
    );
    tokio::time::advance(wait).await;
    c.session()
        .on_timer(Instant::now())
        .expect("a subscription token never closes the connection");
}

#[tokio::test(start_paused = true)]
async fn an_expired_subscription_token_gets_a_refresh_push_then_ends_the_subscription() {
    let node = node();
    let mut c = Client::new(&node);
    c.call("connect", json!({"token": "alice"})).await;
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "private:x", "token": "alice|30|private:x"}),
        )
        .await;
    assert_eq!(reply["subscribe"]["expires"], json!(true), "{reply}");
    assert!(
        reply["subscribe"]["ttl"]
            .as_u64()
            .is_some_and(|t| (29..=30).contains(&t)),
        "{reply}"
    );

    at_next_deadline(&mut c, Duration::from_secs(30)).await;
    assert_eq!(
        c.frames(),
        [json!({"push": {"channel": "private:x", "refresh": {"ttl": 5}}})]
    );

    // No `sub_refresh` within the grace: the subscription ends, the connection stays.
    at_next_deadline(&mut c, Duration::from_secs(5)).await;
    let frames = c.frames();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["push"]["channel"], json!("private:x"));
    assert_eq!(frames[0]["push"]["unsubscribe"]["code"], json!(410));
    node.publish(
        "private:x",
        kilat_protocol::types::raw_json("1").expect("json"),
    )
    .await
    .expect("publish");
    assert!(
        pubs(&c.frames(), "private:x").is_empty(),
        "nothing is delivered after the subscription ended"
    );
    // The session knows it is unsubscribed: it may subscribe again with a fresh token.
    let again = c
        .call(
            "subscribe",
            json!({"channel": "private:x", "token": "alice|60|private:x"}),
        )
        .await;
    assert!(again.get("error").is_none(), "{again}");
}

#[tokio::test(start_paused = true)]
async fn sub_refresh_within_the_grace_keeps_the_subscription() {
    let node = node();
    let mut c = Client::new(&node);
    c.call("connect", json!({"token": "alice"})).await;
    c.call(
        "subscribe",
        json!({"channel": "private:x", "token": "alice|30|private:x"}),
    )
    .await;
    at_next_deadline(&mut c, Duration::from_secs(30)).await;
    assert_eq!(c.frames().len(), 1, "the refresh push");
    let refreshed = c
        .call(
            "sub_refresh",
            json!({"channel": "private:x", "token": "alice|60|private:x"}),
        )
        .await;
    assert_eq!(
        refreshed["sub_refresh"]["expires"],
        json!(true),
        "{refreshed}"
    );

    // The next timer is the new token's expiry, not the end of the old grace.
    at_next_deadline(&mut c, Duration::from_secs(60)).await;
    assert_eq!(
        c.frames(),
        [json!({"push": {"channel": "private:x", "refresh": {"ttl": 5}}})]
    );
    node.publish(
        "private:x",
        kilat_protocol::types::raw_json("1").expect("json"),
    )
    .await
    .expect("publish");
    assert_eq!(pubs(&c.frames(), "private:x").len(), 1, "still subscribed");
}

/// An engine whose unsubscribe takes `latency` (a slow Redis), or never ends with `None`.
#[derive(Debug)]
struct SlowUnsubscribe {
    inner: kilat_core::engine::memory::MemoryBroker,
    latency: Option<Duration>,
    /// Notified when an unsubscribe starts.
    started: Arc<tokio::sync::Notify>,
    /// Unsubscribes that ran to their end.
    finished: Arc<std::sync::atomic::AtomicUsize>,
}

impl Twist for SlowUnsubscribe {
    fn inner(&self) -> &kilat_core::engine::memory::MemoryBroker {
        &self.inner
    }
    fn unsubscribe<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(), kilat_core::engine::EngineError>> {
        Box::pin(async move {
            self.started.notify_one();
            match self.latency {
                // The engine's own latency, on the paused clock.
                Some(latency) => tokio::time::sleep(latency).await,
                None => std::future::pending::<()>().await,
            }
            let result = self.inner.unsubscribe(channel).await;
            self.finished
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            result
        })
    }
}

/// A session whose subscription token expired, with its subscription ended on the timer (the
/// engine unsubscribe and the presence removal then run in a node task). Returns the node, the
/// engine's `started` and `finished` signals, and the client.
async fn subscription_ended_on_a_timer(
    latency: Option<Duration>,
) -> (
    Node,
    Arc<tokio::sync::Notify>,
    Arc<std::sync::atomic::AtomicUsize>,
    Client,
) {
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let broker = Twisted(SlowUnsubscribe {
        inner: kilat_core::engine::memory::MemoryBroker::new(Duration::from_secs(60)),
        latency,
        started: started.clone(),
        finished: finished.clone(),
    });
    let mut config = NodeConfig::default();
    config.namespaces.insert(
        "private".into(),
        NamespaceOptions {
            allow_subscribe: AllowSubscribe::Token,
            presence: true,
            ..NamespaceOptions::default()
        },
    );
    config.token_refresh_grace = Duration::from_secs(5);
    config.ping_interval = Duration::from_secs(300);
    let node = Node::with_engine(
        config,
        Arc::new(broker),
        Arc::new(kilat_core::engine::memory::MemoryPresence::new()),
    );
    node.set_authenticator(Arc::new(ClearText));
    let mut c = Client::new(&node);
    c.call("connect", json!({"token": "alice"})).await;
    c.call(
        "subscribe",
        json!({"channel": "private:x", "token": "alice|30|private:x"}),
    )
    .await;
    assert_eq!(
        node.presence("private:x")
            .await
            .expect("presence")
            .clients
            .len(),
        1
    );
    at_next_deadline(&mut c, Duration::from_secs(30)).await;
    at_next_deadline(&mut c, Duration::from_secs(5)).await;
    assert_eq!(
        c.frames()[1]["push"]["unsubscribe"]["code"],
        json!(410),
        "the subscription ended"
    );
    (node, started, finished, c)
}

/// Issue 12: a shutdown during the engine unsubscribe and presence removal of a subscription
/// that ended on a timer waits for them instead of cutting them off.
#[tokio::test(start_paused = true)]
async fn shutdown_completes_a_pending_engine_unsubscribe_and_leave_issue_12() {
    let (node, started, finished, c) =
        subscription_ended_on_a_timer(Some(Duration::from_secs(2))).await;
    started.notified().await;
    node.shutdown();
    assert_eq!(c.close_reason(), Some(kilat_protocol::Disconnect::SHUTDOWN));
    assert_eq!(
        finished.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the unsubscribe is still running when the shutdown starts"
    );
    assert!(node.finish_tasks(Duration::from_secs(10)).await);
    assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        node.presence("private:x")
            .await
            .expect("presence")
            .clients
            .is_empty(),
        "the presence entry was removed after the unsubscribe"
    );
}

/// The wait is bounded: an engine call that never ends does not hold the shutdown.
#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_a_hung_engine_call_after_its_timeout_issue_12() {
    let (node, started, finished, _c) = subscription_ended_on_a_timer(None).await;
    started.notified().await;
    node.shutdown();
    let begun = Instant::now();
    assert!(!node.finish_tasks(Duration::from_secs(3)).await);
    assert_eq!(begun.elapsed(), Duration::from_secs(3));
    assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A backend with only the sub-refresh hook: extends by `extend_s` seconds, or refuses when
/// `None`; counts its calls.
#[derive(Debug)]
struct SubRefresher {
    extend_s: Option<u64>,
    calls: std::sync::atomic::AtomicUsize,
}

impl kilat_core::Backend for SubRefresher {
    fn handles(&self, hook: kilat_core::Hook) -> bool {
        hook == kilat_core::Hook::SubRefresh
    }
    fn connect(
        &self,
        _: kilat_core::proxy::ConnectEvent,
    ) -> BoxFuture<'_, Result<kilat_core::proxy::ConnectReply, ClientError>> {
        unreachable!("only sub_refresh is configured")
    }
    fn subscribe(
        &self,
        _: kilat_core::proxy::SubscribeEvent,
    ) -> BoxFuture<'_, Result<kilat_core::proxy::SubscribeReply, ClientError>> {
        unreachable!("only sub_refresh is configured")
    }
    fn publish(
        &self,
        _: kilat_core::proxy::PublishEvent,
    ) -> BoxFuture<'_, Result<kilat_core::proxy::PublishReply, ClientError>> {
        unreachable!("only sub_refresh is configured")
    }
    fn rpc(
        &self,
        _: kilat_core::proxy::RpcEvent,
    ) -> BoxFuture<'_, Result<kilat_core::proxy::RpcReply, ClientError>> {
        unreachable!("only sub_refresh is configured")
    }
    fn send(&self, _: kilat_core::proxy::SendEvent) -> BoxFuture<'_, ()> {
        unreachable!("only sub_refresh is configured")
    }
    fn refresh(
        &self,
        _: kilat_core::proxy::RefreshEvent,
    ) -> BoxFuture<'_, Result<kilat_core::proxy::RefreshReply, ClientError>> {
        unreachable!("only sub_refresh is configured")
    }
    fn sub_refresh(
        &self,
        event: kilat_core::proxy::SubRefreshEvent,
    ) -> BoxFuture<'_, Result<kilat_core::proxy::SubRefreshReply, ClientError>> {
        assert_eq!(
            (event.user.as_str(), event.channel.as_str()),
            ("alice", "private:x")
        );
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let reply = match self.extend_s {
            Some(s) => kilat_core::proxy::SubRefreshReply::Extend {
                expires_at: Some(unix_now() + s),
            },
            None => kilat_core::proxy::SubRefreshReply::Refuse,
        };
        Box::pin(async move { Ok(reply) })
    }
}

/// Subscribes `alice` to `private:x` with a 30 s token on a node whose backend answers
/// sub-refreshes like `backend`; returns the client after the expiry, once the hook answered.
async fn expired_with_hook(node: &Node, backend: &Arc<SubRefresher>) -> Client {
    node.set_backend(backend.clone());
    let mut c = Client::new(node);
    c.call("connect", json!({"token": "alice"})).await;
    c.call(
        "subscribe",
        json!({"channel": "private:x", "token": "alice|30|private:x"}),
    )
    .await;
    at_next_deadline(&mut c, Duration::from_secs(30)).await;
    assert!(
        c.frames().is_empty(),
        "the backend is asked, not the client"
    );
    while backend.calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    c
}

#[tokio::test(start_paused = true)]
async fn the_sub_refresh_hook_extends_an_expired_subscription() {
    let node = node();
    let backend = Arc::new(SubRefresher {
        extend_s: Some(600),
        calls: Default::default(),
    });
    let mut c = expired_with_hook(&node, &backend).await;
    for _ in 0..10 {
        tokio::task::yield_now().await; // the hook task records its answer
    }
    // At the end of the grace the answer is applied: still subscribed, next timer in ~600 s.
    at_next_deadline(&mut c, Duration::from_secs(5)).await;
    assert!(c.frames().is_empty());
    let wait = c.session().next_deadline() - Instant::now();
    assert!(wait > Duration::from_secs(25), "{wait:?}");
    node.publish(
        "private:x",
        kilat_protocol::types::raw_json("1").expect("json"),
    )
    .await
    .expect("publish");
    assert_eq!(pubs(&c.frames(), "private:x").len(), 1, "still subscribed");
}

#[tokio::test(start_paused = true)]
async fn a_refusing_sub_refresh_hook_ends_the_subscription_with_410() {
    let node = node();
    let backend = Arc::new(SubRefresher {
        extend_s: None,
        calls: Default::default(),
    });
    let mut c = expired_with_hook(&node, &backend).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    at_next_deadline(&mut c, Duration::from_secs(5)).await;
    let frames = c.frames();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["push"]["channel"], json!("private:x"));
    assert_eq!(frames[0]["push"]["unsubscribe"]["code"], json!(410));
    assert_eq!(
        frames[0]["push"]["unsubscribe"]["resubscribe"],
        json!(false)
    );
    assert_eq!(backend.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}
