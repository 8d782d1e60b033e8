use std::sync::Arc;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, UPGRADE_HEADERS, next_json, raw_upgrade};

/// A self-signed certificate for `localhost`, written to a fresh directory.
fn certificate() -> (tempfile_dir::Dir, rcgen::CertifiedKey<rcgen::KeyPair>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let dir = tempfile_dir::Dir::new();
    std::fs::write(dir.path("cert.pem"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.path("key.pem"), cert.signing_key.serialize_pem()).expect("write key");
    (dir, cert)
}

/// A server with TLS on a generated certificate, and a TLS connection to it that trusts it
/// (no ALPN offered, so HTTP/1.1).
async fn tls_server_and_connection() -> (
    TestServer,
    tempfile_dir::Dir,
    tokio_rustls::client::TlsStream<TcpStream>,
) {
    let (dir, cert) = certificate();
    let server = TestServer::start(|c| {
        c.server.tls_cert = Some(dir.path("cert.pem"));
        c.server.tls_key = Some(dir.path("key.pem"));
    })
    .await;
    let mut roots = RootCertStore::empty();
    roots
        .add(cert.cert.der().clone())
        .expect("trust the test certificate");
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    (server, dir, tls)
}

#[tokio::test]
async fn wss_end_to_end_with_a_generated_certificate() {
    let (server, _dir, tls) = tls_server_and_connection().await;
    let url = format!(
        "wss://localhost:{}/connection/websocket",
        server.addr.port()
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket over TLS");
    ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .expect("send");
    let reply = next_json(&mut ws).await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");
}

#[tokio::test]
async fn sse_over_tls_streams_from_the_socket() {
    let (_server, _dir, mut tls) = tls_server_and_connection().await;
    tls.write_all(
        b"GET /connection/sse?connect=%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D HTTP/1.1\r\n\
          Host: localhost\r\n\r\n",
    )
    .await
    .expect("write");
    // Read until the first event (the connect result) is complete.
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\n\n") {
        let n = tokio::time::timeout(crate::support::WAIT, tls.read(&mut buf))
            .await
            .expect("the stream answers in time")
            .expect("read");
        assert!(
            n > 0,
            "closed early: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let event: serde_json::Value =
        serde_json::from_str(body.trim_end().strip_prefix("data: ").expect("a data line"))
            .expect("JSON event");
    assert!(event["connect"]["client"].is_string(), "{event}");
}

#[tokio::test]
async fn origins_allowed_refused_and_missing() {
    let server =
        TestServer::start(|c| c.server.allowed_origins = vec!["https://*.example.com".into()])
            .await;
    let with_origin = |origin: &str| format!("{UPGRADE_HEADERS}Origin: {origin}\r\n");
    assert_eq!(
        raw_upgrade(server.addr, &with_origin("https://app.example.com"))
            .await
            .0,
        101
    );
    assert_eq!(
        raw_upgrade(server.addr, &with_origin("https://evil.example.net"))
            .await
            .0,
        403
    );
    assert_eq!(
        raw_upgrade(server.addr, UPGRADE_HEADERS).await.0,
        101,
        "no Origin: not a browser"
    );
    let (status, _) = crate::support::http_get_with(
        server.addr,
        "/connection/sse?connect=%7B%7D",
        "Origin: https://evil.example.net\r\n",
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn same_origin_is_the_default() {
    let server = TestServer::start(|_| {}).await;
    let same = format!("{UPGRADE_HEADERS}Origin: http://{}\r\n", server.addr);
    assert_eq!(raw_upgrade(server.addr, &same).await.0, 101);
    let other = format!("{UPGRADE_HEADERS}Origin: http://attacker.test\r\n");
    assert_eq!(raw_upgrade(server.addr, &other).await.0, 403);
}

#[tokio::test]
async fn half_open_handshakes_are_dropped_after_the_timeout() {
    let server =
        TestServer::start(|c| c.server.handshake_timeout = std::time::Duration::from_millis(300))
            .await;
    // Send half a request head and go silent: the server must hang up by itself.
    let mut stream = TcpStream::connect(server.addr).await.expect("tcp");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n",
    )
    .await
    .expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(
        crate::support::WAIT,
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("server closes the half-open connection within the wait");
    // Either a 408 answer or a plain close; the socket must not stay open.
    let n = n.unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");

    // The same for half an event-stream request, which the server reads itself.
    let mut stream = TcpStream::connect(server.addr).await.expect("tcp");
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /connection/sse?connect=%7B")
        .await
        .expect("write");
    let n = tokio::time::timeout(
        crate::support::WAIT,
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .expect("server closes the half-open stream request within the wait");
    assert_eq!(n.unwrap_or(0), 0, "closed without an answer");
}

/// A temporary directory removed on drop (no extra crate needed for two files).
mod tempfile_dir {
    use std::path::PathBuf;

    pub(crate) struct Dir(PathBuf);

    impl Dir {
        pub(crate) fn new() -> Dir {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("kilat-tls-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Dir(path)
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
