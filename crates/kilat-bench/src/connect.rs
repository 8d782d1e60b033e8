//! The `connect` scenario: ramp N connections at a rate, measure handshakes/s and the latency of
//! each connect (TCP + WebSocket upgrade + the protocol's connect step).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{self, ClientOpts, Conn};
use super::proto::{self, Protocol};
use super::stats::{self, Latency};
use super::workers::{self, WorkerOpts, Workers};

/// Options of the connect scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// WebSocket URL of the server (the protocol's default path is used when it has none).
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// Server protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Kilat)]
    protocol: Protocol,
    /// How many connections to open (all are held until the last is open).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    connections: usize,
    /// New connections per second (across all workers); set it high to find the maximum.
    #[arg(long, default_value_t = 5_000)]
    rate: u32,
    /// Handshakes in flight at once (per worker).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds one connect may take before it counts as failed.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// PID of the server, whose CPU time (utime+stime from /proc) is read before and after:
    /// server CPU per handshake does not depend on how fast this load generator is.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    client: ClientOpts,
    #[command(flatten)]
    workers: WorkerOpts,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Part {
    connected: u64,
    failed: u64,
    first_error: Option<String>,
    seconds: f64,
    histogram: String,
}

/// What the connect scenario measured.
#[derive(Debug, Serialize)]
struct ConnectReport {
    scenario: &'static str,
    protocol: Protocol,
    workers: usize,
    requested: usize,
    connected: u64,
    failed: u64,
    seconds: f64,
    handshakes_per_s: f64,
    latency: Latency,
    server_cpu_s: Option<f64>,
    /// Server CPU milliseconds per 1,000 handshakes.
    server_cpu_ms_per_1000_handshakes: Option<f64>,
    first_error: Option<String>,
}

pub(crate) async fn run(args: ConnectArgs) -> Result<()> {
    client::configure(&args.client)?;
    if args.workers.is_worker() {
        let (part, held) = part(&args).await?;
        workers::say("RESULT", &serde_json::to_string(&part)?);
        let _ = workers::hear().await;
        drop(held);
        return Ok(());
    }
    let cpu0 = args.server_pid.map(stats::cpu_seconds).transpose()?;
    let parts = if args.workers.is_parent() {
        let mut pool = Workers::spawn(args.workers.workers)?;
        let bar = stats::progress(0, "workers connecting", args.json);
        bar.enable_steady_tick(Duration::from_millis(200));
        let lines = pool.expect("RESULT").await?;
        bar.finish_and_clear();
        pool.finish().await?;
        lines
            .iter()
            .map(|l| serde_json::from_str::<Part>(l).context("bad worker result"))
            .collect::<Result<Vec<_>>>()?
    } else {
        vec![part(&args).await?.0]
    };
    let cpu1 = args.server_pid.map(stats::cpu_seconds).transpose()?;
    let server_cpu_s = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let mut h = stats::histogram();
    let mut r = ConnectReport {
        scenario: "connect",
        protocol: args.protocol,
        workers: args.workers.workers.max(1),
        requested: args.connections,
        connected: 0,
        failed: 0,
        seconds: 0.0,
        handshakes_per_s: 0.0,
        latency: Latency::default(),
        server_cpu_s,
        server_cpu_ms_per_1000_handshakes: None,
        first_error: None,
    };
    for p in &parts {
        r.connected += p.connected;
        r.failed += p.failed;
        r.seconds = r.seconds.max(p.seconds);
        if r.first_error.is_none() {
            r.first_error.clone_from(&p.first_error);
        }
        h.add(stats::decode(&p.histogram)?)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
    }
    if r.seconds > 0.0 {
        r.handshakes_per_s = r.connected as f64 / r.seconds;
    }
    r.latency = Latency::of(&h);
    if let Some(cpu) = server_cpu_s
        && r.connected > 0
    {
        r.server_cpu_ms_per_1000_handshakes = Some(cpu * 1000.0 / (r.connected as f64 / 1000.0));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let mut rows = vec![
            ("scenario", format!("connect ({:?})", r.protocol)),
            (
                "connected",
                format!(
                    "{} of {} ({} failed), {} worker process(es)",
                    r.connected, r.requested, r.failed, r.workers
                ),
            ),
            ("seconds", format!("{:.2}", r.seconds)),
            ("handshakes/s", format!("{:.0}", r.handshakes_per_s)),
            ("connect latency", r.latency.row()),
        ];
        if let (Some(cpu), Some(per)) = (r.server_cpu_s, r.server_cpu_ms_per_1000_handshakes) {
            rows.push((
                "server CPU",
                format!("{cpu:.2} s, {per:.1} ms per 1,000 handshakes"),
            ));
        }
        if let Some(e) = &r.first_error {
            rows.push(("first error", e.clone()));
        }
        stats::table(&rows);
    }
    if r.connected == 0 {
        bail!(
            "no connection could be opened: {}",
            r.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}

/// Opens this process's share of connections; returns the measurement and the open connections.
async fn part(args: &ConnectArgs) -> Result<(Part, Vec<Conn>)> {
    let (index, count) = args.workers.share();
    let n = (0..args.connections).filter(|i| i % count == index).count();
    let transport = args.client.transport;
    let target = Arc::new(proto::target(&args.url, args.protocol, transport)?);
    let bar = stats::progress(
        n as u64,
        "connecting",
        args.json || args.workers.is_worker(),
    );
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let rate = f64::from(args.rate.max(1)) / count as f64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let histogram = Arc::new(Mutex::new(stats::histogram()));
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        ticker.tick().await;
        let permit = gate.clone().acquire_owned().await?;
        let (target, histogram, bar, protocol) = (
            target.clone(),
            histogram.clone(),
            bar.clone(),
            args.protocol,
        );
        tasks.spawn(async move {
            let t0 = Instant::now();
            let r = proto::open_subscribed(&target, protocol, transport, None, timeout).await;
            let us = t0.elapsed().as_micros() as u64;
            drop(permit);
            bar.inc(1);
            if r.is_ok() {
                histogram
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .saturating_record(us.max(1));
            }
            r.map(|mut c| {
                c.shrink();
                c
            })
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(c) => held.push(c),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let histogram = stats::encode(&histogram.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((
        Part {
            connected: held.len() as u64,
            failed,
            first_error,
            seconds,
            histogram,
        },
        held,
    ))
}
