//! Fuzzes the binary encoding's decoder: arbitrary bytes as one client message on a
//! `kilat.msgpack` connection, transcoded to JSON as the server does (`msgpack_to_json` with the
//! server's bound) and handed to the command decoder. Properties: no panic; the output respects
//! the bound; every line of it is JSON; transcoding it back to MessagePack and to JSON again
//! gives the same JSON (one normal form); the command decoder accepts or refuses it cleanly.
#![no_main]

use kilat_protocol::decode_frames;
use kilat_protocol::msgpack::{json_to_msgpack, msgpack_to_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limit = data.len() * 8 + 1024;
    let Ok(json) = msgpack_to_json(data, limit) else {
        return;
    };
    assert!(json.len() <= limit);
    for line in json.split(|&b| b == b'\n') {
        serde_json::from_slice::<serde_json::Value>(line).expect("each frame is JSON");
    }
    let packed = json_to_msgpack(&json).expect("our JSON transcodes");
    let again = msgpack_to_json(&packed, usize::MAX).expect("our MessagePack decodes");
    assert_eq!(again, json, "one normal form");
    for frame in decode_frames(&json) {
        if let Err(error) = frame {
            assert!(error.id.is_some() || error.disconnect().is_some());
        }
    }
});
