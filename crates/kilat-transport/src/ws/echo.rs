//! A WebSocket echo server on the production codec, for Autobahn runs and client debugging.
//!
//! Every path upgrades; every text or binary message is sent back as the same type. Under
//! permessage-deflate every reply is compressed (`deflate_min_size` is forced to 0), since
//! conformance clients check compressed echoes. On
//! shutdown the listener stops accepting, live connections are closed with 1001 (going away),
//! and `serve` waits up to 5 s for them to finish their close handshakes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::{CLOSE_GOING_AWAY, Message, WsConfig, WsConnection, WsError, negotiate};

/// How long `serve` waits for live connections after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the echo server on `listener` until `shutdown` resolves.
///
/// Each TCP connection is a task running hyper's HTTP/1.1 server with upgrades; each upgraded
/// WebSocket is a task echoing messages.
///
/// # Errors
/// None at present (accept errors are logged and retried); the `Result` leaves room for
/// setup errors.
pub async fn serve(
    listener: TcpListener,
    config: WsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let config = Arc::new(WsConfig {
        deflate_min_size: 0,
        ..config
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let tracker = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wakes on: a new TCP connection, or the shutdown future resolving.
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let config = Arc::clone(&config);
        let stop_rx = stop_rx.clone();
        let upgrades = tracker.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let response = upgrade(req, &config, &stop_rx, &upgrades);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
    let _ = stop_tx.send(true);
    tracker.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await;
    Ok(())
}

/// Answers one HTTP request: a refusal, or `101` plus a task echoing on the upgraded socket.
fn upgrade(
    req: Request<Incoming>,
    config: &Arc<WsConfig>,
    stop: &watch::Receiver<bool>,
    tracker: &TaskTracker,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let handshake = match negotiate(&parts, config) {
        Ok(handshake) => handshake,
        Err(refusal) => return refusal.into_response(),
    };
    let response = handshake.response();
    let req = Request::from_parts(parts, body);
    let config = Arc::clone(config);
    let stop = stop.clone();
    tracker.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let connection = WsConnection::new(TokioIo::new(upgraded), &handshake, &config);
                echo(connection, stop).await;
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });
    response
}

/// Echoes messages until the peer closes, breaks the protocol, or the server shuts down.
async fn echo<IO: AsyncRead + AsyncWrite + Unpin>(
    mut connection: WsConnection<IO>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // Wakes on: a complete message (or the peer's close, or an error), or server shutdown.
        let message = tokio::select! {
            message = connection.read_message() => Some(message),
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let Some(message) = message else {
            let _ = connection
                .close(CLOSE_GOING_AWAY, "server shutting down")
                .await;
            return;
        };
        let sent = match message {
            Ok(Message::Text(text)) => connection.send_text(&text).await,
            Ok(Message::Binary(data)) => connection.send_binary(&data).await,
            Ok(Message::Close { .. }) => return,
            Err(WsError::Violation(violation)) => {
                let _ = connection.close(violation.close_code(), "").await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "websocket connection ended");
                return;
            }
        };
        if let Err(error) = sent {
            tracing::debug!(%error, "websocket write failed");
            return;
        }
    }
}
