use std::sync::Arc;
use std::time::{Duration, Instant};

use kilat_core::engine::{Broker, PublishOptions};

use crate::support::{self, Recorder};

const HISTORY: PublishOptions = PublishOptions {
    history_size: 100,
    history_ttl: Duration::from_secs(60),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_resubscribe_after_redis_restarts_and_the_epoch_changes() {
    let Some(mut redis) = support::redis("nodes_resubscribe_after_redis_restarts") else {
        return;
    };
    if !redis.is_local() {
        kilat_testkit::warn_loudly(
            "SKIPPING restart test: KILAT_TEST_REDIS_URL is not ours to restart",
        );
        return;
    }
    let (a, b) = (support::engine(&redis).await, support::engine(&redis).await);
    let seen_b = Arc::new(Recorder::default());
    b.set_handler(seen_b.clone());
    // Many channels, so resubscription runs in several batches on every shard.
    let channels: Vec<String> = (0..1200)
        .map(|i| support::channel(&format!("restart{i}")))
        .collect();
    for ch in &channels {
        b.subscribe(ch).await.expect("subscribe");
    }
    let ch = &channels[0];
    let old = a
        .publish(ch, support::publication("1"), HISTORY)
        .await
        .expect("publish")
        .expect("position");
    seen_b.wait_until(ch, |s| s.len() == 1).await;

    redis.restart();

    // Publish until node A's command connection is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        match a.publish(ch, support::publication("2"), HISTORY).await {
            Ok(position) => break position.expect("position"),
            Err(_) => {
                assert!(Instant::now() < deadline, "publish never recovered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_ne!(new.epoch, old.epoch, "Redis lost the stream: a new epoch");
    assert_eq!(new.offset, 1, "offsets restart in the new epoch");
    // Node B resubscribed every channel: keep publishing until it hears the new stream on
    // the first and the last channel (which had no stream before the restart).
    for ch in [&channels[0], &channels[channels.len() - 1]] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let position = a
                .publish(ch, support::publication("3"), HISTORY)
                .await
                .expect("publish after reconnect")
                .expect("position");
            if seen_b.seen(ch).iter().any(|s| s.2 == position.epoch) {
                break;
            }
            assert!(Instant::now() < deadline, "node B never resubscribed {ch}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(b.subscribed_channels(), channels.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_redis_is_paused_and_works_after() {
    let Some(redis) = support::redis("publish_fails_fast_while_redis_is_paused") else {
        return;
    };
    if !redis.is_local() {
        kilat_testkit::warn_loudly(
            "SKIPPING pause test: KILAT_TEST_REDIS_URL is not ours to pause",
        );
        return;
    }
    let (a, b) = (support::engine(&redis).await, support::engine(&redis).await);
    let seen_b = Arc::new(Recorder::default());
    b.set_handler(seen_b.clone());
    let ch = support::channel("pause");
    b.subscribe(&ch).await.expect("subscribe");

    redis.pause();
    let started = Instant::now();
    let result = a.publish(&ch, support::publication("1"), HISTORY).await;
    let elapsed = started.elapsed();
    let subscribe = b.subscribe(&support::channel("pause-new")).await;
    redis.resume();
    assert!(result.is_err(), "publish to a frozen Redis fails");
    assert!(
        elapsed < Duration::from_secs(2),
        "and fails fast (command_timeout 500 ms), took {elapsed:?}"
    );
    assert!(
        subscribe.is_err(),
        "a new subscribe fails too, within the timeout"
    );

    // After SIGCONT: publishes work again and node B hears them (maybe after reconnecting).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if a.publish(&ch, support::publication("2"), HISTORY)
            .await
            .is_ok()
            && seen_b.seen(&ch).iter().any(|s| s.3 == "2")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            seen_b.seen(&ch)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen_b.seen(&ch);
    let offsets: Vec<_> = seen.iter().filter_map(|s| s.1).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "still in offset order: {offsets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_redis_is_down() {
    let Some(mut redis) = support::redis("calls_fail_fast_while_redis_is_down") else {
        return;
    };
    if !redis.is_local() {
        kilat_testkit::warn_loudly("SKIPPING down test: KILAT_TEST_REDIS_URL is not ours to kill");
        return;
    }
    let a = support::engine(&redis).await;
    redis.kill();
    let started = Instant::now();
    assert!(
        a.publish("x", support::publication("1"), HISTORY)
            .await
            .is_err()
    );
    assert!(a.subscribe("y").await.is_err() || a.subscribed_channels() == 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_missed_while_pubsub_reconnects_are_caught_up_from_history() {
    let Some(redis) = support::redis("publications_missed_while_pubsub_reconnects") else {
        return;
    };
    let (a, b) = (support::engine(&redis).await, support::engine(&redis).await);
    let seen_b = Arc::new(Recorder::default());
    b.set_handler(seen_b.clone());
    let ch = support::channel("catchup");
    b.subscribe(&ch).await.expect("subscribe");
    a.publish(&ch, support::publication("1"), HISTORY)
        .await
        .expect("publish");
    seen_b.wait_until(&ch, |s| s.len() == 1).await;

    // Cut every pub/sub connection and keep node B from reconnecting while node A publishes:
    // with a password set, new connections fail (NOAUTH) but established ones keep working.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let mut run = async |args: &[&str]| {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async::<redis::Value>(&mut admin)
            .await
            .expect("admin command");
    };
    run(&["CONFIG", "SET", "requirepass", "kilat-test"]).await;
    run(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    for i in 2..=30 {
        a.publish(&ch, support::publication(&i.to_string()), HISTORY)
            .await
            .expect("publish");
    }
    assert_eq!(seen_b.seen(&ch).len(), 1, "node B is cut off");
    run(&["CONFIG", "SET", "requirepass", ""]).await;
    let seen = seen_b.wait_until(&ch, |s| s.len() >= 30).await;
    let offsets: Vec<_> = seen.iter().filter_map(|s| s.1).collect();
    assert_eq!(
        offsets,
        (1..=30).collect::<Vec<u64>>(),
        "every publication once, in offset order, across the reconnect"
    );
    assert!(b.pubsub_reconnects() >= 1, "the connection was really cut");
    // Nothing more trickles in afterwards (no duplicates from the catch-up).
    a.publish(&ch, support::publication("31"), HISTORY)
        .await
        .expect("publish");
    let seen = seen_b.wait_until(&ch, |s| s.len() >= 31).await;
    assert_eq!(seen.len(), 31);
}
