//! A deliberately small WebSocket client for load generation: one `TcpStream` per connection and
//! no buffers kept between reads, so one process can hold tens of thousands of connections.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to connect: host:port and path, parsed from a `ws://` URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: String,
    pub(crate) path: String,
}

impl Target {
    /// Parses `ws://host:port/path`.
    pub(crate) fn parse(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .with_context(|| format!("{url}: only ws:// URLs are supported by the bench client"))?;
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

/// Opens a connection and completes the opening handshake (no extensions).
pub(crate) async fn open(target: &Target, timeout: Duration) -> Result<TcpStream> {
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
        // Read in chunks: kilat sends nothing after the 101 until the client speaks, so nothing
        // past the head is lost; a server that pushes at once may have its first bytes dropped,
        // which the idle scenario does not read anyway.
        let mut head = [0u8; 1024];
        let mut len = 0;
        while !head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            if len == head.len() {
                bail!("response head longer than {} bytes", head.len());
            }
            let n = stream.read(&mut head[len..]).await?;
            if n == 0 {
                bail!("server closed during the handshake");
            }
            len += n;
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&head[..len]);
            bail!("upgrade refused: {}", line.lines().next().unwrap_or_default());
        }
        Ok(stream)
    })
    .await
    .context("handshake timed out")?
}

/// Sends one masked text frame.
pub(crate) async fn send_text(stream: &mut TcpStream, text: &[u8]) -> Result<()> {
    let mut frame = Vec::with_capacity(text.len() + 14);
    frame.push(0x81);
    match text.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = rand_mask();
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await?;
    Ok(())
}

/// Reads one unfragmented server text frame and returns its payload.
pub(crate) async fn read_text(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await?;
    let len = match header[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > 16 << 20 {
        bail!("server frame of {len} bytes is larger than the bench client accepts");
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await?;
    if header[0] & 0x0f == 0x8 {
        let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        bail!("server closed the connection (code {code:?})");
    }
    Ok(payload)
}

/// A mask key; need not be unpredictable for a load generator talking to its own server.
fn rand_mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0x5eed);
    nanos.to_le_bytes()
}
