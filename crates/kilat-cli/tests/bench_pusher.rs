//! `kilat bench --protocol pusher` against a spawned `kilat serve --dev` (its Pusher app
//! app-id / app-key / app-secret): subscribers on `/app/app-key`, events triggered through the
//! signed Pusher HTTP API, every one delivered once; a wrong secret is refused by the server.

mod common;

use std::process::Command;

use common::{Guard, KILAT, free_port, spawn, wait_ready};
use serde_json::Value;

fn server() -> (Guard, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let guard = spawn(&["serve", "--dev", "--listen", &listen]);
    wait_ready(port, Some("/health"));
    (guard, format!("ws://{listen}"))
}

fn bench(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(KILAT)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("running kilat bench");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), value, stderr)
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn pusher_fanout_through_the_signed_http_api_delivers_everything_once() {
    let (guard, url) = server();
    let pid = guard.0.id().to_string();
    let args = [
        "fanout",
        "--url",
        &url,
        "--protocol",
        "pusher",
        "--publish-via",
        "http",
        "-n",
        "20",
        "-c",
        "2",
        "-r",
        "50",
        "-d",
        "1",
        "--server-pid",
        &pid,
    ];
    let (ok, r, stderr) = bench(&args);
    assert!(ok, "kilat bench failed: {stderr}");
    assert_eq!(r["protocol"], "Pusher", "{r}");
    assert_eq!(u(&r, "subscribers"), 20, "{r}");
    assert_eq!(u(&r, "connect_failed"), 0, "{r}");
    assert_eq!(u(&r, "publish_errors"), 0, "{r}");
    let published = u(&r, "published");
    assert!((30..=60).contains(&published), "about 50 published: {r}");
    assert_eq!(u(&r, "delivered"), u(&r, "expected_deliveries"), "{r}");
    assert_eq!(u(&r, "expected_deliveries"), published * 10, "{r}");
    assert_eq!(u(&r, "lost"), 0, "{r}");
    assert_eq!(u(&r, "duplicated"), 0, "{r}");
    // Every delivery carried its marker inside Pusher's string data.
    assert_eq!(u(&r["latency"], "samples"), u(&r, "delivered"), "{r}");

    // A wrong secret: the server refuses every trigger with 401, nothing is delivered.
    let mut wrong = args.to_vec();
    wrong.extend(["--pusher-secret", "not-the-secret"]);
    let (_, r, stderr) = bench(&wrong);
    assert!(u(&r, "publish_errors") > 0, "{r} {stderr}");
    assert_eq!(u(&r, "delivered"), 0, "{r}");
    assert!(
        r["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 401")),
        "{r}"
    );
}

#[test]
fn pusher_fanout_needs_http_publishing() {
    let (_guard, url) = server();
    let (ok, _, stderr) = bench(&["fanout", "--url", &url, "--protocol", "pusher"]);
    assert!(!ok);
    assert!(stderr.contains("--publish-via http"), "{stderr}");
}

#[test]
fn pusher_idle_connections_subscribe_and_answer_pings() {
    let (guard, url) = server();
    let pid = guard.0.id().to_string();
    let (ok, r, stderr) = bench(&[
        "idle",
        "--url",
        &url,
        "--protocol",
        "pusher",
        "-n",
        "30",
        "--subscribe",
        "3",
        "--settle",
        "0.2",
        "--server-pid",
        &pid,
    ]);
    assert!(ok, "kilat bench failed: {stderr}");
    assert_eq!(u(&r, "connections"), 30, "{r}");
    assert_eq!(u(&r, "subscribed_channels"), 3, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert!(r["server_rss_per_connection_kib"].as_f64().is_some(), "{r}");
}
