//! The `reconnect` scenario: clients that stay subscribed with recovery through connection
//! losses, the client side of the reconnect storm (bench/storm.sh).
//!
//! Each client connects to --url, subscribes to its channel with `recover: true` and follows
//! it, checking every publication's offset (one more than the last, or it counts a loss or a
//! duplicate). When the connection is lost it reconnects to --reconnect-url (a load balancer)
//! with a growing, jittered backoff, and resubscribes with the last offset and epoch it saw;
//! the subscribe reply must say `recovered` and carry what it missed. The report has when the
//! first client lost its connection and when the last one had recovered (Unix microseconds, so
//! several processes' reports combine), how many reconnect attempts were refused, and the
//! losses and duplicates, with every client's final offset checked against the channel's top
//! (read from history at the end).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{self, Conn, OP_TEXT, Target};
use crate::proto;
use crate::soak::Rng;

/// Options of the reconnect scenario.
#[derive(Debug, Args)]
pub(crate) struct ReconnectArgs {
    /// Where clients connect first (e.g. one node directly).
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// Where clients reconnect after a loss (e.g. the load balancer); default --url.
    #[arg(long, value_name = "URL")]
    reconnect_url: Option<String>,
    /// Clients in this process (each holds one socket; stay under `ulimit -n`).
    #[arg(short = 'n', long, default_value_t = 1000)]
    clients: usize,
    /// Number of this process's first client, so several processes spread over the channels.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Channels; client i follows PREFIX(i mod channels).
    #[arg(short = 'c', long, default_value_t = 100)]
    channels: usize,
    #[arg(long, default_value = "storm")]
    channel_prefix: String,
    /// New connections per second while connecting the first time.
    #[arg(long, default_value_t = 1000)]
    connect_rate: u32,
    /// Most first-time handshakes in flight.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to follow after every client is connected.
    #[arg(short = 'd', long, default_value_t = 60.0)]
    duration: f64,
    /// Smallest reconnect delay in ms; the n-th failed attempt waits a random time up to
    /// min(--max-delay-ms, this x 2^n).
    #[arg(long, default_value_t = 200)]
    min_delay_ms: u64,
    #[arg(long, default_value_t = 5000)]
    max_delay_ms: u64,
    /// Created once every client is connected and subscribed (for scripts).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What this process's clients saw.
#[derive(Debug, Default, Clone, Serialize)]
struct Report {
    clients: usize,
    connected: usize,
    connect_failed: usize,
    /// Clients that lost their connection at least once.
    disconnected: usize,
    /// ... and came back with a recovered subscription.
    recovered: usize,
    /// Resubscribes the server answered with `recovered: false` (history could not fill the
    /// gap).
    not_recovered: u64,
    /// Reconnect attempts that failed (refused upgrade, 503, timeout) before one succeeded.
    failed_attempts: u64,
    /// The first refusal's text.
    first_refusal: Option<String>,
    /// Unix µs of the first connection loss and of the last recovery.
    first_loss_us: Option<u64>,
    last_recovery_us: Option<u64>,
    /// The slowest single client: µs from its loss to its recovery.
    max_client_recovery_us: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    first_error: Option<String>,
}

/// One client's following state.
struct Follow {
    offset: u64,
    epoch: String,
}

fn parse_lines(text: &[u8]) -> Vec<Value> {
    text.split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// Connects, subscribes (recovering from `from` when given) and returns the connection, the
/// subscribe reply, and publications that arrived before it.
async fn join(
    target: &Target,
    channel: &str,
    from: Option<&Follow>,
) -> Result<(Conn, Value, Vec<Value>)> {
    let timeout = Duration::from_secs(10);
    let mut conn = proto::open(target, proto::Protocol::Kilat, timeout).await?;
    let mut sub = json!({"id": 2, "subscribe": {"channel": channel, "recover": true}});
    if let Some(f) = from {
        sub["subscribe"]["offset"] = json!(f.offset);
        sub["subscribe"]["epoch"] = json!(f.epoch);
    }
    conn.send_text(sub.to_string().as_bytes()).await?;
    let mut early = Vec::new();
    let reply = tokio::time::timeout(timeout, async {
        loop {
            let text = conn.read_text().await?;
            if text == b"{}" {
                conn.send_text(b"{}").await?;
                continue;
            }
            for v in parse_lines(&text) {
                if v["id"].as_u64() == Some(2) {
                    return Ok::<Value, anyhow::Error>(v);
                }
                if v["push"]["pub"].is_object() {
                    early.push(v["push"]["pub"].clone());
                }
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no subscribe reply within 10 s"))??;
    if let Some(e) = reply.get("error") {
        bail!("subscribe refused: {e}");
    }
    Ok((conn, reply, early))
}

/// Applies one publication to `f`, counting into `r`.
fn apply(r: &Mutex<Report>, f: &mut Follow, p: &Value) {
    let Some(off) = p["offset"].as_u64() else {
        return;
    };
    let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
    if off <= f.offset {
        r.duplicated += 1;
        return;
    }
    if off > f.offset + 1 {
        r.lost += off - f.offset - 1;
        r.first_error
            .get_or_insert_with(|| format!("expected offset {} and got {off}", f.offset + 1));
    }
    r.delivered += 1;
    f.offset = off;
}

/// Takes a subscribe reply's position and recovered publications.
fn position(r: &Mutex<Report>, f: &mut Follow, reply: &Value, early: &[Value]) {
    let s = &reply["subscribe"];
    let epoch = s["epoch"].as_str().unwrap_or_default().to_owned();
    if f.epoch.is_empty() {
        // The first subscribe: follow from the current top.
        f.epoch = epoch;
        f.offset = s["offset"].as_u64().unwrap_or(0);
    } else {
        for p in s["publications"].as_array().into_iter().flatten() {
            apply(r, f, p);
        }
    }
    for p in early {
        if p["offset"].as_u64().unwrap_or(0) > f.offset {
            apply(r, f, p);
        }
    }
}

pub(crate) async fn run(args: ReconnectArgs) -> Result<()> {
    client::configure(&client::ClientOpts {
        transport: client::Transport::Ws,
        compression: false,
        ca: None,
        insecure: false,
        encoding: client::WireEncoding::Json,
    })?;
    let first = Arc::new(proto::target(
        &args.url,
        proto::Protocol::Kilat,
        client::Transport::Ws,
    )?);
    let again = Arc::new(proto::target(
        args.reconnect_url.as_deref().unwrap_or(&args.url),
        proto::Protocol::Kilat,
        client::Transport::Ws,
    )?);
    let report = Arc::new(Mutex::new(Report {
        clients: args.clients,
        ..Report::default()
    }));
    let (stop_tx, stop) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(args.connect_rate.max(1)),
    ));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut tasks = JoinSet::new();
    for k in 0..args.clients {
        ticker.tick().await;
        let i = args.first + k;
        let channel = format!("{}{}", args.channel_prefix, i % args.channels.max(1));
        let (first, again, report, gate, ready, mut stop) = (
            first.clone(),
            again.clone(),
            report.clone(),
            gate.clone(),
            ready_tx.clone(),
            stop.clone(),
        );
        let (min_ms, max_ms) = (args.min_delay_ms.max(1), args.max_delay_ms.max(1));
        tasks.spawn(async move {
            let mut rng = Rng::new(i as u64 + proto::now_us());
            // The first join retries a refusal (503 past the node's `server.max_handshakes`)
            // with the same jittered backoff, a few times, like a real client would.
            let mut joined;
            let mut attempt = 0u32;
            loop {
                let permit = gate.clone().acquire_owned().await;
                joined = join(&first, &channel, None).await;
                drop(permit);
                if joined.is_ok() || attempt >= 20 {
                    break;
                }
                let cap = max_ms.min(min_ms.saturating_mul(1 << attempt.min(16)));
                let wait = min_ms + rng.below((cap.saturating_sub(min_ms) + 1) as usize) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                attempt += 1;
            }
            let (mut conn, reply, early) = match joined {
                Ok(j) => j,
                Err(e) => {
                    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                    r.connect_failed += 1;
                    r.first_error.get_or_insert(format!("{e:#}"));
                    let _ = ready.send(false);
                    return None;
                }
            };
            let mut f = Follow {
                offset: 0,
                epoch: String::new(),
            };
            position(&report, &mut f, &reply, &early);
            let _ = ready.send(true);
            let mut lost_once = false;
            loop {
                // Follow until the connection is lost or the run ends.
                let lost = loop {
                    tokio::select! {
                        r = conn.next() => match r {
                            Ok((OP_TEXT, text)) => {
                                if text == b"{}" {
                                    if conn.send_text(b"{}").await.is_err() {
                                        break true;
                                    }
                                    continue;
                                }
                                for v in parse_lines(text) {
                                    if v["push"]["pub"].is_object() {
                                        apply(&report, &mut f, &v["push"]["pub"]);
                                    }
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break true,
                        },
                        _ = stop.changed() => break false,
                    }
                };
                if !lost {
                    return Some((channel, f));
                }
                let lost_at = proto::now_us();
                if !lost_once {
                    lost_once = true;
                    let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                    r.disconnected += 1;
                    r.first_loss_us = Some(r.first_loss_us.map_or(lost_at, |t| t.min(lost_at)));
                }
                let mut attempt = 0u32;
                loop {
                    let cap = max_ms.min(min_ms.saturating_mul(1 << attempt.min(16)));
                    let wait = min_ms + rng.below((cap.saturating_sub(min_ms) + 1) as usize) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    if *stop.borrow() {
                        return Some((channel, f));
                    }
                    match join(&again, &channel, Some(&f)).await {
                        Ok((c, reply, early)) => {
                            conn = c;
                            let recovered = reply["subscribe"]["recovered"].as_bool() == Some(true);
                            position(&report, &mut f, &reply, &early);
                            let now = proto::now_us();
                            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                            if recovered {
                                r.recovered += 1;
                            } else {
                                r.not_recovered += 1;
                            }
                            r.last_recovery_us =
                                Some(r.last_recovery_us.map_or(now, |t| t.max(now)));
                            r.max_client_recovery_us = r.max_client_recovery_us.max(now - lost_at);
                            break;
                        }
                        Err(e) => {
                            attempt += 1;
                            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                            r.failed_attempts += 1;
                            r.first_refusal.get_or_insert(format!("{e:#}"));
                        }
                    }
                }
            }
        });
    }
    drop(ready_tx);
    // Each client says once whether it joined (then keeps its sender while it follows).
    let mut connected = 0;
    for _ in 0..args.clients {
        connected += usize::from(ready_rx.recv().await.unwrap_or(false));
    }
    report.lock().unwrap_or_else(|e| e.into_inner()).connected = connected;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{connected}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "{connected} of {} clients connected; following",
        args.clients
    );
    tokio::time::sleep(Duration::from_secs_f64(args.duration.max(0.0))).await;
    let _ = stop_tx.send(true);
    let mut finals = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(f)) = done {
            finals.push(f);
        }
    }
    // Every client must be at its channel's top (publishing has stopped by now).
    let mut tops = std::collections::HashMap::new();
    let mut conn = proto::open(&again, proto::Protocol::Kilat, Duration::from_secs(10)).await?;
    let mut id = 10u64;
    let mut r = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (channel, f) in &finals {
        if !tops.contains_key(channel) {
            id += 1;
            let cmd = json!({"id": id, "history": {"channel": channel, "limit": 0}});
            conn.send_text(cmd.to_string().as_bytes()).await?;
            let top = loop {
                let text = conn.read_text().await?;
                if let Some(v) = parse_lines(&text)
                    .into_iter()
                    .find(|v| v["id"].as_u64() == Some(id))
                {
                    break v["history"]["offset"].as_u64().unwrap_or(0);
                }
            };
            tops.insert(channel.clone(), top);
        }
        let top = tops[channel];
        if f.offset < top {
            r.lost += top - f.offset;
            r.first_error
                .get_or_insert_with(|| format!("{channel}: ended at {} of {top}", f.offset));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{r:#?}");
    }
    Ok(())
}
