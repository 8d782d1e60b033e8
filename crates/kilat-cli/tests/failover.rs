//! Failure test through real processes: three `kilat serve --engine redis` nodes behind a real
//! haproxy, one real `redis-server`, subscribers connected through haproxy with `kilat-client`,
//! publications flowing the whole time. One node is killed with SIGKILL mid-stream; its clients
//! reconnect through haproxy to the survivors and recover from Redis history. Every subscriber
//! must end with every publication, in order, exactly once.
//!
//! Needs `redis-server` and `haproxy` on PATH: skipped with a loud notice without them, a
//! failure under `CI=true`.

mod procs;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kilat_client::{Client, ClientConfig, Event, SubscribeOptions};
use kilat_testkit::{RedisServer, free_port, require};
use procs::{Proc, WAIT, http, http_full, start_node, wait_until};

const SUBSCRIBERS: usize = 6;
const PUBLICATIONS: u64 = 150;
const KILL_AFTER: u64 = 50;

fn start_haproxy(nodes: &[SocketAddr], dir: &Path) -> (Proc, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("    server node{i} {n} check inter 200ms fall 1 rise 1\n"))
        .collect();
    let config = format!(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n    timeout tunnel 1h\n\
         frontend kilat\n    bind {addr}\n    default_backend nodes\n\
         backend nodes\n    balance roundrobin\n    option httpchk GET /ready\n    http-check expect status 200\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    wait_until("haproxy", || http(addr, "GET", "/health", "") == 200);
    (Proc(child), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_loses_nothing_inside_the_history_window() {
    const TEST: &str = "killing_a_node_loses_nothing_inside_the_history_window";
    if !require("haproxy", "-v", TEST) {
        return;
    }
    let Some(redis) = RedisServer::start(TEST) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("kilat-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let redis_url = redis.url();
    let mut nodes: Vec<(Proc, SocketAddr)> = (0..3).map(|_| start_node(&redis_url)).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
    let (_haproxy, lb) = start_haproxy(&addrs, &dir);

    // Subscribers through haproxy; round robin spreads them over the three nodes.
    let mut collectors = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut config = ClientConfig::new(format!("ws://{lb}/connection/websocket"));
        config.min_reconnect_delay = Duration::from_millis(50);
        config.max_reconnect_delay = Duration::from_millis(500);
        let (client, mut events) = Client::connect(config)
            .await
            .expect("connect through haproxy");
        client
            .subscribe("feed", SubscribeOptions::recoverable())
            .await
            .expect("subscribe");
        collectors.push(tokio::spawn(async move {
            let _keep = client;
            let mut offsets = Vec::new();
            let mut recovered_after_loss = Vec::new();
            while (offsets.len() as u64) < PUBLICATIONS {
                match tokio::time::timeout(WAIT, events.next()).await {
                    Ok(Some(Event::Publication { publication, .. })) => {
                        offsets.push(publication.offset.expect("history keeps offsets"));
                    }
                    Ok(Some(Event::Subscribed {
                        resubscribed: true,
                        recovered,
                        ..
                    })) => {
                        recovered_after_loss.push(recovered);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("subscriber {i}: event stream ended"),
                    Err(_) => panic!(
                        "subscriber {i}: stalled after {} publications",
                        offsets.len()
                    ),
                }
            }
            (offsets, recovered_after_loss)
        }));
    }

    // A backend publishes through the server API of the node that stays up, one at a time.
    let publisher = addrs[2];
    for n in 1..=PUBLICATIONS {
        if n == KILL_AFTER {
            let (victim, _) = &mut nodes[0];
            victim.0.kill().expect("SIGKILL node 0");
            let _ = victim.0.wait();
        }
        let body = format!(r#"{{"channel":"feed","data":{{"n":{n}}}}}"#);
        let status =
            tokio::task::spawn_blocking(move || http(publisher, "POST", "/api/publish", &body))
                .await
                .expect("publish task");
        assert_eq!(status, 200, "publication {n}");
    }

    let mut reconnected = 0;
    for (i, collector) in collectors.into_iter().enumerate() {
        let (offsets, recovered) = collector.await.expect("collector");
        let expected: Vec<u64> = (1..=PUBLICATIONS).collect();
        assert_eq!(
            offsets, expected,
            "subscriber {i}: every publication once, in order"
        );
        assert!(
            recovered.iter().all(|r| *r),
            "subscriber {i}: recovery must hold: {recovered:?}"
        );
        reconnected += usize::from(!recovered.is_empty());
    }
    assert!(
        reconnected > 0,
        "some subscribers were on the killed node and had to fail over"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Publishes `{"n": n}` to `feed` through `node`'s API; returns whether the API accepted it
/// (`{"result"}`, not `{"error"}`) and how long the call took.
fn publish_timed(node: SocketAddr, n: u64) -> (bool, Duration) {
    let started = Instant::now();
    let body = format!(r#"{{"channel":"feed","data":{{"n":{n}}}}}"#);
    let (status, answer) = http_full(node, "POST", "/api/publish", &body);
    assert_eq!(status, 200, "publication {n}: {answer}");
    (answer.contains("\"result\""), started.elapsed())
}

/// Reads a publication's `n` from its raw JSON data.
fn number(publication: &kilat_client::Publication) -> u64 {
    let data: serde_json::Value = serde_json::from_str(publication.data.get()).expect("json data");
    data["n"].as_u64().expect("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_fails_publishes_fast_then_everything_resumes() {
    const LAST: u64 = 1_000;
    let Some(redis) =
        RedisServer::start("redis_paused_fails_publishes_fast_then_everything_resumes")
    else {
        return;
    };
    let redis_url = redis.url();
    let (_a, node_a) = start_node(&redis_url);
    let (_b, node_b) = start_node(&redis_url);

    // Subscribers on node A; publications go through node B's API, so every one crosses Redis.
    let mut collectors = Vec::new();
    for i in 0..3 {
        let mut config = ClientConfig::new(format!("ws://{node_a}/connection/websocket"));
        config.min_reconnect_delay = Duration::from_millis(50);
        let (client, mut events) = Client::connect(config).await.expect("connect");
        client
            .subscribe("feed", SubscribeOptions::recoverable())
            .await
            .expect("subscribe");
        collectors.push(tokio::spawn(async move {
            let _keep = client;
            let mut seen = Vec::new();
            loop {
                match tokio::time::timeout(WAIT, events.next()).await {
                    Ok(Some(Event::Publication { publication, .. })) => {
                        let n = number(&publication);
                        seen.push((publication.offset.expect("offset"), n));
                        if n == LAST {
                            return seen;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("subscriber {i}: event stream ended"),
                    Err(_) => panic!("subscriber {i}: stalled after {seen:?}"),
                }
            }
        }));
    }

    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 1..=40u64 {
        if n == 15 {
            redis.pause();
        }
        if n == 20 {
            redis.resume();
        }
        let (accepted, took) = tokio::task::spawn_blocking(move || publish_timed(node_b, n))
            .await
            .expect("publish task");
        // Fail fast: the engine's command timeout is 1 s; nothing waits for Redis longer.
        assert!(
            took < Duration::from_secs(3),
            "publication {n} took {took:?}"
        );
        if accepted {
            acknowledged.push(n);
        } else {
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "publishes while Redis was stopped must fail (with 503), not hang"
    );
    let (accepted, _) = tokio::task::spawn_blocking(move || publish_timed(node_b, LAST))
        .await
        .expect("publish task");
    assert!(accepted, "publishing works again after SIGCONT");

    for (i, collector) in collectors.into_iter().enumerate() {
        let seen = collector.await.expect("collector");
        // Offsets contiguous from 1, each once; publishing order kept.
        let offsets: Vec<u64> = seen.iter().map(|(o, _)| *o).collect();
        let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "subscriber {i}: no gap, no duplicate");
        let numbers: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "subscriber {i}: order kept: {numbers:?}"
        );
        // Every accepted publication arrived (a refused one may still arrive: Redis runs the
        // queued command when it resumes, after kilat stopped waiting for it).
        for n in &acknowledged {
            assert!(
                numbers.contains(n),
                "subscriber {i}: publication {n} missing: {numbers:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_clients_are_told_honestly_and_delivery_resumes() {
    let Some(mut redis) =
        RedisServer::start("redis_restarted_clients_are_told_honestly_and_delivery_resumes")
    else {
        return;
    };
    let redis_url = redis.url();
    let (_a, node_a) = start_node(&redis_url);
    let (_b, node_b) = start_node(&redis_url);

    let mut config = ClientConfig::new(format!("ws://{node_a}/connection/websocket"));
    config.min_reconnect_delay = Duration::from_millis(50);
    let (client, mut events) = Client::connect(config).await.expect("connect");
    client
        .subscribe("feed", SubscribeOptions::recoverable())
        .await
        .expect("subscribe");

    // Before the restart: 10 publications, all delivered.
    for n in 1..=10 {
        let (accepted, _) = tokio::task::spawn_blocking(move || publish_timed(node_b, n))
            .await
            .expect("publish");
        assert!(accepted, "publication {n}");
    }
    let mut before = Vec::new();
    while before.len() < 10 {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Publication { publication, .. })) => before.push(number(&publication)),
            Ok(Some(_)) => {}
            other => panic!("before the restart: {other:?}"),
        }
    }
    assert_eq!(before, (1..=10).collect::<Vec<_>>());

    // Redis restarts empty: the stream (offsets 1..10, its epoch) is gone.
    redis
        .restart()
        .expect("redis-server restarts on the same port");

    // Keep publishing until the subscriber has been told it could not recover and then sees
    // live publications again, in order and once.
    let mut told_unrecovered = false;
    let mut after: Vec<(u64, u64)> = Vec::new();
    let mut n = 100;
    let deadline = Instant::now() + WAIT;
    while !(told_unrecovered && after.len() >= 5) {
        assert!(
            Instant::now() < deadline,
            "no recovery: told {told_unrecovered}, after {after:?}"
        );
        n += 1;
        let (_, took) = tokio::task::spawn_blocking(move || publish_timed(node_b, n))
            .await
            .expect("publish");
        assert!(
            took < Duration::from_secs(3),
            "publication {n} took {took:?}"
        );
        // Drain what arrived so far, without blocking past a short wait.
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            match event {
                Event::Subscribed {
                    recovered: false,
                    resubscribed: true,
                    ..
                } => told_unrecovered = true,
                Event::Publication { publication, .. } if told_unrecovered => {
                    after.push((publication.offset.expect("offset"), number(&publication)));
                }
                _ => {}
            }
        }
    }
    let numbers: Vec<u64> = after.iter().map(|(_, n)| *n).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "order kept, no duplicate: {after:?}"
    );
    let offsets: Vec<u64> = after.iter().map(|(o, _)| *o).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap in the new stream: {after:?}"
    );
    drop(client);
}
