//! kilat's SSE transport as a load client: `GET /connection/sse?connect=..` opens the stream
//! (chunked or not), events are read as text messages, and commands (pongs) are POSTed to
//! `/connection/emulation` for the session the connect reply named.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use kilat_transport::ws::frame::OP_TEXT;

use super::conn::{Conn, MAX_FRAME, Sse};
use super::http::HttpConn;
use super::net::{Target, connect_stream, header, read_head};

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
            wire_bytes: 0,
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

impl Conn {
    /// Sends one command to this SSE session through the emulation endpoint.
    pub(super) async fn post_command(&mut self, text: &[u8]) -> Result<()> {
        let sse = self.sse.as_mut().context("not an SSE connection")?;
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
        Ok(())
    }

    /// The next SSE event with `data:` lines, joined by `\n` like `EventSource` does.
    pub(super) async fn next_event(&mut self) -> Result<(u8, &[u8])> {
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
}
