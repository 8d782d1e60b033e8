//! The bound on concurrent handshakes (`server.max_handshakes`) over real sockets: clients that
//! upgrade and delay their `connect` hold the permits, the attempts past the bound get 503 with
//! `Retry-After` before the upgrade, and a permit comes back once the handshake is done (the
//! connect reply and the client's first message after it, its resubscriptions) or failed, not
//! when the connection ends.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::support::{Client, TestServer, http_get, next_json, next_non_presence};

/// Upgrades without sending `connect`: a slow handshake, holding a permit. `Err` carries the
/// refusal's status and `Retry-After`.
async fn upgrade(server: &TestServer) -> Result<Client, (u16, Option<String>)> {
    match tokio_tungstenite::connect_async(server.ws_url()).await {
        Ok((ws, _)) => Ok(ws),
        Err(Error::Http(response)) => Err((
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        )),
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

async fn send_connect(ws: &mut Client) {
    ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .expect("send connect");
    let reply = next_json(ws).await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");
}

/// The client's first message after connect, as the SDK's batched resubscribe: the handshake
/// permit is released once it is handled.
async fn subscribe(ws: &mut Client, channel: &str) {
    ws.send(Message::text(format!(
        r#"{{"id":2,"subscribe":{{"channel":"{channel}","recover":true}}}}"#
    )))
    .await
    .expect("send subscribe");
    let reply = next_non_presence(ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert!(reply["subscribe"].is_object(), "{reply}");
}

async fn refused_total(server: &TestServer) -> String {
    let (status, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find(|line| line.starts_with("kilat_handshakes_refused_total "))
        .unwrap_or_else(|| panic!("no kilat_handshakes_refused_total in /metrics:\n{body}"))
        .to_owned()
}

#[tokio::test]
async fn handshakes_past_the_bound_get_503_with_retry_after_and_the_rest_succeed() {
    const BOUND: usize = 3;
    const EXTRA: usize = 2;
    let server = TestServer::start(|c| c.server.max_handshakes = BOUND).await;
    // N + k clients upgrade at once and delay their connect.
    let attempts =
        futures_util::future::join_all((0..BOUND + EXTRA).map(|_| upgrade(&server))).await;
    let mut slow = Vec::new();
    let mut refusals = Vec::new();
    for attempt in attempts {
        match attempt {
            Ok(ws) => slow.push(ws),
            Err(refusal) => refusals.push(refusal),
        }
    }
    assert_eq!(slow.len(), BOUND, "refusals: {refusals:?}");
    assert_eq!(
        refusals,
        vec![(503, Some("1".to_owned())); EXTRA],
        "past the bound: 503 with Retry-After"
    );
    // Every transport shares the bound: an SSE connect is refused the same way.
    let (status, head) = http_get(
        server.addr,
        "/connection/sse?connect=%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D",
    )
    .await;
    assert_eq!(status, 503, "{head}");
    assert_eq!(
        refused_total(&server).await,
        "kilat_handshakes_refused_total 3"
    );
    // The slow clients finish their handshakes (connect, then their resubscribe): their
    // permits come back while their connections stay open, so as many new handshakes fit at
    // once as before.
    for ws in &mut slow {
        send_connect(ws).await;
        subscribe(ws, "feed").await;
    }
    let mut later = Vec::new();
    for _ in 0..BOUND {
        later.push(upgrade(&server).await.expect("a permit came back"));
    }
    for ws in &mut later {
        send_connect(ws).await;
        subscribe(ws, "feed").await;
    }
    // All six connected clients still work.
    for ws in slow.iter_mut().chain(later.iter_mut()) {
        ws.send(Message::text(
            r#"{"id":3,"presence_stats":{"channel":"x"}}"#,
        ))
        .await
        .expect("send");
        let reply = next_non_presence(ws).await;
        assert_eq!(reply["id"], 3, "{reply}");
    }
}

#[tokio::test]
async fn a_failed_handshake_gives_its_permit_back() {
    let server = TestServer::start(|c| {
        c.server.max_handshakes = 1;
        c.node.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = upgrade(&server).await.expect("first upgrade");
    assert_eq!(
        upgrade(&server).await.err(),
        Some((503, Some("1".to_owned())))
    );
    // The silent client never sends connect: the handshake timeout closes it (3003) and its
    // permit is free again.
    assert_eq!(crate::support::close_code(&mut silent).await, Some(3003));
    // The close frame goes out just before the session is dropped: retry until the task ended.
    let deadline = std::time::Instant::now() + crate::support::WAIT;
    let mut next = loop {
        match upgrade(&server).await {
            Ok(ws) => break ws,
            Err(refusal) => {
                assert_eq!(refusal, (503, Some("1".to_owned())));
                assert!(
                    std::time::Instant::now() < deadline,
                    "the failed handshake's permit never came back"
                );
                tokio::task::yield_now().await;
            }
        }
    };
    send_connect(&mut next).await;
}

/// The `kilat_handshakes` gauge (handshakes in progress) from `/metrics`.
async fn handshakes_in_progress(server: &TestServer) -> u64 {
    let (status, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix("kilat_handshakes "))
        .unwrap_or_else(|| panic!("no kilat_handshakes in /metrics:\n{body}"))
        .trim()
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn connected_clients_that_stay_silent_hold_no_permit() {
    const BOUND: usize = 2;
    let server = TestServer::start(|c| c.server.max_handshakes = BOUND).await;
    // Four times the bound connect one after the other and never send anything after their
    // connect reply (listeners with server-side subscriptions, idle devices): each permit
    // comes back with the reply, so none of them is refused.
    let mut silent = Vec::new();
    for _ in 0..BOUND * 4 {
        let mut ws = upgrade(&server).await.expect("a permit is free again");
        send_connect(&mut ws).await;
        // The permit came back with the reply, while the connection stays open.
        assert_eq!(handshakes_in_progress(&server).await, 0);
        silent.push(ws);
    }
    assert_eq!(
        refused_total(&server).await,
        "kilat_handshakes_refused_total 0"
    );
}

#[tokio::test]
async fn the_first_message_after_connect_waits_for_a_permit() {
    let server = TestServer::start(|c| c.server.max_handshakes = 1).await;
    let mut reconnected = upgrade(&server).await.expect("first upgrade");
    send_connect(&mut reconnected).await;
    // Another handshake takes the only permit and holds it (no connect yet).
    let mut slow = upgrade(&server)
        .await
        .expect("the permit came back with the reply");
    // The first client's resubscription (its first message after connect) waits for a permit:
    // no reply while the other handshake holds it.
    reconnected
        .send(Message::text(
            r#"{"id":2,"subscribe":{"channel":"feed","recover":true}}"#,
        ))
        .await
        .expect("send subscribe");
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            next_non_presence(&mut reconnected)
        )
        .await
        .is_err(),
        "the resubscription ran while every permit was held"
    );
    // The other handshake ends with its connect reply: the waiting resubscription runs.
    send_connect(&mut slow).await;
    let reply = next_non_presence(&mut reconnected).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert!(reply["subscribe"].is_object(), "{reply}");
    // Later messages never wait: with the permit held again by a third handshake, a command
    // is answered at once.
    let _third = upgrade(&server).await.expect("the permit came back");
    reconnected
        .send(Message::text(
            r#"{"id":3,"presence_stats":{"channel":"feed"}}"#,
        ))
        .await
        .expect("send");
    let reply = next_non_presence(&mut reconnected).await;
    assert_eq!(reply["id"], 3, "{reply}");
}
