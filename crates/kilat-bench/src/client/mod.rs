//! The load clients: deliberately small, one socket per connection and a read buffer that is
//! empty (no capacity) while the connection is idle, so one process can hold tens of thousands
//! of connections. Hand-written rather than a WebSocket crate: the bench needs to hold tens of
//! thousands of connections with no per-connection buffers and to parse every delivery cheaply.
//!
//! - this file: options, TLS, targets, the socket, and [`Conn`]'s transport-neutral reading.
//! - `ws.rs`: WebSocket (optionally with permessage-deflate), framed with kilat-transport's
//!   codec.
//! - `sse.rs`: kilat's SSE transport, commands POSTed to the emulation endpoint.
//! - `http.rs`: a minimal HTTP/1.1 keep-alive client for publishing through an HTTP API.

mod http;
mod sse;
mod ws;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

pub(crate) use http::HttpConn;
pub(crate) use kilat_transport::ws::frame::{OP_BINARY, OP_TEXT};
use sse::Sse;
pub(crate) use sse::open_sse;
pub(crate) use ws::{encode_text, open};

/// How the bench's connections reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub(crate) enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events (kilat's `/connection/sse`; pings answered through
    /// `/connection/emulation`). Publishers still use WebSocket or the HTTP API.
    Sse,
}

/// Client options shared by every scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientOpts {
    /// How clients connect: WebSocket, or Server-Sent Events (kilat only; in `fanout` this is
    /// the subscribers' transport, publishers stay on WebSocket or `--publish-via http`).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub(crate) transport: Transport,
    /// Offer permessage-deflate (RFC 7692) in the WebSocket handshake; compressed server
    /// messages are inflated before they are checked.
    #[arg(long)]
    pub(crate) compression: bool,
    /// For wss:// and https:// URLs: trust the CA certificates in this PEM file instead of the
    /// Mozilla roots.
    #[arg(long, value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
    /// For wss:// and https:// URLs: accept any server certificate (self-signed test servers).
    #[arg(long)]
    pub(crate) insecure: bool,
}

/// The process-wide client settings: a load generator has one configuration per run, and its
/// worker processes are started with the same flags.
struct Settings {
    compression: bool,
    tls: Arc<rustls::ClientConfig>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Applies `opts` for every connection this process opens (call once, before connecting).
///
/// # Errors
/// When the `--ca` file cannot be read or holds no certificate.
pub(crate) fn configure(opts: &ClientOpts) -> Result<()> {
    let settings = Settings {
        compression: opts.compression,
        tls: Arc::new(tls_config(opts.ca.as_deref(), opts.insecure)?),
    };
    let _ = SETTINGS.set(settings);
    Ok(())
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        compression: false,
        tls: Arc::new(tls_config(None, false).expect("the built-in roots always load")),
    })
}

fn tls_config(ca: Option<&std::path::Path>, insecure: bool) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("reading --ca {}", path.display()))?
                {
                    roots
                        .add(cert.with_context(|| format!("bad PEM in {}", path.display()))?)
                        .with_context(|| format!("bad certificate in {}", path.display()))?;
                }
                if roots.is_empty() {
                    bail!("--ca {} holds no certificate", path.display());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
}

/// `--insecure`: any certificate is accepted, signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where to connect: host:port, path and whether through TLS, parsed from a `ws://`, `wss://`,
/// `http://` or `https://` URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: String,
    pub(crate) path: String,
    pub(crate) tls: bool,
}

impl Target {
    /// Parses `ws://host:port/path` (`wss://`, and `http://`/`https://` for HTTP requests).
    pub(crate) fn parse(url: &str) -> Result<Target> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            bail!("{url}: the bench client supports ws://, wss://, http:// and https:// URLs");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if tls { 443 } else { 80 };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty());
        let addr = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        Ok(Target {
            addr,
            path: path.to_owned(),
            tls,
        })
    }

    /// The host without the port (for SNI).
    fn host(&self) -> &str {
        let host = self.addr.rsplit_once(':').map_or(&*self.addr, |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// A TCP connection, through TLS or not.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to `target`, with TLS when its URL asked for it.
async fn connect_stream(target: &Target) -> Result<Stream> {
    let tcp = TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    if !target.tls {
        return Ok(Stream::Plain(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(target.host().to_owned())
        .with_context(|| format!("{} is not a valid TLS server name", target.host()))?;
    let tls = tokio_rustls::TlsConnector::from(settings().tls.clone())
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {}", target.addr))?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// Largest server message the bench client accepts (also after inflating).
const MAX_FRAME: u64 = 16 << 20;

/// One client connection (a WebSocket, or an SSE stream) with an incremental, cancel-safe
/// message reader.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Stream,
    /// Bytes read but not yet returned as messages.
    buf: Vec<u8>,
    /// Bytes of the message returned last (consumed at the next read): of `buf` for a
    /// WebSocket, of the SSE body for SSE.
    consumed: usize,
    /// permessage-deflate was negotiated: compressed messages are inflated into `scratch`.
    inflate: bool,
    /// Compressed messages received (to show that compression was really in use).
    pub(crate) compressed: u64,
    /// The message returned last when it is not a slice of `buf` (inflated, or an SSE event).
    scratch: Vec<u8>,
    /// Set for an SSE connection.
    sse: Option<Box<Sse>>,
}

/// Reads an HTTP response head; returns it and the bytes that followed it.
async fn read_head(stream: &mut Stream) -> Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 8192 {
            bail!("response head longer than 8 KiB");
        }
        buf.reserve(1024);
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            bail!("server closed during the handshake");
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    Ok((head, buf[end..].to_vec()))
}

/// The value of header `name` (lower case) in a response head.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Conn {
    /// Sends one text message: a masked text frame, or for SSE a command POSTed to the
    /// emulation endpoint for this session.
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        if self.sse.is_some() {
            return self.post_command(text).await;
        }
        self.send_frame(text).await
    }

    /// Reads the next complete data message and returns its opcode and payload (inflated when
    /// it was compressed), answering ping frames with pongs on the way. For SSE, the next event
    /// as a text message. Cancel-safe: bytes read before a cancellation stay buffered.
    pub(crate) async fn next(&mut self) -> Result<(u8, &[u8])> {
        if self.sse.is_some() {
            return self.next_event().await;
        }
        self.next_message().await
    }

    /// Reads more bytes from the socket into `buf`.
    async fn fill(&mut self) -> Result<()> {
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(4096);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("server closed the TCP connection");
        }
        Ok(())
    }

    /// Reads the next text message (skipping others) and returns an owned copy.
    pub(crate) async fn read_text(&mut self) -> Result<Vec<u8>> {
        loop {
            let (op, payload) = self.next().await?;
            if op == OP_TEXT {
                return Ok(payload.to_vec());
            }
        }
    }

    /// Gives back the read buffers' memory (between phases of an idle connection).
    pub(crate) fn shrink(&mut self) {
        if let Some(sse) = self.sse.as_mut() {
            if self.consumed > 0 {
                sse.body.drain(..self.consumed);
                self.consumed = 0;
            }
            sse.body.shrink_to_fit();
        } else if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.shrink_to_fit();
        self.scratch = Vec::new();
    }
}
