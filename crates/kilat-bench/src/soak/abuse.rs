//! The abusive clients. Each kind runs in a loop until the run ends, reconnecting whenever the
//! server throws it out, and counts what the server did:
//! - flooder: writes commands as fast as the socket takes them (past the per-connection
//!   command rate) and reads whatever comes back;
//! - oversized: sends one text frame above the server's message size limit (expects a close,
//!   1009 by default);
//! - never-reader: asks for large history pages and never reads the replies, so its queue
//!   fills (expects the server to cut it off rather than buffer without bound).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::clients::Phase;
use crate::client::{self, Target};
use crate::proto::{self, Protocol};

/// What the abusive clients saw.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct AbuseTally {
    pub(super) flood_connections: u64,
    pub(super) flood_commands: u64,
    /// Error replies the flooder got (429 too many commands).
    pub(super) flood_refused: u64,
    /// Times the server closed the flooder's connection.
    pub(super) flood_disconnected: u64,
    pub(super) oversized_sent: u64,
    /// Times the server closed the connection after an oversized frame.
    pub(super) oversized_closed: u64,
    pub(super) slow_connections: u64,
    /// Times the server closed a never-reading connection (found when it was finally read).
    pub(super) slow_cut_off: u64,
    pub(super) connect_errors: u64,
}

/// The kinds of abusive client.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Flooder,
    Oversized,
    NeverReads,
}

fn running(phase: &watch::Receiver<Phase>) -> bool {
    *phase.borrow() == Phase::Run
}

/// Runs one abusive client of `kind` until the run phase ends.
pub(super) async fn run(
    kind: Kind,
    target: Target,
    busy_channel: String,
    tally: Arc<Mutex<AbuseTally>>,
    mut phase: watch::Receiver<Phase>,
) {
    let t = |f: &dyn Fn(&mut AbuseTally)| f(&mut tally.lock().unwrap_or_else(|p| p.into_inner()));
    while running(&phase) {
        let mut conn = match proto::open(&target, Protocol::Kilat, Duration::from_secs(10)).await {
            Ok(c) => c,
            Err(_) => {
                t(&|a| a.connect_errors += 1);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match kind {
            Kind::Flooder => {
                t(&|a| a.flood_connections += 1);
                let mut id = 10u64;
                'conn: while running(&phase) {
                    let mut batch = Vec::new();
                    for _ in 0..200 {
                        id += 1;
                        let cmd = format!(
                            r#"{{"id":{id},"presence_stats":{{"channel":"{busy_channel}"}}}}"#
                        );
                        client::encode_text(&mut batch, cmd.as_bytes());
                    }
                    let sent =
                        tokio::time::timeout(Duration::from_secs(5), conn.send_raw(&batch)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        t(&|a| a.flood_disconnected += 1);
                        break;
                    }
                    t(&|a| a.flood_commands += 200);
                    // Read what has arrived for a moment, then write again.
                    let until = tokio::time::Instant::now() + Duration::from_millis(20);
                    loop {
                        match tokio::time::timeout_at(until, conn.next()).await {
                            Err(_) => break,
                            Ok(Ok((_, payload))) => {
                                let refused = payload
                                    .split(|b| *b == b'\n')
                                    .filter(|l| l.windows(8).any(|w| w == b"\"error\":"))
                                    .count() as u64;
                                let ping = payload == b"{}";
                                t(&|a| a.flood_refused += refused);
                                if ping {
                                    let _ = conn.send_text(b"{}").await;
                                }
                            }
                            Ok(Err(_)) => {
                                t(&|a| a.flood_disconnected += 1);
                                break 'conn;
                            }
                        }
                    }
                }
            }
            Kind::Oversized => {
                t(&|a| a.oversized_sent += 1);
                let big = format!(
                    r#"{{"id":5,"publish":{{"channel":"{busy_channel}","data":"{}"}}}}"#,
                    "x".repeat(256 * 1024)
                );
                let _ = conn.send_text(big.as_bytes()).await;
                let closed = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        if conn.next().await.is_err() {
                            return;
                        }
                    }
                })
                .await
                .is_ok();
                if closed {
                    t(&|a| a.oversized_closed += 1);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = phase.changed() => {}
                }
            }
            Kind::NeverReads => {
                t(&|a| a.slow_connections += 1);
                // 20 history pages a second for 10 s, none of them read.
                for _ in 0..10 {
                    let mut batch = Vec::new();
                    for k in 0..20 {
                        let cmd = format!(
                            r#"{{"id":{},"history":{{"channel":"{busy_channel}","limit":1000}}}}"#,
                            100 + k
                        );
                        client::encode_text(&mut batch, cmd.as_bytes());
                    }
                    let sent =
                        tokio::time::timeout(Duration::from_secs(1), conn.send_raw(&batch)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = phase.changed() => {}
                    }
                    if !running(&phase) {
                        break;
                    }
                }
                // Now read what the server kept for us: a close means it cut us off.
                let cut = tokio::time::timeout(Duration::from_secs(3), async {
                    loop {
                        if conn.next().await.is_err() {
                            return;
                        }
                    }
                })
                .await
                .is_ok();
                if cut {
                    t(&|a| a.slow_cut_off += 1);
                }
            }
        }
    }
}
