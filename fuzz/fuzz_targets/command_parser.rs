//! Fuzzes the client command decoder: arbitrary bytes as one inbound message (possibly several
//! `\n`-separated frames). Properties: no panic; every decoded command re-encodes to JSON that
//! decodes again to the same method; an error always maps to a client code or a disconnect; a
//! publish's payload (`data`, or `b64data` decoded) is checked without panic, and binary bytes
//! survive being sent again as `b64data`.
#![no_main]

use kilat_protocol::command::{Command, PublishRequest};
use kilat_protocol::{ClientFrame, Payload, decode_frames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for frame in decode_frames(data) {
        match frame {
            Ok(frame) => {
                if let ClientFrame::Command {
                    command: Command::Publish(request),
                    ..
                } = &frame
                    && let Ok(Payload::Binary(bytes)) = request.clone().payload()
                {
                    let again = PublishRequest::binary("c", &bytes).payload();
                    assert!(matches!(again, Ok(Payload::Binary(b)) if b == bytes));
                }
                let encoded = frame.encode();
                let again = kilat_protocol::decode_frame(&encoded)
                    .expect("an encoded command decodes again");
                if let (
                    ClientFrame::Command { command: a, .. },
                    ClientFrame::Command { command: b, .. },
                ) = (&frame, &again)
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
