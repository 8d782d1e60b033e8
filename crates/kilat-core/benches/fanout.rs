//! Publishing to one channel with 1,000 and 10,000 local subscribers, with a small and a large
//! payload. If the push frame were encoded per subscriber, the large payload would cost far more
//! per delivery; with encode-once fan-out a delivery is one queue push whatever the size.
//!
//! `cargo bench -p kilat-core --bench fanout`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kilat_core::{Node, NodeConfig, Outbox, Session, TransportInfo};
use kilat_protocol::SharedFrame;

/// A node in dev mode with `n` connected sessions subscribed to `feed`.
fn subscribed(runtime: &tokio::runtime::Runtime, n: usize) -> (Node, Vec<(Session, Outbox)>) {
    runtime.block_on(async {
        let node = Node::new(NodeConfig::dev());
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n {
            let outbox = Outbox::new(usize::MAX / 2);
            let mut session = Session::new(
                &node,
                TransportInfo {
                    name: "bench",
                    emulated: false,
                },
                outbox.clone(),
            );
            session
                .handle_message(br#"{"id":1,"connect":{}}"#)
                .await
                .expect("connect");
            session
                .handle_message(br#"{"id":2,"subscribe":{"channel":"feed","join_leave":false}}"#)
                .await
                .expect("subscribe");
            sessions.push((session, outbox));
        }
        drain(&sessions);
        (node, sessions)
    })
}

fn drain(sessions: &[(Session, Outbox)]) {
    let mut batch: Vec<SharedFrame> = Vec::new();
    for (_, outbox) in sessions {
        outbox.drain(&mut batch, usize::MAX);
        batch.clear();
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("publish_to_one_channel");
    group.sample_size(20);
    for subscribers in [1_000usize, 10_000] {
        let (node, sessions) = subscribed(&runtime, subscribers);
        for payload in [100usize, 10_000] {
            let data = format!("{{\"text\":\"{}\"}}", "x".repeat(payload));
            group.throughput(Throughput::Elements(subscribers as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{subscribers}_subscribers"), format!("{payload}B")),
                &data,
                |b, data| {
                    b.iter(|| {
                        runtime.block_on(async {
                            let raw = kilat_protocol::types::raw_json(data).expect("json");
                            black_box(node.publish("feed", raw).await.expect("publish"));
                        });
                        drain(&sessions);
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
