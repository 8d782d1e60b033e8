//! The `idle` scenario: memory per idle connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};

use super::client::{self, ClientOpts, Conn};
use super::proto::{self, Protocol};
use super::stats::{self, progress, rss_kib};
use super::workers::{self, WorkerOpts, Workers};

/// Options of the idle scenario.
#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// WebSocket URL of the server (the protocol's default path is used when it has none).
    /// Repeat it to spread the connections over several nodes: connection i goes to URL i mod K.
    #[arg(
        long = "url",
        default_value = "ws://127.0.0.1:8000/connection/websocket"
    )]
    urls: Vec<String>,
    /// Server protocol (what "connected" means: kilat `connect`, Socket.IO `40`, or nothing).
    #[arg(long, value_enum, default_value_t = Protocol::Kilat)]
    protocol: Protocol,
    /// How many connections to open and hold.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    connections: usize,
    /// New connections per second (across all workers).
    #[arg(long, default_value_t = 5_000)]
    rate: u32,
    /// Handshakes in flight at once (per worker).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// PID of the server process, whose VmRSS is read from /proc before and after. Repeat it
    /// for several nodes: their RSS and CPU time are added up.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Seconds to wait after the last connection before measuring (lets the allocator settle).
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Subscribe connection i to channel `idle<i mod N>` after connecting (kilat and Pusher; 0:
    /// none).
    #[arg(long, default_value_t = 0)]
    subscribe: usize,
    /// After measuring memory, keep the connections for this many seconds, answering the
    /// server's pings, and measure the server's CPU time over that window (use more than the
    /// server's ping interval, 25 s by default, to include a full ping round).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Same as `--protocol broadcast`: only the WebSocket handshake.
    #[arg(long)]
    raw: bool,
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
    connections: usize,
    failed: usize,
    first_error: Option<String>,
    open_seconds: f64,
    /// Connections that ended during the hold window (a missed pong, a server restart).
    #[serde(default)]
    dropped_during_hold: usize,
}

/// What the idle scenario measured.
#[derive(Debug, Serialize)]
struct IdleReport {
    scenario: &'static str,
    protocol: Protocol,
    workers: usize,
    connections: usize,
    failed: usize,
    first_error: Option<String>,
    open_seconds: f64,
    servers: usize,
    subscribed_channels: usize,
    server_rss_before_kib: Option<u64>,
    server_rss_after_kib: Option<u64>,
    server_rss_per_connection_kib: Option<f64>,
    hold_seconds: f64,
    dropped_during_hold: usize,
    /// Server CPU seconds (all PIDs) over the hold window.
    server_cpu_s: Option<f64>,
    /// The same as a share of one core per 1,000 held connections.
    server_cpu_percent_per_1000: Option<f64>,
}

pub(crate) async fn run(mut args: IdleArgs) -> Result<()> {
    if args.raw {
        args.protocol = Protocol::Broadcast;
    }
    client::configure(&args.client)?;
    if args.workers.is_worker() {
        let (part, held) = open_share(&args).await?;
        workers::say("OPEN", &serde_json::to_string(&part)?);
        if workers::hear().await == "HOLD" {
            let dropped = hold(held, args.protocol, args.hold).await;
            workers::say("HELD", &dropped.to_string());
            let _ = workers::hear().await;
        }
        return Ok(());
    }
    let before = sum_over(&args.server_pids, rss_kib)?;
    let (parts, mut pool, held) = if args.workers.is_parent() {
        let mut pool = Workers::spawn(args.workers.workers)?;
        let bar = progress(0, "workers connecting", args.json);
        bar.enable_steady_tick(Duration::from_millis(200));
        let lines = pool.expect("OPEN").await?;
        bar.finish_and_clear();
        let parts = lines
            .iter()
            .map(|l| serde_json::from_str::<Part>(l).context("bad worker result"))
            .collect::<Result<Vec<_>>>()?;
        (parts, Some(pool), Vec::new())
    } else {
        let (part, held) = open_share(&args).await?;
        (vec![part], None, held)
    };
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let after = sum_over(&args.server_pids, rss_kib)?;
    let (mut dropped, mut cpu) = (0, None);
    if args.hold > 0.0 {
        let bar = progress(0, "holding connections", args.json);
        bar.enable_steady_tick(Duration::from_millis(200));
        let cpu0 = sum_over(&args.server_pids, stats::cpu_seconds)?;
        dropped = match pool.as_mut() {
            Some(pool) => {
                pool.tell("HOLD")?;
                let lines = pool.expect("HELD").await?;
                lines
                    .iter()
                    .filter_map(|l| l.trim().parse::<usize>().ok())
                    .sum()
            }
            None => hold(held, args.protocol, args.hold).await,
        };
        let cpu1 = sum_over(&args.server_pids, stats::cpu_seconds)?;
        cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
        bar.finish_and_clear();
    } else {
        drop(held);
    }
    if let Some(pool) = pool {
        pool.finish().await?;
    }
    let connections: usize = parts.iter().map(|p| p.connections).sum();
    let failed = parts.iter().map(|p| p.failed).sum();
    let first_error = parts.iter().find_map(|p| p.first_error.clone());
    let open_seconds = parts.iter().map(|p| p.open_seconds).fold(0.0, f64::max);
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if connections > 0 => {
            Some(a.saturating_sub(b) as f64 / connections as f64)
        }
        _ => None,
    };
    let hold_seconds = if args.hold > 0.0 { args.hold } else { 0.0 };
    let report = IdleReport {
        scenario: "idle",
        protocol: args.protocol,
        workers: args.workers.workers.max(1),
        connections,
        failed,
        first_error,
        open_seconds,
        servers: args.urls.len(),
        subscribed_channels: args.subscribe,
        server_rss_before_kib: before,
        server_rss_after_kib: after,
        server_rss_per_connection_kib: per_connection,
        hold_seconds,
        dropped_during_hold: dropped,
        server_cpu_s: cpu,
        server_cpu_percent_per_1000: cpu
            .filter(|_| connections > 0)
            .map(|c| c / hold_seconds * 100.0 * 1000.0 / connections as f64),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if connections == 0 {
        bail!(
            "no connection could be opened: {}",
            report.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}

/// Opens and holds this process's share of the connections.
async fn open_share(args: &IdleArgs) -> Result<(Part, Vec<Conn>)> {
    let (index, count) = args.workers.share();
    let n = (0..args.connections).filter(|i| i % count == index).count();
    if args.urls.is_empty() {
        bail!("give at least one --url");
    }
    let targets = args
        .urls
        .iter()
        .map(|u| proto::target(u, args.protocol, args.client.transport).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let bar = progress(
        n as u64,
        "opening connections",
        args.json || args.workers.is_worker(),
    );
    let held: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let errors: Arc<Mutex<(usize, Option<String>)>> = Arc::new(Mutex::new((0, None)));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let rate = f64::from(args.rate.max(1)) / count as f64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in (0..args.connections).filter(|i| i % count == index) {
        ticker.tick().await;
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        let channel = (args.subscribe > 0).then(|| format!("idle{}", i % args.subscribe));
        let transport = args.client.transport;
        let (target, held, errors, bar, protocol) = (
            targets[i % targets.len()].clone(),
            held.clone(),
            errors.clone(),
            bar.clone(),
            args.protocol,
        );
        tasks.spawn(async move {
            let timeout = Duration::from_secs(10);
            let opened =
                proto::open_subscribed(&target, protocol, transport, channel.as_deref(), timeout);
            match opened.await {
                Ok(mut conn) => {
                    conn.shrink();
                    held.lock().await.push(conn);
                }
                Err(error) => {
                    let mut e = errors.lock().await;
                    e.0 += 1;
                    e.1.get_or_insert_with(|| format!("{error:#}"));
                }
            }
            bar.inc(1);
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let open_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let held = std::mem::take(&mut *held.lock().await);
    let (failed, first_error) = errors.lock().await.clone();
    Ok((
        Part {
            connections: held.len(),
            failed,
            first_error,
            open_seconds,
            dropped_during_hold: 0,
        },
        held,
    ))
}

/// Keeps `held` open for `seconds`, answering the server's pings; returns how many ended.
async fn hold(held: Vec<Conn>, protocol: Protocol, seconds: f64) -> usize {
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in held {
        tasks.spawn(async move {
            loop {
                let next = tokio::time::timeout_at(until, conn.next()).await;
                let reply = match next {
                    Err(_elapsed) => return true,
                    Ok(Err(_)) => return false,
                    Ok(Ok((opcode, payload))) => proto::answer_ping(protocol, opcode, payload),
                };
                if let Some(reply) = reply {
                    if conn.send_text(reply).await.is_err() {
                        return false;
                    }
                    conn.shrink();
                }
            }
        });
    }
    let mut dropped = 0;
    while let Some(alive) = tasks.join_next().await {
        if !matches!(alive, Ok(true)) {
            dropped += 1;
        }
    }
    dropped
}

/// `f` of every PID, added up; `None` without PIDs.
fn sum_over<T: std::iter::Sum<T>>(pids: &[u32], f: impl Fn(u32) -> Result<T>) -> Result<Option<T>> {
    if pids.is_empty() {
        return Ok(None);
    }
    pids.iter().map(|&p| f(p)).sum::<Result<T>>().map(Some)
}

fn print_table(r: &IdleReport) {
    let kib = |v: Option<u64>| {
        v.map_or("n/a (pass --server-pid)".to_owned(), |v| {
            format!("{:.1} MiB", v as f64 / 1024.0)
        })
    };
    println!(
        "scenario                 idle ({:?}, {} worker process(es))",
        r.protocol, r.workers
    );
    println!(
        "connections held         {} ({} failed)",
        r.connections, r.failed
    );
    if let Some(e) = &r.first_error {
        println!("first error              {e}");
    }
    println!("opened in                {:.2} s", r.open_seconds);
    if r.servers > 1 {
        println!(
            "servers                  {} (figures below are their sum)",
            r.servers
        );
    }
    if r.subscribed_channels > 0 {
        println!(
            "subscribed               each connection to one of {} channels",
            r.subscribed_channels
        );
    }
    println!("server RSS before        {}", kib(r.server_rss_before_kib));
    println!("server RSS after         {}", kib(r.server_rss_after_kib));
    match r.server_rss_per_connection_kib {
        Some(v) => println!("server RSS / connection  {v:.2} KiB"),
        None => println!("server RSS / connection  n/a"),
    }
    if let Some(cpu) = r.server_cpu_s {
        println!(
            "held for                 {:.0} s ({} dropped)",
            r.hold_seconds, r.dropped_during_hold
        );
        println!("server CPU while idle    {cpu:.2} s");
        if let Some(p) = r.server_cpu_percent_per_1000 {
            println!("                         {p:.3}% of a core per 1,000 connections");
        }
    }
}
