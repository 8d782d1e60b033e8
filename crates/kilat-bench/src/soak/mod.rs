//! The `soak` scenario: a long run with churn on every axis at once against one server, which
//! samples the server as it goes and reports whether anything grows.
//!
//! - `args.rs`: the options.
//! - `clients.rs`: the well-behaved clients (connect, subscribe, act, leave, check every
//!   publication) and the run's phases.
//! - `abuse.rs`: the abusive clients (flooder, oversized frames, never reads).
//! - `sample.rs`: sampling /proc and /metrics; the least-squares trends.
//! - `token.rs`: HS256 tokens for the clients that refresh, and a small random generator.
//! - this file: the server (spawned or given), the publisher, the phases, the final checks
//!   and the report.
//!
//! Publications go through the HTTP API, one at a time per channel on one keep-alive
//! connection, each carrying its channel's sequence number (`{"s":N}`); on a fresh channel
//! with history that number is also the publication's offset, which lets a subscriber check
//! every delivery against the position its subscribe reply gave.

mod abuse;
mod args;
mod clients;
mod sample;
mod token;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub(crate) use args::SoakArgs;
use clients::{Phase, Shared, Tally};
use sample::{Sample, Trend};
pub(crate) use token::Rng;

use crate::client::{self, Conn, HttpConn, OP_TEXT, Target};
use crate::proto::{self, Protocol};
use crate::stats;

/// A server the soak started; stopped when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kilat serve --dev` (this executable) on a free loopback port with a token secret;
/// returns it, its WebSocket URL.
async fn spawn_server(secret: &str) -> Result<(Spawned, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free port")?;
    let listen = format!("127.0.0.1:{port}");
    let exe = std::env::current_exe().context("finding the kilat executable")?;
    let child = Command::new(exe)
        .args([
            "serve",
            "--dev",
            "--listen",
            &listen,
            "--token-secret",
            secret,
        ])
        .env("KILAT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kilat serve --dev")?;
    let server = Spawned(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if sample::http_get(&listen, "/health").await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the spawned kilat serve --dev did not answer /health on {listen} within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((server, format!("ws://{listen}/connection/websocket")))
}

/// Sends `cmd` with `id` and reads until its reply (answering pings, ignoring pushes).
async fn request(conn: &mut Conn, id: u64, mut cmd: Value) -> Result<Value> {
    cmd["id"] = json!(id);
    conn.send_text(cmd.to_string().as_bytes()).await?;
    let work = async {
        loop {
            let text = conn.read_text().await?;
            if proto::answer_ping(Protocol::Kilat, OP_TEXT, &text).is_some() {
                conn.send_text(b"{}").await?;
            }
            for line in text.split(|b| *b == b'\n') {
                if let Ok(v) = serde_json::from_slice::<Value>(line)
                    && v["id"].as_u64() == Some(id)
                {
                    return Ok(v);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow::anyhow!("no reply within 10 s"))?
}

/// What the publisher did: the last sequence number per channel and the errors.
#[derive(Debug, Default)]
struct Published {
    last: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Publishes at `rate` round-robin over the channels through the HTTP API until the run phase
/// ends. A publication refused or failed keeps its number for the next try on that channel,
/// so accepted numbers stay contiguous.
async fn publish(
    url: String,
    headers: String,
    prefix: String,
    args: SoakArgs,
    phase: watch::Receiver<Phase>,
) -> Published {
    let (start_at, channels, rate, size) = (args.prefill, args.channels, args.rate, args.size);
    let mut out = Published {
        last: vec![start_at; channels],
        ..Published::default()
    };
    let target = match Target::parse(&url) {
        Ok(t) => t,
        Err(e) => {
            out.errors += 1;
            out.first_error = Some(format!("{e:#}"));
            return out;
        }
    };
    let mut http: Option<HttpConn> = None;
    let pad = "p".repeat(size.saturating_sub(40));
    let start = Instant::now();
    let mut sent = 0u64;
    while *phase.borrow() == Phase::Run {
        let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        if sent >= due {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let c = (sent % channels as u64) as usize;
        let seq = out.last[c] + 1;
        let body = format!(r#"{{"channel":"{prefix}{c}","data":{{"s":{seq},"x":"{pad}"}}}}"#);
        if http.is_none() {
            match HttpConn::connect(&target).await {
                Ok(h) => http = Some(h),
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(format!("publisher: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some(h) = http.as_mut() else { continue };
        let r =
            tokio::time::timeout(Duration::from_secs(10), h.post(&headers, body.as_bytes())).await;
        match r {
            Ok(Ok((200, reply))) if !reply.windows(8).any(|w| w == b"\"error\":") => {
                out.last[c] = seq;
                sent += 1;
            }
            Ok(Ok((status, reply))) => {
                out.errors += 1;
                out.first_error.get_or_insert(format!(
                    "publish: HTTP {status}: {}",
                    String::from_utf8_lossy(&reply)
                ));
            }
            Ok(Err(e)) => {
                // The outcome is unknown: the number may or may not have been used.
                out.errors += 1;
                out.first_error.get_or_insert(format!("publish: {e:#}"));
                http = None;
                sent += 1;
                out.last[c] = seq;
            }
            Err(_) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert("publish: no answer within 10 s".to_owned());
                http = None;
                sent += 1;
                out.last[c] = seq;
            }
        }
    }
    out
}

/// Publishes `count` publications to every channel (numbers 1..=count) through
/// `POST /api/broadcast`, so the channels' history is at its full size before the run.
async fn prefill(addr: &str, headers: &str, prefix: &str, args: &SoakArgs) -> Result<()> {
    let (count, json) = (args.prefill, args.json);
    if count == 0 {
        return Ok(());
    }
    let names: Vec<String> = (0..args.channels).map(|c| format!("{prefix}{c}")).collect();
    // The same payload size as the run's, so history's memory does not change as the run's
    // publications replace these.
    let pad = "p".repeat(args.size.saturating_sub(40));
    let mut http =
        HttpConn::connect(&Target::parse(&format!("http://{addr}/api/broadcast"))?).await?;
    let bar = stats::progress(count, "filling history", json);
    for s in 1..=count {
        let body = json!({"channels": names, "data": {"s": s, "x": pad}}).to_string();
        let (status, reply) = http.post(headers, body.as_bytes()).await?;
        if status != 200 || reply.windows(8).any(|w| w == b"\"error\":") {
            bail!(
                "prefilling history through /api/broadcast: HTTP {status}: {} (give --api-key, or --prefill 0)",
                String::from_utf8_lossy(&reply)
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Sum of presence_stats `num_clients` over the channels (presence entries of the soak).
async fn presence_entries(
    conn: &mut Conn,
    prefix: &str,
    channels: usize,
    id: &mut u64,
) -> Option<f64> {
    let mut sum = 0.0;
    for c in 0..channels {
        *id += 1;
        let v = request(
            conn,
            *id,
            json!({"presence_stats": {"channel": format!("{prefix}{c}")}}),
        )
        .await
        .ok()?;
        sum += v["presence_stats"]["num_clients"].as_f64()?;
    }
    Some(sum)
}

/// The soak's result.
#[derive(Debug, Serialize)]
struct SoakReport {
    scenario: &'static str,
    duration_s: f64,
    warmup_s: f64,
    clients: usize,
    channels: usize,
    rate: f64,
    published: u64,
    publish_errors: u64,
    clients_tally: Tally,
    abuse: abuse::AbuseTally,
    /// Channels where the server's presence differed from the connected clients at the end.
    presence_mismatched_channels: usize,
    presence_detail: Option<String>,
    /// Seconds from the first presence comparison until the server agreed (or until the check
    /// gave up at the end of --settle), and how many comparisons that took. A leave the server
    /// has not processed yet agrees within milliseconds; anything longer is an entry the server
    /// kept.
    presence_check_s: f64,
    presence_checks: u32,
    samples: usize,
    trends: Vec<Trend>,
    assert_flat_pct_per_hour: Option<f64>,
    /// Why the run failed (empty when it passed).
    failures: Vec<String>,
}

pub(crate) async fn run(args: SoakArgs) -> Result<()> {
    if args.clients == 0 || args.channels == 0 || args.rate <= 0.0 || args.duration <= 0.0 {
        bail!("need --clients, --channels, --rate and --duration above 0");
    }
    if args.sample <= 0.0 {
        bail!("--sample must be above 0 seconds");
    }
    client::configure(&client::ClientOpts {
        transport: client::Transport::Ws,
        compression: false,
        ca: None,
        insecure: false,
        encoding: client::WireEncoding::Json,
    })?;
    let nonce = proto::now_us();
    let (spawned, url, pid, secret) = match &args.url {
        Some(url) => (None, url.clone(), args.pid, args.token_secret.clone()),
        None => {
            let secret = args
                .token_secret
                .clone()
                .unwrap_or_else(|| format!("soak-secret-{nonce}"));
            let (s, url) = spawn_server(&secret).await?;
            let pid = s.0.id();
            (Some(s), url, Some(pid), Some(secret))
        }
    };
    let target = proto::target(&url, Protocol::Kilat, client::Transport::Ws)?;
    if target.tls {
        bail!(
            "the soak samples /metrics over plain HTTP: give a ws:// URL (a TLS-terminating proxy in front is fine to test separately)"
        );
    }
    let addr = target.addr.clone();
    sample::http_get(&addr, "/metrics")
        .await
        .with_context(|| format!("reading http://{addr}/metrics (is it a kilat server?)"))?;
    let prefix = format!("soak{}-", nonce % 1_000_000_000);
    let headers = args
        .api_key
        .as_ref()
        .map(|k| format!("Authorization: apikey {k}\r\n"))
        .unwrap_or_default();
    prefill(&addr, &headers, &prefix, &args).await?;
    let (phase_tx, phase) = watch::channel(Phase::Run);
    let shared = Arc::new(Shared {
        target: target.clone(),
        prefix: prefix.clone(),
        channels: args.channels,
        subs: args.subs.max(1),
        life: args.life.max(0.5),
        action_every: args.action_every.max(0.05),
        token_secret: secret,
        phase: phase.clone(),
        finals: OnceLock::new(),
        tally: Mutex::new(Tally::default()),
        members: Mutex::new(vec![HashSet::new(); args.channels]),
        caught_up: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
    });
    let started = Instant::now();
    let mut slots = JoinSet::new();
    for i in 0..args.clients {
        slots.spawn(clients::slot(i, shared.clone()));
    }
    let abuse_tally = Arc::new(Mutex::new(abuse::AbuseTally::default()));
    let mut abusers = JoinSet::new();
    for _ in 0..args.abusive {
        for kind in [
            abuse::Kind::Flooder,
            abuse::Kind::Oversized,
            abuse::Kind::NeverReads,
        ] {
            abusers.spawn(abuse::run(
                kind,
                target.clone(),
                format!("{prefix}0"),
                abuse_tally.clone(),
                phase.clone(),
            ));
        }
    }
    let publisher = tokio::spawn(publish(
        format!("http://{addr}/api/publish"),
        headers,
        prefix.clone(),
        args.clone(),
        phase.clone(),
    ));

    // Sampling, with the progress bar.
    let bar = stats::progress(args.duration.ceil() as u64, "soak (s)", args.json);
    let mut samples: Vec<Sample> = Vec::new();
    let mut sampler = proto::open(&target, Protocol::Kilat, Duration::from_secs(10))
        .await
        .context("connecting the sampler")?;
    let mut sampler_id = 10u64;
    let period = Duration::from_secs_f64(args.sample);
    let mut next = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let mut sample_errors = 0u64;
    while Instant::now() < end {
        let t_s = started.elapsed().as_secs_f64();
        let mut presence =
            presence_entries(&mut sampler, &prefix, args.channels, &mut sampler_id).await;
        if presence.is_none() {
            // The sampler reads only while it asks, so with --sample near the pong timeout a
            // ping can wait too long and the server closes it (3002): a new one asks again.
            if let Ok(fresh) = proto::open(&target, Protocol::Kilat, Duration::from_secs(10)).await
            {
                sampler = fresh;
                presence =
                    presence_entries(&mut sampler, &prefix, args.channels, &mut sampler_id).await;
            }
        }
        match sample::take(t_s, pid, &addr, presence).await {
            Ok(s) => {
                let v = |k: usize| s.values[k].map_or("-".to_owned(), |v| format!("{v:.0}"));
                bar.set_message(format!(
                    "rss {} KiB, fds {}, sessions {}, presence {}",
                    v(0),
                    v(1),
                    v(3),
                    v(6)
                ));
                samples.push(s);
            }
            Err(e) => {
                sample_errors += 1;
                bar.println(format!("sample failed: {e:#}"));
                if pid.is_some_and(|p| std::fs::metadata(format!("/proc/{p}")).is_err()) {
                    bail!("the server (pid {}) is gone", pid.unwrap_or(0));
                }
            }
        }
        bar.set_position(started.elapsed().as_secs());
        next += period;
        tokio::time::sleep_until(next.min(end).into()).await;
    }
    bar.finish_and_clear();

    // Settle: stop churn, publishing and abuse; let clients catch up; compare presence.
    phase_tx.send_replace(Phase::Settle);
    let published = publisher.await.context("the publisher task failed")?;
    shared
        .finals
        .set(published.last.clone())
        .expect("finals are set once");
    // Wake the clients so each checks whether it has everything already.
    phase_tx.send_replace(Phase::Settle);
    while abusers.join_next().await.is_some() {}
    let settle_deadline = Instant::now() + Duration::from_secs_f64(args.settle);
    while shared.caught_up.load(Ordering::SeqCst) < shared.live.load(Ordering::SeqCst)
        && Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut checker = proto::open(&target, Protocol::Kilat, Duration::from_secs(10))
        .await
        .context("connecting the presence checker")?;
    let mut mismatched;
    let mut detail;
    let mut id = 100u64;
    let check_started = Instant::now();
    let mut checks = 0u32;
    loop {
        checks += 1;
        mismatched = 0;
        detail = None;
        let members = shared
            .members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (c, expected) in members.iter().enumerate() {
            id += 1;
            let v = request(
                &mut checker,
                id,
                json!({"presence": {"channel": format!("{prefix}{c}")}}),
            )
            .await?;
            let got: HashSet<String> = v["presence"]["clients"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            if &got != expected {
                mismatched += 1;
                detail.get_or_insert(format!(
                    "channel {c}: server has {} entries, {} clients are subscribed ({} not connected, {} missing)",
                    got.len(),
                    expected.len(),
                    got.difference(expected).count(),
                    expected.difference(&got).count()
                ));
            }
        }
        if mismatched == 0 || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase_tx.send_replace(Phase::End);
    while slots.join_next().await.is_some() {}
    drop(spawned);

    let tally = shared
        .tally
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let abuse = abuse_tally
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let trends = sample::trends(&samples, args.warmup());
    let mut failures = Vec::new();
    let mut fail = |cond: bool, what: String| {
        if cond {
            failures.push(what);
        }
    };
    fail(tally.lost > 0, format!("{} publications lost", tally.lost));
    fail(
        tally.duplicated > 0,
        format!("{} publications duplicated", tally.duplicated),
    );
    fail(
        tally.offset_mismatches > 0,
        format!(
            "{} publications whose number is not their offset",
            tally.offset_mismatches
        ),
    );
    fail(
        published.errors > 0,
        format!(
            "{} publish errors ({})",
            published.errors,
            published.first_error.as_deref().unwrap_or("")
        ),
    );
    fail(
        tally.command_errors > 0 || tally.bad_history_pages > 0,
        format!(
            "{} command errors, {} bad history pages",
            tally.command_errors, tally.bad_history_pages
        ),
    );
    fail(
        tally.unexpected_disconnects > 0,
        format!(
            "{} well-behaved clients disconnected by the server",
            tally.unexpected_disconnects
        ),
    );
    fail(
        mismatched > 0,
        format!("presence differs from the connected clients on {mismatched} channel(s)"),
    );
    fail(tally.delivered == 0, "nothing was delivered".to_owned());
    fail(
        samples.len() < 3 || sample_errors > samples.len() as u64 / 10,
        format!("{} samples taken, {sample_errors} failed", samples.len()),
    );
    if let Some(limit) = args.assert_flat {
        // Queued bytes are the abusive never-reader's queue, which the server lets fill up to
        // its limit and cuts off: reported, not asserted.
        for t in trends.iter().filter(|t| t.name != "queued_bytes") {
            fail(
                t.grows(limit),
                format!(
                    "{} grows {:.1} % per hour after the warm-up (limit {limit} %, t = {:.1})",
                    t.name, t.pct_per_hour, t.t
                ),
            );
        }
    }
    if let Some(path) = &args.samples {
        std::fs::write(path, sample::csv(&samples))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let report = SoakReport {
        scenario: "soak",
        duration_s: args.duration,
        warmup_s: args.warmup(),
        clients: args.clients,
        channels: args.channels,
        rate: args.rate,
        published: published.last.iter().sum(),
        publish_errors: published.errors,
        clients_tally: tally,
        abuse,
        presence_mismatched_channels: mismatched,
        presence_detail: detail,
        presence_check_s: check_started.elapsed().as_secs_f64(),
        presence_checks: checks,
        samples: samples.len(),
        trends,
        assert_flat_pct_per_hour: args.assert_flat,
        failures,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if !report.failures.is_empty() {
        bail!("soak failed: {}", report.failures.join("; "));
    }
    Ok(())
}

fn print_table(r: &SoakReport) {
    let t = &r.clients_tally;
    let a = &r.abuse;
    let mut rows = vec![
        (
            "soak",
            format!(
                "{} s ({} s warm-up), {} clients, {} channels, {} pub/s",
                r.duration_s, r.warmup_s, r.clients, r.channels, r.rate
            ),
        ),
        (
            "published",
            format!("{} ({} errors)", r.published, r.publish_errors),
        ),
        (
            "delivered",
            format!(
                "{}, lost {}, duplicated {}",
                t.delivered, t.lost, t.duplicated
            ),
        ),
        (
            "clients",
            format!(
                "{} connects ({} with a token), left {} with a close frame and {} without, {} errors",
                t.connects,
                t.token_clients,
                t.leaves_with_close_frame,
                t.leaves_without_close_frame,
                t.connect_errors
            ),
        ),
        (
            "commands",
            format!(
                "{} subscribes, {} unsubscribes, {} presence, {} presence_stats, {} history, {} refreshes; {} errors",
                t.subscribes,
                t.unsubscribes,
                t.presence_queries,
                t.presence_stats_queries,
                t.history_reads,
                t.token_refreshes,
                t.command_errors
            ),
        ),
        (
            "abusive clients",
            format!(
                "flooder: {} connections, {} commands, {} refused, {} cut off; oversized: {} sent, {} closed; never-reader: {} connections, {} cut off",
                a.flood_connections,
                a.flood_commands,
                a.flood_refused,
                a.flood_disconnected,
                a.oversized_sent,
                a.oversized_closed,
                a.slow_connections,
                a.slow_cut_off
            ),
        ),
        (
            "presence",
            match &r.presence_detail {
                None => format!(
                    "equals the connected clients on every channel ({} comparison(s), {:.2} s)",
                    r.presence_checks, r.presence_check_s
                ),
                Some(d) => format!(
                    "{} channel(s) differ after {} comparison(s) over {:.2} s; {d}",
                    r.presence_mismatched_channels, r.presence_checks, r.presence_check_s
                ),
            },
        ),
    ];
    rows.push(("samples", r.samples.to_string()));
    let trend_rows: Vec<(String, String)> = r
        .trends
        .iter()
        .map(|t| {
            (
                format!("  {}", t.name),
                format!(
                    "mean {:.0} (min {:.0}, max {:.0}), slope {:+.1} % per hour (t {:.1})",
                    t.mean, t.min, t.max, t.pct_per_hour, t.t
                ),
            )
        })
        .collect();
    let mut all: Vec<(&str, String)> = rows;
    all.push(("trend after warm-up", String::new()));
    for (k, v) in &trend_rows {
        all.push((k.as_str(), v.clone()));
    }
    all.push((
        "result",
        if r.failures.is_empty() {
            "pass".to_owned()
        } else {
            format!("FAIL: {}", r.failures.join("; "))
        },
    ));
    stats::table(&all);
}
