use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, close_code, connect, http_get, next_json, next_non_presence};

/// The value of the sample `series` (name with its labels, as printed) in `body`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

async fn metrics(server: &TestServer) -> String {
    let (status, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn detailed_metrics_count_what_a_load_did() {
    let server = TestServer::start(|config| {
        config
            .node
            .namespaces
            .insert("chat".into(), kilat_core::NamespaceOptions::dev());
    })
    .await;
    let (mut subscriber, _) = connect(&server).await;
    subscriber
        .send(Message::text(
            r#"{"id":2,"subscribe":{"channel":"chat:room"}}"#,
        ))
        .await
        .expect("subscribe");
    assert_eq!(next_json(&mut subscriber).await["id"], 2);
    // A second subscribe to the same channel is refused with 409.
    subscriber
        .send(Message::text(
            r#"{"id":3,"subscribe":{"channel":"chat:room"}}"#,
        ))
        .await
        .expect("subscribe again");
    let refused = next_non_presence(&mut subscriber).await;
    assert_eq!(refused["error"]["code"], 409, "{refused}");

    let (mut publisher, _) = connect(&server).await;
    for id in 10..15 {
        publisher
            .send(Message::text(format!(
                r#"{{"id":{id},"publish":{{"channel":"chat:room","data":{{"n":{id}}}}}}}"#
            )))
            .await
            .expect("publish");
        assert_eq!(next_json(&mut publisher).await["id"], id);
    }
    // One to a channel outside every configured namespace.
    publisher
        .send(Message::text(
            r#"{"id":20,"publish":{"channel":"other","data":1}}"#,
        ))
        .await
        .expect("publish");
    assert_eq!(next_json(&mut publisher).await["id"], 20);
    for id in 10..15 {
        let push = next_non_presence(&mut subscriber).await;
        assert_eq!(push["push"]["pub"]["data"]["n"], id, "{push}");
    }

    let body = metrics(&server).await;
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&body, series), Some(value), "{series} in:\n{body}");
    };
    expect(
        r#"kilat_namespace_publications_total{namespace="chat"}"#,
        5.0,
    );
    expect(
        r#"kilat_namespace_publications_total{namespace="default"}"#,
        1.0,
    );
    expect(r#"kilat_namespace_deliveries_total{namespace="chat"}"#, 5.0);
    expect(
        r#"kilat_command_duration_seconds_count{method="publish"}"#,
        6.0,
    );
    expect(
        r#"kilat_command_duration_seconds_count{method="connect"}"#,
        2.0,
    );
    expect(
        r#"kilat_command_errors_total{method="subscribe",code="409"}"#,
        1.0,
    );
    expect(r#"kilat_transport_connections{transport="websocket"}"#, 2.0);
    expect(r#"kilat_namespace_subscriptions{namespace="chat"}"#, 1.0);
    expect(r#"kilat_namespace_channels{namespace="chat"}"#, 1.0);
    // Every publication reaching the hub is fanned out, to no one for `other`.
    expect("kilat_fanout_duration_seconds_count", 6.0);
    expect("kilat_connections", 2.0);
    expect("kilat_publications_total", 6.0);
    assert!(
        sample(
            &body,
            r#"kilat_transport_sent_bytes_total{transport="websocket"}"#
        )
        .is_some_and(|bytes| bytes > 0.0),
        "{body}"
    );
    assert!(
        body.contains("# TYPE kilat_delivery_latency_seconds histogram"),
        "{body}"
    );
    assert!(
        sample(
            &body,
            r#"kilat_engine_call_duration_seconds_count{engine="memory",op="publish"}"#
        ) == Some(6.0),
        "{body}"
    );

    // A client that breaks the protocol is closed with 3500 and counted under its code.
    publisher
        .send(Message::text("not json"))
        .await
        .expect("send garbage");
    assert_eq!(close_code(&mut publisher).await, Some(3500));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let body = metrics(&server).await;
        if sample(
            &body,
            r#"kilat_disconnects_total{transport="websocket",code="3500"}"#,
        ) == Some(1.0)
            && sample(
                &body,
                r#"kilat_transport_connections{transport="websocket"}"#,
            ) == Some(1.0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 3500 close was never counted:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A client that goes away without a close frame is a drop, counted by its reason.
    drop(subscriber);
    loop {
        let body = metrics(&server).await;
        if sample(
            &body,
            r#"kilat_connection_drops_total{transport="websocket",reason="client_gone"}"#,
        ) == Some(1.0)
        {
            assert_eq!(
                sample(
                    &body,
                    r#"kilat_disconnects_total{transport="websocket",code="3500"}"#
                ),
                Some(1.0),
                "a drop is not a disconnect with a code"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline + std::time::Duration::from_secs(5),
            "the dropped connection was never counted:\n{body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_off_keeps_the_hub_counters_only() {
    let server = TestServer::start(|config| config.server.detailed_metrics = false).await;
    let (_client, _) = connect(&server).await;
    let body = metrics(&server).await;
    assert_eq!(sample(&body, "kilat_connections"), Some(1.0), "{body}");
    assert!(body.contains("kilat_build_info{version="), "{body}");
    assert!(!body.contains("kilat_command_duration"), "{body}");
    assert!(!body.contains("kilat_transport_connections"), "{body}");
}

/// The process and host figures come from /proc at scrape time: open sockets show in
/// `process_open_fds`, CPU seconds grow with work, and the host's memory and load are there.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn process_and_host_figures_follow_the_process() {
    let server = TestServer::start(|_| {}).await;
    let before = metrics(&server).await;
    let fds = sample(&before, "process_open_fds").expect("process_open_fds");
    let cpu = sample(&before, "process_cpu_seconds_total").expect("process_cpu_seconds_total");
    // 100 connections: each is a client and a server socket in this (test) process.
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(connect(&server).await.0);
    }
    let mut x = 0u64;
    for i in 0..30_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    let after = metrics(&server).await;
    assert_eq!(sample(&after, "kilat_connections"), Some(100.0), "{after}");
    let fds_after = sample(&after, "process_open_fds").unwrap();
    // 200 more, less what the other tests running in this process closed meanwhile (a few
    // dozen at most; a figure that ignored the sockets would not grow at all).
    assert!(fds_after >= fds + 150.0, "{fds} -> {fds_after}");
    let cpu_after = sample(&after, "process_cpu_seconds_total").unwrap();
    assert!(cpu_after > cpu, "{cpu} -> {cpu_after}");
    let rss = sample(&after, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1e6, "{rss}");
    let total = sample(&after, "kilat_host_memory_total_bytes").unwrap();
    let available = sample(&after, "kilat_host_memory_available_bytes").unwrap();
    assert!(
        available > 0.0 && available <= total && rss < total,
        "{after}"
    );
    for load in ["kilat_host_load1", "kilat_host_load5", "kilat_host_load15"] {
        let value = sample(&after, load).unwrap_or_else(|| panic!("{load} in {after}"));
        assert!(value >= 0.0, "{load} {value}");
    }
    assert!(sample(&after, "kilat_host_cpus").unwrap() >= 1.0);
    let start = sample(&after, "process_start_time_seconds").unwrap();
    assert!(start > 1.7e9, "{start}");
    drop(clients);
}

#[tokio::test]
async fn task_gauges_follow_the_connections() {
    let server = TestServer::start(|_| {}).await;
    let body = metrics(&server).await;
    let before = sample(&body, "kilat_runtime_alive_tasks").expect("runtime task gauge");
    assert_eq!(sample(&body, "kilat_background_tasks"), Some(0.0), "{body}");
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(connect(&server).await.0);
    }
    let during = sample(&metrics(&server).await, "kilat_runtime_alive_tasks").unwrap();
    // At least one task per connection.
    assert!(during >= before + 20.0, "{before} -> {during}");
    drop(clients);
    // The connections' tasks end: the count comes back down (bounded wait for it).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = sample(&metrics(&server).await, "kilat_runtime_alive_tasks").unwrap();
        if now <= before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasks stayed at {now} (before the clients: {before})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
