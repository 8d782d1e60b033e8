//! JSON against MessagePack on real kilat frames: bytes on the wire, the server's cost to
//! produce each encoding of a frame (once per frame, whatever the subscriber count), and the
//! cost to read a frame back. Frames: a ticker publication push (about 150 B of JSON), a 10 KB
//! document push, a subscribe reply recovering 10 ticker publications, and a push of 4 KiB of
//! binary data (base64 in JSON, raw bytes in MessagePack).
//!
//! `cargo bench -p kilat-protocol --bench encoding` (prints a table; figures in
//! docs/protocol.md section 2.1).

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kilat_protocol::msgpack::{json_to_msgpack, msgpack_to_json};
use kilat_protocol::push::encode_publication;
use kilat_protocol::reply::SubscribeResult;
use kilat_protocol::types::raw_json;
use kilat_protocol::{ClientInfo, Publication, Reply};

/// Builds one frame's JSON, the way the hub does.
type MakeFrame = Box<dyn Fn() -> Vec<u8>>;

fn ticker(i: u64) -> Publication {
    Publication {
        binary: None,
        data: raw_json(&format!(
            r#"{{"symbol":"ACME","bid":{:.2},"ask":{:.2},"last":{:.2},"volume":{},"ts":{}}}"#,
            101.25 + i as f64 / 100.0,
            101.27 + i as f64 / 100.0,
            101.26 + i as f64 / 100.0,
            1_234_567 + i * 10,
            1_764_680_000_123u64 + i
        ))
        .expect("json"),
        offset: Some(1000 + i),
        info: Some(ClientInfo {
            client: "4f1c2a9e-5d7b-4c1a-9e3f-0b6d8a2c7e11".into(),
            user: "feed".into(),
            info: None,
        }),
    }
}

fn document() -> Publication {
    let rows: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"item {i}","price":{}.5,"tags":["a","b"],"ok":true}}"#,
                i * 3
            )
        })
        .collect();
    let mut data = format!(r#"{{"rows":[{}]}}"#, rows.join(","));
    while data.len() < 10_000 {
        data.insert_str(1, r#""pad":"xxxxxxxxxxxxxxxx","#);
    }
    Publication {
        binary: None,
        data: raw_json(&data).expect("json"),
        offset: Some(7),
        info: None,
    }
}

/// Median time of `f` over batches filling about `budget`.
fn time(budget: Duration, mut f: impl FnMut()) -> Duration {
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 11 {
        let t = Instant::now();
        for _ in 0..100 {
            f();
        }
        samples.push(t.elapsed() / 100);
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let budget = Duration::from_millis(400);
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let history = Reply::Subscribe(SubscribeResult {
        recoverable: true,
        epoch: "b12e5b771c9d5c23".into(),
        offset: 1009,
        recovered: true,
        publications: (0..10).map(ticker).collect(),
        positioned: true,
        ..Default::default()
    });
    let (tick, doc) = (ticker(1), document());
    let frames: Vec<(&str, MakeFrame)> = vec![
        (
            "ticker pub push",
            Box::new(move || encode_publication("ticker:ACME", &tick)),
        ),
        (
            "10 KB document push",
            Box::new(move || encode_publication("doc:1", &doc)),
        ),
        (
            "subscribe reply, 10 recovered",
            Box::new(move || history.encode(2)),
        ),
        (
            "4 KiB binary push",
            // The JSON form carries the bytes as base64 (`b64data`).
            Box::new(move || {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
                format!(
                    r#"{{"push":{{"channel":"media:cam","pub":{{"b64data":"{b64}","offset":9}}}}}}"#
                )
                .into_bytes()
            }),
        ),
    ];
    println!(
        "| frame | JSON bytes | MessagePack bytes | JSON encode (hub, once) | + MessagePack transcode (once) | client read: JSON -> Value | client read: MessagePack -> JSON -> Value | server read: MessagePack -> JSON |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, make) in &frames {
        let json = make();
        let packed = json_to_msgpack(&json).expect("transcodes");
        let encode_json = time(budget, || {
            black_box(make());
        });
        let transcode = time(budget, || {
            black_box(json_to_msgpack(black_box(&json)).expect("ok"));
        });
        let read_json = time(budget, || {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&json)).expect("ok"));
        });
        let read_packed = time(budget, || {
            let text = msgpack_to_json(black_box(&packed), usize::MAX).expect("ok");
            black_box(serde_json::from_slice::<serde_json::Value>(&text).expect("ok"));
        });
        let server_read = time(budget, || {
            black_box(msgpack_to_json(black_box(&packed), usize::MAX).expect("ok"));
        });
        println!(
            "| {name} | {} | {} ({:.0}%) | {:.2} µs | {:.2} µs | {:.2} µs | {:.2} µs | {:.2} µs |",
            json.len(),
            packed.len(),
            packed.len() as f64 * 100.0 / json.len() as f64,
            encode_json.as_secs_f64() * 1e6,
            transcode.as_secs_f64() * 1e6,
            read_json.as_secs_f64() * 1e6,
            read_packed.as_secs_f64() * 1e6,
            server_read.as_secs_f64() * 1e6,
        );
    }
}
