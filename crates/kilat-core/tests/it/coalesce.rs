use std::sync::Arc;
use std::time::Duration;

use kilat_core::engine::memory::{MemoryBroker, MemoryPresence};
use kilat_core::engine::{BoxFuture, Broker, EngineError, HistoryPage, HistoryQuery};
use kilat_core::{Node, NodeConfig};
use kilat_protocol::types::raw_json;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::support::*;

/// The memory broker, counting history reads and holding each read's answer until the test
/// opens the gate (the read itself happens at once, like a slow network after the engine).
#[derive(Debug)]
struct Gated {
    inner: Arc<MemoryBroker>,
    reads: watch::Sender<u64>,
    gate: Arc<Semaphore>,
}

impl Twist for Gated {
    fn inner(&self) -> &MemoryBroker {
        &self.inner
    }
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        Box::pin(async move {
            let page = self.inner.history(channel, query).await;
            self.reads.send_modify(|n| *n += 1);
            self.gate.acquire().await.expect("gate open").forget();
            page
        })
    }
}

fn offsets(result: &Value) -> Vec<u64> {
    result["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect()
}

/// Waits (bounded) until `done` holds, yielding to the tasks that make it true.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_recovery_reads_share_one_engine_read_that_starts_after_they_joined() {
    const N: u64 = 64;
    let memory = Arc::new(MemoryBroker::default());
    let (reads, watch_reads) = watch::channel(0u64);
    let gate = Arc::new(Semaphore::new(0));
    let broker = Arc::new(Twisted(Gated {
        inner: memory.clone(),
        reads,
        gate: gate.clone(),
    }));
    let node = Node::with_engine(NodeConfig::dev(), broker, Arc::new(MemoryPresence::new()));
    for i in 0..5 {
        node.publish("storm", raw_json(&i.to_string()).expect("json"))
            .await
            .expect("publish");
    }
    let epoch = memory
        .history("storm", HistoryQuery::default())
        .await
        .expect("history")
        .position
        .epoch;
    let recover = json!({"channel": "storm", "recover": true, "offset": 2, "epoch": epoch});

    // The first recovering client's read reaches the engine and is held there.
    let mut first = Client::new(&node);
    first.connect().await;
    let params = recover.clone();
    let first = tokio::spawn(async move {
        let reply = first.call("subscribe", params).await;
        let live = first.frames_until(|f| !pubs(f, "storm").is_empty()).await;
        (reply, live)
    });
    let mut rx = watch_reads.clone();
    rx.wait_for(|n| *n == 1).await.expect("first read");

    // A publication lands after that read; then N clients recover from the same position.
    // Had they joined the read already in the engine they would miss offset 6.
    node.publish("storm", raw_json("5").expect("json"))
        .await
        .expect("publish");
    let mut tasks = Vec::new();
    for _ in 0..N {
        let mut client = Client::new(&node);
        client.connect().await;
        let params = recover.clone();
        tasks.push(tokio::spawn(async move {
            let reply = client.call("subscribe", params).await;
            (reply, client.frames())
        }));
    }
    // Every one but the first of them joins the read that waits for the first to finish.
    until("the clients joined one read", || {
        node.history_reads().1 == N - 1
    })
    .await;
    assert_eq!(*watch_reads.borrow(), 1, "nothing else reached the engine");
    gate.add_permits(usize::MAX >> 4);

    let (reply, live) = first.await.expect("first client");
    assert_eq!(offsets(&reply["subscribe"]), [3, 4, 5]);
    assert_eq!(reply["subscribe"]["recovered"], json!(true));
    assert_eq!(
        pubs(&live, "storm"),
        [(Some(6), json!(5))],
        "6 follows live"
    );
    let mut results = Vec::new();
    for task in tasks {
        let (reply, rest) = task.await.expect("client");
        let result = &reply["subscribe"];
        assert_eq!(result["recovered"], json!(true));
        assert_eq!(
            offsets(result),
            [3, 4, 5, 6],
            "the shared read saw offset 6"
        );
        assert_eq!(result["offset"], json!(6));
        assert!(pubs(&rest, "storm").is_empty(), "no duplicate of 6 live");
        results.push(result.clone());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "one shared page");
    assert_eq!(
        *watch_reads.borrow(),
        2,
        "{} recoveries, two engine reads",
        N + 1
    );
    assert_eq!(node.history_reads(), (2, N - 1));
}

#[tokio::test]
async fn different_queries_do_not_share_a_read() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    for i in 0..3 {
        node.publish("h", raw_json(&i.to_string()).expect("json"))
            .await
            .expect("publish");
    }
    let all = c
        .call("history", json!({"channel": "h", "limit": 10}))
        .await;
    let two = c.call("history", json!({"channel": "h", "limit": 2})).await;
    assert_eq!(
        all["history"]["publications"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        two["history"]["publications"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(node.history_reads(), (2, 0));
}
