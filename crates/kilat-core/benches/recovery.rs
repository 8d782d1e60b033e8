//! Recovery reads: a client that missed 10, 100 or 1,000 publications of a channel whose history
//! holds 1,000 (the dev namespace's `history_size`), each with a ~100-byte payload.
//!
//! - `engine_history/M_of_K`: [`MemoryBroker::history`] with the query recovery makes
//!   ([`Recovery::query`]: everything after the client's offset) for M missed publications of
//!   a channel keeping K, i.e. the engine's share. `10_of_10` is the same read on a channel
//!   holding only the 10 recovered: the difference to `10_of_1000` is the cost of the kept
//!   publications the read passes over.
//! - `session_subscribe`: the whole command as a session runs it: `subscribe` with
//!   `recover: true`, offset and epoch, through [`Session::handle_message`] on a memory-engine
//!   [`Node`] (join the live stream, read history, decide, encode the reply with the
//!   publications into the outbox). Only the subscribe is timed; the unsubscribe that resets the
//!   session for the next iteration is not. `0` missed is the same subscribe with nothing to
//!   recover: the fixed cost a recovering subscribe pays.
//!
//! `cargo bench -p kilat-core --bench recovery`
//! (`-- --warm-up-time 1 --measurement-time 3` for a quick run)

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kilat_core::engine::memory::MemoryBroker;
use kilat_core::engine::{Broker, PublishOptions};
use kilat_core::recovery::Recovery;
use kilat_core::{HistoryOptions, Node, NodeConfig, Outbox, Session, TransportInfo};
use kilat_protocol::types::raw_json;
use kilat_protocol::{Publication, SharedFrame};

/// Publications kept in the channel: the dev namespace's `history_size`.
const HISTORY: u64 = 1000;
/// Publications the client missed, one case each.
const MISSED: [u64; 3] = [10, 100, 1000];

/// A ~100-byte JSON payload, different for each offset like real traffic.
fn payload(i: u64) -> String {
    format!(
        r#"{{"user":"user-{:04}","text":"message number {i:06} in the bench channel","ts":{}}}"#,
        i % 977,
        1_760_000_000_000 + i * 37
    )
}

/// Runs a future that never waits (the memory engine takes no async locks) without a runtime,
/// so its cost is not mixed with a scheduler's.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the memory engine never waits"),
    }
}

fn engine_history(c: &mut Criterion) {
    let broker = MemoryBroker::default();
    let options = PublishOptions {
        history_size: HISTORY as usize,
        history_ttl: Duration::from_secs(600),
    };
    // `feed` holds the full history; `short` only as many publications as are recovered, to
    // tell the cost of the publications returned from the cost of the ones passed over.
    let mut channels = vec![("feed", HISTORY)];
    channels.push(("short", MISSED[0]));
    let mut epochs = Vec::new();
    for (channel, kept) in &channels {
        for i in 0..*kept {
            let publication = Publication {
                binary: None,
                data: raw_json(&payload(i)).expect("json"),
                offset: None,
                info: None,
            };
            now(broker.publish(channel, publication, options)).expect("publish");
        }
        let position = now(broker.history(channel, Recovery::ToEnd.query()))
            .expect("position")
            .position;
        assert_eq!(position.offset, *kept);
        epochs.push(position.epoch);
    }

    let mut group = c.benchmark_group("recovery/engine_history");
    let cases = MISSED
        .iter()
        .map(|missed| (channels[0], &epochs[0], *missed))
        .chain([(channels[1], &epochs[1], MISSED[0])]);
    for ((channel, kept), epoch, missed) in cases {
        let recovery = Recovery::From {
            offset: kept - missed,
            epoch: epoch.clone(),
        };
        let query = recovery.query();
        let page = now(broker.history(channel, query)).expect("history");
        assert_eq!(page.publications.len() as u64, missed);
        group.throughput(Throughput::Elements(missed));
        group.bench_function(format!("{missed}_of_{kept}"), |b| {
            b.iter(|| now(broker.history(channel, black_box(query))).expect("history"));
        });
    }
    group.finish();
}

fn session_subscribe(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = NodeConfig::dev();
    // The bench sends thousands of commands a second on one connection.
    config.client_command_rate = 0.0;
    let node = Node::new(config);
    let outbox = Outbox::new(usize::MAX / 2);
    let mut session = Session::new(
        &node,
        TransportInfo {
            name: "bench",
            emulated: false,
        },
        outbox.clone(),
    );
    let epoch = runtime.block_on(async {
        session
            .handle_message(br#"{"id":1,"connect":{}}"#)
            .await
            .expect("connect");
        for i in 0..HISTORY {
            node.publish("feed", raw_json(&payload(i)).expect("json"))
                .await
                .expect("publish");
        }
        node.history("feed", HistoryOptions::default())
            .await
            .expect("history")
            .epoch
    });
    let mut batch: Vec<SharedFrame> = Vec::new();
    let mut drain = |outbox: &Outbox| {
        outbox.drain(&mut batch, usize::MAX);
        let bytes: usize = batch.iter().map(SharedFrame::len).sum();
        batch.clear();
        bytes
    };
    drain(&outbox);
    let unsubscribe = br#"{"id":3,"unsubscribe":{"channel":"feed"}}"#;

    let mut group = c.benchmark_group("recovery/session_subscribe");
    for missed in [0].into_iter().chain(MISSED) {
        let subscribe = format!(
            r#"{{"id":2,"subscribe":{{"channel":"feed","recover":true,"offset":{},"epoch":"{epoch}","#,
            HISTORY - missed
        ) + r#""join_leave":false}}"#;
        // Check once that this is a recovery with `missed` publications in the reply.
        runtime.block_on(async {
            session
                .handle_message(subscribe.as_bytes())
                .await
                .expect("subscribe");
            let mut frames = Vec::new();
            outbox.drain(&mut frames, usize::MAX);
            let reply = String::from_utf8_lossy(frames[0].json()).into_owned();
            assert!(reply.contains(r#""recovered":true"#), "{reply}");
            assert_eq!(reply.matches(r#""offset":"#).count() as u64, missed + 1);
            session.handle_message(unsubscribe).await.expect("unsub");
        });
        drain(&outbox);
        group.bench_function(BenchmarkId::from_parameter(missed), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    runtime
                        .block_on(session.handle_message(subscribe.as_bytes()))
                        .expect("subscribe");
                    timed += start.elapsed();
                    runtime
                        .block_on(session.handle_message(unsubscribe))
                        .expect("unsubscribe");
                    black_box(drain(&outbox));
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, engine_history, session_subscribe);
criterion_main!(benches);
