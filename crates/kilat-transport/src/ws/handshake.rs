//! The opening handshake (RFC 6455 4.2) and permessage-deflate negotiation (RFC 7692 7.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use kilat_protocol::Encoding;
use sha1::{Digest, Sha1};

use super::WsConfig;

/// The GUID every server appends to the client's key (RFC 6455 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Parameters of an agreed permessage-deflate extension, as the server applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// LZ77 window bits the server compresses with (9 to 15; a client limit of 8 becomes 9,
    /// which is safe because zlib never emits distances beyond `window - 262`).
    pub server_window_bits: u8,
    /// Window bits the server inflates client messages with (9 to 15; a larger window
    /// decodes any stream made with a smaller one).
    pub client_window_bits: u8,
    /// Whether the client resets its compressor after every message, so the server needs no
    /// decompressor state between messages.
    pub client_no_context_takeover: bool,
}

/// An accepted upgrade request: what to answer and how to run the connection.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// `Sec-WebSocket-Accept` value derived from the client's key.
    accept: HeaderValue,
    /// The agreed permessage-deflate parameters, if any.
    deflate: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` response value matching `deflate`.
    extension_response: Option<HeaderValue>,
    /// The agreed subprotocol (`Sec-WebSocket-Protocol` of the response), if any.
    subprotocol: Option<&'static str>,
    /// The protocol encoding that subprotocol selects.
    encoding: Encoding,
}

/// Why an upgrade request was refused (answered with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The method is not GET.
    #[error("websocket upgrade needs method GET")]
    Method,
    /// The HTTP version is not 1.1.
    #[error("websocket upgrade needs HTTP/1.1")]
    HttpVersion,
    /// `Upgrade: websocket` is missing.
    #[error("missing or invalid Upgrade: websocket header")]
    Upgrade,
    /// `Connection` does not contain the `upgrade` token.
    #[error("missing or invalid Connection: upgrade header")]
    Connection,
    /// `Sec-WebSocket-Key` is missing or not 16 bytes of base64.
    #[error("missing or invalid Sec-WebSocket-Key header")]
    Key,
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported Sec-WebSocket-Version (only 13 is supported)")]
    Version,
}

impl HandshakeError {
    /// The HTTP status to answer with: always 400 Bad Request.
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// A complete refusal: status, a one-line reason as body, and for a version mismatch the
    /// `Sec-WebSocket-Version: 13` header RFC 6455 4.4 asks for.
    pub fn into_response<B: From<String>>(&self) -> Response<B> {
        let mut response = Response::new(B::from(format!("{self}\n")));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if *self == HandshakeError::Version {
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

impl Handshake {
    /// The `101 Switching Protocols` response completing the handshake.
    pub fn response<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        if let Some(ext) = &self.extension_response {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, ext.clone());
        }
        if let Some(subprotocol) = self.subprotocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(subprotocol),
            );
        }
        response
    }

    /// Agrees on `subprotocol`, which selects `encoding` for the connection; the `101` response
    /// then names it in `Sec-WebSocket-Protocol` (RFC 6455 4.2.2). Call it only with one of the
    /// client's offers ([`offered_subprotocols`]).
    pub fn set_subprotocol(&mut self, subprotocol: &'static str, encoding: Encoding) {
        self.subprotocol = Some(subprotocol);
        self.encoding = encoding;
    }

    /// The agreed subprotocol, if any.
    pub fn subprotocol(&self) -> Option<&'static str> {
        self.subprotocol
    }

    /// The protocol encoding agreed (JSON unless a subprotocol selected another).
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The agreed permessage-deflate parameters, or `None` when messages are not compressed.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// The handshake of a valid upgrade request offering `extensions` (a
    /// `Sec-WebSocket-Extensions` value), for tests and benchmarks that need a connection
    /// without an HTTP exchange.
    ///
    /// # Panics
    /// Never for a valid offer; the request itself is always valid.
    #[doc(hidden)]
    pub fn for_offer(extensions: Option<&str>, config: &WsConfig) -> Handshake {
        let mut request = http::Request::builder()
            .uri("/")
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header(header::SEC_WEBSOCKET_VERSION, "13");
        if let Some(extensions) = extensions {
            request = request.header(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
        }
        let (parts, ()) = request.body(()).expect("a valid request").into_parts();
        negotiate(&parts, config).expect("a valid upgrade")
    }
}

/// Validates an upgrade request and negotiates permessage-deflate.
///
/// # Errors
/// [`HandshakeError`] naming the first requirement of RFC 6455 4.2.1 the request breaks.
/// Extension offers we cannot accept are declined silently, never an error.
pub fn negotiate(
    req: &http::request::Parts,
    config: &WsConfig,
) -> Result<Handshake, HandshakeError> {
    if req.method != Method::GET {
        return Err(HandshakeError::Method);
    }
    if req.version != Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    let headers = &req.headers;
    if !header_has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::Upgrade);
    }
    if !header_has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::Connection);
    }
    let key = single_header(headers, &header::SEC_WEBSOCKET_KEY).ok_or(HandshakeError::Key)?;
    match BASE64.decode(key.as_bytes()) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    match single_header(headers, &header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes().trim_ascii() == b"13" => {}
        _ => return Err(HandshakeError::Version),
    }

    let deflate = if config.deflate {
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|offer| accept_offer(offer, config))
    } else {
        None
    };
    let (deflate, extension_response) = match deflate {
        Some((params, text)) => (Some(params), HeaderValue::from_str(&text).ok()),
        None => (None, None),
    };
    Ok(Handshake {
        accept: accept_key(key.as_bytes()),
        deflate: deflate.filter(|_| extension_response.is_some()),
        extension_response,
        subprotocol: None,
        encoding: Encoding::Json,
    })
}

/// The subprotocols a client offers (`Sec-WebSocket-Protocol`, comma-separated, possibly over
/// several headers), in its order of preference.
pub fn offered_subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub(crate) fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let encoded = BASE64.encode(sha.finalize());
    HeaderValue::from_str(&encoded).expect("base64 output is a valid header value")
}

/// The one value of a header that must appear once.
fn single_header<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Whether a comma-separated header contains `token` (ASCII case-insensitive).
fn header_has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses a window-bits value (8 to 15, possibly quoted).
fn window_bits(value: &str) -> Option<u8> {
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// Accepts one permessage-deflate offer, returning the server's parameters and the response
/// extension text, or `None` to decline it (another extension, an unknown, duplicated or
/// invalid parameter).
fn accept_offer(offer: &str, config: &WsConfig) -> Option<(DeflateParams, String)> {
    let mut parts = offer.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("permessage-deflate")
    {
        return None;
    }
    let mut seen_server_nct = false;
    let mut client_nct = false;
    let mut server_bits: Option<u8> = None;
    // None: not offered; Some(None): offered without value; Some(Some(n)): offered with n.
    let mut client_bits: Option<Option<u8>> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (param.trim(), None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if !seen_server_nct && value.is_none() => {
                seen_server_nct = true;
            }
            "client_no_context_takeover" if !client_nct && value.is_none() => client_nct = true,
            "server_max_window_bits" if server_bits.is_none() => {
                server_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" if client_bits.is_none() => {
                client_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
            }
            _ => return None,
        }
    }

    // We always compress without context takeover (shared broadcast frames need it), so we
    // always say so. A client limit on our window is honoured and echoed back.
    let mut response = String::from("permessage-deflate; server_no_context_takeover");
    let server_window_bits = match server_bits {
        Some(bits) => {
            response.push_str(&format!("; server_max_window_bits={bits}"));
            bits.max(9)
        }
        None => 15,
    };
    // Asking the client to drop its context (RFC 7692 7.1.1.2 lets the server ask) means no
    // inflate window has to be kept per connection between messages.
    let client_no_context_takeover = client_nct || config.deflate_client_no_context_takeover;
    if client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    // We never limit the client's window (a bigger inflate window decodes any stream), so we
    // only repeat a limit the client announced itself.
    let client_window_bits = match client_bits {
        Some(Some(bits)) => {
            response.push_str(&format!("; client_max_window_bits={bits}"));
            bits.max(9)
        }
        _ => 15,
    };
    Some((
        DeflateParams {
            server_window_bits,
            client_window_bits,
            client_no_context_takeover,
        },
        response,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method("GET").uri("/ws");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    fn upgrade_with(ext: Option<&str>) -> http::request::Parts {
        let mut headers = vec![
            ("host", "example"),
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ];
        if let Some(ext) = ext {
            headers.push(("sec-websocket-extensions", ext));
        }
        request(&headers)
    }

    fn extension_response(ext: &str) -> Option<String> {
        let hs = negotiate(&upgrade_with(Some(ext)), &WsConfig::default()).expect("valid");
        let resp = hs.response::<()>();
        resp.headers()
            .get(header::SEC_WEBSOCKET_EXTENSIONS)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        let hs = negotiate(&upgrade_with(None), &WsConfig::default()).expect("valid");
        let resp = hs.response::<()>();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            resp.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(hs.deflate().is_none());
    }

    #[test]
    fn refusals() {
        let cfg = WsConfig::default();
        let missing_key = request(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
        ]);
        assert_eq!(
            negotiate(&missing_key, &cfg).err(),
            Some(HandshakeError::Key)
        );
        let short_key = request(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "c2hvcnQ="),
            ("sec-websocket-version", "13"),
        ]);
        assert_eq!(negotiate(&short_key, &cfg).err(), Some(HandshakeError::Key));
        let old = request(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "8"),
        ]);
        let err = negotiate(&old, &cfg).expect_err("refused");
        let resp = err.into_response::<String>();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        let no_upgrade = request(&[("connection", "Upgrade")]);
        assert_eq!(
            negotiate(&no_upgrade, &cfg).err(),
            Some(HandshakeError::Upgrade)
        );
    }

    #[test]
    fn deflate_negotiation() {
        assert_eq!(
            extension_response("permessage-deflate").as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            extension_response("permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            extension_response(
                "permessage-deflate; server_max_window_bits=8; client_max_window_bits=10"
            )
            .as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=8; client_no_context_takeover; client_max_window_bits=10"
            )
        );
        // The first acceptable offer wins; invalid ones are skipped.
        assert_eq!(
            extension_response("permessage-deflate; server_max_window_bits=16, x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=\"10\"").as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover")
        );
        for declined in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=1a",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; foo",
            "deflate-frame",
        ] {
            assert_eq!(extension_response(declined), None, "{declined}");
        }
        let off = WsConfig {
            deflate: false,
            ..WsConfig::default()
        };
        let hs = negotiate(&upgrade_with(Some("permessage-deflate")), &off).expect("valid");
        assert!(hs.deflate().is_none());
    }

    #[test]
    fn client_context_takeover_is_honoured_when_configured() {
        let cfg = WsConfig {
            deflate_client_no_context_takeover: false,
            ..WsConfig::default()
        };
        let hs = negotiate(&upgrade_with(Some("permessage-deflate")), &cfg).expect("valid");
        let params = hs.deflate().expect("agreed");
        assert!(!params.client_no_context_takeover);
        assert_eq!(params.server_window_bits, 15);
    }
}
