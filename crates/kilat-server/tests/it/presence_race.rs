//! A leave that reaches the connection loop together with its ping timer, over real sockets:
//! the presence refresh the ping starts must not bring back the entry the leave removed (the
//! stale entry of the one-hour soak).
//!
//! Each client subscribes, then sends an `rpc` that the backend answers only after the first
//! ping is due, and right behind it its leave: an `unsubscribe`, or the close of the
//! connection. When the rpc returns, the loop finds both the timer and the leave ready and takes
//! them in random order; timer first means the ping's refresh task is started, the leave runs
//! to its end in the same turn, and the refresh runs after it. Before a client's presence
//! writes were ordered (and a refresh checked the subscription), about half of the channels
//! kept an entry for a client that had left; there are enough clients that every run has such
//! turns.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const CLIENTS: usize = 24;
const PING: Duration = Duration::from_millis(200);
/// The backend answers the rpc this long after it is asked: past the first ping.
const RPC_DELAY: Duration = Duration::from_millis(400);

/// A backend whose rpc hook answers after [`RPC_DELAY`].
async fn slow_backend() -> String {
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(RPC_DELAY).await;
        axum::Json(json!({"result": {"data": {}}}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/rpc")
}

async fn client(server: &TestServer, i: usize) {
    let (mut ws, _) = connect(server).await;
    let channel = format!("race:{i}");
    ws.send(Message::text(
        json!({"id": 2, "subscribe": {"channel": channel}}).to_string(),
    ))
    .await
    .expect("send subscribe");
    let reply = next_non_presence(&mut ws).await;
    assert_eq!(reply["id"], 2, "subscribe reply: {reply}");
    assert!(reply.get("error").is_none(), "{reply}");
    // Both frames are written at once: the leave waits in the server's buffer while the rpc
    // runs across the ping's deadline.
    ws.feed(Message::text(
        json!({"id": 3, "rpc": {"method": "wait"}}).to_string(),
    ))
    .await
    .expect("feed rpc");
    if i.is_multiple_of(2) {
        ws.feed(Message::text(
            json!({"id": 4, "unsubscribe": {"channel": channel}}).to_string(),
        ))
        .await
        .expect("feed unsubscribe");
        ws.flush().await.expect("send rpc and unsubscribe");
        loop {
            let frame = next_json(&mut ws).await;
            if frame["id"] == 4 {
                assert!(frame.get("error").is_none(), "{frame}");
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    // Read to the end so the close completes.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
}

#[tokio::test]
async fn a_leave_together_with_the_ping_timer_leaves_no_presence_entry() {
    let rpc_url = slow_backend().await;
    let server = TestServer::start(|c| {
        c.node.ping_interval = PING;
        c.node.pong_timeout = Duration::from_secs(5);
        // Far longer than the test: only a removal takes an entry away.
        c.node.presence_ttl = Duration::from_secs(3600);
        c.proxy.rpc_url = Some(rpc_url);
    })
    .await;
    let clients: Vec<_> = (0..CLIENTS).map(|i| client(&server, i)).collect();
    futures_util::future::join_all(clients).await;
    wait_for_connections(&server, 0, WAIT).await;
    let (mut checker, _) = connect(&server).await;
    // The leaves are over (no connection is open); give any refresh task started before them
    // time to run, then every channel must be empty.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut id = 10;
    loop {
        let mut left = Vec::new();
        for i in 0..CLIENTS {
            id += 1;
            checker
                .send(Message::text(
                    json!({"id": id, "presence_stats": {"channel": format!("race:{i}")}})
                        .to_string(),
                ))
                .await
                .expect("send presence_stats");
            let reply = next_json(&mut checker).await;
            assert_eq!(reply["id"], id, "{reply}");
            if reply["presence_stats"]["num_clients"].as_u64() != Some(0) {
                let how = if i.is_multiple_of(2) {
                    "unsubscribed"
                } else {
                    "closed"
                };
                left.push(format!("race:{i} ({how}): {reply}"));
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {CLIENTS} channels keep an entry of a client that left: {left:?}",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
