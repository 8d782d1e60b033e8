//! A minimal HTTP/1.1 keep-alive client for `POST` requests with JSON bodies: publishing
//! through a server's HTTP API, and SSE sessions' commands to the emulation endpoint.

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::net::{Stream, Target, connect_stream};

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
        let path = self.target.path.clone();
        self.post_to(&path, headers, body).await
    }

    /// POSTs `body` to `path` (and query) on the target's host.
    pub(crate) async fn post_to(
        &mut self,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
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
