//! The `echo` scenario: round-trip latency against a raw echo endpoint (`kilat echo`, or any
//! server that sends every text message back to its sender).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use tokio::task::JoinSet;

use super::client::{self, ClientOpts, OP_BINARY, OP_TEXT, Target, Transport};
use super::proto;
use super::stats::{self, Latency};

/// Options of the echo scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct EchoArgs {
    /// WebSocket URL of the echo server (`kilat echo` listens on 127.0.0.1:9001 by default).
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    url: String,
    /// Connections, each with one message in flight at a time.
    #[arg(long, short = 'n', default_value_t = 10)]
    connections: usize,
    /// Message size in bytes.
    #[arg(long, short = 's', default_value_t = 100)]
    size: usize,
    /// Seconds to run.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Stop each connection after this many round trips (0 = no limit, only --duration).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    #[command(flatten)]
    client: ClientOpts,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What the echo scenario measured.
#[derive(Debug, Serialize)]
struct EchoReport {
    scenario: &'static str,
    connections: usize,
    failed: u64,
    size: usize,
    seconds: f64,
    round_trips: u64,
    mismatched: u64,
    round_trips_per_s: f64,
    latency: Latency,
    first_error: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    round_trips: u64,
    mismatched: u64,
    failed: u64,
    first_error: Option<String>,
}

pub(crate) async fn run(args: EchoArgs) -> Result<()> {
    if args.client.transport != Transport::Ws {
        bail!("echo measures WebSocket round trips; --transport sse has no way back");
    }
    client::configure(&args.client)?;
    let target = Arc::new(Target::parse(&args.url)?);
    let histogram = Arc::new(Mutex::new(stats::histogram()));
    let shared = Arc::new(Mutex::new(Shared::default()));
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let bar = stats::progress(
        (args.duration * 10.0) as u64,
        "echoing (tenths of s)",
        args.json,
    );
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.connections {
        let (target, histogram, shared) = (target.clone(), histogram.clone(), shared.clone());
        let (size, limit) = (args.size, args.messages);
        tasks.spawn(async move {
            let r = async {
                let mut conn = client::open(&target, Duration::from_secs(10)).await?;
                let mut local = stats::histogram();
                let mut n = 0u64;
                let mut mismatched = 0u64;
                let t0 = Instant::now();
                while t0.elapsed() < duration && (limit == 0 || n < limit) {
                    n += 1;
                    let now = proto::now_us();
                    let msg = proto::payload(i as u32, n, now, now, size);
                    let sent = Instant::now();
                    conn.send_text(msg.as_bytes()).await?;
                    let (op, back) = tokio::time::timeout(Duration::from_secs(10), conn.next())
                        .await
                        .map_err(|_| anyhow::anyhow!("no echo within 10 s"))??;
                    local.saturating_record((sent.elapsed().as_micros() as u64).max(1));
                    if !(op == OP_TEXT || op == OP_BINARY) || back != msg.as_bytes() {
                        mismatched += 1;
                    }
                }
                Ok::<_, anyhow::Error>((local, n, mismatched))
            }
            .await;
            match r {
                Ok((local, n, mismatched)) => {
                    let _ = histogram
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(&local);
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.round_trips += n;
                    s.mismatched += mismatched;
                }
                Err(e) => {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.failed += 1;
                    s.first_error.get_or_insert(format!("{e:#}"));
                }
            }
        });
    }
    let ticking = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.inc(1);
            }
        })
    };
    while tasks.join_next().await.is_some() {}
    ticking.abort();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let s = std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner()));
    let latency = Latency::of(&histogram.lock().unwrap_or_else(|p| p.into_inner()));
    let report = EchoReport {
        scenario: "echo",
        connections: args.connections,
        failed: s.failed,
        size: args.size,
        seconds,
        round_trips: s.round_trips,
        mismatched: s.mismatched,
        round_trips_per_s: if seconds > 0.0 {
            s.round_trips as f64 / seconds
        } else {
            0.0
        },
        latency,
        first_error: s.first_error,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mut rows = vec![
            ("scenario", "echo".to_owned()),
            (
                "connections",
                format!("{} ({} failed)", report.connections, report.failed),
            ),
            (
                "round trips",
                format!(
                    "{} in {:.2} s ({} mismatched)",
                    report.round_trips, report.seconds, report.mismatched
                ),
            ),
            ("round trips/s", format!("{:.0}", report.round_trips_per_s)),
            ("round-trip latency", report.latency.row()),
        ];
        if let Some(e) = &report.first_error {
            rows.push(("first error", e.clone()));
        }
        stats::table(&rows);
    }
    if report.round_trips == 0 {
        bail!(
            "no round trip completed: {}",
            report.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(())
}
