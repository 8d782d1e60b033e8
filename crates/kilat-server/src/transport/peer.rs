//! Who is connecting: the peer address the listener accepted (a request extension, [`Peer`]),
//! the client address behind trusted proxies (`X-Forwarded-For`, [`client_ip`]) and the
//! per-address limits on connections and handshakes ([`PerIp`]) for deployments without a load
//! balancer in front (docs/configuration.md, `[server]`; docs/security.md).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use ipnet::IpNet;
use parking_lot::Mutex;

use super::admission::Refusal;

/// The socket's peer address, put on every request by the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// The peer address of a request, if the listener recorded one.
pub(crate) fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions.get::<Peer>().map(|peer| peer.0.ip())
}

/// The proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    ///
    /// # Errors
    /// The first entry that is neither, with a hint.
    pub(crate) fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let text = entry.trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "server.trusted_proxies: `{entry}` is not an address or CIDR (hint: \
                         10.0.0.0/8, 192.168.1.10, fd00::/8)"
                    )
                })?;
            nets.push(net.trunc());
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so `::ffff:10.0.0.1` matches `10.0.0.0/8`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Most `X-Forwarded-For` hops looked at; a longer chain is cut (its older hops ignored).
const MAX_HOPS: usize = 32;

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`). `None` for anything else (`unknown`, obfuscated identifiers, junk).
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// The client's address: the peer itself unless it is a trusted proxy; then, reading
/// `X-Forwarded-For` from the right (the hop nearest to us first), the first address that is
/// not a trusted proxy. A malformed hop stops the walk at the last address known to be real,
/// so a client cannot pick its own address by writing the header itself.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut current = canonical(peer);
    if !trusted.trusts(current) {
        return current;
    }
    let hops = headers
        .get_all(http::header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>();
    for hop in hops.iter().rev().flat_map(|v| v.rsplit(',')).take(MAX_HOPS) {
        let Some(ip) = parse_hop(hop) else {
            return current;
        };
        current = ip;
        if !trusted.trusts(ip) {
            return ip;
        }
    }
    current
}

/// Entries kept before idle ones are swept.
const SWEEP_AT: usize = 16_384;

/// The per-address limits (`server.max_connections_per_ip`, `server.handshake_rate_per_ip`
/// and `server.handshake_burst_per_ip`; 0 switches each off).
#[derive(Debug)]
pub(crate) struct PerIp {
    max_connections: u32,
    rate: f64,
    burst: f64,
    trusted: TrustedProxies,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug)]
struct Entry {
    connections: u32,
    /// Handshake tokens left, refilled at `rate` per second up to `burst`.
    tokens: f64,
    at: Instant,
}

/// A connection counted against its address; released when dropped.
#[derive(Debug)]
pub(crate) struct IpSlot {
    limits: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut entries = self.limits.entries.lock();
        if let Some(entry) = entries.get_mut(&self.ip) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }
}

impl PerIp {
    pub(crate) fn new(
        max_connections: u32,
        rate: u32,
        burst: u32,
        trusted: TrustedProxies,
    ) -> Self {
        PerIp {
            max_connections,
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate).max(1)),
            trusted,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.max_connections > 0 || self.rate > 0.0
    }

    /// Counts a handshake (and a connection) from the client behind `peer`, or refuses it
    /// with 429 and a reason. `None` without a peer address or with both limits off.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<Option<IpSlot>, Refusal> {
        let Some(peer) = peer.filter(|_| self.enabled()) else {
            return Ok(None);
        };
        let ip = client_ip(peer, headers, &self.trusted);
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= SWEEP_AT {
            let (rate, burst) = (self.rate, self.burst);
            entries.retain(|_, e| {
                let refilled = e.tokens + now.duration_since(e.at).as_secs_f64() * rate;
                e.connections > 0 || (rate > 0.0 && refilled < burst)
            });
        }
        let entry = entries.entry(ip).or_insert(Entry {
            connections: 0,
            tokens: self.burst,
            at: now,
        });
        if self.rate > 0.0 {
            let elapsed = now.duration_since(entry.at).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * self.rate).min(self.burst);
            entry.at = now;
            if entry.tokens < 1.0 {
                drop(entries);
                tracing::info!(%ip, "handshake rate per address exceeded; refusing");
                return Err(TOO_MANY_HANDSHAKES);
            }
        }
        if self.max_connections > 0 && entry.connections >= self.max_connections {
            drop(entries);
            tracing::info!(%ip, limit = self.max_connections, "connections per address at the limit; refusing");
            return Err(TOO_MANY_CONNECTIONS);
        }
        if self.rate > 0.0 {
            entry.tokens -= 1.0;
        }
        entry.connections += 1;
        Ok(Some(IpSlot {
            limits: self.clone(),
            ip,
        }))
    }
}

/// Refusal past `handshake_rate_per_ip`.
pub(crate) const TOO_MANY_HANDSHAKES: Refusal = (
    StatusCode::TOO_MANY_REQUESTS,
    "too many connection attempts from your address, retry in a second",
);

/// Refusal past `max_connections_per_ip`.
pub(crate) const TOO_MANY_CONNECTIONS: Refusal = (
    StatusCode::TOO_MANY_REQUESTS,
    "too many connections from your address, close one first",
);

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("trusted")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().expect("value"));
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers_right_to_left() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.10"]);
        let h = xff(&["6.6.6.6, 1.2.3.4, 10.0.0.7"]);
        // An untrusted peer: its header is ignored.
        assert_eq!(client_ip(ip("5.5.5.5"), &h, &t), ip("5.5.5.5"));
        // A trusted peer: the right-most untrusted hop, not the spoofable left-most.
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &t), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("192.168.1.10"), &h, &t), ip("1.2.3.4"));
        // Several header lines are one list, in order.
        let h = xff(&["6.6.6.6", "1.2.3.4:555, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &t), ip("1.2.3.4"));
        // Junk stops the walk at the last real address.
        let h = xff(&["1.2.3.4, garbage, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &h, &t), ip("10.0.0.7"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.1.1.1"), &HeaderMap::new(), &t),
            ip("10.1.1.1")
        );
        // IPv6 and mapped IPv4.
        let h = xff(&["[2001:db8::1]:80"]);
        assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &h, &t), ip("2001:db8::1"));
        // Nothing trusted by default.
        let h = xff(&["1.2.3.4"]);
        assert_eq!(
            client_ip(ip("10.1.1.1"), &h, &TrustedProxies::default()),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn bad_trusted_entries_are_refused_with_a_hint() {
        let error = TrustedProxies::parse(&["10.0.0.0/33".into()]).expect_err("bad");
        assert!(error.contains("hint"), "{error}");
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
    }

    #[test]
    fn connections_and_handshakes_per_address_are_limited() {
        let limits = Arc::new(PerIp::new(2, 0, 0, TrustedProxies::default()));
        let a = Some(ip("127.0.0.2"));
        let one = limits.admit(a, &HeaderMap::new()).expect("1");
        let _two = limits.admit(a, &HeaderMap::new()).expect("2");
        assert_eq!(
            limits.admit(a, &HeaderMap::new()).expect_err("3"),
            TOO_MANY_CONNECTIONS
        );
        assert!(
            limits
                .admit(Some(ip("127.0.0.3")), &HeaderMap::new())
                .is_ok()
        );
        drop(one);
        assert!(
            limits.admit(a, &HeaderMap::new()).is_ok(),
            "a slot was freed"
        );

        let rate = Arc::new(PerIp::new(0, 1, 3, TrustedProxies::default()));
        for _ in 0..3 {
            rate.admit(a, &HeaderMap::new()).expect("burst");
        }
        assert_eq!(
            rate.admit(a, &HeaderMap::new())
                .expect_err("past the burst"),
            TOO_MANY_HANDSHAKES
        );
        assert!(
            rate.admit(None, &HeaderMap::new())
                .expect("no peer")
                .is_none()
        );
    }
}
