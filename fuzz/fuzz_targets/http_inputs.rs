//! Fuzzes what the listener parses before hyper or a handler sees a request: the first request
//! head of a connection (`transport/front.rs`: stream requests taken onto the socket, `Content-Length`
//! digits only), browser origins (`origin.rs`) and `X-Forwarded-For` behind trusted proxies
//! (`transport/peer.rs`). Properties: no panic, no hang; a head is taken as a stream only when
//! it is a complete `GET /connection/sse` or `POST /connection/stream`; the client address is
//! the peer itself unless the peer is trusted, and otherwise the peer or a hop of the header.
#![no_main]

use std::net::{IpAddr, SocketAddr};

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
    // X-Forwarded-For: the peer from the first byte, the header and the trusted list from the
    // rest (`trusted` on the first line, the header on the others).
    let peer = IpAddr::from([10, 0, 0, data.first().copied().unwrap_or(0)]);
    let (trusted, forwarded) = text.split_once('\n').unwrap_or(("10.0.0.0/24", &text[..]));
    if let Some(client) = kilat_server::fuzzing::forwarded_for(peer, forwarded, trusted) {
        let parse = |hop: &str| -> Option<IpAddr> {
            let hop = hop.trim();
            let ip = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
            Some(match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                IpAddr::V4(_) => ip,
            })
        };
        assert!(
            client == peer || forwarded.split(',').any(|hop| parse(hop) == Some(client)),
            "client {client} is neither the peer nor a hop of {forwarded:?}"
        );
    }
});
