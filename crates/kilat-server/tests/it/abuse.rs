use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, close_code, connect, next_json, next_non_presence};

/// Subscribes `ws` to `channel` and waits for the reply.
async fn subscribe(ws: &mut Client, id: u32, channel: &str) {
    ws.send(Message::text(format!(
        r#"{{"id":{id},"subscribe":{{"channel":"{channel}"}}}}"#
    )))
    .await
    .expect("subscribe");
    let reply = next_non_presence(ws).await;
    assert!(reply["subscribe"].is_object(), "{reply}");
}

/// Publishes `count` numbered messages to `feed` from a well-behaved client while `abuse` runs,
/// then checks the bystander got every one of them, in order, once.
async fn bystander_keeps_receiving<F: Future<Output = ()>>(
    server: &TestServer,
    count: u64,
    abuse: F,
) {
    let (mut bystander, _) = connect(server).await;
    subscribe(&mut bystander, 2, "feed").await;
    let (mut publisher, _) = connect(server).await;
    let publish = async {
        for n in 1..=count {
            publisher
                .send(Message::text(format!(
                    r#"{{"id":{},"publish":{{"channel":"feed","data":{{"n":{n}}}}}}}"#,
                    n + 10
                )))
                .await
                .expect("publish");
            let reply = next_json(&mut publisher).await;
            assert!(reply.get("error").is_none(), "publish {n}: {reply}");
        }
    };
    tokio::join!(publish, abuse);
    for n in 1..=count {
        let push = next_non_presence(&mut bystander).await;
        assert_eq!(
            push["push"]["pub"]["data"]["n"], n,
            "message {n} in order: {push}"
        );
        assert_eq!(push["push"]["pub"]["offset"], n, "{push}");
    }
}

#[tokio::test]
async fn a_command_flood_gets_429_then_3500_and_nobody_else_notices() {
    let server = TestServer::start(|c| {
        c.node.client_command_rate = 50.0;
        c.node.client_command_burst = 20;
    })
    .await;
    // The publisher stays within its own burst of 20 commands.
    bystander_keeps_receiving(&server, 15, async {
        let (mut flooder, _) = connect(&server).await;
        // One message of 100 frames: the first 20 pass, then 429s, then the connection goes.
        let flood: Vec<String> = (100..200)
            .map(|id| format!(r#"{{"id":{id},"presence_stats":{{"channel":"feed"}}}}"#))
            .collect();
        flooder
            .send(Message::text(flood.join("\n")))
            .await
            .expect("flood");
        let mut limited = 0;
        let code = loop {
            match tokio::time::timeout(
                crate::support::WAIT,
                futures_util::StreamExt::next(&mut flooder),
            )
            .await
            .expect("answer in time")
            {
                Some(Ok(Message::Text(text))) => {
                    limited += text.as_str().matches("\"code\":429").count();
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        assert!(
            limited > 0,
            "some commands were refused with 429 before the disconnect"
        );
        assert_eq!(code, Some(3500));
    })
    .await;
}

#[tokio::test]
async fn thousands_of_subscribes_hit_the_channel_limit() {
    let server = TestServer::start(|c| c.node.max_channels_per_connection = 16).await;
    bystander_keeps_receiving(&server, 50, async {
        let (mut greedy, _) = connect(&server).await;
        let batch: Vec<String> = (0..2000)
            .map(|i| format!(r#"{{"id":{},"subscribe":{{"channel":"c{i}"}}}}"#, i + 100))
            .collect();
        // Sent in messages of 100 so the command rate limit is not what stops it.
        let mut ok = 0;
        let mut limited = 0;
        for chunk in batch.chunks(100).take(2) {
            greedy
                .send(Message::text(chunk.join("\n")))
                .await
                .expect("send");
            for _ in 0..chunk.len() {
                let reply = next_non_presence(&mut greedy).await;
                if reply["subscribe"].is_object() {
                    ok += 1;
                } else if reply["error"]["code"] == 429 {
                    limited += 1;
                }
            }
        }
        assert_eq!(ok, 16);
        assert_eq!(limited, 184);
    })
    .await;
}

#[tokio::test]
async fn oversized_frames_are_dropped_without_touching_others() {
    let server = TestServer::start(|c| c.websocket.max_message_size = 4096).await;
    bystander_keeps_receiving(&server, 50, async {
        for _ in 0..5 {
            let (mut big, _) = connect(&server).await;
            big.send(Message::text("x".repeat(100_000)))
                .await
                .expect("send");
            assert_eq!(close_code(&mut big).await, Some(1009));
        }
    })
    .await;
}

#[tokio::test]
async fn half_open_handshakes_do_not_hold_the_server() {
    let server =
        TestServer::start(|c| c.server.handshake_timeout = std::time::Duration::from_millis(200))
            .await;
    bystander_keeps_receiving(&server, 50, async {
        let mut silent = Vec::new();
        for _ in 0..200 {
            silent.push(
                tokio::net::TcpStream::connect(server.addr)
                    .await
                    .expect("tcp"),
            );
        }
        // Each is closed by the server after the head timeout.
        for mut stream in silent {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(
                crate::support::WAIT,
                tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
            )
            .await
            .expect("closed in time");
            let n = n.unwrap_or(0);
            assert!(
                n == 0 || buf.starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    })
    .await;
}

#[tokio::test]
async fn connections_per_user_are_limited() {
    use kilat_auth::{Algorithm, TokenConfig, TokenRequest, mint};
    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256!";
    let server = TestServer::start(|c| {
        c.token = Some(TokenConfig::with_secret(SECRET));
        c.node.max_connections_per_user = 2;
    })
    .await;
    let token = mint(
        SECRET.as_bytes(),
        Algorithm::HS256,
        &TokenRequest::connection("alice"),
    )
    .expect("mint");
    let open = || async {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("handshake");
        ws.send(Message::text(format!(
            r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#
        )))
        .await
        .expect("connect");
        let reply = next_json(&mut ws).await;
        (ws, reply)
    };
    let (_a, first) = open().await;
    let (b, second) = open().await;
    assert!(first["connect"].is_object() && second["connect"].is_object());
    let (mut third, refused) = open().await;
    assert_eq!(refused["error"]["code"], 429, "{refused}");
    assert_eq!(close_code(&mut third).await, Some(3502));
    drop(b);
    // Once a connection closes, its slot frees up (the close is processed asynchronously).
    let mut attempts = 0;
    loop {
        let (_ws, reply) = open().await;
        if reply["connect"].is_object() {
            break;
        }
        attempts += 1;
        assert!(attempts < 50, "slot never freed: {reply}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn channel_publish_rate_is_limited() {
    let server = TestServer::start(|c| {
        c.node.channel_publish_rate = 1.0;
        c.node.channel_publish_burst = 3;
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    let frames: Vec<String> = (10..20)
        .map(|id| format!(r#"{{"id":{id},"publish":{{"channel":"hot","data":{id}}}}}"#))
        .collect();
    ws.send(Message::text(frames.join("\n")))
        .await
        .expect("publish burst");
    let mut accepted = 0;
    let mut limited = 0;
    while accepted + limited < 10 {
        let frame = next_non_presence(&mut ws).await;
        if frame.get("id").is_none() {
            continue;
        }
        if frame["error"]["code"] == 429 {
            limited += 1;
        } else {
            accepted += 1;
        }
    }
    assert_eq!((accepted, limited), (3, 7));
}

#[tokio::test]
async fn a_slow_consumer_is_dropped_and_nobody_else_waits() {
    let server = TestServer::start(|c| {
        c.node.client_queue_max_bytes = 64 * 1024;
        // The publisher sends 2,000 commands as fast as it can; the command limit is not what
        // this test is about.
        c.node.client_command_rate = 0.0;
    })
    .await;
    // A subscriber that completes connect and subscribe, then never reads again.
    let mut slow = crate::support::RawClient::open(server.addr).await;
    slow.send_frame(true, 0x1, br#"{"id":1,"connect":{}}"#, true)
        .await;
    slow.send_frame(
        true,
        0x1,
        br#"{"id":2,"subscribe":{"channel":"feed"}}"#,
        true,
    )
    .await;
    // The bystander's publications (16 KiB each, 2,000 of them: 32 MiB, far more than the slow
    // reader's socket buffers and 64 KiB queue hold) all reach the bystander.
    let big = "x".repeat(16 * 1024);
    let (mut bystander, _) = connect(&server).await;
    subscribe(&mut bystander, 2, "feed").await;
    let (mut publisher, _) = connect(&server).await;
    for n in 1..=2000u32 {
        publisher
            .send(Message::text(format!(
                r#"{{"id":{},"publish":{{"channel":"feed","data":{{"n":{n},"pad":"{big}"}}}}}}"#,
                n + 10
            )))
            .await
            .expect("publish");
        let reply = next_json(&mut publisher).await;
        assert!(reply.get("error").is_none(), "publish {n}: {reply}");
        let push = next_non_presence(&mut bystander).await;
        assert_eq!(push["push"]["pub"]["data"]["n"], n, "{push}");
    }
    // The server gave up on the slow reader: reading what it buffered ends in a close (3001
    // when the close frame still fit) or the end of the stream, never in more waiting.
    let code = slow.read_close_code().await;
    assert!(code.is_none() || code == Some(3001), "closed with {code:?}");
    // The server then waits a bounded time for the close handshake the reader never answers,
    // and releases the connection: only the bystander and the publisher remain.
    crate::support::wait_for_connections(&server, 2, crate::support::WAIT).await;
}

#[tokio::test]
async fn a_reader_that_never_reads_cannot_pin_its_connection() {
    let server = TestServer::start(|c| {
        c.node.client_queue_max_bytes = 64 * 1024;
        c.node.client_command_rate = 0.0;
    })
    .await;
    // Connects, subscribes, then never reads a byte: the server's writes block on a full socket.
    let _stuck = {
        let mut raw = crate::support::RawClient::open(server.addr).await;
        raw.send_frame(true, 0x1, br#"{"id":1,"connect":{}}"#, true)
            .await;
        raw.send_frame(
            true,
            0x1,
            br#"{"id":2,"subscribe":{"channel":"feed"}}"#,
            true,
        )
        .await;
        raw
    };
    let (mut publisher, _) = connect(&server).await;
    let big = "x".repeat(16 * 1024);
    for n in 1..=2000u32 {
        publisher
            .send(Message::text(format!(
                r#"{{"id":{},"publish":{{"channel":"feed","data":{{"n":{n},"pad":"{big}"}}}}}}"#,
                n + 10
            )))
            .await
            .expect("publish");
        let reply = next_json(&mut publisher).await;
        assert!(reply.get("error").is_none(), "publish {n}: {reply}");
    }
    // Within the write timeout (10 s) plus the teardown bound, the stuck connection is gone.
    crate::support::wait_for_connections(&server, 1, std::time::Duration::from_secs(30)).await;
}
