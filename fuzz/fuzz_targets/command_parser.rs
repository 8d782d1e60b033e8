//! Fuzzes the client command decoder: arbitrary bytes as one inbound message (possibly several
//! `\n`-separated frames). Properties: no panic; every decoded command re-encodes to JSON that
//! decodes again to the same method; an error always maps to a client code or a disconnect.
#![no_main]

use kilat_protocol::{ClientFrame, decode_frames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for frame in decode_frames(data) {
        match frame {
            Ok(frame) => {
                let encoded = frame.encode();
                let again = kilat_protocol::decode_frame(&encoded)
                    .expect("an encoded command decodes again");
                if let (ClientFrame::Command { command: a, .. }, ClientFrame::Command { command: b, .. }) =
                    (&frame, &again)
                {
                    assert_eq!(a.method(), b.method());
                }
            }
            Err(error) => {
                // Either answerable with an error code, or a reason to disconnect.
                assert!(error.id.is_some() || error.disconnect().is_some());
                let _ = error.to_client_error();
            }
        }
    }
});
