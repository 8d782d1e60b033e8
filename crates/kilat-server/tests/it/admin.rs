use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, connect, http_get, next_json};

/// Reads one line into `line` (cleared first), bounded in time.
async fn read_line(tail: &mut BufReader<TcpStream>, line: &mut String) {
    line.clear();
    tokio::time::timeout(Duration::from_secs(5), tail.read_line(line))
        .await
        .expect("a line in time")
        .expect("read");
}

/// One HTTP/1.1 request; the status, the headers and the body.
async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        server.addr,
        body.len()
    );
    stream.write_all(text.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw),
    )
    .await
    .expect("answer in time")
    .expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

async fn login(server: &TestServer, password: &str) -> (String, String) {
    let (status, head, body) = request(
        server,
        "POST",
        "/admin/login",
        "",
        &format!(r#"{{"password":"{password}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{head}\n{body}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let csrf: serde_json::Value = serde_json::from_str(&body).expect("json");
    (session, csrf["csrf"].as_str().expect("csrf").to_owned())
}

#[tokio::test]
async fn the_console_is_off_without_a_password() {
    let server = TestServer::start(|config| config.node.dev = false).await;
    let (status, body) = http_get(server.addr, "/admin").await;
    assert_eq!(status, 404);
    assert!(body.contains("admin_password"), "a hint: {body}");
    let (status, ..) = request(&server, "POST", "/admin/login", "", r#"{"password":""}"#).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn actions_need_the_session_and_its_csrf_token() {
    let server =
        TestServer::start(|config| config.server.admin_password = Some("pw-1".into())).await;
    let (status, ..) = request(&server, "POST", "/admin/login", "", r#"{"password":"x"}"#).await;
    assert_eq!(status, 401);
    let (session, csrf) = login(&server, "pw-1").await;
    let cookie = format!("Cookie: {session}\r\n");
    // No token, a wrong token, a token without the cookie: refused.
    for headers in [
        cookie.clone(),
        format!("{cookie}X-CSRF-Token: wrong\r\n"),
        format!("X-CSRF-Token: {csrf}\r\n"),
    ] {
        let (status, ..) = request(&server, "POST", "/admin/api/info", &headers, "{}").await;
        assert_eq!(status, 403, "{headers}");
    }
    let headers = format!("{cookie}X-CSRF-Token: {csrf}\r\n");
    let (status, _, body) = request(&server, "POST", "/admin/api/info", &headers, "{}").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""engine":"memory""#), "{body}");
    // The configuration it shows hides the password.
    let (_, _, body) = request(&server, "POST", "/admin/api/config", &headers, "{}").await;
    assert!(body.contains(r#""admin_password":"***""#), "{body}");
    assert!(!body.contains("pw-1"), "{body}");
    // Logged out, the same cookie and token do nothing.
    let (status, ..) = request(&server, "POST", "/admin/logout", &headers, "").await;
    assert_eq!(status, 200);
    let (status, ..) = request(&server, "POST", "/admin/api/info", &headers, "{}").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_live_tail_streams_a_channels_publications_and_the_console_disconnects_a_client() {
    let server =
        TestServer::start(|config| config.server.admin_password = Some("pw-2".into())).await;
    let (session, csrf) = login(&server, "pw-2").await;

    // The tail, read as a browser's EventSource would.
    let mut tail = TcpStream::connect(server.addr).await.expect("connect");
    tail.write_all(
        format!("GET /admin/tail?channel=news HTTP/1.1\r\nHost: x\r\nCookie: {session}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut tail = BufReader::new(tail);
    let mut line = String::new();
    read_line(&mut tail, &mut line).await;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    // Skip to the opening comment: the watch is in place once it arrived.
    loop {
        read_line(&mut tail, &mut line).await;
        if line.contains(": watching") {
            break;
        }
    }

    let (mut client, reply) = connect(&server).await;
    let client_id = reply["connect"]["client"].as_str().expect("id").to_owned();
    client
        .send(Message::text(
            r#"{"id":2,"publish":{"channel":"news","data":{"headline":"tailed"}}}"#,
        ))
        .await
        .expect("publish");
    assert_eq!(next_json(&mut client).await["id"], 2);
    loop {
        read_line(&mut tail, &mut line).await;
        if line.starts_with("data: ") {
            break;
        }
    }
    let frame: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("data: ").trim()).expect("a push frame");
    assert_eq!(frame["push"]["channel"], "news");
    assert_eq!(frame["push"]["pub"]["data"]["headline"], "tailed");

    // The page goes away: the tail's next writes fail and its watch leaves the hub.
    drop(tail);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for id in 3.. {
        client
            .send(Message::text(format!(
                r#"{{"id":{id},"publish":{{"channel":"news","data":{{}}}}}}"#
            )))
            .await
            .expect("publish");
        assert_eq!(next_json(&mut client).await["id"], id);
        let (_, metrics) = http_get(server.addr, "/metrics").await;
        if metrics.contains("\nkilat_sessions 1\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed tail still watches: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The console finds the client and disconnects it with a code and a reason.
    let headers = format!("Cookie: {session}\r\nX-CSRF-Token: {csrf}\r\n");
    let (_, _, body) = request(
        &server,
        "POST",
        "/admin/api/connections",
        &headers,
        &format!(r#"{{"search":"{}"}}"#, &client_id[..8]),
    )
    .await;
    let found: serde_json::Value = serde_json::from_str(&body).expect("json");
    let list = found["result"]["connections"].as_array().expect("list");
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["transport"], "websocket");
    let (_, _, body) = request(
        &server,
        "POST",
        "/admin/api/disconnect",
        &headers,
        &format!(r#"{{"user":"","client":"{client_id}","code":4001,"reason":"go away"}}"#),
    )
    .await;
    assert!(body.contains(r#""connections":1"#), "{body}");
    assert_eq!(crate::support::close_code(&mut client).await, Some(4001));
}
