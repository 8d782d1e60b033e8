//! `kilat bench ticker` against a spawned `kilat serve --dev`, whose in-process ticker feed
//! starts when the subscribers arrive: every subscriber receives prices and each is timed.

mod common;

use std::process::Command;

use common::{KILAT, free_port, spawn, wait_ready};
use serde_json::Value;

#[test]
fn ticker_subscribers_receive_and_time_the_feed() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = spawn(&["serve", "--dev", "--listen", &listen]);
    wait_ready(port, Some("/health"));
    let url = format!("ws://{listen}/connection/websocket");
    let out = Command::new(KILAT)
        .args([
            "bench", "ticker", "-n", "20", "-d", "2", "--warmup", "2", "--json", "--url", &url,
        ])
        .output()
        .expect("running kilat bench ticker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["subscribers"], 20, "{report}");
    assert_eq!(report["disconnects"], 0, "{report}");
    // The feed publishes about 500 prices a second (conflated per symbol every 100 ms in dev
    // mode): every subscriber gets a steady stream.
    let per_subscriber = report["per_subscriber_per_s"].as_f64().unwrap();
    assert!(per_subscriber > 50.0, "{report}");
    let latency = &report["latency"];
    assert_eq!(latency["samples"], report["delivered"], "{report}");
    let p99 = latency["p99_ms"].as_f64().unwrap();
    assert!((1.0..5000.0).contains(&p99), "{report}");
}
