//! A deliberately small WebSocket client for load generation: one `TcpStream` per connection and
//! a read buffer that is empty (no capacity) while the connection is idle, so one process can hold
//! tens of thousands of connections. Also a minimal HTTP/1.1 keep-alive client for publishing
//! through a server's HTTP API.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to connect: host:port and path, parsed from a `ws://` (or `http://`) URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: String,
    pub(crate) path: String,
}

impl Target {
    /// Parses `ws://host:port/path` (`http://` is accepted too, for the HTTP API client).
    pub(crate) fn parse(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .with_context(|| {
                format!("{url}: only ws:// and http:// URLs are supported by the bench client")
            })?;
        let (addr, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Ok(Target {
            addr: addr.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Largest server message the bench client accepts.
const MAX_FRAME: u64 = 16 << 20;

/// One client WebSocket connection with an incremental, cancel-safe frame reader.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet returned as frames, from `start`.
    buf: Vec<u8>,
    /// Length of the frame returned last (consumed at the next read).
    consumed: usize,
}

/// WebSocket opcodes the bench cares about.
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;

/// Opens a connection and completes the opening handshake (no extensions).
pub(crate) async fn open(target: &Target, timeout: Duration) -> Result<Conn> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2lsYXQtYmVuY2gta2V5IQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.addr
        );
        stream.write_all(request.as_bytes()).await?;
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
        if !buf.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&buf[..end]);
            bail!("upgrade refused: {}", line.lines().next().unwrap_or_default());
        }
        // Whatever follows the head (a server that speaks first) stays buffered.
        let rest = buf[end..].to_vec();
        Ok(Conn {
            stream,
            buf: rest,
            consumed: 0,
        })
    })
    .await
    .context("handshake timed out")?
}

impl Conn {
    /// Sends one masked text frame.
    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(text.len() + 14);
        encode_text(&mut frame, text);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends bytes already framed with [`encode_text`] (several frames in one write).
    pub(crate) async fn send_raw(&mut self, frames: &[u8]) -> Result<()> {
        self.stream.write_all(frames).await?;
        Ok(())
    }

    /// Reads the next complete data frame and returns its opcode and payload, answering ping
    /// frames with pongs on the way. Cancel-safe: bytes read before a cancellation stay buffered.
    pub(crate) async fn next(&mut self) -> Result<(u8, &[u8])> {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        loop {
            if let Some((opcode, start, end)) = self.parse()? {
                match opcode {
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
                    _ => {
                        self.consumed = end;
                        return Ok((opcode, &self.buf[start..end]));
                    }
                }
            }
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
        }
    }

    /// Reads the next text frame (skipping others) and returns an owned copy.
    pub(crate) async fn read_text(&mut self) -> Result<Vec<u8>> {
        loop {
            let (op, payload) = self.next().await?;
            if op == OP_TEXT {
                return Ok(payload.to_vec());
            }
        }
    }

    /// Gives back the read buffer's memory (between phases of an idle connection).
    pub(crate) fn shrink(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.shrink_to_fit();
    }

    /// Parses one frame at the front of the buffer: (opcode, payload start, payload end).
    fn parse(&mut self) -> Result<Option<(u8, usize, usize)>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x80 == 0 || b[0] & 0x0f == 0 {
            bail!("fragmented server messages are not supported by the bench client");
        }
        let opcode = b[0] & 0x0f;
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
        Ok(Some((opcode, at, end)))
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
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    /// Connects to the host of `target`.
    pub(crate) async fn connect(target: &Target) -> Result<HttpConn> {
        let stream = TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
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
