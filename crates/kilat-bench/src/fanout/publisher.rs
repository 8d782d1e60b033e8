//! The fanout publishers: each is a [`PublisherTask`] that publishes its share of the rate
//! round-robin over the channels for the duration, over its own WebSocket or through the
//! HTTP API, and reports what the server accepted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{oneshot, watch};

use super::args::{FanoutArgs, Feed, Via};
use super::schedule;
use crate::client::{self, Conn, HttpConn, Target, Transport};
use crate::proto::{self, Protocol};

/// How one publisher reaches the server.
pub(super) enum Publisher {
    Ws(Conn),
    Http(HttpConn),
}

/// Connects this process's share of publishers: (publisher number, connection).
pub(super) async fn connect(args: &FanoutArgs) -> Result<Vec<(u32, Publisher)>> {
    let (index, count) = args.workers.share();
    // Publishers always use the WebSocket endpoint.
    let pub_target = proto::target(&args.url, args.protocol, Transport::Ws)?;
    let mut publishers = Vec::new();
    for j in (0..args.publishers).filter(|j| j % count == index) {
        let p = match args.publish_via {
            Via::Ws => Publisher::Ws(
                proto::open(&pub_target, args.protocol, Duration::from_secs(10))
                    .await
                    .context("connecting a publisher")?,
            ),
            Via::Http => {
                let url = args.api_url.clone().unwrap_or_else(|| {
                    let scheme = if pub_target.tls { "https" } else { "http" };
                    let path = match args.protocol {
                        Protocol::Pusher => args.pusher.events_path(),
                        _ => "/api/publish".to_owned(),
                    };
                    format!("{scheme}://{}{path}", pub_target.addr)
                });
                Publisher::Http(HttpConn::connect(&Target::parse(&url)?).await?)
            }
        };
        publishers.push((j as u32, p));
    }
    Ok(publishers)
}

/// One publisher's task: what it publishes, where, and where it reports.
pub(super) struct PublisherTask {
    pub(super) j: u32,
    pub(super) protocol: Protocol,
    pub(super) prefix: String,
    pub(super) nchan: usize,
    pub(super) rate: f64,
    pub(super) size: usize,
    pub(super) feed: Feed,
    pub(super) duration: Duration,
    pub(super) api_key: Option<String>,
    /// The app to sign Pusher HTTP API calls for (`--protocol pusher`).
    pub(super) pusher: Option<crate::pusher::PusherOpts>,
    pub(super) publisher: Publisher,
    /// Ends the reading after the drain.
    pub(super) stop: watch::Receiver<bool>,
    /// Where the counts go once publishing (and waiting for its replies) is over.
    pub(super) done: oneshot::Sender<PublishResult>,
}

/// Messages accepted per channel, errors (refused or failed publishes), the first error.
pub(super) type PublishResult = (Vec<u64>, u64, Option<String>);

/// Accounts for kilat publish replies: a refused publish is not counted as published.
fn publish_replies(
    payload: &[u8],
    pending: &mut HashMap<u32, usize>,
    counts: &mut [u64],
    errors: &mut u64,
    first_error: &mut Option<String>,
) {
    for line in payload.split(|b| *b == b'\n') {
        let Some(rest) = line.strip_prefix(b"{\"id\":") else {
            continue;
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let Some(id) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(c) = pending.remove(&id) else {
            continue;
        };
        if line.windows(8).any(|w| w == b"\"error\":") {
            counts[c] = counts[c].saturating_sub(1);
            *errors += 1;
            first_error
                .get_or_insert_with(|| format!("publish: {}", String::from_utf8_lossy(line)));
        }
    }
}

impl PublisherTask {
    /// Sends what is due every millisecond for the duration, in one write per tick, reports
    /// through `done`, then keeps reading (answering pings) until `stop`.
    pub(super) async fn run(self) {
        let PublisherTask {
            j,
            protocol,
            prefix,
            nchan,
            rate,
            size,
            feed,
            duration,
            api_key,
            pusher,
            mut publisher,
            mut stop,
            done,
        } = self;
        let mut seq = vec![0u64; nchan];
        let mut counts = vec![0u64; nchan];
        let mut errors = 0u64;
        let mut first_error = None;
        let mut pending: HashMap<u32, usize> = HashMap::new();
        let mut sent = 0u64;
        let mut next_id = 10u32;
        let start = Instant::now();
        let start_us = proto::now_us();
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let headers = api_key
            .map(|k| format!("Authorization: apikey {k}\r\n"))
            .unwrap_or_default();
        let mut batch = Vec::new();
        let mut broken = false;
        'publishing: loop {
            let elapsed = start.elapsed();
            if elapsed >= duration {
                break;
            }
            let due = schedule::due(elapsed.as_secs_f64(), rate);
            batch.clear();
            let mut http_bodies = Vec::new();
            while sent < due {
                let c = (j as usize + sent as usize) % nchan;
                seq[c] += 1;
                let intended = schedule::intended_us(start_us, sent, rate);
                let data = match feed {
                    Feed::Padded => proto::payload(j, seq[c], proto::now_us(), intended, size),
                    Feed::Ticker => {
                        super::delta::ticker_payload(j, seq[c], proto::now_us(), intended, size)
                    }
                };
                let channel = format!("{prefix}{c}");
                match publisher {
                    Publisher::Ws(_) => {
                        next_id = next_id.wrapping_add(1).max(10);
                        if protocol == Protocol::Kilat {
                            pending.insert(next_id, c);
                        }
                        let text = proto::publish_text(protocol, next_id, &channel, &data);
                        client::encode_text(&mut batch, text.as_bytes());
                    }
                    Publisher::Http(_) => {
                        let body = match &pusher {
                            Some(_) => crate::pusher::event_body(&channel, &data),
                            None => format!(r#"{{"channel":"{channel}","data":{data}}}"#),
                        };
                        http_bodies.push((c, body));
                    }
                }
                counts[c] += 1;
                sent += 1;
            }
            match &mut publisher {
                Publisher::Ws(conn) => {
                    // A server that stops reading must not hold the publisher past the run.
                    let budget = duration.saturating_sub(start.elapsed()) + Duration::from_secs(2);
                    if !batch.is_empty() {
                        let sent = tokio::time::timeout(budget, conn.send_raw(&batch)).await;
                        if let Err(e) = sent.map_err(anyhow::Error::from).and_then(|r| r) {
                            errors += 1;
                            first_error.get_or_insert(format!("publisher: {e:#}"));
                            broken = true;
                            break;
                        }
                    }
                    // Read replies and broadcasts (and answer pings) until the next tick.
                    loop {
                        tokio::select! {
                            r = conn.next() => match r {
                                Ok((op, payload)) => {
                                    let pong = proto::answer_ping(protocol, op, payload);
                                    if protocol == Protocol::Kilat {
                                        publish_replies(payload, &mut pending, &mut counts, &mut errors, &mut first_error);
                                    }
                                    if let Some(p) = pong {
                                        let _ = conn.send_text(p).await;
                                    }
                                }
                                Err(e) => {
                                    errors += 1;
                                    first_error.get_or_insert(format!("publisher: {e:#}"));
                                    broken = true;
                                    break 'publishing;
                                }
                            },
                            _ = ticker.tick() => break,
                        }
                    }
                }
                Publisher::Http(http) => {
                    for (c, body) in &http_bodies {
                        let posted = match &pusher {
                            Some(app) => {
                                let path = app.signed(&app.events_path(), body.as_bytes());
                                http.post_to(&path, "", body.as_bytes()).await
                            }
                            None => http.post(&headers, body.as_bytes()).await,
                        };
                        match posted {
                            Ok((200, reply)) if !reply.windows(8).any(|w| w == b"\"error\":") => {}
                            Ok((status, reply)) => {
                                counts[*c] = counts[*c].saturating_sub(1);
                                errors += 1;
                                first_error.get_or_insert_with(|| {
                                    format!("HTTP {status}: {}", String::from_utf8_lossy(&reply))
                                });
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(format!("HTTP publish: {e:#}"));
                                broken = true;
                                break 'publishing;
                            }
                        }
                    }
                    ticker.tick().await;
                }
            }
        }
        let Publisher::Ws(mut conn) = publisher else {
            let _ = done.send((counts, errors, first_error));
            return;
        };
        // Wait (bounded) for the replies still due, so refused publishes are not counted.
        let deadline = Instant::now() + Duration::from_secs(3);
        while !broken && !pending.is_empty() && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), conn.next()).await {
                Ok(Ok((op, payload))) => {
                    let pong = proto::answer_ping(protocol, op, payload);
                    publish_replies(
                        payload,
                        &mut pending,
                        &mut counts,
                        &mut errors,
                        &mut first_error,
                    );
                    if let Some(p) = pong {
                        let _ = conn.send_text(p).await;
                    }
                }
                _ => break,
            }
        }
        let _ = done.send((counts, errors, first_error));
        if broken {
            return;
        }
        loop {
            tokio::select! {
                r = conn.next() => match r {
                    Ok((op, payload)) => {
                        if let Some(p) = proto::answer_ping(protocol, op, payload) {
                            let _ = conn.send_text(p).await;
                        }
                    }
                    Err(_) => return,
                },
                _ = stop.changed() => return,
            }
        }
    }
}
