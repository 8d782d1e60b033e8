//! Encoding one publication push for the wire, per transport encoding, with a ~100 B and a
//! ~10,000 B payload.
//!
//! - `push_json`: the hub's once-per-publication step, `encode_publication` into a
//!   [`SharedFrame`].
//! - `ws_plain`, `ws_deflate15`, `ws_deflate9`: `WsConnection::send_frames` (what the connection
//!   task calls) on a connection without compression, with permessage-deflate at the default
//!   15-bit server window, and with a client that limits the server window to 9 bits; the
//!   socket is a null writer, so the figure is encoding plus the write path, without a syscall.
//! - `sse`, `ndjson`: the SSE event and NDJSON line slots, with `kilat_transport::text`'s
//!   encoders called through [`SharedFrame::encoded`] exactly as the server calls them.
//!
//! Each encoding is measured twice: `first` sends a frame nobody has encoded yet (the first
//! subscriber on that encoding pays this), `cached` sends a frame whose slot is already filled
//! (every other subscriber pays this; it should not depend on the payload size).
//!
//! `cargo bench -p kilat-protocol --bench encode`
//! (`-- --warm-up-time 1 --measurement-time 3` for a quick run)

use std::future::Future;
use std::hint::black_box;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kilat_protocol::push::encode_publication;
use kilat_protocol::types::raw_json;
use kilat_protocol::{EncodingSlot, Publication, SharedFrame};
use kilat_transport::text::{SLOT_NDJSON, SLOT_SSE, ndjson_line, sse_event};
use kilat_transport::ws::{Handshake, WsConfig, WsConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The payload sizes measured, in bytes of application JSON.
const SIZES: [usize; 2] = [100, 10_000];

/// A socket that accepts every write at once (vectored included) and never has input.
#[derive(Debug, Default)]
struct NullSocket {
    /// Bytes written, so the writes cannot be optimised away.
    written: u64,
}

impl AsyncRead for NullSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for NullSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A server-side connection on a [`NullSocket`], negotiated from `extensions` like a real
/// upgrade request.
fn connection(extensions: Option<&str>) -> WsConnection<NullSocket> {
    let config = WsConfig::default();
    let handshake = Handshake::for_offer(extensions, &config);
    WsConnection::new(NullSocket::default(), &handshake, &config)
}

/// Sends one frame; the null socket never blocks, so the future finishes in one poll.
fn send(conn: &mut WsConnection<NullSocket>, frame: &SharedFrame) {
    let mut sending = pin!(conn.send_frames(std::slice::from_ref(frame)));
    match sending
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result.expect("null socket write"),
        Poll::Pending => panic!("a null socket write never waits"),
    }
}

/// A slot encoder of the emulated transports.
type Encoder = fn(&[u8]) -> Bytes;

/// Application JSON of exactly `size` bytes (at least 30) that compresses like real data:
/// ticker records with pseudo-random numbers (a fixed LCG, so every run encodes the same bytes)
/// and a random-looking id filling the rest.
fn payload(size: usize) -> String {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let sides = ["buy", "sell"];
    // `{"rows":[` + records joined by `,` + `],"id":"` + id + `"}`
    let frame = 9 + 8 + 2;
    let mut rows = String::new();
    loop {
        let record = format!(
            r#"{{"id":{},"sym":"K{:03}","px":{}.{:02},"qty":{},"side":"{}"}}"#,
            next() % 1_000_000,
            next() % 1000,
            next() % 10_000,
            next() % 100,
            next() % 5000,
            sides[(next() % 2) as usize],
        );
        let comma = usize::from(!rows.is_empty());
        if frame + rows.len() + comma + record.len() + 8 > size {
            break;
        }
        if comma == 1 {
            rows.push(',');
        }
        rows.push_str(&record);
    }
    let id: String = (0..size.saturating_sub(frame + rows.len()))
        .map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[(next() % 36) as usize]))
        .collect();
    let json = format!(r#"{{"rows":[{rows}],"id":"{id}"}}"#);
    assert_eq!(json.len(), size);
    json
}

/// The push frame's JSON for a publication of `data`, as the hub builds it.
fn push_json(data: &str) -> Bytes {
    let publication = Publication {
        binary: None,
        data: raw_json(data).expect("json"),
        offset: Some(123_456),
        info: None,
    };
    Bytes::from(encode_publication("ticker:prices", &publication))
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in SIZES {
        let data = payload(size);
        let json = push_json(&data);
        group.throughput(Throughput::Bytes(json.len() as u64));
        let size = format!("{size}B");

        // The hub's encode-once step: publication -> push JSON -> SharedFrame.
        let publication = Publication {
            binary: None,
            data: raw_json(&data).expect("json"),
            offset: Some(123_456),
            info: None,
        };
        group.bench_function(BenchmarkId::new("push_json", &size), |b| {
            b.iter(|| {
                SharedFrame::new(encode_publication(
                    black_box("ticker:prices"),
                    black_box(&publication),
                ))
            });
        });

        // WebSocket: through send_frames, which picks and fills the slot.
        let offers = [
            ("ws_plain", None),
            ("ws_deflate15", Some("permessage-deflate")),
            (
                "ws_deflate9",
                Some("permessage-deflate; server_max_window_bits=9"),
            ),
        ];
        for (name, offer) in offers {
            let mut conn = connection(offer);
            group.bench_function(BenchmarkId::new(format!("{name}/first"), &size), |b| {
                b.iter_batched(
                    || SharedFrame::new(json.clone()),
                    |frame| {
                        send(&mut conn, &frame);
                        frame
                    },
                    BatchSize::SmallInput,
                );
            });
            let frame = SharedFrame::new(json.clone());
            send(&mut conn, &frame);
            group.bench_function(BenchmarkId::new(format!("{name}/cached"), &size), |b| {
                b.iter(|| send(&mut conn, black_box(&frame)));
            });
            black_box(conn.get_ref().written);
        }

        // SSE and NDJSON: SharedFrame::encoded with the server's encoders.
        let emulated: [(&str, EncodingSlot, Encoder); 2] = [
            ("sse", SLOT_SSE, sse_event),
            ("ndjson", SLOT_NDJSON, ndjson_line),
        ];
        for (name, slot, encoder) in emulated {
            group.bench_function(BenchmarkId::new(format!("{name}/first"), &size), |b| {
                b.iter_batched(
                    || SharedFrame::new(json.clone()),
                    |frame| {
                        black_box(frame.encoded(slot, encoder));
                        frame
                    },
                    BatchSize::SmallInput,
                );
            });
            let frame = SharedFrame::new(json.clone());
            frame.encoded(slot, encoder);
            group.bench_function(BenchmarkId::new(format!("{name}/cached"), &size), |b| {
                b.iter(|| frame.encoded(slot, |_| unreachable!("slot filled above")));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
