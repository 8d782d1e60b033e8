//! A real Prometheus (Debian's `prometheus` package) scrapes a spawned `kilat serve`; the test
//! asks Prometheus's HTTP API for a counter and a histogram after a known load and checks them
//! against what the load did. Skips loudly without `prometheus` on PATH; fails under CI=true.

#[allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, KILAT, free_port, spawn, wait_ready};

/// Publications the load makes.
const PUBLICATIONS: usize = 25;

/// `GET path` on 127.0.0.1:`port`; the status and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    // Prometheus answers small bodies without chunking when asked with `Connection: close`.
    Some((status, body.to_owned()))
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant query, when Prometheus has one.
fn query(port: u16, promql: &str) -> Option<f64> {
    let (status, body) = get(port, &format!("/api/v1/query?query={}", encode(promql)))?;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = json["data"]["result"].as_array()?;
    let [sample] = result.as_slice() else {
        return None;
    };
    sample["value"][1].as_str()?.parse().ok()
}

/// Polls `promql` until it equals `want` (Prometheus scrapes every second), or fails.
fn wait_for(port: u16, promql: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(port, promql);
        if last == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("Prometheus never reported {promql} = {want}; last answer: {last:?}");
}

#[test]
fn prometheus_scrapes_the_counters_and_histograms_a_load_produced() {
    if !kilat_testkit::require(
        "prometheus",
        "--version",
        "prometheus_scrapes_the_counters_and_histograms_a_load_produced",
    ) {
        return;
    }
    let kilat_port = free_port();
    let _kilat = spawn(&[
        "serve",
        "--dev",
        "--listen",
        &format!("127.0.0.1:{kilat_port}"),
    ]);
    wait_ready(kilat_port, Some("/health"));

    // The load: one `kilat pub` connection publishing PUBLICATIONS lines over WebSocket.
    let lines: String = (0..PUBLICATIONS).map(|n| format!("{n}\n")).collect();
    let mut publisher = Command::new(KILAT)
        .args([
            "pub",
            "--url",
            &format!("ws://127.0.0.1:{kilat_port}/connection/websocket"),
            "load:metrics",
            "-",
        ])
        .env("KILAT_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning kilat pub");
    publisher
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("feeding kilat pub");
    assert!(publisher.wait().expect("kilat pub").success());

    let dir = std::env::temp_dir().join(format!("kilat-prometheus-{kilat_port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: kilat\n    static_configs:\n      - targets: ['127.0.0.1:{kilat_port}']\n"
        ),
    )
    .expect("prometheus.yml");
    let prometheus_port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let _prometheus = Guard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning prometheus"),
    );
    wait_ready(prometheus_port, Some("/-/ready"));

    let n = PUBLICATIONS as f64;
    // A counter: every publication accepted, and the same by namespace.
    wait_for(prometheus_port, "kilat_publications_total", n);
    wait_for(
        prometheus_port,
        r#"kilat_namespace_publications_total{namespace="default"}"#,
        n,
    );
    // A histogram: one observation per publish command, each inside the top bucket.
    wait_for(
        prometheus_port,
        r#"kilat_command_duration_seconds_count{method="publish"}"#,
        n,
    );
    wait_for(
        prometheus_port,
        r#"kilat_command_duration_seconds_bucket{method="publish",le="+Inf"}"#,
        n,
    );
    let p99 = query(
        prometheus_port,
        r#"histogram_quantile(0.99, kilat_command_duration_seconds_bucket{method="publish"})"#,
    )
    .expect("a p99 from the histogram");
    assert!(
        p99 > 0.0 && p99 < 2.5,
        "p99 of publish commands out of range: {p99}"
    );
    // The publisher's connection was counted and has gone.
    wait_for(
        prometheus_port,
        r#"kilat_transport_connections_opened_total{transport="websocket"}"#,
        1.0,
    );
    wait_for(
        prometheus_port,
        r#"kilat_transport_connections{transport="websocket"}"#,
        0.0,
    );
    // Every query of the Grafana dashboard is valid PromQL for this Prometheus, and the ones
    // over counters the load moved have data.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/kilat.json"),
    )
    .expect("deploy/grafana/kilat.json");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$instance", ".*");
            let (status, body) = get(
                prometheus_port,
                &format!("/api/v1/query?query={}", encode(&expr)),
            )
            .expect("Prometheus answers");
            assert_eq!(status, 200, "dashboard query {expr} refused: {body}");
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} dashboard queries found");
    let publications = query(
        prometheus_port,
        r#"sum(kilat_namespace_publications_total{instance=~".*"})"#,
    );
    assert_eq!(publications, Some(n));
    let _ = std::fs::remove_dir_all(&dir);
}
