//! Fuzzes the Socket.IO decoders (`crates/kilat-server/src/socketio/packet.rs`): an Engine.IO
//! long-polling payload and each of its packets, a Socket.IO packet alone (binary packets'
//! attachment counts and placeholders included), a hub frame as the Socket.IO wire translates
//! it for every subscriber on both transports (publications with base64 attachments and binary
//! publications included), a server API `send` as the wire turns it into an event with an ack id
//! and as another node's inbox carries it, and an rpc reply as a BINARY_ACK. Properties: no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kilat_server::fuzzing::socketio_packets(data);
});
