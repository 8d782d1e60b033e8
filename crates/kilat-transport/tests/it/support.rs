//! Shared helpers: an echo server on a free port and a raw WebSocket client.

use std::net::SocketAddr;
use std::time::Duration;

use kilat_transport::ws::{WsConfig, echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A running echo server; stops when dropped.
pub(crate) struct EchoServer {
    pub(crate) addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub(crate) async fn start_echo(config: WsConfig) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(echo::serve(listener, config, async move {
        let _ = stopped.await;
    }));
    EchoServer { addr, _stop: stop }
}

/// Sends an upgrade request with `extra` header lines; returns the socket and the response head.
pub(crate) async fn raw_upgrade(addr: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).expect("ascii head"))
}

/// Encodes one masked client frame.
pub(crate) fn client_frame(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads one unmasked server frame: (first byte, payload).
pub(crate) async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let read = async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.expect("frame head");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                stream.read_exact(&mut b).await.expect("len16");
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                stream.read_exact(&mut b).await.expect("len64");
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).await.expect("payload");
        (head[0], payload)
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("frame within 5 s")
}

/// Reads a close frame and returns its code.
pub(crate) async fn read_close_code(stream: &mut TcpStream) -> u16 {
    let (b0, payload) = read_frame(stream).await;
    assert_eq!(b0, 0x88, "expected a close frame, got {b0:#x} {payload:?}");
    assert!(payload.len() >= 2, "close without code");
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Waits until the server closes the TCP connection (EOF or reset).
pub(crate) async fn expect_eof(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    let eof = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), eof)
        .await
        .expect("server closes the socket");
}

pub(crate) fn big_echo_config() -> WsConfig {
    WsConfig {
        max_message_size: 1 << 20,
        ..WsConfig::default()
    }
}
