//! Fuzzes the client address picked from `X-Forwarded-For` behind trusted proxies
//! (`transport/peer.rs`, `server.trusted_proxies`), the one header a deployment without a load
//! balancer's own limits trusts for its per-address limits. The first byte picks the socket
//! peer; the rest is the trusted list (first line, comma-separated) and the header value.
//! Properties: no panic and no hang on any list or header; the answer is the peer or one of the
//! header's last 32 hops; an untrusted peer is always its own client address, whatever the
//! header says; and with every address trusted the answer never comes from before a hop that
//! does not parse (a forged prefix cannot be reached past garbage).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kilat_server::fuzzing::forwarded_for;
use libfuzzer_sys::fuzz_target;

/// Hops the parser looks at (`MAX_HOPS` in peer.rs).
const MAX_HOPS: usize = 32;

/// A hop as the parser reads it: an address, or an address with a port; IPv4-mapped IPv6 as
/// IPv4.
fn hop_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(canonical(ip))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let peer = match selector % 4 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, selector)),
        1 => IpAddr::V6(Ipv4Addr::new(10, 0, 0, selector).to_ipv6_mapped()),
        2 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(selector))),
        _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, selector)),
    };
    let text = String::from_utf8_lossy(rest);
    let (trusted, header) = text
        .split_once('\n')
        .unwrap_or(("10.0.0.0/8, fd00::/8", &text));
    // The last MAX_HOPS hops, right to left, as the parser walks them.
    let hops: Vec<&str> = header.rsplit(',').take(MAX_HOPS).collect();

    if let Some(client) = forwarded_for(peer, header, trusted) {
        assert!(
            client == canonical(peer) || hops.iter().any(|hop| hop_ip(hop) == Some(client)),
            "client {client} is neither the peer {peer} nor one of the last {MAX_HOPS} hops of {header:?}"
        );
        assert_eq!(
            forwarded_for(peer, header, trusted),
            Some(client),
            "not deterministic"
        );
    }
    // A peer outside the trusted list: the header is not read at all.
    assert_eq!(
        forwarded_for(peer, header, "192.0.2.1/32"),
        Some(canonical(peer)),
        "an untrusted peer's header was believed: {header:?}"
    );
    // Everything trusted: the walk stops at the first hop (from the right) that does not
    // parse, answering the hop before it (or the peer); it never reaches past it.
    // A value that is not visible ASCII (or tab) is no header at all to the server.
    let readable = header.bytes().all(|b| b == b'\t' || (32..127).contains(&b));
    let everything = forwarded_for(peer, header, "0.0.0.0/0, ::/0").expect("the list parses");
    let reachable: Vec<IpAddr> = if readable {
        hops.iter().map_while(|hop| hop_ip(hop)).collect()
    } else {
        Vec::new()
    };
    let expected = reachable.last().copied().unwrap_or(canonical(peer));
    assert_eq!(everything, expected, "all trusted, header {header:?}");
});
