//! `node.write_delay_ms` over real sockets: pushes to a connection are held back for the delay
//! so that the publications of that window share one write, while replies go out at once and a
//! message from the client ends the hold.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, connect, next_json, next_non_presence};

async fn command(ws: &mut Client, text: String) {
    ws.send(Message::text(text)).await.expect("send");
}

async fn subscribe(ws: &mut Client, channel: &str) {
    command(
        ws,
        format!(r#"{{"id":2,"subscribe":{{"channel":"{channel}"}}}}"#),
    )
    .await;
    let reply = next_non_presence(ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
}

/// Publishes `n` numbered publications from `publisher` and waits for each reply.
async fn publish(publisher: &mut Client, channel: &str, n: u64) {
    for i in 0..n {
        command(
            publisher,
            format!(
                r#"{{"id":{},"publish":{{"channel":"{channel}","data":{i}}}}}"#,
                10 + i
            ),
        )
        .await;
        let reply = next_non_presence(publisher).await;
        assert_eq!(reply["id"], 10 + i, "publish reply: {reply}");
        assert!(reply.get("error").is_none(), "{reply}");
    }
}

async fn next_publication(ws: &mut Client) -> serde_json::Value {
    let frame = next_non_presence(ws).await;
    assert!(
        frame["push"]["pub"].is_object(),
        "expected a publication: {frame}"
    );
    frame["push"]["pub"]["data"].clone()
}

#[tokio::test]
async fn pushes_wait_for_the_delay_and_arrive_together_in_order() {
    let delay = Duration::from_millis(300);
    let server = TestServer::start(|c| c.node.write_delay_ms = 300).await;
    let (mut subscriber, _) = connect(&server).await;
    subscribe(&mut subscriber, "chat:held").await;
    let (mut publisher, _) = connect(&server).await;

    let start = Instant::now();
    // The publisher receives no pushes, so its replies are never held: three round trips fit
    // well inside the delay.
    publish(&mut publisher, "chat:held", 3).await;
    for i in 0..3 {
        assert_eq!(next_publication(&mut subscriber).await, i);
    }
    assert!(
        start.elapsed() >= delay,
        "the first push was held for the delay, got it after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_message_from_the_client_ends_the_hold_and_its_reply_is_not_delayed() {
    // The longest delay the configuration accepts: a held push arrives at least this long
    // after it was queued.
    let delay = Duration::from_millis(1000);
    let server = TestServer::start(|c| c.node.write_delay_ms = 1000).await;
    let (mut subscriber, _) = connect(&server).await;
    subscribe(&mut subscriber, "chat:busy").await;
    let (mut publisher, _) = connect(&server).await;
    publish(&mut publisher, "chat:busy", 2).await;

    // The subscriber asks something while its two pushes are held: they are written first,
    // then its reply, without waiting for the rest of the delay.
    let asked = Instant::now();
    command(
        &mut subscriber,
        r#"{"id":7,"presence_stats":{"channel":"chat:busy"}}"#.to_owned(),
    )
    .await;
    assert_eq!(next_publication(&mut subscriber).await, 0);
    assert_eq!(next_publication(&mut subscriber).await, 1);
    let reply = next_json(&mut subscriber).await;
    assert_eq!(reply["id"], 7, "{reply}");
    // One loopback round trip; the pushes, queued before `asked`, would otherwise have come
    // a whole delay after they were queued.
    assert!(
        asked.elapsed() < delay,
        "pushes and reply came {:?} after the command: the hold was not ended by it",
        asked.elapsed()
    );
}
