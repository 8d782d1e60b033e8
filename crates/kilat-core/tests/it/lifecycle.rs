use std::time::Duration;

use kilat_core::{Node, NodeConfig, Outbox, Session};
use kilat_protocol::Disconnect;
use serde_json::json;
use tokio::time::Instant;

use crate::support::*;

fn timed_node() -> Node {
    let mut config = NodeConfig::dev();
    config.handshake_timeout = Duration::from_secs(3);
    config.ping_interval = Duration::from_secs(10);
    config.pong_timeout = Duration::from_secs(4);
    Node::new(config)
}

#[tokio::test(start_paused = true)]
async fn handshake_timeout_is_3003() {
    let node = timed_node();
    let mut c = Client::new(&node);
    let deadline = c.session().next_deadline();
    assert_eq!(deadline - Instant::now(), Duration::from_secs(3));
    c.session().on_timer(Instant::now()).expect("not yet");
    tokio::time::advance(Duration::from_secs(3)).await;
    let err = c.session().on_timer(Instant::now()).expect_err("timed out");
    assert_eq!(err, Disconnect::HANDSHAKE_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn ping_every_interval_and_no_pong_is_3002() {
    let node = timed_node();
    let mut c = Client::new(&node);
    c.connect().await;
    let deadline = c.session().next_deadline();
    assert_eq!(deadline - Instant::now(), Duration::from_secs(10));
    tokio::time::advance(Duration::from_secs(10)).await;
    c.session().on_timer(Instant::now()).expect("ping");
    assert_eq!(c.frames(), [json!({})], "the ping is an empty object");
    c.send_raw("{}").await.expect("pong");
    assert!(c.frames().is_empty(), "a pong is not answered");
    tokio::time::advance(Duration::from_secs(10)).await;
    c.session().on_timer(Instant::now()).expect("second ping");
    tokio::time::advance(Duration::from_secs(4)).await;
    let err = c.session().on_timer(Instant::now()).expect_err("no pong");
    assert_eq!(err, Disconnect::NO_PONG);
}

#[tokio::test(start_paused = true)]
async fn client_ping_is_answered() {
    let node = timed_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.send_raw("{}").await.expect("ping");
    assert_eq!(c.frames(), [json!({})]);
}

#[tokio::test]
async fn slow_consumer_is_closed_with_3001_and_publishers_never_wait() {
    let mut config = NodeConfig::dev();
    config.client_queue_max_bytes = 300;
    let node = Node::new(config);
    let mut slow = Client::new(&node);
    slow.connect().await;
    slow.call("subscribe", json!({"channel": "s"})).await;
    slow.frames();
    for i in 0..20 {
        node.publish(
            "s",
            kilat_protocol::types::raw_json(&format!("{i}")).expect("json"),
        )
        .await
        .expect("publishing never fails because of a slow subscriber");
    }
    assert_eq!(slow.close_reason(), Some(Disconnect::SLOW));
}

#[tokio::test]
async fn outbox_ready_wakes_the_transport_on_fan_out() {
    let node = dev_node();
    let outbox = Outbox::new(1 << 20);
    let mut session = Session::new(&node, WS, outbox.clone());
    session
        .handle_message(b"{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"w\"}}")
        .await
        .expect("connect + subscribe");
    let mut batch = Vec::new();
    outbox.drain(&mut batch, usize::MAX);
    batch.clear();
    let waiter = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            outbox.ready().await;
            let mut batch = Vec::new();
            outbox.drain(&mut batch, usize::MAX);
            batch.len()
        })
    };
    tokio::task::yield_now().await;
    node.publish("w", kilat_protocol::types::raw_json("1").expect("json"))
        .await
        .expect("publish");
    assert_eq!(waiter.await.expect("waiter"), 1);
    session.close().await;
}
