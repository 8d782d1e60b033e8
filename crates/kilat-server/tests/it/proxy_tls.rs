//! `https://` proxy hooks: a local TLS backend with a certificate from a test CA. Trusted
//! through `proxy.ca_file`, the hook is called; without it (or for another name) the
//! certificate is refused and the client gets the hook's 503, with nothing sent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, close_code, next_json};

/// A test CA and a backend certificate it signed for `names`; the CA's PEM and the backend's
/// rustls server config.
fn pki(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kilat test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (ca_cert.pem(), Arc::new(config))
}

/// An HTTPS backend answering every POST with a connect result for user `tls-user`; counts
/// the requests it read.
async fn backend(config: Arc<rustls::ServerConfig>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Head and body of a small JSON POST.
                loop {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = json!({"result": {"user": "tls-user"}}).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, served)
}

struct CaFile(PathBuf);

impl CaFile {
    fn write(pem: &str) -> CaFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "kilat-hook-ca-{}-{}.pem",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, pem).expect("write CA");
        CaFile(path)
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Connects without a token (so the connect hook decides); returns the first frame and the
/// close code when the connect was refused.
async fn connect(server: &TestServer) -> (serde_json::Value, Option<u16>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("handshake");
    ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .expect("send");
    let reply = next_json(&mut ws).await;
    let closed = if reply["error"].is_object() {
        close_code(&mut ws).await
    } else {
        None
    };
    (reply, closed)
}

#[tokio::test]
async fn an_https_hook_is_called_when_its_certificate_verifies() {
    let (ca, config) = pki(&["localhost"]);
    let (port, served) = backend(config).await;
    let ca = CaFile::write(&ca);
    let path = ca.0.clone();
    let server = TestServer::start(move |c| {
        c.node.dev = false;
        c.proxy.connect_url = Some(format!("https://localhost:{port}/connect"));
        c.proxy.ca_file = Some(path);
    })
    .await;
    let (reply, _) = connect(&server).await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_fails_the_hook_without_sending_anything() {
    // No CA configured: the test CA is unknown.
    let (_, config) = pki(&["localhost"]);
    let (port, served) = backend(config).await;
    let server = TestServer::start(move |c| {
        c.node.dev = false;
        c.proxy.connect_url = Some(format!("https://localhost:{port}/connect"));
    })
    .await;
    let (reply, closed) = connect(&server).await;
    assert_eq!(reply["error"]["code"], 503, "{reply}");
    assert_eq!(
        closed,
        Some(3004),
        "a temporary failure lets the client retry"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );

    // The CA is trusted, but the certificate names another host.
    let (ca, config) = pki(&["hooks.example.com"]);
    let (port, served) = backend(config).await;
    let ca = CaFile::write(&ca);
    let path = ca.0.clone();
    let server = TestServer::start(move |c| {
        c.node.dev = false;
        c.proxy.connect_url = Some(format!("https://localhost:{port}/connect"));
        c.proxy.ca_file = Some(path);
    })
    .await;
    let (reply, _) = connect(&server).await;
    assert_eq!(reply["error"]["code"], 503, "{reply}");
    assert_eq!(served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_bad_ca_file_stops_the_server_with_a_hint() {
    let ca = CaFile::write("not a certificate\n");
    let mut config = kilat_server::Config::default();
    config.proxy.connect_url = Some("https://localhost:1/connect".into());
    config.proxy.ca_file = Some(ca.0.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let outcome = tokio::time::timeout(
        crate::support::WAIT,
        kilat_server::run(listener, config, std::future::pending::<()>()),
    )
    .await
    .expect("start-up fails at once");
    let error = outcome.expect_err("refused");
    assert!(error.to_string().contains("proxy.ca_file"), "{error}");
    assert!(error.to_string().contains("hint"), "{error}");
}
