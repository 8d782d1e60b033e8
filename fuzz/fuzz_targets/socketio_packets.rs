//! Fuzzes the Socket.IO decoders (`crates/kilat-server/src/socketio/packet.rs`): an Engine.IO
//! long-polling payload and each of its packets, a Socket.IO packet alone, and a hub frame as
//! the Socket.IO wire translates it for every subscriber. Properties: no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kilat_server::fuzzing::socketio_packets(data);
});
