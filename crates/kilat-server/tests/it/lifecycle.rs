use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, WAIT, close_code, connect};

#[tokio::test]
async fn shutdown_closes_every_connection_with_3000_and_returns() {
    let mut server =
        TestServer::start(|c| c.server.shutdown_timeout = Duration::from_secs(5)).await;
    let (mut a, _) = connect(&server).await;
    let (mut b, _) = connect(&server).await;
    let task = server.begin_shutdown();
    assert_eq!(close_code(&mut a).await, Some(3000));
    assert_eq!(close_code(&mut b).await, Some(3000));
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("server stops within the wait")
        .expect("server task");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn shutdown_is_bounded_when_a_client_never_reads() {
    let mut server =
        TestServer::start(|c| c.server.shutdown_timeout = Duration::from_millis(500)).await;
    // A raw client that completes the handshake and then never reads or answers anything.
    let _silent = crate::support::RawClient::open(server.addr).await;
    let task = server.begin_shutdown();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("shutdown finishes despite a silent client")
        .expect("server task")
        .expect("clean stop");
}

#[tokio::test]
async fn connect_must_come_within_the_handshake_timeout() {
    let server = TestServer::start(|c| c.node.handshake_timeout = Duration::from_millis(200)).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("handshake");
    assert_eq!(close_code(&mut ws).await, Some(3003));
}

#[tokio::test]
async fn server_pings_and_disconnects_without_pong() {
    let server = TestServer::start(|c| {
        c.node.ping_interval = Duration::from_millis(100);
        c.node.pong_timeout = Duration::from_millis(200);
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    // The first ping arrives as an empty JSON object; do not answer it.
    let ping = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("ping in time")
        .expect("stream open")
        .expect("frame");
    assert_eq!(ping, Message::text("{}"));
    assert_eq!(close_code(&mut ws).await, Some(3002));
}

#[tokio::test]
async fn answered_pings_keep_the_connection() {
    let server = TestServer::start(|c| {
        c.node.ping_interval = Duration::from_millis(100);
        c.node.pong_timeout = Duration::from_millis(200);
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    for _ in 0..4 {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("ping in time")
            .expect("stream open")
            .expect("frame");
        assert_eq!(frame, Message::text("{}"), "only pings expected");
        ws.send(Message::text("{}")).await.expect("pong");
    }
}
