//! The `fanout` scenario: N subscribers over C channels, P publishers at R messages/s in total,
//! measuring deliveries/s, publish-to-deliver latency, lost and duplicated messages and the
//! server's CPU time per million deliveries.
//!
//! - `args.rs`: the options.
//! - this file: one process's run (prepare, publish, drain) and the workers.
//! - `subscribers.rs`: connecting subscribers and checking what they receive.
//! - `publisher.rs`: the publisher task.
//! - `schedule.rs`: when each publication is due, and latency against that (no coordinated
//!   omission).
//! - `report.rs`: merging the processes' parts and printing the result.

mod args;
mod delta;
mod publisher;
mod report;
mod schedule;
mod subscribers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::client;
use crate::proto::{self, Protocol};
use crate::stats;
use crate::workers::{self, Workers};
pub(crate) use args::FanoutArgs;
use args::{Via, channels};
use publisher::{Publisher, PublisherTask};
use report::Part;
use subscribers::Counters;

pub(crate) async fn run(args: FanoutArgs) -> Result<()> {
    if args.subscribers == 0 || args.publishers == 0 || args.rate <= 0.0 {
        bail!("need at least one subscriber, one publisher and a positive --rate");
    }
    client::configure(&args.client)?;
    if args.publish_via == Via::Http && !matches!(args.protocol, Protocol::Kilat | Protocol::Pusher)
    {
        bail!(
            "--publish-via http is kilat's server API or the Pusher HTTP API; use --publish-via ws for other servers"
        );
    }
    if args.protocol == Protocol::Pusher && args.publish_via != Via::Http {
        bail!(
            "Pusher clients cannot publish to public channels: use --publish-via http (events triggered through the signed Pusher HTTP API)"
        );
    }
    if args.client.encoding == client::WireEncoding::Msgpack
        && (args.protocol != Protocol::Kilat || args.client.transport != client::Transport::Ws)
    {
        bail!(
            "--encoding msgpack is kilat's binary encoding over WebSocket: use --protocol kilat --transport ws"
        );
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
    // Setting up (every subscriber connected and subscribed) is measured on its own: with
    // presence and join/leave on, it is where a big channel's cost shows.
    let setup_cpu0 = args.server_pid.map(stats::cpu_seconds).transpose()?;
    let setup_started = Instant::now();
    let (parts, cpu, rss, setup_s, setup_cpu1) = if args.workers.is_parent() {
        let mut pool = Workers::spawn(args.workers.workers)?;
        let bar = stats::progress(0, "workers connecting", args.json);
        bar.enable_steady_tick(Duration::from_millis(200));
        pool.expect("READY").await?;
        bar.finish_and_clear();
        let setup_s = setup_started.elapsed().as_secs_f64();
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
        let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
        (parts, cpu, rss, setup_s, cpu0)
    } else {
        let prepared = prepare(&args).await?;
        let setup_s = setup_started.elapsed().as_secs_f64();
        let cpu0 = args.server_pid.map(stats::cpu_seconds).transpose()?;
        let bar = publishing_bar(&args);
        let part = prepared.run(&args).await?;
        bar.finish_and_clear();
        let cpu1 = args.server_pid.map(stats::cpu_seconds).transpose()?;
        let rss = args.server_pid.map(stats::rss_kib).transpose()?;
        let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
        (vec![part], cpu, rss, setup_s, cpu0)
    };
    let mut report = report::merge(&args, &parts, cpu, rss)?;
    report.setup_s = setup_s;
    report.setup_server_cpu_s = setup_cpu0.zip(setup_cpu1).map(|(a, b)| b - a);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_table(&report);
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

/// This process's connections, ready for the measured phase.
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
    let counters = Arc::new(Counters::new());
    let (stop, stop_rx) = watch::channel(false);
    let subscribers = subscribers::connect(args, &counters, &stop_rx).await?;
    let publishers = publisher::connect(args).await?;
    Ok(Prepared {
        counters,
        stop,
        readers: subscribers.readers,
        publishers,
        subscribers: subscribers.connected,
        connect_failed: subscribers.failed,
        subscribers_per_channel: subscribers.per_channel,
    })
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
            let feed = args.feed;
            let api_key = args.api_key.clone();
            let pusher = (protocol == Protocol::Pusher).then(|| args.pusher.clone());
            let (done, result) = oneshot::channel();
            results.push(result);
            let stop = self.stop.subscribe();
            // Publishers stay connected (reading) until the drain ends: closing a socket with
            // unread broadcasts resets it, and the server may drop what it had not read yet.
            let task = PublisherTask {
                j,
                protocol,
                prefix,
                nchan,
                rate: per_publisher,
                size,
                feed,
                duration,
                api_key,
                pusher,
                publisher,
                stop,
                done,
            };
            self.readers.spawn(task.run());
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
        let (histogram, histogram_intended) = {
            let l = c.latencies.lock().unwrap_or_else(|p| p.into_inner());
            (stats::encode(&l.sent), stats::encode(&l.intended))
        };
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
            received_bytes: c.received_bytes.load(Ordering::Relaxed),
            start_us,
            last_delivery_us: c.last_delivery_us.load(Ordering::Relaxed),
            histogram,
            histogram_intended,
            client_cpu_s: own_cpu() - cpu0,
        })
    }
}
