//! `kilat bench` against a spawned `kilat serve --dev` (and `kilat echo`): every scenario runs
//! briefly with `--json`, and the counts must add up with nothing lost or duplicated.

mod common;

use std::process::Command;

use common::{Guard, KILAT, free_port, spawn, wait_ready};
use serde_json::Value;

struct Server {
    guard: Guard,
    url: String,
    http: String,
}

fn server() -> Server {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let guard = spawn(&["serve", "--dev", "--listen", &listen]);
    wait_ready(port, Some("/health"));
    Server {
        guard,
        url: format!("ws://{listen}/connection/websocket"),
        http: format!("http://{listen}/api/publish"),
    }
}

fn bench(args: &[&str]) -> Value {
    let out = Command::new(KILAT)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("running kilat bench");
    assert!(
        out.status.success(),
        "kilat bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from kilat bench {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn connect_opens_every_connection() {
    let s = server();
    let pid = s.guard.0.id().to_string();
    let r = bench(&["connect", "--url", &s.url, "-n", "50", "--server-pid", &pid]);
    assert_eq!(u(&r, "connected"), 50, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert_eq!(u(&r["latency"], "samples"), 50, "{r}");
    assert!(r["handshakes_per_s"].as_f64().unwrap() > 0.0);
    // CPU time comes in clock ticks: 50 handshakes may round to zero, never below.
    assert!(r["server_cpu_s"].as_f64().is_some_and(|c| c >= 0.0), "{r}");
}

#[test]
fn idle_holds_connections_and_reads_server_memory() {
    let s = server();
    let pid = s.guard.0.id().to_string();
    let r = bench(&[
        "idle",
        "--url",
        &s.url,
        "-n",
        "50",
        "--settle",
        "0.2",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(u(&r, "connections"), 50, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert!(r["server_rss_after_kib"].as_u64().unwrap() > 0, "{r}");
}

/// Subscribers over SSE, and over WebSocket with permessage-deflate: the same clean fan-out,
/// and the compressed run really received compressed messages.
#[test]
fn fanout_over_sse_and_with_compression() {
    let s = server();
    let base = ["fanout", "--url", &s.url, "-n", "20", "-r", "50", "-d", "1"];
    let r = bench(&[&base[..], &["--transport", "sse"]].concat());
    check_clean_fanout(&r, 20, 1);
    assert_eq!(r["transport"], "Sse", "{r}");
    assert_eq!(u(&r, "compressed_messages"), 0, "{r}");

    // Payloads large enough for the server to compress (it skips messages under 64 bytes).
    let r = bench(&[&base[..], &["--compression", "-s", "400"]].concat());
    check_clean_fanout(&r, 20, 1);
    assert!(u(&r, "compressed_messages") >= u(&r, "delivered"), "{r}");
}

/// The same feed in JSON and in the binary encoding: both clean, and the binary run receives
/// fewer bytes per delivery (the bench reads the wire sizes before transcoding).
#[test]
fn fanout_in_json_and_msgpack() {
    let s = server();
    let base = [
        "fanout", "--url", &s.url, "-n", "20", "-r", "50", "-d", "1", "-s", "200",
    ];
    let json = bench(&[&base[..], &["--encoding", "json"]].concat());
    check_clean_fanout(&json, 20, 1);
    let packed = bench(&[&base[..], &["--encoding", "msgpack"]].concat());
    check_clean_fanout(&packed, 20, 1);
    assert_eq!(packed["encoding"], "Msgpack", "{packed}");
    let per = |r: &Value| {
        r["bytes_per_delivery"]
            .as_f64()
            .expect("bytes_per_delivery")
    };
    assert!(per(&json) > 200.0, "{json}");
    assert!(
        per(&packed) < per(&json),
        "msgpack {} vs json {}",
        per(&packed),
        per(&json)
    );
}

/// `wss://` against a server with a self-signed certificate: refused without trust, clean with
/// `--ca` naming the certificate and with `--insecure`.
#[test]
fn fanout_over_tls() {
    let dir = std::env::temp_dir().join(format!("kilat-bench-tls-{}", free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = spawn(&[
        "serve",
        "--dev",
        "--listen",
        &listen,
        "--tls-cert",
        cert_path.to_str().expect("utf-8 path"),
        "--tls-key",
        key_path.to_str().expect("utf-8 path"),
    ]);
    wait_ready(port, None);
    let url = format!("wss://localhost:{port}/connection/websocket");
    let base = ["fanout", "--url", &url, "-n", "10", "-r", "50", "-d", "1"];

    let untrusted = Command::new(KILAT)
        .args(["bench", "connect", "--url", &url, "-n", "1", "--json"])
        .output()
        .expect("running kilat bench");
    assert!(
        !untrusted.status.success(),
        "a self-signed certificate must not be trusted by default"
    );

    let ca = cert_path.to_str().expect("utf-8 path");
    let r = bench(&[&base[..], &["--ca", ca]].concat());
    check_clean_fanout(&r, 10, 1);
    let r = bench(&[&base[..], &["--insecure", "--transport", "sse"]].concat());
    check_clean_fanout(&r, 10, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connections spread over two nodes, each subscribed, held across several of the servers'
/// pings: none may be dropped for a missed pong, and both servers' CPU time is read.
#[test]
fn idle_spreads_over_nodes_and_answers_pings_while_holding() {
    let nodes: Vec<(Guard, u16)> = (0..2)
        .map(|_| {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let guard = spawn(&[
                "serve",
                "--dev",
                "--listen",
                &listen,
                "--ping-interval",
                "1",
                "--pong-timeout",
                "1",
            ]);
            wait_ready(port, Some("/health"));
            (guard, port)
        })
        .collect();
    let urls: Vec<String> = nodes
        .iter()
        .map(|(_, port)| format!("ws://127.0.0.1:{port}/connection/websocket"))
        .collect();
    let pids: Vec<String> = nodes.iter().map(|(g, _)| g.0.id().to_string()).collect();
    let r = bench(&[
        "idle",
        "--url",
        &urls[0],
        "--url",
        &urls[1],
        "--server-pid",
        &pids[0],
        "--server-pid",
        &pids[1],
        "-n",
        "40",
        "--subscribe",
        "4",
        "--workers",
        "2",
        "--settle",
        "0.1",
        "--hold",
        "3.5",
    ]);
    assert_eq!(u(&r, "connections"), 40, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert_eq!(u(&r, "servers"), 2, "{r}");
    assert_eq!(
        u(&r, "dropped_during_hold"),
        0,
        "pings went unanswered: {r}"
    );
    assert!(r["server_cpu_s"].as_f64().is_some_and(|c| c >= 0.0), "{r}");
}

fn check_clean_fanout(r: &Value, subscribers: u64, channels: u64) {
    assert_eq!(u(r, "subscribers"), subscribers, "{r}");
    assert_eq!(u(r, "connect_failed"), 0, "{r}");
    assert_eq!(u(r, "publish_errors"), 0, "{r}");
    let published = u(r, "published");
    assert!((30..=60).contains(&published), "about 50 published: {r}");
    // Subscribers spread evenly over the channels, messages round-robin over them.
    let expected = u(r, "expected_deliveries");
    let even = published * subscribers / channels;
    assert!(expected.abs_diff(even) <= subscribers, "{r}");
    assert_eq!(u(r, "delivered"), u(r, "expected_deliveries"), "{r}");
    assert_eq!(u(r, "lost"), 0, "{r}");
    assert_eq!(u(r, "duplicated"), 0, "{r}");
    assert_eq!(u(&r["latency"], "samples"), u(r, "delivered"), "{r}");
}

#[test]
fn fanout_delivers_everything_once() {
    let s = server();
    let pid = s.guard.0.id().to_string();
    let args = [
        "fanout",
        "--url",
        &s.url,
        "-n",
        "20",
        "-c",
        "1",
        "-r",
        "50",
        "-d",
        "1",
        "--server-pid",
        &pid,
    ];
    let r = bench(&args);
    check_clean_fanout(&r, 20, 1);
    assert!(r["server_cpu_s"].as_f64().is_some(), "{r}");
    // Latency from the schedule covers every delivery too, and a publication is never sent
    // before it is due, so it is never below latency from the send.
    let (sent, due) = (&r["latency"], &r["latency_vs_schedule"]);
    assert_eq!(u(sent, "samples"), u(due, "samples"), "{r}");
    assert!(u(due, "samples") > 0, "{r}");
    for q in ["p50_ms", "max_ms"] {
        assert!(
            due[q].as_f64().unwrap() >= sent[q].as_f64().unwrap() * 0.99,
            "{q}: {r}"
        );
    }

    // The same through the HTTP API, over two channels and two worker processes.
    let r = bench(&[
        "fanout",
        "--url",
        &s.url,
        "-n",
        "20",
        "-c",
        "2",
        "-p",
        "2",
        "-r",
        "50",
        "-d",
        "1",
        "--publish-via",
        "http",
        "--api-url",
        &s.http,
        "--workers",
        "2",
    ]);
    check_clean_fanout(&r, 20, 2);
    assert_eq!(u(&r, "workers"), 2, "{r}");
}

#[test]
fn echo_measures_round_trips() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _echo = spawn(&["echo", "--listen", &listen]);
    wait_ready(port, None);
    let url = format!("ws://{listen}/");
    let r = bench(&["echo", "--url", &url, "-n", "2", "-d", "0.5"]);
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert_eq!(u(&r, "mismatched"), 0, "{r}");
    let trips = u(&r, "round_trips");
    assert!(trips > 0, "{r}");
    assert_eq!(u(&r["latency"], "samples"), trips, "{r}");
}
