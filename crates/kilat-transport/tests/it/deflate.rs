//! permessage-deflate on the wire: negotiation, compressed echo, fragments, bombs, takeover.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use kilat_transport::ws::WsConfig;
use tokio::io::AsyncWriteExt;

use super::support::{
    big_echo_config, client_frame, raw_upgrade, read_close_code, read_frame, start_echo,
};

/// Compresses one message the way a client does (sync flush, tail removed).
fn deflate_message(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut input = data;
    loop {
        let before = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync)
            .expect("deflate");
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.len() + 64);
    }
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

fn inflate_message(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflate");
    out
}

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

#[tokio::test]
async fn negotiated_response_and_compressed_echo() {
    let server = start_echo(big_echo_config()).await;
    let (mut s, head) = raw_upgrade(server.addr, OFFER).await;
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        "{head}"
    );
    let text = "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":\"hello hello hello hello\"}}}"
        .repeat(4);
    for _ in 0..2 {
        let mut c = Compress::new(Compression::default(), false);
        s.write_all(&client_frame(
            0xC1,
            &deflate_message(&mut c, text.as_bytes()),
            true,
        ))
        .await
        .expect("write");
        let (b0, payload) = read_frame(&mut s).await;
        assert_eq!(b0, 0xC1, "long replies are compressed");
        assert_eq!(inflate_message(&payload), text.as_bytes());
    }
    // The echo server compresses even tiny replies (conformance clients expect that).
    let mut c = Compress::new(Compression::default(), false);
    s.write_all(&client_frame(0xC1, &deflate_message(&mut c, b"hi"), true))
        .await
        .expect("write");
    let (b0, payload) = read_frame(&mut s).await;
    assert_eq!(b0, 0xC1);
    assert_eq!(inflate_message(&payload), b"hi");
}

#[tokio::test]
async fn fragmented_compressed_message() {
    let server = start_echo(big_echo_config()).await;
    let (mut s, _) = raw_upgrade(server.addr, OFFER).await;
    let text = "fragmented and compressed ".repeat(50);
    let mut c = Compress::new(Compression::default(), false);
    let wire = deflate_message(&mut c, text.as_bytes());
    let (a, b) = wire.split_at(wire.len() / 2);
    s.write_all(&client_frame(0x41, a, true))
        .await
        .expect("first");
    s.write_all(&client_frame(0x89, b"!", true))
        .await
        .expect("ping");
    s.write_all(&client_frame(0x80, b, true))
        .await
        .expect("last");
    assert_eq!(read_frame(&mut s).await, (0x8A, b"!".to_vec()));
    let (b0, payload) = read_frame(&mut s).await;
    assert_eq!(b0, 0xC1);
    assert_eq!(inflate_message(&payload), text.as_bytes());
}

#[tokio::test]
async fn deflate_bomb_is_closed_with_1009() {
    let server = start_echo(WsConfig::default()).await;
    let (mut s, _) = raw_upgrade(server.addr, OFFER).await;
    let mut c = Compress::new(Compression::best(), false);
    let bomb = deflate_message(&mut c, &vec![b'a'; 8 << 20]);
    assert!(bomb.len() < 64 * 1024, "the bomb fits under the wire limit");
    s.write_all(&client_frame(0xC2, &bomb, true))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1009);
}

#[tokio::test]
async fn compressed_invalid_utf8_is_closed_with_1007() {
    let server = start_echo(big_echo_config()).await;
    let (mut s, _) = raw_upgrade(server.addr, OFFER).await;
    let mut c = Compress::new(Compression::default(), false);
    let wire = deflate_message(&mut c, &[b'a', 0xFF, b'b']);
    s.write_all(&client_frame(0xC1, &wire, true))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1007);
}

#[tokio::test]
async fn client_context_takeover_when_allowed() {
    let server = start_echo(WsConfig {
        deflate_client_no_context_takeover: false,
        ..big_echo_config()
    })
    .await;
    let (mut s, head) = raw_upgrade(
        server.addr,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n",
    )
    .await;
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("client_no_context_takeover"), "{head}");
    assert!(head.contains("client_max_window_bits=10"), "{head}");
    // One compressor for all messages: later messages refer back to earlier ones.
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 10);
    for i in 0..5 {
        let text = format!("the same sentence over and over, message {i}");
        s.write_all(&client_frame(
            0xC1,
            &deflate_message(&mut c, text.as_bytes()),
            true,
        ))
        .await
        .expect("write");
        let (b0, payload) = read_frame(&mut s).await;
        let echoed = if b0 == 0xC1 {
            inflate_message(&payload)
        } else {
            payload
        };
        assert_eq!(echoed, text.as_bytes());
    }
}

#[tokio::test]
async fn deflate_off_ignores_offers() {
    let server = start_echo(WsConfig {
        deflate: false,
        ..big_echo_config()
    })
    .await;
    let (mut s, head) = raw_upgrade(server.addr, OFFER).await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    s.write_all(&client_frame(0xC1, b"x", true))
        .await
        .expect("write");
    assert_eq!(read_close_code(&mut s).await, 1002);
}
