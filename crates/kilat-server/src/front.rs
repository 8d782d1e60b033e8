//! The first request head of every HTTP/1 connection, read before hyper sees it.
//!
//! A Server-Sent Events request (`GET /connection/sse`) is served on the socket directly: hyper
//! keeps an 8 KiB read buffer and an 8 KiB write buffer for as long as a response streams, which
//! made an idle SSE client cost about 22 KiB against 2 KiB for WebSocket (`docs/benchmarks.md`).
//! Everything else goes to hyper unchanged, with the bytes already read put back in front of the
//! socket ([`Prefixed`]). Only a well-formed SSE request is taken; anything odd about it (a
//! body, a malformed or oversized head) is left to hyper, which answers it properly.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The request line that starts an SSE stream; the target continues with `?` or ends.
const SSE_REQUEST: &[u8] = b"GET /connection/sse";
/// The longest head read here; a longer SSE request goes to hyper, whose limits then apply.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers an SSE request may carry here (more goes to hyper).
const MAX_HEADERS: usize = 64;
/// The first read's size: a browser's request head with cookies fits.
const FIRST_READ: usize = 4096;

/// What the first request of a connection is.
#[derive(Debug)]
pub(crate) enum Head {
    /// A Server-Sent Events request, read whole.
    EventStream(EventStreamRequest),
    /// Anything else; these bytes were read from the socket and must be replayed to hyper.
    Other(Bytes),
}

/// A parsed `GET /connection/sse` request.
#[derive(Debug)]
pub(crate) struct EventStreamRequest {
    /// The request target (path and query).
    pub(crate) uri: Uri,
    /// The request headers.
    pub(crate) headers: HeaderMap,
}

/// Reads from `io` until it is clear whether the first request is an SSE request.
///
/// # Errors
/// When the peer closes before sending a byte, or reading fails. The caller bounds the time.
pub(crate) async fn read_head<IO>(io: &mut IO) -> io::Result<Head>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        if io.read_buf(&mut buf).await? == 0 {
            if buf.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // A truncated head: hyper reads the end of the stream too and answers accordingly.
            return Ok(Head::Other(buf.freeze()));
        }
        match classify(&buf) {
            Classified::NeedMore if buf.len() < MAX_HEAD => {}
            Classified::EventStream(request) => return Ok(Head::EventStream(request)),
            Classified::NeedMore | Classified::Other => return Ok(Head::Other(buf.freeze())),
        }
    }
}

enum Classified {
    NeedMore,
    EventStream(EventStreamRequest),
    Other,
}

fn classify(buf: &[u8]) -> Classified {
    let line = SSE_REQUEST.len();
    if buf.len() <= line {
        return if SSE_REQUEST.starts_with(buf) {
            Classified::NeedMore
        } else {
            Classified::Other
        };
    }
    if !buf.starts_with(SSE_REQUEST) || !matches!(buf[line], b'?' | b' ') {
        return Classified::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => Classified::NeedMore,
        Ok(httparse::Status::Complete(len)) if len == buf.len() => {
            event_stream_request(&request).map_or(Classified::Other, Classified::EventStream)
        }
        // Bytes after the head (a body or a pipelined request): not something to stream to.
        Ok(httparse::Status::Complete(_)) | Err(_) => Classified::Other,
    }
}

fn event_stream_request(request: &httparse::Request<'_, '_>) -> Option<EventStreamRequest> {
    let uri = Uri::try_from(request.path?).ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    Some(EventStreamRequest { uri, headers })
}

/// A socket with bytes already read from it put back in front.
#[derive(Debug)]
pub(crate) struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(prefix: Bytes, io: IO) -> Self {
        Prefixed { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Frees the head buffer: an upgraded connection keeps this wrapper for life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Feeds `parts` to `read_head` one at a time, checking it waits for more after each but the
    /// last, as separate TCP segments would arrive; then ends the stream.
    async fn head_of(parts: &[&[u8]]) -> io::Result<Head> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let read = read_head(&mut server);
        tokio::pin!(read);
        for (i, part) in parts.iter().enumerate() {
            client.write_all(part).await.expect("write");
            if i + 1 < parts.len() {
                assert!(
                    futures_util::poll!(&mut read).is_pending(),
                    "decided too early"
                );
            }
        }
        drop(client);
        read.await
    }

    fn other(head: io::Result<Head>) -> Bytes {
        match head.expect("head") {
            Head::Other(bytes) => bytes,
            Head::EventStream(request) => panic!("taken as SSE: {request:?}"),
        }
    }

    #[tokio::test]
    async fn an_sse_request_split_over_reads_is_taken_whole() {
        let head = head_of(&[
            b"GET /connection/s",
            b"se?connect=%7B%7D HTTP/1.1\r\nHost: a\r\n",
            b"Origin: http://a\r\n\r\n",
        ])
        .await;
        let Head::EventStream(request) = head.expect("head") else {
            panic!("not taken as SSE");
        };
        assert_eq!(request.uri.query(), Some("connect=%7B%7D"));
        assert_eq!(request.headers["origin"], "http://a");
    }

    #[tokio::test]
    async fn other_requests_are_handed_on_with_the_bytes_read() {
        let upgrade = b"GET /connection/websocket HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(&other(head_of(&[upgrade]).await)[..], upgrade);
        // Decided on the first bytes that cannot start an SSE request, not at the head's end.
        assert_eq!(
            &other(head_of(&[b"POST /api/publish"]).await)[..],
            b"POST /api/publish"
        );
        assert_eq!(
            &other(head_of(&[b"GET /connection/sseX"]).await)[..],
            b"GET /connection/sseX"
        );
    }

    #[tokio::test]
    async fn odd_sse_requests_are_left_to_hyper() {
        for head in [
            &b"GET /connection/sse HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"[..],
            b"GET /connection/sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /connection/sse HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET /connection/sse HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(&other(head_of(&[head]).await)[..], head);
        }
        let huge = format!(
            "GET /connection/sse HTTP/1.1\r\nCookie: {}\r\n",
            "x".repeat(MAX_HEAD)
        );
        assert!(other(head_of(&[huge.as_bytes()]).await).len() >= MAX_HEAD);
    }

    #[tokio::test]
    async fn a_peer_that_closes_at_once_is_an_error_and_a_truncated_head_goes_on() {
        assert!(head_of(&[]).await.is_err());
        assert_eq!(&other(head_of(&[b"GET /conn"]).await)[..], b"GET /conn");
    }

    #[tokio::test]
    async fn prefixed_replays_the_head_then_reads_the_socket() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b" world").await.expect("write");
        drop(client);
        let mut io = Prefixed::new(Bytes::from_static(b"hello"), server);
        let mut all = String::new();
        io.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hello world");
    }
}
