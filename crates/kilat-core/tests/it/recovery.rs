use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kilat_core::engine::memory::{MemoryBroker, MemoryPresence};
use kilat_core::engine::{BrokerHandler, PublishOptions};
use kilat_core::{NamespaceOptions, Node, NodeConfig};
use kilat_protocol::types::raw_json;
use kilat_protocol::{ClientInfo, Publication};
use serde_json::{Value, json};

use crate::support::*;

fn offsets_of(result: &Value) -> Vec<u64> {
    result["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect()
}

async fn publish_n(node: &Node, channel: &str, n: u64) {
    for i in 0..n {
        node.publish(channel, raw_json(&i.to_string()).expect("json"))
            .await
            .expect("publish");
    }
}

#[tokio::test]
async fn recovers_everything_after_the_offset_in_the_same_epoch() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    publish_n(&node, "r", 5).await;
    let epoch = node
        .history("r", kilat_core::HistoryOptions::default())
        .await
        .expect("history")
        .epoch;
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "r", "recover": true, "offset": 2, "epoch": epoch}),
        )
        .await;
    let result = &reply["subscribe"];
    assert_eq!(result["recovered"], json!(true));
    assert_eq!(result["positioned"], json!(true));
    assert_eq!(offsets_of(result), [3, 4, 5]);
    assert_eq!(result["offset"], json!(5));
    publish_n(&node, "r", 1).await;
    assert_eq!(
        pubs(&c.frames(), "r"),
        [(Some(6), json!(0))],
        "live continues at 6"
    );
}

#[tokio::test]
async fn recover_without_offset_positions_at_the_end() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    publish_n(&node, "r", 3).await;
    let reply = c
        .call("subscribe", json!({"channel": "r", "recover": true}))
        .await;
    let result = &reply["subscribe"];
    assert_eq!(result["recovered"], json!(false));
    assert_eq!(result["positioned"], json!(true));
    assert_eq!(result["offset"], json!(3));
    assert!(offsets_of(result).is_empty());
}

#[tokio::test]
async fn not_recovered_when_the_window_lost_publications() {
    let mut config = NodeConfig::dev();
    config.default_namespace = Some(NamespaceOptions {
        history_size: 3,
        ..NamespaceOptions::dev()
    });
    let node = Node::new(config);
    let mut c = Client::new(&node);
    c.connect().await;
    publish_n(&node, "r", 6).await;
    let epoch = node
        .history("r", kilat_core::HistoryOptions::default())
        .await
        .expect("history")
        .epoch;
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "r", "recover": true, "offset": 1, "epoch": epoch}),
        )
        .await;
    assert_eq!(reply["subscribe"]["recovered"], json!(false));
    assert_eq!(
        offsets_of(&reply["subscribe"]),
        [4, 5, 6],
        "what is left is returned"
    );
}

#[tokio::test]
async fn not_recovered_in_another_epoch() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    publish_n(&node, "r", 2).await;
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "r", "recover": true, "offset": 1, "epoch": "gone"}),
        )
        .await;
    assert_eq!(reply["subscribe"]["recovered"], json!(false));
    assert!(offsets_of(&reply["subscribe"]).is_empty());
    assert_eq!(reply["subscribe"]["offset"], json!(2));
}

#[tokio::test]
async fn connect_subs_recover_and_go_live_after_the_connect_reply() {
    let node = dev_node();
    let mut first = Client::new(&node);
    first.connect().await;
    let sub = first.call("subscribe", json!({"channel": "r"})).await;
    let epoch = sub["subscribe"]["epoch"].clone();
    first.close().await;
    publish_n(&node, "r", 2).await;
    let mut again = Client::new(&node);
    let reply = again
        .call(
            "connect",
            json!({"subs": {"r": {"recover": true, "offset": 0, "epoch": epoch}, "bad channel": {}}}),
        )
        .await;
    let r = &reply["connect"]["subs"]["r"];
    assert_eq!(r["recovered"], json!(true), "{reply}");
    assert_eq!(offsets_of(r), [1, 2]);
    let frames = again.frames();
    assert!(
        frames
            .iter()
            .any(|f| f["push"]["channel"] == json!("bad channel")
                && f["push"]["unsubscribe"]["code"] == json!(400)),
        "a refused sub is reported with an unsubscribe push: {frames:?}"
    );
    publish_n(&node, "r", 1).await;
    assert_eq!(pubs(&again.frames(), "r"), [(Some(3), json!(0))]);
}

#[tokio::test]
async fn publications_during_recovery_follow_the_reply_without_gap_or_duplicate() {
    let broker = Arc::new(Twisted(Interleaving {
        inner: MemoryBroker::default(),
        before: 3,
        after: 2,
        only_since: false,
        options: PublishOptions {
            history_size: 1000,
            history_ttl: Duration::from_secs(600),
        },
    }));
    let node = Node::with_engine(NodeConfig::dev(), broker, Arc::new(MemoryPresence::new()));
    let mut c = Client::new(&node);
    c.connect().await;
    // The position 0 in this epoch: read it through history (which itself interleaves).
    let epoch = node
        .history("r", kilat_core::HistoryOptions::default())
        .await
        .expect("history")
        .epoch; // offsets 1..=3 before, 4..=5 after this read
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "r", "recover": true, "offset": 2, "epoch": epoch}),
        )
        .await;
    // Before the subscribe's read: 6..=8 published (held, and in history). After: 9..=10 (held).
    let result = &reply["subscribe"];
    assert_eq!(result["recovered"], json!(true));
    assert_eq!(offsets_of(result), [3, 4, 5, 6, 7, 8]);
    let live: Vec<_> = pubs(&c.frames(), "r").into_iter().map(|(o, _)| o).collect();
    assert_eq!(
        live,
        [Some(9), Some(10)],
        "held publications after the reply, no duplicates"
    );
}

/// Wraps the memory broker's handler and drops the delivery of chosen offsets, like a lost
/// Redis pub/sub message.
struct Lossy {
    inner: Arc<dyn BrokerHandler>,
    drop_offsets: Arc<Mutex<Vec<u64>>>,
    dropped: Arc<AtomicU64>,
}

impl BrokerHandler for Lossy {
    fn on_publication(&self, channel: &str, publication: &Publication, epoch: &str) {
        let offset = publication.offset.unwrap_or(0);
        if self.drop_offsets.lock().expect("lock").contains(&offset) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        self.inner.on_publication(channel, publication, epoch);
    }
    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        self.inner.on_join_leave(channel, info, join);
    }
}

#[derive(Debug)]
struct LossyBroker {
    inner: MemoryBroker,
    drop_offsets: Arc<Mutex<Vec<u64>>>,
    dropped: Arc<AtomicU64>,
}

impl Twist for LossyBroker {
    fn inner(&self) -> &MemoryBroker {
        &self.inner
    }
    fn handler(&self, handler: Arc<dyn BrokerHandler>) -> Arc<dyn BrokerHandler> {
        Arc::new(Lossy {
            inner: handler,
            drop_offsets: self.drop_offsets.clone(),
            dropped: self.dropped.clone(),
        })
    }
}

#[tokio::test]
async fn a_live_gap_is_repaired_from_history_before_later_publications() {
    let drop_offsets = Arc::new(Mutex::new(vec![2, 3]));
    let dropped = Arc::new(AtomicU64::new(0));
    let broker = Arc::new(Twisted(LossyBroker {
        inner: MemoryBroker::default(),
        drop_offsets: drop_offsets.clone(),
        dropped: dropped.clone(),
    }));
    let node = Node::with_engine(NodeConfig::dev(), broker, Arc::new(MemoryPresence::new()));
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "g"})).await;
    publish_n(&node, "g", 4).await; // 2 and 3 are lost live; 4 reveals the gap
    for _ in 0..10 {
        tokio::task::yield_now().await; // let the repair task read history
    }
    publish_n(&node, "g", 1).await;
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    let live: Vec<_> = pubs(&c.frames(), "g").into_iter().map(|(o, _)| o).collect();
    assert_eq!(live, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
}

#[tokio::test]
async fn an_epoch_change_asks_the_client_to_resubscribe() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "e"})).await;
    publish_n(&node, "e", 1).await;
    node.history_remove("e").await.expect("remove");
    publish_n(&node, "e", 1).await;
    let frames = c.frames();
    assert_eq!(
        pubs(&frames, "e"),
        [(Some(1), json!(0))],
        "nothing from the new epoch leaks"
    );
    let unsub = frames
        .iter()
        .find(|f| f["push"]["unsubscribe"].is_object())
        .expect("unsubscribe push");
    assert_eq!(unsub["push"]["unsubscribe"]["resubscribe"], json!(true));
    assert_eq!(unsub["push"]["unsubscribe"]["code"], json!(2500));
    // Resubscribing works (not 409) and says recovered false.
    let again = c
        .call(
            "subscribe",
            json!({"channel": "e", "recover": true, "offset": 1, "epoch": "old"}),
        )
        .await;
    assert_eq!(again["subscribe"]["recovered"], json!(false));
}
