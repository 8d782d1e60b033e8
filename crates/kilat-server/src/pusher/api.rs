//! The Pusher HTTP API under `/apps/{app_id}/...`, for the Pusher server SDKs: trigger
//! (`events`, `batch_events`), channel information (`channels`, `channels/{name}`,
//! `channels/{name}/users`) and `users/{id}/terminate_connections`. Every request is signed
//! with the app's secret (`auth::verify_request`); errors are answered the way Pusher does, a
//! status and a line of text.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kilat_protocol::{Disconnect, DisconnectCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::app::App;
use super::auth;
use super::protocol::{self, ChannelKind, Published};
use crate::AppState;

/// Largest request body (a batch of ten 10 KiB events fits several times).
const MAX_BODY: usize = 256 * 1024;

type Answer = Result<Response, (StatusCode, String)>;

fn refuse(status: StatusCode, message: impl Into<String>) -> (StatusCode, String) {
    (status, message.into())
}

/// Every `/apps/{app_id}/...` request.
pub(crate) async fn call(State(state): State<AppState>, request: Request) -> Response {
    match handle(&state, request).await {
        Ok(response) => response,
        Err((status, mut message)) => {
            message.push('\n');
            (status, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
        }
    }
}

async fn handle(state: &AppState, request: Request) -> Answer {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["apps", app_id, rest @ ..] = segments.as_slice() else {
        return Err(refuse(StatusCode::NOT_FOUND, "Not found"));
    };
    let app = state
        .pusher
        .by_id(app_id)
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "Unknown app"))?
        .clone();
    let body = crate::body::read(body, MAX_BODY, state.body_timeout)
        .await
        .map_err(|refused| refuse(refused.status, refused.reason))?;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    auth::verify_request(
        &app.config.key,
        &app.config.secret,
        parts.method.as_str(),
        &path,
        &query,
        &body,
        now,
    )
    .map_err(|unsigned| refuse(StatusCode::UNAUTHORIZED, unsigned.to_string()))?;
    if !app.config.enabled {
        return Err(refuse(StatusCode::FORBIDDEN, "App is disabled"));
    }
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match (&parts.method, rest) {
        (&Method::POST, ["events"]) => events(state, &app, &body).await,
        (&Method::POST, ["batch_events"]) => batch_events(state, &app, &body).await,
        (&Method::GET, ["channels"]) => {
            channels(state, &app, param("filter_by_prefix"), param("info")).await
        }
        (&Method::GET, ["channels", channel]) => {
            channel_info(state, &app, channel, param("info")).await
        }
        (&Method::GET, ["channels", channel, "users"]) => users(state, &app, channel).await,
        (&Method::POST, ["users", user, "terminate_connections"]) => terminate(state, &app, user),
        _ => Err(refuse(StatusCode::NOT_FOUND, "Not found")),
    }
}

fn json(value: &impl Serialize) -> Answer {
    let body = serde_json::to_vec(value)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Deserialize)]
struct Event<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    channel: Option<String>,
    channels: Option<Vec<String>>,
    socket_id: Option<String>,
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    batch: Vec<Event<'a>>,
}

/// Checks one event and returns the kilat channels it goes to.
fn check_event(app: &App, event: &Event<'_>) -> Result<Vec<String>, (StatusCode, String)> {
    let limits = &app.config.limits;
    if event.name.is_empty() || event.name.len() > 200 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "Event name must be 1 to 200 characters",
        ));
    }
    if event.data.get().len() > limits.max_event_bytes {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Payload too large: event data over {} bytes",
                limits.max_event_bytes
            ),
        ));
    }
    let names: Vec<&String> = event
        .channels
        .iter()
        .flatten()
        .chain(event.channel.as_ref())
        .collect();
    if names.is_empty() || names.len() > limits.max_event_channels {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "Name 1 to {} channels in channels (or channel)",
                limits.max_event_channels
            ),
        ));
    }
    if let Some(socket_id) = &event.socket_id
        && !valid_socket_id(socket_id)
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "Invalid socket_id"));
    }
    names
        .into_iter()
        .map(|name| {
            let kind = protocol::channel_kind(name)
                .map_err(|protocol::Decoded(m)| refuse(StatusCode::BAD_REQUEST, m))?;
            Ok(app.native_channel(name, kind))
        })
        .collect()
}

fn valid_socket_id(id: &str) -> bool {
    id.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.len() <= 20
            && b.len() <= 20
            && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
    })
}

/// Publishes one checked event to its channels: one publication per channel, the event
/// encoded once for all of that channel's subscribers.
async fn publish(
    state: &AppState,
    event: &Event<'_>,
    channels: &[String],
) -> Result<(), (StatusCode, String)> {
    let published = Published {
        event: event.name.as_str().into(),
        data: event.data,
        socket_id: event.socket_id.as_deref().map(Into::into),
        user_id: None,
        exclude_user: None,
    };
    let text = serde_json::to_string(&published)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    for channel in channels {
        let raw = RawValue::from_string(text.clone())
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        state.node.publish(channel, raw).await.map_err(|e| {
            let error = e.to_client_error();
            let status = StatusCode::from_u16(u16::try_from(error.code).unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            refuse(status, error.message.to_string())
        })?;
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")))
}

async fn events(state: &AppState, app: &App, body: &[u8]) -> Answer {
    let event: Event<'_> = parse(body)?;
    let channels = check_event(app, &event)?;
    publish(state, &event, &channels).await?;
    json(&serde_json::json!({}))
}

async fn batch_events(state: &AppState, app: &App, body: &[u8]) -> Answer {
    let batch: Batch<'_> = parse(body)?;
    if batch.batch.len() > app.config.limits.max_batch_events {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "Batch too large: at most {} events",
                app.config.limits.max_batch_events
            ),
        ));
    }
    // Every event is checked before any is published: a bad batch publishes nothing.
    let mut checked = Vec::with_capacity(batch.batch.len());
    for event in &batch.batch {
        if event.channels.is_some() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "batch events name one channel each (channel)",
            ));
        }
        checked.push(check_event(app, event)?);
    }
    for (event, channels) in batch.batch.iter().zip(&checked) {
        publish(state, event, channels).await?;
    }
    json(
        &serde_json::json!({ "batch": batch.batch.iter().map(|_| serde_json::json!({})).collect::<Vec<_>>() }),
    )
}

/// The Pusher names of this app's channels occupied on any node: this node's, and with an
/// engine other nodes share, those in the channel index (`occupancy.rs`).
async fn app_channels(state: &AppState, app: &App) -> Vec<String> {
    let mut natives = state.node.channels();
    if let Some(index) = &app.index {
        natives.extend(index.channels(&app.namespace).await);
        natives.sort_unstable();
        natives.dedup();
    }
    natives
        .iter()
        .filter_map(|native| app.pusher_name(native).map(std::borrow::Cow::into_owned))
        .collect()
}

fn wants(info: Option<&str>, attribute: &str) -> bool {
    info.is_some_and(|info| info.split(',').any(|a| a.trim() == attribute))
}

async fn channels(state: &AppState, app: &App, prefix: Option<&str>, info: Option<&str>) -> Answer {
    let prefix = prefix.unwrap_or("");
    let user_count = wants(info, "user_count");
    if user_count && !prefix.starts_with("presence-") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "info=user_count needs filter_by_prefix=presence-",
        ));
    }
    let mut out: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for name in app_channels(state, app).await {
        if !name.starts_with(prefix) || name.starts_with('#') {
            continue;
        }
        let mut attributes = serde_json::Map::new();
        if user_count {
            let native = app.native_channel(&name, ChannelKind::Presence);
            if let Ok(stats) = state.node.presence_stats(&native).await {
                attributes.insert("user_count".into(), stats.num_users.into());
            }
        }
        out.insert(name, attributes.into());
    }
    json(&serde_json::json!({ "channels": out }))
}

/// One channel's state across every node: each subscription of an app's channel has an entry in
/// the engine's presence (the app namespaces have presence on), so the presence counts are the
/// cluster's subscriptions and users, not this node's.
async fn channel_info(state: &AppState, app: &App, channel: &str, info: Option<&str>) -> Answer {
    let kind = protocol::channel_kind(channel)
        .map_err(|protocol::Decoded(m)| refuse(StatusCode::BAD_REQUEST, m))?;
    let native = app.native_channel(channel, kind);
    let user_count = wants(info, "user_count");
    if user_count && kind != ChannelKind::Presence {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "info=user_count is for presence- channels only",
        ));
    }
    let stats = state.node.presence_stats(&native).await.map_err(|e| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_client_error().message.to_string(),
        )
    })?;
    let mut out = serde_json::Map::new();
    out.insert("occupied".into(), (stats.num_clients > 0).into());
    if user_count {
        out.insert("user_count".into(), stats.num_users.into());
    }
    if wants(info, "subscription_count") {
        out.insert("subscription_count".into(), stats.num_clients.into());
    }
    json(&out)
}

async fn users(state: &AppState, app: &App, channel: &str) -> Answer {
    let kind = protocol::channel_kind(channel)
        .map_err(|protocol::Decoded(m)| refuse(StatusCode::BAD_REQUEST, m))?;
    if kind != ChannelKind::Presence {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "users are listed for presence- channels only",
        ));
    }
    let native = app.native_channel(channel, kind);
    let present = state.node.presence(&native).await.map_err(|e| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_client_error().message.to_string(),
        )
    })?;
    let prefix = format!("{}:", app.namespace);
    let mut ids: Vec<&str> = present
        .clients
        .values()
        .filter_map(|entry| entry.user.strip_prefix(&prefix))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let users: Vec<_> = ids
        .iter()
        .map(|id| serde_json::json!({ "id": id }))
        .collect();
    json(&serde_json::json!({ "users": users }))
}

fn terminate(state: &AppState, app: &App, user: &str) -> Answer {
    if !protocol::valid_user_id(user) {
        return Err(refuse(StatusCode::BAD_REQUEST, "Invalid user id"));
    }
    let closed = state.node.disconnect(
        &format!("{}:{user}", app.namespace),
        None,
        Disconnect::new(
            DisconnectCode::FORCE_NO_RECONNECT,
            "connection terminated by the app",
        ),
    );
    tracing::info!(app = %app.config.id, closed, "pusher user connections terminated");
    json(&serde_json::json!({}))
}
