use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kilat_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for any single wait in these tests; a hang fails instead of blocking CI.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A server running on a free loopback port.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), kilat_server::ServerError>>>,
}

impl TestServer {
    /// Starts a server in dev mode with `adjust` applied to the configuration.
    pub(crate) async fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.node.dev = true;
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kilat_server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Triggers graceful shutdown; returns the server task to await.
    pub(crate) fn begin_shutdown(&mut self) -> JoinHandle<Result<(), kilat_server::ServerError>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("server already stopped")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket with tungstenite and sends `connect`; returns the client and the reply.
pub(crate) async fn connect(server: &TestServer) -> (Client, serde_json::Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("websocket handshake");
    ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .expect("send connect");
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 1, "connect reply: {reply}");
    assert!(
        reply["connect"]["client"].is_string(),
        "connect reply: {reply}"
    );
    (ws, reply)
}

/// The next JSON frame from the server that is not a ping (`{}`).
pub(crate) async fn next_json<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("websocket error");
        if let Message::Text(text) = message {
            for line in text.as_str().split('\n') {
                if line != "{}" {
                    return serde_json::from_str(line).expect("server sends JSON");
                }
            }
        }
    }
}

/// The next frame that is neither a ping nor a join/leave push (single or `presence_diff`).
pub(crate) async fn next_non_presence(ws: &mut Client) -> serde_json::Value {
    loop {
        let frame = next_json(ws).await;
        let push = &frame["push"];
        if push.get("join").is_none()
            && push.get("leave").is_none()
            && push.get("presence_diff").is_none()
        {
            return frame;
        }
    }
}

/// Waits for the close frame and returns its code.
pub(crate) async fn close_code(ws: &mut Client) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// A WebSocket opened by hand, for sending frames no well-behaved client library would send.
pub(crate) struct RawClient {
    pub(crate) stream: TcpStream,
}

impl RawClient {
    /// Performs a plain opening handshake; panics unless the answer is 101.
    pub(crate) async fn open(addr: SocketAddr) -> RawClient {
        let (status, _, stream) = raw_upgrade(addr, UPGRADE_HEADERS).await;
        assert_eq!(status, 101, "upgrade refused");
        RawClient { stream }
    }

    /// Sends one frame, masked unless `masked` is false.
    pub(crate) async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let frame = encode_client_frame(fin, opcode, payload, masked);
        self.stream.write_all(&frame).await.expect("write frame");
    }

    /// Reads frames until a close frame arrives and returns its status code.
    pub(crate) async fn read_close_code(&mut self) -> Option<u16> {
        let mut buf = Vec::new();
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some((opcode, payload, used)) = parse_server_frame(&buf) {
                    buf.drain(..used);
                    if opcode == 0x8 {
                        return (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    }
                    continue;
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("timed out waiting for a close frame")
    }
}

/// Sends an upgrade request with exactly `headers` (CRLF-terminated lines); returns the status
/// code, the response head and the stream.
pub(crate) async fn raw_upgrade(addr: SocketAddr, headers: &str) -> (u16, String, TcpStream) {
    let request = format!("GET /connection/websocket HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut head = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read response");
            assert!(
                n > 0,
                "connection closed before the response head ended: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
    })
    .await
    .expect("timed out reading the response head");
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head, stream)
}

/// The standard headers of a valid upgrade request, for tests that change one of them.
pub(crate) const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

fn encode_client_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Encodes only a frame header announcing `len` payload bytes (masked), for size-limit tests.
pub(crate) fn client_frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    Some((opcode, buf[start..start + len].to_vec(), start + len))
}

/// Sends a plain HTTP GET and returns the status and body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, "").await
}

/// Sends a plain HTTP GET with `extra` header lines and returns the status and body.
pub(crate) async fn http_get_with(addr: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    http_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

/// Sends a plain HTTP POST with a JSON body and returns the status and body.
pub(crate) async fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_request(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// Writes `request` on a new connection and reads the whole answer (`Connection: close`).
pub(crate) async fn http_request(addr: SocketAddr, request: String) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("timed out reading response")
        .expect("read response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `/metrics` until the server reports `open` connections, or fails after `within`.
pub(crate) async fn wait_for_connections(server: &TestServer, open: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let needle = format!("\nkilat_connections {open}\n");
    loop {
        let (_, body) = http_get(server.addr, "/metrics").await;
        if body.contains(&needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {open} connections: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
