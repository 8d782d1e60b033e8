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
//!   the drain's 3000: no failed reconnect attempt, no transport error; the JavaScript SDK's
//!   clients (`tests/js/sdk_clients.mjs`, under node) stay on WebSocket, with no error event;
//! - both nodes restarted one after the other: nothing lost.
//!
//! Needs `redis-server`, `haproxy`, `nginx`, `node` and `sdk/js/node_modules` (npm ci):
//! skipped with a loud notice without them, a failure under `CI=true`.

mod procs;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use kilat_client::{Client, ClientConfig, Event, Events, SubscribeOptions};
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

/// Connects `SUBSCRIBERS` clients through `lb`, each subscribed to `feed` with recovery.
/// Their events queue up (the client's event channel is unbounded) until [`collect`] reads
/// them.
async fn connect_subscribers(lb: SocketAddr) -> Vec<(Client, Events)> {
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut config = ClientConfig::new(format!("ws://{lb}/connection/websocket"));
        config.min_reconnect_delay = Duration::from_millis(50);
        config.max_reconnect_delay = Duration::from_millis(500);
        let (client, events) = Client::connect(config)
            .await
            .expect("connect through the load balancer");
        client
            .subscribe("feed", SubscribeOptions::recoverable())
            .await
            .expect("subscribe");
        subscribers.push((client, events));
    }
    subscribers
}

/// Reads one subscriber's events until it has seen `total` publications.
async fn collect(i: usize, client: Client, mut events: Events, total: u64) -> Seen {
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
}

/// [`connect_subscribers`], each collecting `total` publications on its own task.
async fn subscribers(lb: SocketAddr, total: u64) -> Vec<tokio::task::JoinHandle<Seen>> {
    connect_subscribers(lb)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (client, events))| tokio::spawn(collect(i, client, events, total)))
        .collect()
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

/// Clients of the JavaScript SDK (`tests/js/sdk_clients.mjs`) in a node process, their event
/// lines read on a thread.
struct JsClients {
    _node: Proc,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
    clients: usize,
}

const JS_CLIENTS: usize = 4;

/// Starts [`JS_CLIENTS`] SDK clients through `lb` and waits until each is subscribed. `None`,
/// with a loud notice, when node or the SDK's `ws` package is missing (a failure under CI).
fn start_js_clients(lb: SocketAddr, total: u64, test: &str) -> Option<JsClients> {
    if !require("node", "--version", test) {
        return None;
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if !manifest.join("../../sdk/js/node_modules/ws").exists() {
        let msg = format!(
            "sdk/js/node_modules is not installed (cd sdk/js && npm ci): SKIPPING the \
             JavaScript SDK clients of {test}"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg}; CI=true requires them"
        );
        kilat_testkit::warn_loudly(&msg);
        return None;
    }
    let mut child = Command::new("node")
        .arg(manifest.join("tests/js/sdk_clients.mjs"))
        .arg(format!("ws://{lb}/connection/websocket"))
        .arg(JS_CLIENTS.to_string())
        .arg(total.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("sdk_clients.mjs printed {line:?}: {e}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    let js = JsClients {
        _node: Proc(child),
        lines,
        clients: JS_CLIENTS,
    };
    let mut subscribed = 0;
    while subscribed < js.clients {
        let line = js
            .lines
            .recv_timeout(WAIT)
            .expect("SDK clients subscribe in time");
        assert_ne!(
            line["event"], "error",
            "SDK client error while starting: {line}"
        );
        if line["event"] == "subscribed" {
            subscribed += 1;
        }
    }
    Some(js)
}

/// Reads the SDK clients' events until each is done, and checks what the issue asked for: no
/// client error, no fallback from WebSocket, every publication once and in order, recovery.
/// Returns how many of them moved.
fn check_js_clients(js: &JsClients, total: u64) -> usize {
    let mut done = 0;
    let mut lost = std::collections::BTreeSet::new();
    let expected: Vec<u64> = (1..=total).collect();
    while done < js.clients {
        let line = js
            .lines
            .recv_timeout(WAIT)
            .expect("SDK clients finish in time");
        let i = line["i"].as_u64().expect("client index");
        match line["event"].as_str().expect("event") {
            "connected" => assert_eq!(
                line["transport"], "websocket",
                "SDK client {i} fell back from WebSocket: {line}"
            ),
            "connecting" => {
                assert_eq!(
                    line["code"], 3000,
                    "SDK client {i}: only the drain's 3000: {line}"
                );
                lost.insert(i);
            }
            "subscribed" => assert!(
                line["recovered"] == true || line["wasRecovering"] == false,
                "SDK client {i} did not recover: {line}"
            ),
            "error" => panic!("SDK client {i} reported an error: {line}"),
            "done" => {
                let offsets: Vec<u64> = line["offsets"]
                    .as_array()
                    .expect("offsets")
                    .iter()
                    .map(|o| o.as_u64().expect("offset"))
                    .collect();
                assert_eq!(
                    offsets, expected,
                    "SDK client {i}: every publication once, in order"
                );
                done += 1;
            }
            other => panic!("unknown SDK client event {other}: {line}"),
        }
    }
    lost.len()
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
    // The default drain settings (drain_grace 5 s, drain_spread 2 s) with the shipped checks.
    let (mut a, node_a) = start_node_logged(&redis.url(), Some(&log_a), &[]);
    let (_b, node_b) = start_node(&redis.url());
    let (_haproxy, lb) = start_shipped_haproxy(&[node_a, node_b], &dir.0);
    let collectors = subscribers(lb, TOTAL).await;
    let js = tokio::task::spawn_blocking(move || start_js_clients(lb, TOTAL, TEST))
        .await
        .expect("start SDK clients");

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
            // One reconnect attempt per disconnect: none failed. (The attempt number itself
            // keeps counting across moves closer together than the client's backoff reset.)
            seen.attempts.len() == seen.disconnects.len(),
            "subscriber {i}: every reconnect succeeds at the first try: {seen:?}"
        );
    }
    if let Some(js) = js {
        let js_moved = tokio::task::spawn_blocking(move || check_js_clients(&js, TOTAL))
            .await
            .expect("check SDK clients");
        assert!(js_moved > 0, "some SDK clients were on node A");
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

/// Issue 18's zero-loss rolling deploy on the shipped haproxy config: both nodes are restarted
/// one after the other (SIGTERM, wait for the exit, start again on the same address, wait until
/// haproxy has it back) while publications flow through haproxy. Every subscriber moves at
/// least once and ends with every publication once and in order, seeing only 3000s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_of_every_node_behind_shipped_haproxy_loses_nothing() {
    const TEST: &str = "rolling_deploy_of_every_node_behind_shipped_haproxy_loses_nothing";
    if !require("haproxy", "-v", TEST) {
        return;
    }
    let Some(redis) = RedisServer::start(TEST) else {
        return;
    };
    let dir = TempDir::new(TEST);
    let url = redis.url();
    let (a, node_a) = start_node(&url);
    let (b, node_b) = start_node(&url);
    let (_haproxy, lb, stats) = procs::start_shipped_haproxy_with_stats(&[node_a, node_b], &dir.0);
    let subscribers = connect_subscribers(lb).await;

    // Publications run on their own task through the whole roll, paced like a real feed.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn(async move {
        let mut n = 0;
        loop {
            n += 1;
            publish(lb, n).await;
            if stopped.try_recv().is_ok() {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });

    // The shipped config names A `node1` and B `node2`.
    let mut restarted = Vec::new();
    for (node, addr, name) in [(a, node_a, "node1"), (b, node_b, "node2")] {
        node.sigterm();
        let status = tokio::task::spawn_blocking(move || {
            let mut node = node;
            node.0.wait().expect("wait for the drained node")
        })
        .await
        .expect("wait task");
        assert!(
            status.success(),
            "{name} exits cleanly after its drain: {status}"
        );
        restarted.push(procs::start_node_at(addr, &url, None, &[]));
        tokio::task::spawn_blocking(move || {
            wait_until("haproxy has the restarted node back", || {
                procs::haproxy_server_up(stats, name)
            });
        })
        .await
        .expect("wait task");
    }
    let _ = stop.send(());
    let total = publisher.await.expect("publisher");
    let mut seen = Vec::new();
    for (i, (client, events)) in subscribers.into_iter().enumerate() {
        seen.push(collect(i, client, events, total).await);
    }
    let moved = check_everything_delivered(&seen, total);
    assert_eq!(
        moved, SUBSCRIBERS,
        "every subscriber moved at least once: {seen:?}"
    );
    for (i, seen) in seen.iter().enumerate() {
        assert!(
            seen.disconnects.iter().all(|code| *code == 3000),
            "subscriber {i}: only the drains' 3000: {seen:?}"
        );
        assert!(
            // One reconnect attempt per disconnect: none failed. (The attempt number itself
            // keeps counting across moves closer together than the client's backoff reset.)
            seen.attempts.len() == seen.disconnects.len(),
            "subscriber {i}: every reconnect succeeds at the first try: {seen:?}"
        );
    }
    eprintln!(
        "rolling deploy behind haproxy: {total} publications, {SUBSCRIBERS} subscribers moved, nothing lost"
    );
}
