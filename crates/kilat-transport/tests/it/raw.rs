//! Hand-made bytes on a TCP socket: handshake refusals and protocol violations.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{
    big_echo_config, client_frame, expect_eof, raw_upgrade, read_close_code, read_frame, start_echo,
};

#[tokio::test]
async fn unmasked_frame_is_closed_with_1002() {
    let server = start_echo(big_echo_config()).await;
    let (mut s, head) = raw_upgrade(server.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(&client_frame(0x81, b"hello", false))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1002);
    s.write_all(&client_frame(0x88, &1002u16.to_be_bytes(), true))
        .await
        .expect("close reply");
    expect_eof(&mut s).await;
}

#[tokio::test]
async fn oversized_header_is_closed_with_1009_before_the_payload() {
    let server = start_echo(Default::default()).await;
    let (mut s, _) = raw_upgrade(server.addr, "").await;
    // Header only: 1 GiB binary frame, masked. No payload follows.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).await.expect("write header");
    assert_eq!(read_close_code(&mut s).await, 1009);
}

#[tokio::test]
async fn invalid_utf8_is_closed_with_1007() {
    let server = start_echo(big_echo_config()).await;
    let (mut s, _) = raw_upgrade(server.addr, "").await;
    s.write_all(&client_frame(0x81, &[b'o', b'k', 0xC0, 0xAF], true))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1007);
}

#[tokio::test]
async fn invalid_utf8_fails_before_the_message_ends() {
    let server = start_echo(big_echo_config()).await;
    let (mut s, _) = raw_upgrade(server.addr, "").await;
    // First fragment valid, second has an impossible sequence; no final fragment is sent.
    s.write_all(&client_frame(0x01, "κό".as_bytes(), true))
        .await
        .expect("write");
    s.write_all(&client_frame(0x00, &[0xF4, 0x90, 0x80], true))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1007);
}

#[tokio::test]
async fn protocol_violations_are_closed_with_1002() {
    let server = start_echo(big_echo_config()).await;
    let cases: [(&str, Vec<u8>); 6] = [
        ("reserved opcode", client_frame(0x83, b"", true)),
        ("rsv2 set", client_frame(0xA1, b"x", true)),
        ("rsv1 without deflate", client_frame(0xC1, b"x", true)),
        ("continuation without start", client_frame(0x80, b"x", true)),
        ("fragmented ping", client_frame(0x09, b"x", true)),
        ("one-byte close", client_frame(0x88, &[3], true)),
    ];
    for (name, bytes) in cases {
        let (mut s, _) = raw_upgrade(server.addr, "").await;
        s.write_all(&bytes).await.expect("write");
        assert_eq!(read_close_code(&mut s).await, 1002, "{name}");
    }
    let (mut s, _) = raw_upgrade(server.addr, "").await;
    s.write_all(&client_frame(0x89, &[0u8; 126], true))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1002, "long ping");
    let (mut s, _) = raw_upgrade(server.addr, "").await;
    s.write_all(&client_frame(0x88, &1005u16.to_be_bytes(), true))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1002, "close with 1005");
}

#[tokio::test]
async fn byte_at_a_time_delivery_still_parses() {
    let server = start_echo(big_echo_config()).await;
    let (mut s, _) = raw_upgrade(server.addr, "").await;
    let mut bytes = client_frame(0x01, "fragmé".as_bytes(), true);
    bytes.extend(client_frame(0x89, b"p", true));
    bytes.extend(client_frame(0x80, "nté".as_bytes(), true));
    for b in bytes {
        s.write_all(&[b]).await.expect("write");
        s.flush().await.expect("flush");
    }
    assert_eq!(read_frame(&mut s).await, (0x8A, b"p".to_vec()));
    assert_eq!(
        read_frame(&mut s).await,
        (0x81, "fragménté".as_bytes().to_vec())
    );
}

#[tokio::test]
async fn bad_upgrades_get_400_with_a_reason() {
    let server = start_echo(big_echo_config()).await;
    let cases = [
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "Sec-WebSocket-Key",
        ),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            "Sec-WebSocket-Version",
        ),
    ];
    for (request, reason) in cases {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut response = vec![0u8; 1024];
        let mut len = 0;
        while !String::from_utf8_lossy(&response[..len]).contains("supported)\n")
            && !String::from_utf8_lossy(&response[..len]).contains("header\n")
        {
            let n = s.read(&mut response[len..]).await.expect("read");
            assert!(
                n > 0,
                "closed early: {}",
                String::from_utf8_lossy(&response[..len])
            );
            len += n;
        }
        let text = String::from_utf8_lossy(&response[..len]);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains(reason), "{text}");
        if reason == "Sec-WebSocket-Version" {
            assert!(
                text.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{text}"
            );
        }
    }
}
