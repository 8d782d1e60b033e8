//! `send_frames` with shared frames, encode-once caching, and the idle footprint.

use kilat_protocol::SharedFrame;
use kilat_transport::ws::{
    Handshake, Message, SLOT_DEFLATE_15, SLOT_PLAIN, WsConfig, WsConnection,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::support::{client_frame, read_frame};

/// A server-side connection and the raw client socket, with the given offer.
async fn pair(extensions: Option<&str>) -> (WsConnection<TcpStream>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let config = WsConfig::default();
    let handshake = Handshake::for_offer(extensions, &config);
    (WsConnection::new(server, &handshake, &config), client)
}

#[tokio::test]
async fn shared_frames_are_encoded_once() {
    let (mut a, mut ca) = pair(None).await;
    let (mut b, mut cb) = pair(None).await;
    let frames = [
        SharedFrame::new(&b"{\"push\":{\"channel\":\"a\"}}"[..]),
        SharedFrame::new("{\"push\":{\"channel\":\"b\"}}".repeat(10)),
    ];
    a.send_frames(&frames).await.expect("send a");
    b.send_frames(&frames).await.expect("send b");
    for client in [&mut ca, &mut cb] {
        for frame in &frames {
            assert_eq!(read_frame(client).await, (0x81, frame.json().to_vec()));
        }
    }
    let cached = frames[0].encoded(SLOT_PLAIN, |_| unreachable!("encoded by the first send"));
    assert_eq!(&cached[2..], &frames[0].json()[..]);
}

#[tokio::test]
async fn compressed_shared_frames() {
    let (mut a, mut ca) = pair(Some("permessage-deflate")).await;
    let frame = SharedFrame::new("{\"push\":{\"channel\":\"news\",\"data\":1}}".repeat(20));
    a.send_frames(std::slice::from_ref(&frame))
        .await
        .expect("send");
    let (b0, payload) = read_frame(&mut ca).await;
    assert_eq!(b0, 0xC1);
    let cached = frame.encoded(SLOT_DEFLATE_15, |_| unreachable!("cached"));
    assert_eq!(&cached[2..], &payload[..]);
    assert!(payload.len() < frame.len() / 4);
}

#[tokio::test]
async fn read_message_is_cancel_safe() {
    let (mut server, mut client) = pair(None).await;
    let frame = client_frame(0x81, b"split across reads", true);
    let (first, rest) = frame.split_at(9);
    client.write_all(first).await.expect("write");
    // Cancel a read that has consumed part of the frame.
    let timed_out =
        tokio::time::timeout(std::time::Duration::from_millis(50), server.read_message()).await;
    assert!(timed_out.is_err());
    client.write_all(rest).await.expect("write");
    assert_eq!(
        server.read_message().await.expect("message"),
        Message::Text("split across reads".into())
    );
}

#[tokio::test]
async fn server_close_waits_for_the_peer() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let (mut server, client) = pair(None).await;
    let mut ws =
        tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let peer = tokio::spawn(async move {
        // tungstenite answers the close frame while reading, then sees the socket end.
        let frame = match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => frame,
            other => panic!("expected a close, got {other:?}"),
        };
        assert!(ws.next().await.is_none());
        let _ = ws.close(None).await;
        frame
    });
    let started = std::time::Instant::now();
    server.close(4001, "bye").await.expect("close");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "did not wait for the timeout"
    );
    assert!(server.is_closed());
    let frame = peer.await.expect("peer task").expect("close frame");
    assert_eq!(frame.code, CloseCode::Library(4001));
    assert_eq!(frame.reason.as_str(), "bye");
    assert!(
        server.send_text(b"late").await.is_err(),
        "no data after close"
    );
}

#[test]
fn connection_is_small() {
    let tcp = std::mem::size_of::<WsConnection<TcpStream>>();
    let upgraded =
        std::mem::size_of::<WsConnection<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>>();
    println!(
        "size_of WsConnection<TcpStream> = {tcp}, WsConnection<TokioIo<Upgraded>> = {upgraded}"
    );
    assert!(tcp <= 256, "WsConnection<TcpStream> is {tcp} bytes");
}
