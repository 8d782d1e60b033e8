//! Fuzzes the Pusher endpoint's decoders (`kilat-server/src/pusher/protocol.rs`): a client
//! message as read from the socket, its channel name, and the translation of a server frame into
//! a Pusher event. Properties: no panic, no hang; a decoded message was valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if kilat_server::fuzzing::pusher_message(data) {
        assert!(
            serde_json_valid(data),
            "decoded a message that is not JSON: {:?}",
            String::from_utf8_lossy(data)
        );
    }
});

/// Whether `data` is one JSON object (what the decoder must have seen to accept it).
fn serde_json_valid(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let t = text.trim();
    t.starts_with('{') && t.ends_with('}')
}
