//! The fanout subscribers: this process's share of connections, each subscribed to its
//! channel, with a reader task that checks every delivery (order, duplicates, latency) into
//! shared [`Counters`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::args::{FanoutArgs, channels};
use super::delta::DeltaReader;
use super::schedule::Latencies;
use crate::proto;
use crate::stats;

/// Shared counters of this process's subscribers.
#[derive(Debug)]
pub(super) struct Counters {
    pub(super) delivered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) gaps: AtomicU64,
    pub(super) disconnects: AtomicU64,
    pub(super) compressed: AtomicU64,
    pub(super) received_bytes: AtomicU64,
    pub(super) last_delivery_us: AtomicU64,
    /// Latency against the actual send time and against the schedule.
    pub(super) latencies: Mutex<Latencies>,
    pub(super) first_error: Mutex<Option<String>>,
}

impl Counters {
    pub(super) fn new() -> Self {
        Counters {
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            compressed: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            latencies: Mutex::new(Latencies::new()),
            first_error: Mutex::new(None),
        }
    }

    /// Keeps the first error seen.
    pub(super) fn error(&self, e: String) {
        let mut f = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(e);
    }
}

/// The connected subscribers of this process.
pub(super) struct Subscribers {
    /// The reader tasks; they end when `stop` is sent.
    pub(super) readers: JoinSet<()>,
    pub(super) connected: u64,
    pub(super) failed: u64,
    /// Connected subscribers per channel (for the expected deliveries).
    pub(super) per_channel: Vec<u64>,
}

/// Subscribers whose setup finished, each with its reader running.
struct Started {
    readers: JoinSet<()>,
    subscribers: u64,
    connect_failed: u64,
    per_channel: Vec<u64>,
}

impl Started {
    /// Counts one finished setup and starts reading a subscribed connection.
    fn add(
        &mut self,
        done: (usize, Result<crate::client::Conn>),
        args: &FanoutArgs,
        counters: &Arc<Counters>,
        stop_rx: &watch::Receiver<bool>,
    ) {
        match done {
            (chan, Ok(conn)) => {
                self.subscribers += 1;
                self.per_channel[chan] += 1;
                self.readers.spawn(read(
                    conn,
                    counters.clone(),
                    stop_rx.clone(),
                    args.protocol,
                    args.publishers,
                    args.delta.then(DeltaReader::default),
                ));
            }
            (_, Err(e)) => {
                self.connect_failed += 1;
                counters.error(format!("{e:#}"));
            }
        }
    }
}

/// Reads one subscriber until the stop signal: counts what it receives, answers pings.
async fn read(
    mut conn: crate::client::Conn,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
    protocol: proto::Protocol,
    npub: usize,
    mut deltas: Option<DeltaReader>,
) {
    let mut last = vec![0u64; npub];
    'read: loop {
        tokio::select! {
            r = conn.next() => match r {
                Ok((op, payload)) => {
                    let pong = proto::answer_ping(protocol, op, payload);
                    match deltas.as_mut() {
                        None => receive(&counters, &mut last, payload),
                        Some(deltas) => {
                            let read = deltas.payloads(payload, |p| receive(&counters, &mut last, p));
                            if let Err(e) = read {
                                counters.error(format!("subscriber: {e}"));
                            }
                        }
                    }
                    if let Some(p) = pong
                        && let Err(e) = conn.send_text(p).await
                    {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        counters.error(format!("{e:#}"));
                        break 'read;
                    }
                }
                Err(e) => {
                    counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    counters.error(format!("subscriber: {e:#}"));
                    break 'read;
                }
            },
            _ = stop.changed() => break 'read,
        }
    }
    counters
        .compressed
        .fetch_add(conn.compressed, Ordering::Relaxed);
    counters
        .received_bytes
        .fetch_add(conn.read_bytes, Ordering::Relaxed);
}

/// Connects this process's share of subscribers at `--connect-rate`, at most `--concurrency`
/// handshakes at once, and starts a reader on each.
pub(super) async fn connect(
    args: &FanoutArgs,
    counters: &Arc<Counters>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<Subscribers> {
    let (index, count) = args.workers.share();
    let transport = args.client.transport;
    let target = Arc::new(proto::target(&args.url, args.protocol, transport)?);
    let nchan = channels(args);
    let mine: Vec<usize> = (0..args.subscribers)
        .filter(|i| i % count == index)
        .collect();
    let bar = stats::progress(
        mine.len() as u64,
        "subscribing",
        args.json || args.workers.is_worker(),
    );
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let rate = f64::from(args.connect_rate.max(1)) / count as f64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut setups = JoinSet::new();
    let mut started = Started {
        readers: JoinSet::new(),
        subscribers: 0,
        connect_failed: 0,
        per_channel: vec![0u64; nchan],
    };
    for &i in &mine {
        ticker.tick().await;
        // Subscribers read from the moment they are subscribed, not once all are: a server
        // pushes to them meanwhile (presence counts, joins), and one that is not read for long
        // is rightly dropped as stuck (its write times out).
        while let Some(done) = setups.try_join_next() {
            started.add(done?, args, counters, stop_rx);
        }
        let permit = gate.clone().acquire_owned().await?;
        let target = target.clone();
        let channel = format!("{}{}", args.channel_prefix, i % nchan);
        let protocol = args.protocol;
        let delta = args.delta;
        let bar = bar.clone();
        setups.spawn(async move {
            let r = async {
                let timeout = Duration::from_secs(10);
                let channel = Some(channel.as_str());
                proto::open_subscribed_with(&target, protocol, transport, channel, delta, timeout)
                    .await
            }
            .await;
            drop(permit);
            bar.inc(1);
            (i % nchan, r)
        });
    }
    while let Some(done) = setups.join_next().await {
        started.add(done?, args, counters, stop_rx);
    }
    bar.finish_and_clear();
    Ok(Subscribers {
        readers: started.readers,
        connected: started.subscribers,
        failed: started.connect_failed,
        per_channel: started.per_channel,
    })
}

/// Accounts for one received message on a subscriber.
fn receive(counters: &Counters, last: &mut [u64], payload: &[u8]) {
    let now = proto::now_us();
    proto::markers(payload, |publisher, seq, sent, intended| {
        let Some(prev) = last.get_mut(publisher as usize) else {
            return;
        };
        if seq <= *prev {
            counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if seq != *prev + 1 {
            // Sequence numbers skipped: lost, or arriving later out of order (then counted as
            // duplicates, as a subscriber only moves forward).
            counters.gaps.fetch_add(seq - *prev - 1, Ordering::Relaxed);
        }
        *prev = seq;
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        counters.last_delivery_us.fetch_max(now, Ordering::Relaxed);
        let mut h = counters.latencies.lock().unwrap_or_else(|p| p.into_inner());
        h.record(now, sent, intended);
    });
}
