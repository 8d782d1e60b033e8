//! The `idle` scenario: memory per idle connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};

use super::wsclient::{self, Target};

/// Options of the idle scenario.
#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// How many connections to open and hold.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    connections: usize,
    /// New connections per second.
    #[arg(long, default_value_t = 5_000)]
    rate: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// PID of the server process, whose VmRSS is read from /proc before and after.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait after the last connection before measuring (lets the allocator settle).
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Only the WebSocket handshake, no kilat `connect` command (for other servers).
    #[arg(long)]
    raw: bool,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What the idle scenario measured.
#[derive(Debug, Serialize)]
struct IdleReport {
    scenario: &'static str,
    connections: usize,
    failed: usize,
    first_error: Option<String>,
    open_seconds: f64,
    server_rss_before_kib: Option<u64>,
    server_rss_after_kib: Option<u64>,
    server_rss_per_connection_kib: Option<f64>,
}

pub(crate) async fn run(args: IdleArgs) -> Result<()> {
    let target = Arc::new(Target::parse(&args.url)?);
    let before = args.server_pid.map(rss_kib).transpose()?;
    let bar = progress(args.connections as u64, args.json);
    let held: Arc<Mutex<Vec<TcpStream>>> =
        Arc::new(Mutex::new(Vec::with_capacity(args.connections)));
    let errors: Arc<Mutex<(usize, Option<String>)>> = Arc::new(Mutex::new((0, None)));
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..args.connections {
        ticker.tick().await;
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        let (target, held, errors, bar, raw) = (
            target.clone(),
            held.clone(),
            errors.clone(),
            bar.clone(),
            args.raw,
        );
        tasks.spawn(async move {
            match open_one(&target, raw).await {
                Ok(stream) => held.lock().await.push(stream),
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
    tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.0))).await;
    let after = args.server_pid.map(rss_kib).transpose()?;
    let connections = held.lock().await.len();
    let (failed, first_error) = errors.lock().await.clone();
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if connections > 0 => {
            Some(a.saturating_sub(b) as f64 / connections as f64)
        }
        _ => None,
    };
    let report = IdleReport {
        scenario: "idle",
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

async fn open_one(target: &Target, raw: bool) -> Result<TcpStream> {
    let mut stream = wsclient::open(target, Duration::from_secs(10)).await?;
    if !raw {
        wsclient::send_text(&mut stream, br#"{"id":1,"connect":{}}"#).await?;
        let reply = wsclient::read_text(&mut stream).await?;
        if !reply.windows(9).any(|w| w == b"\"connect\"") {
            bail!(
                "unexpected connect reply: {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
    Ok(stream)
}

fn progress(len: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} opening connections {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_table(r: &IdleReport) {
    let kib = |v: Option<u64>| {
        v.map_or("n/a (pass --server-pid)".to_owned(), |v| {
            format!("{:.1} MiB", v as f64 / 1024.0)
        })
    };
    println!("scenario                 idle");
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

/// Resident set size of `pid` in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --server-pid right?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}
