//! `kilat bench ticker`: N subscribers of the ticker demo's channel (`ticker:all`, fed by
//! `kilat demo feed ticker`), for comparing the namespace with and without per-key conflation
//! (`bench/ticker.sh`). The publisher is the feed itself, so nothing is published here: each
//! subscriber counts the prices it receives and times each from the feed's stamp (`"t"`, Unix
//! milliseconds on the same machine) to its arrival. After `--warmup` seconds (subscribing,
//! the initial price of every symbol) it measures for `--duration` seconds and reports
//! deliveries/s, updates per subscriber and symbol, and the stamp-to-arrival latency
//! (millisecond stamps: the percentiles have 1 ms resolution).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{self, ClientOpts, Transport};
use crate::proto::{self, Protocol};
use crate::stats;

/// Options of the ticker scenario.
#[derive(Debug, Args)]
pub(crate) struct TickerArgs {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// Subscriber connections.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: u32,
    /// The channel the feed publishes to.
    #[arg(long, default_value = "ticker:all")]
    channel: String,
    /// Seconds after subscribing before measuring (the feed starts and publishes every symbol).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds of measuring.
    #[arg(long, short = 'd', default_value_t = 20.0)]
    duration: f64,
    /// PID of the server: its CPU seconds over the measured window are reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientOpts,
}

/// What every subscriber adds to.
struct Counters {
    measuring: AtomicBool,
    delivered: AtomicU64,
    histogram: Mutex<hdrhistogram::Histogram<u64>>,
    disconnects: AtomicU64,
    first_error: Mutex<Option<String>>,
}

#[derive(Debug, Serialize)]
struct Report {
    subscribers: u64,
    seconds: f64,
    delivered: u64,
    deliveries_per_s: f64,
    per_subscriber_per_s: f64,
    latency: stats::Latency,
    disconnects: u64,
    server_cpu_seconds: Option<f64>,
}

/// Counts the prices in one message (a message may batch several) and times each by its `"t"`.
fn receive(counters: &Counters, payload: &[u8], local: &mut Vec<u64>) {
    const TAG: &[u8] = b"\"t\":";
    if !counters.measuring.load(Ordering::Relaxed) {
        return;
    }
    let now_ms = proto::now_us() / 1000;
    let mut rest = payload;
    let mut n = 0;
    while let Some(i) = rest.windows(TAG.len()).position(|w| w == TAG) {
        rest = &rest[i + TAG.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let t = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        // `t: 0` marks the initial price of each symbol; the order book has a `t` too.
        if t > 0 {
            n += 1;
            local.push(now_ms.saturating_sub(t).max(1) * 1000);
        }
    }
    if n > 0 {
        counters.delivered.fetch_add(n, Ordering::Relaxed);
    }
    if local.len() >= 256 {
        let mut h = counters.histogram.lock().unwrap_or_else(|p| p.into_inner());
        for v in local.drain(..) {
            h.saturating_record(v);
        }
    }
}

pub(crate) async fn run(args: TickerArgs) -> Result<()> {
    client::configure(&args.client)?;
    let target = Arc::new(proto::target(&args.url, Protocol::Kilat, Transport::Ws)?);
    let counters = Arc::new(Counters {
        measuring: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        histogram: Mutex::new(stats::histogram()),
        disconnects: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let bar = stats::progress(u64::from(args.subscribers), "subscribing", args.json);
    let gate = Arc::new(Semaphore::new(128));
    let mut setups = JoinSet::new();
    for _ in 0..args.subscribers {
        let permit = gate.clone().acquire_owned().await?;
        let (target, channel, bar) = (target.clone(), args.channel.clone(), bar.clone());
        setups.spawn(async move {
            let r = proto::open_subscribed(
                &target,
                Protocol::Kilat,
                Transport::Ws,
                Some(&channel),
                Duration::from_secs(10),
            )
            .await;
            drop(permit);
            bar.inc(1);
            r
        });
    }
    let mut readers = JoinSet::new();
    let mut connected = 0u64;
    while let Some(done) = setups.join_next().await {
        let mut conn = match done? {
            Ok(conn) => conn,
            Err(error) => bail!("a subscriber failed to connect: {error:#}"),
        };
        connected += 1;
        let counters = counters.clone();
        let mut stop = stop_rx.clone();
        readers.spawn(async move {
            let mut local = Vec::with_capacity(256);
            loop {
                tokio::select! {
                    r = conn.next() => match r {
                        Ok((op, payload)) => {
                            let pong = proto::answer_ping(Protocol::Kilat, op, payload);
                            receive(&counters, payload, &mut local);
                            if let Some(p) = pong && conn.send_text(p).await.is_err() {
                                counters.disconnects.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        Err(error) => {
                            counters.disconnects.fetch_add(1, Ordering::Relaxed);
                            let mut f = counters.first_error.lock().unwrap_or_else(|p| p.into_inner());
                            f.get_or_insert(format!("{error:#}"));
                            break;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            let mut h = counters.histogram.lock().unwrap_or_else(|p| p.into_inner());
            for v in local.drain(..) {
                h.saturating_record(v);
            }
        });
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let cpu_before = args.server_pid.map(stats::cpu_seconds).transpose()?;
    counters.measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    counters.measuring.store(false, Ordering::SeqCst);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.map(stats::cpu_seconds).transpose()?;
    let delivered = counters.delivered.load(Ordering::SeqCst);
    let _ = stop_tx.send(true);
    while readers.join_next().await.is_some() {}
    let latency = {
        let h = counters.histogram.lock().unwrap_or_else(|p| p.into_inner());
        stats::Latency::of(&h)
    };
    let report = Report {
        subscribers: connected,
        seconds,
        delivered,
        deliveries_per_s: delivered as f64 / seconds,
        per_subscriber_per_s: delivered as f64 / seconds / connected.max(1) as f64,
        latency,
        disconnects: counters.disconnects.load(Ordering::SeqCst),
        server_cpu_seconds: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let mut rows = vec![
            ("subscribers", report.subscribers.to_string()),
            ("measured", format!("{:.1} s", report.seconds)),
            ("prices delivered", report.delivered.to_string()),
            ("deliveries/s", format!("{:.0}", report.deliveries_per_s)),
            (
                "per subscriber",
                format!("{:.1} prices/s", report.per_subscriber_per_s),
            ),
            ("feed stamp to arrival", report.latency.row()),
            ("disconnects", report.disconnects.to_string()),
        ];
        if let Some(cpu) = report.server_cpu_seconds {
            rows.push(("server CPU", format!("{cpu:.2} s")));
        }
        stats::table(&rows);
    }
    if let Some(error) = counters
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        eprintln!("first subscriber error: {error}");
    }
    Ok(())
}
