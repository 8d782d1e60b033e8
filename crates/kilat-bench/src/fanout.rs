//! The `fanout` scenario: N subscribers over C channels, P publishers at R messages/s in total,
//! measuring deliveries/s, publish-to-deliver latency, lost and duplicated messages and the
//! server's CPU time per million deliveries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use super::client::{self, ClientOpts, Conn, HttpConn, Target, Transport};
use super::proto::{self, Protocol};
use super::stats::{self, Latency};
use super::workers::{self, WorkerOpts, Workers};

/// How publishers publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Via {
    /// Over their own WebSocket connections (kilat `publish` command, or a plain message).
    Ws,
    /// Through kilat's server HTTP API, `POST /api/publish` (kilat only).
    Http,
}

/// Options of the fanout scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// WebSocket URL of the server (the protocol's default path is used when it has none).
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// Server protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Kilat)]
    protocol: Protocol,
    /// Subscriber connections.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// Channels; subscriber i joins channel i mod C (kilat only; other servers have one).
    #[arg(long, short = 'c', default_value_t = 1)]
    channels: usize,
    /// Publishers; each publishes R/P messages/s, round-robin over the channels.
    #[arg(long, short = 'p', default_value_t = 1)]
    publishers: usize,
    /// Messages per second published in total (not deliveries).
    #[arg(long, short = 'r', default_value_t = 200.0)]
    rate: f64,
    /// Payload size in bytes (JSON carrying the publisher, a sequence number and a timestamp).
    #[arg(long, short = 's', default_value_t = 100)]
    size: usize,
    /// Seconds of publishing.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Publish over WebSocket connections or through the HTTP API.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    publish_via: Via,
    /// HTTP API publish URL [default: http://<host of --url>/api/publish].
    #[arg(long)]
    api_url: Option<String>,
    /// API key for --publish-via http (not needed with `kilat serve --dev`).
    #[arg(long)]
    api_key: Option<String>,
    /// Channel name prefix (channels are PREFIX0, PREFIX1, ...).
    #[arg(long, default_value = "bench")]
    channel_prefix: String,
    /// PID of the server, whose CPU time (utime+stime from /proc) is read before and after.
    #[arg(long)]
    server_pid: Option<u32>,
    /// New subscriber connections per second while setting up.
    #[arg(long, default_value_t = 5000)]
    connect_rate: u32,
    /// Handshakes in flight at once while setting up.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds to wait for in-flight deliveries after publishing stops (ends earlier when quiet).
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    #[command(flatten)]
    client: ClientOpts,
    #[command(flatten)]
    workers: WorkerOpts,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One process's part of the measurement.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Part {
    subscribers: u64,
    connect_failed: u64,
    first_error: Option<String>,
    published_per_channel: Vec<u64>,
    subscribers_per_channel: Vec<u64>,
    publish_errors: u64,
    delivered: u64,
    duplicates: u64,
    gaps: u64,
    disconnects: u64,
    start_us: u64,
    last_delivery_us: u64,
    histogram: String,
    client_cpu_s: f64,
    #[serde(default)]
    compressed: u64,
}

/// What the fanout scenario measured.
#[derive(Debug, Serialize)]
struct FanoutReport {
    scenario: &'static str,
    protocol: Protocol,
    publish_via: &'static str,
    workers: usize,
    subscribers: u64,
    connect_failed: u64,
    channels: usize,
    publishers: usize,
    rate: f64,
    size: usize,
    duration_s: f64,
    published: u64,
    publish_errors: u64,
    expected_deliveries: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    gaps: u64,
    disconnects: u64,
    /// Subscribers' transport.
    transport: Transport,
    /// Messages subscribers received compressed (permessage-deflate; `--compression`).
    compressed_messages: u64,
    deliveries_per_s: f64,
    expected_deliveries_per_s: f64,
    latency: Latency,
    server_cpu_s: Option<f64>,
    server_cpu_s_per_million_deliveries: Option<f64>,
    server_rss_kib: Option<u64>,
    /// CPU seconds the bench processes themselves used (they share the machine with the server).
    bench_cpu_s: f64,
    first_error: Option<String>,
}

pub(crate) async fn run(args: FanoutArgs) -> Result<()> {
    if args.subscribers == 0 || args.publishers == 0 || args.rate <= 0.0 {
        bail!("need at least one subscriber, one publisher and a positive --rate");
    }
    client::configure(&args.client)?;
    if args.publish_via == Via::Http && args.protocol != Protocol::Kilat {
        bail!("--publish-via http is kilat's server API; use --publish-via ws for other servers");
    }
    if args.workers.is_worker() {
        let prepared = prepare(&args).await?;
        workers::say("READY", "");
        if workers::hear().await != "GO" {
            return Ok(());
        }
        let part = prepared.run(&args).await?;
        workers::say("RESULT", &serde_json::to_string(&part)?);
        // Stay until the parent has read everything.
        let _ = workers::hear().await;
        return Ok(());
    }
    let (parts, cpu, rss) = if args.workers.is_parent() {
        let mut pool = Workers::spawn(args.workers.workers)?;
        let bar = stats::progress(0, "workers connecting", args.json);
        bar.enable_steady_tick(Duration::from_millis(200));
        pool.expect("READY").await?;
        bar.finish_and_clear();
        let cpu0 = args.server_pid.map(stats::cpu_seconds).transpose()?;
        pool.tell("GO")?;
        let bar = publishing_bar(&args);
        let lines = pool.expect("RESULT").await?;
        bar.finish_and_clear();
        let cpu1 = args.server_pid.map(stats::cpu_seconds).transpose()?;
        let rss = args.server_pid.map(stats::rss_kib).transpose()?;
        pool.finish().await?;
        let parts = lines
            .iter()
            .map(|l| serde_json::from_str::<Part>(l).context("bad worker result"))
            .collect::<Result<Vec<_>>>()?;
        (parts, cpu0.zip(cpu1).map(|(a, b)| b - a), rss)
    } else {
        let prepared = prepare(&args).await?;
        let cpu0 = args.server_pid.map(stats::cpu_seconds).transpose()?;
        let bar = publishing_bar(&args);
        let part = prepared.run(&args).await?;
        bar.finish_and_clear();
        let cpu1 = args.server_pid.map(stats::cpu_seconds).transpose()?;
        let rss = args.server_pid.map(stats::rss_kib).transpose()?;
        (vec![part], cpu0.zip(cpu1).map(|(a, b)| b - a), rss)
    };
    let report = merge(&args, &parts, cpu, rss)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if report.subscribers == 0 {
        bail!(
            "no subscriber could connect: {}",
            report.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}

fn publishing_bar(args: &FanoutArgs) -> indicatif::ProgressBar {
    let bar = stats::progress(
        (args.duration * 10.0) as u64,
        "publishing (tenths of s)",
        args.json,
    );
    let b = bar.clone();
    let steps = (args.duration * 10.0) as u64;
    tokio::spawn(async move {
        for _ in 0..steps {
            tokio::time::sleep(Duration::from_millis(100)).await;
            b.inc(1);
        }
    });
    bar
}

fn channels(args: &FanoutArgs) -> usize {
    if args.protocol.has_channels() {
        args.channels.max(1)
    } else {
        1
    }
}

/// Shared counters of this process's subscribers.
#[derive(Debug)]
struct Counters {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    disconnects: AtomicU64,
    compressed: AtomicU64,
    last_delivery_us: AtomicU64,
    histogram: Mutex<hdrhistogram::Histogram<u64>>,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, e: String) {
        let mut f = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(e);
    }
}

enum Publisher {
    Ws(Conn),
    Http(HttpConn),
}

struct Prepared {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    readers: JoinSet<()>,
    publishers: Vec<(u32, Publisher)>,
    subscribers: u64,
    connect_failed: u64,
    subscribers_per_channel: Vec<u64>,
}

/// Connects this process's share of subscribers (subscribed, readers running) and publishers.
async fn prepare(args: &FanoutArgs) -> Result<Prepared> {
    let (index, count) = args.workers.share();
    let transport = args.client.transport;
    let target = Arc::new(proto::target(&args.url, args.protocol, transport)?);
    // Publishers always use the WebSocket endpoint.
    let pub_target = proto::target(&args.url, args.protocol, Transport::Ws)?;
    let nchan = channels(args);
    let counters = Arc::new(Counters {
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        compressed: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        histogram: Mutex::new(stats::histogram()),
        first_error: Mutex::new(None),
    });
    let (stop, stop_rx) = watch::channel(false);
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
    let mut readers = JoinSet::new();
    for &i in &mine {
        ticker.tick().await;
        let permit = gate.clone().acquire_owned().await?;
        let target = target.clone();
        let channel = format!("{}{}", args.channel_prefix, i % nchan);
        let protocol = args.protocol;
        let bar = bar.clone();
        setups.spawn(async move {
            let r = async {
                let timeout = Duration::from_secs(10);
                proto::open_subscribed(&target, protocol, transport, Some(&channel), timeout).await
            }
            .await;
            drop(permit);
            bar.inc(1);
            (i % nchan, r)
        });
    }
    let mut subscribers = 0;
    let mut connect_failed = 0;
    let mut subscribers_per_channel = vec![0u64; nchan];
    while let Some(done) = setups.join_next().await {
        match done? {
            (chan, Ok(mut conn)) => {
                subscribers += 1;
                subscribers_per_channel[chan] += 1;
                let counters = counters.clone();
                let mut stop = stop_rx.clone();
                let protocol = args.protocol;
                let npub = args.publishers;
                readers.spawn(async move {
                    let mut last = vec![0u64; npub];
                    'read: loop {
                        tokio::select! {
                            r = conn.next() => match r {
                                Ok((op, payload)) => {
                                    let pong = proto::answer_ping(protocol, op, payload);
                                    receive(&counters, &mut last, payload);
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
                });
            }
            (_, Err(e)) => {
                connect_failed += 1;
                counters.error(format!("{e:#}"));
            }
        }
    }
    bar.finish_and_clear();
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
                    format!("{scheme}://{}/api/publish", pub_target.addr)
                });
                Publisher::Http(HttpConn::connect(&Target::parse(&url)?).await?)
            }
        };
        publishers.push((j as u32, p));
    }
    Ok(Prepared {
        counters,
        stop,
        readers,
        publishers,
        subscribers,
        connect_failed,
        subscribers_per_channel,
    })
}

/// Accounts for one received message on a subscriber.
fn receive(counters: &Counters, last: &mut [u64], payload: &[u8]) {
    let now = proto::now_us();
    proto::markers(payload, |publisher, seq, sent| {
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
        let mut h = counters.histogram.lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(now.saturating_sub(sent).max(1));
    });
}

impl Prepared {
    /// Publishes for the configured duration, drains, stops the readers and reports.
    async fn run(mut self, args: &FanoutArgs) -> Result<Part> {
        let nchan = channels(args);
        let start_us = proto::now_us();
        let own_cpu = || stats::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let cpu0 = own_cpu();
        let per_publisher = args.rate / args.publishers as f64;
        let duration = Duration::from_secs_f64(args.duration.max(0.0));
        let mut results = Vec::new();
        for (j, publisher) in std::mem::take(&mut self.publishers) {
            let protocol = args.protocol;
            let prefix = args.channel_prefix.clone();
            let size = args.size;
            let api_key = args.api_key.clone();
            let (done, result) = oneshot::channel();
            results.push(result);
            let stop = self.stop.subscribe();
            // Publishers stay connected (reading) until the drain ends: closing a socket with
            // unread broadcasts resets it, and the server may drop what it had not read yet.
            self.readers.spawn(async move {
                publish_loop(
                    PublishPlan {
                        j,
                        protocol,
                        prefix,
                        nchan,
                        rate: per_publisher,
                        size,
                        duration,
                        api_key,
                    },
                    publisher,
                    stop,
                    done,
                )
                .await;
            });
        }
        let mut published_per_channel = vec![0u64; nchan];
        let mut publish_errors = 0;
        for r in results {
            let (counts, errors, first_error) = r.await.context("a publisher task failed")?;
            for (c, n) in counts.into_iter().enumerate() {
                published_per_channel[c] += n;
            }
            publish_errors += errors;
            if let Some(e) = first_error {
                self.counters.error(e);
            }
        }
        // Drain: wait for in-flight deliveries, until quiet or --drain seconds.
        let expected: u64 = if args.workers.workers <= 1 {
            published_per_channel
                .iter()
                .zip(&self.subscribers_per_channel)
                .map(|(p, s)| p * s)
                .sum()
        } else {
            u64::MAX
        };
        let drain_start = Instant::now();
        let drain = Duration::from_secs_f64(args.drain.max(0.0));
        loop {
            let delivered = self.counters.delivered.load(Ordering::Relaxed);
            if delivered >= expected || drain_start.elapsed() >= drain {
                break;
            }
            let last = self.counters.last_delivery_us.load(Ordering::Relaxed);
            if drain_start.elapsed() > Duration::from_millis(300)
                && proto::now_us().saturating_sub(last) > 1_000_000
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        while self.readers.join_next().await.is_some() {}
        let c = &self.counters;
        let histogram = stats::encode(&c.histogram.lock().unwrap_or_else(|p| p.into_inner()));
        let first_error = c
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(Part {
            subscribers: self.subscribers,
            connect_failed: self.connect_failed,
            first_error,
            published_per_channel,
            subscribers_per_channel: self.subscribers_per_channel,
            publish_errors,
            delivered: c.delivered.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            compressed: c.compressed.load(Ordering::Relaxed),
            start_us,
            last_delivery_us: c.last_delivery_us.load(Ordering::Relaxed),
            histogram,
            client_cpu_s: own_cpu() - cpu0,
        })
    }
}

/// What one publisher publishes.
struct PublishPlan {
    j: u32,
    protocol: Protocol,
    prefix: String,
    nchan: usize,
    rate: f64,
    size: usize,
    duration: Duration,
    api_key: Option<String>,
}

/// Messages accepted per channel, errors (refused or failed publishes), the first error.
type PublishResult = (Vec<u64>, u64, Option<String>);

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

/// One publisher: sends what is due every millisecond for the duration, in one write per tick,
/// reports through `done`, then keeps reading (answering pings) until `stop`.
async fn publish_loop(
    plan: PublishPlan,
    mut publisher: Publisher,
    mut stop: watch::Receiver<bool>,
    done: oneshot::Sender<PublishResult>,
) {
    let PublishPlan {
        j,
        protocol,
        prefix,
        nchan,
        rate,
        size,
        duration,
        api_key,
    } = plan;
    let mut seq = vec![0u64; nchan];
    let mut counts = vec![0u64; nchan];
    let mut errors = 0u64;
    let mut first_error = None;
    let mut pending: HashMap<u32, usize> = HashMap::new();
    let mut sent = 0u64;
    let mut next_id = 10u32;
    let start = Instant::now();
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
        let due = (elapsed.as_secs_f64() * rate) as u64 + 1;
        batch.clear();
        let mut http_bodies = Vec::new();
        while sent < due {
            let c = (j as usize + sent as usize) % nchan;
            seq[c] += 1;
            let data = proto::payload(j, seq[c], proto::now_us(), size);
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
                    http_bodies.push((c, format!(r#"{{"channel":"{channel}","data":{data}}}"#)));
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
                    match http.post(&headers, body.as_bytes()).await {
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

fn merge(
    args: &FanoutArgs,
    parts: &[Part],
    cpu: Option<f64>,
    rss: Option<u64>,
) -> Result<FanoutReport> {
    let nchan = channels(args);
    let mut published = vec![0u64; nchan];
    let mut subs = vec![0u64; nchan];
    let mut h = stats::histogram();
    let mut r = FanoutReport {
        scenario: "fanout",
        protocol: args.protocol,
        publish_via: match args.publish_via {
            Via::Ws => "ws",
            Via::Http => "http",
        },
        workers: args.workers.workers.max(1),
        subscribers: 0,
        connect_failed: 0,
        channels: nchan,
        publishers: args.publishers,
        rate: args.rate,
        size: args.size,
        duration_s: args.duration,
        published: 0,
        publish_errors: 0,
        expected_deliveries: 0,
        delivered: 0,
        lost: 0,
        duplicated: 0,
        gaps: 0,
        disconnects: 0,
        transport: args.client.transport,
        compressed_messages: 0,
        deliveries_per_s: 0.0,
        expected_deliveries_per_s: 0.0,
        latency: Latency::default(),
        server_cpu_s: cpu,
        server_cpu_s_per_million_deliveries: None,
        server_rss_kib: rss,
        bench_cpu_s: 0.0,
        first_error: None,
    };
    let mut start = u64::MAX;
    let mut last = 0;
    for p in parts {
        for (c, n) in p.published_per_channel.iter().enumerate() {
            published[c] += n;
        }
        for (c, n) in p.subscribers_per_channel.iter().enumerate() {
            subs[c] += n;
        }
        r.subscribers += p.subscribers;
        r.connect_failed += p.connect_failed;
        r.publish_errors += p.publish_errors;
        r.delivered += p.delivered;
        r.duplicated += p.duplicates;
        r.gaps += p.gaps;
        r.disconnects += p.disconnects;
        r.compressed_messages += p.compressed;
        r.bench_cpu_s += p.client_cpu_s;
        if r.first_error.is_none() {
            r.first_error.clone_from(&p.first_error);
        }
        start = start.min(p.start_us);
        last = last.max(p.last_delivery_us);
        h.add(stats::decode(&p.histogram)?)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
    }
    r.published = published.iter().sum();
    r.expected_deliveries = published.iter().zip(&subs).map(|(p, s)| p * s).sum();
    r.lost = r.expected_deliveries.saturating_sub(r.delivered);
    let span = (last.saturating_sub(start) as f64 / 1e6).max(args.duration);
    if span > 0.0 {
        r.deliveries_per_s = r.delivered as f64 / span;
    }
    r.expected_deliveries_per_s = args.rate * r.subscribers as f64 / nchan as f64;
    r.latency = Latency::of(&h);
    if let Some(cpu) = cpu
        && r.delivered > 0
    {
        r.server_cpu_s_per_million_deliveries = Some(cpu / (r.delivered as f64 / 1e6));
    }
    Ok(r)
}

fn print_table(r: &FanoutReport) {
    let mut rows = vec![
        (
            "scenario",
            format!("fanout ({:?}, publish via {})", r.protocol, r.publish_via),
        ),
        (
            "subscribers",
            format!(
                "{} over {} channel(s) ({} failed), {} worker process(es)",
                r.subscribers, r.channels, r.connect_failed, r.workers
            ),
        ),
        (
            "publishing",
            format!(
                "{} publisher(s), {} msg/s total, {} B payloads, {} s",
                r.publishers, r.rate, r.size, r.duration_s
            ),
        ),
        (
            "published",
            format!("{} ({} errors)", r.published, r.publish_errors),
        ),
        (
            "delivered",
            format!("{} of {} expected", r.delivered, r.expected_deliveries),
        ),
        (
            "lost / duplicated",
            format!("{} / {}", r.lost, r.duplicated),
        ),
        (
            "deliveries/s",
            format!(
                "{:.0} (offered {:.0})",
                r.deliveries_per_s, r.expected_deliveries_per_s
            ),
        ),
        ("latency", r.latency.row()),
    ];
    match (r.server_cpu_s, r.server_cpu_s_per_million_deliveries) {
        (Some(cpu), Some(per)) => {
            rows.push(("server CPU", format!("{cpu:.2} s")));
            rows.push(("CPU s / M deliveries", format!("{per:.3}")));
        }
        _ => rows.push(("server CPU", "n/a (pass --server-pid)".to_owned())),
    }
    rows.push(("bench client CPU", format!("{:.2} s", r.bench_cpu_s)));
    if let Some(rss) = r.server_rss_kib {
        rows.push(("server RSS", format!("{:.1} MiB", rss as f64 / 1024.0)));
    }
    if r.disconnects > 0 {
        rows.push(("disconnects", r.disconnects.to_string()));
    }
    if r.transport != Transport::Ws {
        rows.push(("subscribers over", format!("{:?}", r.transport)));
    }
    if r.compressed_messages > 0 {
        rows.push(("compressed messages", r.compressed_messages.to_string()));
    }
    if let Some(e) = &r.first_error {
        rows.push(("first error", e.clone()));
    }
    stats::table(&rows);
}
