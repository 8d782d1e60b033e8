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
        if push.get("join").is_none() && push.get("leave").is_none() {
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
