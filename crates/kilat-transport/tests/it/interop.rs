//! An independent client (tokio-tungstenite, no compression) against the echo server.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use super::support::{big_echo_config, start_echo};

#[tokio::test]
async fn text_and_binary_messages_are_echoed() {
    let server = start_echo(big_echo_config()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/any/path", server.addr))
        .await
        .expect("connect");
    let big = "ü".repeat(100_000);
    for message in [
        Message::text("hello"),
        Message::text(""),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(big.clone()),
        Message::binary(vec![7u8; 70_000]),
    ] {
        ws.send(message.clone()).await.expect("send");
        let echoed = ws.next().await.expect("open").expect("message");
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn fragmented_message_with_interleaved_ping() {
    let server = start_echo(big_echo_config()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", server.addr))
        .await
        .expect("connect");
    // "κόσμε" cut inside a multi-byte character.
    let text = "κόσμε".as_bytes();
    ws.send(Message::Frame(Frame::message(
        &text[..3],
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .expect("first fragment");
    ws.send(Message::Ping("ping!".into())).await.expect("ping");
    ws.send(Message::Frame(Frame::message(
        &text[3..7],
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .expect("middle fragment");
    ws.send(Message::Frame(Frame::message(
        &text[7..],
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .expect("last fragment");
    assert_eq!(
        ws.next().await.expect("open").expect("pong"),
        Message::Pong("ping!".into())
    );
    assert_eq!(
        ws.next().await.expect("open").expect("text"),
        Message::text("κόσμε")
    );
}

#[tokio::test]
async fn close_code_is_echoed() {
    let server = start_echo(big_echo_config()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", server.addr))
        .await
        .expect("connect");
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Library(4000)),
        other => panic!("expected the close reply, got {other:?}"),
    }
    assert!(ws.next().await.is_none(), "server ends the connection");
}

#[tokio::test]
async fn oversized_message_is_refused_with_1009() {
    let server = start_echo(Default::default()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", server.addr))
        .await
        .expect("connect");
    ws.send(Message::binary(vec![0u8; 64 * 1024 + 1]))
        .await
        .expect("send");
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_live_connections_with_1001() {
    let server = start_echo(big_echo_config()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", server.addr))
        .await
        .expect("connect");
    ws.send(Message::text("before")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("open").expect("echo"),
        Message::text("before")
    );
    drop(server);
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
}
