use std::time::Duration;

use kilat_core::{NamespaceOptions, Node, NodeConfig};
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

#[tokio::test(start_paused = true)]
async fn join_and_leave_are_pushed_to_subscribers_as_diffs() {
    let node = dev_node();
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    a.connect().await;
    b.connect().await;
    a.call("subscribe", json!({"channel": "p"})).await;
    let a_id = a.session().client().expect("connected").client.clone();
    b.call("subscribe", json!({"channel": "p"})).await;
    let b_id = b.session().client().expect("connected").client.clone();
    b.close().await;
    let frames = a
        .frames_until(|f| presence_changes(f, "p").len() == 3)
        .await;
    assert_eq!(
        presence_changes(&frames, "p"),
        [(a_id, true), (b_id.clone(), true), (b_id.clone(), false)]
    );
    let diffs: Vec<_> = frames
        .iter()
        .filter(|f| f["push"]["presence_diff"].is_object())
        .collect();
    assert_eq!(
        diffs.len(),
        2,
        "the first change at once, the next two in one window: {frames:?}"
    );
    assert_eq!(
        diffs[1]["push"]["presence_diff"]["changes"][0]["join"]["client"],
        json!(b_id)
    );
    assert!(frames.iter().all(|f| f["push"].get("join").is_none()));
}

#[tokio::test]
async fn presence_diff_ms_zero_keeps_single_join_and_leave_pushes() {
    let node = node_with(
        "p",
        NamespaceOptions {
            presence_diff_ms: 0,
            ..NamespaceOptions::dev()
        },
    );
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    a.connect().await;
    b.connect().await;
    a.call("subscribe", json!({"channel": "p:x"})).await;
    a.frames();
    b.call("subscribe", json!({"channel": "p:x"})).await;
    let b_id = b.session().client().expect("connected").client.clone();
    let joins: Vec<_> = a
        .frames()
        .into_iter()
        .filter(|f| f["push"]["join"].is_object())
        .collect();
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0]["push"]["channel"], json!("p:x"));
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

#[tokio::test(start_paused = true)]
async fn join_leave_can_be_declined_per_subscription() {
    let node = dev_node();
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    let mut c = Client::new(&node);
    a.connect().await;
    b.connect().await;
    c.connect().await;
    a.call("subscribe", json!({"channel": "p", "join_leave": false}))
        .await;
    c.call("subscribe", json!({"channel": "p"})).await;
    b.call("subscribe", json!({"channel": "p"})).await;
    b.close().await;
    // c wants them: once c has b's leave, every diff that a could have got went out.
    c.frames_until(|f| presence_changes(f, "p").iter().any(|(_, join)| !join))
        .await;
    let frames = a.frames();
    assert!(presence_changes(&frames, "p").is_empty(), "{frames:?}");
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

#[tokio::test(start_paused = true)]
async fn above_presence_diff_max_subscribers_get_counts_instead_of_changes() {
    let node = node_with(
        "big",
        NamespaceOptions {
            presence_diff_max: 2,
            ..NamespaceOptions::dev()
        },
    );
    let mut clients: Vec<Client> = (0..4).map(|_| Client::new(&node)).collect();
    for c in &mut clients {
        c.connect().await;
        c.call("subscribe", json!({"channel": "big:x"})).await;
    }
    let count = |frames: &[serde_json::Value]| {
        frames
            .iter()
            .rev()
            .find_map(|f| f["push"]["presence_count"]["num_clients"].as_u64())
    };
    let frames = clients[0].frames_until(|f| count(f) == Some(4)).await;
    // The first join went out at once; the other three joined within its window, which ended
    // with the channel above the limit: counted, not listed.
    assert_eq!(presence_changes(&frames, "big:x").len(), 1, "{frames:?}");
    // A leave above the limit is counted too.
    let mut gone = clients.pop().expect("four clients");
    gone.close().await;
    let frames = clients[0].frames_until(|f| count(f) == Some(3)).await;
    assert!(presence_changes(&frames, "big:x").is_empty(), "{frames:?}");
    assert_eq!(
        frames
            .iter()
            .rev()
            .find_map(|f| f["push"]["presence_count"]["num_users"].as_u64()),
        Some(1)
    );
}

/// Refreshes go to the store as one touch per channel; an entry the store no longer holds
/// (lost, as with a Redis restart without persistence) is re-added by the next refresh, while
/// the client is still subscribed.
#[tokio::test(start_paused = true)]
async fn a_refresh_re_adds_an_entry_the_store_lost() {
    use std::sync::Arc;

    use kilat_core::engine::PresenceStore;
    use kilat_core::engine::memory::{MemoryBroker, MemoryPresence};

    let mut config = NodeConfig::dev();
    config.presence_ttl = Duration::from_secs(30);
    config.ping_interval = Duration::from_secs(20);
    let presence = Arc::new(MemoryPresence::new());
    let node = Node::with_engine(config, Arc::new(MemoryBroker::default()), presence.clone());
    let mut a = Client::new(&node);
    let mut b = Client::new(&node);
    let lost = a.connect().await["connect"]["client"]
        .as_str()
        .expect("client id")
        .to_owned();
    b.connect().await;
    a.call("subscribe", json!({"channel": "p"})).await;
    b.call("subscribe", json!({"channel": "p"})).await;
    presence.remove("p", &lost).await.expect("remove");
    assert_eq!(
        node.presence_stats("p").await.expect("stats").num_clients,
        1
    );

    tokio::time::advance(Duration::from_secs(20)).await;
    let now = tokio::time::Instant::now();
    a.session().on_timer(now).expect("ping");
    b.session().on_timer(now).expect("ping");
    // The refreshes are sent once their window is over.
    let deadline = now + Duration::from_secs(5);
    while node.presence_stats("p").await.expect("stats").num_clients < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lost entry was not re-added"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // And both entries now outlive the TTL they were added with (refreshed at 20 s).
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(
        node.presence_stats("p").await.expect("stats").num_clients,
        2
    );
}
