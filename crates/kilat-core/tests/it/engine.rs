use std::sync::Arc;
use std::time::Duration;

use kilat_core::engine::memory::{MemoryBroker, MemoryPresence};
use kilat_core::engine::{Broker, HistoryQuery, PresenceStore, PublishOptions};
use kilat_core::testing::{broker_conformance, presence_conformance};
use kilat_protocol::{Publication, types::raw_json};

#[tokio::test]
async fn memory_broker_conforms() {
    broker_conformance(|| Arc::new(MemoryBroker::default()) as Arc<dyn Broker>).await;
}

#[tokio::test]
async fn memory_presence_conforms() {
    presence_conformance(Arc::new(MemoryPresence::new())).await;
}

fn publication(n: u64) -> Publication {
    Publication {
        binary: None,
        data: raw_json(&n.to_string()).expect("json"),
        offset: None,
        info: None,
    }
}

#[tokio::test(start_paused = true)]
async fn history_entries_expire_after_history_ttl() {
    let broker = MemoryBroker::new(Duration::from_secs(3600));
    let options = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
    };
    broker
        .publish("a", publication(1), options)
        .await
        .expect("publish");
    tokio::time::advance(Duration::from_secs(30)).await;
    broker
        .publish("a", publication(2), options)
        .await
        .expect("publish");
    tokio::time::advance(Duration::from_secs(31)).await;
    let page = broker
        .history("a", HistoryQuery::default())
        .await
        .expect("history");
    let offsets: Vec<_> = page.publications.iter().filter_map(|p| p.offset).collect();
    assert_eq!(offsets, [2], "the first entry expired, the second did not");
    assert_eq!(page.position.offset, 2, "the offset survives its entries");
}

#[tokio::test(start_paused = true)]
async fn stream_gets_a_new_epoch_after_meta_ttl() {
    let broker = MemoryBroker::new(Duration::from_secs(120));
    let options = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
    };
    let first = broker
        .publish("a", publication(1), options)
        .await
        .expect("publish")
        .expect("position");
    tokio::time::advance(Duration::from_secs(121)).await;
    let again = broker
        .publish("a", publication(2), options)
        .await
        .expect("publish")
        .expect("position");
    assert_ne!(first.epoch, again.epoch, "a lost stream gets a new epoch");
    assert_eq!(again.offset, 1);
}

#[tokio::test(start_paused = true)]
async fn presence_entries_expire_without_refresh() {
    let store = MemoryPresence::new();
    let info = kilat_protocol::ClientInfo {
        client: "c1".into(),
        user: "u".into(),
        info: None,
    };
    store
        .add("a", info.clone(), Duration::from_secs(10))
        .await
        .expect("add");
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(store.stats("a").await.expect("stats").num_clients, 1);
    store
        .add("a", info, Duration::from_secs(10))
        .await
        .expect("refresh");
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        store.stats("a").await.expect("stats").num_clients,
        1,
        "refreshed"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(store.list("a").await.expect("list").is_empty(), "expired");
}

#[tokio::test]
async fn the_memory_engine_is_one_node_no_registry_entries_and_no_inboxes() {
    use kilat_core::engine::memory::SingleNode;
    use kilat_core::{NodeInbox, NodeRegistry};
    let (registry, inbox): (&dyn NodeRegistry, &dyn NodeInbox) = (&SingleNode, &SingleNode);
    let info = kilat_protocol::types::raw_json(r#"{"id":"a"}"#).expect("json");
    registry
        .heartbeat("a", &info, Duration::from_secs(15))
        .await
        .expect("heartbeat");
    assert!(registry.nodes().await.expect("nodes").is_empty());
    registry.deregister("a").await.expect("deregister");
    let mut opened = inbox.open("a").await.expect("open");
    assert_eq!(inbox.send("a", b"hello").await.expect("send"), 0);
    assert_eq!(opened.recv().await, None, "nothing ever arrives");
}
