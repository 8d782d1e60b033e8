//! Pusher webhooks: `channel_occupied`, `channel_vacated`, `member_added`, `member_removed`,
//! `client_event` and `cache_miss`, POSTed as `{"time_ms", "events": [...]}` and signed with `X-Pusher-Key` and
//! `X-Pusher-Signature` (hex HMAC-SHA256 of the body with the app secret).
//!
//! Connections only queue an event (`try_send` on a bounded queue): a slow or dead receiver
//! never holds a delivery. One task per app batches what is queued (up to [`MAX_BATCH`]
//! events, waiting at most [`BATCH_WINDOW`] for more) and retries a failed POST with growing
//! backoff ([`RETRIES`]); past that, or when the queue is full, events are dropped and logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::auth;
use super::config::PusherApp;

/// One webhook event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub(crate) name: &'static str,
    pub(crate) channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) socket_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_id: Option<String>,
}

impl Event {
    pub(crate) fn new(name: &'static str, channel: &str) -> Self {
        Event {
            name,
            channel: channel.to_owned(),
            event: None,
            data: None,
            socket_id: None,
            user_id: None,
        }
    }
}

/// Events waiting to be sent, per app.
const QUEUE: usize = 10_000;
/// Most events in one POST.
const MAX_BATCH: usize = 50;
/// How long the first event of a batch waits for more.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Delays between attempts of one POST.
const RETRIES: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// Bound on one POST.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// An app's webhook queue (absent when the app has no webhook).
#[derive(Debug, Clone)]
pub(crate) struct Webhooks {
    tx: mpsc::Sender<Event>,
}

/// One receiver, parsed once.
#[derive(Debug)]
struct Target {
    authority: String,
    path: String,
    event_types: Vec<String>,
}

impl Webhooks {
    /// Starts the sender task of an app; `None` without webhooks or with none usable (a URL
    /// that is not `http://host[:port]/path` is logged and skipped).
    pub(crate) fn start(app: &PusherApp) -> Option<Webhooks> {
        let targets: Vec<Target> = app
            .webhooks
            .iter()
            .filter_map(|hook| {
                let parsed = parse_url(&hook.url);
                if parsed.is_none() {
                    tracing::warn!(app = %app.id, url = %hook.url, "pusher webhook URL is not http://host[:port]/path; skipped");
                }
                let (authority, path) = parsed?;
                Some(Target {
                    authority,
                    path,
                    event_types: hook.event_types.clone(),
                })
            })
            .collect();
        if targets.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(
            rx,
            targets,
            app.id.clone(),
            app.key.clone(),
            app.secret.clone(),
        ));
        Some(Webhooks { tx })
    }

    /// Queues `event`; never waits. A full queue drops it (logged).
    pub(crate) fn send(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!("pusher webhook queue full; event dropped");
        }
    }
}

fn parse_url(url: &str) -> Option<(String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?;
    let authority = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    Some((authority, path))
}

async fn run(
    mut rx: mpsc::Receiver<Event>,
    targets: Vec<Target>,
    app: String,
    key: String,
    secret: String,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let window = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(window);
        while batch.len() < MAX_BATCH {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(event) => batch.push(event),
                    None => break,
                },
                () = &mut window => break,
            }
        }
        for target in &targets {
            let events: Vec<&Event> = batch
                .iter()
                .filter(|e| {
                    target.event_types.is_empty() || target.event_types.iter().any(|t| t == e.name)
                })
                .collect();
            if events.is_empty() {
                continue;
            }
            #[derive(Serialize)]
            struct Body<'a> {
                time_ms: u128,
                events: &'a [&'a Event],
            }
            let time_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let body = serde_json::to_vec(&Body {
                time_ms,
                events: &events,
            })
            .unwrap_or_default();
            let signature = auth::sign(&secret, &body);
            let body = Bytes::from(body);
            let mut attempt = 0;
            loop {
                match post(target, &key, &signature, body.clone()).await {
                    Ok(()) => break,
                    Err(error) if attempt < RETRIES.len() => {
                        tracing::debug!(%app, %error, attempt, "pusher webhook failed; retrying");
                        tokio::time::sleep(RETRIES[attempt]).await;
                        attempt += 1;
                    }
                    Err(error) => {
                        tracing::warn!(%app, %error, events = events.len(), "pusher webhook failed after retries; events dropped");
                        break;
                    }
                }
            }
        }
    }
}

async fn post(target: &Target, key: &str, signature: &str, body: Bytes) -> Result<(), String> {
    let call = async {
        let stream = TcpStream::connect(&target.authority)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        let request = Request::post(target.path.as_str())
            .header(HOST, target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header("x-pusher-key", key)
            .header("x-pusher-signature", signature)
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            // Read (a bounded amount of) the answer so the receiver sees a complete exchange.
            let _ = Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        };
        tokio::pin!(exchange);
        tokio::select! {
            biased;
            result = &mut exchange => result,
            _ = connection => exchange.await,
        }
    };
    tokio::time::timeout(POST_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}
