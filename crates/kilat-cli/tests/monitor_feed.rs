//! `kilat demo feed monitor` as its own process against a locked-down `kilat serve` (API key,
//! configured namespaces), through the HTTP API as an application's backend would: a rule
//! published to alerts:ops fires on the node's real figures, and a wrong key ends the feed with
//! the server's refusal.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, KILAT, free_port, wait_ready};

const KEY: &str = "monitor-test-key";

fn api(port: u16, method: &str, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let request = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: apikey {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn start_server() -> (Guard, u16, std::path::PathBuf) {
    let port = free_port();
    let config = std::env::temp_dir().join(format!(
        "kilat-monitor-feed-{}-{port}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        format!(
            "[api]\nkey = \"{KEY}\"\n\n[node.namespaces.monitor]\nhistory_size = 100\nallow_subscribe = \"public\"\n\n\
             [node.namespaces.alerts]\nhistory_size = 1000\nhistory_ttl = 86400\nconflate_key = \"id\"\nlatest = true\nallow_subscribe = \"public\"\n"
        ),
    )
    .expect("config");
    let server = common::spawn(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    wait_ready(port, Some("/health"));
    (server, port, config)
}

#[test]
fn the_feed_evaluates_rules_against_a_locked_down_node() {
    let (_server, port, config) = start_server();
    let _feed = Guard(
        Command::new(KILAT)
            .args([
                "demo",
                "feed",
                "monitor",
                "--url",
                &format!("http://127.0.0.1:{port}"),
                "--api-key",
                KEY,
                "--node",
                "edge1",
            ])
            .env("KILAT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the feed"),
    );
    // Memory above 1 MB holds for any live kilat: the rule fires on the real RSS figure.
    let rule = r#"{"channel":"alerts:ops","data":{"id":"rule:rss","kind":"rule","metric":"memory_mb","op":">","threshold":1,"for_s":1,"by":"ops"}}"#;
    assert!(api(port, "publish", rule).contains("\"result\""));
    let bad = r#"{"channel":"alerts:ops","data":{"id":"rule:typo","kind":"rule","metric":"memory","op":">","threshold":1,"for_s":1}}"#;
    assert!(api(port, "publish", bad).contains("\"result\""));
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let history = api(port, "history", r#"{"channel":"alerts:ops"}"#);
        let fired = history.contains(r#""state":"firing""#) && history.contains(r#""rule":"rss""#);
        if fired && history.contains("unknown metric `memory`") {
            break history;
        }
        assert!(Instant::now() < deadline, "no alert within 30 s: {history}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(history.contains(r#""node":"edge1""#), "{history}");
    let value: serde_json::Value = serde_json::from_str(&history).unwrap();
    let alert = value["result"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["data"])
        .find(|d| d["state"] == "firing")
        .unwrap()
        .clone();
    assert!(alert["value"].as_f64().unwrap() > 1.0, "{alert}");
    // The typo'd rule raised nothing.
    assert!(!history.contains(r#""rule":"typo""#), "{history}");
    std::fs::remove_file(config).ok();
}

#[test]
fn a_wrong_key_ends_the_feed_with_the_refusal() {
    let (_server, port, config) = start_server();
    let out = Command::new(KILAT)
        .args([
            "demo",
            "feed",
            "monitor",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--api-key",
            "wrong",
        ])
        .env("KILAT_LOG", "warn")
        .output()
        .expect("running the feed");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("--api-key"),
        "{stderr}"
    );
    std::fs::remove_file(config).ok();
}
