//! Reading request bodies with a size limit, a total deadline and a minimum rate.
//!
//! hyper bounds the time to read a request head, not its body: a client that announces
//! `Content-Length: 65536` and sends one byte (or trickles a byte every few seconds) would hold
//! its socket, and the handler's task, forever (issue 20). Every body read here ends by
//! `server.body_timeout` at the latest, and earlier when it falls below [`MIN_RATE`] after
//! [`GRACE`].

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::time::Instant;

/// The slowest average rate a body may arrive at once [`GRACE`] has passed, in bytes per second.
const MIN_RATE: u64 = 1024;
/// How long a body may arrive slower than [`MIN_RATE`] (a slow start, one delayed segment).
const GRACE: Duration = Duration::from_secs(2);

/// Why a body was not read: the HTTP status and a reason for the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

const TOO_LARGE: Refused = Refused {
    status: StatusCode::PAYLOAD_TOO_LARGE,
    reason: "request body too large",
};
const TOO_SLOW: Refused = Refused {
    status: StatusCode::REQUEST_TIMEOUT,
    reason: "request body not received in time",
};
const UNREADABLE: Refused = Refused {
    status: StatusCode::BAD_REQUEST,
    reason: "request body could not be read",
};

/// Reads `body` whole: at most `limit` bytes, within `timeout`, never slower than
/// [`MIN_RATE`] on average after [`GRACE`].
///
/// # Errors
/// [`Refused`] with 413 past `limit`, 408 past the deadline or below the rate, 400 when the
/// connection fails mid-body.
pub(crate) async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, Refused> {
    if body_hint_exceeds(&body, limit) {
        return Err(TOO_LARGE);
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let mut body = body;
    let mut received = BytesMut::new();
    loop {
        // The next frame may take until the total deadline or until the rate check would fail
        // with nothing more arriving, whichever is sooner.
        let starved = start + GRACE + rate_time(received.len());
        let wait_until = deadline.min(starved.max(start + GRACE));
        let frame = match tokio::time::timeout_at(wait_until, body.frame()).await {
            Err(_) => return Err(TOO_SLOW),
            Ok(None) => return Ok(received.freeze()),
            Ok(Some(Err(_))) => return Err(UNREADABLE),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if received.len() + data.len() > limit {
                return Err(TOO_LARGE);
            }
            received.extend_from_slice(&data);
        }
    }
}

/// The time [`MIN_RATE`] allows for `bytes` bytes.
fn rate_time(bytes: usize) -> Duration {
    Duration::from_millis((bytes as u64).saturating_mul(1000) / MIN_RATE)
}

/// Whether the body announces more than `limit` bytes (a `Content-Length` over it), so it is
/// refused before anything is read.
fn body_hint_exceeds(body: &Body, limit: usize) -> bool {
    use axum::body::HttpBody as _;
    body.size_hint().lower() > limit as u64
}

/// JSON text on one line. Frames are `\n`-separated on every transport, and what kilat copies
/// into them as raw JSON (a request body's `data`, a proxy hook's answer) may be pretty-printed:
/// in valid JSON a newline is whitespace outside strings (inside them it is escaped), so it
/// becomes a space and the frame carrying it stays one frame. Text that is not valid JSON is
/// changed the same way, and is refused by whoever parses it.
pub(crate) fn one_line_json(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !text.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.iter()
            .map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b })
            .collect(),
    )
}

/// `data` on one line ([`one_line_json`]).
pub(crate) fn one_line(data: kilat_protocol::RawJson) -> kilat_protocol::RawJson {
    match one_line_json(data.get().as_bytes()) {
        std::borrow::Cow::Borrowed(_) => data,
        std::borrow::Cow::Owned(flat) => String::from_utf8(flat)
            .ok()
            .and_then(|flat| serde_json::value::RawValue::from_string(flat).ok())
            .unwrap_or(data),
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    /// A body fed by the test, chunk by chunk.
    fn fed() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|chunk| chunk.map(Ok::<_, std::io::Error>))
        });
        (tx, Body::from_stream(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_refused_once_it_falls_below_the_rate() {
        let (tx, body) = fed();
        tx.send(Bytes::from_static(b"x")).await.expect("send");
        let started = Instant::now();
        let refused = read(body, 1024, Duration::from_secs(10)).await;
        assert_eq!(refused, Err(TOO_SLOW));
        assert!(started.elapsed() <= GRACE + Duration::from_secs(1));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_above_the_rate_is_still_cut_at_the_deadline() {
        let (tx, body) = fed();
        let feeder = tokio::spawn(async move {
            // 2 KiB a second: above the minimum rate, but never finishing.
            while tx.send(Bytes::from(vec![b'x'; 2048])).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        let refused = read(body, 1 << 20, Duration::from_secs(3)).await;
        assert_eq!(refused, Err(TOO_SLOW));
        assert_eq!(started.elapsed().as_secs(), 3);
        feeder.abort();
    }

    #[tokio::test]
    async fn whole_bodies_are_read_and_large_ones_refused() {
        let body = Body::from("hello");
        assert_eq!(
            read(body, 5, Duration::from_secs(1)).await,
            Ok(Bytes::from_static(b"hello"))
        );
        let body = Body::from("hello!");
        assert_eq!(read(body, 5, Duration::from_secs(1)).await, Err(TOO_LARGE));
        let (tx, body) = fed();
        tx.send(Bytes::from_static(b"abc")).await.expect("send");
        tx.send(Bytes::from_static(b"def")).await.expect("send");
        drop(tx);
        assert_eq!(read(body, 5, Duration::from_secs(1)).await, Err(TOO_LARGE));
    }
}
