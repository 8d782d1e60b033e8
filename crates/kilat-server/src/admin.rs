//! The admin console at `/admin`: a password login, a session cookie, and the server API behind
//! it (`POST /admin/api/<method>` runs the same methods as `POST /api/<method>`), plus a live
//! tail of a channel as server-sent events. The pages themselves are static files in
//! `web/admin/`.
//!
//! Off unless configured: without `server.admin_password` (or `--dev`, which makes a one-time
//! password and prints it) every `/admin` path answers 404 with a hint.
//!
//! Security decisions:
//! - The session id is 256 random bits from the OS, in a cookie that is `HttpOnly` (scripts
//!   cannot read it), `SameSite=Strict` (no cross-site request carries it), `Path=/admin`, and
//!   `Secure` when the listener speaks TLS.
//! - Every action (a POST) must also carry the session's CSRF token in `X-CSRF-Token`; the page
//!   gets it from `GET /admin/session`, which a cross-site page cannot read. `SameSite=Strict`
//!   alone would leave older browsers and same-site subdomains open.
//! - Failed logins are limited across all clients (the listener does not pass peer addresses
//!   on): after [`LOGIN_BURST`] failures, one attempt per [`LOGIN_REFILL`]; the answer is 429
//!   with `Retry-After`, even for the right password, so guessing gains nothing by waiting less.
//! - Passwords are compared in constant time; neither the password nor session ids are logged.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kilat_core::Watch;
use kilat_protocol::SharedFrame;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;

/// The session cookie's name.
const COOKIE: &str = "kilat_admin";

/// How long a console session lives without a new login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most console sessions at once; past it the oldest is dropped.
const SESSIONS_MAX: usize = 64;

/// Failed logins allowed in a row before the limit applies.
pub(crate) const LOGIN_BURST: u32 = 5;

/// One more failed login is allowed per this interval once the burst is used up.
const LOGIN_REFILL: Duration = Duration::from_secs(10);

/// How often a live tail on a quiet channel sends a comment, so a closed page is noticed.
const TAIL_KEEPALIVE: Duration = Duration::from_secs(15);

/// Largest body of a console request (a publish through the console included).
const MAX_BODY: usize = 1024 * 1024;
/// Largest login body: `{"password": ...}` with a long password fits many times over.
const LOGIN_MAX_BODY: usize = 4096;

/// 32 random bytes from the OS as 64 hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// Failed-login accounting: a token bucket of failures.
#[derive(Debug)]
struct Attempts {
    /// Failures still allowed before the limit applies.
    left: u32,
    /// When `left` last grew (or was spent from full).
    since: Instant,
}

/// The console's password, its sessions and the login limiter.
#[derive(Debug)]
pub(crate) struct Admin {
    password: String,
    /// Whether cookies get `Secure` (the listener speaks TLS).
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
    attempts: Mutex<Attempts>,
}

/// The result of a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Login {
    /// Logged in: the session id and its CSRF token.
    Accepted { session: String, csrf: String },
    /// Wrong password.
    Refused,
    /// Too many failures: try again after this long.
    Limited(Duration),
}

impl Admin {
    /// The console with `password`; `secure` when served over TLS.
    pub(crate) fn new(password: String, secure: bool) -> Self {
        Admin {
            password,
            secure,
            sessions: Mutex::default(),
            attempts: Mutex::new(Attempts {
                left: LOGIN_BURST,
                since: Instant::now(),
            }),
        }
    }

    /// A one-time password for `--dev` without `server.admin_password`.
    pub(crate) fn one_time_password() -> String {
        random_hex()[..20].to_owned()
    }

    /// Checks `password`, within the failed-login limit.
    pub(crate) fn login(&self, password: &str, now: Instant) -> Login {
        let mut attempts = self.attempts.lock();
        let refilled = (now.saturating_duration_since(attempts.since).as_secs()
            / LOGIN_REFILL.as_secs()) as u32;
        if refilled > 0 {
            attempts.left = (attempts.left + refilled).min(LOGIN_BURST);
            attempts.since = now;
        }
        if attempts.left == 0 {
            let wait = LOGIN_REFILL.saturating_sub(now.saturating_duration_since(attempts.since));
            return Login::Limited(wait.max(Duration::from_secs(1)));
        }
        if !constant_time_eq(password.as_bytes(), self.password.as_bytes()) {
            if attempts.left == LOGIN_BURST {
                attempts.since = now;
            }
            attempts.left -= 1;
            return Login::Refused;
        }
        drop(attempts);
        let session = random_hex();
        let csrf = random_hex();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= SESSIONS_MAX
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            session.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Login::Accepted { session, csrf }
    }

    /// The CSRF token of the session in `headers`' cookie, if it is a live session.
    fn session_csrf(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let sessions = self.sessions.lock();
        let session = sessions.get(id)?;
        (session.expires > Instant::now()).then(|| session.csrf.clone())
    }

    /// Whether `headers` carry a live session and its CSRF token.
    fn authorised_action(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        self.session_csrf(headers)
            .is_some_and(|csrf| constant_time_eq(csrf.as_bytes(), presented.as_bytes()))
    }

    fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            self.sessions.lock().remove(id);
        }
    }

    fn set_cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .expect("cookie values are hex")
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let code = u32::from(status.as_u16());
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn off() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "the admin console is off: set server.admin_password (--admin-password, \
         KILAT_SERVER_ADMIN_PASSWORD) or run with --dev",
    )
}

/// `GET /admin` and `GET /admin/{*path}`: the console's pages.
pub(crate) async fn page(State(state): State<AppState>, path: Option<Path<String>>) -> Response {
    if state.admin.is_none() {
        return off();
    }
    let path = path.map(|Path(p)| p).unwrap_or_default();
    let file = if path.is_empty() || !path.contains('.') {
        "index.html".to_owned()
    } else {
        path
    };
    let mut response = crate::assets::admin(&file);
    // The console must not be framed by another site (clickjacking).
    response.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

#[derive(Deserialize)]
pub(crate) struct LoginRequest {
    password: String,
}

/// `POST /admin/login` with `{"password"}`: sets the session cookie, answers the CSRF token.
///
/// Hardened after the attacker's pass over the console (issue 20): the body is read with the
/// same deadline and minimum rate as every other request body, a login form posted by a page of
/// another origin is refused before the password is looked at, and the password is small.
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(admin) = &state.admin else {
        return off();
    };
    if !state.origins.allows(&headers) {
        return json_error(StatusCode::FORBIDDEN, "cross-site login refused");
    }
    let body = match crate::body::read(body, LOGIN_MAX_BODY, state.body_timeout).await {
        Ok(body) => body,
        Err(refused) => return json_error(refused.status, refused.reason),
    };
    let Ok(request) = serde_json::from_slice::<LoginRequest>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "send {\"password\": \"...\"}");
    };
    match admin.login(&request.password, Instant::now()) {
        Login::Accepted { session, csrf } => {
            tracing::info!("admin console: login");
            let mut response = axum::Json(json!({ "csrf": csrf })).into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                admin.set_cookie(&session, SESSION_TTL.as_secs()),
            );
            response
        }
        Login::Refused => {
            tracing::warn!("admin console: wrong password");
            json_error(StatusCode::UNAUTHORIZED, "wrong password")
        }
        Login::Limited(wait) => {
            tracing::warn!("admin console: login attempts limited");
            let mut response = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many failed logins; try again in {} s",
                    wait.as_secs().max(1)
                ),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            response
        }
    }
}

/// `GET /admin/session`: the CSRF token while the session cookie is valid, else 401.
pub(crate) async fn session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(admin) = &state.admin else {
        return off();
    };
    match admin.session_csrf(&headers) {
        Some(csrf) => axum::Json(json!({ "csrf": csrf })).into_response(),
        None => json_error(StatusCode::UNAUTHORIZED, "log in first"),
    }
}

/// `POST /admin/logout` (with the CSRF token): ends the session.
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(admin) = &state.admin else {
        return off();
    };
    if !admin.authorised_action(&headers) {
        return json_error(StatusCode::FORBIDDEN, "session or CSRF token missing");
    }
    admin.logout(&headers);
    let mut response = axum::Json(json!({})).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, admin.set_cookie("", 0));
    response
}

/// `POST /admin/api/{method}`: the server API behind the console's session and CSRF token.
pub(crate) async fn api(
    State(state): State<AppState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(admin) = &state.admin else {
        return off();
    };
    if !admin.authorised_action(&headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            "log in first (the session cookie and its X-CSRF-Token are required)",
        );
    }
    let bytes = match crate::body::read(body, MAX_BODY, state.body_timeout).await {
        Ok(bytes) => bytes,
        Err(refused) if refused.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return json_error(refused.status, "request body over 1 MiB");
        }
        Err(refused) => return json_error(refused.status, refused.reason),
    };
    if method != "info" && method != "channels" && method != "connections" {
        tracing::info!(method, "admin console: API call");
    }
    crate::api::run(&state, &method, bytes).await
}

#[derive(Deserialize)]
pub(crate) struct TailQuery {
    channel: String,
}

/// `GET /admin/tail?channel=...`: the channel's publications as they happen, as server-sent
/// events (`data: <push frame JSON>`), until the page closes the stream.
pub(crate) async fn tail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<TailQuery>,
) -> Response {
    let Some(admin) = &state.admin else {
        return off();
    };
    if admin.session_csrf(&headers).is_none() {
        return json_error(StatusCode::UNAUTHORIZED, "log in first");
    }
    if let Err(error) = kilat_protocol::validate_channel(&query.channel) {
        return json_error(StatusCode::BAD_REQUEST, &error.to_string());
    }
    let watch = match state.node.watch(&query.channel).await {
        Ok(watch) => watch,
        Err(error) => {
            let error = error.to_client_error();
            return json_error(StatusCode::BAD_REQUEST, &error.message);
        }
    };
    let stream = futures_util::stream::unfold(
        (watch, true, Vec::new()),
        |(watch, first, mut batch): (Watch, bool, Vec<SharedFrame>)| async move {
            if first {
                // An opening comment: the browser's EventSource fires `open` at once.
                let hello = Bytes::from_static(b": watching\n\n");
                return Some((Ok::<_, Infallible>(hello), (watch, false, batch)));
            }
            // Wakes on: the channel's publications, or the keep-alive interval; the comment sent
            // then lets a closed page be noticed (the write fails) on a quiet channel too.
            if tokio::time::timeout(TAIL_KEEPALIVE, watch.outbox.ready())
                .await
                .is_err()
            {
                let ping = Bytes::from_static(b": keep-alive\n\n");
                return Some((Ok(ping), (watch, false, batch)));
            }
            let closed = watch.outbox.drain(&mut batch, 256 * 1024);
            if closed.is_some() && batch.is_empty() {
                return None;
            }
            let mut text = Vec::new();
            for frame in batch.drain(..) {
                for line in frame.json().split(|b| *b == b'\n') {
                    text.extend_from_slice(b"data: ");
                    text.extend_from_slice(line);
                    text.extend_from_slice(b"\n\n");
                }
            }
            Some((Ok(Bytes::from(text)), (watch, false, batch)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The effective configuration as JSON, every secret replaced by `"***"` and passwords in URLs
/// hidden: what the console's Configuration page and the `config` API method show.
pub(crate) fn redacted_config(config: &crate::Config) -> serde_json::Value {
    fn redact(key: &str, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    redact(k, v);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    redact(key, item);
                }
            }
            serde_json::Value::String(text) => {
                let secret = key.contains("secret")
                    || key.contains("password")
                    || key == "key"
                    || (key.ends_with("_key") && key != "public_key" && key != "tls_key");
                if secret && !text.is_empty() {
                    *text = "***".to_owned();
                } else if text.contains("://") {
                    *text = crate::config::redact_url(text);
                }
            }
            _ => {}
        }
    }
    let mut value = serde_json::to_value(config).unwrap_or_default();
    redact("", &mut value);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_are_limited_and_refill_over_time() {
        let admin = Admin::new("right".into(), false);
        let start = Instant::now();
        for _ in 0..LOGIN_BURST {
            assert_eq!(admin.login("wrong", start), Login::Refused);
        }
        // Limited now, even with the right password.
        assert!(matches!(admin.login("right", start), Login::Limited(_)));
        // One attempt comes back per interval.
        let later = start + LOGIN_REFILL;
        assert!(matches!(
            admin.login("right", later),
            Login::Accepted { .. }
        ));
    }

    #[test]
    fn a_session_needs_its_csrf_token_for_actions() {
        let admin = Admin::new("pw".into(), true);
        let Login::Accepted { session, csrf } = admin.login("pw", Instant::now()) else {
            panic!("login refused");
        };
        assert_eq!(session.len(), 64);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={session}")).expect("header"),
        );
        assert_eq!(admin.session_csrf(&headers), Some(csrf.clone()));
        assert!(!admin.authorised_action(&headers));
        headers.insert(
            "x-csrf-token",
            HeaderValue::from_str("nope").expect("header"),
        );
        assert!(!admin.authorised_action(&headers));
        headers.insert(
            "x-csrf-token",
            HeaderValue::from_str(&csrf).expect("header"),
        );
        assert!(admin.authorised_action(&headers));
        let cookie = admin.set_cookie(&session, 60);
        let cookie = cookie.to_str().expect("ascii");
        for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/admin"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        admin.logout(&headers);
        assert_eq!(admin.session_csrf(&headers), None);
    }

    #[test]
    fn the_configuration_shown_has_no_secret() {
        let mut config = crate::Config::default();
        config.api.key = Some("api-secret-1".into());
        config.server.admin_password = Some("admin-secret-2".into());
        config.engine.redis_url = "redis://:redis-secret-3@h:6379".into();
        config.token = Some(toml::from_str(r#"secret = "token-secret-4""#).expect("toml"));
        let shown = redacted_config(&config).to_string();
        for secret in [
            "api-secret-1",
            "admin-secret-2",
            "redis-secret-3",
            "token-secret-4",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("redis://:<redacted>@h:6379"), "{shown}");
    }
}
