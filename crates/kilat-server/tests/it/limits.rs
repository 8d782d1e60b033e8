use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    RawClient, TestServer, UPGRADE_HEADERS, client_frame_header, close_code, connect, next_json,
    raw_upgrade,
};

/// A client that keeps working beside the misbehaving one: publish and receive its own message.
async fn assert_still_served(client: &mut crate::support::Client, id: u32) {
    let channel = format!("probe{id}");
    client
        .send(Message::text(format!(
            r#"{{"id":{id},"subscribe":{{"channel":"{channel}"}}}}"#
        )))
        .await
        .expect("send subscribe");
    let reply = next_json(client).await;
    assert_eq!(reply["id"], id, "subscribe reply: {reply}");
    assert!(reply.get("error").is_none(), "subscribe failed: {reply}");
    client
        .send(Message::text(format!(
            r#"{{"id":{},"publish":{{"channel":"{channel}","data":{{"n":{id}}}}}}}"#,
            id + 1
        )))
        .await
        .expect("send publish");
    // The publication push and the publish reply may come in either order.
    let mut saw_pub = false;
    let mut saw_reply = false;
    while !(saw_pub && saw_reply) {
        let frame = next_json(client).await;
        if frame["push"]["pub"]["data"]["n"] == id {
            saw_pub = true;
        } else if frame["id"] == id + 1 {
            assert!(frame.get("error").is_none(), "publish failed: {frame}");
            saw_reply = true;
        }
    }
}

#[tokio::test]
async fn oversized_message_is_closed_with_1009_and_others_keep_working() {
    let server = TestServer::start(|c| c.websocket.max_message_size = 1024).await;
    let (mut bystander, _) = connect(&server).await;
    let (mut abuser, _) = connect(&server).await;
    abuser
        .send(Message::text("x".repeat(4096)))
        .await
        .expect("send oversized");
    assert_eq!(close_code(&mut abuser).await, Some(1009));
    assert_still_served(&mut bystander, 10).await;
}

#[tokio::test]
async fn frame_header_over_the_limit_is_refused_before_the_payload() {
    let server = TestServer::start(|c| c.websocket.max_message_size = 1024).await;
    let mut raw = RawClient::open(server.addr).await;
    // Announce 1 GiB and send none of it: the server must answer from the header alone.
    raw.stream
        .write_all(&client_frame_header(0x1, 1 << 30))
        .await
        .expect("write frame header");
    assert_eq!(raw.read_close_code().await, Some(1009));
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    let server = TestServer::start(|_| {}).await;
    let (mut bystander, _) = connect(&server).await;
    let mut raw = RawClient::open(server.addr).await;
    raw.send_frame(true, 0x1, &[0x7b, 0xff, 0xfe, 0x7d], true)
        .await;
    assert_eq!(raw.read_close_code().await, Some(1007));
    assert_still_served(&mut bystander, 20).await;
}

#[tokio::test]
async fn unmasked_client_frame_is_a_protocol_error_1002() {
    let server = TestServer::start(|_| {}).await;
    let mut raw = RawClient::open(server.addr).await;
    raw.send_frame(true, 0x1, b"{}", false).await;
    assert_eq!(raw.read_close_code().await, Some(1002));
}

#[tokio::test]
async fn reserved_opcode_is_a_protocol_error_1002() {
    let server = TestServer::start(|_| {}).await;
    let mut raw = RawClient::open(server.addr).await;
    raw.send_frame(true, 0x3, b"", true).await;
    assert_eq!(raw.read_close_code().await, Some(1002));
}

#[tokio::test]
async fn bad_upgrade_requests_get_400_with_a_reason() {
    let server = TestServer::start(|_| {}).await;
    let cases = [
        (
            "no key",
            UPGRADE_HEADERS.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        ),
        (
            "short key",
            UPGRADE_HEADERS.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
        ),
        (
            "old version",
            UPGRADE_HEADERS.replace("Version: 13", "Version: 8"),
        ),
        (
            "no upgrade header",
            UPGRADE_HEADERS.replace("Upgrade: websocket\r\n", ""),
        ),
    ];
    for (what, headers) in cases {
        let (status, head, mut stream) = raw_upgrade(server.addr, &headers).await;
        assert_eq!(status, 400, "{what}: {head}");
        let mut body = vec![0u8; 512];
        let n = tokio::time::timeout(
            crate::support::WAIT,
            tokio::io::AsyncReadExt::read(&mut stream, &mut body),
        )
        .await
        .expect("body in time")
        .expect("read body");
        let body = String::from_utf8_lossy(&body[..n]);
        assert!(
            !body.trim().is_empty() && body.lines().count() <= 1,
            "{what}: one-line reason expected, got {body:?}"
        );
        if what == "old version" {
            assert!(
                head.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{head}"
            );
        }
    }
}

#[tokio::test]
async fn connection_limit_refuses_new_upgrades_with_503_only() {
    let server = TestServer::start(|c| c.server.max_connections = 2).await;
    let (mut first, _) = connect(&server).await;
    let (_second, _) = connect(&server).await;
    let (status, head, _) = raw_upgrade(server.addr, UPGRADE_HEADERS).await;
    assert_eq!(status, 503, "{head}");
    assert_still_served(&mut first, 30).await;
}
