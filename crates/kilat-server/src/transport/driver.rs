//! The one connection loop every transport shares: a [`Wire`] (how bytes reach this client)
//! joined to a hub [`Session`] (what the bytes mean).
//!
//! WebSocket, SSE and HTTP streaming differ only in how a client message arrives and how a queued
//! frame is written; the protocol itself lives once, in `kilat-core`.

use std::time::Duration;

use bytes::Bytes;
use kilat_core::{Outbox, Session};
use kilat_protocol::{Disconnect, SharedFrame};

/// Most bytes of queued frames written in one go (one vectored write on WebSocket).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// Longest a write may stay blocked on a client that does not read (its socket buffer full).
/// Past it the connection is dropped: its outbox may not have overflowed yet (the kernel
/// buffers hold megabytes), but a reader this stuck is gone or hostile.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the teardown may spend flushing what was queued and sending the close (and again
/// for the session's cleanup).
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a transport reads from its client.
pub(crate) enum Inbound {
    /// One client message (one or more `\n`-separated frames).
    Message(Bytes),
    /// The client sent something the protocol does not allow; close with this code.
    Refused(Disconnect),
    /// The client went away or the transport already closed (nothing more to send).
    Gone,
}

/// How one transport moves bytes for one connection.
pub(crate) trait Wire {
    /// The next thing the client sent.
    ///
    /// # Cancel safety
    /// Must be cancel safe: it is polled in `select!` against the outbox and timers, and a
    /// partially read message must stay buffered for the next call.
    async fn recv(&mut self) -> Inbound;

    /// Writes queued frames, in order.
    ///
    /// # Errors
    /// When the client can no longer be written to; the connection then ends without a close.
    async fn send(&mut self, frames: &[SharedFrame]) -> std::io::Result<()>;

    /// Tells the client why the connection ends and closes it (a close frame, or a `disconnect`
    /// push at the end of a stream).
    async fn close(&mut self, disconnect: &Disconnect);
}

/// What a connection's bytes mean: kilat's own protocol ([`Session`]) or an adapter that speaks
/// another protocol on top of a session (`pusher::ws`).
pub(crate) trait Handler {
    /// One client message; `Err` closes the connection with that disconnect.
    async fn handle_message(&mut self, text: &[u8]) -> Result<(), Disconnect>;
    /// Runs the timers due at `now`.
    fn on_timer(&mut self, now: tokio::time::Instant) -> Result<(), Disconnect>;
    /// When [`Handler::on_timer`] is due next.
    fn next_deadline(&self) -> tokio::time::Instant;
    /// Cleans up the hub side once the connection is over.
    async fn close(self);
    /// The hub session behind this connection: its key and transport name label the
    /// connection's log span, and its metrics observer counts writes and disconnects.
    fn session(&self) -> &Session;
}

impl Handler for Session {
    async fn handle_message(&mut self, text: &[u8]) -> Result<(), Disconnect> {
        Session::handle_message(self, text).await
    }
    fn on_timer(&mut self, now: tokio::time::Instant) -> Result<(), Disconnect> {
        Session::on_timer(self, now)
    }
    fn next_deadline(&self) -> tokio::time::Instant {
        Session::next_deadline(self)
    }
    async fn close(self) {
        Session::close(self).await;
    }
    fn session(&self) -> &Session {
        self
    }
}

/// Runs `session` over `wire` until either side ends the connection, then cleans up the session.
///
/// Not an `async fn`: an `async fn` keeps its arguments in its future twice, once as arguments
/// and once as the locals they are moved into (rust-lang/rust#62958), and this future is what
/// every idle connection holds. The `async move` block below uses the captured values in place.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub(crate) fn drive(
    mut wire: impl Wire,
    mut session: impl Handler,
    outbox: Outbox,
) -> impl Future<Output = ()> {
    // With the span on, every log line of the connection's life carries its id (the session
    // key, unique on this node) and, once connected, its client id and user. It is a debug span
    // of its own target (`--log info,kilat::conn=debug`): an enabled span costs the log
    // subscriber about half a KiB per connection, a quarter of an idle connection's budget, so
    // it is off at the default level, and then costs nothing (no box, no registry entry).
    let span = tracing::span!(
        target: "kilat::conn",
        tracing::Level::DEBUG,
        "conn",
        id = session.session().key(),
        transport = session.session().transport().name,
        client = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    let span = (!span.is_disabled()).then(|| Box::new(span));
    let task = async move {
        let mut batch: Vec<SharedFrame> = Vec::new();
        // One timer for the whole connection, moved only when the session's next deadline moves: a
        // fresh `sleep_until` per loop turn would insert into and remove from the timer wheel on
        // every delivery.
        let timer = tokio::time::sleep_until(session.next_deadline());
        tokio::pin!(timer);
        let close = loop {
            let deadline = session.next_deadline();
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            // Wakes on: a message (or the end) from the client; frames or a close queued for this
            // connection by its session or the hub; the session's next timer (handshake timeout,
            // ping, pong timeout).
            let inbound = tokio::select! {
                inbound = wire.recv() => Some(inbound),
                () = outbox.ready() => {
                    // Boxed like the handler: a write's state (a hold's included) is needed only
                    // while writing, not in every idle connection's task.
                    match Box::pin(write_turn(&mut wire, &outbox, &mut batch, session.session()))
                        .await
                    {
                        Err(error) => {
                            dropped(session.session(), &error);
                            break None;
                        }
                        Ok(Turn::Close(disconnect)) => break Some(disconnect),
                        Ok(Turn::Written) => None,
                        Ok(Turn::Interrupted(inbound)) => Some(inbound),
                    }
                }
                () = &mut timer => {
                    if let Err(disconnect) = session.on_timer(tokio::time::Instant::now()) {
                        break Some(disconnect);
                    }
                    None
                }
            };
            match inbound {
                // Boxed so the rarely running command handler does not enlarge the state every
                // idle connection carries.
                Some(Inbound::Message(text)) => {
                    if let Err(disconnect) = Box::pin(session.handle_message(&text)).await {
                        break Some(disconnect);
                    }
                }
                Some(Inbound::Refused(disconnect)) => break Some(disconnect),
                Some(Inbound::Gone) => {
                    tracing::debug!("client closed the connection");
                    session.session().record_drop("client_gone");
                    break None;
                }
                None => {}
            }
        };
        // The ending runs once per connection: boxed so its state is not part of every idle task.
        // A client that stopped reading cannot hold the teardown: after the bound the socket is
        // dropped without the courtesy of a flush and a close frame (dropping the session cleans
        // up the hub synchronously; its presence entries expire by TTL).
        if tokio::time::timeout(
            2 * FINISH_TIMEOUT,
            Box::pin(finish(wire, session, outbox, batch, close)),
        )
        .await
        .is_err()
        {
            tracing::debug!("session cleanup timed out; dropping the session");
        }
    };
    InSpan { inner: task, span }
}

pin_project_lite::pin_project! {
    /// `tracing::Instrumented` with the span boxed, and absent when disabled: 8 bytes in every
    /// idle connection's task instead of 32 (see `idle_connection_state_stays_small`).
    struct InSpan<F> {
        #[pin]
        inner: F,
        span: Option<Box<tracing::Span>>,
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(|span| span.enter());
        this.inner.poll(cx)
    }
}

/// How a write turn ended.
enum Turn {
    /// What was queued is written.
    Written,
    /// Written, and the close queued after it is due.
    Close(Disconnect),
    /// Written early because the client sent something during the hold; handle it next.
    Interrupted(Inbound),
}

/// One write turn: with `node.write_delay_ms` set and only pushes queued, first holds them for
/// that long so the publications of the next moments share the write (one `writev` instead of
/// one per delivery: the kernel's write is about half of the server's CPU per delivery at
/// moderate rates). A reply or a close queued meanwhile ends the hold at once, and so does a
/// message from the client (written first, then handled), so replies are never delayed and a
/// client that keeps sending cannot postpone its pushes past the delay.
async fn write_turn(
    wire: &mut impl Wire,
    outbox: &Outbox,
    batch: &mut Vec<SharedFrame>,
    session: &Session,
) -> std::io::Result<Turn> {
    let delay = session.write_delay();
    let mut interrupted = None;
    if !delay.is_zero() && outbox.hold() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = outbox.urgent() => {}
            inbound = wire.recv() => interrupted = Some(inbound),
        }
    }
    let pending_close = outbox.drain(batch, WRITE_BATCH_BYTES);
    flush(wire, batch, session).await?;
    Ok(match (pending_close, interrupted) {
        (Some(disconnect), _) => Turn::Close(disconnect),
        (None, Some(inbound)) => Turn::Interrupted(inbound),
        (None, None) => Turn::Written,
    })
}

/// Flushes what is queued, tells the client why it is closed, and cleans up the session.
async fn finish(
    mut wire: impl Wire,
    session: impl Handler,
    outbox: Outbox,
    mut batch: Vec<SharedFrame>,
    close: Option<Disconnect>,
) {
    if let Some(disconnect) = close {
        // Replies and pushes queued before the close still reach the client first, within
        // [`FINISH_TIMEOUT`].
        let closing = async {
            loop {
                let pending_close = outbox.drain(&mut batch, WRITE_BATCH_BYTES);
                let empty = batch.is_empty();
                if flush(&mut wire, &mut batch, session.session())
                    .await
                    .is_err()
                    || empty
                    || pending_close.is_some()
                {
                    break;
                }
            }
            tracing::debug!(code = disconnect.code, reason = %disconnect.reason, "closing connection");
            session.session().record_disconnect(&disconnect);
            wire.close(&disconnect).await;
        };
        if tokio::time::timeout(FINISH_TIMEOUT, closing).await.is_err() {
            tracing::debug!("connection teardown timed out; dropping the socket");
            session.session().record_drop("teardown_timeout");
        }
    }
    session.close().await;
}

/// Records why a write ended the connection (see `kilat_connection_drops`).
fn dropped(session: &Session, error: &std::io::Error) {
    let reason = if error.kind() == std::io::ErrorKind::TimedOut {
        "write_timeout"
    } else {
        "write_failed"
    };
    tracing::debug!(%error, reason, "dropping the connection: a write failed");
    session.record_drop(reason);
}

/// Writes `batch` and frees it: it usually holds the outbox's own buffer (see
/// [`Outbox::drain`]), and an idle connection keeps no batch memory. A write blocked for
/// [`WRITE_TIMEOUT`] fails with `TimedOut`. A write that succeeded is reported to the
/// session's metrics observer, if any.
async fn flush(
    wire: &mut impl Wire,
    batch: &mut Vec<SharedFrame>,
    session: &Session,
) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let written = match tokio::time::timeout(WRITE_TIMEOUT, wire.send(batch)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    if written.is_ok() {
        session.record_write(batch);
    }
    *batch = Vec::new();
    written
}

#[cfg(test)]
mod tests {
    use crate::transport::websocket::WsWire;

    /// Every idle connection is one task holding this future: its size is memory per
    /// connection, so it is guarded here (without timing) and measured in `bench/idle.sh`.
    #[tokio::test]
    async fn idle_connection_state_stays_small() {
        let node = kilat_core::Node::new(kilat_core::NodeConfig::dev());
        let outbox = kilat_core::Outbox::new(1 << 20);
        let transport = kilat_core::TransportInfo {
            name: "websocket",
            emulated: false,
        };
        let session = kilat_core::Session::new(&node, transport, outbox.clone());
        let config = kilat_transport::ws::WsConfig::default();
        let handshake = kilat_transport::ws::Handshake::for_offer(None, &config);
        let io = tokio::io::duplex(64).0;
        let conn = kilat_transport::ws::WsConnection::new(io, &handshake, &config);
        let wire = WsWire {
            conn,
            _permit: None,
        };
        let task = super::drive(wire, session, outbox);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the connection task grew to {size} bytes");
    }
}
