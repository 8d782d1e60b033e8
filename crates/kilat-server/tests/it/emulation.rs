use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::{TestServer, WAIT, connect, next_json};

/// An open emulated stream (SSE or NDJSON) read frame by frame.
pub(crate) struct Stream {
    body: Incoming,
    buffer: Vec<u8>,
    sse: bool,
    /// The response headers.
    pub(crate) headers: hyper::HeaderMap,
}

impl Stream {
    pub(crate) async fn open(addr: SocketAddr, sse: bool, connect: &str) -> (u16, Stream) {
        Self::open_on(addr, sse, connect, false).await
    }

    /// Opens the stream on a new connection; with `second`, as the second request on it (after
    /// a `GET /health`), which the server serves through hyper rather than on the socket.
    pub(crate) async fn open_on(
        addr: SocketAddr,
        sse: bool,
        connect: &str,
        second: bool,
    ) -> (u16, Stream) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        if second {
            let health = hyper::Request::get("/health")
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))
                .expect("request");
            let response = sender.send_request(health).await.expect("health");
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.expect("health body");
            sender.ready().await.expect("connection kept alive");
        }
        let request = if sse {
            let query: String = url_encode(connect);
            hyper::Request::get(format!("/connection/sse?connect={query}"))
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))
        } else {
            hyper::Request::post("/connection/stream")
                .header("host", addr.to_string())
                .body(Full::new(Bytes::from(connect.to_owned())))
        }
        .expect("request");
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .expect("response in time")
            .expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            Stream {
                body: response.into_body(),
                buffer: Vec::new(),
                sse,
                headers,
            },
        )
    }

    /// The next frame that is not a ping.
    pub(crate) async fn next(&mut self) -> serde_json::Value {
        loop {
            let separator: &[u8] = if self.sse { b"\n\n" } else { b"\n" };
            if let Some(end) = self
                .buffer
                .windows(separator.len())
                .position(|w| w == separator)
            {
                let chunk: Vec<u8> = self.buffer.drain(..end + separator.len()).collect();
                let text = String::from_utf8(chunk).expect("utf-8 stream");
                let payload = if self.sse {
                    text.lines()
                        .filter_map(|l| l.strip_prefix("data: "))
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    text.trim_end().to_owned()
                };
                if payload == "{}" || payload.is_empty() {
                    continue;
                }
                return serde_json::from_str(&payload).expect("frame is JSON");
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("stream frame in time")
                .expect("stream still open")
                .expect("body frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

impl Stream {
    /// Whether the body ends (cleanly, or with the connection closing) with nothing more.
    pub(crate) async fn ended(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        match tokio::time::timeout(WAIT, self.body.frame()).await {
            Ok(None) => true,
            Ok(Some(Ok(frame))) => frame.into_data().is_ok_and(|data| data.is_empty()),
            Ok(Some(Err(_))) => true,
            Err(_) => false,
        }
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Posts to `/connection/emulation`; returns the HTTP status.
pub(crate) async fn post_emulation(addr: SocketAddr, body: String) -> u16 {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let request = hyper::Request::post("/connection/emulation")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    response.status().as_u16()
}

/// Connects over an emulated stream, subscribes through the emulation endpoint, and checks that
/// a publication from a WebSocket client arrives on the stream. Returns the stream's response
/// headers.
async fn round_trip(sse: bool, second: bool) -> hyper::HeaderMap {
    let server = TestServer::start(|_| {}).await;
    let (status, mut stream) =
        Stream::open_on(server.addr, sse, r#"{"id":1,"connect":{}}"#, second).await;
    assert_eq!(status, 200);
    let connected = stream.next().await;
    let session = connected["connect"]["session"]
        .as_str()
        .expect("session in connect result")
        .to_owned();
    let node = connected["connect"]["node"]
        .as_str()
        .expect("node in connect result")
        .to_owned();
    let post = |command: &str| {
        serde_json::json!({"session": session, "node": node, "command": serde_json::from_str::<serde_json::Value>(command).expect("json")})
            .to_string()
    };
    assert_eq!(
        post_emulation(
            server.addr,
            post(r#"{"id":2,"subscribe":{"channel":"news"}}"#)
        )
        .await,
        204
    );
    let subscribed = stream.next().await;
    assert_eq!(subscribed["id"], 2, "{subscribed}");
    assert!(subscribed["subscribe"].is_object(), "{subscribed}");

    let (mut ws, _) = connect(&server).await;
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"id":2,"publish":{"channel":"news","data":{"headline":"kilat"}}}"#,
    ))
    .await
    .expect("publish");
    let reply = next_json(&mut ws).await;
    assert!(reply.get("error").is_none(), "{reply}");
    // Join diffs (dev mode has join/leave on) may come first; the publication must follow.
    let push = loop {
        let frame = stream.next().await;
        if frame["push"].get("join").is_none() && frame["push"].get("presence_diff").is_none() {
            break frame;
        }
    };
    assert_eq!(push["push"]["channel"], "news", "{push}");
    assert_eq!(push["push"]["pub"]["data"]["headline"], "kilat", "{push}");
    stream.headers
}

#[tokio::test]
async fn sse_connects_subscribes_and_receives_publications() {
    // The first request of a connection: served on the socket, delimited by the close.
    let headers = round_trip(true, false).await;
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["connection"], "close");
    assert!(headers.get("transfer-encoding").is_none(), "{headers:?}");
}

#[tokio::test]
async fn sse_as_a_later_request_of_a_connection_works_the_same_through_hyper() {
    let headers = round_trip(true, true).await;
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn http_stream_connects_subscribes_and_receives_publications() {
    // Like SSE: the first request of a connection is served on the socket.
    let headers = round_trip(false, false).await;
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(headers["connection"], "close");
    assert!(headers.get("transfer-encoding").is_none(), "{headers:?}");
}

#[tokio::test]
async fn http_stream_as_a_later_request_of_a_connection_works_the_same_through_hyper() {
    let headers = round_trip(false, true).await;
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(headers["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn an_sse_stream_served_on_the_socket_ends_with_the_disconnect_then_the_close() {
    let server = TestServer::start(|_| {}).await;
    // A token that does not verify: the connect is refused on the stream itself.
    let (status, mut stream) =
        Stream::open(server.addr, true, r#"{"id":1,"connect":{"token":"x.y.z"}}"#).await;
    assert_eq!(status, 200);
    let reply = stream.next().await;
    assert!(reply["error"].is_object(), "{reply}");
    let disconnect = stream.next().await;
    assert!(
        disconnect["push"]["disconnect"]["code"].is_u64(),
        "{disconnect}"
    );
    assert!(
        stream.ended().await,
        "the stream goes on after its disconnect"
    );
}

#[tokio::test]
async fn emulation_rejects_unknown_sessions_and_bad_bodies() {
    let server = TestServer::start(|_| {}).await;
    let unknown =
        r#"{"session":"nope","node":"nope","command":{"id":1,"presence":{"channel":"x"}}}"#;
    assert_eq!(post_emulation(server.addr, unknown.to_owned()).await, 404);
    assert_eq!(
        post_emulation(server.addr, "not json".to_owned()).await,
        400
    );
}

#[tokio::test]
async fn sse_without_connect_is_400() {
    let server = TestServer::start(|_| {}).await;
    let (status, _) = crate::support::http_get(server.addr, "/connection/sse").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn stream_requests_refused_on_the_socket_or_too_large_for_it_get_http_errors() {
    let server =
        TestServer::start(|c| c.server.allowed_origins = vec!["https://ok.test".into()]).await;
    // Refused by the server's own checks on the socket path: a plain HTTP answer, then close.
    let (status, body) = crate::support::http_get_with(
        server.addr,
        "/connection/sse?connect=%7B%7D",
        "Origin: https://evil.test\r\n",
    )
    .await;
    assert_eq!((status, body.trim()), (403, "origin not allowed"));
    // Over the endpoint's 64 KiB: left to hyper, which refuses the body with 413.
    let big = format!(
        r#"{{"id":1,"connect":{{"data":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    let (status, _) = crate::support::http_post(server.addr, "/connection/stream", &big).await;
    assert_eq!(status, 413);
}
