//! Fuzzes what the listener parses before hyper or a handler sees a request: the first request
//! head of a connection (`transport/front.rs`: stream requests taken onto the socket, `Content-Length`
//! digits only) and browser origins (`origin.rs`). Properties: no panic, no hang; a head is taken
//! as a stream only when it is a complete `GET /connection/sse` or `POST /connection/stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if kilat_server::fuzzing::stream_head(data) {
        assert!(
            data.starts_with(b"GET /connection/sse") || data.starts_with(b"POST /connection/stream"),
            "taken as a stream: {:?}",
            String::from_utf8_lossy(data)
        );
    }
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let origin = parts.next().unwrap_or("");
    let public_url = parts.next().unwrap_or("");
    let pattern = parts.next().unwrap_or("");
    let (dev, configured) = kilat_server::fuzzing::origin(origin, public_url, pattern);
    // Nothing but a loopback or the listener's own origin passes the dev policy.
    if dev {
        let lower = origin.trim().to_ascii_lowercase();
        assert!(
            lower.starts_with("http://") || lower.starts_with("https://"),
            "dev accepted {origin:?}"
        );
    }
    let _ = configured;
});
