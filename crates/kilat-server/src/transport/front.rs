//! The first request of every HTTP/1 connection, read before hyper sees it.
//!
//! The two streaming requests of the emulated transports, `GET /connection/sse` and
//! `POST /connection/stream`, are served on the socket directly: hyper keeps an 8 KiB read
//! buffer and an 8 KiB write buffer for as long as a response streams, which made an idle SSE
//! client cost about 22 KiB against 2 KiB for WebSocket (`docs/benchmarks.md`). Everything else
//! goes to hyper unchanged, with the bytes already read put back in front of the socket
//! ([`Prefixed`]). Only a well-formed request is taken; anything odd about it (a body where none
//! belongs, chunked or `Expect`, a malformed or oversized head, bytes after the request) is left
//! to hyper, which answers it properly.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The request lines taken here; the target continues with `?` or ends.
const STREAM_REQUESTS: [(&[u8], StreamKind); 2] = [
    (b"GET /connection/sse", StreamKind::EventStream),
    (b"POST /connection/stream", StreamKind::Ndjson),
];
/// Largest connect command or emulation POST body accepted, in bytes, by every emulated
/// transport on the socket or through hyper. Also the largest body taken here: a larger one
/// goes to hyper's path and gets its 413.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// The longest request head on any path: a longer one goes to hyper, which is held to the same
/// limit (`listener.rs`) and answers 431.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Most headers a request may carry here (more goes to hyper).
const MAX_HEADERS: usize = 64;
/// The first read's size: a browser's request head with cookies fits.
const FIRST_READ: usize = 4096;

/// What the first request of a connection is.
#[derive(Debug)]
pub(crate) enum Head {
    /// A streaming request, read whole (boxed: it is far larger than the other case).
    Stream(Box<StreamRequest>),
    /// Anything else; these bytes were read from the socket and must be replayed to hyper.
    Other(Bytes),
}

/// Which streaming request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// `GET /connection/sse`: Server-Sent Events, the connect command in the query.
    EventStream,
    /// `POST /connection/stream`: NDJSON, the connect command as the body.
    Ndjson,
}

/// A streaming request read by [`read_head`].
#[derive(Debug)]
pub(crate) struct StreamRequest {
    pub(crate) kind: StreamKind,
    /// The request target (path and query).
    pub(crate) uri: Uri,
    /// The request headers.
    pub(crate) headers: HeaderMap,
    /// The body (empty for SSE).
    pub(crate) body: Bytes,
    /// The socket's peer address (set by the listener), for the limits per client address.
    pub(crate) peer: Option<std::net::SocketAddr>,
}

/// Reads from `io` until it is clear whether the first request is a streaming request.
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
            // A truncated request: hyper reads the end of the stream too and answers accordingly.
            return Ok(Head::Other(buf.freeze()));
        }
        match classify(&buf) {
            Classified::NeedMore if buf.len() < MAX_HEAD + MAX_BODY => {}
            Classified::Stream(request) => return Ok(Head::Stream(request)),
            Classified::NeedMore | Classified::Other => return Ok(Head::Other(buf.freeze())),
        }
    }
}

/// [`classify`] for `kilat_server::fuzzing`: whether `buf` is taken as a stream request.
pub(crate) fn classify_for_fuzzing(buf: &[u8]) -> bool {
    matches!(classify(buf), Classified::Stream(_))
}

enum Classified {
    NeedMore,
    Stream(Box<StreamRequest>),
    Other,
}

fn classify(buf: &[u8]) -> Classified {
    let mut maybe = false;
    for (line, kind) in STREAM_REQUESTS {
        if buf.len() <= line.len() {
            maybe |= line.starts_with(buf);
        } else if buf.starts_with(line) && matches!(buf[line.len()], b'?' | b' ') {
            return parse(buf, kind);
        }
    }
    if maybe {
        Classified::NeedMore
    } else {
        Classified::Other
    }
}

/// Parses a request whose line matched `kind`.
fn parse(buf: &[u8], kind: StreamKind) -> Classified {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Classified::NeedMore,
        Ok(httparse::Status::Partial) | Err(_) => return Classified::Other,
    };
    let Some((uri, headers, body_len)) = stream_request(&request, kind) else {
        return Classified::Other;
    };
    match buf.len().cmp(&(head_len + body_len)) {
        std::cmp::Ordering::Less => Classified::NeedMore,
        std::cmp::Ordering::Equal => Classified::Stream(Box::new(StreamRequest {
            kind,
            uri,
            headers,
            body: Bytes::copy_from_slice(&buf[head_len..]),
            peer: None,
        })),
        // Bytes after the request (a pipelined one): not something to stream to.
        std::cmp::Ordering::Greater => Classified::Other,
    }
}

/// The target, the headers and the body length of a streaming request, or `None` when hyper
/// should answer it instead.
fn stream_request(
    request: &httparse::Request<'_, '_>,
    kind: StreamKind,
) -> Option<(Uri, HeaderMap, usize)> {
    let uri = Uri::try_from(request.path?).ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) || headers.contains_key(header::EXPECT) {
        return None;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let body_len = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        // Digits only: Rust's parse takes `+21`, which RFC 9110 (and hyper) refuse.
        (Some(value), None) => {
            let digits = value.as_bytes();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            value.to_str().ok()?.parse::<usize>().ok()?
        }
        (Some(_), Some(_)) => return None,
    };
    let fits = match kind {
        StreamKind::EventStream => body_len == 0,
        StreamKind::Ndjson => body_len <= MAX_BODY,
    };
    fits.then_some((uri, headers, body_len))
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

    /// The same socket with `more` to be read after what is still in front.
    ///
    /// An empty `more` is dropped rather than kept: it may be an empty slice of a larger
    /// buffer (hyper's 8 KiB read buffer), which would stay allocated for the connection's life.
    pub(crate) fn then(mut self, more: Bytes) -> Self {
        if more.is_empty() {
            return self;
        }
        if self.prefix.is_empty() {
            self.prefix = more;
        } else {
            let mut joined = BytesMut::with_capacity(self.prefix.len() + more.len());
            joined.extend_from_slice(&self.prefix);
            joined.extend_from_slice(&more);
            self.prefix = joined.freeze();
        }
        self
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
            Head::Stream(request) => panic!("taken as a stream: {request:?}"),
        }
    }

    fn stream(head: io::Result<Head>) -> StreamRequest {
        match head.expect("head") {
            Head::Stream(request) => *request,
            Head::Other(bytes) => panic!("not taken: {}", String::from_utf8_lossy(&bytes)),
        }
    }

    #[tokio::test]
    async fn an_sse_request_split_over_reads_is_taken_whole() {
        let request = stream(
            head_of(&[
                b"GET /connection/s",
                b"se?connect=%7B%7D HTTP/1.1\r\nHost: a\r\n",
                b"Origin: http://a\r\n\r\n",
            ])
            .await,
        );
        assert_eq!(request.kind, StreamKind::EventStream);
        assert_eq!(request.uri.query(), Some("connect=%7B%7D"));
        assert_eq!(request.headers["origin"], "http://a");
    }

    #[tokio::test]
    async fn a_stream_post_is_taken_with_its_body_once_the_body_is_complete() {
        let request = stream(
            head_of(&[
                b"POST /connection/stream HTTP/1.1\r\nContent-Length: 21\r\n\r\n",
                b"{\"id\":1,",
                b"\"connect\":{}}",
            ])
            .await,
        );
        assert_eq!(request.kind, StreamKind::Ndjson);
        assert_eq!(&request.body[..], br#"{"id":1,"connect":{}}"#);
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
    async fn odd_stream_requests_are_left_to_hyper() {
        for head in [
            &b"GET /connection/sse HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"[..],
            b"GET /connection/sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /connection/sse HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET /connection/sse HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"POST /connection/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"POST /connection/stream HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"POST /connection/stream HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /connection/stream HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n{}",
            b"POST /connection/stream HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n",
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

    #[tokio::test]
    async fn then_queues_more_bytes_after_what_is_still_in_front() {
        for (first, more) in [("", "abc"), ("ab", "c"), ("abc", "")] {
            let (client, server) = tokio::io::duplex(64);
            drop(client);
            let mut io = Prefixed::new(Bytes::from(first), server).then(Bytes::from(more));
            let mut all = String::new();
            io.read_to_string(&mut all).await.expect("read");
            assert_eq!(all, "abc", "{first:?} then {more:?}");
        }
    }
}
