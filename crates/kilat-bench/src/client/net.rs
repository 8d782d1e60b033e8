//! The network under every load client: the options, TLS, targets, the socket, and reading an
//! HTTP response head.

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
    /// kilat protocol encoding over WebSocket: `msgpack` asks for the `kilat.msgpack`
    /// subprotocol (binary MessagePack frames; the bench transcodes them to JSON to check
    /// them, on its own CPU, not the server's).
    #[arg(long, value_enum, default_value_t = WireEncoding::Json)]
    pub(crate) encoding: WireEncoding,
    /// For wss:// and https:// URLs: trust the CA certificates in this PEM file instead of the
    /// Mozilla roots.
    #[arg(long, value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
    /// For wss:// and https:// URLs: accept any server certificate (self-signed test servers).
    #[arg(long)]
    pub(crate) insecure: bool,
}

/// The kilat protocol encoding of WebSocket connections (docs/protocol.md section 2.1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum WireEncoding {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames (`kilat.msgpack`).
    Msgpack,
}

/// The process-wide client settings: a load generator has one configuration per run, and its
/// worker processes are started with the same flags.
pub(super) struct Settings {
    pub(super) compression: bool,
    pub(super) msgpack: bool,
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
        msgpack: opts.encoding == WireEncoding::Msgpack,
        tls: Arc::new(tls_config(opts.ca.as_deref(), opts.insecure)?),
    };
    let _ = SETTINGS.set(settings);
    Ok(())
}

pub(super) fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        compression: false,
        msgpack: false,
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
pub(super) async fn connect_stream(target: &Target) -> Result<Stream> {
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

/// Reads an HTTP response head; returns it and the bytes that followed it.
pub(super) async fn read_head(stream: &mut Stream) -> Result<(String, Vec<u8>)> {
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
pub(super) fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
