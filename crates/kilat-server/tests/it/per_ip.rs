//! Connection and handshake limits per client address, over real sockets from different
//! loopback source addresses (127.0.0.0/8), and `X-Forwarded-For` believed only from trusted
//! proxies.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{TestServer, UPGRADE_HEADERS, WAIT};

/// Opens a TCP connection to `server` from source address `from`.
async fn from(from: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let ip: IpAddr = from.parse().expect("ip");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind source");
    socket.connect(server).await.expect("connect")
}

/// Sends `request` from `source`; returns the status and the head, and the stream (kept open
/// by the caller to hold the connection).
async fn request(source: &str, server: SocketAddr, request: String) -> (u16, String, TcpStream) {
    let mut stream = from(source, server).await;
    stream.write_all(request.as_bytes()).await.expect("write");
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
    .expect("response head in time");
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, stream)
}

async fn upgrade(source: &str, server: SocketAddr, extra: &str) -> (u16, String, TcpStream) {
    request(
        source,
        server,
        format!(
            "GET /connection/websocket HTTP/1.1\r\nHost: {server}\r\n{UPGRADE_HEADERS}{extra}\r\n"
        ),
    )
    .await
}

async fn sse(source: &str, server: SocketAddr) -> (u16, String, TcpStream) {
    let connect = "%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D";
    request(
        source,
        server,
        format!("GET /connection/sse?connect={connect} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn connections_per_address_are_limited_and_freed_when_one_closes() {
    let server = TestServer::start(|c| c.server.max_connections_per_ip = 2).await;
    let addr = server.addr;
    let (s1, _, first) = upgrade("127.0.0.2", addr, "").await;
    let (s2, _, _second) = upgrade("127.0.0.2", addr, "").await;
    assert_eq!((s1, s2), (101, 101));
    let (status, head, _) = upgrade("127.0.0.2", addr, "").await;
    assert_eq!(status, 429, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    // SSE counts against the same address.
    let (status, head, _) = sse("127.0.0.2", addr).await;
    assert_eq!(status, 429, "{head}");
    // Another address is not affected.
    let (status, _, _other) = upgrade("127.0.0.3", addr, "").await;
    assert_eq!(status, 101);
    let (status, _, _stream) = sse("127.0.0.3", addr).await;
    assert_eq!(status, 200);
    // Closing one frees its slot once its connection task has ended.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _, stream) = upgrade("127.0.0.2", addr, "").await;
        if status == 101 {
            drop(stream);
            break;
        }
        assert_eq!(status, 429);
        assert!(
            Instant::now() < deadline,
            "the closed connection's slot never came back"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn handshakes_per_address_are_rate_limited() {
    let server = TestServer::start(|c| {
        c.server.handshake_rate_per_ip = 1;
        c.server.handshake_burst_per_ip = 3;
    })
    .await;
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (status, _, stream) = upgrade("127.0.0.4", addr, "").await;
        assert_eq!(status, 101);
        held.push(stream);
    }
    let started = Instant::now();
    let (status, head, _) = sse("127.0.0.4", addr).await;
    // Refused unless a whole second passed since the burst began (then a token came back).
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(status, 429, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
    }
    let (status, _, _) = upgrade("127.0.0.5", addr, "").await;
    assert_eq!(status, 101, "another address has its own budget");
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let server = TestServer::start(|c| {
        c.server.max_connections_per_ip = 1;
        c.server.trusted_proxies = vec!["127.0.0.6".into(), "10.0.0.0/8".into()];
    })
    .await;
    let addr = server.addr;
    let xff = |value: &str| format!("X-Forwarded-For: {value}\r\n");
    // Behind the trusted proxy, each client has its own limit, taken from the right-most
    // untrusted address (the left-most one is whatever the client wrote).
    let (status, _, _a) = upgrade("127.0.0.6", addr, &xff("6.6.6.6, 9.9.9.9, 10.1.2.3")).await;
    assert_eq!(status, 101);
    let (status, head, _) = upgrade("127.0.0.6", addr, &xff("1.1.1.1, 9.9.9.9")).await;
    assert_eq!(
        status, 429,
        "9.9.9.9 already holds its one connection: {head}"
    );
    let (status, _, _b) = upgrade("127.0.0.6", addr, &xff("9.9.9.9, 8.8.8.8")).await;
    assert_eq!(status, 101, "8.8.8.8 is another client");
    // From an untrusted peer the header is ignored: the peer address is the client.
    let (status, _, _c) = upgrade("127.0.0.7", addr, &xff("7.7.7.7")).await;
    assert_eq!(status, 101);
    let (status, head, _) = upgrade("127.0.0.7", addr, &xff("5.5.5.5")).await;
    assert_eq!(
        status, 429,
        "a spoofed header does not buy another slot: {head}"
    );
}

#[tokio::test]
async fn a_bad_trusted_proxy_entry_stops_the_server_with_a_hint() {
    let mut config = kilat_server::Config::default();
    config.server.trusted_proxies = vec!["10.0.0.0/99".into()];
    let error = config.check().expect_err("refused");
    assert!(
        error.to_string().contains("server.trusted_proxies"),
        "{error}"
    );
}
