//! The shipped load-balancer configurations and the drain, through real processes: two
//! `kilat serve --engine redis` nodes on one real `redis-server`, behind `deploy/haproxy.cfg`
//! or `deploy/nginx.conf` exactly as shipped except for their ports, under a 20,000
//! open-files limit; WebSocket clients (`kilat-client`) and server API publishes go through the
//! load balancer.
//!
//! - a node killed with SIGKILL: API publishes keep succeeding (the balancer retries them on
//!   the other node), new WebSocket clients connect at the first try, and every subscriber
//!   ends with every publication once and in order (recovery);
//! - a node stopped with SIGTERM (a rolling deploy): the same, and no client sees anything but
//!   the drain's 3000: no failed reconnect attempt, no transport error.
//!
//! Needs `redis-server`, `haproxy` and `nginx` on PATH: skipped with a loud notice without
//! them, a failure under `CI=true`.

mod procs;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use kilat_client::{Client, ClientConfig, Event, SubscribeOptions};
use kilat_testkit::{RedisServer, require};
use procs::{
    Proc, TempDir, WAIT, http, http_full, start_node, start_node_logged, start_shipped_haproxy,
    start_shipped_nginx, wait_until,
};

const SUBSCRIBERS: usize = 6;

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    offsets: Vec<u64>,
    /// `recovered` of each resubscribe after a reconnect.
    recovered: Vec<bool>,
    /// Every disconnect code.
    disconnects: Vec<u16>,
    /// The attempt numbers of reconnects (1 = the first try after a loss).
    attempts: Vec<u32>,
}

/// Connects `SUBSCRIBERS` clients through `lb`, each subscribed to `feed` with recovery, and
/// collects their events until each has seen `total` publications.
async fn subscribers(lb: SocketAddr, total: u64) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut collectors = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut config = ClientConfig::new(format!("ws://{lb}/connection/websocket"));
        config.min_reconnect_delay = Duration::from_millis(50);
        config.max_reconnect_delay = Duration::from_millis(500);
        let (client, mut events) = Client::connect(config)
            .await
            .expect("connect through the load balancer");
        client
            .subscribe("feed", SubscribeOptions::recoverable())
            .await
            .expect("subscribe");
        collectors.push(tokio::spawn(async move {
            let _keep = client;
            let mut seen = Seen::default();
            while (seen.offsets.len() as u64) < total {
                match tokio::time::timeout(WAIT, events.next()).await {
                    Ok(Some(Event::Publication { publication, .. })) => {
                        seen.offsets
                            .push(publication.offset.expect("history keeps offsets"));
                    }
                    Ok(Some(Event::Subscribed {
                        resubscribed: true,
                        recovered,
                        ..
                    })) => seen.recovered.push(recovered),
                    Ok(Some(Event::Disconnected { code, .. })) => seen.disconnects.push(code),
                    Ok(Some(Event::Reconnecting { attempt, .. })) => seen.attempts.push(attempt),
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("subscriber {i}: event stream ended"),
                    Err(_) => panic!(
                        "subscriber {i}: stalled after {} publications: {seen:?}",
                        seen.offsets.len()
                    ),
                }
            }
            seen
        }));
    }
    collectors
}

/// Publishes `{"n": n}` to `feed` through `lb`'s server API; panics unless it was accepted.
async fn publish(lb: SocketAddr, n: u64) {
    let body = format!(r#"{{"channel":"feed","data":{{"n":{n}}},"idempotency_key":"p{n}"}}"#);
    let (status, answer) =
        tokio::task::spawn_blocking(move || http_full(lb, "POST", "/api/publish", &body))
            .await
            .expect("publish task");
    assert_eq!(
        status, 200,
        "publication {n} through the balancer: {answer}"
    );
    assert!(
        answer.contains("\"result\""),
        "publication {n} refused: {answer}"
    );
}

/// A fresh WebSocket client through `lb` must connect at its first try.
async fn fresh_client_connects(lb: SocketAddr, what: &str) {
    let config = ClientConfig::new(format!("ws://{lb}/connection/websocket"));
    let (client, _events) = tokio::time::timeout(WAIT, Client::connect(config))
        .await
        .unwrap_or_else(|_| panic!("{what}: connect timed out"))
        .unwrap_or_else(|error| panic!("{what}: a new client failed to connect: {error}"));
    client.close();
}

/// Every subscriber has every publication once, in order, recovered each time it reconnected;
/// returns how many subscribers had to reconnect.
fn check_everything_delivered(seen: &[Seen], total: u64) -> usize {
    let expected: Vec<u64> = (1..=total).collect();
    for (i, seen) in seen.iter().enumerate() {
        assert_eq!(
            seen.offsets, expected,
            "subscriber {i}: every publication once, in order"
        );
        assert!(
            seen.recovered.iter().all(|r| *r),
            "subscriber {i}: recovery must hold: {seen:?}"
        );
    }
    seen.iter().filter(|s| !s.recovered.is_empty()).count()
}

/// Kills one of two nodes behind `lb` (started by `start_lb`) in the middle of a stream of
/// publications through `lb`, and checks the balancer fails over WebSocket and API traffic.
async fn fails_over_when_a_node_dies(
    test: &str,
    program: &str,
    start_lb: fn(&[SocketAddr; 2], &std::path::Path) -> (Proc, SocketAddr),
) {
    const TOTAL: u64 = 120;
    const KILL_AFTER: u64 = 40;
    if !require(program, "-v", test) {
        return;
    }
    let Some(redis) = RedisServer::start(test) else {
        return;
    };
    let dir = TempDir::new(test);
    let (mut a, node_a) = start_node(&redis.url());
    let (_b, node_b) = start_node(&redis.url());
    let (_lb_proc, lb) = start_lb(&[node_a, node_b], &dir.0);
    let collectors = subscribers(lb, TOTAL).await;
    let on_a = tokio::task::spawn_blocking(move || http_full(node_a, "GET", "/metrics", ""))
        .await
        .expect("metrics")
        .1;
    assert!(
        !on_a.contains("\nkilat_connections 0\n"),
        "the balancer sent some subscribers to node A: {on_a}"
    );

    for n in 1..=TOTAL {
        if n == KILL_AFTER {
            a.0.kill().expect("SIGKILL node A");
            let _ = a.0.wait();
            // New clients while the balancer may still think A is up: retried on B.
            for k in 0..4 {
                fresh_client_connects(lb, &format!("new client {k} after the kill")).await;
            }
        }
        publish(lb, n).await;
    }
    let mut seen = Vec::new();
    for collector in collectors {
        seen.push(collector.await.expect("collector"));
    }
    let moved = check_everything_delivered(&seen, TOTAL);
    assert!(
        moved > 0,
        "subscribers of the killed node failed over: {seen:?}"
    );
}

#[test]
fn shipped_haproxy_config_is_valid_as_shipped() {
    const TEST: &str = "shipped_haproxy_config_is_valid_as_shipped";
    if !require("haproxy", "-v", TEST) {
        return;
    }
    let output = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(procs::shipped("haproxy.cfg"))
        .output()
        .expect("run haproxy -c");
    assert!(
        output.status.success(),
        "haproxy -c -f deploy/haproxy.cfg: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn shipped_nginx_config_is_valid_as_shipped() {
    const TEST: &str = "shipped_nginx_config_is_valid_as_shipped";
    if !require("nginx", "-v", TEST) {
        return;
    }
    let dir = TempDir::new(TEST);
    let output = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(procs::shipped("nginx.conf"))
        .arg("-p")
        .arg(&dir.0)
        .args(["-e", "stderr", "-g"])
        .arg(format!("pid {}/nginx.pid;", dir.0.display()))
        .output()
        .expect("run nginx -t");
    assert!(
        output.status.success(),
        "nginx -t -c deploy/nginx.conf: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_haproxy_fails_over_websocket_and_api_when_a_node_dies() {
    fails_over_when_a_node_dies(
        "shipped_haproxy_fails_over_websocket_and_api_when_a_node_dies",
        "haproxy",
        start_shipped_haproxy,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_nginx_fails_over_websocket_and_api_when_a_node_dies() {
    fails_over_when_a_node_dies(
        "shipped_nginx_fails_over_websocket_and_api_when_a_node_dies",
        "nginx",
        start_shipped_nginx,
    )
    .await;
}

/// Issue 22, item 1: a rolling deploy behind the shipped haproxy config loses nothing and
/// shows clients nothing but the drain's 3000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_behind_shipped_haproxy_drains_without_client_errors_or_loss() {
    const TEST: &str = "sigterm_behind_shipped_haproxy_drains_without_client_errors_or_loss";
    const TOTAL: u64 = 200;
    const TERM_AFTER: u64 = 30;
    if !require("haproxy", "-v", TEST) {
        return;
    }
    let Some(redis) = RedisServer::start(TEST) else {
        return;
    };
    let dir = TempDir::new(TEST);
    let log_a = dir.0.join("node-a.log");
    // The shipped drain settings (drain_grace 5 s, drain_spread 2 s) with the shipped checks.
    let (mut a, node_a) = start_node_logged(&redis.url(), Some(&log_a), &[]);
    let (_b, node_b) = start_node(&redis.url());
    let (_haproxy, lb) = start_shipped_haproxy(&[node_a, node_b], &dir.0);
    let collectors = subscribers(lb, TOTAL).await;

    let started = Instant::now();
    let mut exited = None;
    for n in 1..=TOTAL {
        if n == TERM_AFTER {
            a.sigterm();
            // While A drains (/ready 503, the port still open) new clients reach B: haproxy
            // retries A's 503 there until its checks take A out.
            wait_until("node A draining", || {
                http(node_a, "GET", "/ready", "") == 503
            });
            for k in 0..4 {
                fresh_client_connects(lb, &format!("new client {k} during the drain")).await;
            }
        }
        publish(lb, n).await;
        if n > TERM_AFTER && exited.is_none() {
            exited = a.0.try_wait().expect("try_wait");
            if exited.is_none() {
                // Keep publishing through the whole drain, not faster than a real feed.
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    }
    // The drain ends on its own, bounded by drain_grace + shutdown_timeout.
    let status = match exited {
        Some(status) => status,
        None => {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(status) = a.0.try_wait().expect("try_wait") {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "node A did not stop after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        status.success(),
        "node A exits cleanly after its drain: {status}"
    );

    let mut seen = Vec::new();
    for collector in collectors {
        seen.push(collector.await.expect("collector"));
    }
    let moved = check_everything_delivered(&seen, TOTAL);
    assert!(moved > 0, "some subscribers were on node A: {seen:?}");
    for (i, seen) in seen.iter().enumerate() {
        assert!(
            seen.disconnects.iter().all(|code| *code == 3000),
            "subscriber {i}: only the drain's 3000, no transport error: {seen:?}"
        );
        assert!(
            seen.attempts.iter().all(|attempt| *attempt == 1),
            "subscriber {i}: every reconnect succeeds at the first try: {seen:?}"
        );
    }
    let log = std::fs::read_to_string(&log_a).expect("node A log");
    for phase in ["draining: /ready 503", "disconnecting", "stopped"] {
        assert!(
            log.contains(phase),
            "node A logs the phase {phase:?}: {log}"
        );
    }
    eprintln!(
        "drain behind haproxy: {TOTAL} publications, {moved} of {SUBSCRIBERS} subscribers moved, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
