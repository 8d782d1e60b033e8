//! Engine.IO and Socket.IO over raw HTTP: the answers to hostile and broken inputs (those of the
//! reference server), each closing only the session that sent it, and a bystander session that
//! keeps chatting through all of them. The happy paths run with the real `socket.io-client` in
//! `compat/socketio`.

use std::net::SocketAddr;

use crate::support::{TestServer, http_get, http_post, http_request};

const PATH: &str = "/socket.io/?EIO=4&transport=polling";

/// Opens a polling session and returns its id and the open packet's JSON.
async fn handshake(addr: SocketAddr) -> (String, serde_json::Value) {
    let (status, body) = http_get(addr, PATH).await;
    assert_eq!(status, 200, "{body}");
    let open = body.strip_prefix('0').expect("an open packet");
    let open: serde_json::Value = serde_json::from_str(open).expect("open packet JSON");
    (open["sid"].as_str().expect("sid").to_owned(), open)
}

async fn post(addr: SocketAddr, sid: &str, body: &str) -> (u16, String) {
    http_post(addr, &format!("{PATH}&sid={sid}"), body).await
}

async fn poll(addr: SocketAddr, sid: &str) -> (u16, String) {
    http_get(addr, &format!("{PATH}&sid={sid}")).await
}

/// Polls until a payload holds `needle`; fails on anything but 200.
async fn poll_until(addr: SocketAddr, sid: &str, needle: &str) -> String {
    for _ in 0..10 {
        let (status, body) = poll(addr, sid).await;
        assert_eq!(status, 200, "{body}");
        if body.contains(needle) {
            return body;
        }
    }
    panic!("{needle} never arrived");
}

/// A session connected to the default namespace.
async fn connected(addr: SocketAddr) -> String {
    let (sid, _) = handshake(addr).await;
    assert_eq!(post(addr, &sid, "40").await, (200, "ok".to_owned()));
    let body = poll_until(addr, &sid, "40{").await;
    assert!(body.contains("\"sid\""), "{body}");
    sid
}

/// The bystander still sends and receives.
async fn chats(addr: SocketAddr, sid: &str, text: &str) {
    let event = format!("42[\"chat message\",\"{text}\"]");
    assert_eq!(post(addr, sid, &event).await.0, 200);
    poll_until(addr, sid, &event).await;
}

#[tokio::test]
async fn the_open_packet_announces_an_unguessable_sid_and_the_settings() {
    let server = TestServer::start(|c| c.socketio.max_http_buffer_size = 4096).await;
    let (sid, open) = handshake(server.addr).await;
    // The owner node's id (16 hex digits, for forwarding polls) and 128 random bits.
    assert_eq!(sid.len(), 48);
    assert!(sid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(sid, handshake(server.addr).await.0);
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 25000);
    assert_eq!(open["pingTimeout"], 10000);
    assert_eq!(open["maxPayload"], 4096);
}

#[tokio::test]
async fn bad_requests_get_the_reference_servers_codes() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let unknown = r#"{"code":1,"message":"Session ID unknown"}"#;
    assert_eq!(
        http_get(
            addr,
            &format!("{PATH}&sid=00000000000000000000000000000000")
        )
        .await,
        (400, unknown.to_owned())
    );
    assert_eq!(post(addr, "nope", "40").await, (400, unknown.to_owned()));
    let (status, body) = http_get(addr, "/socket.io/?EIO=3&transport=polling").await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            r#"{"code":5,"message":"Unsupported protocol version"}"#
        )
    );
    let (status, body) = http_get(addr, "/socket.io/?EIO=4&transport=carrier-pigeon").await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":0,"message":"Transport unknown"}"#)
    );
    let (status, body) = http_post(addr, PATH, "40").await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"code":2,"message":"Bad handshake method"}"#)
    );
    // An upgrade for a session that does not exist.
    let (status, body) = http_get(
        addr,
        "/socket.io/?EIO=4&transport=websocket&sid=00000000000000000000000000000000",
    )
    .await;
    assert_eq!((status, body.as_str()), (400, unknown));
}

#[tokio::test]
async fn a_second_poll_at_once_closes_the_session_and_only_it() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let bystander = connected(addr).await;
    let sid = connected(addr).await;
    // Two polls at once: whichever the server sees second gets 400, the other one the close
    // packet (the session has no packets to send before its ping, 25 s away).
    let (a, b) = tokio::join!(poll(addr, &sid), poll(addr, &sid));
    let (mut answers, overlap): (Vec<_>, Vec<_>) =
        [a, b].into_iter().partition(|(status, _)| *status == 200);
    assert_eq!(
        overlap.len(),
        1,
        "overlapping polls: {answers:?} {overlap:?}"
    );
    let (_, body) = answers.pop().expect("one answered");
    assert!(
        body.ends_with('1'),
        "the open poll ends with the close packet: {body}"
    );
    assert_eq!(poll(addr, &sid).await.0, 400, "the session is gone");
    chats(addr, &bystander, "after overlap").await;
}

#[tokio::test]
async fn a_payload_over_max_http_buffer_size_is_413_and_ends_the_session() {
    let server = TestServer::start(|c| c.socketio.max_http_buffer_size = 1000).await;
    let addr = server.addr;
    let bystander = connected(addr).await;
    let sid = connected(addr).await;
    let big = format!("42[\"chat message\",\"{}\"]", "x".repeat(2000));
    assert_eq!(post(addr, &sid, &big).await.0, 413);
    let (status, body) = poll(addr, &sid).await;
    assert!(status == 400 || body.ends_with('1'), "{status} {body}");
    chats(addr, &bystander, "after 413").await;
}

#[tokio::test]
async fn malformed_packets_close_their_session_and_nobody_elses() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let bystander = connected(addr).await;
    for (i, bad) in [
        "",
        "9",
        "0{}",
        "4",
        "47",
        "42",
        "42{}",
        "42[]",
        "42[1]",
        "42[\"unterminated",
        "44{\"message\":\"from a client\"}",
        // Binary packets: a placeholder past the attachments, a text packet where an
        // attachment is due, an attachment that is not base64, one with no packet before it,
        // more attachments than allowed.
        "451-[\"bin\",{\"_placeholder\":true,\"num\":1}]",
        "451-[\"bin\",{\"_placeholder\":true,\"num\":0}]\u{1e}42[\"x\"]",
        "451-[\"bin\",{\"_placeholder\":true,\"num\":0}]\u{1e}b@@@@",
        "bAQID",
        "4565-[\"bin\"]",
        "3\u{1e}\u{1e}3",
        "42/never-connected,[\"x\"]",
        "40\u{1e}40",
    ]
    .into_iter()
    .enumerate()
    {
        let sid = connected(addr).await;
        // The reference server answers "ok" and closes the session.
        let (status, body) = post(addr, &sid, bad).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "{bad:?}");
        let (status, body) = poll(addr, &sid).await;
        assert!(
            status == 400 || body.ends_with('1'),
            "{bad:?} left its session open: {status} {body}"
        );
        chats(addr, &bystander, &format!("after bad packet {i}")).await;
    }
    // Bytes that are not UTF-8: "ok", and the session is closed.
    let sid = connected(addr).await;
    let mut request = format!(
        "POST {PATH}&sid={sid} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(b"4\xff\xfe");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(&request).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
        "{answer}"
    );
    let (status, body) = poll(addr, &sid).await;
    assert!(status == 400 || body.ends_with('1'), "{status} {body}");
    chats(addr, &bystander, "after bad bytes").await;
}

#[tokio::test]
async fn cross_origin_polling_is_allowed_only_for_allowed_origins() {
    let server = TestServer::start(|c| {
        c.server.allowed_origins = vec!["https://app.example.com".to_owned()];
    })
    .await;
    let addr = server.addr;
    let response = |origin: &str| {
        format!(
            "GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
        )
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(response("https://app.example.com").as_bytes())
        .await
        .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://app.example.com"),
        "{text}"
    );
    let (status, body) = http_request(addr, response("https://evil.example.net")).await;
    assert_eq!(
        (status, body.as_str()),
        (403, r#"{"code":4,"message":"Forbidden"}"#)
    );
}

#[tokio::test]
async fn the_hub_ping_is_the_engine_io_ping_and_silence_ends_the_session() {
    let server = TestServer::start(|c| {
        c.node.ping_interval = std::time::Duration::from_secs(1);
        c.node.pong_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let addr = server.addr;
    let sid = connected(addr).await;
    // Two pings answered: the session stays.
    for _ in 0..2 {
        let body = poll_until(addr, &sid, "2").await;
        assert!(body.split('\u{1e}').any(|p| p == "2"), "{body}");
        assert_eq!(post(addr, &sid, "3").await.0, 200);
    }
    // A ping left unanswered: the session is closed (kilat's 3002), seen as the close packet
    // or, once it is gone, as an unknown session.
    let mut closed = false;
    for _ in 0..10 {
        let (status, body) = poll(addr, &sid).await;
        if status == 400 || body.split('\u{1e}').any(|p| p == "1") {
            closed = true;
            break;
        }
    }
    assert!(closed, "a silent session stayed open");
}

#[tokio::test]
async fn a_socket_io_client_is_a_kilat_session_in_presence() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let (sid, _) = handshake(addr).await;
    assert_eq!(post(addr, &sid, "40").await.0, 200);
    let body = poll_until(addr, &sid, "40{").await;
    let connect: serde_json::Value =
        serde_json::from_str(body.trim_start_matches("40")).expect("CONNECT JSON");
    let id = connect["sid"].as_str().expect("socket id");
    assert_ne!(
        id, sid,
        "the socket id others see is not the secret session id"
    );
    let (status, body) = http_post(addr, "/api/presence", r#"{"channel":"sio:/"}"#).await;
    assert_eq!(status, 200, "{body}");
    let presence: serde_json::Value = serde_json::from_str(&body).expect("presence JSON");
    assert!(
        presence["result"]["clients"].get(id).is_some(),
        "{id} not in presence: {presence}"
    );
}

#[tokio::test]
async fn a_websocket_session_refuses_polls_and_a_second_upgrade_and_keeps_working() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    let next_text = |message: Option<Result<Message, _>>| match message {
        Some(Ok(Message::Text(text))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    };
    let open = next_text(ws.next().await);
    let open: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("JSON");
    assert_eq!(open["upgrades"], serde_json::json!([]));
    let sid = open["sid"].as_str().expect("sid").to_owned();
    let bad = (400, r#"{"code":3,"message":"Bad request"}"#.to_owned());
    assert_eq!(poll(addr, &sid).await, bad);
    assert_eq!(post(addr, &sid, "40").await, bad);
    let (status, _) = http_get(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .await;
    assert_eq!(status, 400);
    ws.send(Message::text("40")).await.expect("send");
    assert!(next_text(ws.next().await).starts_with("40{\"sid\""));
    ws.send(Message::text("42[\"chat message\",\"on ws\"]"))
        .await
        .expect("send");
    assert_eq!(next_text(ws.next().await), "42[\"chat message\",\"on ws\"]");
}

/// A Socket.IO client on WebSocket, connected to `/`.
async fn ws_client(
    addr: SocketAddr,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket");
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(t))) if t.starts_with('0')));
    ws.send(Message::text("40")).await.expect("send");
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(t))) if t.starts_with("40{")));
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis_chat_across_with_a_client_on_each() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Some(redis) = kilat_testkit::RedisServer::start("socketio_two_nodes_on_redis") else {
        return;
    };
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let url = redis.url();
        nodes.push(
            TestServer::start(move |c| {
                c.engine.kind = kilat_server::config::EngineKind::Redis;
                c.engine.redis_url = url;
            })
            .await,
        );
    }
    let mut on_websocket = ws_client(nodes[0].addr).await;
    let polling = connected(nodes[1].addr).await;
    // From the WebSocket client on node 0 to the polling one on node 1, and back.
    for i in 0..5 {
        let event = format!("42[\"chat message\",\"from node 0: {i}\"]");
        on_websocket
            .send(Message::text(event.clone()))
            .await
            .expect("send");
        poll_until(nodes[1].addr, &polling, &event).await;
        let echoed = loop {
            match on_websocket.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {}
                Some(Ok(Message::Text(t))) => break t.to_string(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(echoed, event, "the sender's own copy, once and in order");
    }
    let back = "42[\"chat message\",\"from node 1\"]";
    assert_eq!(post(nodes[1].addr, &polling, back).await.0, 200);
    let got = loop {
        match on_websocket.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {}
            Some(Ok(Message::Text(t))) => break t.to_string(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(got, back);
}

#[tokio::test]
async fn outside_dev_an_anonymous_connect_is_a_connect_error_with_kilats_reason() {
    let server = TestServer::start(|c| c.node.dev = false).await;
    let addr = server.addr;
    let (sid, _) = handshake(addr).await;
    assert_eq!(post(addr, &sid, "40").await.0, 200);
    let body = poll_until(addr, &sid, "44").await;
    let packets: Vec<&str> = body.split('\u{1e}').collect();
    assert_eq!(
        packets[0], r#"44{"message":"anonymous connections are not allowed"}"#,
        "{body}"
    );
    // Then the session ends.
    let mut closed = packets.contains(&"1");
    for _ in 0..5 {
        if closed {
            break;
        }
        let (status, body) = poll(addr, &sid).await;
        closed = status == 400 || body.split('\u{1e}').any(|p| p == "1");
    }
    assert!(closed, "the refused session stayed open");
}
