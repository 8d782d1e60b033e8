//! `kilat serve`'s logs as a process writes them: JSON lines carrying the connection's id, no
//! secrets at any level, and a start-up line that names what is really in use.

#[allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, KILAT, free_port, wait_ready};

const TOKEN_SECRET: &str = "token-secret-7f3a9c1e5b";
const API_KEY: &str = "api-key-0d8e4b2a6c";
const REDIS_PASSWORD: &str = "redis-pass-91c2e7";

fn post(port: u16, path: &str, auth: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn json_logs_carry_the_connection_id_and_never_a_secret() {
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("kilat-logs-{port}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut server = Guard(
        Command::new(KILAT)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--token-secret",
                TOKEN_SECRET,
                "--api-key",
                API_KEY,
                "--log-format",
                "json",
                // Everything at debug, every crate: what an operator turns on to debug.
                "--log",
                "debug",
            ])
            .env("KILAT_NODE_ALLOW_ANONYMOUS", "false")
            .env(
                "KILAT_NODE_NAMESPACES",
                r#"{ feed = { allow_subscribe = "authenticated", history_size = 10, history_ttl = 60 } }"#,
            )
            .env(
                "KILAT_ENGINE_REDIS_URL",
                format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1"),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning kilat"),
    );
    wait_ready(port, Some("/health"));

    let minted = Command::new(KILAT)
        .args(["token", "--token-secret", TOKEN_SECRET, "--user", "alice"])
        .output()
        .expect("kilat token");
    assert!(minted.status.success());
    let token = String::from_utf8(minted.stdout).expect("utf-8");
    let token = token.trim();

    // A subscriber with the token in KILAT_TOKEN; a wrong token as well.
    let url = format!("ws://127.0.0.1:{port}/connection/websocket");
    let mut sub = Guard(
        Command::new(KILAT)
            .args(["sub", "--url", &url, "feed:news"])
            .env("KILAT_TOKEN", token)
            .env("KILAT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kilat sub"),
    );
    let forged = format!("{token}x");
    let refused = Command::new(KILAT)
        .args(["pub", "--url", &url, "feed:news", "1"])
        .env("KILAT_TOKEN", &forged)
        .env("KILAT_LOG", "warn")
        .output()
        .expect("kilat pub");
    assert!(!refused.status.success(), "a forged token must be refused");

    // Publish through the API with the key until the subscriber prints it (its subscribe may
    // still be on the way for the first tries).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = sub.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("hello-logs") {
                let _ = tx.send(());
                return;
            }
        }
    });
    loop {
        let answer = post(
            port,
            "/api/publish",
            &format!("apikey {API_KEY}"),
            r#"{"channel":"feed:news","data":"hello-logs"}"#,
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        if rx.recv_timeout(Duration::from_millis(300)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the subscriber never got it");
    }
    // A wrong API key is refused (and must not be echoed either).
    let wrong = post(port, "/api/publish", "apikey wrong-key-5e6f", "{}");
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    drop(sub);
    // SIGTERM would be nicer, but killing is enough: the log is written line by line.
    std::thread::sleep(Duration::from_millis(300));
    let _ = server.0.kill();
    let _ = server.0.wait();

    let text = std::fs::read_to_string(&log_path).expect("reading the log");
    let _ = std::fs::remove_file(&log_path);
    for secret in [
        TOKEN_SECRET,
        API_KEY,
        REDIS_PASSWORD,
        token,
        &forged,
        "wrong-key-5e6f",
    ] {
        assert!(
            !text.contains(secret),
            "the log contains a secret ({secret}):\n{text}"
        );
    }
    // Some part of the token (its signature) must not appear either.
    let signature = token.rsplit('.').next().expect("a JWT");
    assert!(
        !text.contains(signature),
        "the token's signature is in the log"
    );

    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect();
    assert!(lines.len() > 5, "too few lines:\n{text}");
    // The subscriber's connection: its "connected" line carries the span with id and user.
    let connected = lines
        .iter()
        .find(|l| l["fields"]["message"] == "connected" && l["span"]["user"] == "alice")
        .unwrap_or_else(|| panic!("no connected line for alice:\n{text}"));
    let id = connected["span"]["id"].clone();
    assert!(id.is_u64(), "{connected}");
    assert!(connected["span"]["client"].is_string(), "{connected}");
    assert_eq!(connected["span"]["transport"], "websocket");
    // Everything logged from inside a connection task carries a connection id.
    for line in &lines {
        let target = line["target"].as_str().unwrap_or("");
        if target.starts_with("kilat_server::driver") || target.starts_with("kilat_core::session") {
            assert!(
                line["span"]["id"].is_u64(),
                "a connection line without its id: {line}"
            );
        }
    }
}

#[test]
fn start_up_names_the_redis_cluster_nodes_not_the_unused_default_url() {
    let port = free_port();
    let output = Command::new(KILAT)
        .args([
            "serve",
            "--dev",
            "--engine",
            "redis",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KILAT_LOG", "info")
        // Nothing listens there: the server logs what it will use, fails to connect and exits.
        .env(
            "KILAT_ENGINE_REDIS_CLUSTER_NODES",
            r#"["redis://127.0.0.1:1", "redis://:pw-3c9d@127.0.0.1:2"]"#,
        )
        .env("KILAT_ENGINE_REDIS_TIMEOUT", "0.5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("kilat serve");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("cluster [redis://127.0.0.1:1, redis://:<redacted>@127.0.0.1:2]"),
        "the cluster's nodes are not named:\n{text}"
    );
    assert!(
        !text.contains("6379"),
        "the unused default URL is logged:\n{text}"
    );
    assert!(!text.contains("pw-3c9d"), "a password is logged:\n{text}");
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused_with_a_hint() {
    let output = Command::new(KILAT)
        .args(["serve", "--log", "kilat_server=loud"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("kilat serve");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("--log") && text.contains("hint"),
        "unhelpful error: {text}"
    );
}
