//! CORS for browser requests from another origin that [`OriginPolicy`] allows: the emulation
//! transports (`GET /connection/sse`, `POST /connection/stream`, `POST /connection/emulation`)
//! and Socket.IO polling share these helpers. A refused origin gets no CORS header at all (and
//! the request itself is refused with 403 by the endpoint), so the browser blocks the page from
//! reading anything; a request without `Origin` (not a browser, or same-origin GET) gets none
//! either.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::origin::OriginPolicy;

/// Request headers a cross-origin page may send (what kilat's SDK and the Socket.IO client
/// send: JSON bodies, a token header, SSE's resume header).
const ALLOWED_HEADERS: &str = "content-type, authorization, last-event-id";

/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// The request's `Origin` when it is present and allowed: the value to echo.
pub(crate) fn allowed_origin(policy: &OriginPolicy, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    policy.allows(headers).then(|| origin.clone())
}

/// Adds the response headers of an allowed cross-origin request. `credentials`: the page may
/// send cookies (Socket.IO's `withCredentials`); kilat's own endpoints do not need them.
pub(crate) fn add(headers: &mut HeaderMap, origin: HeaderValue, credentials: bool) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The answer to a preflight (`OPTIONS`) for `methods`: 204 with the CORS headers for an
/// allowed origin, 403 without any for a refused one.
pub(crate) fn preflight(
    policy: &OriginPolicy,
    request: &HeaderMap,
    methods: &'static str,
    credentials: bool,
) -> Response {
    if request.contains_key(header::ORIGIN) && !policy.allows(request) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let mut response = preflight_response(methods);
    if let Some(origin) = allowed_origin(policy, request) {
        add(response.headers_mut(), origin, credentials);
    }
    response
}

/// A preflight's 204 for `methods` without the origin headers (the caller adds them with
/// [`add`] once it has checked the origin).
pub(crate) fn preflight_response(methods: &'static str) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS),
            (header::ACCESS_CONTROL_MAX_AGE, MAX_AGE),
        ],
    )
        .into_response()
}

/// The CORS header lines of a response head written by hand (a stream served on the socket):
/// empty unless the origin is present and allowed. A `HeaderValue` holds no CR or LF, so the
/// echoed origin cannot add lines of its own.
pub(crate) fn head_lines(policy: &OriginPolicy, request: &HeaderMap) -> Vec<u8> {
    let Some(origin) = allowed_origin(policy, request) else {
        return Vec::new();
    };
    let mut lines = b"access-control-allow-origin: ".to_vec();
    lines.extend_from_slice(origin.as_bytes());
    lines.extend_from_slice(b"\r\nvary: Origin\r\n");
    lines
}

/// Middleware of the emulation routes: answers their preflights and adds the CORS headers to
/// their answers for allowed origins.
pub(crate) async fn emulation(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::OPTIONS {
        return preflight(&state.origins, request.headers(), "GET, POST", false);
    }
    let origin = allowed_origin(&state.origins, request.headers());
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        add(response.headers_mut(), origin, false);
    }
    response
}

/// The handler behind `OPTIONS` on the emulation routes (the middleware answers first).
pub(crate) async fn options() -> StatusCode {
    StatusCode::NO_CONTENT
}
