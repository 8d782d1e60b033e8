//! Regression tests for the attacks of issue 20, each through real sockets: the attacker's
//! request fails, and the victim or a bystander loses nothing.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::emulation::{Stream, post_emulation};
use crate::support::{TestServer, connect, http_request, next_non_presence};

/// The next frame on an emulated stream that is not a join or leave push.
async fn next_non_presence_on(stream: &mut Stream) -> serde_json::Value {
    loop {
        let frame = stream.next().await;
        let push = &frame["push"];
        if push.get("join").is_none()
            && push.get("leave").is_none()
            && push.get("presence_diff").is_none()
        {
            return frame;
        }
    }
}

/// Sends `request` on a new connection and returns the status of the answer's head (the
/// connection may stay open after it).
async fn response_status(addr: std::net::SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    tokio::time::timeout(crate::support::WAIT, stream.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("read");
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("status code")
}

fn emulation_body(session: &str, node: &str, command: serde_json::Value) -> String {
    serde_json::json!({"session": session, "node": node, "command": command}).to_string()
}

/// Issue 20, defect 1: the client id that other users see (presence, join/leave, publication
/// info) does not authorise emulation POSTs; only the stream's secret session key does.
#[tokio::test]
async fn issue_20_a_client_id_learnt_from_presence_cannot_drive_another_users_stream() {
    let server = TestServer::start(|_| {}).await;
    let (status, mut alice) = Stream::open(server.addr, true, r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(status, 200);
    let connected = alice.next().await;
    let key = connected["connect"]["session"]
        .as_str()
        .expect("session key")
        .to_owned();
    let client = connected["connect"]["client"]
        .as_str()
        .expect("client id")
        .to_owned();
    let node = connected["connect"]["node"]
        .as_str()
        .expect("node id")
        .to_owned();
    assert_ne!(key, client, "the session key must not be the client id");
    assert!(
        key.len() >= 32 && !key.contains(&client) && !client.contains(&key),
        "session key {key:?} must be 128 random bits, unrelated to the client id {client:?}"
    );
    let subscribe = serde_json::json!({"id": 2, "subscribe": {"channel": "chat:room"}});
    assert_eq!(
        post_emulation(server.addr, emulation_body(&key, &node, subscribe)).await,
        204
    );
    assert_eq!(alice.next().await["id"], 2);

    // Bob learns Alice's client id the way any member can: from presence.
    let (mut bob, _) = connect(&server).await;
    bob.send(Message::text(
        r#"{"id":2,"subscribe":{"channel":"chat:room"}}"#,
    ))
    .await
    .expect("subscribe");
    assert_eq!(next_non_presence(&mut bob).await["id"], 2);
    bob.send(Message::text(
        r#"{"id":3,"presence":{"channel":"chat:room"}}"#,
    ))
    .await
    .expect("presence");
    let presence = next_non_presence(&mut bob).await;
    assert!(
        presence["presence"]["clients"].get(&client).is_some(),
        "Alice's client id is visible to Bob: {presence}"
    );
    assert!(
        !presence.to_string().contains(&key),
        "the session key leaked in presence: {presence}"
    );

    // Bob posts as Alice with her client id: refused, whether the command is well-formed or not.
    let forged = serde_json::json!({"id": 77, "publish": {"channel": "chat:room", "data": {"text": "forged"}}});
    assert_eq!(
        post_emulation(server.addr, emulation_body(&client, &node, forged)).await,
        404
    );
    let broken = serde_json::json!("not a command");
    assert_eq!(
        post_emulation(server.addr, emulation_body(&client, &node, broken)).await,
        404
    );

    // The next publication everyone sees is Bob's own marker: the forged one never ran, and
    // Alice's stream is still open and well.
    bob.send(Message::text(
        r#"{"id":4,"publish":{"channel":"chat:room","data":{"text":"marker"}}}"#,
    ))
    .await
    .expect("publish");
    loop {
        let frame = next_non_presence(&mut bob).await;
        if frame["id"] == 4 {
            assert!(frame.get("error").is_none(), "{frame}");
            continue;
        }
        assert_eq!(frame["push"]["pub"]["data"]["text"], "marker", "{frame}");
        break;
    }
    let seen = next_non_presence_on(&mut alice).await;
    assert_eq!(seen["push"]["pub"]["data"]["text"], "marker", "{seen}");
}

/// Issue 20, defect 6: a DNS-rebinding page (its name now resolves to the server's address)
/// sends a `Host` and an `Origin` that agree; the server's own origin comes from its
/// configuration, so the page is refused on every transport, in dev mode too.
#[tokio::test]
async fn issue_20_dns_rebinding_origins_are_refused_whatever_host_says() {
    let server = TestServer::start(|_| {}).await;
    let port = server.addr.port();
    let rebound =
        format!("Host: attacker.example:{port}\r\nOrigin: http://attacker.example:{port}\r\n");
    let upgrade = format!(
        "GET /connection/websocket HTTP/1.1\r\n{rebound}{}\r\n",
        crate::support::UPGRADE_HEADERS
    );
    assert_eq!(
        response_status(server.addr, &upgrade).await,
        403,
        "WebSocket upgrade from a rebound origin"
    );
    let sse = format!(
        "GET /connection/sse?connect=%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D HTTP/1.1\r\n{rebound}Connection: close\r\n\r\n"
    );
    let (status, _) = http_request(server.addr, sse).await;
    assert_eq!(status, 403, "SSE from a rebound origin");
    let body = r#"{"channel":"news","data":{"x":1}}"#;
    let api = format!(
        "POST /api/publish HTTP/1.1\r\n{rebound}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _) = http_request(server.addr, api).await;
    assert_eq!(status, 403, "API call from a rebound origin");

    // The server's real origins still work, and in dev mode so does a local dev server's page.
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        "http://localhost:5173".to_owned(),
    ] {
        let upgrade = format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\n{}\r\n",
            server.addr,
            crate::support::UPGRADE_HEADERS
        );
        assert_eq!(
            response_status(server.addr, &upgrade).await,
            101,
            "{origin}"
        );
    }
}

/// Issue 20, defect 6: with the API open in dev mode (no key), a cross-site page's simple
/// request (`text/plain`, no preflight) must not publish or disconnect anyone; a same-origin
/// page must send JSON; backends without `Origin` keep working.
#[tokio::test]
async fn issue_20_the_api_never_acts_on_a_cross_site_browser_request() {
    let server = TestServer::start(|_| {}).await;
    let (mut watcher, _) = connect(&server).await;
    watcher
        .send(Message::text(r#"{"id":2,"subscribe":{"channel":"news"}}"#))
        .await
        .expect("subscribe");
    assert_eq!(next_non_presence(&mut watcher).await["id"], 2);

    let post = |origin: &str, content_type: &str, path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            server.addr,
            body.len()
        )
    };
    let forged = r#"{"channel":"news","data":{"text":"forged"}}"#;
    let (status, _) = http_request(
        server.addr,
        post("https://evil.example", "text/plain", "/api/publish", forged),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http_request(
        server.addr,
        post(
            "https://evil.example",
            "text/plain",
            "/api/disconnect",
            r#"{"user":""}"#,
        ),
    )
    .await;
    assert_eq!(status, 403);
    let own = format!("http://{}", server.addr);
    let (status, _) = http_request(
        server.addr,
        post(&own, "text/plain", "/api/publish", forged),
    )
    .await;
    assert_eq!(status, 415, "a same-origin browser request must send JSON");

    // A backend (no Origin) publishes; it is the first publication the watcher sees.
    let (status, _) = crate::support::http_post(
        server.addr,
        "/api/publish",
        r#"{"channel":"news","data":{"text":"real"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = http_request(
        server.addr,
        post(
            &own,
            "application/json; charset=utf-8",
            "/api/publish",
            r#"{"channel":"news","data":{"text":"page"}}"#,
        ),
    )
    .await;
    assert_eq!(status, 200, "a same-origin page sending JSON is served");
    let first = next_non_presence(&mut watcher).await;
    assert_eq!(first["push"]["pub"]["data"]["text"], "real", "{first}");
    let second = next_non_presence(&mut watcher).await;
    assert_eq!(second["push"]["pub"]["data"]["text"], "page", "{second}");
}

/// Reads until the server closes the connection or `within` passes; returns what it sent and
/// whether it closed in time.
async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Issue 20, defect 2: request bodies that never finish (an emulation POST announcing 64 KiB and
/// sending one byte, one trickling a byte at a time, a chunked stream connect that stops, an API
/// call cut short) are answered 408 and closed by `server.body_timeout`; they do not hold
/// sockets, and a WebSocket client connects and works meanwhile.
#[tokio::test]
async fn issue_20_request_bodies_that_never_finish_are_cut_at_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let server =
        TestServer::start(|c| c.server.body_timeout = std::time::Duration::from_secs(1)).await;
    let host = server.addr;
    let stalled = [
        format!(
            "POST /connection/emulation HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 65536\r\n\r\n{{"
        ),
        format!(
            "POST /connection/stream HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"id\""
        ),
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"channel\""
        ),
    ];
    let mut sockets = Vec::new();
    for request in &stalled {
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        sockets.push(stream);
    }
    // One more trickles a byte every 300 ms: never below the minimum rate for long, but never
    // done either; the total deadline ends it.
    let mut trickle = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    trickle
        .write_all(
            format!("POST /connection/emulation HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let trickler = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut interval = tokio::time::interval(std::time::Duration::from_millis(300));
        loop {
            interval.tick().await;
            if trickle.write_all(b"x").await.is_err() {
                return Some(started.elapsed());
            }
            if started.elapsed() > std::time::Duration::from_secs(8) {
                return None;
            }
        }
    });

    // Meanwhile a WebSocket client connects and works.
    let (mut ws, _) = connect(&server).await;
    ws.send(Message::text(
        r#"{"id":2,"presence_stats":{"channel":"x"}}"#,
    ))
    .await
    .expect("send");
    assert_eq!(next_non_presence(&mut ws).await["id"], 2);

    for (mut stream, request) in sockets.into_iter().zip(&stalled) {
        let (answer, closed) =
            read_until_closed(&mut stream, std::time::Duration::from_secs(5)).await;
        assert!(closed, "still open after 5 s: {request:?}");
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{request:?} got {answer:?}"
        );
    }
    let cut = trickler.await.expect("trickler");
    assert!(
        cut.is_some_and(|after| after < std::time::Duration::from_secs(5)),
        "the trickling body was not cut by the deadline: {cut:?}"
    );
}

/// Issue 20, defect 2: every socket counts toward a limit until it closes (not only upgraded
/// connections), so sockets that never send a request cannot use up the descriptors; past the
/// limit new sockets are closed at once, and the accept loop serves again when they go.
#[tokio::test]
async fn issue_20_idle_sockets_count_toward_the_socket_limit() {
    let server = TestServer::start(|c| {
        c.server.max_connections = 8;
        c.server.handshake_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    // 8 connections plus 64 sockets of headroom for plain HTTP requests.
    let mut idle = Vec::new();
    for _ in 0..72 {
        idle.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("connect"),
        );
    }
    let mut over = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("the kernel still accepts the TCP handshake");
    let (_, closed) = read_until_closed(&mut over, std::time::Duration::from_secs(5)).await;
    assert!(closed, "a socket over the limit must be closed at once");
    drop(idle);
    // The listener keeps accepting once sockets are free again.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let attempt = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio_tungstenite::connect_async(server.ws_url()),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection after the idle sockets left"
        );
    }
}

/// Issue 20, defect 5 and the socket path's `Content-Length`: a request head over the 16 KiB
/// limit is refused on hyper's path too (431), so no stream keeps a head-sized buffer; and the
/// socket path refuses `Content-Length: +21` like hyper does.
#[tokio::test]
async fn issue_20_request_heads_are_capped_on_every_path() {
    let server = TestServer::start(|_| {}).await;
    let cookie = "a".repeat(390_000);
    // A stream as the second request of a connection goes through hyper.
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {}\r\n\r\nGET /connection/sse?connect=%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
        server.addr, server.addr
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .ok();
    let (answer, closed) = read_until_closed(&mut stream, crate::support::WAIT).await;
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");
    assert!(
        answer.contains("HTTP/1.1 431") && !answer.contains("text/event-stream"),
        "the oversized head must be refused, not streamed: {answer:.400}"
    );
    // The first request with an oversized head is handed to hyper, which refuses it as well.
    let first = format!(
        "GET /connection/sse?connect=%7B%7D HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stream, first.as_bytes())
        .await
        .ok();
    let (answer, _) = read_until_closed(&mut stream, crate::support::WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");

    let body = r#"{"id":1,"connect":{}}"#;
    let plus = format!(
        "POST /connection/stream HTTP/1.1\r\nHost: {}\r\nContent-Length: +{}\r\n\r\n{body}",
        server.addr,
        body.len()
    );
    let (status, _) = http_request(server.addr, plus).await;
    assert_eq!(status, 400, "Content-Length: +21 is not a length");
}

/// Issue 20: a client that half-closes its side of the socket after the SSE request still gets
/// its events.
#[tokio::test]
async fn issue_20_an_sse_client_that_half_closes_keeps_its_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(|_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let connect = r#"{"id":1,"connect":{"subs":{"news":{}}}}"#;
    let query: String = connect
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    stream
        .write_all(
            format!(
                "GET /connection/sse?connect={query} HTTP/1.1\r\nHost: {}\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    stream.shutdown().await.expect("half-close");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\"connect\"") {
        let n = tokio::time::timeout(crate::support::WAIT, stream.read(&mut buf))
            .await
            .expect("connect reply in time")
            .expect("read");
        assert!(n > 0, "stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let (status, _) = crate::support::http_post(
        server.addr,
        "/api/publish",
        r#"{"channel":"news","data":{"text":"after half-close"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    while !seen.contains("after half-close") {
        let n = tokio::time::timeout(crate::support::WAIT, stream.read(&mut buf))
            .await
            .expect("publication in time")
            .expect("read");
        assert!(n > 0, "stream ended after the half-close: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Issue 20, defect 3: replies larger than the client queue (1 MiB by default) are not a slow
/// consumer: a recovery of 18 publications of 60 KB arrives whole, and a large `history` is
/// paged (`more`) so the client reads everything; the connection stays up throughout.
#[tokio::test]
async fn issue_20_large_replies_are_not_treated_as_slow_consumers() {
    let server = TestServer::start(|_| {}).await;
    let big = "x".repeat(60_000);
    for i in 0..18 {
        let body = format!(r#"{{"channel":"feed:big","data":{{"i":{i},"pad":"{big}"}}}}"#);
        let (status, answer) = crate::support::http_post(server.addr, "/api/publish", &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (mut ws, _) = connect(&server).await;
    ws.send(Message::text(
        r#"{"id":2,"history":{"channel":"feed:big","limit":0}}"#,
    ))
    .await
    .expect("history");
    let top = next_non_presence(&mut ws).await;
    let epoch = top["history"]["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(top["history"]["offset"], 18, "{top:.200}");

    // Recovery from offset 0: 1.08 MB in one reply, over the 1 MiB queue.
    ws.send(Message::text(format!(
        r#"{{"id":3,"subscribe":{{"channel":"feed:big","recover":true,"offset":0,"epoch":"{epoch}"}}}}"#
    )))
    .await
    .expect("subscribe");
    let reply = next_non_presence(&mut ws).await;
    assert_eq!(reply["id"], 3, "{:.300}", reply.to_string());
    let recovered = reply["subscribe"]["publications"]
        .as_array()
        .expect("publications");
    assert_eq!(recovered.len(), 18);
    assert_eq!(reply["subscribe"]["recovered"], true);

    // History with a huge limit: cut into pages the client follows with `since`.
    let mut seen = Vec::new();
    let mut since = 0;
    for id in 4..20 {
        ws.send(Message::text(format!(
            r#"{{"id":{id},"history":{{"channel":"feed:big","limit":1000000,"since":{{"offset":{since},"epoch":"{epoch}"}}}}}}"#
        )))
        .await
        .expect("history");
        let page = next_non_presence(&mut ws).await;
        assert_eq!(page["id"], id, "{:.300}", page.to_string());
        let publications = page["history"]["publications"].as_array().expect("page");
        assert!(!publications.is_empty());
        assert!(
            page.to_string().len() < 1 << 20,
            "a page stays under the queue size"
        );
        for publication in publications {
            seen.push(publication["data"]["i"].as_u64().expect("i"));
            since = publication["offset"].as_u64().expect("offset");
        }
        if page["history"]["more"] != true {
            break;
        }
    }
    assert_eq!(seen, (0..18).collect::<Vec<_>>());

    // Still connected and served.
    ws.send(Message::text(
        r#"{"id":30,"presence_stats":{"channel":"x"}}"#,
    ))
    .await
    .expect("send");
    assert_eq!(next_non_presence(&mut ws).await["id"], 30);
}

/// Issue 20, the same pass over the admin console: a login posted by another origin is refused
/// before the password is checked, a login body that never finishes is cut at the body deadline,
/// an oversized one is refused, and an action without the session's CSRF token is 403.
#[tokio::test]
async fn issue_20_the_admin_console_refuses_cross_site_slow_and_forged_requests() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(|c| {
        c.server.admin_password = Some("correct horse battery staple".into());
        c.server.body_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let host = server.addr;
    let login = |origin: &str, body: &str| {
        format!(
            "POST /admin/login HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let right = r#"{"password":"correct horse battery staple"}"#;
    let (status, _) = http_request(
        server.addr,
        login("Origin: https://evil.example\r\n", right),
    )
    .await;
    assert_eq!(
        status, 403,
        "a cross-site login is refused even with the right password"
    );
    let big = format!(r#"{{"password":"{}"}}"#, "x".repeat(10_000));
    let (status, _) = http_request(server.addr, login("", &big)).await;
    assert_eq!(status, 413);

    let mut slow = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    slow.write_all(
        format!("POST /admin/login HTTP/1.1\r\nHost: {host}\r\nContent-Length: 40\r\n\r\n{{\"pass")
            .as_bytes(),
    )
    .await
    .expect("write");
    let (answer, closed) = read_until_closed(&mut slow, std::time::Duration::from_secs(5)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    // A forged action: no session, or a session without its CSRF token.
    let publish = r#"{"channel":"news","data":{"x":1}}"#;
    let forged = format!(
        "POST /admin/api/publish HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{publish}",
        publish.len()
    );
    let (status, _) = http_request(server.addr, forged).await;
    assert_eq!(status, 403);
    // The real admin still logs in (the refusals above were not counted as failed passwords).
    let (status, body) = http_request(server.addr, login("", right)).await;
    assert_eq!(status, 200, "{body}");
}
