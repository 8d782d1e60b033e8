//! The WebSocket side: URL checks, opening the socket, the `connect` handshake, batch splitting.
//!
//! `ws://` is built in. `wss://` is the seam for TLS: [`open`] goes through
//! `tokio_tungstenite::connect_async`, which handles `wss://` as soon as one of tokio-tungstenite's
//! TLS features is enabled; this crate does not enable one yet, so [`check_url`] refuses `wss://`
//! with a clear error instead of failing later inside the handshake.

use std::collections::BTreeMap;

use futures_util::{SinkExt, StreamExt};
use kilat_protocol::command::{ConnectRequest, SubRecovery};
use kilat_protocol::reply::ConnectResult;
use kilat_protocol::{ClientFrame, Command, Disconnect, DisconnectCode, Reply, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::ClientConfig;
use crate::error::{Error, ProtocolError, Result};
use crate::event::CODE_TRANSPORT;

/// The socket type: plain TCP today, TLS once a TLS feature is enabled.
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The id of the `connect` command; later commands on the connection start after it.
pub(crate) const CONNECT_ID: u32 = 1;

/// A fresh connection whose `connect` succeeded.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) ws: WsStream,
    pub(crate) result: ConnectResult,
    /// Frames that came in the same batch as the connect reply, still to be handled.
    pub(crate) leftovers: Vec<ServerFrame>,
}

/// Checks that `url` is a WebSocket URL this build can open.
///
/// # Errors
/// [`Error::InvalidUrl`] for unparsable URLs, other schemes, and `wss://` (no TLS built in).
pub(crate) fn check_url(url: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("ws") => Ok(()),
        Some("wss") => Err(invalid(
            "wss:// needs TLS, which this build of kilat-client does not include yet",
        )),
        _ => Err(invalid(
            "the scheme must be ws:// (e.g. ws://127.0.0.1:8000/connection/websocket)",
        )),
    }
}

/// Opens the WebSocket and runs the `connect` handshake, all within `handshake_timeout`.
///
/// # Errors
/// Transport failures, an error reply to `connect`, a disconnect, or [`Error::Timeout`].
pub(crate) async fn establish(
    config: &ClientConfig,
    subs: BTreeMap<String, SubRecovery>,
) -> Result<Connection> {
    let request = ConnectRequest {
        token: config.token.clone(),
        name: Some(config.name.clone()),
        version: Some(config.version.clone()),
        data: config.data.clone(),
        subs: (!subs.is_empty()).then_some(subs),
    };
    let attempt = async {
        let (mut ws, _response) = tokio_tungstenite::connect_async(config.url.as_str()).await?;
        let (result, leftovers) = handshake(&mut ws, request).await?;
        Ok(Connection {
            ws,
            result,
            leftovers,
        })
    };
    tokio::time::timeout(config.handshake_timeout, attempt)
        .await
        .map_err(|_| Error::Timeout)?
}

async fn handshake(
    ws: &mut WsStream,
    request: ConnectRequest,
) -> Result<(ConnectResult, Vec<ServerFrame>)> {
    let frame = ClientFrame::Command {
        id: CONNECT_ID,
        command: Command::Connect(request),
    };
    ws.send(text_message(frame.encode())).await?;
    loop {
        let message = match ws.next().await {
            Some(message) => message?,
            None => return Err(Error::ConnectionLost),
        };
        let payload = match message {
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(bytes) => bytes.to_vec(),
            Message::Close(close) => return Err(Error::Disconnected(close_to_disconnect(close))),
            _ => continue,
        };
        let mut frames = decode_batch(&payload).into_iter();
        while let Some(frame) = frames.next() {
            match frame? {
                ServerFrame::Reply {
                    id: CONNECT_ID,
                    reply: Reply::Connect(result),
                } => return Ok((result, frames.collect::<Result<_>>()?)),
                ServerFrame::Error {
                    id: CONNECT_ID,
                    error,
                } => return Err(Error::Server(error)),
                ServerFrame::Push(kilat_protocol::Push {
                    body: kilat_protocol::PushBody::Disconnect(d),
                    ..
                }) => return Err(Error::Disconnected(d)),
                ServerFrame::Ping => ws.send(text_message(ClientFrame::Ping.encode())).await?,
                other => {
                    return Err(Error::Protocol(ProtocolError::Unexpected {
                        expected: "the connect reply",
                        got: format!("{other:?}"),
                    }));
                }
            }
        }
    }
}

/// Decodes one WebSocket message: one frame, or several separated by `\n` (blank lines skipped).
pub(crate) fn decode_batch(payload: &[u8]) -> Vec<Result<ServerFrame>> {
    decode_batch_raw(payload)
        .into_iter()
        .map(|(_, frame)| frame)
        .collect()
}

/// [`decode_batch`], each frame with its text (a delta publication is read from it again).
pub(crate) fn decode_batch_raw(payload: &[u8]) -> Vec<(&[u8], Result<ServerFrame>)> {
    payload
        .split(|&b| b == b'\n')
        .filter(|frame| !frame.iter().all(u8::is_ascii_whitespace))
        .map(|frame| {
            let decoded = ServerFrame::decode(frame).map_err(|source| {
                Error::Protocol(ProtocolError::Undecodable {
                    frame: String::from_utf8_lossy(&frame[..frame.len().min(200)]).into_owned(),
                    source,
                })
            });
            (frame, decoded)
        })
        .collect()
}

/// A text message from an encoded frame (the protocol encoders produce UTF-8 JSON).
pub(crate) fn text_message(frame: Vec<u8>) -> Message {
    match String::from_utf8(frame) {
        Ok(text) => Message::text(text),
        // Unreachable with serde_json output; binary keeps the bytes intact anyway.
        Err(e) => Message::binary(e.into_bytes()),
    }
}

/// The disconnect a WebSocket close means: kilat codes keep their reconnect rule, anything else
/// is a transport failure the client recovers from.
pub(crate) fn close_to_disconnect(close: Option<CloseFrame>) -> Disconnect {
    match close {
        Some(frame) => {
            let code = u16::from(frame.code);
            if (3000..4000).contains(&code) {
                Disconnect::new(DisconnectCode(code), frame.reason.as_str().to_owned())
            } else {
                transport_disconnect(format!("closed with WebSocket code {code}"))
            }
        }
        None => transport_disconnect("closed without a close code".to_owned()),
    }
}

/// A transport-level loss: reported as 1006 and always worth a reconnect.
pub(crate) fn transport_disconnect(reason: String) -> Disconnect {
    Disconnect {
        code: CODE_TRANSPORT,
        reason: reason.into(),
        reconnect: true,
        delay_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_at_newlines_and_skip_blank_lines() {
        let frames = decode_batch(b"{}\n\n{\"id\":2,\"publish\":{\"offset\":3}}\r\n{\"push\":{\"channel\":\"a\",\"pub\":{\"data\":1}}}\n");
        assert_eq!(frames.len(), 3);
        assert!(matches!(frames[0], Ok(ServerFrame::Ping)));
        assert!(matches!(
            frames[1],
            Ok(ServerFrame::Reply {
                id: 2,
                reply: Reply::Publish(_)
            })
        ));
        assert!(matches!(frames[2], Ok(ServerFrame::Push(_))));
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        assert!(check_url("ws://127.0.0.1:8000/connection/websocket").is_ok());
        assert!(matches!(
            check_url("wss://example.invalid/"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            check_url("http://127.0.0.1/"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn close_codes_keep_their_reconnect_rule() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        let close = |code: u16| {
            close_to_disconnect(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "r".into(),
            }))
        };
        assert!(close(3000).reconnect);
        assert!(!close(3501).reconnect);
        assert_eq!(close(1001).code, CODE_TRANSPORT);
        assert!(close(1001).reconnect);
    }
}
