//! Three kilat nodes on one real `redis-server`, clients spread over them.

use futures_util::SinkExt;
use kilat_server::config::EngineKind;
use kilat_testkit::RedisServer;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, connect, next_json, next_non_presence};

async fn node(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::start(move |c| {
        c.engine.kind = EngineKind::Redis;
        c.engine.redis_url = url;
    })
    .await
}

async fn subscribe(ws: &mut Client, channel: &str) {
    ws.send(Message::text(format!(
        r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#
    )))
    .await
    .expect("subscribe");
    let reply = next_non_presence(ws).await;
    assert!(reply["subscribe"].is_object(), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_from_every_node_reach_every_subscriber_once_in_order() {
    let Some(redis) =
        RedisServer::start("publications_from_every_node_reach_every_subscriber_once_in_order")
    else {
        return;
    };
    let nodes = [node(&redis).await, node(&redis).await, node(&redis).await];
    // Two subscribers per node.
    let mut subscribers = Vec::new();
    for server in &nodes {
        for _ in 0..2 {
            let (mut ws, _) = connect(server).await;
            subscribe(&mut ws, "room").await;
            subscribers.push(ws);
        }
    }
    // A publisher on each node, 10 publications each, round robin.
    let mut publishers = Vec::new();
    for server in &nodes {
        publishers.push(connect(server).await.0);
    }
    let mut id = 10;
    for round in 0..10 {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            id += 1;
            publisher
                .send(Message::text(format!(
                    r#"{{"id":{id},"publish":{{"channel":"room","data":{{"from":{p},"n":{round}}}}}}}"#
                )))
                .await
                .expect("publish");
            let reply = next_json(publisher).await;
            assert!(reply["publish"].is_object(), "{reply}");
        }
    }
    // Every subscriber sees offsets 1..=30 exactly once, in order, and each publisher's
    // messages in the order it sent them.
    for (i, ws) in subscribers.iter_mut().enumerate() {
        let mut last_n = [-1i64; 3];
        for offset in 1..=30u64 {
            let push = next_non_presence(ws).await;
            let publication = &push["push"]["pub"];
            assert_eq!(publication["offset"], offset, "subscriber {i}: {push}");
            let from = publication["data"]["from"].as_u64().expect("from") as usize;
            let n = publication["data"]["n"].as_i64().expect("n");
            assert!(
                n > last_n[from],
                "subscriber {i}: publisher {from} out of order"
            );
            last_n[from] = n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_info_agree_across_nodes() {
    let Some(redis) = RedisServer::start("presence_and_info_agree_across_nodes") else {
        return;
    };
    let a = node(&redis).await;
    let b = node(&redis).await;
    let (mut on_a, _) = connect(&a).await;
    subscribe(&mut on_a, "lobby").await;
    let (mut on_b, _) = connect(&b).await;
    subscribe(&mut on_b, "lobby").await;
    for ws in [&mut on_a, &mut on_b] {
        ws.send(Message::text(
            r#"{"id":3,"presence_stats":{"channel":"lobby"}}"#,
        ))
        .await
        .expect("presence_stats");
        let reply = next_non_presence(ws).await;
        assert_eq!(reply["presence_stats"]["num_clients"], 2, "{reply}");
    }
    // `info` on either node lists both once they have sent a heartbeat (at start-up).
    for server in [&a, &b] {
        let (status, body) = crate::support::http_post(server.addr, "/api/info", "{}").await;
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
        let nodes = answer["result"]["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 2, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulation_posts_reaching_another_node_are_forwarded() {
    let Some(redis) = RedisServer::start("emulation_posts_reaching_another_node_are_forwarded")
    else {
        return;
    };
    let a = node(&redis).await;
    let b = node(&redis).await;
    // An SSE session lives on node A ...
    let (status, mut stream) =
        crate::emulation::Stream::open(a.addr, true, r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(status, 200);
    let connected = stream.next().await;
    let session = connected["connect"]["session"]
        .as_str()
        .expect("session")
        .to_owned();
    let node_id = connected["connect"]["node"]
        .as_str()
        .expect("node")
        .to_owned();
    // Issue 20: a POST forwarded with the client id (which other users see) instead of the
    // secret key is dropped by the owning node; the forged command never runs, so the next
    // reply on the stream is the owner's own (id 2 below), not id 66.
    let client = connected["connect"]["client"].as_str().expect("client");
    let forged = serde_json::json!({
        "session": client,
        "node": node_id,
        "command": {"id": 66, "subscribe": {"channel": "forged"}},
    })
    .to_string();
    assert_eq!(crate::emulation::post_emulation(b.addr, forged).await, 204);
    // ... and its command is POSTed to node B (as a load balancer may do).
    let body = serde_json::json!({
        "session": session,
        "node": node_id,
        "command": {"id": 2, "subscribe": {"channel": "forwarded"}},
    })
    .to_string();
    assert_eq!(crate::emulation::post_emulation(b.addr, body).await, 204);
    let reply = stream.next().await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert!(reply["subscribe"].is_object(), "{reply}");
    // A node id nobody listens to is answered 404.
    let gone = serde_json::json!({"session": "x", "node": "no-such-node", "command": {"id": 3, "presence": {"channel": "x"}}})
        .to_string();
    assert_eq!(crate::emulation::post_emulation(b.addr, gone).await, 404);
}
