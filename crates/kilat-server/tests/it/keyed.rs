//! Per-key conflation and latest values through a real socket: a game room where players'
//! updates never drop each other, a late subscriber that gets every key at once, and a bad key
//! refused without disturbing anyone.

use futures_util::SinkExt;
use kilat_core::NamespaceOptions;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, connect, next_non_presence};

async fn start() -> TestServer {
    TestServer::start(|config| {
        config.node.namespaces.insert(
            "game".into(),
            NamespaceOptions {
                history_size: 1,
                conflate_ms: 100,
                conflate_key: Some("player".into()),
                latest: true,
                ..NamespaceOptions::dev()
            },
        );
    })
    .await
}

async fn send(ws: &mut Client, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

/// The reply to command `id`, skipping publications (returned too, in order).
async fn reply(ws: &mut Client, id: u64, seen: &mut Vec<Value>) -> Value {
    loop {
        let frame = next_non_presence(ws).await;
        if frame["id"] == json!(id) {
            return frame;
        }
        seen.push(frame);
    }
}

#[tokio::test]
async fn players_never_drop_each_other_and_a_late_joiner_sees_everyone_at_once() {
    let server = start().await;
    let (mut watcher, _) = connect(&server).await;
    let (mut players, _) = connect(&server).await;
    send(
        &mut watcher,
        json!({"id": 2, "subscribe": {"channel": "game:arena"}}),
    )
    .await;
    let mut seen = Vec::new();
    let subscribed = reply(&mut watcher, 2, &mut seen).await;
    assert!(subscribed.get("error").is_none(), "{subscribed}");

    // Three players, 20 moves each, as fast as the socket goes: far more than one per window.
    let mut id = 10;
    for step in 1..=20 {
        for player in ["ann", "bob", "cy"] {
            id += 1;
            let data = json!({"player": player, "x": step});
            send(
                &mut players,
                json!({"id": id, "publish": {"channel": "game:arena", "data": data}}),
            )
            .await;
        }
    }
    let mut ignored = Vec::new();
    let last = reply(&mut players, id, &mut ignored).await;
    assert!(last.get("error").is_none(), "{last}");

    // The watcher ends with every player at x = 20, in fewer deliveries than publications.
    let mut positions = std::collections::HashMap::new();
    let mut deliveries = 0;
    while positions.len() < 3 || positions.values().any(|&x| x != 20) {
        let frame = if let Some(frame) = seen.pop() {
            frame
        } else {
            next_non_presence(&mut watcher).await
        };
        let data = &frame["push"]["pub"]["data"];
        if let (Some(player), Some(x)) = (data["player"].as_str(), data["x"].as_u64()) {
            deliveries += 1;
            positions.insert(player.to_owned(), x);
        }
    }
    assert!(deliveries < 60, "conflated: {deliveries} of 60 delivered");

    // A late joiner gets the latest state of every player in its subscribe reply.
    let (mut late, _) = connect(&server).await;
    send(
        &mut late,
        json!({"id": 2, "subscribe": {"channel": "game:arena"}}),
    )
    .await;
    let joined = reply(&mut late, 2, &mut Vec::new()).await;
    assert_eq!(joined["subscribe"]["latest"], json!(true), "{joined}");
    let state: Vec<Value> = joined["subscribe"]["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(
        state,
        [
            json!({"player": "ann", "x": 20}),
            json!({"player": "bob", "x": 20}),
            json!({"player": "cy", "x": 20})
        ]
    );

    // A state without its key is refused with a hint; the others keep playing.
    send(
        &mut players,
        json!({"id": 900, "publish": {"channel": "game:arena", "data": {"x": 1}}}),
    )
    .await;
    let refused = reply(&mut players, 900, &mut Vec::new()).await;
    assert_eq!(refused["error"]["code"], json!(400), "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"player\"")),
        "{refused}"
    );
    send(
        &mut players,
        json!({"id": 901, "publish": {"channel": "game:arena", "data": {"player": "ann", "x": 21}}}),
    )
    .await;
    let next = next_non_presence(&mut late).await;
    assert_eq!(
        next["push"]["pub"]["data"],
        json!({"player": "ann", "x": 21}),
        "{next}"
    );
}
