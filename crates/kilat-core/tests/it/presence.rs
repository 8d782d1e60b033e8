use std::time::Duration;

use kilat_core::{Node, NodeConfig};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn presence_lists_subscribers_and_counts_users() {
    let node = dev_node();
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    a.connect().await;
    b.connect().await;
    a.call("subscribe", json!({"channel": "p"})).await;
    b.call("subscribe", json!({"channel": "p"})).await;
    let presence = a.call("presence", json!({"channel": "p"})).await;
    let clients = presence["presence"]["clients"]
        .as_object()
        .expect("clients");
    assert_eq!(clients.len(), 2);
    let a_id = a.session().client().expect("connected").client.clone();
    assert_eq!(clients[&a_id]["user"], json!(""));
    let stats = a.call("presence_stats", json!({"channel": "p"})).await;
    assert_eq!(
        stats["presence_stats"],
        json!({"num_clients": 2, "num_users": 1})
    );
}

#[tokio::test]
async fn join_and_leave_are_pushed_to_subscribers() {
    let node = dev_node();
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    a.connect().await;
    b.connect().await;
    a.call("subscribe", json!({"channel": "p"})).await;
    a.frames();
    b.call("subscribe", json!({"channel": "p"})).await;
    let b_id = b.session().client().expect("connected").client.clone();
    let joins: Vec<_> = a
        .frames()
        .into_iter()
        .filter(|f| f["push"]["join"].is_object())
        .collect();
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0]["push"]["channel"], json!("p"));
    assert_eq!(joins[0]["push"]["join"]["info"]["client"], json!(b_id));
    b.close().await;
    let leaves: Vec<_> = a
        .frames()
        .into_iter()
        .filter(|f| f["push"]["leave"].is_object())
        .collect();
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0]["push"]["leave"]["info"]["client"], json!(b_id));
}

#[tokio::test]
async fn join_leave_can_be_declined_per_subscription() {
    let node = dev_node();
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    a.connect().await;
    b.connect().await;
    a.call("subscribe", json!({"channel": "p", "join_leave": false}))
        .await;
    b.call("subscribe", json!({"channel": "p"})).await;
    assert!(a.frames().iter().all(|f| !f["push"]["join"].is_object()));
}

#[tokio::test]
async fn presence_is_removed_on_disconnect_and_unsubscribe() {
    let node = dev_node();
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    a.connect().await;
    b.connect().await;
    a.call("subscribe", json!({"channel": "p"})).await;
    a.call("subscribe", json!({"channel": "q"})).await;
    b.call("subscribe", json!({"channel": "p"})).await;
    a.call("unsubscribe", json!({"channel": "q"})).await;
    assert_eq!(
        node.presence_stats("q").await.expect("stats").num_clients,
        0
    );
    a.close().await;
    let stats = node.presence_stats("p").await.expect("stats");
    assert_eq!(stats.num_clients, 1);
    assert_eq!(node.stats().subscriptions, 1);
}

#[tokio::test(start_paused = true)]
async fn presence_survives_via_ping_refresh_and_expires_without_it() {
    let mut config = NodeConfig::dev();
    config.presence_ttl = Duration::from_secs(30);
    config.ping_interval = Duration::from_secs(20);
    config.pong_timeout = Duration::from_secs(5);
    let node = Node::new(config);
    let mut a = Client::new(&node);
    a.connect().await;
    a.call("subscribe", json!({"channel": "p"})).await;
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(20)).await;
        let now = tokio::time::Instant::now();
        a.session().on_timer(now).expect("ping");
        a.send_raw("{}").await.expect("pong");
        tokio::task::yield_now().await; // the refresh task
        tokio::task::yield_now().await;
    }
    assert_eq!(
        node.presence_stats("p").await.expect("stats").num_clients,
        1
    );
    // A session that is dropped without close leaves presence behind until the TTL.
    let session = a.session.take().expect("session");
    drop(session);
    assert_eq!(
        node.stats().subscriptions,
        0,
        "drop removes the hub subscription"
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(
        node.presence_stats("p").await.expect("stats").num_clients,
        0
    );
}
