//! A deliberately small client for load generation: one socket per connection and a read
//! buffer that is empty (no capacity) while the connection is idle, so one process can hold tens
//! of thousands of connections. Speaks WebSocket (optionally with permessage-deflate and TLS) and
//! kilat's SSE transport, plus a minimal HTTP/1.1 keep-alive client for publishing through a
//! server's HTTP API. Hand-written rather than a WebSocket crate: the bench needs to hold tens of
//! thousands of connections with no per-connection buffers and to parse every delivery cheaply.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// The state of an SSE connection.
#[derive(Debug)]
struct Sse {
    /// The response body is chunked (`Transfer-Encoding: chunked`).
    chunked: bool,
    /// Bytes of chunk data still to come in the current chunk.
    chunk_left: usize,
    /// A chunk's trailing CRLF is still to be skipped.
    chunk_crlf: bool,
    /// The de-chunked response body not yet returned as events.
    body: Vec<u8>,
    /// Where commands go (the emulation endpoint), and the session they are for.
    emulation: Target,
    session: String,
    node: String,
    http: Option<HttpConn>,
}

/// WebSocket opcodes the bench cares about.
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;

/// Opens a WebSocket and completes the opening handshake (offering permessage-deflate when
/// `--compression` was given).
pub(crate) async fn open(target: &Target, timeout: Duration) -> Result<Conn> {
    tokio::time::timeout(timeout, async {
        let mut stream = connect_stream(target).await?;
        let extension = if settings().compression {
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2lsYXQtYmVuY2gta2V5IQ==\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n",
            target.path, target.addr
        );
        stream.write_all(request.as_bytes()).await?;
        let (head, rest) = read_head(&mut stream).await?;
        if !head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {}", head.lines().next().unwrap_or_default());
        }
        let inflate = header(&head, "sec-websocket-extensions")
            .is_some_and(|v| v.contains("permessage-deflate"));
        // Whatever follows the head (a server that speaks first) stays buffered.
        Ok(Conn {
            stream,
            buf: rest,
            consumed: 0,
            inflate,
            compressed: 0,
            scratch: Vec::new(),
            sse: None,
        })
    })
    .await
    .context("handshake timed out")?
}

/// Opens kilat's SSE transport with `connect` (a connect command frame); returns the
/// connection and the connect reply.
pub(crate) async fn open_sse(
    target: &Target,
    connect: &str,
    timeout: Duration,
) -> Result<(Conn, serde_json::Value)> {
    tokio::time::timeout(timeout, async {
        let mut stream = connect_stream(target).await?;
        let sep = if target.path.contains('?') { '&' } else { '?' };
        let request = format!(
            "GET {}{sep}connect={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            target.path,
            percent_encode(connect),
            target.addr
        );
        stream.write_all(request.as_bytes()).await?;
        let (head, rest) = read_head(&mut stream).await?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!(
                "SSE request refused: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut emulation = target.clone();
        emulation.path = "/connection/emulation".to_owned();
        let mut conn = Conn {
            stream,
            buf: rest,
            consumed: 0,
            inflate: false,
            compressed: 0,
            scratch: Vec::new(),
            sse: Some(Box::new(Sse {
                chunked,
                chunk_left: 0,
                chunk_crlf: false,
                body: Vec::new(),
                emulation,
                session: String::new(),
                node: String::new(),
                http: None,
            })),
        };
        // The connect reply names the session that emulation POSTs (pongs) are for.
        let (_, first) = conn.next().await?;
        let line = first.split(|b| *b == b'\n').next().unwrap_or_default();
        let reply: serde_json::Value =
            serde_json::from_slice(line).context("the first SSE event is not a JSON frame")?;
        if let Some(error) = reply.get("error") {
            bail!("connect refused: {error}");
        }
        let result = &reply["connect"];
        if let Some(sse) = conn.sse.as_mut() {
            let text = |key: &str| result[key].as_str().unwrap_or_default().to_owned();
            sse.session = text("session");
            sse.node = text("node");
        }
        Ok((conn, reply))
    })
    .await
    .context("SSE handshake timed out")?
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

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Inflates one permessage-deflate message (compressed without context takeover) into `out`.
fn inflate_message(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    use flate2::{Decompress, FlushDecompress, Status};
    thread_local! {
        static INFLATER: std::cell::RefCell<Decompress> =
            std::cell::RefCell::new(Decompress::new(false));
    }
    let mut input = Vec::with_capacity(payload.len() + 4);
    input.extend_from_slice(payload);
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        out.clear();
        let mut at = 0;
        loop {
            if out.capacity() - out.len() < 4096 {
                out.reserve(4096.max(payload.len() * 4));
            }
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&input[at..], out, FlushDecompress::Sync)
                .context("bad permessage-deflate data from the server")?;
            at += (d.total_in() - in_before) as usize;
            if out.len() as u64 > MAX_FRAME {
                bail!("inflated server message larger than the bench client accepts");
            }
            let stuck = d.total_in() == in_before && d.total_out() == out_before;
            let done = at == input.len() && out.len() < out.capacity();
            if status == Status::StreamEnd || done || stuck {
                return Ok(());
            }
        }
    })
}

impl Conn {
    /// Sends one text message: a masked text frame, or for SSE a command POSTed to the
    /// emulation endpoint for this session.
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        if let Some(sse) = self.sse.as_mut() {
            let command = std::str::from_utf8(text).context("commands are UTF-8")?;
            let body = serde_json::json!({
                "session": sse.session,
                "node": sse.node,
                "command": command,
            })
            .to_string();
            if sse.http.is_none() {
                sse.http = Some(HttpConn::connect(&sse.emulation).await?);
            }
            let http = sse.http.as_mut().context("emulation connection")?;
            let (status, reply) = http.post("", body.as_bytes()).await?;
            if status != 204 {
                bail!(
                    "emulation POST answered {status}: {}",
                    String::from_utf8_lossy(&reply)
                );
            }
            return Ok(());
        }
        let mut frame = Vec::with_capacity(text.len() + 14);
        encode_text(&mut frame, text);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends bytes already framed with [`encode_text`] (several frames in one write).
    pub(crate) async fn send_raw(&mut self, frames: &[u8]) -> Result<()> {
        if self.sse.is_some() {
            bail!("publishing needs a WebSocket connection (or --publish-via http)");
        }
        self.stream.write_all(frames).await?;
        Ok(())
    }

    /// Reads the next complete data message and returns its opcode and payload (inflated when
    /// it was compressed), answering ping frames with pongs on the way. For SSE, the next event
    /// as a text message. Cancel-safe: bytes read before a cancellation stay buffered.
    pub(crate) async fn next(&mut self) -> Result<(u8, &[u8])> {
        if self.sse.is_some() {
            return self.next_event().await;
        }
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        loop {
            if let Some((first, start, end)) = self.parse()? {
                match first & 0x0f {
                    0x8 => {
                        let code = self
                            .buf
                            .get(start..end)
                            .and_then(|p| p.get(..2))
                            .map(|c| u16::from_be_bytes([c[0], c[1]]));
                        bail!("server closed the connection (code {code:?})");
                    }
                    0x9 => {
                        let mut pong = Vec::with_capacity(end - start + 6);
                        encode_frame(&mut pong, 0x8a, &self.buf[start..end]);
                        self.buf.drain(..end);
                        self.stream.write_all(&pong).await?;
                        continue;
                    }
                    0xa => {
                        self.buf.drain(..end);
                        continue;
                    }
                    opcode => {
                        self.consumed = end;
                        if first & 0x40 != 0 {
                            if !self.inflate {
                                bail!("compressed message without permessage-deflate");
                            }
                            self.compressed += 1;
                            inflate_message(&self.buf[start..end], &mut self.scratch)?;
                            return Ok((opcode, &self.scratch));
                        }
                        return Ok((opcode, &self.buf[start..end]));
                    }
                }
            }
            self.fill().await?;
        }
    }

    /// The next SSE event with `data:` lines, joined by `\n` like `EventSource` does.
    async fn next_event(&mut self) -> Result<(u8, &[u8])> {
        let sse = self.sse.as_mut().context("not an SSE connection")?;
        if self.consumed > 0 {
            sse.body.drain(..self.consumed);
            self.consumed = 0;
        }
        loop {
            let sse = self.sse.as_mut().context("not an SSE connection")?;
            if let Some(i) = sse.body.windows(2).position(|w| w == b"\n\n") {
                self.consumed = i + 2;
                self.scratch.clear();
                for line in sse.body[..i].split(|b| *b == b'\n') {
                    let Some(data) = line.strip_prefix(b"data:") else {
                        continue;
                    };
                    if !self.scratch.is_empty() {
                        self.scratch.push(b'\n');
                    }
                    self.scratch
                        .extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
                }
                if self.scratch.is_empty() {
                    // A comment or an event without data: skip it.
                    sse.body.drain(..self.consumed);
                    self.consumed = 0;
                    continue;
                }
                return Ok((OP_TEXT, &self.scratch));
            }
            if sse.body.len() as u64 > MAX_FRAME {
                bail!("SSE event larger than the bench client accepts");
            }
            self.dechunk()?;
            let sse = self.sse.as_ref().context("not an SSE connection")?;
            if sse.body.windows(2).any(|w| w == b"\n\n") {
                continue;
            }
            self.fill().await?;
        }
    }

    /// Moves the response body out of `buf` into the SSE body, removing chunk framing.
    fn dechunk(&mut self) -> Result<()> {
        let sse = self.sse.as_mut().context("not an SSE connection")?;
        if !sse.chunked {
            sse.body.append(&mut self.buf);
            return Ok(());
        }
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            if sse.chunk_left > 0 {
                let n = sse.chunk_left.min(rest.len());
                if n == 0 {
                    break;
                }
                sse.body.extend_from_slice(&rest[..n]);
                sse.chunk_left -= n;
                sse.chunk_crlf = sse.chunk_left == 0;
                at += n;
            } else if sse.chunk_crlf {
                if rest.len() < 2 {
                    break;
                }
                at += 2;
                sse.chunk_crlf = false;
            } else {
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    if rest.len() > 64 {
                        bail!("bad chunk header in the SSE response");
                    }
                    break;
                };
                let line = std::str::from_utf8(&rest[..eol]).context("bad chunk header")?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .with_context(|| format!("bad chunk size {size:?}"))?;
                if size == 0 {
                    bail!("the server ended the SSE stream");
                }
                sse.chunk_left = size;
                at += eol + 2;
            }
        }
        self.buf.drain(..at);
        Ok(())
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

    /// Parses one frame at the front of the buffer: (first header byte, payload start, payload
    /// end).
    fn parse(&mut self) -> Result<Option<(u8, usize, usize)>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x80 == 0 || b[0] & 0x0f == 0 {
            bail!("fragmented server messages are not supported by the bench client");
        }
        let first = b[0];
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(l), 10)
            }
            n => (u64::from(n), 2),
        };
        if len > MAX_FRAME {
            bail!("server frame of {len} bytes is larger than the bench client accepts");
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        let end = at + len as usize;
        if b.len() < end {
            if self.buf.capacity() < end {
                self.buf.reserve(end - self.buf.len());
            }
            return Ok(None);
        }
        if let Some(m) = mask {
            for (i, x) in self.buf[at..end].iter_mut().enumerate() {
                *x ^= m[i % 4];
            }
        }
        Ok(Some((first, at, end)))
    }
}

/// Appends one masked text frame carrying `text` to `out`.
pub(crate) fn encode_text(out: &mut Vec<u8>, text: &[u8]) {
    encode_frame(out, 0x81, text);
}

fn encode_frame(out: &mut Vec<u8>, first: u8, payload: &[u8]) {
    out.push(first);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = rand_mask();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// A mask key; need not be unpredictable for a load generator.
fn rand_mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0x5eed);
    nanos.to_le_bytes()
}

/// A minimal HTTP/1.1 keep-alive client for `POST` requests with JSON bodies.
#[derive(Debug)]
pub(crate) struct HttpConn {
    target: Target,
    stream: Stream,
    buf: Vec<u8>,
}

impl HttpConn {
    /// Connects to the host of `target`.
    pub(crate) async fn connect(target: &Target) -> Result<HttpConn> {
        let stream = connect_stream(target).await?;
        Ok(HttpConn {
            target: target.clone(),
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    /// POSTs `body` to the target path and returns the status and response body.
    pub(crate) async fn post(&mut self, headers: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
            self.target.path,
            self.target.addr,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await?;
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.buf.reserve(1024);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("server closed the HTTP connection");
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad HTTP status line")?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .context("the bench HTTP client needs a Content-Length response")?;
        while self.buf.len() < end + length {
            self.buf.reserve(end + length - self.buf.len());
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("server closed the HTTP connection mid-body");
            }
        }
        let body = self.buf[end..end + length].to_vec();
        self.buf.drain(..end + length);
        Ok((status, body))
    }
}
