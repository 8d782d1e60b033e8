//! A scripted WebSocket peer plays the server where a real one will not misbehave on demand.

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
