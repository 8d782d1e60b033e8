use std::time::Duration;

use kilat_client::{CODE_CLOSED, Client, ClientConfig, Event, SubscribeOptions};

use crate::support::*;

/// The `Subscribed` event of a resubscribe after a reconnect.
async fn resubscribed(events: &mut kilat_client::Events) -> Event {
    next_matching(events, "Subscribed after the reconnect", |e| {
        matches!(
            e,
            Event::Subscribed {
                resubscribed: true,
                ..
            }
        )
    })
    .await
}

#[tokio::test]
async fn missed_publications_are_recovered_after_a_connection_loss() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let (reader, mut events) = connect(proxy.url()).await;
    let (writer, _writer_events) = connect(server.url()).await;
    reader
        .subscribe("feed", SubscribeOptions::recoverable())
        .await
        .expect("subscribe");
    for n in 1..=3 {
        writer.publish("feed", &n).await.expect("publish");
    }
    assert_eq!(
        offsets(&publications(&mut events, "feed", 3).await),
        [1, 2, 3]
    );

    proxy.cut();
    let lost = next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            lost,
            Event::Disconnected {
                reconnect: true,
                ..
            }
        ),
        "{lost:?}"
    );
    for n in 4..=10 {
        writer
            .publish("feed", &n)
            .await
            .expect("publish while the reader is away");
    }
    // Let a few reconnect attempts fail against the cut proxy before restoring it.
    next_matching(&mut events, "a reconnect attempt", |e| {
        matches!(e, Event::Reconnecting { attempt: 2.., .. })
    })
    .await;
    proxy.restore();

    let reconnected = next_matching(&mut events, "Connected after the loss", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    assert!(matches!(
        reconnected,
        Event::Connected {
            reconnected: true,
            ..
        }
    ));
    let subscribed = resubscribed(&mut events).await;
    assert!(
        matches!(
            subscribed,
            Event::Subscribed {
                recovered: true,
                recovering: true,
                ..
            }
        ),
        "{subscribed:?}"
    );
    // Recovered publications come first, in order, then live ones, with no duplicate.
    assert_eq!(
        offsets(&publications(&mut events, "feed", 7).await),
        (4..=10).collect::<Vec<_>>()
    );
    writer.publish("feed", &11).await.expect("publish live");
    assert_eq!(offsets(&publications(&mut events, "feed", 1).await), [11]);
    assert_no_publication(&mut events).await;
    let position = reader
        .position("feed")
        .await
        .expect("position")
        .expect("positioned");
    assert_eq!(position.offset, 11);
}

#[tokio::test]
async fn a_command_issued_while_disconnected_runs_after_the_reconnect() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let (client, mut events) = connect(proxy.url()).await;
    client
        .subscribe("ops", SubscribeOptions::default())
        .await
        .expect("subscribe");
    proxy.cut();
    next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    proxy.restore();
    // A command issued while disconnected waits for the reconnect and then succeeds.
    let published = client
        .publish("ops", &"after")
        .await
        .expect("publish after reconnect");
    assert_eq!(published.offset, Some(1));
    let got = publications(&mut events, "ops", 1).await;
    assert_eq!(offsets(&got), [1]);
}

#[tokio::test]
async fn a_server_restart_is_reported_as_not_recovered() {
    let mut first = TestServer::start().await;
    let addr = first.addr;
    let (reader, mut events) = connect(first.url()).await;
    reader
        .subscribe("restart", SubscribeOptions::recoverable())
        .await
        .expect("subscribe");
    reader.publish("restart", &1).await.expect("publish");
    reader.publish("restart", &2).await.expect("publish");
    assert_eq!(
        offsets(&publications(&mut events, "restart", 2).await),
        [1, 2]
    );

    first.stop().await;
    let lost = next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            lost,
            Event::Disconnected {
                code: 3000,
                reconnect: true,
                ..
            }
        ),
        "a draining server sends 3000: {lost:?}"
    );

    // A new server on the same port: the memory engine starts a new stream with a new epoch.
    let second = TestServer::start_on(addr).await;
    let subscribed = resubscribed(&mut events).await;
    let Event::Subscribed {
        recovered, epoch, ..
    } = subscribed
    else {
        unreachable!()
    };
    assert!(!recovered, "history was lost with the old server");
    // The new stream starts again at offset 1: it must not be dropped as a duplicate of the
    // old stream's offset 1.
    let (writer, _writer_events) = connect(second.url()).await;
    writer.publish("restart", &"new").await.expect("publish");
    let got = publications(&mut events, "restart", 1).await;
    assert_eq!(offsets(&got), [1]);
    let position = reader
        .position("restart")
        .await
        .expect("position")
        .expect("positioned");
    assert_eq!(position.epoch, epoch);
}

#[tokio::test]
async fn close_ends_the_event_stream_and_fails_later_calls() {
    let server = TestServer::start().await;
    let (client, mut events) = connect(server.url()).await;
    client.close();
    let last = next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        last,
        Event::Disconnected {
            code: CODE_CLOSED,
            reconnect: false,
            ..
        }
    ));
    assert!(
        tokio::time::timeout(WAIT, events.next())
            .await
            .expect("stream ends")
            .is_none()
    );
    assert!(client.publish("x", &1).await.is_err());
}

#[tokio::test]
async fn without_reconnect_a_loss_is_final() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let config = ClientConfig {
        reconnect: false,
        ..fast(proxy.url())
    };
    let (_client, mut events) = Client::connect(config).await.expect("connect");
    proxy.cut();
    let last = next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        last,
        Event::Disconnected {
            reconnect: false,
            ..
        }
    ));
    assert!(
        tokio::time::timeout(WAIT, events.next())
            .await
            .expect("stream ends")
            .is_none()
    );
}

#[tokio::test]
async fn the_first_connect_fails_fast() {
    // A port that was free a moment ago: nothing listens there.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let config = ClientConfig {
        handshake_timeout: Duration::from_secs(2),
        ..fast(ws_url(addr))
    };
    let err = Client::connect(config).await.expect_err("nothing listens");
    assert!(matches!(err, kilat_client::Error::Transport(_)), "{err:?}");
    let err = Client::connect(ClientConfig::new("wss://127.0.0.1:1/x"))
        .await
        .expect_err("no TLS");
    assert!(
        matches!(err, kilat_client::Error::InvalidUrl { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn application_pings_are_answered_so_the_server_keeps_the_client() {
    let server = TestServer::start_with(|config| {
        config.node.ping_interval = Duration::from_millis(100);
        config.node.pong_timeout = Duration::from_millis(100);
    })
    .await;
    let (client, mut events) = connect(server.url()).await;
    client
        .subscribe("alive", SubscribeOptions::default())
        .await
        .expect("subscribe");
    // Several ping rounds: a client that did not answer would be gone with 3002 by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    while let Some(event) = events.try_next() {
        assert!(
            !matches!(event, Event::Disconnected { .. }),
            "disconnected: {event:?}"
        );
    }
    client.publish("alive", &1).await.expect("still connected");
    assert_eq!(offsets(&publications(&mut events, "alive", 1).await), [1]);
}

/// `POST path` with a JSON body on a fresh connection; the status and body.
async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test]
async fn an_upgrade_refused_with_retry_after_waits_at_least_that_long() {
    // One handshake at a time: a bare upgrade that never sends `connect` holds it, so every
    // reconnect attempt meanwhile gets 503 with `Retry-After: 1`.
    let server = TestServer::start_with(|c| c.server.max_handshakes = 1).await;
    let config = ClientConfig {
        min_reconnect_delay: Duration::from_millis(20),
        max_reconnect_delay: Duration::from_secs(5),
        ..ClientConfig::new(server.url())
    };
    let (client, mut events) = Client::connect(config).await.expect("connect");
    let id = connected(&mut events).await;
    // The client's first message after connect ends its own handshake (and frees the permit).
    client.presence_stats("x").await.expect("presence stats");
    let (holder, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("the bare upgrade takes the only permit");

    let body = format!(r#"{{"user":"","client":"{id}","reconnect":true}}"#);
    let (status, reply) = post_json(server.addr, "/api/disconnect", &body).await;
    assert_eq!(
        (status, reply.as_str()),
        (200, r#"{"result":{"connections":1}}"#)
    );
    // The first attempt comes at the backoff floor and is refused; the wait before the next
    // one honours `Retry-After` (without it this window is 20-40 ms).
    match next_matching(&mut events, "the first reconnect attempt", |e| {
        matches!(e, Event::Reconnecting { .. })
    })
    .await
    {
        Event::Reconnecting { attempt, delay } => {
            assert_eq!(attempt, 1);
            assert!(delay <= Duration::from_millis(20), "{delay:?}");
        }
        _ => unreachable!(),
    }
    match next_matching(&mut events, "the attempt after the 503", |e| {
        matches!(e, Event::Reconnecting { .. } | Event::Connected { .. })
    })
    .await
    {
        Event::Reconnecting { attempt, delay } => {
            assert_eq!(attempt, 2);
            assert!(
                delay >= Duration::from_secs(1) && delay <= Duration::from_millis(1040),
                "Retry-After: 1 plus the second window's jitter, got {delay:?}"
            );
        }
        other => panic!("connected past the handshake bound: {other:?}"),
    }
    // Once the permit is free the client gets in.
    drop(holder);
    let again = next_matching(&mut events, "Connected after the refusals", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    assert!(
        matches!(
            again,
            Event::Connected {
                reconnected: true,
                ..
            }
        ),
        "{again:?}"
    );
    client.close();
}
