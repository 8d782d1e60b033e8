//! The `idle` scenario: memory per idle connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};

use super::proto::{self, Protocol};
use super::stats::{progress, rss_kib};
use super::workers::{self, WorkerOpts, Workers};
use super::wsclient::Conn;

/// Options of the idle scenario.
#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// WebSocket URL of the server (the protocol's default path is used when it has none).
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
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
    /// PID of the server process, whose VmRSS is read from /proc before and after.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait after the last connection before measuring (lets the allocator settle).
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Same as `--protocol broadcast`: only the WebSocket handshake.
    #[arg(long)]
    raw: bool,
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
    server_rss_before_kib: Option<u64>,
    server_rss_after_kib: Option<u64>,
    server_rss_per_connection_kib: Option<f64>,
}

pub(crate) async fn run(mut args: IdleArgs) -> Result<()> {
    if args.raw {
        args.protocol = Protocol::Broadcast;
    }
    if args.workers.is_worker() {
        let (part, held) = open_share(&args).await?;
        workers::say("RESULT", &serde_json::to_string(&part)?);
        let _ = workers::hear().await;
        drop(held);
        return Ok(());
    }
    let before = args.server_pid.map(rss_kib).transpose()?;
    let (parts, pool, held) = if args.workers.is_parent() {
        let mut pool = Workers::spawn(args.workers.workers)?;
        let bar = progress(0, "workers connecting", args.json);
        bar.enable_steady_tick(Duration::from_millis(200));
        let lines = pool.expect("RESULT").await?;
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
    let after = args.server_pid.map(rss_kib).transpose()?;
    if let Some(pool) = pool {
        pool.finish().await?;
    }
    drop(held);
    let connections = parts.iter().map(|p| p.connections).sum();
    let failed = parts.iter().map(|p| p.failed).sum();
    let first_error = parts.iter().find_map(|p| p.first_error.clone());
    let open_seconds = parts.iter().map(|p| p.open_seconds).fold(0.0, f64::max);
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if connections > 0 => {
            Some(a.saturating_sub(b) as f64 / connections as f64)
        }
        _ => None,
    };
    let report = IdleReport {
        scenario: "idle",
        protocol: args.protocol,
        workers: args.workers.workers.max(1),
        connections,
        failed,
        first_error,
        open_seconds,
        server_rss_before_kib: before,
        server_rss_after_kib: after,
        server_rss_per_connection_kib: per_connection,
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
    let target = Arc::new(proto::target(&args.url, args.protocol)?);
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
    for _ in 0..n {
        ticker.tick().await;
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        let (target, held, errors, bar, protocol) = (
            target.clone(),
            held.clone(),
            errors.clone(),
            bar.clone(),
            args.protocol,
        );
        tasks.spawn(async move {
            match proto::open(&target, protocol, Duration::from_secs(10)).await {
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
        },
        held,
    ))
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
    println!("server RSS before        {}", kib(r.server_rss_before_kib));
    println!("server RSS after         {}", kib(r.server_rss_after_kib));
    match r.server_rss_per_connection_kib {
        Some(v) => println!("server RSS / connection  {v:.2} KiB"),
        None => println!("server RSS / connection  n/a"),
    }
}
