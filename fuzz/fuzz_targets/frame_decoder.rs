//! Fuzzes the WebSocket read side: arbitrary client bytes, delivered in arbitrary chunks,
//! through the sans-I/O `Decoder`, with and without permessage-deflate.
//! Properties: no panic, no unbounded allocation (limit 64 KiB), and every text message valid
//! UTF-8.
#![no_main]

use bytes::BytesMut;
use kilat_transport::ws::{Decoder, Event, Message, WsConfig, negotiate};
use libfuzzer_sys::fuzz_target;

fn decoder(deflate: bool, takeover: bool) -> Decoder {
    let mut req = http::Request::builder()
        .uri("/")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13");
    if deflate {
        req = req.header("sec-websocket-extensions", "permessage-deflate; client_max_window_bits");
    }
    let (parts, ()) = req.body(()).expect("static request").into_parts();
    let config = WsConfig {
        deflate_client_no_context_takeover: !takeover,
        ..WsConfig::default()
    };
    let handshake = negotiate(&parts, &config).expect("static request is valid");
    Decoder::new(&handshake, &config)
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, input)) = data.split_first() else {
        return;
    };
    let mut decoder = decoder(options & 1 != 0, options & 2 != 0);
    let chunk = usize::from(options >> 2) + 1;
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.step(&mut buf) {
                Ok(Event::NeedBytes) => break,
                Ok(Event::Message(Message::Text(text))) => {
                    assert!(std::str::from_utf8(&text).is_ok(), "text message is UTF-8");
                }
                Ok(Event::Close { .. }) => return,
                Ok(_) => {}
                Err(_) => {
                    decoder.start_skipping();
                    let _ = decoder.skip(&mut buf);
                    return;
                }
            }
        }
    }
});
