//! Origin checks for browser requests (cross-site WebSocket hijacking, cross-site requests and
//! DNS rebinding protection).
//!
//! Browsers send `Origin` on WebSocket upgrades and on every cross-origin request; a page on
//! another site must not be able to open a connection or call the API riding on the user's
//! cookies or on the network position of the browser (a server on `127.0.0.1`). Clients that are
//! not browsers send no `Origin` and are let through: they cannot be tricked into carrying a
//! user's ambient credentials, and tokens or the API key protect them.
//!
//! The server's own origin is never taken from the `Host` header: a DNS-rebinding page at
//! `http://attacker.example:8000`, whose name now resolves to `127.0.0.1`, sends
//! `Host: attacker.example:8000` and a matching `Origin`. Own origins come from the
//! configuration instead: `server.public_url` and the listen address (issue 20).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::header::ORIGIN;

use crate::glob::glob_match;

/// Which browser origins may open connections and call the API.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    /// `server.allowed_origins`: patterns (lowercase, no trailing `/`), `*` wildcards allowed.
    patterns: Vec<String>,
    /// The server's own origins (`scheme://host[:port]`, lowercase), allowed whatever
    /// `patterns` say: `server.public_url` and the listen address with its loopback names.
    own: Vec<String>,
    /// Dev mode: any loopback origin (`localhost`, `127.0.0.1`, `[::1]`, any port and scheme),
    /// so a page on an application's local dev server can connect. Names that merely resolve to
    /// a loopback address do not count, which keeps DNS rebinding out.
    any_loopback: bool,
}

impl OriginPolicy {
    /// The policy of a server listening on `listen` (with TLS when `tls`), reached by browsers
    /// at `public_url` when set, allowing `allowed` besides its own origin, and every loopback
    /// origin in dev mode.
    pub(crate) fn new(
        allowed: &[String],
        listen: SocketAddr,
        tls: bool,
        public_url: Option<&str>,
        dev: bool,
    ) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let port = listen.port();
        let mut hosts = Vec::new();
        let ip = listen.ip();
        if ip.is_unspecified() || ip.is_loopback() {
            hosts.extend([
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "[::1]".to_owned(),
            ]);
        }
        if !ip.is_unspecified() {
            hosts.push(match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            });
        }
        let default_port = if tls { 443 } else { 80 };
        let mut own = Vec::new();
        for host in hosts {
            own.push(format!("{scheme}://{host}:{port}"));
            if port == default_port {
                own.push(format!("{scheme}://{host}"));
            }
        }
        if let Some(url) = public_url.and_then(origin_of) {
            own.push(url);
        }
        own.sort();
        own.dedup();
        OriginPolicy {
            patterns: allowed.iter().map(|p| normalise(p)).collect(),
            own,
            any_loopback: dev,
        }
    }

    /// Whether a request with these headers may proceed: no `Origin` (not a browser), or an
    /// allowed one.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        self.allows_origin(&normalise(origin))
    }

    fn allows_origin(&self, origin: &str) -> bool {
        if self.own.iter().any(|own| own == origin) {
            return true;
        }
        if self.any_loopback && is_loopback_origin(origin) {
            return true;
        }
        self.patterns
            .iter()
            .any(|pattern| glob_match(pattern.as_bytes(), origin.as_bytes()))
    }

    /// The server's own origins, for log lines and hints.
    pub(crate) fn own(&self) -> &[String] {
        &self.own
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The origin (`scheme://host[:port]`) of a URL such as `https://rt.example.com/some/path`.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let url = url.trim().to_ascii_lowercase();
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority.strip_suffix(default).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// `http(s)://localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, rest)) if rest.is_empty() || valid_port(rest) => host,
            _ => return false,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if valid_port(&format!(":{port}")) => host,
            Some(_) => return false,
            None => authority,
        }
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn valid_port(rest: &str) -> bool {
    rest.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_origin(origin: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static(origin));
        h
    }

    fn local(dev: bool) -> OriginPolicy {
        OriginPolicy::new(&[], "127.0.0.1:8000".parse().unwrap(), false, None, dev)
    }

    #[test]
    fn own_origin_is_the_listen_address_and_its_loopback_names() {
        let policy = local(false);
        for ok in [
            "http://127.0.0.1:8000",
            "http://localhost:8000",
            "http://[::1]:8000",
        ] {
            assert!(policy.allows_origin(ok), "{ok}");
        }
        for refused in [
            "http://127.0.0.1:3000",
            "https://127.0.0.1:8000",
            "http://attacker.example:8000",
            "null",
        ] {
            assert!(!policy.allows_origin(refused), "{refused}");
        }
        assert!(policy.allows(&HeaderMap::new()), "no Origin: not a browser");
    }

    #[test]
    fn dns_rebinding_is_refused_whatever_the_host_header_says() {
        // Before issue 20 the Origin was compared with Host, which the attacker controls.
        let mut headers = with_origin("http://attacker.example:8000");
        headers.insert(
            axum::http::header::HOST,
            HeaderValue::from_static("attacker.example:8000"),
        );
        assert!(!local(false).allows(&headers));
        assert!(!local(true).allows(&headers), "dev mode too");
    }

    #[test]
    fn dev_mode_accepts_every_loopback_origin_and_nothing_else() {
        let policy = local(true);
        for ok in [
            "http://localhost:5173",
            "https://127.0.0.1:3000",
            "http://[::1]:1234",
            "http://localhost",
        ] {
            assert!(policy.allows_origin(ok), "{ok}");
        }
        for refused in [
            "http://localhost.attacker.example:8000",
            "http://127.0.0.1.nip.io:8000",
            "http://evil.example",
            "file://",
        ] {
            assert!(!policy.allows_origin(refused), "{refused}");
        }
    }

    #[test]
    fn public_url_and_tls_set_the_scheme_and_host() {
        let policy = OriginPolicy::new(
            &[],
            "0.0.0.0:443".parse().unwrap(),
            true,
            Some("https://rt.example.com/"),
            false,
        );
        assert!(policy.allows_origin("https://rt.example.com"));
        assert!(policy.allows_origin("https://localhost"));
        assert!(!policy.allows_origin("http://rt.example.com"));
        assert!(!policy.allows_origin("http://localhost:443"));
        assert_eq!(
            origin_of("https://rt.example.com:443/x").as_deref(),
            Some("https://rt.example.com")
        );
        assert_eq!(origin_of("ftp://x"), None);
    }

    #[test]
    fn configured_origins_with_wildcards() {
        let list = vec![
            "https://*.example.com".to_owned(),
            "http://localhost:3000/".to_owned(),
        ];
        let policy = OriginPolicy::new(&list, "10.0.0.5:8000".parse().unwrap(), false, None, false);
        assert!(policy.allows_origin("https://app.example.com"));
        assert!(policy.allows_origin("http://localhost:3000"));
        assert!(policy.allows_origin("http://10.0.0.5:8000"));
        assert!(!policy.allows_origin("https://example.com.evil.net"));
        assert!(!policy.allows_origin("http://app.example.com"));
        let any = OriginPolicy::new(
            &["*".to_owned()],
            "10.0.0.5:8000".parse().unwrap(),
            false,
            None,
            false,
        );
        assert!(any.allows_origin("https://anything"));
    }
}
