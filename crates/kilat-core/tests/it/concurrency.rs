use kilat_core::{HistoryOptions, NamespaceOptions, Node, NodeConfig};
use kilat_protocol::types::raw_json;
use serde_json::json;

use crate::support::*;

/// Publishers and recovering subscribers run in parallel on a multi-threaded runtime; every
/// subscriber sees every offset after its reply position exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_publishers_and_recovering_subscribers_see_no_gap() {
    const PUBLISHERS: u64 = 4;
    const PER_PUBLISHER: u64 = 300;
    const SUBSCRIBERS: usize = 8;
    let mut config = NodeConfig::dev();
    config.client_queue_max_bytes = 64 << 20;
    config.default_namespace = Some(NamespaceOptions {
        history_size: 10_000,
        join_leave: false,
        presence: false,
        ..NamespaceOptions::dev()
    });
    let node = Node::new(config);
    let epoch = node
        .history(
            "hot",
            HistoryOptions {
                limit: Some(0),
                ..HistoryOptions::default()
            },
        )
        .await
        .expect("history")
        .epoch;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let node = node.clone();
            tokio::spawn(async move {
                for i in 0..PER_PUBLISHER {
                    node.publish("hot", raw_json(&(p * 1000 + i).to_string()).expect("json"))
                        .await
                        .expect("publish");
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|s| {
            let node = node.clone();
            let epoch = epoch.clone();
            tokio::spawn(async move {
                for _ in 0..s * 5 {
                    tokio::task::yield_now().await;
                }
                let mut c = Client::new(&node);
                c.connect().await;
                // Half recover from the start of the stream, half position at the end.
                let params = if s % 2 == 0 {
                    json!({"channel": "hot", "recover": true, "offset": 0, "epoch": epoch})
                } else {
                    json!({"channel": "hot", "recover": true})
                };
                let reply = c.call("subscribe", params).await;
                let result = &reply["subscribe"];
                let recovered: Vec<u64> = result["publications"]
                    .as_array()
                    .expect("publications")
                    .iter()
                    .map(|p| p["offset"].as_u64().expect("offset"))
                    .collect();
                if s % 2 == 0 {
                    assert_eq!(result["recovered"], json!(true));
                    assert_eq!(recovered, (1..=recovered.len() as u64).collect::<Vec<_>>());
                }
                let position = result["offset"].as_u64().expect("offset");
                (c, position)
            })
        })
        .collect();
    for p in publishers {
        p.await.expect("publisher");
    }
    let total = PUBLISHERS * PER_PUBLISHER;
    for s in subscribers {
        let (mut c, position) = s.await.expect("subscriber");
        let live: Vec<u64> = pubs(&c.frames(), "hot")
            .into_iter()
            .map(|(o, _)| o.expect("offset"))
            .collect();
        assert_eq!(
            live,
            (position + 1..=total).collect::<Vec<_>>(),
            "live after position {position}: no gap, no duplicate, in order"
        );
        c.close().await;
    }
    assert_eq!(node.stats().subscriptions, 0);
}
