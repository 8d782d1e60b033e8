//! The fanout report: the parts of every process merged into one result, printed as a table
//! or JSON.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::args::{FanoutArgs, Via, channels};
use crate::client::{Transport, WireEncoding};
use crate::proto::Protocol;
use crate::stats::{self, Latency};

/// One process's part of the measurement.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Part {
    pub(super) subscribers: u64,
    pub(super) connect_failed: u64,
    pub(super) first_error: Option<String>,
    pub(super) published_per_channel: Vec<u64>,
    pub(super) subscribers_per_channel: Vec<u64>,
    pub(super) publish_errors: u64,
    pub(super) delivered: u64,
    pub(super) duplicates: u64,
    pub(super) gaps: u64,
    pub(super) disconnects: u64,
    pub(super) start_us: u64,
    pub(super) last_delivery_us: u64,
    pub(super) histogram: String,
    /// Latency against each publication's intended send time (the schedule).
    #[serde(default)]
    pub(super) histogram_intended: String,
    pub(super) client_cpu_s: f64,
    #[serde(default)]
    pub(super) compressed: u64,
    #[serde(default)]
    pub(super) received_bytes: u64,
}

/// What the fanout scenario measured.
#[derive(Debug, Serialize)]
pub(super) struct FanoutReport {
    scenario: &'static str,
    protocol: Protocol,
    publish_via: &'static str,
    workers: usize,
    pub(super) subscribers: u64,
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
    /// Subscribers asked for `delta: "fossil"` (`--delta`).
    delta: bool,
    /// The subscribers' protocol encoding (`--encoding`).
    encoding: WireEncoding,
    /// Bytes the subscribers read from their sockets, set-up included.
    received_bytes: u64,
    /// `received_bytes` per delivery.
    bytes_per_delivery: f64,
    deliveries_per_s: f64,
    expected_deliveries_per_s: f64,
    /// Publish-to-deliver latency from the moment the publication was actually sent.
    latency: Latency,
    /// Latency from the moment the publication was due by the schedule (--rate): a publisher
    /// that stalled (a slow server write, a full socket) delays what it sends next, which the
    /// first measure hides and this one shows (no coordinated omission).
    latency_vs_schedule: Latency,
    /// Seconds until every subscriber was connected and subscribed.
    pub(super) setup_s: f64,
    /// Server CPU seconds spent meanwhile (with `--server-pid`).
    pub(super) setup_server_cpu_s: Option<f64>,
    server_cpu_s: Option<f64>,
    server_cpu_s_per_million_deliveries: Option<f64>,
    server_rss_kib: Option<u64>,
    /// CPU seconds the bench processes themselves used (they share the machine with the server).
    bench_cpu_s: f64,
    pub(super) first_error: Option<String>,
}

/// Adds up the parts of every process (one without `--workers`).
pub(super) fn merge(
    args: &FanoutArgs,
    parts: &[Part],
    cpu: Option<f64>,
    rss: Option<u64>,
) -> Result<FanoutReport> {
    let nchan = channels(args);
    let mut published = vec![0u64; nchan];
    let mut subs = vec![0u64; nchan];
    let mut h = stats::histogram();
    let mut hi = stats::histogram();
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
        delta: args.delta,
        encoding: args.client.encoding,
        received_bytes: 0,
        bytes_per_delivery: 0.0,
        deliveries_per_s: 0.0,
        expected_deliveries_per_s: 0.0,
        latency: Latency::default(),
        latency_vs_schedule: Latency::default(),
        setup_s: 0.0,
        setup_server_cpu_s: None,
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
        r.received_bytes += p.received_bytes;
        r.bench_cpu_s += p.client_cpu_s;
        if r.first_error.is_none() {
            r.first_error.clone_from(&p.first_error);
        }
        start = start.min(p.start_us);
        last = last.max(p.last_delivery_us);
        h.add(stats::decode(&p.histogram)?)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        if !p.histogram_intended.is_empty() {
            hi.add(stats::decode(&p.histogram_intended)?)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        }
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
    r.latency_vs_schedule = Latency::of(&hi);
    if r.delivered > 0 {
        r.bytes_per_delivery = r.received_bytes as f64 / r.delivered as f64;
    }
    if let Some(cpu) = cpu
        && r.delivered > 0
    {
        r.server_cpu_s_per_million_deliveries = Some(cpu / (r.delivered as f64 / 1e6));
    }
    Ok(r)
}

/// Prints the report as a table.
pub(super) fn print_table(r: &FanoutReport) {
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
        ("latency (from send)", r.latency.row()),
        ("latency (from schedule)", r.latency_vs_schedule.row()),
        (
            "received",
            format!(
                "{:.1} MiB, {:.0} B per delivery ({:?}{})",
                r.received_bytes as f64 / 1048576.0,
                r.bytes_per_delivery,
                r.encoding,
                if r.delta { ", delta: fossil" } else { "" }
            ),
        ),
    ];
    rows.push((
        "setup",
        match r.setup_server_cpu_s {
            Some(cpu) => format!("{:.2} s, server CPU {cpu:.2} s", r.setup_s),
            None => format!("{:.2} s", r.setup_s),
        },
    ));
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
