//! The server HTTP API (docs/api.md): `POST /api/<method>` with
//! `Authorization: apikey <key>`, for the application's backend to publish, inspect and control.
//!
//! Every answer to an authorised, well-formed request is HTTP 200 with `{"result": ...}` or
//! `{"error": {"code", "message"}}`; a missing or wrong key is 401 and malformed JSON is 400, so
//! a backend can tell transport problems from refusals. `GET /api/openapi.json` describes it all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kilat_core::{CoreError, HistoryOptions};
use kilat_protocol::{
    ClientError, Disconnect, DisconnectCode, ErrorCode, Payload, RawJson, StreamPosition,
};
use parking_lot::Mutex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::AppState;
use crate::glob::glob_match;

/// The OpenAPI 3 description of this API, served at `/api/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

/// Largest API request body, in bytes.
const MAX_BODY: usize = 1024 * 1024;

/// How long a publish `idempotency_key` is remembered.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);

/// Most idempotency keys remembered at once; past it the oldest half is forgotten.
const IDEMPOTENCY_MAX: usize = 100_000;

/// Every API method, in the order the OpenAPI document lists them.
pub(crate) const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "send",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "revoke",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
    "connections",
    "config",
];

/// API access and the memory of recent idempotent publishes.
#[derive(Debug, Default)]
pub(crate) struct Api {
    /// The key clients must present; `None` means the API is closed (or open in dev mode).
    pub(crate) key: Option<String>,
    /// Whether a missing key opens the API (dev mode) instead of closing it.
    pub(crate) open_without_key: bool,
    /// Results of recent publishes by idempotency key, so a retried publish is not repeated.
    recent: Mutex<HashMap<String, (Instant, Value)>>,
}

impl Api {
    /// API settings from the configuration.
    pub(crate) fn new(key: Option<String>, dev: bool) -> Self {
        Api {
            key: key.filter(|k| !k.is_empty()),
            open_without_key: dev,
            recent: Mutex::default(),
        }
    }

    /// Whether the request carries the right key (constant-time comparison).
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.key else {
            return self.open_without_key;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("apikey "))
            .map(str::trim);
        presented.is_some_and(|p| constant_time_eq(p.as_bytes(), key.as_bytes()))
    }

    fn remembered(&self, key: &str) -> Option<Value> {
        let recent = self.recent.lock();
        recent
            .get(key)
            .filter(|(at, _)| at.elapsed() < IDEMPOTENCY_TTL)
            .map(|(_, result)| result.clone())
    }

    fn remember(&self, key: String, result: Value) {
        let mut recent = self.recent.lock();
        if recent.len() >= IDEMPOTENCY_MAX {
            recent.retain(|_, (at, _)| at.elapsed() < IDEMPOTENCY_TTL);
            if recent.len() >= IDEMPOTENCY_MAX {
                let mut ages: Vec<Instant> = recent.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                recent.retain(|_, (at, _)| *at > cutoff);
            }
        }
        recent.insert(key, (Instant::now(), result));
    }
}

/// A browser request the API must not act on, answered 403 (issue 20).
///
/// With an API key the key is the guard: a cross-site page cannot add an `Authorization`
/// header without a CORS preflight, which kilat never grants. Without one (the API open in dev
/// mode) a browser request, recognisable by its `Origin` header, must come from an allowed
/// origin and carry `Content-Type: application/json`: a cross-site form or `text/plain` fetch
/// is a "simple" request that browsers send without asking, so it would otherwise run.
/// Requests without `Origin` (curl, backends) are not browsers and pass.
fn cross_site_refusal(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if state.api.key.is_some() || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    if !state.origins.allows(headers) {
        return Some(http_error(
            StatusCode::FORBIDDEN,
            "cross-site request refused: the API acts only on its own origin's pages,              server.allowed_origins, or requests with an API key",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    (!json).then(|| {
        http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a browser request to the API must send Content-Type: application/json",
        )
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /api/openapi.json`.
pub(crate) async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /api/{method}`.
pub(crate) async fn call(
    State(state): State<AppState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !state.api.authorised(&headers) {
        let hint = if state.api.key.is_some() {
            "missing or wrong API key (send `Authorization: apikey <key>`)"
        } else {
            "the server API is disabled: configure api.key (or --api-key / KILAT_API_KEY)"
        };
        return http_error(StatusCode::UNAUTHORIZED, hint);
    }
    if let Some(refusal) = cross_site_refusal(&state, &headers) {
        return refusal;
    }
    let bytes = match crate::body::read(body, MAX_BODY, state.body_timeout).await {
        Ok(bytes) => bytes,
        Err(refused) if refused.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return http_error(refused.status, "request body over 1 MiB");
        }
        Err(refused) => return http_error(refused.status, refused.reason),
    };
    run(&state, &method, bytes).await
}

/// Runs API `method` on `bytes` for a caller already authorised (by key, or by the admin
/// console's session).
pub(crate) async fn run(state: &AppState, method: &str, bytes: axum::body::Bytes) -> Response {
    let state = state.clone();
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        axum::body::Bytes::from_static(b"{}")
    } else {
        bytes
    };
    let outcome = match method {
        "publish" => with(&bytes, |r| publish(&state, r)).await,
        "broadcast" => with(&bytes, |r| broadcast(&state, r)).await,
        "send" => {
            with(&bytes, |r| async {
                crate::send::send(&state, r).await.map_err(ApiError::Client)
            })
            .await
        }
        "subscribe" => with(&bytes, |r| subscribe(&state, r, true)).await,
        "unsubscribe" => with(&bytes, |r| subscribe(&state, r, false)).await,
        "disconnect" => with(&bytes, |r| disconnect(&state, r)).await,
        "revoke" => {
            with(&bytes, |r| async move {
                let revocation = crate::revoke::parse(r).map_err(ApiError::Client)?;
                let closed = crate::revoke::revoke(&state, &revocation).await;
                Ok(json!({ "connections": closed, "until": revocation.until }))
            })
            .await
        }
        "presence" => {
            with(&bytes, |r: PresencePageRequest| async move {
                to_value(
                    state
                        .node
                        .presence_page(&r.channel, r.cursor.as_deref(), r.limit)
                        .await?,
                )
            })
            .await
        }
        "presence_stats" => {
            with(&bytes, |r: ChannelRequest| async move {
                to_value(state.node.presence_stats(&r.channel).await?)
            })
            .await
        }
        "history" => with(&bytes, |r| history(&state, r)).await,
        "history_remove" => {
            with(&bytes, |r: ChannelRequest| async move {
                state.node.history_remove(&r.channel).await?;
                Ok(json!({}))
            })
            .await
        }
        "channels" => with(&bytes, |r| channels(&state, r)).await,
        "info" => with(&bytes, |_: Empty| info(&state)).await,
        "connections" => with(&bytes, |r| connections(&state, r)).await,
        "config" => {
            with(&bytes, |_: Empty| async {
                Ok(json!({ "config": *state.effective_config }))
            })
            .await
        }
        _ => Outcome::Refused(ClientError::new(
            ErrorCode::NOT_FOUND,
            format!(
                "unknown API method `{method}` (methods: {})",
                METHODS.join(", ")
            ),
        )),
    };
    match outcome {
        Outcome::Result(result) => axum::Json(json!({ "result": result })).into_response(),
        Outcome::Refused(error) => axum::Json(json!({
            "error": { "code": error.code, "message": error.message }
        }))
        .into_response(),
        Outcome::Malformed(reason) => http_error(StatusCode::BAD_REQUEST, &reason),
    }
}

/// What one API call produced.
enum Outcome {
    /// `{"result": ...}`
    Result(Value),
    /// `{"error": ...}` with HTTP 200.
    Refused(ClientError),
    /// HTTP 400: the body is not the JSON this method takes.
    Malformed(String),
}

/// Parses the body as `R` and runs `f`, mapping hub errors to client codes once.
async fn with<R, F, Fut>(bytes: &[u8], f: F) -> Outcome
where
    R: DeserializeOwned,
    F: FnOnce(R) -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let request = match serde_json::from_slice::<R>(bytes) {
        Ok(request) => request,
        Err(error) => return Outcome::Malformed(format!("malformed request: {error}")),
    };
    match f(request).await {
        Ok(result) => Outcome::Result(result),
        Err(ApiError::Client(error)) => Outcome::Refused(error),
        Err(ApiError::Core(error)) => {
            let client = error.to_client_error();
            if client.code >= 500 {
                tracing::warn!(%error, "server API call failed");
            }
            Outcome::Refused(client)
        }
    }
}

/// Why an API method refused.
enum ApiError {
    Core(CoreError),
    Client(ClientError),
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        ApiError::Core(error)
    }
}

fn to_value(value: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| {
        ApiError::Client(ClientError::new(
            ErrorCode::INTERNAL,
            format!("encoding result: {e}"),
        ))
    })
}

fn http_error(status: StatusCode, message: &str) -> Response {
    let code = u32::from(status.as_u16());
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
struct ChannelRequest {
    channel: String,
}

/// `presence`: a channel and, for big channels, a page (as the client protocol's `presence`).
#[derive(Deserialize)]
struct PresencePageRequest {
    channel: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct PublishRequest {
    channel: String,
    #[serde(default, deserialize_with = "present_raw")]
    data: Option<RawJson>,
    /// Binary data instead of `data`, as standard base64.
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// A present member is `Some`, even a JSON `null` (which `Option`'s own impl makes `None`).
fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(d).map(Some)
}

/// Exactly one of `data` and `b64data`, the latter decoded (400 with a hint otherwise).
fn payload(data: Option<RawJson>, b64data: Option<String>) -> Result<Payload, ApiError> {
    kilat_protocol::command::PublishRequest {
        channel: String::new(),
        data: data.map(crate::body::one_line),
        b64data,
    }
    .payload()
    .map_err(|error| ApiError::Core(CoreError::BadRequest(error.to_string().into())))
}

async fn publish(state: &AppState, request: PublishRequest) -> Result<Value, ApiError> {
    if let Some(result) = request
        .idempotency_key
        .as_deref()
        .and_then(|key| state.api.remembered(key))
    {
        return Ok(result);
    }
    let payload = payload(request.data, request.b64data)?;
    let position = state
        .node
        .publish_payload(&request.channel, payload)
        .await?;
    let result = position_value(position.as_ref());
    if let Some(key) = request.idempotency_key {
        state.api.remember(key, result.clone());
    }
    Ok(result)
}

fn position_value(position: Option<&StreamPosition>) -> Value {
    match position {
        Some(p) => json!({ "offset": p.offset, "epoch": p.epoch }),
        None => json!({}),
    }
}

#[derive(Deserialize)]
struct BroadcastRequest {
    channels: Vec<String>,
    #[serde(default, deserialize_with = "present_raw")]
    data: Option<RawJson>,
    /// Binary data instead of `data`, as standard base64.
    #[serde(default)]
    b64data: Option<String>,
}

/// Publishes to each channel independently; one failure does not stop the others, and the
/// result lists each channel's outcome in order.
async fn broadcast(state: &AppState, request: BroadcastRequest) -> Result<Value, ApiError> {
    let payload = payload(request.data, request.b64data)?;
    let mut responses = Vec::with_capacity(request.channels.len());
    for channel in &request.channels {
        match state.node.publish_payload(channel, payload.clone()).await {
            Ok(position) => responses.push(json!({ "result": position_value(position.as_ref()) })),
            Err(error) => {
                let e = error.to_client_error();
                responses.push(json!({ "error": { "code": e.code, "message": e.message } }));
            }
        }
    }
    Ok(json!({ "responses": responses }))
}

#[derive(Deserialize)]
struct UserChannelRequest {
    user: String,
    channel: String,
}

async fn subscribe(
    state: &AppState,
    request: UserChannelRequest,
    subscribe: bool,
) -> Result<Value, ApiError> {
    let node = &state.node;
    let count = if subscribe {
        node.subscribe_user(&request.user, &request.channel).await?
    } else {
        node.unsubscribe_user(&request.user, &request.channel)
            .await?
    };
    Ok(json!({ "connections": count }))
}

#[derive(Deserialize)]
struct DisconnectRequest {
    user: String,
    #[serde(default)]
    client: Option<String>,
    /// Whether the client may reconnect (3004) or not (3503, the default).
    #[serde(default)]
    reconnect: bool,
    /// A disconnect code of its own: 3000-3999 from the protocol (3504 bans) or an
    /// application's 4000-4999; overrides `reconnect`.
    #[serde(default)]
    code: Option<u16>,
    /// The reason sent with `code` (at most 123 bytes, the WebSocket close frame's room).
    #[serde(default)]
    reason: Option<String>,
}

async fn disconnect(state: &AppState, request: DisconnectRequest) -> Result<Value, ApiError> {
    if let Some(code) = request.code {
        if !(3000..=4999).contains(&code) {
            return Err(ApiError::Client(ClientError::new(
                ErrorCode::BAD_REQUEST,
                "code must be 3000-4999 (protocol codes, or 4000-4999 for your own)",
            )));
        }
        let mut reason = request
            .reason
            .unwrap_or_else(|| "disconnected by the server".into());
        while reason.len() > 123 {
            reason.pop();
        }
        let disconnect = Disconnect::new(DisconnectCode(code), reason);
        let count = state
            .node
            .disconnect(&request.user, request.client.as_deref(), disconnect);
        return Ok(json!({ "connections": count }));
    }
    let disconnect = if request.reconnect {
        Disconnect::FORCE_RECONNECT
    } else {
        Disconnect::new(
            DisconnectCode::FORCE_NO_RECONNECT,
            "disconnected by the server",
        )
    };
    let count = state
        .node
        .disconnect(&request.user, request.client.as_deref(), disconnect);
    Ok(json!({ "connections": count }))
}

#[derive(Deserialize)]
struct HistoryRequest {
    channel: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    reverse: bool,
}

async fn history(state: &AppState, request: HistoryRequest) -> Result<Value, ApiError> {
    let options = HistoryOptions {
        limit: request.limit,
        since: request.since,
        reverse: request.reverse,
    };
    to_value(state.node.history(&request.channel, options).await?)
}

#[derive(Deserialize)]
struct ChannelsRequest {
    /// A glob: `*` matches any run of characters, `?` one character.
    #[serde(default)]
    pattern: Option<String>,
}

async fn channels(state: &AppState, request: ChannelsRequest) -> Result<Value, ApiError> {
    let channels: Vec<String> = state
        .node
        .channels()
        .into_iter()
        .filter(|c| {
            request
                .pattern
                .as_deref()
                .is_none_or(|p| glob_match(p.as_bytes(), c.as_bytes()))
        })
        .collect();
    let subscribers: serde_json::Map<String, Value> = channels
        .iter()
        .map(|c| (c.clone(), json!(state.node.local_subscribers(c))))
        .collect();
    Ok(json!({ "channels": channels, "subscribers": subscribers }))
}

#[derive(Deserialize)]
struct ConnectionsRequest {
    /// Part of a user or client id; all connections when empty.
    #[serde(default)]
    search: String,
    /// At most this many (200 at most; 50 by default).
    #[serde(default)]
    limit: Option<usize>,
}

/// This node's connections matching a user or client id, with their subscriptions.
async fn connections(state: &AppState, request: ConnectionsRequest) -> Result<Value, ApiError> {
    let list = state
        .node
        .connections(&request.search, request.limit.unwrap_or(50));
    Ok(json!({ "node": state.node.id(), "connections": list }))
}

/// This node's entry in `info` (also what it publishes to the node registry).
pub(crate) fn node_info(state: &AppState) -> Value {
    let stats = state.node.stats();
    json!({
        "id": state.node.id(),
        "version": env!("CARGO_PKG_VERSION"),
        "connections": stats.connections,
        "subscriptions": stats.subscriptions,
        "channels": stats.channels,
        "publications": stats.publications,
        "deliveries": stats.deliveries,
        "uptime_s": state.started.elapsed().as_secs(),
        "engine": state.cluster.engine,
    })
}

/// Every live node: this node's own entry (always current), then the others from the
/// engine's node registry (none on the memory engine).
async fn info(state: &AppState) -> Result<Value, ApiError> {
    let own = node_info(state);
    let mut nodes = vec![own];
    let others = state.cluster.registry.nodes().await.map_err(|e| {
        tracing::warn!(error = %crate::error_chain(&e), "reading the node registry failed");
        ApiError::Client(ClientError::new(
            ErrorCode::UNAVAILABLE,
            "node registry unavailable",
        ))
    })?;
    for raw in others {
        let Ok(node) = serde_json::from_str::<Value>(raw.get()) else {
            continue;
        };
        if node["id"] != nodes[0]["id"] {
            let mut node = node;
            // Carried in the heartbeat for the other nodes (`revoke.rs`), not part of `info`.
            if let Some(node) = node.as_object_mut() {
                node.remove("revoked");
            }
            nodes.push(node);
        }
    }
    Ok(json!({ "nodes": nodes }))
}

/// Shared handle stored in the app state.
pub(crate) type ApiHandle = Arc<Api>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_exactly_the_implemented_methods() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let mut documented: Vec<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .filter_map(|p| p.strip_prefix("/api/").map(str::to_owned))
            .filter(|p| p != "openapi.json")
            .collect();
        documented.sort();
        let mut implemented: Vec<String> = METHODS.iter().map(|m| (*m).to_owned()).collect();
        implemented.sort();
        assert_eq!(documented, implemented);
    }

    #[test]
    fn key_comparison_requires_exact_match() {
        let api = Api::new(Some("s3cret".into()), false);
        let mut headers = HeaderMap::new();
        assert!(!api.authorised(&headers));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("apikey s3cre"),
        );
        assert!(!api.authorised(&headers));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("apikey s3cret"),
        );
        assert!(api.authorised(&headers));
        assert!(!Api::new(None, false).authorised(&HeaderMap::new()));
        assert!(Api::new(None, true).authorised(&HeaderMap::new()));
    }
}
