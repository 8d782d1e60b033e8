//! A scripted WebSocket peer plays the server where a real one will not misbehave on demand.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kilat_client::{Event, SubscribeOptions};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;

type Peer = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Accepts one WebSocket and answers its `connect`.
async fn accept(listener: &TcpListener) -> Peer {
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
    let connect = read_json(&mut ws).await;
    assert_eq!(connect["id"], 1, "{connect}");
    assert_eq!(connect["connect"]["name"], "kilat-rust", "{connect}");
    ws.send(Message::text(
        r#"{"id":1,"connect":{"client":"c1","version":"x","ping":25}}"#,
    ))
    .await
    .expect("send");
    ws
}

async fn read_json(ws: &mut Peer) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("json");
        }
    }
}

#[tokio::test]
async fn answers_the_application_ping_and_reads_batched_frames() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    let peer = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        ws.send(Message::text("{}")).await.expect("ping");
        // The pong and the subscribe, in whichever order the client sent them.
        let (first, second) = (read_json(&mut ws).await, read_json(&mut ws).await);
        let (pong, subscribe) = if first == serde_json::json!({}) {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(
            pong,
            serde_json::json!({}),
            "the ping is answered with {{}}"
        );
        let id = subscribe["id"].as_u64().expect("id");
        assert_eq!(subscribe["subscribe"]["channel"], "b");
        // The reply, a duplicate, and two publications in one batched message.
        let batch = format!(
            "{{\"id\":{id},\"subscribe\":{{\"recoverable\":true,\"epoch\":\"e\",\"offset\":1,\"recovered\":false,\"publications\":[],\"positioned\":true}}}}\n\
             {{\"push\":{{\"channel\":\"b\",\"pub\":{{\"data\":\"dup\",\"offset\":1}}}}}}\n\
             {{\"push\":{{\"channel\":\"b\",\"pub\":{{\"data\":\"x\",\"offset\":2}}}}}}\n\
             {{\"push\":{{\"channel\":\"b\",\"pub\":{{\"data\":\"y\",\"offset\":3}}}}}}\n"
        );
        ws.send(Message::text(batch)).await.expect("batch");
        ws.send(Message::text(
            r#"{"push":{"message":{"data":{"hello":1}}}}"#,
        ))
        .await
        .expect("message");
        // Keep the socket open until the client has read everything.
        let _ = ws.next().await;
    });
    let (client, mut events) = connect(url).await;
    let result = client
        .subscribe("b", SubscribeOptions::default())
        .await
        .expect("subscribe");
    assert_eq!(result.offset, 1);
    let got = publications(&mut events, "b", 2).await;
    assert_eq!(
        offsets(&got),
        [2, 3],
        "offset 1 is at the subscribe position: a duplicate"
    );
    let message = next_matching(&mut events, "Message", |e| {
        matches!(e, Event::Message { .. })
    })
    .await;
    assert!(matches!(message, Event::Message { data } if data.get() == r#"{"hello":1}"#));
    client.close();
    peer.await.expect("peer");
}

#[tokio::test]
async fn terminal_disconnect_codes_stop_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    let peer = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(3503),
            reason: "force disconnect".into(),
        })))
        .await
        .expect("close");
        let _ = ws.next().await;
        // A client that wrongly reconnects would be accepted here; the test fails on it below.
        tokio::time::timeout(std::time::Duration::from_millis(500), listener.accept())
            .await
            .is_ok()
    });
    let (_client, mut events) = connect(url).await;
    let last = next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            last,
            Event::Disconnected {
                code: 3503,
                reconnect: false,
                ..
            }
        ),
        "{last:?}"
    );
    assert!(events.next().await.is_none(), "the stream ends");
    assert!(!peer.await.expect("peer"), "no reconnect after 3503");
}

#[tokio::test]
async fn reconnectable_codes_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    let peer = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(3001),
            reason: "slow".into(),
        })))
        .await
        .expect("close");
        let _second = accept(&listener).await;
        // Hold the second connection until the test is done.
        std::future::pending::<()>().await;
    });
    let (_client, mut events) = connect(url).await;
    let lost = next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        lost,
        Event::Disconnected {
            code: 3001,
            reconnect: true,
            ..
        }
    ));
    let again = next_matching(&mut events, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    assert!(matches!(
        again,
        Event::Connected {
            reconnected: true,
            ..
        }
    ));
    peer.abort();
}

#[tokio::test]
async fn a_silent_server_is_detected_and_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    let peer = tokio::spawn(async move {
        // Announces a 1 s ping interval, then never pings: the connection looks dead.
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let _connect = read_json(&mut ws).await;
        ws.send(Message::text(
            r#"{"id":1,"connect":{"client":"c1","version":"x","ping":1}}"#,
        ))
        .await
        .expect("send");
        let _second = accept(&listener).await;
        std::future::pending::<()>().await;
    });
    let config = kilat_client::ClientConfig {
        ping_grace: std::time::Duration::from_millis(200),
        ..fast(url)
    };
    let (_client, mut events) = kilat_client::Client::connect(config)
        .await
        .expect("connect");
    let lost = next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            lost,
            Event::Disconnected {
                code: kilat_client::CODE_TRANSPORT,
                reconnect: true,
                ..
            }
        ),
        "{lost:?}"
    );
    next_matching(&mut events, "Connected", |e| {
        matches!(
            e,
            Event::Connected {
                reconnected: true,
                ..
            }
        )
    })
    .await;
    peer.abort();
}

/// Accepts sessions forever; `end` runs on each after its `connect` was answered, with the
/// session's number (from 1).
fn serve_sessions<F, Fut>(listener: TcpListener, end: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Peer, u32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let ws = accept(&listener).await;
            n += 1;
            tokio::spawn(end(ws, n));
        }
    })
}

async fn close_with(mut ws: Peer, code: u16, reason: &'static str) {
    let close = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(close))).await;
    // Read until the client's close answer so the socket ends cleanly.
    while let Some(Ok(_)) = ws.next().await {}
}

/// The `attempt` and `delay` of the next `n` reconnect attempts.
async fn reconnect_attempts(events: &mut kilat_client::Events, n: usize) -> Vec<(u32, Duration)> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Event::Reconnecting { attempt, delay } = next_matching(events, "Reconnecting", |e| {
            matches!(e, Event::Reconnecting { .. })
        })
        .await
        {
            out.push((attempt, delay));
        }
    }
    out
}

#[tokio::test]
async fn issue_20_backoff_grows_across_sessions_that_end_the_same_way() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    // Every session is ended at once with 3001, as a server does when a reply is too large.
    let peer = serve_sessions(listener, |ws, _| close_with(ws, 3001, "slow consumer"));
    let base = Duration::from_millis(10);
    let config = kilat_client::ClientConfig {
        min_reconnect_delay: base,
        max_reconnect_delay: Duration::from_secs(5),
        ..fast(url)
    };
    let (client, mut events) = kilat_client::Client::connect(config)
        .await
        .expect("connect");
    let attempts = reconnect_attempts(&mut events, 6).await;
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4, 5, 6],
        "the attempt count is not reset by a connection the server ends at once: {attempts:?}"
    );
    for (i, (_, delay)) in attempts.iter().enumerate() {
        let ceiling = base * 2u32.pow(u32::try_from(i).expect("small"));
        assert!(
            *delay >= base && *delay <= ceiling,
            "attempt {i}: {delay:?} outside [{base:?}, {ceiling:?}]"
        );
    }
    assert_eq!(attempts[0].1, base, "the first window is [base, base]");
    assert!(
        attempts[5].1 > base,
        "the window grew (attempt 6 waits in [10 ms, 320 ms]): {attempts:?}"
    );
    client.close();
    peer.abort();
}

#[tokio::test]
async fn the_backoff_starts_over_after_a_connection_stayed_up() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    // Sessions 1 and 2 are dropped at once; session 3 stays up 300 ms before it is dropped.
    let peer = serve_sessions(listener, |ws, n| async move {
        if n == 3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        close_with(ws, 3001, "slow consumer").await;
    });
    let config = kilat_client::ClientConfig {
        min_reconnect_delay: Duration::from_millis(10),
        max_reconnect_delay: Duration::from_secs(5),
        backoff_reset_after: Duration::from_millis(150),
        ..fast(url)
    };
    let (client, mut events) = kilat_client::Client::connect(config)
        .await
        .expect("connect");
    let attempts = reconnect_attempts(&mut events, 4).await;
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        [1, 2, 1, 2],
        "sessions 1 and 2 grow the count; session 3 (up longer than backoff_reset_after) resets it"
    );
    client.close();
    peer.abort();
}

/// The delay of the first reconnect after a disconnect push carrying `delay_ms`.
async fn delay_after_hint(delay_ms: u32, max: Duration) -> (u32, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    let peer = serve_sessions(listener, move |mut ws, _| async move {
        // The push first (a close frame has no room for the hint), then the close.
        let push = format!(
            r#"{{"push":{{"disconnect":{{"code":3000,"reason":"shutdown","reconnect":true,"delay_ms":{delay_ms}}}}}}}"#
        );
        ws.send(Message::text(push)).await.expect("push");
        close_with(ws, 3000, "shutdown").await;
    });
    let config = kilat_client::ClientConfig {
        min_reconnect_delay: Duration::from_millis(10),
        max_reconnect_delay: max,
        ..fast(url)
    };
    let (client, mut events) = kilat_client::Client::connect(config)
        .await
        .expect("connect");
    let first = reconnect_attempts(&mut events, 1).await[0];
    client.close();
    peer.abort();
    first
}

#[tokio::test]
async fn issue_18_a_delay_hint_spreads_the_reconnect_over_floor_plus_hint() {
    let floor = Duration::from_millis(10);
    let hint = Duration::from_secs(60);
    let (attempt, delay) = delay_after_hint(60_000, Duration::from_secs(120)).await;
    assert_eq!(attempt, 1);
    // Without the hint the first attempt waits exactly the floor; with it, floor + U[0, 60 s]
    // (exactly the floor only with a chance of one in 6e10).
    assert!(
        delay > floor && delay <= floor + hint,
        "{delay:?} outside ({floor:?}, {:?}]",
        floor + hint
    );
}

#[tokio::test]
async fn issue_18_a_delay_hint_is_capped_at_max_reconnect_delay() {
    let (_, delay) = delay_after_hint(u32::MAX, Duration::from_millis(500)).await;
    assert!(delay <= Duration::from_millis(500), "{delay:?}");
}

#[tokio::test]
async fn a_delta_that_does_not_apply_makes_the_client_resubscribe_and_recover() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = ws_url(listener.local_addr().expect("addr"));
    let peer = tokio::spawn(async move {
        let mut ws = accept(&listener).await;
        let subscribe = read_json(&mut ws).await;
        assert_eq!(subscribe["subscribe"]["delta"], "fossil", "{subscribe}");
        let id = subscribe["id"].as_u64().expect("id");
        // Granted; then a full payload, then a delta whose checksum is wrong.
        let reply = format!(
            "{{\"id\":{id},\"subscribe\":{{\"recoverable\":true,\"epoch\":\"e\",\"offset\":0,\"recovered\":false,\"publications\":[],\"positioned\":true,\"delta\":true}}}}\n\
             {{\"push\":{{\"channel\":\"d\",\"pub\":{{\"data\":\"{{\\\"v\\\":1}}\",\"offset\":1,\"delta\":false}}}}}}\n\
             {{\"push\":{{\"channel\":\"d\",\"pub\":{{\"data\":\"7\\n7@0,0;\",\"offset\":2,\"delta\":true}}}}}}"
        );
        ws.send(Message::text(reply)).await.expect("send");
        let unsubscribe = read_json(&mut ws).await;
        assert_eq!(unsubscribe["unsubscribe"]["channel"], "d", "{unsubscribe}");
        let again = read_json(&mut ws).await;
        assert_eq!(again["subscribe"]["recover"], true, "{again}");
        assert_eq!(
            again["subscribe"]["offset"], 1,
            "recovers after the last payload: {again}"
        );
        let (uid, sid) = (
            unsubscribe["id"].as_u64().expect("id"),
            again["id"].as_u64().expect("id"),
        );
        let replies = format!(
            "{{\"id\":{uid},\"unsubscribe\":{{}}}}\n\
             {{\"id\":{sid},\"subscribe\":{{\"recoverable\":true,\"epoch\":\"e\",\"offset\":2,\"recovered\":true,\"publications\":[{{\"data\":{{\"v\":2}},\"offset\":2}}],\"positioned\":true,\"delta\":true}}}}"
        );
        ws.send(Message::text(replies)).await.expect("send");
        let _ = ws.next().await;
    });
    let (client, mut events) = connect(url).await;
    client
        .subscribe(
            "d",
            SubscribeOptions {
                delta: true,
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe");
    let got = publications(&mut events, "d", 2).await;
    let data: Vec<_> = got
        .iter()
        .map(|p| (p.offset, p.data.get().to_owned()))
        .collect();
    assert_eq!(
        data,
        [
            (Some(1), r#"{"v":1}"#.to_owned()),
            (Some(2), r#"{"v":2}"#.to_owned())
        ],
        "the payload the bad delta carried comes back through recovery"
    );
    client.close();
    peer.abort();
}
