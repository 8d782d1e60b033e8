use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, WAIT, close_code, connect};

#[tokio::test]
async fn shutdown_closes_every_connection_with_3000_and_returns() {
    let mut server =
        TestServer::start(|c| c.server.shutdown_timeout = Duration::from_secs(5)).await;
    let (mut a, _) = connect(&server).await;
    let (mut b, _) = connect(&server).await;
    let task = server.begin_shutdown();
    assert_eq!(close_code(&mut a).await, Some(3000));
    assert_eq!(close_code(&mut b).await, Some(3000));
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("server stops within the wait")
        .expect("server task");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn shutdown_is_bounded_when_a_client_never_reads() {
    let mut server =
        TestServer::start(|c| c.server.shutdown_timeout = Duration::from_millis(500)).await;
    // A raw client that completes the handshake and then never reads or answers anything.
    let _silent = crate::support::RawClient::open(server.addr).await;
    let task = server.begin_shutdown();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("shutdown finishes despite a silent client")
        .expect("server task")
        .expect("clean stop");
}

#[tokio::test]
async fn connect_must_come_within_the_handshake_timeout() {
    let server = TestServer::start(|c| c.node.handshake_timeout = Duration::from_millis(200)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("handshake");
    assert_eq!(close_code(&mut ws).await, Some(3003));
}

#[tokio::test]
async fn server_pings_and_disconnects_without_pong() {
    let server = TestServer::start(|c| {
        c.node.ping_interval = Duration::from_millis(100);
        c.node.pong_timeout = Duration::from_millis(200);
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    // The first ping arrives as an empty JSON object; do not answer it.
    let ping = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("ping in time")
        .expect("stream open")
        .expect("frame");
    assert_eq!(ping, Message::text("{}"));
    assert_eq!(close_code(&mut ws).await, Some(3002));
}

#[tokio::test]
async fn answered_pings_keep_the_connection() {
    let server = TestServer::start(|c| {
        c.node.ping_interval = Duration::from_millis(100);
        c.node.pong_timeout = Duration::from_millis(200);
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    for _ in 0..4 {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("ping in time")
            .expect("stream open")
            .expect("frame");
        assert_eq!(frame, Message::text("{}"), "only pings expected");
        ws.send(Message::text("{}")).await.expect("pong");
    }
}

/// Reads a whole raw HTTP answer (the server closes after it) and returns its head.
async fn raw_answer_head(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the listener still accepts while draining");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.split_once("\r\n\r\n")
        .map_or(text.clone(), |(head, _)| head.to_owned())
        .to_ascii_lowercase()
}

#[tokio::test]
async fn drain_refuses_new_connections_with_retry_after_then_tells_clients_3000_with_a_spread() {
    let mut server = TestServer::start(|c| {
        // Long enough for every check of the first phase; the phases are awaited, not timed.
        c.server.drain_grace = Some(Duration::from_secs(3));
        c.server.drain_spread = Duration::from_millis(1500);
        c.server.shutdown_timeout = Duration::from_secs(5);
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    ws.send(Message::text(
        r#"{"id":2,"subscribe":{"channel":"drain:room"}}"#,
    ))
    .await
    .expect("subscribe");
    let reply = crate::support::next_non_presence(&mut ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    let task = server.begin_shutdown();

    // Phase 1: /ready turns 503 while the port keeps accepting.
    let deadline = tokio::time::Instant::now() + WAIT;
    while crate::support::http_get(server.addr, "/ready").await.0 != 503 {
        assert!(tokio::time::Instant::now() < deadline, "/ready never 503");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        crate::support::http_get(server.addr, "/health").await.0,
        200
    );
    // New WebSocket, SSE (socket path) and streaming connections: 503 with Retry-After.
    let (status, head, _) =
        crate::support::raw_upgrade(server.addr, crate::support::UPGRADE_HEADERS).await;
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let connect = "%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D";
    let sse = raw_answer_head(
        server.addr,
        &format!(
            "GET /connection/sse?connect={connect} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            server.addr
        ),
    )
    .await;
    assert!(sse.starts_with("http/1.1 503"), "{sse}");
    assert!(sse.contains("retry-after: 1"), "{sse}");
    let body = r#"{"id":1,"connect":{}}"#;
    let stream = raw_answer_head(
        server.addr,
        &format!(
            "POST /connection/stream HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
            server.addr,
            body.len()
        ),
    )
    .await;
    assert!(stream.starts_with("http/1.1 503"), "{stream}");
    assert!(stream.contains("retry-after: 1"), "{stream}");

    // The client already connected carries on: a publication through the API still reaches it.
    let (status, answer) = crate::support::http_post(
        server.addr,
        "/api/publish",
        r#"{"channel":"drain:room","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"result\""), "{answer}");
    let publication = crate::support::next_non_presence(&mut ws).await;
    assert_eq!(publication["push"]["pub"]["data"]["n"], 1, "{publication}");

    // Phase 2: the disconnect push with the spread, then the close frame with 3000.
    let push = crate::support::next_non_presence(&mut ws).await;
    assert_eq!(
        push["push"]["disconnect"],
        serde_json::json!({"code": 3000, "reason": "shutdown", "reconnect": true, "delay_ms": 1500}),
        "{push}"
    );
    assert_eq!(close_code(&mut ws).await, Some(3000));
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("server stops within the wait")
        .expect("server task");
    assert!(result.is_ok(), "{result:?}");
    // Phase 3: the listener is closed.
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "the port closes once the drain is over"
    );
}
