use std::time::Duration;

use kilat_core::{NamespaceOptions, Node, NodeConfig};
use kilat_protocol::types::raw_json;
use serde_json::json;

use crate::support::*;

const WINDOW: Duration = Duration::from_millis(100);

/// A node whose `ticker` namespace keeps history and conflates to one publication per 100 ms;
/// the default namespace keeps history too but does not conflate.
fn ticker_node() -> Node {
    let mut config = NodeConfig {
        allow_anonymous: true,
        default_namespace: Some(NamespaceOptions {
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            ..NamespaceOptions::dev()
        }),
        ..NodeConfig::default()
    };
    config.namespaces.insert(
        "ticker".into(),
        NamespaceOptions {
            conflate_ms: WINDOW.as_millis() as u64,
            ..config.default_namespace.clone().expect("set above")
        },
    );
    Node::new(config)
}

async fn publish(node: &Node, channel: &str, n: u64) {
    node.publish(channel, raw_json(&n.to_string()).expect("json"))
        .await
        .expect("publish");
}

/// Sleeps on tokio's paused clock until just past the end of the window running now: the
/// window's timer fires first, so its delivery has happened when this returns.
async fn past_the_window() {
    tokio::time::sleep(WINDOW + Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_ticker_gets_the_first_price_at_once_then_the_newest_per_window() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    let reply = c.call("subscribe", json!({"channel": "ticker:btc"})).await;
    assert!(reply.get("error").is_none(), "{reply}");

    for n in 1..=5 {
        publish(&node, "ticker:btc", n).await;
    }
    assert_eq!(
        pubs(&c.frames(), "ticker:btc"),
        [(Some(1), json!(1))],
        "the first publication after a quiet spell goes out at once"
    );
    past_the_window().await;
    assert_eq!(
        pubs(&c.frames(), "ticker:btc"),
        [(Some(5), json!(5))],
        "only the newest of the window, its offset skipping 2 to 4"
    );

    // A window with nothing new closes; the next publication goes out at once again.
    past_the_window().await;
    publish(&node, "ticker:btc", 6).await;
    let frames = c.frames();
    assert_eq!(pubs(&frames, "ticker:btc"), [(Some(6), json!(6))]);
    assert!(
        frames
            .iter()
            .all(|f| f["push"].get("unsubscribe").is_none()),
        "skipped offsets are not a lost position: {frames:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn history_keeps_every_publication_of_a_conflated_channel() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "ticker:eth"})).await;
    for n in 1..=4 {
        publish(&node, "ticker:eth", n).await;
    }
    past_the_window().await;
    assert_eq!(
        pubs(&c.frames(), "ticker:eth"),
        [(Some(1), json!(1)), (Some(4), json!(4))]
    );
    // Conflation thins live delivery only; a reader of history (or a recovering subscriber)
    // still finds every publication.
    let history = c
        .call("history", json!({"channel": "ticker:eth", "limit": 10}))
        .await;
    let offsets: Vec<u64> = history["history"]["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .filter_map(|p| p["offset"].as_u64())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn channels_without_conflate_ms_get_every_publication() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "news"})).await;
    for n in 1..=5 {
        publish(&node, "news", n).await;
    }
    let offsets: Vec<Option<u64>> = pubs(&c.frames(), "news")
        .into_iter()
        .map(|(offset, _)| offset)
        .collect();
    assert_eq!(offsets, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
}
