//! Origin checks for browser handshakes (cross-site WebSocket hijacking protection).
//!
//! Browsers send `Origin` on WebSocket upgrades and cross-site requests; a page on another site
//! must not be able to open a connection that rides on the user's cookies. Clients that are not
//! browsers send no `Origin` and are let through: they cannot be tricked into carrying a user's
//! ambient credentials, and tokens protect them.

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};

use crate::glob::glob_match;

/// Whether a request with these headers may open a connection.
///
/// `allowed` empty: only the server's own origin (the `Origin` host equals the `Host` header).
/// Otherwise each entry is an origin such as `https://app.example.com`, may use `*` wildcards
/// (`https://*.example.com`), and `*` alone allows every origin.
pub(crate) fn allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    if allowed.is_empty() {
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        return matches!((origin_host, host), (Some(o), Some(h)) if o == h);
    }
    allowed.iter().any(|pattern| {
        let pattern = pattern.trim().trim_end_matches('/').to_ascii_lowercase();
        glob_match(pattern.as_bytes(), origin.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static(host));
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_static(o));
        }
        h
    }

    #[test]
    fn same_origin_is_the_default() {
        assert!(allowed(
            &headers(Some("http://127.0.0.1:8000"), "127.0.0.1:8000"),
            &[]
        ));
        assert!(!allowed(
            &headers(Some("https://evil.example"), "127.0.0.1:8000"),
            &[]
        ));
        assert!(!allowed(&headers(Some("null"), "127.0.0.1:8000"), &[]));
        assert!(allowed(&headers(None, "127.0.0.1:8000"), &[]));
    }

    #[test]
    fn configured_origins_with_wildcards() {
        let list = vec![
            "https://*.example.com".to_owned(),
            "http://localhost:3000".to_owned(),
        ];
        assert!(allowed(
            &headers(Some("https://app.example.com"), "kilat"),
            &list
        ));
        assert!(allowed(
            &headers(Some("http://localhost:3000"), "kilat"),
            &list
        ));
        assert!(!allowed(
            &headers(Some("https://example.com.evil.net"), "kilat"),
            &list
        ));
        assert!(!allowed(
            &headers(Some("http://app.example.com"), "kilat"),
            &list
        ));
        assert!(allowed(
            &headers(Some("https://anything"), "kilat"),
            &["*".to_owned()]
        ));
    }
}
