//! CORS on the emulation endpoints for allowed cross-origin pages: preflights, the headers on
//! answers (streams served on the socket and through hyper alike), and none for a refused
//! origin.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, WAIT};

const ALLOWED: &str = "https://app.example.com";
const REFUSED: &str = "https://evil.example.net";

async fn server() -> TestServer {
    TestServer::start(|c| c.server.allowed_origins = vec![ALLOWED.into()]).await
}

/// The value of header `name` in a response head, lower-cased name match.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Reads one response head from `stream`.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
    })
    .await
    .expect("head in time");
    String::from_utf8_lossy(&head).into_owned()
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

async fn preflight(addr: SocketAddr, path: &str, origin: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    read_head(&mut stream).await
}

#[tokio::test]
async fn preflights_answer_allowed_origins_only() {
    let server = server().await;
    for path in [
        "/connection/emulation",
        "/connection/stream",
        "/connection/sse",
    ] {
        let head = preflight(server.addr, path, ALLOWED).await;
        assert_eq!(status(&head), 204, "{path}: {head}");
        assert_eq!(
            header(&head, "access-control-allow-origin"),
            Some(ALLOWED),
            "{head}"
        );
        assert!(header(&head, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
        assert!(
            header(&head, "access-control-allow-headers")
                .is_some_and(|h| h.contains("content-type"))
        );
        assert_eq!(header(&head, "vary"), Some("Origin"));
        let head = preflight(server.addr, path, REFUSED).await;
        assert_eq!(status(&head), 403, "{path}: {head}");
        assert_eq!(header(&head, "access-control-allow-origin"), None, "{head}");
    }
}

fn sse_request(addr: SocketAddr, origin: &str, close: bool) -> String {
    let connect = "%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D";
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "GET /connection/sse?connect={connect} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nAccept: text/event-stream\r\n{connection}\r\n"
    )
}

#[tokio::test]
async fn streams_carry_the_cors_headers_on_the_socket_and_through_hyper() {
    let server = server().await;
    let addr = server.addr;
    // The first request of a connection: served on the socket, head written by hand.
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket
        .write_all(sse_request(addr, ALLOWED, false).as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut socket).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some(ALLOWED),
        "{head}"
    );
    assert_eq!(header(&head, "content-type"), Some("text/event-stream"));
    // A later request of a kept-alive connection: served by hyper.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let health = read_head(&mut kept).await;
    assert_eq!(status(&health), 200);
    let mut body = [0u8; 3];
    kept.read_exact(&mut body).await.expect("health body");
    kept.write_all(sse_request(addr, ALLOWED, false).as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut kept).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some(ALLOWED),
        "{head}"
    );
    // A refused origin: 403 and no CORS header, either way.
    let mut refused = TcpStream::connect(addr).await.expect("connect");
    refused
        .write_all(sse_request(addr, REFUSED, true).as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut refused).await;
    assert_eq!(status(&head), 403, "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn emulation_posts_answer_allowed_origins_with_cors_headers() {
    let server = server().await;
    let addr = server.addr;
    let post = |origin: &str| {
        let body = r#"{"session":"nope","node":"nope","command":{"id":2,"presence":{}}}"#;
        format!(
            "POST /connection/emulation HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(post(ALLOWED).as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    // The session is unknown here; what matters is that the page may read the answer.
    assert_ne!(status(&head), 403, "{head}");
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some(ALLOWED),
        "{head}"
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(post(REFUSED).as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    assert_eq!(status(&head), 403, "{head}");
    assert_eq!(header(&head, "access-control-allow-origin"), None);
}
